"""Malformed provider data is a typed AgentError naming what was wrong, for every protocol.

The cases of issue 10 item 7 and 11, streamed and not, over the loopback server; then a
seeded fuzz that mutates every recorded exchange in tests/fixtures and replays it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_openai import Reply
from test_conformance import FILES, FOLDERS

from agent_nb import Agent
from agent_nb.errors import AgentError, RateLimitError, StreamError
from agent_nb.events import Completion, TextDelta, ThinkingDelta
from agent_nb.messages import Message
from agent_nb.providers import resolve
from agent_nb.providers.base import Request

# -- the three wire formats, as small builders -----------------------------------------------


def chat_stream(*chunks: Any, done: bool = True) -> str:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return body + ("data: [DONE]\n\n" if done else "")


def chunk(delta: Any, finish: str | None = None, **extra: Any) -> dict:
    return {
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def anthropic_stream(*events: Any) -> str:
    return "".join(
        f"event: {e.get('type', 'x') if isinstance(e, dict) else 'x'}\ndata: {json.dumps(e)}\n\n"
        for e in events
    )


def message_start(usage: Any = None) -> dict:
    usage = {"input_tokens": 3, "output_tokens": 1} if usage is None else usage
    return {"type": "message_start", "message": {"model": "claude-x", "usage": usage}}


def text_start(index: int = 0) -> dict:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }


def text_delta(text: Any, index: int = 0) -> dict:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def message_delta(reason: str = "end_turn", usage: Any = None) -> dict:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason},
        "usage": {"output_tokens": 5} if usage is None else usage,
    }


STOP = {"type": "message_stop"}


def responses_stream(*events: Any) -> str:
    return "".join(
        f"event: {e.get('type', 'x') if isinstance(e, dict) else 'x'}\ndata: {json.dumps(e)}\n\n"
        for e in events
    )


def completed(output: Any = (), usage: Any = None, **extra: Any) -> dict:
    usage = {"input_tokens": 3, "output_tokens": 2} if usage is None else usage
    response = {
        "model": "gpt-x",
        "status": "completed",
        "output": list(output) if isinstance(output, tuple) else output,
        "usage": usage,
        **extra,
    }
    return {"type": "response.completed", "response": response}


def message_item(text: Any) -> dict:
    return {"type": "message", "content": [{"type": "output_text", "text": text}]}


def sse(body: str) -> Reply:
    return Reply(raw=body)


def whole(payload: Any) -> Reply:
    return Reply(
        raw=payload if isinstance(payload, str) else json.dumps(payload),
        content_type="application/json",
    )


def agent(server, provider: str, **kwargs: Any) -> Agent:
    base = server.url.removesuffix("/v1") if provider == "anthropic" else server.url
    return Agent(provider=provider, model="m", base_url=base, api_key="k", max_retries=0, **kwargs)


def fails(server, provider: str, reply: Reply, stream: bool, match: str) -> StreamError:
    """The turn fails with a StreamError matching `match`, and history is unchanged."""
    server.script(reply)
    session = agent(server, provider).session()
    with pytest.raises(StreamError, match=match) as caught:
        if stream:
            list(session.stream("hi"))
        else:
            session.run("hi")
    assert session.messages == []
    assert caught.value.provider == provider
    return caught.value


# -- issue 10, item 7: each case exactly ---------------------------------------------------

CASES = [
    # (provider, streamed, reply, what the error must name)
    pytest.param(
        "openai",
        True,
        sse(chat_stream({"choices": ["x"]})),
        r"choices\[0\] is a string",
        id="openai-choices-of-strings-stream",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": ["x"]}),
        r"choices\[0\] is a string",
        id="openai-choices-of-strings",
    ),
    pytest.param(
        "openai",
        True,
        sse(chat_stream(chunk("hi"))),
        r"choices\[0\]\.delta is a string",
        id="openai-string-delta",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(message_start(), text_start(), {**text_delta("x"), "delta": "x"})),
        r"delta is a string",
        id="anthropic-string-delta",
    ),
    pytest.param(
        "openai",
        True,
        sse(chat_stream(chunk({"tool_calls": ["x"]}), chunk({}, "tool_calls"))),
        r"choices\[0\]\.delta\.tool_calls\[0\] is a string, expected an object",
        id="openai-non-dict-tool-call-stream",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": {"tool_calls": [7]}, "finish_reason": "tool_calls"}]}),
        r"choices\[0\]\.message\.tool_calls\[0\] is an integer, expected an object",
        id="openai-non-dict-tool-call",
    ),
    pytest.param(
        "openai-responses",
        True,
        sse(responses_stream(completed(output=["x"]))),
        r"response\.output\[0\] is a string, expected an object",
        id="responses-non-dict-output-item",
    ),
    pytest.param(
        "anthropic",
        False,
        whole({"content": ["x"], "stop_reason": "tool_use"}),
        r"content\[0\] is a string, expected an object",
        id="anthropic-non-dict-block",
    ),
    pytest.param("openai", True, sse("data: [1]\n\n"), r"it is a list", id="openai-data-list"),
    pytest.param(
        "anthropic",
        True,
        sse("event: message_start\ndata: [1]\n\n"),
        r"it is a list",
        id="anthropic-data-list",
    ),
    pytest.param(
        "openai-responses",
        True,
        sse("data: [1]\n\n"),
        r"it is a list",
        id="responses-data-list",
    ),
    pytest.param(
        "openai",
        True,
        sse(chat_stream(chunk({"content": 5}, "stop"))),
        r"choices\[0\]\.delta\.content is an integer, expected a string",
        id="openai-integer-content-stream",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}),
        r"choices\[0\]\.message\.content is an integer, expected a string",
        id="openai-integer-content",
    ),
    pytest.param(
        "anthropic",
        False,
        whole({"content": 5, "stop_reason": "end_turn"}),
        r"content is an integer, expected a list",
        id="anthropic-integer-content",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(message_start(), text_start(), text_delta(5))),
        r"delta\.text is an integer, expected a string",
        id="anthropic-integer-text-stream",
    ),
    pytest.param(
        "openai-responses",
        True,
        sse(responses_stream({"type": "response.output_text.delta", "delta": 5})),
        r"delta is an integer, expected a string",
        id="responses-integer-delta",
    ),
    pytest.param(
        "openai-responses",
        False,
        whole({"model": "m", "status": "completed", "output": [message_item(5)]}),
        r"output\[0\]\.content\[0\]\.text is an integer, expected a string",
        id="responses-integer-content",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": "hi", "finish_reason": "stop"}]}),
        r"choices\[0\]\.message is a string, expected an object",
        id="openai-message-string",
    ),
]


@pytest.mark.parametrize(("provider", "stream", "reply", "match"), CASES)
def test_malformed_data_is_a_stream_error_naming_the_field(server, provider, stream, reply, match):
    error = fails(server, provider, reply, stream, match)
    assert "malformed" in str(error) or "it is" in str(error)
    assert error.__cause__ is None  # nothing of Python's own error travels with it


DEEP = "[" * 100_000 + "]" * 100_000


def tool_call_stream(arguments: str) -> Reply:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": arguments}}
    return sse(chat_stream(chunk({"tool_calls": [call]}), chunk({}, "tool_calls")))


HOSTILE = [
    pytest.param("openai", sse(f"data: {DEEP}\n\n"), "not valid JSON", id="deep-event"),
    pytest.param(
        "anthropic", sse(f"data: {DEEP}\n\n"), "not valid JSON", id="deep-event-anthropic"
    ),
    pytest.param("openai", whole(DEEP), "not JSON", id="deep-body"),
    pytest.param(
        "openai", sse('data: {"n": ' + "1" * 5000 + "}\n\n"), "not valid JSON", id="5000-digits"
    ),
    pytest.param(
        "openai",
        sse(
            chat_stream(
                chunk({"content": "hi"}, "stop"),
                {"choices": [], "usage": {"prompt_tokens": float("inf")}},
            )
        ),
        "not valid JSON",
        id="infinite-usage",
    ),
]


@pytest.mark.parametrize(("provider", "reply", "match"), HOSTILE)
def test_json_python_cannot_hold_is_a_stream_error(server, provider, reply, match):
    """Nesting past the recursion limit, numbers past int's digit limit, NaN and Infinity."""
    fails(server, provider, reply, reply.content_type.startswith("text/event-stream"), match)


