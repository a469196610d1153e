"""Shared fixtures: a hermetic environment, the loopback OpenAI server, agents per provider."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from agent_nb import Agent

#: A key for the loopback server; it is checked for, never for its value.
TEST_KEY = "test-key-not-secret-0123456789"

_ENV = [
    name
    for name in os.environ
    if name.startswith(("OPENAI_", "ANTHROPIC_", "AGENT_NB_", "OLLAMA_"))
]


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real keys or endpoints."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def server(_server: FakeOpenAI) -> FakeOpenAI:
    """The loopback OpenAI-compatible server, with an empty script and request log."""
    _server.reset()
    _server.chunk_delay = 0.0
    return _server


@pytest.fixture
def openai_env(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """OPENAI_BASE_URL and OPENAI_API_KEY point the openai provider at the loopback server."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    return server


@pytest.fixture
def all_providers_env(openai_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """Every provider's environment points at the loopback server (it speaks each protocol)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", openai_env.url.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("OLLAMA_BASE_URL", openai_env.url)
    return openai_env


@pytest.fixture(params=["test", "openai"])
def make_agent(request: pytest.FixtureRequest) -> Callable[..., Agent]:
    """Agent(...) on the offline provider, or on openai against the loopback server."""
    if request.param == "openai":
        request.getfixturevalue("openai_env")

    def make(**kwargs: Any) -> Agent:
        return Agent(provider=request.param, model=kwargs.pop("model", "gpt-4o"), **kwargs)

    make.provider = request.param  # type: ignore[attr-defined]
    return make
