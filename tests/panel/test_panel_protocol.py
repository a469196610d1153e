"""The panel's comm: every message kind is named once (protocol.py), panel.js holds the same
names, and each kind has a sender on one side and a handler on the other."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources

import pytest
from fake_openai import Reply
from test_panel import Recorder

from agent_nb import Agent, ChatPanel, tool
from agent_nb.notebook.panel import protocol
from agent_nb.notebook.panel.protocol import ToKernel, ToView

PANEL_JS = resources.files("agent_nb.notebook.panel").joinpath("panel.js").read_text("utf-8")


def outside_the_tables(source: str) -> str:
    """panel.js without its generated tables: the code that uses the names."""
    start = source.index("// <protocol>")
    end = source.index("// </protocol>")
    return source[:start] + source[end:]


def test_panel_js_holds_the_tables_protocol_py_generates():
    assert PANEL_JS.count(protocol.js()) == 1, (
        "panel.js's tables differ from protocol.py's: run "
        "`python -m agent_nb.notebook.panel.protocol`"
    )


def test_panel_js_names_only_kinds_of_the_protocol_and_sends_none_by_its_string():
    code = outside_the_tables(PANEL_JS)
    for table, kinds in (("TO_VIEW", ToView), ("TO_KERNEL", ToKernel)):
        used = set(re.findall(rf"\b{table}\.(\w+)", code))
        assert used <= {k.value for k in kinds}, used - {k.value for k in kinds}
    assert not re.search(r"""type\s*:\s*["'`]""", code)  # a kind spelled out, not named
    assert "msg.type ===" not in code  # dispatched from the table, not compared one by one


def test_every_kind_the_kernel_sends_has_a_handler_in_panel_js():
    handled = re.findall(r"\[TO_VIEW\.(\w+)\]\s*:", outside_the_tables(PANEL_JS))
    assert sorted(handled) == sorted(k.value for k in ToView)


def test_every_kind_the_kernel_handles_is_sent_by_panel_js():
    sent = set(re.findall(r"\bTO_KERNEL\.(\w+)", outside_the_tables(PANEL_JS)))
    assert sent == {k.value for k in ToKernel}


@pytest.mark.skipif(shutil.which("node") is None, reason="node checks the module's syntax")
def test_panel_js_is_a_valid_module():
    check = ["node", "--input-type=module", "--check"]
    done = subprocess.run(check, input=PANEL_JS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class Calls:
    """Stands in for a panel's Controls: records what is called on it."""

    def __init__(self) -> None:
        self.made: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        return lambda *args: self.made.append((name, args))


#: A message of each kind, as a view sends it, and what the kernel does with it.
FROM_A_VIEW = {
    ToKernel.HELLO: ({}, ("hello", ())),
    ToKernel.SEND: ({"text": "hi"}, ("send", ("hi",))),
    ToKernel.STOP: ({}, ("stop", ())),
    ToKernel.UNDO: ({}, ("undo", ())),
    ToKernel.REGENERATE: ({"id": "m2"}, ("regenerate", ("m2",))),
    ToKernel.EDIT: ({"id": "m1"}, ("edit", ("m1",))),
    ToKernel.APPROVE: ({"call": "c1", "id": "m2"}, ("decide", ("c1", True, "m2", False))),
    ToKernel.DENY: ({"call": "c1", "id": "m2"}, ("decide", ("c1", False, "m2"))),
    ToKernel.RETRY: ({}, ("retry", ())),
    ToKernel.SWITCH: ({"session": "s2"}, ("choose", ("s2",))),
    ToKernel.NEW: ({}, ("new_session", ())),
    ToKernel.RENAME: ({"name": "s3"}, ("rename", ("s3",))),
}


def test_every_kind_a_view_sends_has_a_handler_in_the_kernel():
    assert set(FROM_A_VIEW) == set(ToKernel)
    for kind, (fields, expected) in FROM_A_VIEW.items():
        controls = Calls()
        protocol.receive(controls, {"type": kind.value, **fields})
        assert controls.made == [expected], kind


@pytest.mark.parametrize(
    "content",
    [
        "send",
        None,
        {"type": "no-such-kind"},
        {"type": ["send"]},
        {"text": "hi"},
        {"type": "send", "text": ""},
        {"type": "send", "text": ["hi"]},
    ],
)
def test_what_is_no_message_of_the_protocol_does_nothing(content):
    controls = Calls()
    protocol.receive(controls, content)
    assert controls.made == []


def test_always_allow_is_an_approve_with_always_true_and_nothing_else_is():
    made = []
    for always in (True, "true", 1, None):
        controls = Calls()
        protocol.receive(controls, {"type": "approve", "call": "c1", "id": "m2", "always": always})
        made.append(controls.made)
    assert made == [[("decide", ("c1", True, "m2", flag))] for flag in (True, False, False, False)]
    # panel.js sends it from the card's Always allow button
    assert '["always", "Always allow"' in PANEL_JS
    assert 'action === "always"' in PANEL_JS and "always });" in PANEL_JS


def test_a_send_with_edit_forks_at_that_prompt():
    controls = Calls()
    protocol.receive(controls, {"type": "send", "text": "changed", "edit": "m1"})
    assert controls.made == [("send_edited", ("m1", "changed"))]


async def test_the_kernel_sends_every_kind_and_only_those(server):
    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    server.script(
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Lyon"}}]), Reply(text="Sunny.")
    )
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k", tools=[weather])
    panel = ChatPanel(agent.session())
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    await panel.send("weather in Lyon?")
    prompt = panel.session.messages[0].id
    panel._handle_custom_msg({"type": "edit", "id": prompt}, [])
    sent = [message["type"] for message in recorder.custom()]
    assert set(sent) == {k.value for k in ToView}, sent