@pytest.mark.parametrize(
    "arguments",
    [DEEP, '{"x": NaN}', '{"x": 1', "[1, 2]", '"text"'],
    ids=["deep", "nan", "cut", "list", "string"],
)
def test_tool_arguments_that_are_no_json_object_go_back_to_the_model(server, arguments):
    """The model wrote bad arguments: it is told so, and sees them as it wrote them."""
    from agent_nb import tool

    @tool
    def f(x: int = 0) -> str:
        """A tool."""
        return "ran"

    server.script(tool_call_stream(arguments), Reply(text="Sorry, fixed."))
    session = agent(server, "openai", tools=[f]).session()
    events = list(session.stream("hi"))
    assert events[-1].response.text == "Sorry, fixed."
    call = session.messages[1].tool_calls[0]
    assert call.invalid_arguments == arguments and call.arguments_json() == {}
    result = session.messages[2].tool_results[0]
    assert result.is_error and result.content.startswith(
        "Invalid arguments: they must be a JSON object"
    )
    sent = server.requests[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == arguments
    again = type(session).from_dict(session.to_dict(), session.agent)
    assert again.messages[1].tool_calls[0].invalid_arguments == arguments


BAD_COUNTS = [
    pytest.param("12", "a string", id="string"),
    pytest.param(1.5, "a number", id="fractional"),
    pytest.param(12.0, "a number", id="float"),
    pytest.param(-3, "-3", id="negative"),
    pytest.param(True, "a boolean", id="bool"),
    pytest.param(10**30, "token count from 0", id="huge"),
    pytest.param([1], "a list", id="list"),
]


def usage_reply(provider: str, stream: bool, value: Any) -> tuple[Reply, str]:
    """A reply whose input-token count is `value`, and the field the error must name."""
    if provider == "openai":
        usage = {"prompt_tokens": value, "completion_tokens": 2}
        if stream:
            return sse(
                chat_stream(chunk({"content": "hi"}, "stop"), {"choices": [], "usage": usage})
            ), r"usage\.prompt_tokens"
        body = {
            "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": usage,
        }
        return whole(body), r"usage\.prompt_tokens"
    if provider == "anthropic":
        usage = {"input_tokens": value, "output_tokens": 1}
        if stream:
            events = (message_start(usage), text_start(), text_delta("hi"), message_delta(), STOP)
            return sse(anthropic_stream(*events)), r"message\.usage\.input_tokens"
        body = {
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "usage": usage,
        }
        return whole(body), r"usage\.input_tokens"
    usage = {
        "input_tokens": 3,
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": value},
    }
    if stream:
        return sse(responses_stream(completed([message_item("hi")], usage))), (
            r"response\.usage\.output_tokens_details\.reasoning_tokens"
        )
    body = {"model": "m", "status": "completed", "output": [message_item("hi")], "usage": usage}
    return whole(body), r"usage\.output_tokens_details\.reasoning_tokens"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-responses"])
@pytest.mark.parametrize(("value", "said"), BAD_COUNTS)
def test_usage_that_is_not_a_token_count_is_a_stream_error(server, provider, stream, value, said):
    reply, field = usage_reply(provider, stream, value)
    error = fails(server, provider, reply, stream, field)
    assert said in str(error)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-responses"])
def test_good_usage_still_reads(server, provider, stream):
    reply, _ = usage_reply(provider, stream, 7)
    server.script(reply)
    session = agent(server, provider).session()
    response = list(session.stream("hi"))[-1].response if stream else session.run("hi")
    assert response.text == "hi"
    if provider == "openai-responses":
        assert response.usage.reasoning_tokens == 7
    else:
        assert response.usage.input_tokens == 7


@pytest.mark.parametrize("header", ["soon", "", "nan", "-5", "inf", "Mon, 99 Foo 2024"])
def test_unreadable_retry_after_falls_back_to_backoff(server, monkeypatch, header):
    waits = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("agent_nb.providers._transport.asyncio.sleep", sleep)
    limited = Reply(
        status=429,
        headers={"retry-after": header},
        error={"error": {"message": "Rate limit reached", "type": "requests"}},
    )
    server.script(limited, "fine now")
    session = Agent(provider="openai", model="m", base_url=server.url, api_key="k").session()
    assert session.run("hi").text == "fine now"
    assert len(waits) == 1 and 0.375 <= waits[0] <= 0.5  # the first backoff step, with jitter


def test_unreadable_retry_after_is_a_rate_limit_error_after_the_retries(server, monkeypatch):
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.0)
    limited = Reply(
        status=429, headers={"retry-after": "soon"}, error={"error": {"message": "slow"}}
    )
    server.script(limited, limited)
    session = Agent(
        provider="openai", model="m", base_url=server.url, api_key="k", max_retries=1
    ).session()
    with pytest.raises(RateLimitError, match="slow") as caught:
        session.run("hi")
    assert caught.value.retry_after is None and len(server.requests) == 2


