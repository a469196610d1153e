"""Issue 12's server-kind rules on the loopback server (CI has them without llama.cpp too)."""

from __future__ import annotations

import httpx
import pytest
from fake_openai import Reply

from agent_nb import Agent, tool
from agent_nb.errors import BadRequestError, ServerError
from agent_nb.providers.openai import OpenAIProvider


def local(server, **kwargs) -> Agent:
    return Agent(provider="openai", base_url=server.url, api_key="k", **kwargs)


def test_openai_rules_only_on_openai(server):
    session = local(server, model="o3-mini").session(system="Be brief.")
    session.run("Hello", max_tokens=5)
    body = server.requests[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_tokens"] == 5 and "max_completion_tokens" not in body
    official = OpenAIProvider(api_key="k", transport=httpx.MockTransport(lambda r: None))
    assert official.official and official.reasoning_rules
    forced = OpenAIProvider(api_key="k", base_url=server.url, reasoning_rules=True)
    assert forced.build_body(_request("o3-mini"))["messages"][0]["role"] == "developer"


def _request(model: str):
    from agent_nb import Message
    from agent_nb.providers.base import Request

    return Request(model=model, messages=[Message.user("hi")], system="s")


def test_tool_calls_travel_with_empty_content_not_null(server):
    @tool
    def weather(city: str) -> str:
        """Weather."""
        return "sunny"

    server.script(
        Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}]), Reply(text="Sunny.")
    )
    local(server, model="m", tools=[weather]).session().run("weather?")
    sent = server.requests[-1]["messages"][1]
    assert sent["role"] == "assistant" and sent["content"] == "" and sent["tool_calls"]


def test_a_forcing_tool_choice_holds_for_the_first_round_only(server):
    @tool
    def weather(city: str) -> str:
        """Weather."""
        return "sunny"

    force = {"type": "function", "function": {"name": "weather"}}
    call = Reply(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}])
    server.script(call, Reply(text="Sunny."))
    local(server, model="m", tools=[weather]).session().run("w?", tool_choice=force)
    assert server.requests[0]["tool_choice"] == force and "tool_choice" not in server.requests[1]
    server.script(call, call, Reply(text="Sunny."))
    local(server, model="m", tools=[weather]).session().run(
        "w?", tool_choice=force, repeat_tool_choice=True
    )
    assert [r.get("tool_choice") for r in server.requests[-3:]] == [force, force, force]


def test_streamed_usage_a_server_does_not_send_is_estimated_not_zero(server):
    server.script(Reply(text="four words right here", no_usage=True))
    session = local(server, model="m").session()
    stream = session.stream("Hello there")
    list(stream)
    usage = stream.response.usage
    assert usage.estimated == 1 and usage.output_tokens == 6 and usage.input_tokens > 0
    assert session.usage.estimated == 1
    assert session.to_dict()["usage"]["estimated"] == 1
    again = type(session).from_dict(session.to_dict(), session.agent)
    assert again.usage == session.usage
    server.script(Reply(text="counted"))  # a server that does send it: no estimate
    list(session.stream("more"))
    assert session.usage.estimated == 1


VALIDATION = (
    "1 validation error for CreateChatCompletionRequest\ntop_k\n  Input should be a valid integer"
)


def test_a_validation_error_sent_as_500_is_a_bad_request_sent_once(server):
    server.script(Reply(status=500, error={"error": {"message": VALIDATION}}))
    session = local(server, model="m", max_retries=2).session()
    with pytest.raises(BadRequestError, match="top_k") as caught:
        session.run("hi", top_k="many")
    assert len(server.requests) == 1 and caught.value.status == 500
    assert "what it rejects is the request" in str(caught.value)


def test_a_real_server_fault_is_still_retried(server, monkeypatch):
    monkeypatch.setattr("agent_nb.providers._transport._backoff", lambda attempt, after: 0.01)
    fault = {"error": {"message": "The server had an error while processing your request"}}
    server.script(Reply(status=500, error=fault), Reply(status=500, error=fault), Reply(text="ok"))
    session = local(server, model="m", max_retries=2).session()
    assert session.run("hi").text == "ok" and len(server.requests) == 3
    server.script(*[Reply(status=500, error=fault)] * 3)
    with pytest.raises(ServerError):
        session.run("again")
