"""Agent: a provider, a model, tools and default settings; it makes sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import providers
from .errors import ConfigurationError
from .messages import Message
from .providers.base import Provider
from .session import Session
from .tools import Tool, as_tool

if TYPE_CHECKING:
    import httpx

__all__ = ["Agent"]


class Agent:
    """What to talk to and how: `Agent(provider="openai", model="gpt-4o", tools=[...])`.

    Extra keyword arguments (temperature, max_tokens, ...) are default settings for every
    request; a call's own settings override them.
    """

    def __init__(
        self,
        provider: str | Provider | None = None,
        model: str | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        system: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        max_tool_rounds: int = 10,
        **defaults: Any,
    ) -> None:
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = timeout
        if max_retries is not None:
            options["max_retries"] = max_retries
        self.provider, self.model = providers.resolve(
            provider, model, api_key=api_key, base_url=base_url, **options
        )
        self.system = system
        self.max_tool_rounds = max_tool_rounds
        self.defaults = defaults
        self._tools: dict[str, Tool] = {}
        for item in tools or ():
            t = as_tool(item)
            if t.name in self._tools:
                raise ConfigurationError(f"two tools are named {t.name!r}; tool names must differ")
            self._tools[t.name] = t
        self._tool_schemas = [t.schema() for t in self._tools.values()]

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def __repr__(self) -> str:
        tools = f", tools={list(self._tools)}" if self._tools else ""
        return f"Agent(provider={self.provider.name!r}, model={self.model!r}{tools})"

    def session(
        self,
        session_id: str | None = None,
        system: str | None = None,
        messages: Iterable[Message] | None = None,
    ) -> Session:
        """A new conversation; `system` defaults to the agent's."""
        return Session(
            self,
            session_id=session_id,
            system=system if system is not None else self.system,
            messages=messages,
        )
