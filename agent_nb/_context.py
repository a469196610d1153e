"""A request against the model's context window: the window that serves it, the request's
count, and the policy that makes a long conversation fit (see docs/context.md).

History is never cut: a policy shapes what is *sent*. Where the sent part starts is recorded
in the metadata of the first message of the turn that moved it (`metadata["context"]`), so
the decision travels with the history (to_dict, stores, a notebook's records, fork, undo)
and the next turn starts where the last one did: the cached prefix survives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import _turns
from ._counting import (
    PER_MESSAGE,
    SUMMARY_HEADER,
    Counts,
    Sized,
    counted,
    reserved,
    size,
    text_tokens,
)
from ._ledger import Cost
from .errors import (
    BudgetExceeded,
    ConfigurationError,
    ContextWindowError,
    OutputValidationError,
    ProviderError,
)
from .messages import Message, TextPart

if TYPE_CHECKING:
    from ._turn import AgentConfig, Host, Settings, TurnState
    from .events import Completion
    from .providers.base import Request

__all__ = ["ContextReport", "Summarize", "Trim"]

_log = logging.getLogger("agent_nb")

#: What to do about a server that cut a request in silence (its error, a notebook's notice).
CUT_ADVICE = (
    "Give the server a larger window (llama.cpp: --ctx-size; Ollama: num_ctx), or say the "
    "window it has with Agent(context_window=...) so that context='trim' or 'summarize' fits "
    "the conversation to it"
)
#: How full the window is left after a trim or a summary: room for several turns before the
#: next one, so that the cached prefix survives them.
TARGET = 0.7
#: Past this fill the gauges warn.
WARN = 0.8
#: What a summary is asked to be (the model writes it as json()).
_SUMMARY_PROMPT = (
    "Summarize this conversation for your later use: goals, facts, figures, names, decisions, "
    "open questions, what tools returned that still matters. Brief; in its language.\n\n"
)
#: The most tokens a summary is written in (an eighth of a smaller window).
_SUMMARY_MOST = 4096
_SUMMARY_SYSTEM = "You summarize conversations faithfully and briefly."


@dataclasses.dataclass(frozen=True)
class Trim:
    """`context=Trim(target=0.7)`: when a request would not fit, leave the oldest whole turns
    out of what is sent, down to `target` of the window (the history keeps them)."""

    target: float = TARGET

    def __post_init__(self) -> None:
        _check_target(self.target, type(self).__name__)


@dataclasses.dataclass(frozen=True)
class Summarize:
    """`context=Summarize(agent=cheaper, target=0.7)`: as Trim, and the turns left out are
    replaced by a summary (written with json() by `agent`, None: the session's own; priced in
    the ledger), sent after the system prompt. The history keeps the turns themselves."""

    agent: Any = None
    target: float = TARGET

    def __post_init__(self) -> None:
        _check_target(self.target, type(self).__name__)
        if self.agent is not None and not callable(getattr(self.agent, "session", None)):
            raise ConfigurationError(
                f"Summarize(agent=...) takes an Agent (the one that writes summaries), got "
                f"{self.agent!r}"
            )


Policy = str | Trim | Summarize | Callable[..., Any]


def _check_target(target: Any, name: str) -> None:
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise ConfigurationError(
            f"{name}(target=...) is the fill a trim leaves, a number between 0 and 1 "
            f"(e.g. 0.7), got {target!r}"
        )


def policy(value: Any, where: str) -> Policy:
    """`context=` checked: "error", "trim", "summarize", Trim(), Summarize() or a function of
    (messages, budget)."""
    if value == "trim":
        return Trim()
    if value == "summarize":
        return Summarize()
    if value == "error" or isinstance(value, Trim | Summarize):
        return value
    if callable(value) and not isinstance(value, type):
        return value
    raise ConfigurationError(
        f"{where} context= takes 'error' (refuse a request that does not fit: the default), "
        "'trim' (leave the oldest turns out of what is sent), 'summarize' (replace them by a "
        f"summary), Trim(...), Summarize(...) or a function (messages, budget) -> messages; "
        f"got {value!r}"
    )


def window(value: Any, where: str) -> int | None:
    """`context_window=` checked: None, or a number of tokens > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(
            f"{where} context_window= takes the model's context window in tokens (an int > 0), "
            f"or None to take it from the server or genai-prices' table; got {value!r}"
        )
    return value


