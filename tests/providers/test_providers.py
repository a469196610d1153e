"""The same Session code on every provider, each talking its own wire format over loopback."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from agent_nb import Agent, tool
from agent_nb.providers import known_providers

PROVIDERS = ["test", "openai", "ollama", "openai-compatible", "openai-responses", "anthropic"]


@tool
def get_user_orders(user_id: str) -> str:
    """Get orders for a user."""
    return json.dumps([{"id": "1", "item": "Laptop", "user": user_id}])


class Trip(BaseModel):
    cities: list[str]
    days: int


@pytest.fixture(params=PROVIDERS)
def agent_for(request, server, monkeypatch):
    name = request.param

    def make(**kwargs) -> Agent:
        if name == "test":
            return Agent(provider="test", **kwargs)
        base = server.url.removesuffix("/v1") if name == "anthropic" else server.url
        key = None if name in ("ollama", "openai-compatible") else "k"
        return Agent(provider=name, model="some-model", base_url=base, api_key=key, **kwargs)

    make.name = name
    return make


def test_every_named_provider_is_covered():
    assert set(PROVIDERS) == set(known_providers())


def test_multi_turn_run(agent_for, server):
    session = agent_for().session(system="Be brief.")
    session.run("My name is Alice")
    response = session.run("What is my name?")
    assert "My name is Alice" in response.text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.finish_reason == "stop"
    if agent_for.name != "test":
        assert len(server.requests) == 2 and server.requests[-1].get("stream") is not True


def test_stream(agent_for):
    session = agent_for().session()
    stream = session.stream("Tell me a story about Kyoto")
    deltas = [e.text for e in stream if e.type == "text_delta"]
    assert len(deltas) > 3
    assert "".join(deltas) == stream.response.text == session.messages[-1].text


def test_tools(agent_for):
    session = agent_for(tools=[get_user_orders]).session()
    stream = session.stream("I'm user-123, what are my recent orders?")
    kinds = [e.type for e in stream]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("done")
    response = stream.response
    assert [m.role for m in response.messages] == ["user", "assistant", "tool", "assistant"]
    assert response.messages[1].tool_calls[0].arguments_json() == {"user_id": "user-123"}
    assert "Laptop" in response.text
    follow = session.run("Thanks")  # the tool round travels back in the history
    assert follow.text


def test_json(agent_for):
    session = agent_for().session()
    response = session.json("Plan 3 days in Tokyo and Kyoto", schema=Trip)
    assert isinstance(response.output, Trip) and response.output.days == 3


def test_usage_accumulates_on_the_session(agent_for):
    session = agent_for().session()
    a = session.run("one")
    b = session.run("two")
    assert session.usage == a.usage + b.usage