# -- issue 10, item 11: a stream that carried no answer ---------------------------------------

EMPTY = [
    pytest.param(
        "openai", True, sse("data: [DONE]\n\n"), "no finish reason", id="openai-done-only"
    ),
    pytest.param(
        "openai",
        True,
        sse(chat_stream(chunk({"role": "assistant", "content": ""}), {"choices": [], "usage": {}})),
        "no finish reason",
        id="openai-role-and-usage-only",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": {"role": "assistant"}}]}),
        "no finish reason",
        id="openai-whole-empty",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(STOP)),
        "start with message_start",
        id="anthropic-stop-only",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(text_start(), text_delta("hi"), message_delta(), STOP)),
        "message_start",
        id="anthropic-no-message-start",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(message_start(), STOP)),
        "no stop reason",
        id="anthropic-start-and-stop-only",
    ),
    pytest.param(
        "anthropic", False, whole({"content": []}), "no stop reason", id="anthropic-whole-empty"
    ),
    pytest.param(
        "openai-responses",
        True,
        sse("data: [DONE]\n\n"),
        "response.completed",
        id="responses-done-only",
    ),
]


@pytest.mark.parametrize(("provider", "stream", "reply", "match"), EMPTY)
def test_an_answer_that_carried_nothing_is_a_stream_error(server, provider, stream, reply, match):
    fails(server, provider, reply, stream, match)


