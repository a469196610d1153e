"""What a server sends has a limit (issue 25, item 5): servers on real loopback sockets that
never stop talking, and a deadline for the whole turn."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest
from fake_openai import Reply
from servers import EndlessServer
from test_faults import anthropic_agent, anthropic_stream

from agent_nb import Agent, tool
from agent_nb.errors import APITimeoutError, BadRequestError, ConfigurationError, StreamError
from agent_nb.providers import TestProvider

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
#: The default max_answer_size, as docs/providers.md says.
MAX_ANSWER_SIZE = 32_000_000
#: What the socket buffers of loopback may take before the server blocks: far below what an
#: uncapped reader takes, far above what a capped one does.
BUFFERED = 16_000_000


def delta(text: str) -> bytes:
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def agent(url: str, **kwargs) -> Agent:
    return Agent(provider="openai", model="m", base_url=url, api_key="k", max_retries=0, **kwargs)


def fails_unsaved(session, error: type, match: str, **settings) -> Exception:
    before = session.messages
    with pytest.raises(error, match=match) as caught:
        list(session.stream("hi", **settings))
    assert session.messages == before == []
    return caught.value


def test_an_endless_line_stops_at_max_answer_size():
    with EndlessServer(SSE_HEAD + b"data: ", b"x" * 65536) as server:
        session = agent(server.url, max_answer_size=100_000, timeout=5).session()
        error = fails_unsaved(session, StreamError, "a line of the stream passed 100,000")
        assert "max_answer_size" in str(error) and server.sent < BUFFERED


def test_an_event_of_endless_data_lines_stops_at_max_answer_size():
    with EndlessServer(SSE_HEAD, b"data: x\n" * 4096) as server:
        session = agent(server.url, max_answer_size=100_000, timeout=5).session()
        fails_unsaved(session, StreamError, "an event of the stream passed 100,000")
        assert server.sent < BUFFERED


def test_an_endless_stream_of_tiny_deltas_stops_at_max_answer_size():
    piece = delta("ab" * 50) * 10
    with EndlessServer(SSE_HEAD, piece, total=len(piece) * 2000) as server:
        session = agent(server.url, max_answer_size=10_000).session()
        error = fails_unsaved(session, StreamError, "passed 10,000 characters of text")
        assert "Agent(max_answer_size=...)" in str(error)


def test_a_stream_of_empty_chunks_stops_at_its_wire_limit():
    piece = b'data: {"model": "m", "choices": []}\n\n' * 100
    with EndlessServer(SSE_HEAD, piece, total=len(piece) * 2000) as server:
        session = agent(server.url, max_answer_size=10_000).session()
        fails_unsaved(session, StreamError, "the stream passed 160,000 characters")


def test_an_endless_answer_holds_no_more_than_the_default_cap_in_memory():
    """A 300 MB answer once took 905 MB: now reading stops at 32 MB of text."""
    piece = delta("y" * 65536)
    with EndlessServer(SSE_HEAD, piece, total=MAX_ANSWER_SIZE * 3) as server:
        session = agent(server.url).session()
        tracemalloc.start()
        try:
            fails_unsaved(session, StreamError, "passed 32,000,000 characters")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2.5 * MAX_ANSWER_SIZE
        assert server.sent < MAX_ANSWER_SIZE * 1.1 + BUFFERED


def test_a_whole_answer_past_max_answer_size_is_not_read():
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n"
    with EndlessServer(head, b" " * 65536, total=40_000_000) as server:
        session = agent(server.url, max_answer_size=1_000_000).session()
        with pytest.raises(StreamError, match="body passed 1,000,000 bytes"):
            session.run("hi")
        assert session.messages == [] and server.sent < BUFFERED


def test_a_huge_error_body_is_read_only_as_far_as_its_excerpt():
    """A 100 MB error body was read whole (13-26 s) to show 300 characters of it."""
    head = (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 60000000\r\n\r\n"
    )
    with EndlessServer(head, b"no! " * 16384, total=60_000_000) as server:
        session = agent(server.url).session()
        with pytest.raises(BadRequestError, match="no! no!"):
            session.run("hi")
        assert server.sent < BUFFERED


def test_a_huge_body_that_is_not_an_event_stream_is_read_only_as_far_as_its_excerpt():
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 60000000\r\n\r\n"
    with EndlessServer(head, b"<p>" * 16384, total=60_000_000) as server:
        session = agent(server.url).session()
        fails_unsaved(session, StreamError, "expected an event stream")
        assert server.sent < BUFFERED


@pytest.mark.parametrize("size", [0, -1, 1.5, "big", True])
def test_max_answer_size_must_be_a_positive_int(size):
    with pytest.raises(ConfigurationError, match="max_answer_size must be an int >= 1"):
        agent("http://127.0.0.1:9/v1", max_answer_size=size)


# -- deadline= --------------------------------------------------------------------------------


def test_a_deadline_ends_a_stream_of_keepalives_the_stall_timer_never_sees():
    with EndlessServer(SSE_HEAD, b": ping\n\n", pause=0.01) as server:
        session = agent(server.url, timeout=10, deadline=0.3).session()
        error = fails_unsaved(session, APITimeoutError, "passed its deadline of 0.3 s")
        assert "deadline=" in str(error) and error.provider == "openai"


def test_a_deadline_ends_an_endless_trickle_of_deltas():
    piece = delta("a")
    with EndlessServer(SSE_HEAD, piece, total=len(piece) * 3000, pause=0.001) as server:
        session = agent(server.url).session()
        fails_unsaved(session, APITimeoutError, "deadline of 0.3 s", deadline=0.3)
        with pytest.raises(APITimeoutError, match="deadline of 0.2 s"):
            session.run("hi", deadline=0.2)  # not streamed: the same deadline
        assert session.messages == []


def test_a_calls_deadline_overrides_the_agents(server):
    session = agent(server.url, deadline=0.000_001).session()
    fails_unsaved(session, APITimeoutError, "deadline of 1e-06 s")
    server.script(Reply(text="in time"))
    assert session.run("hi", deadline=None).text == "in time"
    server.script(Reply(text="in time"))
    assert session.run("hi", deadline=30).text == "in time"


def test_a_deadline_counts_the_tools_too():
    @tool
    async def slow() -> str:
        """Takes its time."""
        await asyncio.sleep(30)
        return "late"

    from agent_nb import Message
    from agent_nb.messages import ToolCallPart

    call = Message(role="assistant", parts=(ToolCallPart(id="c", name="slow", arguments={}),))
    session = Agent(provider=TestProvider([call, "done"]), tools=[slow], deadline=0.3).session()
    with pytest.raises(APITimeoutError, match="deadline of 0.3 s"):
        session.run("go")
    assert session.messages == []


@pytest.mark.parametrize("deadline", [0, -1, float("nan"), float("inf"), "1", True])
def test_a_deadline_is_a_positive_number_of_seconds(deadline):
    with pytest.raises(ConfigurationError, match="deadline= takes"):
        Agent(provider="test", deadline=deadline)
    with pytest.raises(ConfigurationError, match="deadline= takes"):
        Agent(provider="test").session().run("hi", deadline=deadline)


# -- issue 25, item 8: a gateway that splits one call into blocks of the same id -------------


def tool_use_block(index: int, call_id: str, partial: str) -> list[tuple[str, dict]]:
    start = {"type": "tool_use", "id": call_id, "name": "add", "input": {}}
    return [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": partial},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def test_anthropic_tool_use_blocks_that_share_an_id_are_one_call(server):
    start = {"type": "message_start", "message": {"model": "claude-x", "usage": {}}}
    end = {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}}
    split = anthropic_stream(
        ("message_start", start),
        *tool_use_block(0, "toolu_1", '{"a": 2,'),
        *tool_use_block(1, "toolu_1", ' "b": 3}'),
        ("message_delta", end),
        ("message_stop", {"type": "message_stop"}),
    )
    calls = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    server.script(Reply(raw=split), Reply(text="5"))
    session = anthropic_agent(server, tools=[add]).session()
    stream = session.stream("2 + 3?")
    list(stream)
    assert stream.response.text == "5"
    assert calls == [(2, 3)]
    [asked] = [m for m in session.messages if m.tool_calls]
    assert [(c.id, c.arguments_json()) for c in asked.tool_calls] == [("toolu_1", {"a": 2, "b": 3})]
    [results] = [m for m in session.messages if m.role == "tool"]
    assert [(r.content, r.is_error) for r in results.tool_results] == [("5", False)]
