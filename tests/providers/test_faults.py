"""A misbehaving server on loopback: retries, backoff, typed errors, SSE framing variants."""

from __future__ import annotations

import json
import time

import pytest
from fake_openai import Reply

from agent_nb import Agent
from agent_nb.errors import (
    APIConnectionError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamError,
)


def chunk(delta: dict, finish: str | None = None) -> str:
    return json.dumps(
        {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "model": "m"}
    )


def openai_agent(server, **kwargs) -> Agent:
    return Agent(provider="openai", model="m", base_url=server.url, api_key="k", **kwargs)


def anthropic_agent(server, **kwargs) -> Agent:
    return Agent(
        provider="anthropic",
        model="claude",
        base_url=server.url.removesuffix("/v1"),
        api_key="k",
        **kwargs,
    )


def anthropic_stream(*events: tuple[str, dict]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


START = (
    "message_start",
    {
        "type": "message_start",
        "message": {"model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}},
    },
)
STOP = ("message_stop", {"type": "message_stop"})
OVERLOADED = (
    "error",
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)


def text_block(text: str, index: int = 0) -> list[tuple[str, dict]]:
    return [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": text},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def end(reason: str) -> tuple[str, dict]:
    return (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 7}},
    )


def test_429_then_success_honours_retry_after(server):
    server.script(
        Reply(
            status=429,
            headers={"retry-after-ms": "300"},
            error={"error": {"message": "Rate limit reached", "type": "requests"}},
        ),
        "fine now",
    )
    started = time.monotonic()
    response = openai_agent(server).session().run("hi")
    elapsed = time.monotonic() - started
    assert response.text == "fine now"
    assert len(server.requests) == 2
    assert 0.3 <= elapsed < 2.0  # waited as told, no longer


def test_429_after_max_retries_is_a_rate_limit_error(server):
    error = {"error": {"message": "Rate limit reached", "type": "requests"}}
    server.script(*[Reply(status=429, headers={"retry-after": "0"}, error=error)] * 3)
    with pytest.raises(RateLimitError, match="Rate limit reached") as caught:
        openai_agent(server, max_retries=2).session().run("hi")
    assert caught.value.retry_after == 0 and caught.value.status == 429
    assert len(server.requests) == 3


def test_repeated_500_is_a_typed_error_after_max_retries(server, monkeypatch):
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.01)
    server.script(*[Reply(status=500, error={"error": {"message": "boom"}})] * 4)
    session = openai_agent(server, max_retries=3).session()
    with pytest.raises(ServerError, match="boom"):
        list(session.stream("hi"))
    assert len(server.requests) == 4
    assert session.messages == []


def test_400_is_not_retried(server):
    server.script(Reply(status=400, error={"error": {"message": "bad param"}}), "unused")
    with pytest.raises(Exception, match="bad param"):
        openai_agent(server, max_retries=3).session().run("hi")
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_typed(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    agent = Agent(
        provider="openai",
        model="m",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        max_retries=1,
    )
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.01)
    with pytest.raises(APIConnectionError, match="cannot reach"):
        agent.session().run("hi")


def test_a_drop_after_output_started_is_not_retried(server):
    server.script(Reply(text="a b c d e f g h", drop_after=4), "would be a retry")
    session = openai_agent(server, max_retries=3).session()
    with pytest.raises(APIConnectionError):
        list(session.stream("hi"))
    assert len(server.requests) == 1 and session.messages == []


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(lambda ev: f"data: {ev}\r\n\r\n", id="crlf"),
        pytest.param(lambda ev: f": keep-alive\n\ndata: {ev}\n\n", id="comment-lines"),
        pytest.param(lambda ev: f"data:{ev}\n\n", id="data-without-space"),
        pytest.param(lambda ev: f"data: {ev}\r\r", id="cr-only"),
    ],
)
def test_sse_framing_variants(server, framing):
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        "[DONE]",
    ]
    server.script(Reply(raw="".join(framing(e) for e in events)))
    session = openai_agent(server).session()
    texts = [e.text for e in session.stream("hi") if e.type == "text_delta"]
    assert texts == ["Hel", "lo"] and session.messages[-1].text == "Hello"


def test_text_then_tool_calls_in_one_stream(server):
    from agent_nb import tool

    @tool
    def lookup(q: str) -> str:
        """Look up."""
        return f"result for {q}"

    calls = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "x"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    ]
    first = [chunk({"content": "Let me look. "}), *calls]
    server.script(Reply(raw="".join(f"data: {e}\n\n" for e in first)), "Done.")
    stream = openai_agent(server, tools=[lookup]).session().stream("find x")
    events = [e.type for e in stream]
    assert events[:2] == ["text_delta", "tool_call"] and "tool_result" in events
    result = stream.response
    assistant = result.messages[1]
    assert assistant.text == "Let me look. "
    assert assistant.tool_calls[0].arguments_json() == {"q": "x"}
    assert result.messages[2].tool_results[0].content == "result for x"
    assert result.text == "Done."


