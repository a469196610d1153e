"""The sync API inside a real Jupyter kernel: it runs under the kernel's own event loop."""

from __future__ import annotations

import json
import queue
import time

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(180)


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_run_stream_json_in_a_real_kernel(openai_env):
    nb = notebook(
        "import asyncio\n"
        "from agent_nb import Agent\n"
        "from pydantic import BaseModel\n"
        "agent = Agent(provider='openai', model='gpt-4o')\n"
        "session = agent.session()\n"
        "assert asyncio.get_event_loop().is_running()  # the kernel's loop",
        "print(session.run('My name is Alice').text)",
        "for e in session.stream('I am an engineer'):\n"
        "    if e.type == 'text_delta':\n"
        "        print(e.text, end='|')",
        "class Facts(BaseModel):\n"
        "    facts: list[str]\n"
        "print(session.json('What do you know?', schema=Facts).output.facts)",
        "response = await session.run_async('Top-level await works too')\n"
        "print(len(session.messages))",
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert "My name is Alice" in outputs_text(nb.cells[1])
    deltas = outputs_text(nb.cells[2]).split("|")
    assert len(deltas) > 3 and "I am an engineer" in "".join(deltas)
    assert "'My name is Alice', 'I am an engineer'" in outputs_text(nb.cells[3])
    assert outputs_text(nb.cells[4]).strip() == "8"
    assert len(openai_env.requests) == 4


def test_the_stop_button_keeps_the_partial_answer():
    km, kc = start_new_kernel(kernel_name="python3")
    try:

        def execute(code: str, interrupt_after: float | None = None) -> tuple[str, str]:
            msg_id = kc.execute(code)
            if interrupt_after is not None:
                time.sleep(interrupt_after)
                km.interrupt_kernel()
            out, error = [], ""
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=30)
                except queue.Empty:
                    raise AssertionError("the kernel stopped answering") from None
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error = content["ename"]
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out), error

        execute(
            "from agent_nb import Agent\n"
            "from agent_nb.providers.testing import TestProvider\n"
            "session = Agent(provider=TestProvider(delay=0.1), model='t').session()"
        )
        out, error = execute(
            "for e in session.stream('one two three four five six seven eight nine ten eleven'):\n"
            "    print(e.text, end='', flush=True)",
            interrupt_after=1.0,
        )
        assert error == "KeyboardInterrupt"
        out2, _ = execute(
            "import json\n"
            "print(json.dumps([[m.role, m.text, dict(m.metadata)] for m in session.messages]))"
        )
        history = json.loads(out2)
        assert [h[0] for h in history] == ["user", "assistant"]
        assert history[1][2]["interrupted"] is True
        assert history[1][1] and out.startswith(history[1][1].rstrip())
        out3, error3 = execute("print(session.run('and now?').text)")
        assert not error3 and "and now?" in out3  # the session is usable afterwards
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