def policy_name(chosen: Policy) -> str:
    if isinstance(chosen, str):
        return chosen
    if isinstance(chosen, Trim):
        return "trim"
    if isinstance(chosen, Summarize):
        return "summarize"
    return "custom"


# -- the window --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Window:
    """A model's context window in tokens (None: not known), and who said so."""

    tokens: int | None
    source: str  # "given", "server", "genai-prices", "unknown"


async def window_of(agent: AgentConfig, model: str, needed: int | None = None) -> Window:
    """The window that serves `model`: the agent's `context_window=`; for a server elsewhere,
    genai-prices' table if it knows the model (a gateway is not asked); else what the server
    says it loaded (asked once; for a request of `needed` input tokens, only past a size
    that some window could not hold); else the table; else unknown."""
    from . import _prices

    given = getattr(agent, "context_window", None)
    if given is not None:
        return Window(given, "given")
    provider = agent.provider
    local = _prices.is_local(provider)
    known = None if local else _prices.context_window(provider, model)
    if known:
        return Window(known, "genai-prices")
    if needed is not None and needed < _ASK_PAST:
        return Window(None, NOT_ASKED)
    served = await provider.context_window(model)
    if type(served) is int and served > 0:
        return Window(served, "server")
    known = _prices.context_window(provider, model) if local else None
    return Window(known, "genai-prices") if known else Window(None, "unknown")


async def asked(agent: AgentConfig, report: ContextReport) -> ContextReport:
    """`report` with the window the server says, for a request too short to have asked."""
    window = await window_of(agent, agent.model)
    out = report.reserved or reserved({}, agent.provider, window.tokens)  # none capped it
    return dataclasses.replace(report, window=window.tokens, source=window.source, reserved=out)


#: A request with less input (256 characters, as a token a character at worst) fits any
#: window a server runs: the server is not asked for its window (a few requests, on the first
#: turn) until a request passes this.
_ASK_PAST = 64
#: The window's source while the server has not been asked.
NOT_ASKED = "not asked"


# -- the report --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContextReport:
    """What a request holds against the window: `session.context()`."""

    #: The context window in tokens (None: not known), and where it came from ("given",
    #: "server": what a local server loaded, "genai-prices", "unknown").
    window: int | None
    source: str
    #: The request's input in tokens (system prompt, tools, messages).
    used: int
    #: The output left room for (max_tokens, the thinking budget, or a quarter of the window).
    reserved: int
    #: The input by part: "system", "tools", "messages" (of which "images"), and "summary"
    #: (sent at the start of the first message).
    parts: Mapping[str, int]
    #: The messages the request held (after the system prompt), in order.
    messages: tuple[Message, ...]
    #: History messages left out of it (by a trim or a summary).
    left_out: int = 0
    #: The summary sent in their place (None: none).
    summary: str | None = None
    #: Whether some of the counts are estimates (none reported by the provider yet).
    estimated: bool = True
    #: The policy in use: "error", "trim", "summarize" or "custom".
    policy: str = "error"

    @property
    def fill(self) -> float | None:
        """How full the window is, input and reserve (None: the window is not known)."""
        return None if not self.window else (self.used + self.reserved) / self.window

    @property
    def warning(self) -> bool:
        """Past 80% full: the next turns may not fit."""
        fill = self.fill
        return fill is not None and fill > WARN

    def gauge(self) -> str:
        """E.g. "62% of 128k" (or "9.1k tokens, window unknown")."""
        if not self.window:
            return f"{_short(self.used + self.reserved)} tokens of an unknown window"
        return f"{self.fill:.0%} of {_short(self.window)}"

    def __str__(self) -> str:
        about = "about " if self.estimated else ""
        parts = ", ".join(f"{name} {count:,}" for name, count in self.parts.items() if count)
        held = f"{about}{self.used:,} tokens in ({parts}), {self.reserved:,} kept for the answer"
        left = f"; {self.left_out} earlier messages left out" if self.left_out else ""
        summary = " (a summary sent in their place)" if self.summary and self.left_out else ""
        where = "" if self.source in ("unknown", NOT_ASKED) else f" ({self.source})"
        return f"{self.gauge()}{where}: {held}{left}{summary}"


