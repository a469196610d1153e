"""A chat panel's turns in the notebook's records, in real kernels: a restore sees them,
Restart & Run All neither drops nor doubles them, and the panel's cell run again after a
restart opens the same session.

What a user does in the panel (type, Send, Undo) is sent as the front end sends it: a comm
message to the panel's widget, between cells; such a step is a placeholder cell here, left
out of the notebook that is saved (the user's clicks are in no cell)."""

from __future__ import annotations

import json

import nbformat
import pytest
from kernels import DUMP, Kernel, dumped, text_of
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)

SETUP = "from agent_nb import Agent, ChatPanel\nagent = Agent(provider='test')"
#: A step in the panel: (what the front end sends, the expression that names the panel).
CLICK = "# in the panel: "
#: The panel shown last (`%session panel` names it nowhere).
LATEST = (
    "[w for w in __import__('ipywidgets').widgets.widget._instances.values()"
    " if type(w).__name__ == 'ChatPanel'][-1]"
)


def click(content: dict, panel: str = LATEST) -> str:
    """A placeholder cell: the front end sends `content` to the panel named by `panel`."""
    return CLICK + json.dumps({"content": content, "panel": panel})


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def run(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel, doing the panel steps as the front end does; the
    notebook as saved afterwards (the steps left out)."""
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=False)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.source.startswith(CLICK):
                step = json.loads(cell.source.removeprefix(CLICK))
                in_the_panel(client, nb, index, step["panel"], step["content"])
            else:
                client.execute_cell(cell, index)
    nb.cells = [c for c in nb.cells if not c.source.startswith(CLICK)]
    return nb


def in_the_panel(client, nb, index: int, panel: str, content: dict) -> None:
    def execute(code: str) -> str:
        nb.cells[index] = nbformat.v4.new_code_cell(code)
        return text_of(client.execute_cell(nb.cells[index], index))

    comm_id = execute(f"_panel = {panel}\nprint(_panel.comm.comm_id)").strip()
    if "expr" in content:  # what the front end knows from the view (a message's id)
        content = json.loads(execute(f"import json\nprint(json.dumps({content['expr']}))"))
    data = {"comm_id": comm_id, "data": {"method": "custom", "content": content}}
    send_comm(client.kc, data)
    # once it has answered: the panel's output shown again, from a cell nbclient follows
    execute(
        "import asyncio\nwhile _panel.busy:\n    await asyncio.sleep(0.02)\n"
        "_panel._refresh_fallback()"
    )
    nb.cells[index] = nbformat.v4.new_code_cell(CLICK)


def send_comm(client, data: dict) -> None:
    """A comm message to the kernel, as the front end sends one."""
    client.shell_channel.send(client.session.msg("comm_msg", data))


def restart_and_run_all(nb, path, monkeypatch) -> nbformat.NotebookNode:
    """Save, then a new kernel runs every cell, `%load_ext agent_nb` reading the saved file."""
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    again = nbformat.read(str(path), as_version=4)
    NotebookClient(again, timeout=60, kernel_name="python3", allow_errors=False).execute()
    return again


def panel_record(nb) -> dict:
    (entry,) = [
        o.metadata["agent_nb"]
        for c in nb.cells
        for o in c.outputs
        if o.get("metadata", {}).get("agent_nb", {}).get("op") == "panel"
    ]
    return entry


def with_a_panel(*cells: str) -> nbformat.NotebookNode:
    """Run: agent_nb loaded, a turn in a cell, a panel on `main`, these cells, DUMP."""
    first = (SETUP + "\n%load_ext agent_nb\n%agent agent", "%%chat\nMy name is Alice")
    return run(notebook(*first, "%session panel main", *cells, DUMP))


@pytest.mark.kernel
def test_restart_and_run_all_keeps_the_panels_turns_once_in_their_place(tmp_path, monkeypatch):
    nb = with_a_panel(
        click({"type": "send", "text": "from the panel"}),
        click({"type": "send", "text": "and again"}),
        "%%chat\nI live in Lyon",
    )
    fresh = dumped(text_of(nb.cells[-1]))
    users = fresh[0]["main"][::2]
    assert users == ["My name is Alice", "from the panel", "and again", "I live in Lyon"]
    assert sorted(fresh[0]) == ["main"] and fresh[1] == "main"
    assert [e["op"] for e in panel_record(nb)["log"]] == ["turn", "turn"]
    path = tmp_path / "panel.ipynb"
    for _ in range(2):  # each run's saved notebook restores the next
        nb = restart_and_run_all(nb, path, monkeypatch)
        assert "restored 4 turns in 1 session" in text_of(nb.cells[0])
        assert dumped(text_of(nb.cells[-1])) == fresh  # no turn lost, none twice, no ~1 kept
        assert [e["op"] for e in panel_record(nb)["log"]] == ["turn", "turn"]


@pytest.mark.kernel
def test_a_restore_replays_the_panels_turns_and_undos_at_its_cell(tmp_path, monkeypatch):
    nb = with_a_panel(
        click({"type": "send", "text": "kept"}),
        click({"type": "send", "text": "undone"}),
        click({"type": "undo"}),
    )
    fresh = dumped(text_of(nb.cells[-1]))
    assert fresh[0]["main"][::2] == ["My name is Alice", "kept"]
    path = tmp_path / "undo.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:  # a new kernel, the notebook's cells not run: only restored
        assert "restored 3 turns" in kernel.execute(SETUP + "\n%load_ext agent_nb").stdout
        assert dumped(kernel.execute(DUMP).stdout) == fresh
    again = restart_and_run_all(nb, path, monkeypatch)
    assert dumped(text_of(again.cells[-1])) == fresh


@pytest.mark.kernel
def test_a_panel_cell_run_again_opens_the_same_session_without_the_extension(tmp_path, monkeypatch):
    show = "print(panel.session.session_id, [m.text for m in panel.session.messages])"
    nb = run(
        notebook(
            SETUP,
            "panel = ChatPanel(agent)\npanel",
            click({"type": "send", "text": "hello panel"}, "panel"),
            show,
        )
    )
    session_id, texts = text_of(nb.cells[-1]).split(" ", 1)
    assert "hello panel" in texts
    again = restart_and_run_all(nb, tmp_path / "alone.ipynb", monkeypatch)
    assert text_of(again.cells[-1]).split(" ", 1) == [session_id, texts]  # the same session
    assert panel_record(again)["session_id"] == session_id
    monkeypatch.delenv("JPY_SESSION_NAME")  # a notebook that cannot be found: a new session
    nbformat.write(again, str(tmp_path / "alone.ipynb"))
    NotebookClient(again, timeout=60, kernel_name="python3").execute()
    assert text_of(again.cells[-1]).split(" ", 1)[0] != session_id


@pytest.mark.kernel
def test_the_store_wins_over_the_notebooks_record(tmp_path, monkeypatch):
    db = str(tmp_path / "s.db")
    store = f"from agent_nb.stores import SQLiteStore\nstore = SQLiteStore({db!r})"
    show = "import json\nprint(json.dumps([m.text for m in panel.session.messages]))"
    nb = run(
        notebook(
            SETUP + "\n" + store,
            "panel = ChatPanel(agent, store=store)\npanel",
            click({"type": "send", "text": "hello store"}, "panel"),
            show,
        )
    )
    texts = json.loads(text_of(nb.cells[-1]))
    assert texts[0] == "hello store"
    from agent_nb import Agent, Message
    from agent_nb.stores import SQLiteStore

    record = panel_record(nb)
    later = Agent(provider="test").session(record["session_id"], store=SQLiteStore(db))
    later.add_message(Message.user("added elsewhere"))  # the store moved on
    again = restart_and_run_all(nb, tmp_path / "store.ipynb", monkeypatch)
    assert json.loads(text_of(again.cells[-1])) == [*texts, "added elsewhere"]


@pytest.mark.kernel
def test_in_one_kernel_a_cell_run_again_and_then_the_panel_cell_put_its_turns_back():
    with Kernel() as kernel:

        def ran(code: str, cell_id: str) -> str:
            result = kernel.execute(code, cell_id=cell_id)
            assert result.error is None, result.error
            return result.stdout

        ran(SETUP + "\n%load_ext agent_nb\n%agent agent", "setup")
        ran("%%chat\nMy name is Alice", "alice")
        ran("%session panel main\n", "panel")
        comm_id = ran(f"_panel = {LATEST}\nprint(_panel.comm.comm_id)", "x").strip()
        content = {"type": "send", "text": "from the panel"}
        data = {"comm_id": comm_id, "data": {"method": "custom", "content": content}}
        send_comm(kernel.client, data)
        ran("import asyncio\nwhile _panel.busy:\n    await asyncio.sleep(0.02)", "wait")
        ran("%%chat\nI live in Lyon", "lyon")
        fresh = dumped(ran(DUMP, "dump"))
        assert fresh[0]["main"][::2] == ["My name is Alice", "from the panel", "I live in Lyon"]
        # Alice's cell again: what followed it is kept aside, the panel's turn with it
        assert "kept in session 'main~1'" in ran("%%chat\nMy name is Alice", "alice")
        ran("%session panel main\n", "panel")  # the panel's turn goes back after it, once
        ran("%session panel main\n", "panel")
        ran("%%chat\nI live in Lyon", "lyon")  # and the kept session, waiting for this, goes
        again = dumped(ran(DUMP, "dump"))
        assert sorted(again[0]) == ["main"]
        assert again[0]["main"][::2] == fresh[0]["main"][::2]
        assert again[0]["main"][2:4] == fresh[0]["main"][2:4]  # the panel's turn, verbatim


def test_a_damaged_or_hostile_panel_record_is_skipped_and_the_rest_replays():
    from agent_nb import Agent, Message, _records
    from agent_nb._format import FORMAT_VERSION
    from agent_nb.session import Session

    session = Session(Agent(provider="test"), "main")
    good = [Message.user("hi"), Message.assistant("hello")]
    turn = _records.record("turn", session, good)["agent_nb"]
    log = [
        turn,
        "not a record",
        {**turn, "op": "panel", "log": [], "record_id": "r3"},  # a panel inside a panel
        {**turn, "version": FORMAT_VERSION + 1, "record_id": "r4"},
        {**turn, "op": "use", "session_id": "ghost", "record_id": "r5"},
        {**turn, "record_id": "r6"},  # the same turn again
    ]
    entry = _records.record("panel", session, log=log)["agent_nb"]
    cell = {"id": "p1", "source": "%session panel", "outputs": [{"metadata": {"agent_nb": entry}}]}
    copied = {**cell, "id": "p2"}
    bad = {"id": "p3", "source": "", "outputs": [{"metadata": {"agent_nb": {**entry, "log": 3}}}]}
    lines: list[str] = []
    replayed = _records.replay(
        _records.records({"cells": [cell, copied, bad]}),
        Agent(provider="test"),
        Session,
        lines.append,
    )
    assert [m.text for m in replayed.sessions["main"].messages] == ["hi", "hello"]
    assert [p.cell_id for p in replayed.panels] == ["p1"] and len(replayed.panels[0].log) == 1
    assert replayed.current is None  # a panel's turns do not choose %%chat's session
    assert len(lines) == 7, lines
    assert "entry 2 of the panel in cell 1 (id 'p1')" in lines[0]
    assert "holds no 'panel'" in lines[1] and "newer than this agent_nb reads" in lines[2]
    assert "which no earlier record made" in lines[3] and "already restored" in lines[4]
    assert "copy of an earlier record" in lines[5] and "cell 3" in lines[6]


@pytest.mark.kernel
def test_a_turn_a_cells_code_sends_through_the_panel_is_that_cells_not_the_panels(
    tmp_path, monkeypatch
):
    show = "print(sum(m.text == 'by a cell' for m in panel.session.messages))"
    sends = "await panel.send('by a cell')"
    nb = run(notebook(SETUP, "panel = ChatPanel(agent)\npanel", sends, show))
    assert text_of(nb.cells[-1]).strip() == "1" and panel_record(nb)["log"] == []
    again = restart_and_run_all(nb, tmp_path / "code.ipynb", monkeypatch)
    assert text_of(again.cells[-1]).strip() == "1"  # the cell sent it again; the panel did not


def test_a_turn_undone_in_the_panel_stays_undone_though_its_cell_comes_later():
    from agent_nb import Agent, Message, _records
    from agent_nb.session import Session

    session = Session(Agent(provider="test"), "main")
    first = [Message.user("first"), Message.assistant("one")]
    later = [Message.user("later"), Message.assistant("two")]
    undo = _records.record("undo", session, replaces=later[0].id)["agent_nb"]
    panel = _records.record("panel", session, log=[undo])["agent_nb"]
    cells = [
        {
            "id": "a",
            "source": "%%chat\nfirst",
            "outputs": [{"metadata": _records.record("turn", session, first)}],
        },
        {"id": "p", "source": "%session panel", "outputs": [{"metadata": {"agent_nb": panel}}]},
        {
            "id": "b",
            "source": "%%chat\nlater",
            "outputs": [{"metadata": _records.record("turn", session, later)}],
        },
    ]
    lines: list[str] = []
    replayed = _records.replay(
        _records.records({"cells": cells}), Agent(provider="test"), Session, lines.append
    )
    assert [m.text for m in replayed.sessions["main"].messages] == ["first", "one"]
    assert lines == [
        "agent_nb: skipped the record in cell 3 (id 'b'): its turn was undone in a chat panel"
    ]


@pytest.mark.kernel
def test_after_a_restart_the_cell_id_picks_the_panel_not_the_cells_text(tmp_path, monkeypatch):
    make = "panel = ChatPanel(agent)\npanel"
    show = "print(panel.session.session_id, len(panel.session.messages))"
    nb = run(notebook(SETUP, make, click({"type": "send", "text": "hi"}, "panel"), show))
    saved = text_of(nb.cells[-1]).split()
    path = tmp_path / "ids.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        kernel.execute(SETUP, cell_id=nb.cells[0].id)
        kernel.execute(make, cell_id="a-new-cell")  # the same text in another cell: a new panel
        other = kernel.execute(show, cell_id="show").stdout.split()
        kernel.execute(make, cell_id=nb.cells[1].id)  # the panel's own cell
        again = kernel.execute(show, cell_id="show").stdout.split()
    assert other[0] != saved[0] and other[1] == "0"
    assert again == saved and saved[1] == "2"


#: The ids of the panel's last answer and of its session's first prompt, as the view has them.
LAST_ANSWER = "_panel.session.messages[-1].id"
FIRST_PROMPT = "_panel.session.messages[0].id"


@pytest.mark.kernel
def test_regenerate_edit_and_new_session_in_the_panel_survive_restart_and_run_all(
    tmp_path, monkeypatch
):
    """The controls' changes are in the panel's log: a regenerate (its old answer kept as
    a branch), an edit of an earlier prompt (a fork from there), a new session."""
    nb = with_a_panel(
        click({"type": "send", "text": "from the panel"}),
        click({"expr": f"{{'type': 'regenerate', 'id': {LAST_ANSWER}}}"}),
        click({"expr": f"{{'type': 'send', 'text': 'I am Bob', 'edit': {FIRST_PROMPT}}}"}),
        click({"type": "new"}),
        click({"type": "send", "text": "a new start"}),
        "%%chat\nI live in Lyon",
    )
    fresh = dumped(text_of(nb.cells[-1]))
    sessions, current = fresh
    assert sessions["main"][::2] == ["My name is Alice", "from the panel", "I live in Lyon"]
    assert sessions["main~1"][::2] == ["My name is Alice", "from the panel"]  # the old answer
    assert sessions["main~2"][::2] == ["I am Bob"]  # the edit, forked before the first prompt
    (new,) = [k for k in sessions if k not in ("main", "main~1", "main~2")]
    assert sessions[new][::2] == ["a new start"] and current == "main"
    ops = [e["op"] for e in panel_record(nb)["log"]]
    assert ops == ["turn", "load", "undo", "turn", "load", "use", "turn", "load", "use", "turn"]
    path = tmp_path / "controls.ipynb"
    for _ in range(2):
        nb = restart_and_run_all(nb, path, monkeypatch)
        assert dumped(text_of(nb.cells[-1])) == fresh


@pytest.mark.kernel
def test_a_panel_on_another_session_does_not_move_where_chat_talks(tmp_path, monkeypatch):
    nb = run(
        notebook(
            SETUP + "\n%load_ext agent_nb\n%agent agent",
            "%%chat\nMy name is Alice",
            "%session panel side",
            click({"type": "send", "text": "in the side panel"}),
            "%%chat\nI live in Lyon",
            DUMP,
        )
    )
    fresh = dumped(text_of(nb.cells[-1]))
    assert fresh[0]["main"][::2] == ["My name is Alice", "I live in Lyon"]
    assert fresh[0]["side"][::2] == ["in the side panel"] and fresh[1] == "main"
    again = restart_and_run_all(nb, tmp_path / "side.ipynb", monkeypatch)
    assert dumped(text_of(again.cells[-1])) == fresh


@pytest.mark.kernel
def test_a_closed_panel_displayed_again_shows_its_transcript_not_a_traceback():
    with Kernel() as kernel:
        assert kernel.execute(SETUP + "\npanel = ChatPanel(agent)\npanel").error is None
        assert (
            kernel.execute(
                "panel.session.add_message(__import__('agent_nb').Message.user('hi'))"
            ).error
            is None
        )
        assert kernel.execute("panel.close()").error is None
        for shown in ("panel", "display(panel)"):
            again = kernel.execute(shown)
            assert again.error is None, again.error
            (output,) = [
                m["content"]
                for m in again.messages
                if m["msg_type"] in ("display_data", "execute_result")
            ]
            assert "application/vnd.jupyter.widget-view+json" not in output["data"]
            assert "hi" in output["data"]["text/html"]
            assert "agent_nb" not in output["metadata"]  # the panel's record stays in its cell


@pytest.mark.kernel
def test_two_panels_in_one_cell_are_two_sessions_and_a_rerun_gives_each_its_own_back():
    code = (
        "a = ChatPanel(agent)\nb = ChatPanel(agent)\n"
        "print(a.session.session_id, b.session.session_id, a.session is b.session)"
    )
    with Kernel() as kernel:
        assert kernel.execute(SETUP).error is None
        first = kernel.execute(code, cell_id="two").stdout.split()
        assert first[0] != first[1] and first[2] == "False"
        assert kernel.execute(code, cell_id="two").stdout.split() == first  # in their places