#: Usage of an answer whose reasoning the server did not show (no summary).
REASONED = {"input_tokens": 3, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 2}}
FINISHED_EMPTY = [
    pytest.param("openai", True, sse(chat_stream(chunk({}, "length"))), "length", id="openai"),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}),
        "length",
        id="openai-whole",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(message_start(), message_delta("max_tokens"), STOP)),
        "length",
        id="anthropic",
    ),
    pytest.param(
        "openai-responses",
        True,
        sse(responses_stream(completed(usage=REASONED))),
        "stop",
        id="responses-after-hidden-reasoning",
    ),
]


@pytest.mark.parametrize(("provider", "stream", "reply", "reason"), FINISHED_EMPTY)
def test_an_empty_answer_the_server_finished_is_kept(server, provider, stream, reply, reason):
    """A reasoning model that spent every token thinking answers nothing, and says why."""
    server.script(reply)
    session = agent(server, provider).session()
    response = list(session.stream("hi"))[-1].response if stream else session.run("hi")
    assert response.text == "" and response.finish_reason == reason
    assert len(session.messages) == 2


# -- issue 25, item 7: "stop" with nothing in it is a broken upstream, not a turn -----------

STOPPED_EMPTY = [
    pytest.param(
        "openai",
        True,
        sse(chat_stream(chunk({"role": "assistant", "content": ""}), chunk({}, "stop"))),
        id="openai",
    ),
    pytest.param(
        "openai",
        False,
        whole({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]}),
        id="openai-whole",
    ),
    pytest.param(
        "anthropic",
        True,
        sse(anthropic_stream(message_start(), message_delta("end_turn"), STOP)),
        id="anthropic",
    ),
    pytest.param(
        "anthropic",
        False,
        whole({"model": "claude-x", "content": [], "stop_reason": "end_turn", "usage": {}}),
        id="anthropic-whole",
    ),
    pytest.param("openai-responses", True, sse(responses_stream(completed())), id="responses"),
]


