"""A Router falling back from Anthropic (extended thinking, signed, in a tool round: recorded
from the real API) to llama.cpp's llama-server: the request the server gets is one it accepts,
with the thinking left out, not turned into text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_nb import Agent, Router, tool
from agent_nb.providers import resolve

RECORDED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "anthropic"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@tool
def get_user_country() -> str:
    """The user's country."""
    return "Mexico"


@pytest.fixture
def jinja_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama-server with its Jinja chat templates (the way it takes tool messages)."""
    from servers import LlamaCppServer, llama_serving

    yield from llama_serving(tmp_path_factory, LlamaCppServer, n_ctx=2048, options=("--jinja",))


def anthropic_replaying(*answers: dict[str, Any]) -> tuple[Agent, list[dict[str, Any]]]:
    """An Anthropic agent whose server is the recording (then `answers` as they are)."""
    served = [
        json.loads(
            (RECORDED / f"anthropic__test_anthropic_tool_with_thinking__{n}.json").read_text()
        )["response"]
        for n in (0, 1)
    ]
    served += [{"status": a.pop("status"), "headers": {}, "body": json.dumps(a)} for a in answers]
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        answer = served.pop(0)
        headers = {k: v for k, v in answer["headers"].items() if k.lower() != "content-encoding"}
        return httpx.Response(answer["status"], headers=headers, content=answer["body"].encode())

    provider, model = resolve(
        "anthropic",
        "claude-sonnet-4-0",
        api_key="k",
        transport=httpx.MockTransport(handler),
        max_retries=0,
    )
    agent = Agent(
        provider=provider,
        model=model,
        tools=[get_user_country],
        thinking={"type": "enabled", "budget_tokens": 3000},
        max_tokens=4096,
    )
    return agent, sent


def test_thinking_from_anthropic_is_left_out_when_llama_server_takes_over(jinja_server):
    from llama_proxy import RecordingProxy

    claude, to_claude = anthropic_replaying({"status": 529, **OVERLOADED})
    with RecordingProxy(jinja_server.url) as proxy:
        local = Agent(
            provider="openai",
            model="tiny",
            base_url=proxy.url,
            api_key="none",
            tools=[get_user_country],
            max_tokens=8,
            temperature=0.0,
        )
        session = Router([claude, local]).session()
        first = session.run("What is the largest city in the user country?")
        assert "Mexico City" in first.text and session.agent.model == "claude-sonnet-4-0"
        thinking = [p for m in session.messages for p in m.parts if p.type == "thinking"]
        assert thinking and thinking[0].signature  # signed thinking, in a tool round
        answer = session.run("And its population?")  # Anthropic is overloaded: llama-server
        assert answer.messages[-1].metadata["route"]["why"] == "529"
        assert answer.messages[-1].metadata["route_dropped"] == {"thinking": 1}
        assert session.agent.model == "tiny"
        (exchange,) = [e for e in proxy.exchanges if e.path.endswith("chat/completions")]
    assert exchange.status == 200  # the server took the history as it was sent
    sent = json.dumps(exchange.body)
    assert thinking[0].text[:40] not in sent and thinking[0].signature not in sent
    roles = [m["role"] for m in exchange.body["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert len(to_claude) == 3  # two recorded rounds, then the overloaded one