def _short(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:.3g}M"
    if tokens >= 1_000:
        return f"{tokens / 1_000:.3g}k"
    return str(tokens)


# -- fitting a request -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decision:
    """Where what is sent starts in the history, and the summary sent in place of the rest."""

    start: str | None = None  # the id of the first history message sent (None: the first)
    summary: str | None = None
    summary_of: Mapping[str, Any] | None = None

    def to_metadata(self, policy_name: str) -> dict[str, Any]:
        data: dict[str, Any] = {"policy": policy_name, "from": self.start}
        if self.summary is not None:
            data["summary"] = self.summary
            data["summary_of"] = dict(self.summary_of or {})
        return data


def recorded(history: Sequence[Message]) -> Decision:
    """The last decision the history records (none: everything is sent)."""
    for message in reversed(history):
        data = message.metadata.get("context")
        if isinstance(data, Mapping):
            start = data.get("from")
            summary = data.get("summary")
            of = data.get("summary_of")
            return Decision(
                start if isinstance(start, str) else None,
                summary if isinstance(summary, str) else None,
                of if isinstance(of, Mapping) else None,
            )
    return Decision()


def _starts(history: Sequence[Message], keep_last: bool) -> list[int]:
    """Where what is sent may start: a turn's prompt (or the history's end); with
    `keep_last`, never past the last turn's start (a resumed turn's own prompt)."""
    found = [i for i in _turns.starts(history) if history[i].role == "user"]
    if keep_last:
        return found or [0]
    return [*found, len(history)]


async def fit(state: TurnState, settings: Settings, request: Request) -> Request:
    """`request` shaped by the context policy to fit the window; ContextWindowError, before
    anything is sent, where it cannot. The turn keeps the report (`session.context()`)."""
    session = state.session
    chosen = settings.context
    if state.window is None or state.window.source == NOT_ASKED:
        provider = session.agent.provider
        needed = size(session._counts, request, provider.name, request.system, None).total
        state.window = await window_of(session.agent, settings.model, needed)
    plan = _Plan(session, chosen, state.window, request, state.base, state.prompt is None)
    if plan.over and chosen != "error":
        if isinstance(chosen, Trim | Summarize):
            decision = plan.trimmed()
            if isinstance(chosen, Summarize) and plan.begin_of(decision):
                decision = await _with_summary(state, settings, chosen, plan, decision)
            plan.take(decision)
            state.mark(decision.to_metadata(policy_name(chosen)))
        else:
            plan.custom(chosen)
    elif plan.moved_back():
        state.mark(Decision().to_metadata(policy_name(chosen)))
    report = plan.report()
    state.report, state.sized = report, plan.sized
    if plan.over:
        raise ContextWindowError(
            _refusal(session.session_id, settings.model, report, policy_name(chosen)),
            window=report.window,
            needed=report.used + report.reserved,
            reserved=report.reserved,
            provider=session.agent.provider.name,
        )
    return plan.request


async def _with_summary(
    state: TurnState, settings: Settings, chosen: Summarize, plan: _Plan, decision: Decision
) -> Decision:
    """`decision` with a summary of the turns it leaves out, if one is written that fits the
    window with them; else `decision` as it is (the turns left out without one), with a
    warning. Nothing is written for a turn that does not fit even without a summary."""
    plan.take(decision)
    if plan.over:
        return decision  # refused: a summary would be spent for nothing
    # the summary takes at most half the room left (the rest is for the next turns)
    room = max(16, (plan.window.tokens or 0) - plan.out - plan.sized.total) // 2
    kept = recorded(state.base).summary
    try:
        summarized = await _summarized(state, settings, chosen, decision, room)
        plan.take(summarized)
        if plan.over and summarized.summary == kept:
            # the summary kept from before is what does not fit: write it anew
            summarized = await _summarized(state, settings, chosen, decision, room, anew=True)
            plan.take(summarized)
        if not plan.over:
            return summarized
        problem = "it came out too long to send"  # a writer that took no notice of its cap
    except ContextWindowError:
        raise
    except (OutputValidationError, ProviderError) as error:  # the turn goes on, trimmed
        problem = str(error)
    _log.warning(
        "agent_nb: session %r: the summary could not be written (%s); the earlier turns were "
        "left out without one",
        state.session.session_id,
        problem,
    )
    return decision