@pytest.mark.parametrize(("provider", "stream", "reply"), STOPPED_EMPTY)
def test_an_answer_finished_as_stop_with_nothing_in_it_is_a_stream_error(
    server, provider, stream, reply
):
    """Through a gateway (LiteLLM in front of llama.cpp), a model that broke off arrives as
    finish_reason "stop" and no content: the error names the server, nothing is saved."""
    error = fails(server, provider, reply, stream, "nothing in it")
    assert "127.0.0.1" in str(error) and "no text, no tool call" in str(error)


# -- fuzz: every recorded exchange, mutated -------------------------------------------------

RECORDINGS = FILES
MUTATIONS = 3000
#: The fuzz stops early past this many seconds (a loaded machine), the same cases in order.
BUDGET = 8.0
SEED = 20240610
#: Values of every JSON type, and the odd ones a server may send.
ODD_VALUES = [
    None,
    0,
    -1,
    7,
    1.5,
    -0.5,
    10**30,
    math.nan,
    math.inf,
    "",
    "x",
    "12",
    [],
    [1],
    ["x"],
    {},
    {"a": 1},
    True,
    False,
    "sk-ant-api03-" + "x" * 20,
]


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += nodes(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            found += nodes(item, (*path, position))
    return found


def mutate_json(value: Any, rng: random.Random) -> Any:
    """`value` with one node replaced by a value of another type, or one key dropped."""
    path = rng.choice(nodes(value))
    if not path:
        return rng.choice(ODD_VALUES)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[path[-1]]
    else:
        current = parent[path[-1]]
        parent[path[-1]] = rng.choice([v for v in ODD_VALUES if type(v) is not type(current)])
    return value


def mutate(recording: dict, rng: random.Random) -> str:
    """The recorded body with one to three mutations: values, dropped keys, truncated JSON."""
    body = recording["response"]["body"]
    streamed = "text/event-stream" in recording["response"]["headers"].get("content-type", "")
    for _ in range(rng.choice((1, 1, 2, 3))):
        body = mutate_once(body, streamed, rng)
    return body


def mutate_once(body: str, streamed: bool, rng: random.Random) -> str:
    if not streamed:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if payload is None or rng.random() < 0.1:
            return body[: rng.randrange(len(body) or 1)]
        return json.dumps(mutate_json(payload, rng))
    blocks = body.replace("\r\n", "\n").split("\n\n")
    data = [i for i, b in enumerate(blocks) if "data:" in b and "[DONE]" not in b and "{" in b]
    if not data:
        return body[: rng.randrange(len(body) or 1)]
    target = rng.choice(data)
    lines = blocks[target].split("\n")
    where = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    payload = lines[where][5:].strip()
    roll = rng.random()
    if 0.1 <= roll < 0.15:
        return "\n\n".join(blocks[:target])  # the stream stops here
    try:
        changed = json.dumps(mutate_json(json.loads(payload), rng))
    except ValueError:  # already cut by an earlier mutation
        roll = 0
    if roll < 0.1:
        changed = payload[: rng.randrange(len(payload) or 1)]  # truncated JSON
    lines[where] = f"data: {changed}"
    blocks[target] = "\n".join(lines)
    return "\n\n".join(blocks)


def check_stored(events: list) -> None:
    """What a provider hands over is valid: what the library stores is made of it."""
    completion = events[-1]
    assert isinstance(completion, Completion)
    for event in events[:-1]:
        assert type(event) in (TextDelta, ThinkingDelta) and type(event.text) is str
    data = completion.message.to_dict()
    assert (
        Message.model_validate(json.loads(json.dumps(data, allow_nan=False))) == completion.message
    )
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        count = getattr(completion.usage, name)
        assert type(count) is int and 0 <= count < 2**53, (name, count)
    for name in ("finish_reason", "model", "refusal"):
        assert getattr(completion, name) is None or type(getattr(completion, name)) is str


async def _replay_all(cases: list[tuple[Path, str]], deadline: float) -> dict[str, int]:
    served: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            served["status"], headers=served["headers"], content=served["body"].encode()
        )

    providers = {
        name: resolve(
            name,
            "m",
            api_key="k",
            base_url="http://recorded.test/v1",
            transport=httpx.MockTransport(handler),
            max_retries=0,
        )[0]
        for name in set(FOLDERS.values())
    }
    outcome = {"answers": 0, "errors": 0, "unnamed": 0}
    for path, body in cases:
        if time.monotonic() > deadline:
            break
        recording = json.loads(path.read_text())
        served.update(recording["response"], body=body)
        provider = providers[FOLDERS[path.parent.name]]
        request = Request(
            model="m",
            messages=[Message.user("hi")],
            stream=bool(recording["request"]["body"].get("stream")),
        )
        try:
            events = [e async for batch in provider.complete(request) for e in batch]
        except AgentError as exc:
            outcome["errors"] += 1
            outcome["unnamed"] += "unexpected shape" in str(exc)
        except Exception as exc:  # what the test is about: name it with the case
            raise AssertionError(
                f"{path.name}: {type(exc).__name__}: {exc}\n{body[:2000]}"
            ) from exc
        else:
            check_stored(events)
            outcome["answers"] += 1
    for provider in providers.values():
        await provider.aclose()
    return outcome


