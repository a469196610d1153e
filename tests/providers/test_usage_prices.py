"""Usage read from recorded traffic, priced: exactly genai-prices' figures for the same raw
usage, read by genai-prices' own extractors (an oracle independent of ours).

The recordings' cache counters are all 0 (fixtures/INDEX.md), so each recorded answer is
replayed with a hand-made usage in its API's documented shape: Anthropic's uncached
`input_tokens` beside `cache_creation_input_tokens` and `cache_read_input_tokens`; OpenAI's
`prompt_tokens` that include `prompt_tokens_details.cached_tokens`; the Responses API's
`input_tokens_details` and `output_tokens_details`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from genai_prices import calc_price, extract_usage

from agent_nb import Agent
from agent_nb.events import Usage
from agent_nb.providers import resolve

ROOT = Path(__file__).resolve().parents[1] / "fixtures"

ANTHROPIC_USAGE = {
    "input_tokens": 1_200,
    "cache_creation_input_tokens": 3_000,
    "cache_read_input_tokens": 50_000,
    "output_tokens": 345,
}
CHAT_USAGE = {
    "prompt_tokens": 9_000,
    "completion_tokens": 500,
    "total_tokens": 9_500,
    "prompt_tokens_details": {"cached_tokens": 4_096},
    "completion_tokens_details": {"reasoning_tokens": 300},
}
RESPONSES_USAGE = {
    "input_tokens": 9_000,
    "input_tokens_details": {"cached_tokens": 4_096},
    "output_tokens": 500,
    "output_tokens_details": {"reasoning_tokens": 300},
    "total_tokens": 9_500,
}

CASES = [
    # (fixture, provider, genai-prices provider, flavor, usage, our Usage)
    (
        "anthropic/call__anthropic_claude_sonnet_4_0__stream__0.json",
        "anthropic",
        "anthropic",
        "default",
        ANTHROPIC_USAGE,
        Usage(54_200, 345, cached_tokens=50_000, cache_write_tokens=3_000),
    ),
    (
        "anthropic/call__anthropic_claude_sonnet_4_0__sync__0.json",
        "anthropic",
        "anthropic",
        "default",
        ANTHROPIC_USAGE,
        Usage(54_200, 345, cached_tokens=50_000, cache_write_tokens=3_000),
    ),
    (
        "anthropic/call_with_thinking__anthropic_claude_sonnet_4_0__stream__0.json",
        "anthropic",
        "anthropic",
        "default",
        ANTHROPIC_USAGE,
        Usage(54_200, 345, cached_tokens=50_000, cache_write_tokens=3_000),
    ),
    (
        "openai-chat/call__openai_gpt_4o_completions__stream__0.json",
        "openai",
        "openai",
        "chat",
        CHAT_USAGE,
        Usage(9_000, 500, cached_tokens=4_096, reasoning_tokens=300),
    ),
    (
        "openai-chat/call__openai_gpt_4o_completions__sync__0.json",
        "openai",
        "openai",
        "chat",
        CHAT_USAGE,
        Usage(9_000, 500, cached_tokens=4_096, reasoning_tokens=300),
    ),
    (
        "openai-chat/max_tokens__openai_gpt_5_mini_completions__stream__0.json",
        "openai",
        "openai",
        "chat",
        CHAT_USAGE,
        Usage(9_000, 500, cached_tokens=4_096, reasoning_tokens=300),
    ),
    (
        "openai-responses/openai_responses__test_responses_basic_streaming__0.json",
        "openai-responses",
        "openai",
        "responses",
        RESPONSES_USAGE,
        Usage(9_000, 500, cached_tokens=4_096, reasoning_tokens=300),
    ),
    (
        "openai-responses/call_with_thinking__openai_gpt_5_responses__stream__0.json",
        "openai-responses",
        "openai",
        "responses",
        RESPONSES_USAGE,
        Usage(9_000, 500, cached_tokens=4_096, reasoning_tokens=300),
    ),
]


def _with_usage(recorded: dict[str, Any], provider: str, usage: dict[str, Any]) -> str:
    """The recorded body with `usage` where the API reports it."""
    body = recorded["body"]
    if not body.lstrip().startswith(("data:", "event:")):
        whole = json.loads(body)
        whole["usage"] = usage
        return json.dumps(whole)
    lines = []
    for line in body.split("\n"):
        if line.startswith("data: ") and line[6:].strip() not in ("", "[DONE]"):
            data = json.loads(line[6:])
            kind = data.get("type")
            if provider == "anthropic" and kind == "message_start":
                data["message"]["usage"] = {**usage, "output_tokens": 1}
            elif provider == "anthropic" and kind == "message_delta":
                data["usage"] = {"output_tokens": usage["output_tokens"]}
            elif provider == "openai" and data.get("usage") is not None:
                data["usage"] = usage
            elif provider == "openai-responses" and kind == "response.completed":
                data["response"]["usage"] = usage
            line = "data: " + json.dumps(data)
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES, ids=[c[0].split("/")[1][:-5] for c in CASES])
def test_recorded_usage_is_priced_as_genai_prices_prices_it(case):
    path, provider, vendor, flavor, usage, expected = case
    recording = json.loads((ROOT / path).read_text())
    recorded = recording["response"]
    body = _with_usage(recorded, provider, usage)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(recorded["status"], headers=recorded["headers"], content=body)

    instance, _ = resolve(
        provider, "m", api_key="k", transport=httpx.MockTransport(handler), max_retries=0
    )
    model = recording["request"]["body"]["model"]
    session = Agent(provider=instance, model=model).session()
    stream = recording["request"]["body"].get("stream", False)
    if stream:
        streamed = session.stream("hi")
        for _ in streamed:
            pass
        response = streamed.response
    else:
        response = session.run("hi")
    [spend] = response.spent
    assert spend.usage == expected
    assert response.usage == expected

    served = spend.served
    oracle = extract_usage({"model": served, "usage": usage}, provider_id=vendor, api_flavor=flavor)
    price = calc_price(oracle.usage, served, provider_id=vendor)
    assert spend.cost == price.total_price  # exactly: Decimal figures, not floats
    assert spend.matched == "provider"
    assert spend.prices.startswith("genai-prices ")
    assert response.cost.amount == price.total_price
    assert session.cost.amount == price.total_price
    assert response.messages[-1].metadata["cost"] == str(price.total_price)
    if vendor == "anthropic":  # cache writes at 1.25x and reads at 0.1x of the input price
        uncached = calc_price(
            extract_usage(
                {"model": served, "usage": {"input_tokens": 54_200, "output_tokens": 345}},
                provider_id=vendor,
            ).usage,
            served,
            provider_id=vendor,
        )
        assert spend.cost < uncached.total_price
