"""MCP tools in the chat panel, against a real stdio server (tests/mcp_server.py, on the
SDK's own MCPServer): each call's card names its server, Always allow is recorded in the
session and in the panel's log, and what a hostile server says is inert."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from mcp_helpers import SERVER, calls
from test_panel import Recorder, call_ids, inert_items, items_html, view
from xss_corpus import PAYLOADS, problems

from agent_nb import MCP, Agent, ChatPanel, Message, Session, tool
from agent_nb.messages import ToolCallPart, ToolResultPart
from agent_nb.providers.testing import TestProvider

pytestmark = [pytest.mark.timeout(120), pytest.mark.server]  # real MCP servers

LAB = "MCP server <code>lab</code>"


@pytest.fixture
def lab() -> Iterator[MCP]:
    server = MCP.stdio(sys.executable, [SERVER], name="lab")  # asks for approval (the default)
    yield server
    server.close()


@pytest.fixture
def trusted() -> Iterator[MCP]:
    server = MCP.stdio(sys.executable, [SERVER], name="lab", requires_approval=False)
    yield server
    server.close()


def sent_html(recorder: Recorder) -> list[str]:
    """Every piece of HTML the panel sent its views: items, streamed blocks, cards."""
    shown = []
    for message in recorder.custom():
        shown += [i["html"] for i in message.get("items", [])]
        shown += [message.get(key) or "" for key in ("done", "tail", "html", "user", "error")]
    return [s for s in shown if s]


async def test_an_mcp_calls_card_names_its_server_as_it_streams_and_after(trusted):
    @tool
    def local(word: str) -> str:
        """A tool of one's own."""
        return word

    provider = TestProvider([calls(("echo", {"text": "hi"}), ("local", {"word": "yo"})), "done"])
    panel = ChatPanel(Agent(provider=provider, tools=[trusted, local]).session())
    recorder = Recorder(panel)
    await panel.send("go")
    streamed = "".join(m["done"] for m in recorder.custom("delta"))
    cards = {c["call"]: c["html"] for c in recorder.custom("card")}  # as the results come
    echo_card, local_card = cards["c1"], cards["c2"]
    assert f"<code>echo</code> · {LAB}" in streamed  # the call's card, before its result
    assert LAB in echo_card and "hi" in echo_card  # the result's card, in place of the call's
    assert "MCP server" not in local_card and "yo" in local_card
    panel._handle_custom_msg({"type": "hello"}, [])  # a view opening: from the history
    (answer,) = [i["html"] for i in view(recorder) if "agent-nb-panel-tool" in i["html"]]
    assert answer.count("MCP server") == 1 and f"<code>echo</code> · {LAB}" in answer


async def test_always_allow_on_a_waiting_mcp_call_is_kept_by_the_session_and_the_notebook(lab):
    from agent_nb import _records

    provider = TestProvider(
        [calls(("echo", {"text": "one"})), "first", calls(("echo", {"text": "two"})), "second"]
    )
    agent = Agent(provider=provider, tools=[lab])
    panel = ChatPanel(agent.session())
    recorder = Recorder(panel)
    await panel.send("echo one")
    waiting = items_html(recorder)
    (call,) = call_ids(waiting)
    assert "needs your approval" in waiting and f"<code>echo</code> · {LAB}" in waiting
    message = panel.session.messages[-2].id
    panel._handle_custom_msg({"type": "approve", "call": call, "id": message, "always": True}, [])
    await panel._task
    assert panel.session.allowed_tools == ["lab:echo"]
    assert panel.session.messages[-2].tool_results[0].content == "one"
    response = await panel.send("echo two")  # allowed: runs without asking
    assert not response.pending_approvals and response.text == "second"
    assert response.messages[2].tool_results[0].content == "two"
    # the panel's log carries it; a restore of the notebook tells it, but asks again: no
    # notebook's records approve a tool (docs/mcp.md)
    log = panel._log.metadata(panel.session)[_records.KEY]
    assert [e["op"] for e in log["log"]] == ["turn", "resume", "turn"]
    assert "allowed_tools" not in log["log"][0] and log["log"][1]["allowed_tools"] == ["lab:echo"]
    said: list[str] = []
    replayed = _records.replay([_records.Found("cell 1", log)], agent, Session, said.append)
    assert replayed.sessions[panel.session.session_id].allowed_tools == []
    assert "lab:echo" in said[0] and "cannot approve tools" in said[0]


async def test_approve_without_always_asks_again_next_time(lab):
    provider = TestProvider([calls(("echo", {"text": "one"})), "first", calls(("pid", {}))])
    panel = ChatPanel(Agent(provider=provider, tools=[lab]).session())
    recorder = Recorder(panel)
    await panel.send("echo one")
    (call,) = call_ids(items_html(recorder))
    message = panel.session.messages[-2].id
    panel._handle_custom_msg({"type": "approve", "call": call, "id": message}, [])
    await panel._task
    assert panel.session.allowed_tools == []
    assert (await panel.send("pid?")).pending_approvals


async def test_hostile_mcp_descriptions_and_results_are_inert_in_the_panel(trusted):
    provider = TestProvider([calls(("hostile", {})), "ok"])
    panel = ChatPanel(Agent(provider=provider, tools=[trusted]).session())
    recorder = Recorder(panel)
    await panel.send("go")
    offered = {t["name"]: t for t in provider.requests[0].tools}
    assert "<script>" in offered["hostile"]["description"]  # the model reads it as text
    assert "<script>" in panel.session.messages[2].tool_results[0].content
    panel._handle_custom_msg({"type": "hello"}, [])
    shown = sent_html(recorder)
    assert any("&lt;script&gt;" in s for s in shown)
    for piece in shown:
        assert problems(piece) == [], piece


def test_hostile_server_names_in_a_restored_history_are_inert_in_the_panel():
    """tool_sources comes back from a notebook or a store someone else wrote."""
    history = []
    for n, payload in enumerate(PAYLOADS):
        call = ToolCallPart(id=f"c{n}", name="echo", arguments={"text": payload})
        sources = {call.id: {"server": payload, "tool": payload}}
        history += [
            Message.user("go"),
            Message(role="assistant", parts=(call,), metadata={"tool_sources": sources}),
            Message.tool([ToolResultPart(tool_call_id=call.id, name="echo", content=payload)]),
        ]
    waiting = ToolCallPart(id="w", name="echo", arguments={})
    hostile = {"w": {"server": '<img src=x onerror="alert(1)">', "tool": "echo"}}
    history += [
        Message.user("go"),
        Message(role="assistant", parts=(waiting,), metadata={"tool_sources": hostile}),
        Message(role="tool", parts=(), metadata={"awaiting_approval": ["w"]}),
    ]
    items = inert_items(history)
    assert "MCP server <code>&lt;img src=x onerror=" in items[-1]["html"]
    assert call_ids(items[-1]["html"]) == ["w"]
