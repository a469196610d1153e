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
    assert "context: " in info and "% of 128k (genai-prices)" in info  # gpt-4o-mini's window
    assert "spent: $0.03 in 2 requests" in info
    assert "main" in text_of(nb.cells[6]) and "spent $0.03" in text_of(nb.cells[6])
    cost = text_of(nb.cells[7])
    assert "all sessions of this notebook: $0.03" in cost
    assert "this kernel since it started: $0.03" in cost


def test_the_ledger_travels_with_the_notebook_failed_and_rerun_turns_included(
    server, tmp_path, monkeypatch
):
    """Each record carries the spend no record carries yet (a failed turn's in a line of its
    own); a cell run again carries its old record's too: a restart restores the ledger."""
    import nbformat
    from kernels import Kernel

    server.script(
        Reply(text="one", usage=USAGE),
        Reply(text="cut short here and there", drop_after=3),  # failed after output: spent
        Reply(text="two", usage=USAGE),
        Reply(text="two again", usage=USAGE),  # the last cell run again
    )
    setup = (
        "%load_ext agent_nb\n"
        f"%agent provider=openai-compatible model=gpt-4o-mini base_url={server.url} max_retries=0"
    )
    nb = run_notebook(
        setup,
        "%%chat\nfirst",
        "%%chat\nfails",
        "%%chat\nsecond",
        "%session cost",
    )
    shown = [o.data.get("text/plain", "") for o in nb.cells[2].outputs if "data" in o]
    assert any("this failed turn spent ~$" in text for text in shown)
    before = text_of(nb.cells[4])
    assert "main: ~$0.03 in 3 requests" in before
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        kernel.execute(setup)
        assert "main: ~$0.03 in 3 requests" in kernel.execute("%session cost").stdout
        info = kernel.execute("%session info").stdout
        assert "spent: ~$0.03 in 3 requests" in info
        assert "tokens of the turns in history: 200,000 in, 2,000 out" in info  # restored too
        old = nb.cells[3].outputs[-1].metadata["agent_nb"]
        again = kernel.execute("%%chat\nsecond").last_display["metadata"]["agent_nb"]
        assert again["op"] == "rerun"
        # the cell's new output replaces its old record: the new one carries its spend again
        assert [e["message"] for e in again["spend"]] == [
            *(e["message"] for e in old["spend"]),
            again["messages"][1]["id"],
        ]
        assert "main: ~$0.05 in 4 requests" in kernel.execute("%session cost").stdout
