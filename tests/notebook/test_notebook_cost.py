"""Cost where a notebook user looks: the %%chat footer, %session info, list and cost."""

from __future__ import annotations

import pytest
from fake_openai import Reply
from kernels import run_notebook, text_of

from agent_nb._ledger import dollars

pytestmark = [pytest.mark.timeout(180), pytest.mark.kernel]

USAGE = {"prompt_tokens": 100_000, "completion_tokens": 1_000, "total_tokens": 101_000}
# gpt-4o-mini: $0.15 and $0.60 per million input and output tokens
TURN = dollars(__import__("decimal").Decimal("0.0156"))


def footer(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def test_footers_info_list_and_cost_show_what_was_spent(server):
    server.script(
        Reply(text="one", usage=USAGE),
        Reply(status=500, error={"error": {"message": "upstream exploded"}}),
        Reply(text="two", usage=USAGE),
    )
    nb = run_notebook(
        "%load_ext agent_nb",
        f"%agent provider=openai-compatible model=gpt-4o-mini base_url={server.url} max_retries=0",
        "%%chat\nfirst",
        "%%chat\nfails",
        "%%chat\nsecond",
        "%session info",
        "%session list",
        "%session cost",
    )
    first, second = footer(nb.cells[2]), footer(nb.cells[4])
    assert f"this turn 100,000 in · 1,000 out tokens, {TURN}" in first
    assert "session spent" not in first  # the first turn is all the session spent
    assert "session spent $0.03" in second
    info = text_of(nb.cells[5])
    assert "context now: 101,000 tokens" in info
    assert "spent: $0.03 in 2 requests" in info
    assert "main" in text_of(nb.cells[6]) and "spent $0.03" in text_of(nb.cells[6])
    cost = text_of(nb.cells[7])
    assert "all sessions of this notebook: $0.03" in cost
    assert "this kernel since it started: $0.03" in cost