def test_error_event_inside_a_200_stream_is_typed(server):
    server.script(
        Reply(
            raw=f"data: {chunk({'content': 'Hi'})}\n\n"
            'data: {"error": {"message": "tool_use_failed", "type": "invalid_request_error"}}\n\n'
        )
    )
    session = openai_agent(server).session()
    with pytest.raises(Exception, match="tool_use_failed"):
        list(session.stream("hi"))
    assert session.messages == []


def test_anthropic_overloaded_before_output_is_retried(server, monkeypatch):
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.01)
    server.script(
        Reply(raw=anthropic_stream(START, OVERLOADED)),
        Reply(raw=anthropic_stream(START, *text_block("Hello"), end("end_turn"), STOP)),
    )
    stream = anthropic_agent(server).session().stream("hi")
    list(stream)
    assert stream.response.text == "Hello" and len(server.requests) == 2


def test_anthropic_overloaded_after_output_is_a_typed_error(server):
    server.script(Reply(raw=anthropic_stream(START, *text_block("Hel")[:2], OVERLOADED)), "unused")
    session = anthropic_agent(server, max_retries=3).session()
    with pytest.raises(ServerError, match="Overloaded") as caught:
        list(session.stream("hi"))
    assert caught.value.retryable and len(server.requests) == 1
    assert session.messages == []


def test_anthropic_529_is_retried(server, monkeypatch):
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.01)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    server.script(
        Reply(raw=json.dumps(overloaded), status=529, content_type="application/json"),
        Reply(raw=anthropic_stream(START, *text_block("ok"), end("end_turn"), STOP)),
    )
    stream = anthropic_agent(server).session().stream("hi")
    list(stream)
    assert stream.response.text == "ok"


def test_anthropic_refusal_is_a_signal_not_text(server):
    server.script(Reply(raw=anthropic_stream(START, end("refusal"), STOP)))
    stream = anthropic_agent(server).session().stream("something bad")
    list(stream)
    response = stream.response
    assert response.finish_reason == "content_filter"
    assert response.refusal and response.text == ""


def test_anthropic_stream_without_message_stop_is_an_error(server):
    server.script(Reply(raw=anthropic_stream(START, *text_block("Half"))))
    session = anthropic_agent(server).session()
    with pytest.raises(StreamError, match="message_stop"):
        list(session.stream("hi"))
    assert session.messages == []


def test_unknown_anthropic_blocks_are_skipped(server):
    odd = [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "mystery_block", "x": 1},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "mystery_delta", "y": 2}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    server.script(
        Reply(raw=anthropic_stream(START, *odd, *text_block("fine", 1), end("end_turn"), STOP))
    )
    stream = anthropic_agent(server).session().stream("hi")
    list(stream)
    assert stream.response.text == "fine"


def test_ollama_streaming(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
    session = Agent(provider="ollama", model="llama3.2").session()
    texts = [e.text for e in session.stream("hello there") if e.type == "text_delta"]
    assert "".join(texts) == session.messages[-1].text and len(texts) > 1
    assert "Authorization" not in server.request_headers[-1]


def test_session_keeps_running_usage_totals(server):
    session = openai_agent(server).session()
    first = session.run("one two")
    second = session.run("three")
    assert session.usage.input_tokens == first.usage.input_tokens + second.usage.input_tokens
    assert session.usage.output_tokens == first.usage.output_tokens + second.usage.output_tokens
    assert session.usage.total_tokens > 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-responses"])
@pytest.mark.parametrize("payload", ['"Overloaded, try later"', "[1]", "7"])
def test_an_error_event_of_any_shape_is_the_providers_error(server, provider, payload):
    """What an `event: error` says is the error, whatever JSON it is, never a parse failure."""
    server.script(Reply(raw=f"event: error\ndata: {payload}\n\n"))
    base = server.url.removesuffix("/v1") if provider == "anthropic" else server.url
    session = Agent(provider=provider, model="m", base_url=base, api_key="k").session()
    with pytest.raises(ProviderError) as caught:
        list(session.stream("hi"))
    expected = json.loads(payload) if payload.startswith('"') else payload
    assert caught.value.message == expected
    assert "malformed" not in str(caught.value) and session.messages == []


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-responses"])
def test_a_429_with_an_http_date_retry_after_waits_until_then(server, monkeypatch, provider):
    import email.utils

    waits = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("agent_nb.providers._transport.asyncio.sleep", sleep)
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    limited = Reply(status=429, headers={"retry-after": when}, error={"error": {"message": "slow"}})
    server.script(limited, Reply(status=500, error={"error": {"message": "then this"}}))
    base = server.url.removesuffix("/v1") if provider == "anthropic" else server.url
    session = Agent(
        provider=provider, model="m", base_url=base, api_key="k", max_retries=1
    ).session()
    with pytest.raises(ServerError, match="then this"):
        session.run("hi")
    assert len(waits) == 1 and 8 < waits[0] <= 30  # longer than any backoff step
