"""A Router in the notebook: `%agent router`, %%chat falling back with a note in its footer,
%session info and `%session route reset|status`, and the pin a restore and Restart & Run All
keep (with one quiet line when the router would choose otherwise now)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import nbformat
import pytest
from fake_openai import FakeOpenAI, Reply
from kernels import Kernel, run_notebook, text_of
from nbclient import NotebookClient

pytestmark = [pytest.mark.timeout(300), pytest.mark.kernel]

BUSY = Reply(status=503, error={"error": {"message": "busy"}})
A, B = "openai-compatible:model-a", "openai-compatible:model-b"
FELL_BACK = f"fell back from <code>{A}</code> (503)"


@pytest.fixture
def pair() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI() as a, FakeOpenAI() as b:
        yield a, b


def router_cell(a: FakeOpenAI, b: FakeOpenAI) -> str:
    return (
        "from agent_nb import Agent, Router\n"
        "router = Router([\n"
        f"    Agent(provider='openai-compatible', model='model-a', base_url='{a.url}', "
        "max_retries=0),\n"
        f"    Agent(provider='openai-compatible', model='model-b', base_url='{b.url}', "
        "max_retries=0),\n"
        "])"
    )


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def error_of(cell) -> str:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1  # one line, no traceback
    return errors[0].evalue


def test_a_router_in_the_notebook_falls_back_says_so_and_resets(pair):
    a, b = pair
    a.script(BUSY)
    nb = run_notebook(
        "%load_ext agent_nb",
        "%session route reset",  # the default agent's session: not routed
        router_cell(a, b),
        "%agent router",
        "%%chat\nhello",
        "%%chat\nagain",
        "%session info",
        "%session route status",
        "%session route sideways",
        "%session route reset",
        "%%chat\nthird",
        "%agent",
    )
    assert "is not routed: %agent ROUTER first" in error_of(nb.cells[1])
    assert text_of(nb.cells[3]).startswith(f"Router of {A}, {B} (fallback)")
    first, second = html_of(nb.cells[4]), html_of(nb.cells[5])
    assert FELL_BACK in first and "<code>model-b</code>" in first
    assert "fell back" not in second and "<code>model-b</code>" in second
    info = text_of(nb.cells[6])
    assert "model: model-b\n" in info and f"candidate: {B} (of Router of {A}, {B}" in info
    assert re.search(rf"last switch: {A} -> {B} \(503\) at \d{{4}}-\d\d-\d\d \d\d:\d\d", info)
    status = text_of(nb.cells[7]).splitlines()
    header = text_of(nb.cells[7]).splitlines()[0]
    assert re.fullmatch(r"candidate +state +failures +median TTFT +last error", header)
    assert status[1].startswith(A) and "cooling" in status[1] and "503" in status[1]
    assert status[2].startswith(B) and "healthy" in status[2] and " 0 " in status[2]
    assert "invalid choice: 'sideways'" in error_of(nb.cells[8])
    assert f"moves from {B} to {A}" in text_of(nb.cells[9])
    third = html_of(nb.cells[10])
    assert f"moved from <code>{B}</code> (reset)" in third and "<code>model-a</code>" in third
    assert (len(a.requests), len(b.requests)) == (2, 2)  # b kept the session until the reset
    assert text_of(nb.cells[11]).startswith(f"Router of {A}, {B} (fallback)")


def test_a_restore_and_restart_and_run_all_stay_on_the_recorded_candidate(
    pair, tmp_path, monkeypatch
):
    a, b = pair
    a.script(BUSY)
    cells = ["%load_ext agent_nb", router_cell(a, b), "%agent router", "%%chat\nhello"]
    nb = run_notebook(*cells, "%session info", allow_errors=False)
    assert FELL_BACK in html_of(nb.cells[3])
    assert (len(a.requests), len(b.requests)) == (1, 1)
    path = tmp_path / "routed.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    quiet = f"stays on {B}, as its history records; its router would choose {A} now"
    with Kernel() as kernel:  # %load_ext's restore, then the router
        assert "restored 1 turn in 1 session" in kernel.execute("%load_ext agent_nb").stdout
        kernel.execute(router_cell(a, b))
        said = kernel.execute("%agent router").stdout
        assert quiet in said and said.count("agent_nb:") == 1
        info = kernel.execute("%session info").stdout
        assert "model: model-b\n" in info and f"candidate: {B}" in info
        assert f"last switch: {A} -> {B} (503)" in info
        shown = kernel.execute("%%chat\nnext").last_display["data"]["text/html"]
        assert "<code>model-b</code>" in shown and "fell back" not in shown
        assert (len(a.requests), len(b.requests)) == (1, 2)  # on b: a was not asked
    for _ in range(2):  # Restart & Run All (nbclient sends no cell ids), twice
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False).execute()
        assert quiet in text_of(nb.cells[2])
        assert FELL_BACK in html_of(nb.cells[3])  # the recorded turn, replayed on b
        info = text_of(nb.cells[4])
        assert "model: model-b\n" in info and f"last switch: {A} -> {B} (503)" in info
        assert "agent_nb:" not in text_of(nb.cells[3])  # said once, where the router is chosen
        nbformat.write(nb, str(path))
    assert len(a.requests) == 1  # replayed on the recorded candidate: a was never asked again
    assert len(b.requests) == 4
