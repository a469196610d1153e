"""The first hour: %session, %%chat and %agent parse one way, a typo never moves you, a
retry shows once, and Restart & Run All writes what a fresh run writes."""

from __future__ import annotations

import nbformat
import pytest
from kernels import DUMP, TRIP, Kernel, LabClient, dumped, run_notebook, text_of
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)


def error_of(cell) -> str:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "ChatError", cell.outputs
    return errors[0].evalue


def said(cell) -> str:
    """What a cell shows: its printed text and the text/plain of its displays, in order."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.kernel
def test_flags_are_errors_or_help_never_session_names():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nhello",
        "%session fork --bogus",
        "%session fork -h",
        "%session new --help",
        "%session fork --replace -x",
        "%agent --bogus",
        "%agent -h",
        "%%chat -h\nhi",
        "%%chat --new\nhi",
        "%session new 'two words'",
        "%session --help",
        DUMP,
    )
    bogus = error_of(nb.cells[2])
    assert "unrecognized arguments: --bogus" in bogus and "--replace" in bogus
    assert "usage: %session fork [-h] [--replace] [NEW_ID]" in text_of(nb.cells[3])
    assert "--system TEXT" in text_of(nb.cells[4]) and not nb.cells[4].outputs[1:]
    assert "unrecognized arguments: -x" in error_of(nb.cells[5])
    assert "unrecognized arguments: --bogus" in error_of(nb.cells[6])
    assert "KEY=VALUE" in text_of(nb.cells[7])
    assert "usage: %%chat [SESSION] [options]" in text_of(nb.cells[8])
    assert "name the new session" in error_of(nb.cells[9])
    assert "'two words' cannot name a session" in error_of(nb.cells[10])
    assert "fork " in text_of(nb.cells[11]) and "history " in text_of(nb.cells[11])
    sessions, current = dumped(text_of(nb.cells[-1]))
    assert list(sessions) == ["main"] and current == "main"  # no '--bogus', '-h', '--help'


@pytest.mark.kernel
def test_a_typo_asks_did_you_mean_and_says_how_to_make_the_session():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nMy name is Alice",
        "%%chat mian\nWhat is my name?",
        "%session use mian",
        "%session frok",
        "%session delete mian",
        "%%chat --new mian\nhi",
        "%%chat --new mian\nagain",
        "%%chat main\nback",
        DUMP,
    )
    typo = error_of(nb.cells[2])
    assert "no session 'mian'; did you mean 'main'?" in typo
    assert "%%chat --new mian" in typo and "%session new mian" in typo
    assert "did you mean 'main'?" in error_of(nb.cells[3])
    assert "%session new mian" in error_of(nb.cells[3])
    assert "unknown subcommand; did you mean 'fork'?" in error_of(nb.cells[4])
    assert "did you mean 'main'?" in error_of(nb.cells[5])
    assert "session 'mian' exists: %%chat mian talks in it" in error_of(nb.cells[7])
    sessions, current = dumped(text_of(nb.cells[-1]))
    assert len(sessions["main"]) == 4 and sessions["main"][::2] == ["My name is Alice", "back"]
    assert sessions["mian"][0] == "hi" and len(sessions["mian"]) == 2
    assert current == "main"


@pytest.mark.kernel
def test_tab_offers_session_ids_first_and_alone():
    with Kernel() as kernel:
        kernel.execute("%load_ext agent_nb\n%session new alpha\n%session new beta")
        assert kernel.complete("%%chat ") == ["alpha", "beta"]  # not `and`, `if`, ...
        assert kernel.complete("%session use ") == ["alpha", "beta"]
        assert kernel.complete("x = 1\n%session panel a") == ["alpha"]
        assert "print" in kernel.complete("prin")  # Python's own, elsewhere


@pytest.mark.kernel
def test_retry_shows_its_answer_once():
    nb = run_notebook("%load_ext agent_nb", "%%chat\nhello", "%session retry")
    shown = [o for o in nb.cells[2].outputs if o.output_type != "stream"]
    assert [o.output_type for o in shown] == ["display_data"], shown  # no Out[n] as well


@pytest.mark.kernel
def test_history_and_use_read_like_every_other_message():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nhello",
        "%session use main",
        "%session history",
        "%session history -n x",
        "%session history -n 0",
    )
    for cell in nb.cells[2:4]:
        html = next(o for o in cell.outputs if o.output_type == "display_data").data["text/html"]
        assert "<pre>" not in html
    assert "[user] hello" in said(nb.cells[3])
    for cell in nb.cells[4:6]:
        problem = error_of(cell)
        assert (
            "-n: takes a whole number of at least 1" in problem and "invalid literal" not in problem
        )


MIDWAY = [*TRIP[:4], "%session list", *TRIP[4:], "%session list", DUMP]


@pytest.mark.kernel
@pytest.mark.parametrize("client", [LabClient, NotebookClient], ids=["cell ids", "no cell ids"])
def test_restart_and_run_all_says_what_a_fresh_run_said(client, tmp_path, monkeypatch):
    cells = [*MIDWAY[:4], "%session fork what-if", "%session use main", *MIDWAY[4:]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
    fresh = [said(cell) for cell in nb.cells]
    path = tmp_path / "trip.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    for _ in range(2):  # Restart Kernel and Run All, twice
        nbformat.write(nb, str(path))
        client(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
        again = [said(cell) for cell in nb.cells]
        assert "restored" in again[0]
        assert again[1:] == fresh[1:]  # no "kept in session 'main~1'", no sessions of later cells


@pytest.mark.kernel
def test_restart_and_run_all_after_an_edit_says_so_in_one_line(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in [*TRIP, DUMP]])
    LabClient(nb, timeout=60, kernel_name="python3").execute()
    path = tmp_path / "trip.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    nb.cells[2].source = "%%chat\nI live in Paris"
    LabClient(nb, timeout=60, kernel_name="python3").execute()
    line = text_of(nb.cells[2]).strip().splitlines()
    assert len(line) == 1 and "this cell's prompt differs from the saved run's" in line[0]
    assert all("kept in session" not in text_of(cell) for cell in nb.cells[3:])
    assert sorted(dumped(text_of(nb.cells[-1]))[0]) == ["main", "side"]


RENAMED = [
    "%load_ext agent_nb",
    "%%chat\nMy name is Alice",
    "%%chat\nI live in Lyon",
    "%session rename analysis",
    "%%chat\nWhat do you know?",
    "%session fork side",
    "%session rename side what-if",
    "%session use analysis",
    "%session list",
    DUMP,
]


@pytest.mark.kernel
@pytest.mark.parametrize("client", [LabClient, NotebookClient], ids=["cell ids", "no cell ids"])
def test_a_renamed_session_stays_renamed_through_restart_and_run_all(client, tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in RENAMED])
    client(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
    fresh = [said(cell) for cell in nb.cells]
    sessions, current = dumped(text_of(nb.cells[-1]))
    assert list(sessions) == ["analysis", "what-if"] and current == "analysis"
    assert len(sessions["analysis"]) == 6 and sessions["what-if"] == sessions["analysis"]
    assert "renamed session `main` to `analysis`" in fresh[3]
    path = tmp_path / "renamed.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    for _ in range(2):  # Restart Kernel and Run All, twice
        nbformat.write(nb, str(path))
        client(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
        assert "restored 3 turns in 2 sessions" in said(nb.cells[0])
        assert [said(cell) for cell in nb.cells][1:] == fresh[1:]


@pytest.mark.kernel
def test_rename_refuses_what_it_cannot_do_and_a_cell_run_again_talks_in_the_new_id():
    with Kernel() as kernel:
        kernel.execute("%load_ext agent_nb")
        kernel.execute("%%chat\nMy name is Alice", cell_id="a")
        kernel.execute("%session new other")
        for line, problem in (
            ("%session rename x --bogus", "unrecognized arguments: --bogus"),
            ("%session rename mian x", "did you mean 'main'?"),
            ("%session rename main other", "session 'other' exists"),
            ("%session rename main 'a b'", "'a b' cannot name a session"),
            ("%session rename a b c", "usage: %session rename [ID] NEW_ID"),
        ):
            error = kernel.execute(line).error
            assert error is not None and problem in error["evalue"], (line, error)
        assert (
            "renamed session `main` to `alice`"
            in kernel.execute("%session rename main alice").shown
        )
        kernel.execute("%%chat\nMy name is Alice!", cell_id="a")  # run again: in its place
        sessions, current = dumped(kernel.execute(DUMP).stdout)
        assert list(sessions) == ["alice", "other"] and current == "alice"
        assert sessions["alice"][0] == "My name is Alice!" and len(sessions["alice"]) == 2