def projected(session: Host, chosen: Policy, window: Window, request: Request) -> ContextReport:
    """What the next request would hold, before its prompt: the history as the last turn's
    decision shapes it."""
    return _Plan(session, chosen, window, request, request.messages, False).report()


class _Plan:
    """A request being fitted: the history it sends from, its counts, against the window."""

    def __init__(
        self,
        session: Host,
        chosen: Policy,
        window: Window,
        request: Request,
        history: Sequence[Message],
        resuming: bool,
    ) -> None:
        self.provider = session.agent.provider
        self.counts: Counts = session._counts
        self.chosen, self.window, self.original = chosen, window, request
        self.history, self.resuming = history, resuming
        self.keep = len(request.messages) - len(history)  # the turn's own messages
        self.out = reserved(request.settings, self.provider, window.tokens)
        # this turn's own decision (a later round of it), else the last turn's
        decision = recorded(request.messages) if chosen != "error" else Decision()
        if self.begin_of(decision) is None:
            decision = Decision()
        self.take(decision)

    def begin_of(self, decision: Decision) -> int | None:
        """Where `decision` starts what is sent, in the history (None: not in it)."""
        if decision.start is None:
            return 0
        history = self.history
        index = _position(history, decision.start, len(history))
        if index < len(history):
            return index if history[index].role == "user" else None
        return index if decision.start == self._own_first() else None

    def _own_first(self) -> str | None:
        own = self.original.messages[len(self.history) :]
        return own[0].id if own else None

    def take(self, decision: Decision) -> None:
        self.decision, self.begin = decision, self.begin_of(decision) or 0
        self.request = _shaped(self.original, self.history, self.begin, decision.summary)
        sent = _shaped(self.original, self.history, self.begin, None)  # as the history has it
        self.sized = self._sized(sent, decision.summary)

    def _sized(self, request: Request, summary: str | None) -> Sized:
        return size(self.counts, request, self.provider.name, self.original.system, summary)

    @property
    def over(self) -> bool:
        limit = self.window.tokens
        return limit is not None and self.sized.total + self.out > limit

    def _budget(self) -> int:
        assert self.window.tokens is not None
        return int(self.window.tokens * getattr(self.chosen, "target", TARGET)) - self.out

    def trimmed(self) -> Decision:
        """The decision that starts at the earliest turn from which the request fits the
        target fill (or, if none does, at this turn)."""
        whole = self._sized(self.original, None)
        per, cut = whole.messages, len(self.history)
        fixed = whole.system + whole.tools
        suffix = sum(per)
        starts = _starts(self.history, self.resuming)
        previous = 0
        chosen = starts[-1]
        for start in starts:
            suffix -= sum(per[previous:start])
            previous = start
            if fixed + suffix <= self._budget():
                chosen = start
                break
        first = self.history[chosen].id if chosen < cut else self._own_first()
        return Decision(first)

    def moved_back(self) -> bool:
        """Back to sending everything, if the whole history now fits the target (a larger
        window, a smaller reserve): True if that changed the decision."""
        if self.decision.start is None or self.window.tokens is None:
            return False
        whole = self._sized(self.original, None)
        if whole.total > self._budget():
            return False
        self.take(Decision())
        return True

    def custom(self, chosen: Callable[..., Any]) -> None:
        budget = self.window.tokens - self.out - self.sized.system - self.sized.tools  # type: ignore[operator]
        self.decision, self.begin = Decision(), 0
        self.request = _custom(chosen, self.original, self.keep, budget)
        self.sized = self._sized(self.request, None)

    def report(self) -> ContextReport:
        sized, request = self.sized, self.request
        sent = len(request.messages) - self.keep
        return ContextReport(
            window=self.window.tokens,
            source=self.window.source,
            used=sized.total,
            reserved=self.out,
            parts={
                "system": sized.system,
                "tools": sized.tools,
                "messages": sum(sized.messages),
                "images": sized.images,
                "summary": sized.summary,
            },
            messages=tuple(request.messages),
            left_out=max(0, len(self.history) - sent),
            summary=self.decision.summary,
            estimated=not (sized.overhead_exact and all(sized.exact)),
            policy=policy_name(self.chosen),
        )


