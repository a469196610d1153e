"""The contract a provider's author writes to: register() by name, and takes_images()."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from agent_nb import Agent
from agent_nb.errors import ConfigurationError, ImageError, UnknownProviderError
from agent_nb.events import Completion, TextDelta, Usage
from agent_nb.messages import Message
from agent_nb.providers import (
    AnthropicProvider,
    OpenAIProvider,
    Provider,
    Request,
    TestProvider,
    known_providers,
    register,
)
from agent_nb.providers.base import ProviderBatch


class Upper(Provider):
    """Answers with the last prompt in capitals, a word a delta; keeps what it was given."""

    name = "upper"
    default_model = "caps"

    def __init__(self, *, greeting: str = "", seeing: bool | None = None) -> None:
        self.greeting = greeting
        self.seeing = seeing
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        self.requests.append(request)
        text = self.greeting + request.messages[-1].text.upper()
        yield [TextDelta(word) for word in text.split(" ") if word]
        yield [
            Completion(
                message=Message.assistant(text),
                usage=Usage(input_tokens=1, output_tokens=1),
                finish_reason="stop",
                model=request.model,
            )
        ]

    async def takes_images(self, model: str) -> bool | None:
        return self.seeing


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2, 2), "red").save(out, format="PNG")
    return out.getvalue()


def test_a_registered_provider_is_used_by_name():
    register("upper", Upper)
    assert "upper" in known_providers()
    agent = Agent(provider="upper")
    assert isinstance(agent.provider, Upper) and agent.model == "caps"
    session = agent.session()
    assert session.run("hello there").text == "HELLO THERE"
    deltas = [e.text for e in session.stream("and again") if e.type == "text_delta"]
    assert deltas == ["AND", "AGAIN"]
    assert [m.text for m in session.messages] == [
        "hello there",
        "HELLO THERE",
        "and again",
        "AND AGAIN",
    ]


def test_a_factory_function_gets_the_connection_options_and_the_model_prefix_works():
    seen = {}

    def make(**options) -> Provider:
        seen.update(options)
        return Upper(greeting=f"{options['base_url']} ")

    register("shouty", make)
    agent = Agent(model="shouty:loud", api_key="k-123", base_url="http://h", timeout=3)
    assert agent.model == "loud"
    assert seen == {"api_key": "k-123", "base_url": "http://h", "timeout": 3}
    assert agent.session().run("hi").text == "http://h HI"


def test_a_name_registered_twice_is_refused_unless_replaced():
    register("upper", Upper)

    class Other(Upper):
        pass

    with pytest.raises(ConfigurationError, match=r"'upper' is already registered .*replace=True"):
        register("upper", Other)
    assert type(Agent(provider="upper").provider) is Upper  # the first one still answers
    register("upper", Other, replace=True)
    assert type(Agent(provider="upper").provider) is Other


def test_a_built_in_name_is_refused_unless_replaced():
    with pytest.raises(ConfigurationError, match="'openai' is already registered .*built-in"):
        register("openai", Upper)
    assert isinstance(Agent(provider="openai", api_key="k").provider, OpenAIProvider)
    register("openai", Upper, replace=True)
    assert isinstance(Agent(provider="openai").provider, Upper)


def test_the_same_definition_made_again_replaces_the_old_one():
    """A notebook cell that defines and registers a provider runs again: no error."""

    def define() -> type[Provider]:
        class Cell(Upper):
            pass

        return Cell

    first, second = define(), define()
    assert first is not second
    register("cell", first)
    register("cell", second)
    assert type(Agent(provider="cell").provider) is second


@pytest.mark.parametrize(
    ("factory", "problem"),
    [
        (Upper(), "got Upper: to use an instance, pass it as Agent"),
        ("Upper", "needs a Provider subclass or a function that returns a Provider, got str"),
        (None, "got NoneType"),
    ],
)
def test_a_factory_that_is_not_callable_is_refused(factory, problem):
    with pytest.raises(ConfigurationError, match=problem):
        register("broken", factory)
    assert "broken" not in known_providers()


@pytest.mark.parametrize("name", ["", "a:b", "two words", 3, None])
def test_a_bad_name_is_refused(name):
    with pytest.raises(ConfigurationError, match="a provider name is a non-empty string"):
        register(name, Upper)  # type: ignore[arg-type]


def test_a_factory_that_returns_no_provider_is_named():
    register("numbers", lambda **options: 42)
    with pytest.raises(
        ConfigurationError,
        match=r"provider 'numbers' \(.*<lambda>\) returned int, not a Provider: register",
    ):
        Agent(provider="numbers", model="m")


def test_a_factory_that_takes_no_such_option_is_a_configuration_error():
    register("upper", Upper)
    with pytest.raises(ConfigurationError, match="'upper' does not take these options") as raised:
        Agent(provider="upper", api_key="sk-abcdefgh12345678")
    assert "abcdefgh" not in str(raised.value)  # the option's name, never its value


def test_an_unknown_name_says_how_to_register_one():
    with pytest.raises(UnknownProviderError, match="register one: agent_nb.providers.register"):
        Agent(provider="nobody")


def test_registering_imports_no_provider_module():
    code = (
        "import sys; from agent_nb.providers import register, Provider\n"
        "class P(Provider):\n    async def complete(self, request): yield []\n"
        "register('p', P)\n"
        "print(sorted(m for m in sys.modules if m.startswith('agent_nb.providers.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['agent_nb.providers.base']"


def test_takes_images_is_unknown_by_default():
    assert asyncio.run(Provider.takes_images(Upper(), "any")) is None
    assert asyncio.run(TestProvider().takes_images("test")) is None


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        (OpenAIProvider(api_key="k"), "gpt-3.5-turbo", False),
        (OpenAIProvider(api_key="k"), "gpt-4o", None),
        (AnthropicProvider(api_key="k"), "claude-2.1", False),
        (AnthropicProvider(api_key="k"), "claude-sonnet-4-5", None),
    ],
)
def test_takes_images_of_the_built_ins(provider, model, expected):
    assert asyncio.run(provider.takes_images(model)) is expected


def test_a_provider_that_takes_no_images_is_never_sent_one():
    provider = Upper(seeing=False)
    session = Agent(provider=provider).session()
    with pytest.raises(ImageError, match="'caps' of provider 'upper' takes no images"):
        session.run("look", images=[png()])
    assert provider.requests == [] and session.messages == []
    provider.seeing = True
    assert session.run("look", images=[png()]).text == "LOOK"
    assert len(provider.requests[0].messages[-1].images) == 1
