"""The context window where a notebook user looks: the gauge in the %%chat footer, %session
info, the notice of a request a server cut, a refused turn, and a trimmed notebook restored."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from fake_openai import Reply
from kernels import Kernel, run_notebook, text_of
from nbclient import NotebookClient

from agent_nb.notebook._gauge import WARNING_STYLE

pytestmark = [pytest.mark.timeout(300), pytest.mark.kernel]

#: The offline provider with a window of 1,000 tokens (250 of them kept for the answer).
SMALL = "%agent provider=test context_window=1000 context=trim"

#: Prints where the current session's next request starts and what it holds (a projection:
#: a call's settings given, not the last request's report).
CONTEXT = (
    "import json\nfrom agent_nb.notebook.workspace import Workspace\n"
    "_s = Workspace.of(get_ipython()).session()\n_r = _s.context(context='trim')\n"
    "_h = [m.id for m in _s.messages]\n"
    "print(json.dumps({'texts': [m.text for m in _s.messages], 'left_out': _r.left_out,\n"
    "    'from': _h.index(_r.messages[0].id), 'from_id': _r.messages[0].id,\n"
    "    'held': len(_r.messages)}))"
)


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def records(cell) -> list[dict]:
    return [o.metadata["agent_nb"] for o in cell.outputs if "agent_nb" in o.get("metadata", {})]


def test_the_footer_gauges_the_window_warns_past_80_percent_and_says_what_was_left_out():
    nb = run_notebook(
        "%load_ext agent_nb",
        SMALL,
        "%%chat\nhello there",
        "%%chat\n" + "word " * 600,  # 600 tokens (the test provider counts words), and 250
        # kept for the answer: past 80%
        "%%chat\n" + "word " * 300,  # no longer fits with the turns before: trimmed
        "%session info",
    )
    first, full, trimmed = (html_of(nb.cells[n]) for n in (2, 3, 4))
    assert re.search(r"context 2\d% of 1k", first), first  # 25% of it kept for the answer
    assert WARNING_STYLE not in first and "left out" not in first
    assert f'<span style="{WARNING_STYLE}">⚠ context 8' in full and "% of 1k</span>" in full
    assert "left out 4 earlier messages (trim)" in trimmed
    info = text_of(nb.cells[5])
    assert "context: " in info and "% of 1k (given): " in info and "kept for the answer" in info
    assert "4 earlier messages left out" in info and "context now" not in info


def test_an_unknown_window_shows_no_gauge_and_info_says_how_to_give_it():
    nb = run_notebook("%load_ext agent_nb", "%%chat\nhello", "%session info")
    assert "% of" not in html_of(nb.cells[1]) and "out tokens" in html_of(nb.cells[1])
    info = text_of(nb.cells[2])
    assert "tokens of an unknown window" in info and "Agent(context_window=...)" in info


def test_a_turn_that_does_not_fit_is_refused_in_one_line_and_context_trim_fits_it():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%agent provider=test context_window=1000",
        "%%chat\n" + "word " * 300,
        "%%chat\n" + "more " * 300,  # with the first turn: more than the window
        "%%chat --context trim\n" + "more " * 300,  # the same, leaving the first turn out
        "%session info",
    )
    refused = nb.cells[3]
    (error,) = [o for o in refused.outputs if o.output_type == "error"]
    assert error.ename == "ChatError" and len(error.traceback) == 1
    line = error.evalue
    assert "context window of 1,000 (given as context_window=)" in line
    assert "nothing was sent" in line
    assert "context='trim'" in line and "%%chat --context trim" in line
    assert records(refused) == []  # nothing recorded: no turn, nothing spent
    assert "left out 2 earlier messages (trim)" in html_of(nb.cells[4])
    assert "messages: 4\n" in text_of(nb.cells[5])  # the refused turn left nothing


def test_a_request_the_server_cut_in_silence_gets_a_notice_under_its_answer(server):
    server.script(
        Reply(
            text="one", usage={"prompt_tokens": 800, "completion_tokens": 5, "total_tokens": 805}
        ),  # then fewer than that first turn alone: the server cut the request
        Reply(
            text="two", usage={"prompt_tokens": 700, "completion_tokens": 5, "total_tokens": 705}
        ),
    )
    nb = run_notebook(
        "%load_ext agent_nb",
        f"%agent provider=openai model=m base_url={server.url} api_key=k context=trim "
        "context_window=1000 max_tokens=50",
        "%%chat\n" + "first " * 300,
        "%%chat\nsecond",
    )
    assert "cut the request" not in html_of(nb.cells[2])
    shown = html_of(nb.cells[3])
    assert "the server reported 700 input tokens" in shown and "cut the request in silence" in shown
    assert "Ollama: num_ctx" in shown and f'<span style="{WARNING_STYLE}">' in shown
    plain = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[3].outputs)
    assert "cut the request in silence" in plain
    (record,) = records(nb.cells[3])  # the answer is kept, with what happened
    assert "cut the request" in record["messages"][-1]["metadata"]["context_truncated"]


def test_a_trimmed_notebook_restores_to_the_same_conversation_and_start(tmp_path, monkeypatch):
    """The trim is recorded with the turn that made it: %load_ext's restore and Restart & Run
    All give the same conversation, and the next request starts where the record says."""
    cells = ["%load_ext agent_nb", SMALL]
    cells += [f"%%chat\nturn {n}: " + f"word{n} " * 150 for n in range(5)]
    nb = run_notebook(*cells, CONTEXT)
    fresh = json.loads(text_of(nb.cells[-1]))
    assert fresh["left_out"] > 0 and fresh["from"] > 0 and len(fresh["texts"]) == 10
    marked = [
        m["metadata"]["context"]
        for cell in nb.cells
        for record in records(cell)
        for m in record.get("messages", [])
        if "context" in m.get("metadata", {})
    ]
    assert marked[-1] == {"policy": "trim", "from": fresh["from_id"]}
    path = tmp_path / "trimmed.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:  # %load_ext's restore
        kernel.execute("%load_ext agent_nb\n" + SMALL)
        assert json.loads(kernel.execute(CONTEXT).stdout) == fresh
        kernel.execute("%%chat\none more")
        after = json.loads(kernel.execute(CONTEXT).stdout)
        assert after["from_id"] == fresh["from_id"]  # the next request started there
    for _ in range(2):  # Restart & Run All (nbclient sends no cell ids), twice
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False).execute()
        again = json.loads(text_of(nb.cells[-1]))
        assert {k: again[k] for k in ("texts", "left_out", "from", "held")} == {
            k: fresh[k] for k in ("texts", "left_out", "from", "held")
        }
        nbformat.write(nb, str(path))
