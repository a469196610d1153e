"""json() in each structured-output mode on every provider, and auto's fallback.

The loopback server answers like a model: the schema it is given natively, the tool it is
forced to call, or the schema written in its instructions; the request bodies show the mode.
"""

from __future__ import annotations

import pytest
from fake_openai import Reply
from pydantic import BaseModel

from agent_nb import Agent, tool
from agent_nb.errors import BadRequestError

PROVIDERS = ["openai", "anthropic", "openai-responses"]


class City(BaseModel):
    name: str
    population: int
    country: str | None = None


def agent(provider: str, **kwargs) -> Agent:
    return Agent(provider=provider, model=kwargs.pop("model", "m"), max_retries=0, **kwargs)


def mode_of(body: dict) -> str:
    """Which way a request body asks for structured output."""
    if (body.get("response_format") or {}).get("type") == "json_object":
        return "json_object"
    if (
        body.get("response_format")
        or body.get("output_config")
        or (body.get("text") or {}).get("format")
    ):
        return "native"
    choice = body.get("tool_choice")
    if choice:
        return "tool"
    system = (
        body.get("system")
        or body.get("instructions")
        or "".join(
            m["content"]
            for m in body.get("messages", [])
            if m.get("role") in ("system", "developer")
        )
    )
    return "prompted" if "```json" in system else "none"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["native", "tool", "prompted"])
def test_each_mode_on_each_provider(all_providers_env, provider, mode):
    server = all_providers_env
    session = agent(provider, system="Be brief.").session()
    response = session.json("Tell me about Oslo", schema=City, output_mode=mode)
    assert isinstance(response.output, City)
    assert mode_of(server.requests[-1]) == mode
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert City.model_validate_json(_json(session.messages[-1].text)) == response.output
    if mode == "prompted":  # the instructions come after the user's own system prompt
        body = server.requests[-1]
        system = body.get("system") or body.get("instructions") or body["messages"][0]["content"]
        assert system.startswith("Be brief.")
    session.run("And now?")  # the history is valid for the next turn


def _json(text: str) -> str:
    return text.removeprefix("```json\n").removesuffix("\n```")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_mode_with_tools_lets_the_model_call_them_first(all_providers_env, provider):
    server = all_providers_env

    @tool
    def get_population(city: str) -> int:
        """The population of a city."""
        return 709_000

    session = agent(provider, tools=[get_population]).session()
    response = session.json("get population of Oslo", schema=City, output_mode="tool")
    assert isinstance(response.output, City)
    first, last = server.requests[0], server.requests[-1]
    assert mode_of(first) == "tool" and first.get("tool_choice") in ("required", {"type": "any"})
    assert [m.role for m in session.messages] == ["user", "assistant", "tool", "assistant"]
    assert len(server.requests) == 2 and mode_of(last) == "tool"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_auto_falls_back_once_on_unsupported_and_remembers(all_providers_env, provider):
    server = all_providers_env
    the_agent = agent(provider)
    fallback = the_agent.provider.output_modes[1]
    unsupported = {
        "error": {
            "message": "response_format json_schema is not supported by this model",
            "type": "invalid_request_error",
        }
    }
    server.script(Reply(status=400, error=unsupported))
    session = the_agent.session()
    response = session.json("Tell me about Oslo", schema=City)
    assert isinstance(response.output, City)
    assert [mode_of(b) for b in server.requests] == ["native", fallback]
    session.json("And Bergen?", schema=City)  # remembered: straight to the mode that worked
    assert mode_of(server.requests[-1]) == fallback
    other = the_agent.session()
    other.json("Paris?", schema=City, model="other-model")  # per model
    assert mode_of(server.requests[-1]) == "native"


def test_auto_does_not_fall_back_on_other_errors_or_twice(all_providers_env):
    server = all_providers_env
    the_agent = agent("openai")
    server.script(
        Reply(
            status=400,
            error={"error": {"message": "messages: too long", "type": "invalid_request_error"}},
        )
    )
    with pytest.raises(BadRequestError, match="too long"):
        the_agent.session().json("x", schema=City)
    assert len(server.requests) == 1
    unsupported = {"error": {"message": "json_schema unsupported", "type": "invalid_request_error"}}
    server.script(Reply(status=400, error=unsupported), Reply(status=400, error=unsupported))
    session = the_agent.session()
    with pytest.raises(BadRequestError, match="unsupported"):
        session.json("x", schema=City)
    fallback = the_agent.provider.output_modes[1]  # json_object: loopback is not OpenAI
    assert [mode_of(b) for b in server.requests[-2:]] == ["native", fallback]
    assert session.messages == []


def test_explicit_modes_never_fall_back_and_bad_modes_are_refused(all_providers_env):
    server = all_providers_env
    server.script(
        Reply(
            status=400,
            error={
                "error": {"message": "json_schema unsupported", "type": "invalid_request_error"}
            },
        )
    )
    with pytest.raises(BadRequestError):
        agent("openai").session().json("x", schema=City, output_mode="native")
    assert len(server.requests) == 1
    with pytest.raises(
        ValueError, match="output_mode must be one of auto, native, json_object, tool, prompted"
    ):
        agent("openai").session().json("x", schema=City, output_mode="magic")


def test_prompted_answers_in_a_code_fence_are_read_and_retried_when_wrong(all_providers_env):
    server = all_providers_env
    server.script(Reply(text="Sure! Here it is: Oslo"))  # not JSON: told, then answers again
    session = agent("openai-compatible", base_url=server.url, api_key="k").session()
    response = session.json("Oslo?", schema=City, output_mode="prompted")
    assert isinstance(response.output, City) and response.attempts == 2
    assert "not valid JSON" in server.requests[-1]["messages"][-1]["content"]
