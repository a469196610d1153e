"""The sync API inside a real Jupyter kernel: it runs under the kernel's own event loop."""

from __future__ import annotations

import json

import nbformat
import pytest
from kernels import Kernel
from nbclient import NotebookClient

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]


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
    with Kernel() as kernel:
        kernel.execute(
            "from agent_nb import Agent\n"
            "from agent_nb.providers.testing import TestProvider\n"
            "session = Agent(provider=TestProvider(delay=0.1), model='t').session()"
        )
        stopped = kernel.execute(
            "for e in session.stream('one two three four five six seven eight nine ten eleven'):\n"
            "    print(e.text, end='', flush=True)",
            interrupt_after=1.0,
        )
        assert stopped.error["ename"] == "KeyboardInterrupt"
        shown = kernel.execute(
            "import json\n"
            "print(json.dumps([[m.role, m.text, dict(m.metadata)] for m in session.messages]))"
        )
        history = json.loads(shown.stdout)
        assert [h[0] for h in history] == ["user", "assistant"]
        assert history[1][2]["interrupted"] is True
        assert history[1][1] and stopped.stdout.startswith(history[1][1].rstrip())
        after = kernel.execute("print(session.run('and now?').text)")
        assert after.error is None and "and now?" in after.stdout  # usable afterwards
