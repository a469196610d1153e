"""MCP servers in a real Jupyter kernel: `%agent mcp=...`, no server process left after the
kernel exits (shut down or killed), approvals pending across a kernel restart."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kernels import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

SERVER = str(Path(__file__).resolve().parents[1] / "mcp_server.py")
SETUP = f"""
%load_ext agent_nb
import sys
from agent_nb import MCP
lab = MCP.stdio(sys.executable, [{SERVER!r}], requires_approval=False)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def gone(pid: int, limit: float = 30) -> bool:
    deadline = time.monotonic() + limit
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.parametrize("how", ["shutdown", "killed"])
def test_agent_mcp_in_a_notebook_and_no_server_left_after_the_kernel(how):
    kernel = Kernel().__enter__()
    try:
        kernel.execute(SETUP)
        shown = kernel.execute("%agent provider=test mcp=lab")
        assert "mcp: MCP.stdio('mcp_server'" in shown.stdout, shown.stderr
        answer = kernel.execute("%%chat\nwhat is the pid?")
        assert answer.error is None, answer.error
        text = answer.last_display["data"]["text/plain"]
        pid = int(re.search(r"pid returned (\d+)", text).group(1))
        assert alive(pid)
    finally:
        kernel.client.stop_channels()
        kernel.manager.shutdown_kernel(now=how == "killed")
    # shut down: closed at exit; killed: the server sees its stdin close and ends
    assert gone(pid), f"MCP server {pid} outlived the kernel ({how})"


def test_mcp_approvals_pending_across_a_kernel_restart(tmp_path):
    db = tmp_path / "s.db"
    setup = f"""
%load_ext agent_nb
import sys
from agent_nb import Agent, MCP
from agent_nb.stores import SQLiteStore
lab = MCP.stdio(sys.executable, [{SERVER!r}])
agent = Agent(provider="test", tools=[lab], store=SQLiteStore({str(db)!r}))
"""
    with Kernel() as kernel:
        kernel.execute(setup)
        first = kernel.execute(
            "r = agent.session('pay').run('what is the pid?')\n"
            "print([(c.id, c.name) for c in r.pending_approvals])"
        )
        assert "'pid')]" in first.stdout, first.stderr
    with Kernel() as kernel:  # a new kernel: the session from the store, the server anew
        kernel.execute(setup)
        second = kernel.execute(
            "s = agent.session('pay')\n"
            "[call] = s.pending_approvals\n"
            "s.approve(call.id, always=True)\n"
            "print(s.resume().text)\n"
            "print(s.allowed_tools)\n"
            "agent.close()"
        )
        assert re.search(r"pid returned \d+", second.stdout), second.stderr + str(second.error)
        assert "['mcp_server:pid']" in second.stdout  # the server's name: its tool


def test_session_approve_always_in_a_notebook_and_a_restore_asks_again(tmp_path):
    """`%session approve --always ID`: the call runs, and its tool runs without asking for
    the rest of the session; the notebook's records say so, but a restore asks again: no
    notebook's records approve a tool (anyone may have written them)."""
    import nbformat
    from kernels import run_notebook, text_of

    from agent_nb import Agent, Session

    nb = run_notebook(
        "%load_ext agent_nb\nimport sys\nfrom agent_nb import MCP\n"
        f"lab = MCP.stdio(sys.executable, [{SERVER!r}], name='lab')",  # asks (the default)
        "%agent provider=test mcp=lab",
        "%%chat\nwhat is the pid?",
        "from agent_nb.notebook.workspace import Workspace\n"
        "session = Workspace.of(get_ipython()).session()\n"
        "waiting = [c.id for c in session.pending_approvals]\nprint(waiting)",
        "%session approve --always {waiting[0]}",
        "%%chat\nand the pid now?",
        "print(session.allowed_tools, session.pending_approvals)",
    )
    for cell in nb.cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[2].outputs)
    assert "waiting for approval: pid()" in shown and "--always" in shown
    resumed = "".join(o.get("data", {}).get("text/html", "") for o in nb.cells[4].outputs)
    assert "pid returned" in resumed and "MCP server <code>lab</code>" in resumed
    again = "".join(o.get("data", {}).get("text/html", "") for o in nb.cells[5].outputs)
    assert "pid returned" in again and "waits for your approval" not in again
    assert "MCP server <code>lab</code>" in again  # shown as the call streams
    assert text_of(nb.cells[6]).strip() == "['lab:pid'] []"
    saved = tmp_path / "approved.ipynb"
    nbformat.write(nb, saved)
    restored = Session.from_notebook(saved, Agent(provider="test"))
    assert restored.allowed_tools == []
