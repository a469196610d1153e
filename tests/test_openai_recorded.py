"""OpenAI Chat Completions: recorded real traffic through our provider, the official SDK as oracle.

Each file in shared/fixtures/openai-chat is one real exchange. We replay its response through
`httpx.MockTransport` and check that our provider reads what the official `openai` SDK
reads from the same bytes: text, tool calls, refusal, finish reason, usage, and errors.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agent_nb import Message, errors
from agent_nb.events import Completion, TextDelta
from agent_nb.providers.base import OutputSchema, Request
from agent_nb.providers.openai import OpenAIProvider

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openai-chat"
FILES = sorted(FIXTURES.glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def replay(fixture: dict, request: Request) -> tuple[list, OpenAIProvider]:
    """Send `request` through our provider to a transport that answers with the recording."""
    recorded = fixture["response"]
    sent: list[dict] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(http_request.content))
        return httpx.Response(
            recorded["status"], headers=recorded["headers"], content=recorded["body"].encode()
        )

    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(handler), max_retries=0)

    async def run():
        return [event async for event in provider.complete(request)]

    events = asyncio.run(run())
    provider.sent = sent  # type: ignore[attr-defined]
    return events, provider


def request_for(fixture: dict) -> Request:
    body = fixture["request"]["body"]
    return Request(model=body["model"], messages=[Message.user("hi")], stream=bool(body.get("stream")))


def oracle(fixture: dict) -> ChatCompletion:
    """What the official SDK makes of the recorded answer."""
    body = fixture["response"]["body"]
    if not fixture["request"]["body"].get("stream"):
        return ChatCompletion.model_validate_json(body)
    state = ChatCompletionStreamState()
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            state.handle_chunk(ChatCompletionChunk.model_validate_json(line[5:].strip()))
    return state.current_completion_snapshot


@pytest.mark.parametrize("path", [p for p in FILES if load(p)["response"]["status"] == 200],
                         ids=lambda p: p.stem)
def test_we_read_what_the_official_sdk_reads(path):
    fixture = load(path)
    events, _ = replay(fixture, request_for(fixture))
    completion = events[-1]
    assert isinstance(completion, Completion)
    expected = oracle(fixture)
    choice = expected.choices[0]
    message = completion.message

    assert message.text == (choice.message.content or "")
    if any(isinstance(e, TextDelta) for e in events):
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == message.text
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (c.id, c.name, c.arguments_json()) for c in message.tool_calls
    ]
    assert completion.refusal == choice.message.refusal
    assert completion.finish_reason == choice.finish_reason
    assert completion.model == expected.model
    usage = expected.usage
    if usage is not None:
        assert completion.usage.input_tokens == usage.prompt_tokens
        assert completion.usage.output_tokens == usage.completion_tokens
        details = usage.completion_tokens_details
        assert completion.usage.reasoning_tokens == ((details and details.reasoning_tokens) or 0)


@pytest.mark.parametrize("path", [p for p in FILES if load(p)["response"]["status"] != 200],
                         ids=lambda p: p.stem)
def test_errors_map_like_the_official_sdk(path):
    fixture = load(path)
    with pytest.raises(errors.ProviderError) as caught:
        replay(fixture, request_for(fixture))
    ours = caught.value
    sdk_class = openai.OpenAI(api_key="k")._make_status_error(
        "x", body=None, response=httpx.Response(fixture["response"]["status"],
                                                request=httpx.Request("POST", "http://x"))
    ).__class__.__name__
    assert type(ours).__name__ == sdk_class
    assert ours.status == fixture["response"]["status"]
    assert ours.message == json.loads(fixture["response"]["body"])["error"]["message"]
    assert ours.request_id == fixture["response"]["headers"].get("x-request-id")
    assert ours.provider == "openai"


@pytest.mark.parametrize(
    "name",
    ["call__openai_gpt_4o_completions__sync__0", "call__openai_gpt_4o_completions__stream__0"],
)
def test_plain_request_body_matches_the_official_client(name):
    fixture = load(FIXTURES / f"{name}.json")
    recorded = fixture["request"]["body"]
    request = Request(model=recorded["model"], messages=[Message.user(recorded["messages"][0]["content"])],
                      stream=bool(recorded.get("stream")))
    _, provider = replay(fixture, request)
    assert provider.sent == [recorded]


def test_structured_output_request_matches_the_recording():
    fixture = load(FIXTURES / "structured_output__strict__openai_gpt_4o_completions__sync__0.json")
    recorded = fixture["request"]["body"]
    schema = recorded["response_format"]["json_schema"]
    request = Request(
        model=recorded["model"],
        messages=[Message.user(recorded["messages"][0]["content"])],
        output=OutputSchema(name=schema["name"], schema=schema["schema"], strict=schema["strict"],
                            description=schema.get("description")),
        stream=False,
    )
    events, provider = replay(fixture, request)
    assert provider.sent[0]["response_format"] == recorded["response_format"]
    assert json.loads(events[-1].message.text)  # the answer is the JSON document


def test_tool_round_request_matches_the_recording():
    """The second request of a tool chain: assistant tool calls and tool results on the wire."""
    fixture = load(FIXTURES / "call_with_tools__openai_gpt_4o_completions__sync__1.json")
    recorded = fixture["request"]["body"]
    from agent_nb.messages import ToolCallPart, ToolResultPart

    wire = recorded["messages"]
    calls = tuple(
        ToolCallPart(id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"]))
        for c in wire[2]["tool_calls"]
    )
    results = [
        ToolResultPart(tool_call_id=m["tool_call_id"], name="secret_retrieval_tool", content=m["content"])
        for m in wire[3:]
    ]
    request = Request(
        model=recorded["model"],
        system=wire[0]["content"],
        messages=[Message.user(wire[1]["content"]), Message(role="assistant", parts=calls),
                  Message.tool(results)],
        tools=[{"name": t["function"]["name"], "description": t["function"]["description"],
                "parameters": t["function"]["parameters"]} for t in recorded["tools"]],
        stream=False,
    )
    _, provider = replay(fixture, request)
    sent = provider.sent[0]
    assert sent["messages"][2]["tool_calls"] == wire[2]["tool_calls"]
    assert sent["messages"][3:] == wire[3:]
    assert sent["messages"][:2] == wire[:2]
    assert [t["function"]["name"] for t in sent["tools"]] == ["secret_retrieval_tool"]