def _shaped(
    request: Request, history: Sequence[Message], begin: int, summary: str | None
) -> Request:
    """`request` sending the history from `begin`, the summary (if any) at the start of the
    first message sent: as the user's words, never the system prompt's (a summary repeats
    what tools returned, which no one vouches for)."""
    if not begin and not summary:
        return request
    messages = [*history[begin:], *request.messages[len(history) :]]
    if summary and messages:
        first = messages[0]
        block = TextPart(text=f"[{SUMMARY_HEADER}\n{summary}]\n\n")
        messages[0] = first.model_copy(update={"parts": (block, *first.parts)})
    return dataclasses.replace(request, messages=messages)


async def _summarized(
    state: TurnState,
    settings: Settings,
    chosen: Summarize,
    decision: Decision,
    room: int,
    *,
    anew: bool = False,
) -> Decision:
    """`decision` with a summary of everything it leaves out (the last summary included),
    at most `room` tokens long, written with json() by the policy's agent, in sessions of
    its own (kept in no store, with no tools: a summary runs none), a part at a time where
    the writer's window is small, within what the turn's budgets leave; what that spent goes
    in this turn's ledger."""
    history = state.base
    begin = _position(history, decision.start, len(history))
    earlier = Decision() if anew else recorded(history)
    before = _position(history, earlier.start, 0) if earlier.summary else 0
    if earlier.summary and before == begin:
        return dataclasses.replace(decision, summary=earlier.summary, summary_of=earlier.summary_of)
    agent = chosen.agent or state.session.agent
    limit = (await window_of(agent, agent.model)).tokens
    answer = min(_SUMMARY_MOST, room, limit // 8 if limit else _SUMMARY_MOST)
    counts = Counts()
    if agent is state.session.agent:  # the same tokenizer: what the session learnt holds
        counts.scale = state.session._counts.scale
    room = None
    if limit:  # the writer's request: its prompts, the summary so far (at most an answer),
        # a part, and the answer
        fixed = counts.scaled(text_tokens(_SUMMARY_SYSTEM + _SUMMARY_PROMPT) + 16)
        room = max(32, int(limit * 0.9) - 2 * answer - fixed)
    summary = earlier.summary if before else None
    for part in _parts([_line(m) for m in history[before:begin]], room, counts):
        earlier_text = f"(A summary of what came before)\n{summary}\n\n" if summary else ""
        writer = type(state.session)(agent, system=_SUMMARY_SYSTEM, tools=[])  # in no store
        writer._counts = counts
        try:
            response = await writer.json_async(
                _SUMMARY_PROMPT + earlier_text + part,
                schema=_Summary,
                max_tokens=answer,
                output_retries=0,  # a correction would not fit the part's room: trim instead
                context="error",  # never a summary of a summary's own request
                max_cost=_left(state, settings),
            )
        except BudgetExceeded as error:
            raise BudgetExceeded(
                f"session {state.session.session_id!r}: the summary of the turns this request "
                f"leaves out would pass what the budgets leave ({error}); raise the budget, or "
                "use context='trim'",
                limit=error.limit,
                spent=error.spent,
                bound=error.bound,
            ) from None
        except ContextWindowError as error:
            raise ContextWindowError(
                f"the turns to summarize do not fit the window of the agent that writes "
                f"summaries ({error}); give Summarize(agent=...) one with a larger window, or "
                "use context='trim'",
                window=error.window,
                needed=error.needed,
                provider=error.provider,
            ) from None
        finally:
            for spend in writer.ledger:
                state.record(dataclasses.replace(spend, why="summary"))
        if not isinstance(response.output, _Summary):  # no answer: a call, say
            raise OutputValidationError("the writer gave no summary", text=response.text)
        summary = response.output.summary.strip()
    first = (earlier.summary_of or {}).get("first") if earlier.summary else None
    of = {"first": first or history[0].id, "last": history[begin - 1].id, "messages": begin}
    return dataclasses.replace(decision, summary=summary, summary_of=of)


def _left(state: TurnState, settings: Settings) -> Decimal | None:
    """What the turn may still spend within the session's budget (the agent's max_cost) and
    the call's (None: no budget)."""
    session = state.session
    left = []
    if session.agent.max_cost is not None:
        left.append(session.agent.max_cost - Cost.of(session._ledger).amount)
    if settings.max_cost is not None:
        left.append(settings.max_cost - Cost.of(state.spent).amount)
    return max(Decimal(0), min(left)) if left else None


class _Summary(BaseModel):
    """What json() asks of a summary's writer."""

    summary: str


def _parts(lines: list[str], room: int | None, counts: Counts) -> list[str]:
    """`lines` joined into the parts a summary is written from, each within `room` tokens as
    `counts` estimates them (None: one part); a line longer than that is cut to fit."""
    if room is None:
        return ["\n\n".join(lines)]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for line in lines:
        tokens = counts.scaled(text_tokens(line))
        if tokens > room:
            line = line[: max(1, int(len(line) * room / tokens) - 1)] + "…"
            tokens = counts.scaled(text_tokens(line))
        if current and used + tokens > room:
            parts.append("\n\n".join(current))
            current, used = [], 0
        current.append(line)
        used += tokens
    if current:
        parts.append("\n\n".join(current))
    return parts


def _position(history: Sequence[Message], message_id: str | None, missing: int) -> int:
    """Where message `message_id` is in `history` (`missing` if it is not)."""
    return next((i for i, m in enumerate(history) if m.id == message_id), missing)


def _line(message: Message) -> str:
    if message.role == "tool":
        return "\n".join(f"[tool {r.name} returned] {r.content}" for r in message.tool_results)
    calls = "".join(
        f"\n[called {c.name}({json.dumps(c.arguments_json())})]" for c in message.tool_calls
    )
    images = f" [{len(message.images)} image(s)]" if message.images else ""
    return f"{message.role}: {message.text}{images}{calls}"


def _custom(chosen: Callable[..., Any], request: Request, keep: int, budget: int) -> Request:
    """The request with the messages a user's policy chose, checked."""
    given = list(request.messages)
    result = chosen(list(given), budget)
    if not isinstance(result, list | tuple) or not all(isinstance(m, Message) for m in result):
        raise ConfigurationError(
            f"the context= function must return a list of Message, got {type(result).__name__}"
        )
    result = list(result)
    own = given[len(given) - keep :] if keep else []
    if keep and [m.id for m in result[-keep:]] != [m.id for m in own]:
        raise ConfigurationError(
            "the context= function must keep this turn's messages, unchanged, at the end"
        )
    problem = _unpaired(result)
    if result and result[0].role != "user":
        problem = problem or f"it starts with a {result[0].role} message, not the user's"
    if problem:
        raise ConfigurationError(f"the context= function's messages cannot be sent: {problem}")
    return dataclasses.replace(request, messages=result)


def _unpaired(messages: Sequence[Message]) -> str | None:
    """What breaks a tool call's pairing with its result in `messages` (None: nothing)."""
    calls = {c.id for m in messages for c in m.tool_calls}
    results = {r.tool_call_id for m in messages for r in m.tool_results}
    if calls - results:
        return f"tool call {sorted(calls - results)[0]!r} is sent without its result"
    if results - calls:
        return f"the result of tool call {sorted(results - calls)[0]!r} is sent without the call"
    return None


def _refusal(session_id: str, model: str, report: ContextReport, name: str) -> str:
    needed = report.used + report.reserved
    source = {
        "given": "given as context_window=",
        "server": "as the server loaded it",
        "genai-prices": "genai-prices' table",
    }.get(report.source, report.source)
    figures = (
        f"the request needs {'about ' if report.estimated else ''}{needed:,} tokens "
        f"({report.used:,} in, {report.reserved:,} kept for the answer), and {model!r} has a "
        f"context window of {report.window:,} ({source})"
    )
    unchanged = "nothing was sent and the history is unchanged"
    if name == "error":
        how = (
            "leave the oldest turns out of what is sent with context='trim', or replace them "
            "by a summary with context='summarize' (on the call, the session or the Agent); "
            "or ask for a shorter answer (max_tokens=...), or start a new session"
        )
    else:
        how = (
            "this turn alone does not fit, even with every earlier turn left out: send a "
            "shorter prompt, fewer images or tools, a smaller max_tokens, or use a model with "
            "a larger window"
        )
    return f"session {session_id!r}: {figures}; {unchanged}. To fit: {how}"


def history_mark(history: Sequence[Message]) -> tuple[int, str | None]:
    """What identifies a history's state (its length and last message) for a kept report."""
    return len(history), history[-1].id if history else None


# -- after the answer --------------------------------------------------------------------


def answered(state: TurnState, request: Request, completion: Completion) -> str | None:
    """Split the input tokens the provider reported for `request` back onto its parts that
    had no reported count (the turn's new messages, the system prompt and tools); say what
    is wrong (None: nothing) if the server evidently cut the request in silence."""
    usage, sized = completion.usage, state.sized
    if sized is None or usage.estimated or usage.input_tokens <= 0:
        return None
    reported = usage.input_tokens
    exact = sum(n for n, e in zip(sized.messages, sized.exact, strict=True) if e)
    fixed = sized.system + sized.tools if sized.overhead_exact else 0
    guessed = sized.total - exact - fixed
    limit = state.window.tokens if state.window is not None else None
    # A cut: near the window, far fewer tokens than the server's own earlier reports add up
    # to, or than the request was estimated at. (Elsewhere a low figure is a server that
    # counts only what its cache did not hold, as some Ollama releases did, or an estimate
    # far off: not a cut.)
    if (
        limit is not None
        and reported >= limit // 2
        and (
            exact + fixed > reported * 1.1 + 16
            or (reported >= limit * 0.9 and sized.total > reported * 1.2)
            or reported >= limit * 0.98  # no room left for an answer: cut, or as good as
        )
    ):
        return (
            f"the server reported {reported:,} input tokens for a request of "
            f"{'about ' if guessed else ''}{sized.total:,} (the window: {limit:,}): it cut "
            "the request in silence, so the answer saw only part of the conversation"
        )
    if (
        state.window is not None
        and state.window.source == "server"
        and reported + usage.output_tokens > limit  # type: ignore[operator]
    ):
        # llama.cpp's --context-shift: the answer went on past the window, dropping the
        # start of the conversation to make room
        return (
            f"the server answered {usage.output_tokens:,} tokens to a request of {reported:,} "
            f"in a window of {limit:,}: it dropped the start of the conversation to make room, "
            "so the end of the answer saw only part of it"
        )
    rest = reported - exact - fixed
    if rest <= 0 or (guessed > 0 and rest / guessed < 0.25):
        return None  # a figure that is not this request's whole input (a cache, a proxy)
    state.report = _as_reported(state.report, reported)
    if guessed <= 0:
        return None
    observed = rest / guessed  # (far more: a server's own prompt, a tool template's, say)
    counts: Counts = state.session._counts
    counts.learn(observed)
    if not (sized.overhead_exact or state.report is None or state.report.summary):
        counts.learn_overhead(sized.key, sized.system + sized.tools, observed)
    own_start = len(request.messages) - len(state.messages)
    for index, exact_count in enumerate(sized.exact):
        at = index - own_start
        if exact_count or at < 0:
            continue  # history: its estimate stands (the report spans it and others)
        tokens = max(1, round(sized.messages[index] * observed))
        counts.learn_message(state.messages[at], tokens, state.session.agent.provider.name)
        state.messages[at] = counted(
            state.messages[at], max(1, tokens - PER_MESSAGE), estimated=False
        )
    return None


def _as_reported(report: ContextReport | None, reported: int) -> ContextReport | None:
    """`report` with the input the provider reported for its request (the messages' part
    takes the difference)."""
    if report is None:
        return None
    parts = dict(report.parts)
    others = sum(v for k, v in parts.items() if k not in ("messages", "images"))
    parts["messages"] = max(0, reported - others)
    return dataclasses.replace(report, used=reported, parts=parts, estimated=False)
