"""Router: several agents behind one, a model chosen per session, and a safe fallback between
them (docs/routing.md).

A Router makes sessions as an Agent does. Each session gets a route (`Route`): the candidate
it is on, which it keeps (sticky) until a turn fails on it before any of its output was shown,
or the candidate cannot take the turn (images, a window too small); the turn is then asked of
the next candidate, and the session stays there. A turn never changes model once it has shown
output or begun its tool loop. Every answer records the candidate it came from
(`metadata["candidate"]`), and the answer after a switch records the switch
(`metadata["route"]`): the pin travels with the history (to_dict, stores, a notebook's
records), and a session rebuilt from it is on the same candidate.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _prices
from .agent import Agent, _check_store, _Sessions
from .errors import (
    APIConnectionError,
    ConfigurationError,
    ContextWindowError,
    ImageError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from .events import Usage
from .messages import Message, ThinkingPart
from .providers.base import Request

if TYPE_CHECKING:
    from .events import Response
    from .session import Session
    from .stores.base import SessionStore

__all__ = ["Route", "Router"]

STRATEGIES = ("fallback", "round_robin", "fastest", "cheapest")
#: Failures that move a session to the next candidate, and cool the one that failed down.
UNHEALTHY = (APIConnectionError, RateLimitError, ServerError)
#: Failures that move a session to a candidate that can take the turn, blaming no one.
INCAPABLE = (ContextWindowError, ImageError)
#: How many times-to-first-token `fastest` measures of a candidate before it trusts them.
WARM_UP = 3
_SAMPLES = 20


@dataclasses.dataclass
class _Health:
    """What a router knows of one candidate, in this process."""

    failures: int = 0
    cooling_until: float = 0.0  # time.monotonic()
    last_error: str | None = None
    ttft: list[float] = dataclasses.field(default_factory=list)


class Router(_Sessions):
    """Agents behind one: `Router([agent_a, agent_b], strategy="fallback")`, used wherever an
    Agent is (`router.session()`, `router.run()`, `%agent router`, `ChatPanel(router)`).

    `strategy` chooses a candidate for a new session: "fallback" (the first healthy one, in
    order), "round_robin" (each in turn), "fastest" (the lowest time to first token
    measured in this process, after WARM_UP turns each), "cheapest" (at genai-prices' prices),
    or a function `(request, session, candidates) -> candidate`. Whatever the strategy, a turn
    that fails on its candidate before showing anything falls back to the next. `cooldown`:
    the seconds a candidate that failed is left out of new choices; `probe_back`: the seconds
    after which a session that fell back tries its first choice again (None: never, until
    `session.route_reset()`).
    """

    def __init__(
        self,
        agents: Iterable[Agent],
        strategy: str | Callable[..., Any] = "fallback",
        *,
        cooldown: float = 30.0,
        probe_back: float | None = None,
        system: str | None = None,
        store: SessionStore | None = None,
    ) -> None:
        candidates = tuple(agents) if not isinstance(agents, Agent) else (agents,)
        if not candidates or not all(isinstance(a, Agent) for a in candidates):
            raise ConfigurationError(
                f"Router() takes a list of Agents, got {list(candidates)!r}: "
                "Router([Agent(...), Agent(...)])"
            )
        if not callable(strategy) and strategy not in STRATEGIES:
            raise ConfigurationError(
                f"Router(strategy=...) is one of {', '.join(STRATEGIES)} or a function "
                f"(request, session, candidates) -> candidate, got {strategy!r}"
            )
        for name, value in (("cooldown", cooldown), ("probe_back", probe_back)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ConfigurationError(f"Router({name}=...) takes seconds >= 0, got {value!r}")
        #: The candidates, in order.
        self.agents = candidates
        #: Each candidate's name: "provider:model" (with "#2"... when two are alike).
        self.labels = _labels(candidates)
        self.strategy = strategy
        self.cooldown = float(cooldown)
        self.probe_back = probe_back
        self.system = system if system is not None else candidates[0].system
        self.store = _check_store(store) or candidates[0].store
        self._health = {label: _Health() for label in self.labels}
        self._turns = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        strategy = self.strategy if isinstance(self.strategy, str) else "custom"
        return f"Router({list(self.labels)!r}, strategy={strategy!r})"

    @property
    def model(self) -> str:
        """The first candidate's model (a session's is its route's: `session.agent.model`)."""
        return self.agents[0].model

    @property
    def provider(self) -> Any:
        return self.agents[0].provider

    def run(self, prompt: str, **settings: Any) -> Response:
        """One turn in a new session of its own."""
        return self.session().run(prompt, **settings)

    def close(self) -> None:
        """Close every candidate (their MCP servers)."""
        for agent in self.agents:
            agent.close()

    def status(self) -> list[dict[str, Any]]:
        """Each candidate: its label, model, whether new sessions may go to it, the seconds
        it still cools down after a failure, its failures and last error, and its median
        time to first token (in this process)."""
        now = time.monotonic()
        rows = []
        with self._lock:
            for label, agent in zip(self.labels, self.agents, strict=True):
                health = self._health[label]
                rows.append(
                    {
                        "candidate": label,
                        "model": agent.model,
                        "healthy": health.cooling_until <= now,
                        "cooling": max(0.0, round(health.cooling_until - now, 1)),
                        "failures": health.failures,
                        "last_error": health.last_error,
                        "ttft": statistics.median(health.ttft) if health.ttft else None,
                        "measured": len(health.ttft),
                    }
                )
        return rows

    # -- the routes of sessions --------------------------------------------------------------

    def _route_for(self, session: Session) -> Route:
        return Route(self, session)

    def index_of(self, label: Any) -> int | None:
        """The candidate named `label` (None: none is)."""
        return self.labels.index(label) if label in self.labels else None

    def healthy(self, index: int) -> bool:
        return self._health[self.labels[index]].cooling_until <= time.monotonic()

    def choice(self, session: Session, request: Any = None, *, cooled: bool = True) -> int:
        """The candidate the strategy gives a new session (`cooled`: among those not cooling
        down after a failure, if any)."""
        strategy = self.strategy
        every = list(range(len(self.agents)))
        healthy = [i for i in every if self.healthy(i)] if cooled else every
        pool = healthy or every
        if callable(strategy):
            return self._custom(strategy, request, session)
        if strategy == "round_robin":
            return pool[next(self._turns) % len(pool)]
        if strategy == "fastest":
            with self._lock:
                measured = {i: self._health[self.labels[i]].ttft for i in pool}
            warming = [i for i in pool if len(measured[i]) < WARM_UP]
            if warming:
                return warming[0]
            return min(pool, key=lambda i: statistics.median(measured[i]))
        if strategy == "cheapest":
            return min(pool, key=self._price_of)
        return pool[0]  # fallback: the first healthy one

    def _custom(self, strategy: Callable[..., Any], request: Any, session: Session) -> int:
        chosen = strategy(request, session, list(self.agents))
        for index, agent in enumerate(self.agents):
            if chosen is agent:
                return index
        raise ConfigurationError(
            f"the Router's strategy function must return one of its agents, got {chosen!r}"
        )

    def _price_of(self, index: int) -> float:
        """What a typical turn (1,000 tokens in, 500 out) costs on a candidate (unpriced:
        last)."""
        agent = self.agents[index]
        usage = Usage(input_tokens=1000, output_tokens=500)
        cost = _prices.would_cost(agent.provider, agent.model, usage, agent.price)
        return float("inf") if cost is None else float(cost)

    def failed(self, index: int, error: BaseException) -> None:
        """A candidate failed a turn: new sessions leave it out for `cooldown` seconds."""
        with self._lock:
            health = self._health[self.labels[index]]
            health.failures += 1
            health.cooling_until = time.monotonic() + self.cooldown
            health.last_error = _why(error)

    def timed(self, index: int, seconds: float) -> None:
        """A turn's time to its first event on a candidate."""
        with self._lock:
            samples = self._health[self.labels[index]].ttft
            samples.append(seconds)
            del samples[:-_SAMPLES]


class Route:
    """A session's way through a Router: the candidate it is on, and the switch the next
    answer records. Everything an Agent has, it answers from that candidate's Agent."""

    def __init__(self, router: Router, session: Session, chosen: int | None = None) -> None:
        self.router = router
        self._owner = session  # (a cycle, session <-> route: the collector takes it)
        #: The candidate this process put the session on (a choice, a fallback, a reset);
        #: None: the one its history's last answer came from, else the strategy's.
        self._chosen = chosen
        self._switched_at = 0.0
        #: The candidate the session was on before it first fell back (what `probe_back`
        #: tries again); None: it has not fallen back.
        self._home: int | None = None
        #: What the next answer records: the switch, the parts dropped for the candidate.
        self._switch: dict[str, Any] | None = None
        self._told = False  # the switch is in an answer of the turn running (not kept yet)
        self._dropped = 0

    def _route_for(self, session: Session) -> Route:
        """The route of a session made from this one's (a fork, a retry's copy)."""
        twin = Route(self.router, session, self._chosen)
        twin._switched_at = self._switched_at
        twin._home = self._home
        return twin

    def adopt(self, twin: Route) -> None:
        """Where a retake's copy (`twin`) went, once its turn replaced this session's."""
        self._chosen, self._switched_at = twin._chosen, twin._switched_at
        self._home, self._switch = twin._home, twin._switch

    def session(self, *args: Any, **options: Any) -> Session:
        """A new session of the router (not of the candidate this one is on)."""
        return self.router.session(*args, **options)

    def load_session(self, *args: Any, **options: Any) -> Session:
        return self.router.load_session(*args, **options)

    def replay(self, answer: Message) -> None:
        """The turn that gave `answer`, made again (Restart & Run All, on a copy of the
        history before it): on the candidate the answer came from, recording the same switch."""
        index = self.router.index_of(answer.metadata.get("candidate"))
        if index is None:
            return
        self._chosen = index
        recorded = answer.metadata.get("route")
        if isinstance(recorded, Mapping) and recorded.get("to") == self.router.labels[index]:
            self._switch = dict(recorded)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.router.agents[self.index], name)

    def __repr__(self) -> str:
        return f"<route of {self.router!r}: on {self.label}>"

    @property
    def index(self) -> int:
        """The candidate the session is on."""
        if self._chosen is not None:
            return self._chosen
        recorded = _recorded(self.router, self._owner._messages)
        if recorded is not None:
            return recorded
        if callable(self.router.strategy):
            return 0  # a function chooses at the first turn, from its request
        self._chosen = self.router.choice(self._owner)
        return self._chosen

    @property
    def label(self) -> str:
        return self.router.labels[self.index]

    @property
    def agent(self) -> Agent:
        return self.router.agents[self.index]

    def reset(self) -> None:
        """Back to the strategy's choice for a new session (recorded with the next answer)."""
        self._home = None
        self._move(self.router.choice(self._owner, cooled=False), "reset")  # the user's word

    def _move(self, index: int, why: str) -> None:
        before = self.index
        if index == before:
            return
        self._chosen = index
        self._switched_at = time.monotonic()
        self._told = False
        first = self._switch["from"] if self._switch else self.router.labels[before]
        self._switch = {
            "from": first,
            "to": self.router.labels[index],
            "why": why,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # -- what the turn asks (the loop, at its safe points) --------------------------------

    def before_turn(self, prompt: str) -> None:
        """At a prompt's turn's start: the strategy function's choice for a new session
        (from the request: the history and the prompt); back to the first choice once
        `probe_back` has passed."""
        router = self.router
        session = self._owner
        if (
            callable(router.strategy)
            and self._chosen is None
            and _recorded(router, session._messages) is None
        ):
            request = Request(
                model=self.agent.model,
                messages=[*session._messages, Message.user(prompt)],
                system=session.system,
            )
            self._chosen = router.choice(session, request)
        home = self._home
        if router.probe_back is None or home is None or not self._switched_at:
            return
        if time.monotonic() - self._switched_at >= router.probe_back and router.healthy(home):
            self._home = None
            self._move(home, "probe_back")

    def fallback(self, error: BaseException, tried: set[int]) -> bool:
        """Move to the next candidate after `error` (the turn showed nothing yet); False if
        the error is not one to move on or no candidate is left (`tried`: this turn's)."""
        if not isinstance(error, UNHEALTHY + INCAPABLE):
            return False
        current = self.index
        tried.add(current)
        if isinstance(error, UNHEALTHY):
            self.router.failed(current, error)
        if self._home is None:
            self._home = current
        order = list(range(len(self.router.agents)))
        rest = order[current + 1 :] + order[:current]
        left = [i for i in rest if i not in tried]
        if not left:
            return False
        healthy = [i for i in left if self.router.healthy(i)]
        self._move((healthy or left)[0], _why(error))
        return True

    def settle(self) -> None:
        """After a turn: the switch is recorded once an answer the history kept holds it; a
        turn that failed after its first answer leaves it for the next turn's answer."""
        self._told = False
        if self._switch is None:
            return
        for message in reversed(self._owner._messages):
            if message.metadata.get("route") == self._switch:
                self._switch = None
                return
            if message.role == "user":
                return

    def timed(self, seconds: float) -> None:
        self.router.timed(self.index, seconds)

    def portable(self, messages: list[Message]) -> list[Message]:
        """`messages` as the candidate can read them: thinking from another provider (its
        signatures, encrypted reasoning) is left out, never sent as text."""
        provider = self.agent.provider.name
        kept, dropped = [], 0
        for message in messages:
            origin = self.router.index_of(message.metadata.get("candidate"))
            if (
                message.role == "assistant"
                and origin is not None
                and self.router.agents[origin].provider.name != provider
                and any(isinstance(p, ThinkingPart) for p in message.parts)
            ):
                parts = tuple(p for p in message.parts if not isinstance(p, ThinkingPart))
                dropped += len(message.parts) - len(parts)
                message = message.model_copy(update={"parts": parts})
            kept.append(message)
        self._dropped = dropped
        return kept

    def answer_facts(self) -> dict[str, Any]:
        """What the answer records of its route (and the switch before it, once)."""
        facts: dict[str, Any] = {"candidate": self.label}
        if self._switch is not None and not self._told:
            facts["route"] = self._switch
            self._told = True
        if self._dropped:
            facts["route_dropped"] = {"thinking": self._dropped}
        return facts


def _recorded(router: Router, messages: Sequence[Message]) -> int | None:
    """The candidate the history's last answer came from (None: none of this router's)."""
    for message in reversed(messages):
        if message.role == "assistant":
            found = router.index_of(message.metadata.get("candidate"))
            if found is not None:
                return found
    return None


def _labels(agents: Sequence[Agent]) -> tuple[str, ...]:
    labels: list[str] = []
    for agent in agents:
        base = f"{agent.provider.name}:{agent.model}"
        label, number = base, 1
        while label in labels:
            number += 1
            label = f"{base}#{number}"
        labels.append(label)
    return tuple(labels)


def _why(error: BaseException) -> str:
    """A switch's reason in a word: the status, or the kind of failure."""
    if isinstance(error, ContextWindowError):
        return "window"
    if isinstance(error, ImageError):
        return "images"
    if isinstance(error, ProviderError) and error.status is not None:
        return str(error.status)
    if isinstance(error, APIConnectionError):
        return "timeout" if "timeout" in type(error).__name__.lower() else "connection"
    return type(error).__name__
