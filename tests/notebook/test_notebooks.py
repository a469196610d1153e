"""The notebooks in notebooks/, executed in a real kernel: offline, and on a loopback server."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agent_nb import Agent, Session

pytestmark = pytest.mark.timeout(240)
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(params=["test", "loopback"])
def provider(request, monkeypatch, tmp_path):
    """Where the notebooks' questions go: the offline provider, or the loopback server."""
    monkeypatch.chdir(tmp_path)
    if request.param == "loopback":
        server = request.getfixturevalue("server")
        monkeypatch.setenv("AGENT_NB_PROVIDER", "openai")
        monkeypatch.setenv("AGENT_NB_MODEL", "gpt-4o-mini")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret-0123456789")
    return request.param


def execute(name: str, folder: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()  # any error fails the test: every cell must run
    nbformat.validate(notebook)
    return notebook


def chat_outputs(cell) -> list[dict]:
    return [o for o in cell.outputs if "agent_nb" in o.get("metadata", {})]


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_the_notebooks_are_saved_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert not [c for c in notebook.cells if c.get("outputs")], path.name


@pytest.mark.kernel
def test_quickstart(provider, tmp_path):
    nb = execute("quickstart", tmp_path)
    chats = [c for c in nb.cells if c.source.startswith("%%chat")]
    assert len(chats) == 4
    for cell in chats:
        (record,) = chat_outputs(cell)
        assert "<sub>" in record["data"]["text/html"]  # the final answer with its footer
        entry = record["metadata"]["agent_nb"]
        assert entry["op"] == "turn" and entry["messages"][0]["role"] == "user"
    assert [chat_outputs(c)[0]["metadata"]["agent_nb"]["session_id"] for c in chats] == [
        "main",
        "main",
        "main",
        "experiment",
    ]
    printed = stdout(nb.cells[7]).splitlines()
    assert printed[-1] == "True 2"
    listing = stdout(next(c for c in nb.cells if c.source == "%session list"))
    assert "main  (6 messages" in listing and "* experiment  (8 messages" in listing
    # the chat panel on `main`: the widget, and the conversation as its fallback transcript
    view, panel = next(c for c in nb.cells if c.source == "%session panel").outputs
    assert "application/vnd.jupyter.widget-view+json" in view["data"]
    assert "My name is Alice" in panel["data"]["text/html"]
    assert panel["metadata"]["agent_nb"]["op"] == "panel"
    assert panel["metadata"]["agent_nb"]["session_id"] == "main"
    transcript = next(c for c in nb.cells if c.source.endswith("session"))
    shown = next(o for o in transcript.outputs if o.output_type == "execute_result")
    said = "<strong>you</strong>: Hello! My favourite colour is green."
    assert said in shown["data"]["text/html"]
    assert stdout(nb.cells[-1]).strip().endswith("cells")
    if provider == "test":
        assert "Alice" in printed[0]  # the offline provider answers from the conversation


@pytest.mark.kernel
def test_tools(provider, tmp_path, request):
    if provider == "loopback":
        request.getfixturevalue("server").script(
            _tool_reply("get_weather", {"city": "Paris"}),
            "It is sunny in Paris.",
            _tool_reply("get_weather", {"city": "Lyon"}),
            "Sunny in Lyon too.",
            _tool_reply("book_flight", {"destination": "Oslo", "date": "2027-01-15"}),
            "Booked: seat 12A.",
        )
    nb = execute("tools", tmp_path)
    (record,) = chat_outputs(nb.cells[3])
    shown = record["data"]["text/html"]
    assert '<details><summary>🔧 <code>get_weather({"city": "Paris"})</code></summary>' in shown
    assert "sunny and 21 °C in Paris" in shown
    assert "tool ['get_weather']" not in stdout(nb.cells[4])
    assert "tool [] ['sunny and 21 °C in Paris']" in stdout(nb.cells[4])
    assert stdout(nb.cells[5]).split() == ["tool_call", "get_weather", "tool_result", "get_weather"]
    # approval: the call waits, with its commands; approving it runs it and the answer goes on
    booking = next(c for c in nb.cells if c.source.startswith("%%chat --new trips -o booking"))
    waiting = "".join(o.get("data", {}).get("text/plain", "") for o in booking.outputs)
    assert "waiting for approval: book_flight(" in waiting and "%session approve" in waiting
    assert "seat 12A" not in waiting
    approved = next(c for c in nb.cells if c.source.startswith("call_id ="))
    (resumed,) = chat_outputs(approved)
    assert resumed["metadata"]["agent_nb"]["op"] == "resume"
    assert "booked: Oslo on " in resumed["data"]["text/html"]  # the tool ran, once approved
    # structured output
    assert stdout(nb.cells[-1]).strip() == "Forecast True"


@pytest.mark.kernel
def test_mcp(tmp_path, monkeypatch):
    """A local MCP server written in the notebook, its tools in %%chat, an approval with
    --always (offline: the test provider picks the tools the prompts name)."""
    monkeypatch.chdir(tmp_path)
    nb = execute("mcp", tmp_path)
    listed = stdout(next(c for c in nb.cells if "%agent agent" in c.source))
    assert "mcp: MCP.stdio('weather'" in listed and "False ['forecast', 'book_table']" in listed
    cells = [c for c in nb.cells if c.source.startswith("%%chat")]
    (forecast,) = chat_outputs(cells[0])
    shown = forecast["data"]["text/html"]
    assert '<code>forecast({"city": "Oslo"})</code> · MCP server <code>weather</code>' in shown
    assert "Sunny in Oslo" in shown
    sources = stdout(next(c for c in nb.cells if "tool_sources" in c.source))
    assert "'server': 'weather', 'tool': 'forecast'" in sources
    waiting = "".join(o.get("data", {}).get("text/plain", "") for o in cells[1].outputs)
    assert "waiting for approval: book_table(" in waiting and "is booked" not in waiting
    (resumed,) = chat_outputs(next(c for c in nb.cells if c.source.startswith("call_id =")))
    assert resumed["metadata"]["agent_nb"]["op"] == "resume"
    assert resumed["metadata"]["agent_nb"]["allowed_tools"] == ["weather:book_table"]
    assert "a table for 2 at" in resumed["data"]["text/html"]
    (again,) = chat_outputs(cells[2])  # allowed from now on: it runs without asking
    assert "a table for 4 at" in again["data"]["text/html"]
    info = stdout(next(c for c in nb.cells if c.source == "%session info"))
    assert "tools allowed without asking: weather:book_table" in info
    assert "waiting for approval" not in info
    assert stdout(nb.cells[-1]).strip() == "False"  # agent.close() stopped the server


def _tool_reply(name, arguments):
    from fake_openai import Reply

    return Reply(tool_calls=[{"name": name, "arguments": arguments}])


@pytest.mark.kernel
def test_persistence_and_a_restore_in_a_new_kernel(provider, tmp_path):
    nb = execute("persistence", tmp_path)
    assert "saved session 'main' (4 messages)" in stdout(nb.cells[6])
    assert "The project deadline is Friday" in stdout(nb.cells[7])
    assert "exported session 'main' (4 messages)" in stdout(nb.cells[8])
    assert stdout(nb.cells[9]).strip() == "4 messages read back from the export"
    assert stdout(nb.cells[10]).split("\n")[:2] == [
        "4 messages resumed from SQLite",
        "6 messages stored",
    ]
    saved = tmp_path / "persistence.ipynb"
    nbformat.write(nb, saved)  # as the user's Save does; then a new kernel reads it back
    again = nbformat.v4.new_notebook()
    again.cells = [
        nbformat.v4.new_code_cell(s)
        for s in ("%load_ext agent_nb", f"%session restore {saved}", "%session history")
    ]
    NotebookClient(again, timeout=60, kernel_name="python3").execute()
    assert "restored 2 turns in 1 session" in stdout(again.cells[1])
    (history,) = again.cells[2].outputs
    assert history["data"]["text/plain"].count("[user]") == 2
    session = Session.from_notebook(saved, Agent(provider="test"))
    assert [m.role for m in session.messages] == ["user", "assistant"] * 2


@pytest.mark.kernel
def test_the_headless_demo_executes_the_quickstart(tmp_path):
    import subprocess
    import sys

    root = NOTEBOOKS.parent
    target = tmp_path / "quickstart.out.ipynb"
    result = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "run_notebook.py"),
            str(NOTEBOOKS / "quickstart.ipynb"),
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "> My name is Alice" in result.stdout and f"outputs: {target}" in result.stdout
    executed = nbformat.read(target, as_version=4)
    nbformat.validate(executed)
    assert any(c.get("outputs") for c in executed.cells)
    demo = (root / "scripts" / "demo").read_text()  # what ./scripts/demo --headless runs
    assert "examples/run_notebook.py notebooks/quickstart.ipynb quickstart.out.ipynb" in demo
    assert subprocess.run(["bash", "-n", str(root / "scripts" / "demo")]).returncode == 0


@pytest.mark.kernel
def test_the_headless_demo_prints_answers_not_the_kernels_tcp_warning(tmp_path):
    import subprocess
    import sys

    source, target = tmp_path / "demo.ipynb", tmp_path / "demo.out.ipynb"
    cells = ["%load_ext agent_nb", "%%chat\nMy name is Alice"]
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), source
    )
    script = NOTEBOOKS.parent / "examples" / "run_notebook.py"
    done = subprocess.run(
        [sys.executable, str(script), str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "> My name is Alice" in done.stdout
    assert "without encryption" not in done.stderr, done.stderr
