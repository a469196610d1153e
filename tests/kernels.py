"""A real ipykernel driven message by message, and notebooks executed by nbclient."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import nbformat
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.util import run_sync


@dataclass
class Execution:
    """What one execute request produced on iopub."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)  # the execute_reply's content

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )

    @property
    def shown(self) -> str:
        """stdout and the text/plain of what was displayed, in order (HTML outputs too)."""
        return "".join(
            m["content"]["text"]
            if m["msg_type"] == "stream"
            else m["content"]["data"].get("text/plain", "")
            for m in self.messages
            if (m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
            or m["msg_type"] == "display_data"
        )

    @property
    def stderr(self) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
        )

    @property
    def error(self) -> dict[str, Any] | None:
        errors = [m["content"] for m in self.messages if m["msg_type"] == "error"]
        return errors[-1] if errors else None

    @property
    def last_display(self) -> dict[str, Any]:
        """The content of the last display or display update: what the cell finally shows."""
        shown = [
            m for m in self.messages if m["msg_type"] in ("display_data", "update_display_data")
        ]
        return shown[-1]["content"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] == kind]


class Kernel:
    """`with Kernel() as k: k.execute("1 + 1")`: a fresh python3 kernel."""

    def __enter__(self) -> Kernel:
        self.manager, self.client = start_new_kernel(kernel_name="python3")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def execute(
        self,
        code: str,
        *,
        interrupt_after: float | None = None,
        timeout: float = 60,
        cell_id: str | None = None,
    ) -> Execution:
        """Run `code`; with `cell_id`, as JupyterLab runs a cell (its id in the metadata)."""
        if cell_id is None:
            msg_id = self.client.execute(code)
        else:
            content = {"code": code, "silent": False, "store_history": True}
            content |= {"user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
            msg = self.client.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.client.shell_channel.send(msg)
            msg_id = msg["header"]["msg_id"]
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            self.manager.interrupt_kernel()
        result = Execution()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                result.reply = self._reply(msg_id)
                return result
            result.messages.append(msg)
        raise AssertionError(f"the kernel did not finish {code[:40]!r} in {timeout} s")

    def complete(self, code: str) -> list[str]:
        """What Tab offers at the end of `code`."""
        return self._reply(self.client.complete(code, len(code)))["matches"]

    def _reply(self, msg_id: str) -> dict[str, Any]:
        while True:
            reply = self.client.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]


@contextmanager
def chat_kernel(server: Any) -> Iterator[Kernel]:
    """A fresh kernel with agent_nb loaded and talking to the loopback server."""
    with Kernel() as kernel:
        kernel.execute(
            f"%load_ext agent_nb\n%agent provider=openai model=m base_url={server.url} api_key=k"
        )
        yield kernel


def run_notebook(*sources: str, allow_errors: bool = True) -> nbformat.NotebookNode:
    """A new notebook with these code cells, executed in a fresh kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=allow_errors).execute()
    return nb


class LabClient(NotebookClient):
    """nbclient sending each cell's id with its execution, as JupyterLab and Notebook 7 do."""

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        kc = self.kc
        assert kc is not None

        def execute(code: str, store_history: bool = True, stop_on_error: bool = True) -> str:
            content = {"code": code, "silent": False, "store_history": store_history}
            content |= {"user_expressions": {}, "allow_stdin": False}
            content["stop_on_error"] = stop_on_error
            msg = kc.session.msg("execute_request", content, metadata={"cellId": cell.id})
            kc.shell_channel.send(msg)
            return msg["header"]["msg_id"]

        kc.execute = execute  # type: ignore[method-assign]
        return await super().async_execute_cell(cell, cell_index, *args, **kw)

    execute_cell = run_sync(async_execute_cell)  # nbclient's own wraps its own


def text_of(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


# -- a notebook that the rerun tests (tests/notebook/test_reruns.py) and the browser's run --

#: A cell that prints the kernel's sessions (JSON) and the current one.
DUMP = (
    "import json\nfrom agent_nb.notebook.workspace import Workspace\n"
    "_m = Workspace.of(get_ipython())\n"
    "print(json.dumps({k: [m.text for m in s.messages] for k, s in _m.sessions.items()}))\n"
    "print(_m.current)"
)

TRIP = [
    "%load_ext agent_nb",
    "%%chat\nMy name is Alice",
    "%%chat\nI live in Lyon",
    "%session fork side",
    "%%chat\nI also like tea",
    "%session use main",
    "%%chat\nI work as an engineer",
    "%%chat\nGo on",
    "%%chat\nGo on",
]


def dumped(text: str) -> tuple[dict[str, list[str]], str]:
    """What DUMP printed: the sessions' texts by id, and the current session."""
    sessions, current = text.strip().splitlines()[-2:]
    return json.loads(sessions), current
