"""Agent: a provider, a model, tools and default settings; it makes sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _context, _prices, providers
from ._context import Policy
from ._ledger import Price, budget
from ._turn import check_deadline, check_option_names, own_options
from .errors import ConfigurationError, SessionNotFoundError
from .messages import Message
from .providers.base import Provider
from .session import Session, stored_session
from .stores.base import SessionStore
from .tools import Tool, Toolset, ToolThreads

if TYPE_CHECKING:
    import httpx

__all__ = ["Agent"]


class _Sessions:
    """What makes sessions: an Agent, or a Router of agents (router.py). It has a `system`
    prompt and a `store` for the sessions it makes."""

    system: str | None
    store: SessionStore | None

    def session(
        self,
        session_id: str | None = None,
        system: str | None = None,
        messages: Iterable[Message] | None = None,
        *,
        store: SessionStore | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        context: Policy | None = None,
    ) -> Session:
        """A conversation; `system` defaults to the agent's, `tools` to the agent's, `context`
        (the context policy, docs/context.md) to the agent's.

        With a store (`store=` or the agent's), the session saves itself after every change,
        and a `session_id` the store has resumes that session (`system`, if given, replaces
        its system prompt).
        """
        store = _check_store(store) or self.store
        if store is not None and session_id is not None and session_id in store:
            if messages is not None:
                raise ConfigurationError(
                    f"session {session_id!r} is already in {store!r}; resume it without "
                    "messages=..., or choose another session_id"
                )
            session = self.load_session(session_id, store=store)
            if system is not None:
                session.system = system
            if tools is not None:
                session.tools = tools
            if context is not None:
                session.context_policy = context
            return session
        return Session(
            self,
            session_id=session_id,
            system=system if system is not None else self.system,
            messages=messages,
            store=store,
            tools=tools,
            context=context,
        )

    def load_session(self, session_id: str, *, store: SessionStore | None = None) -> Session:
        """The session `session_id` from `store` (or the agent's), saving itself there.

        Its `session_id` is the key it is stored under, even if the data names another id.
        """
        store = _check_store(store) or self.store
        if store is None:
            raise ConfigurationError(
                "no store to load from: pass store=... or create the agent with Agent(store=...)"
            )
        data = store.load(session_id)
        if data is None:
            known = store.list_sessions()
            shown = ", ".join(map(repr, known[-5:])) + (", ..." if len(known) > 5 else "")
            contents = f"it has {len(known)}: {shown}" if known else "it is empty"
            raise SessionNotFoundError(
                f"no session {session_id!r} in {store!r} ({contents}); "
                "start one with agent.session(session_id=..., store=...)"
            )
        return stored_session(data, self, session_id, store)


class Agent(_Sessions):
    """What to talk to and how: `Agent(provider="openai", model="gpt-4o", tools=[...])`.

    Extra keyword arguments (temperature, max_tokens, ...) are default settings for every
    request; a call's own settings override them. A name a letter or two from one of
    agent_nb's own options (`toolz`) is refused as a typo.
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
        max_answer_size: int | None = None,
        deadline: float | None = None,
        max_tool_rounds: int = 10,
        max_concurrency: int = 8,
        approve: Callable[[Any], Any] | None = None,
        store: SessionStore | None = None,
        price: Price | Mapping[str, Any] | None = None,
        max_cost: float | Decimal | str | None = None,
        prompt_cache: bool = True,
        context: Policy = "error",
        context_window: int | None = None,
        **defaults: Any,
    ) -> None:
        check_option_names(defaults, own_options(type(self)), "Agent()")
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = timeout
        if max_retries is not None:
            options["max_retries"] = max_retries
        if max_answer_size is not None:
            options["max_answer_size"] = max_answer_size
        self.provider, self.model = providers.resolve(
            provider, model, api_key=api_key, base_url=base_url, **options
        )
        self.system = system
        #: The most seconds a whole turn may take (every round, tools included); None: no limit.
        self.deadline = check_deadline(deadline)
        self.max_tool_rounds = max_tool_rounds
        #: The store sessions of this agent save themselves to, unless given another.
        self.store = _check_store(store)
        if "images" in defaults:
            raise ConfigurationError(
                "images= goes with a prompt, session.run(prompt, images=[...]), not with Agent()"
            )
        self.defaults = defaults
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(
                f"max_concurrency must be an int >= 1, got {max_concurrency!r}"
            )
        #: At most this many tool calls of one round run at the same time.
        self.max_concurrency = max_concurrency
        #: The threads its sync tools run in (at most max_concurrency at once).
        self._tool_threads = ToolThreads()
        #: Asked before a requires_approval tool runs: True, False or (False, "reason").
        self.approve = approve
        self._toolset = Toolset(tools or ())
        #: What its model costs, instead of genai-prices' table (None: the table's price).
        self.price = None if price is None else Price.of(price)
        #: Each session's budget in dollars (None: no limit); see docs/cost.md.
        self.max_cost = budget(max_cost, "Agent(max_cost=...)")
        #: Whether requests mark what a provider may cache (Anthropic's cache breakpoints).
        self.prompt_cache = bool(prompt_cache)
        #: What a request that does not fit the context window does (docs/context.md).
        self.context = _context.policy(context, "Agent()")
        #: The model's context window in tokens, if given (None: the server's or the table's).
        self.context_window = _context.window(context_window, "Agent()")
        if self.price is None:
            _prices.preload()  # the first turn's price is ready when it is needed

    @property
    def tools(self) -> list[Tool]:
        return list(self._toolset.tools.values())

    @property
    def servers(self) -> list[Any]:
        """The MCP servers among the agent's tools (their tools are listed each turn)."""
        return list(self._toolset.sources)

    def __repr__(self) -> str:
        names = [*self._toolset.tools, *(s.name for s in self._toolset.sources)]
        tools = f", tools={names}" if names else ""
        return f"Agent(provider={self.provider.name!r}, model={self.model!r}{tools})"

    def close(self) -> None:
        """Stop the MCP servers among the agent's tools (a later turn starts them again)."""
        if self._toolset.sources:
            from .mcp import close_servers

            close_servers(self._toolset.sources)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_store(store: Any) -> SessionStore | None:
    if store is not None and not isinstance(store, SessionStore):
        raise TypeError(
            f"store must be a SessionStore (SQLiteStore(), MemoryStore(), ...), "
            f"got {type(store).__name__}"
        )
    return store
