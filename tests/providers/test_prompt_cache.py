"""Anthropic cache breakpoints, checked against the documented rules: at most 4, never on a
thinking block or an empty text block, none on a prefix below the minimum cacheable length;
and the marks are the only change to what the recorded API accepted."""

from __future__ import annotations

from cache_marks import marks, unmarked

from agent_nb.messages import Message, ThinkingPart, ToolCallPart, ToolResultPart
from agent_nb.providers.anthropic import CACHE_MINIMUM_TOKENS, AnthropicProvider
from agent_nb.providers.base import Request

LONG = "word " * CACHE_MINIMUM_TOKENS  # ~5,000 characters: past the minimum alone
TOOL = {"name": "look", "description": "Look it up.", "parameters": {"type": "object"}}


def body(request: Request) -> dict:
    return AnthropicProvider(api_key="k").build_body(request)


def conversation() -> list[Message]:
    call = ToolCallPart(id="c1", name="look", arguments={"q": "x"})
    return [
        Message.user(LONG),
        Message(role="assistant", parts=(ThinkingPart(text="hm", signature="sig"), call)),
        Message.tool([ToolResultPart(tool_call_id="c1", name="look", content="found")]),
        Message.assistant("It is x."),
        Message.user("and y?"),
    ]


def test_breakpoints_follow_the_documented_rules():
    tools = [TOOL, {**TOOL, "name": "read", "description": LONG}]
    wire = body(Request(model="m", messages=conversation(), system=LONG, tools=tools))
    where = marks(wire)
    assert len(where) <= 4
    assert sorted(where) == [
        ".messages[3].content[0]",  # the end of the history before the prompt: "It is x."
        ".messages[4].content[0]",  # the end of the request: the prompt
        ".system[0]",
        ".tools[1]",  # the last tool: tools come first in the cached prefix
    ]


def test_a_short_prefix_is_not_marked():
    wire = body(Request(model="m", messages=[Message.user("hi")], system="Be brief.", tools=[TOOL]))
    assert marks(wire) == []
    assert wire["system"] == "Be brief."


def test_a_thinking_block_never_carries_a_breakpoint():
    call = ToolCallPart(id="c1", name="look", arguments={})
    messages = [
        Message.user(LONG),
        Message(role="assistant", parts=(ThinkingPart(text="hm " * 50, signature="s"), call)),
        Message.tool([ToolResultPart(tool_call_id="c1", name="look", content="x")]),
    ]
    wire = body(Request(model="m", messages=messages))
    for message in wire["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block["type"] == "thinking":
                assert "cache_control" not in block


def test_caching_off_sends_the_request_as_recorded():
    messages = conversation()
    on = body(Request(model="m", messages=messages, system=LONG, tools=[TOOL]))
    off = body(Request(model="m", messages=messages, system=LONG, tools=[TOOL], cache=False))
    assert marks(off) == [] and marks(on)
    assert unmarked(on) == off


def test_a_system_list_given_as_a_setting_keeps_its_blocks_and_the_limit_of_four():
    """Anthropic's own form, `system=[blocks]` passed through as a setting, with a breakpoint
    of the caller's: it stays a list of text blocks, and the marks added stay within 4."""
    mine = {"type": "ephemeral"}
    given = [{"type": "text", "text": LONG, "cache_control": mine}, {"type": "text", "text": LONG}]
    tools = [TOOL, {**TOOL, "name": "read", "description": LONG}]
    request = Request(model="m", messages=conversation(), tools=tools, settings={"system": given})
    wire = body(request)
    assert [type(block["text"]) for block in wire["system"]] == [str, str]
    assert wire["system"][0] == given[0]
    assert len(marks(wire)) <= 4
    assert ".messages[4].content[0]" in marks(wire)  # the end of the request: the most read
    assert given[1] == {"type": "text", "text": LONG}  # the caller's blocks are not changed