@pytest.mark.slow
def test_fuzzed_recordings_raise_only_agent_errors():
    rng = random.Random(SEED)
    recordings = {p: json.loads(p.read_text()) for p in RECORDINGS}
    cases = [(p, r["response"]["body"]) for p, r in recordings.items()]  # unmutated first
    for _ in range(MUTATIONS):
        path = rng.choice(RECORDINGS)
        cases.append((path, mutate(json.loads(json.dumps(recordings[path])), rng)))
    started = time.monotonic()
    outcome = asyncio.run(_replay_all(cases, started + BUDGET))
    replayed = outcome["answers"] + outcome["errors"]
    assert replayed >= min(len(cases), 500)
    assert outcome["errors"] > replayed // 4  # the mutations do reach the parsers
    # every error named what was wrong: none came from the last-resort net
    assert outcome["unnamed"] == 0, outcome
    print(f"{replayed} replays in {time.monotonic() - started:.1f} s: {outcome}")


def test_a_surrogate_pair_split_across_deltas_is_sent_back_whole(server):
    """A server that splits a pair across two chunks leaves two halves in the history."""
    split = sse(
        chat_stream(
            chunk({"content": "smile \ud83d"}), chunk({"content": "\ude00 and \udfff"}, "stop")
        )
    )
    server.script(split, Reply(text="ok"))
    session = agent(server, "openai").session()
    list(session.stream("hi"))
    assert session.messages[-1].text == "smile \U0001f600 and \ufffd"  # joined; lone: U+FFFD
    list(session.stream("again"))  # the next request carries it: no UnicodeEncodeError
    sent = server.requests[-1]["messages"][1]["content"]
    assert sent == "smile \U0001f600 and \ufffd"
