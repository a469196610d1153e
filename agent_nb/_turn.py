"""The turn being built: its settings, what it needs of its session and agent, and the
messages it keeps aside until it completes (or what a stopped turn keeps)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import _ledger
from ._counting import answer_tokens
from ._output import OutputPlan
from .errors import (
    ConfigurationError,
    OutputValidationError,
    ToolError,
)
from .events import (
    Completion,
    Event,
    Response,
    Retried,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from .messages import (
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    _thaw,
    clean_json,
    clean_text,
)
from .tools import (
    Tool,
    Toolset,
    ToolThreads,
)

if TYPE_CHECKING:
    import threading
    from decimal import Decimal

    from ._context import ContextReport, Policy, Window
    from ._counting import Counts
    from ._ledger import Price, Spend
    from ._output import OutputType
    from .providers.base import Provider


_INTERRUPTED = "interrupted before the tool finished"


class AgentConfig(Protocol):
    """What sessions and their turns read of an Agent (agent.Agent is the one there is).

    A protocol, so that neither this module nor session.py imports agent.py, which imports
    them: the core's modules import one way.
    """

    provider: Provider
    model: str
    system: str | None
    defaults: dict[str, Any]
    approve: Callable[..., Any] | None
    deadline: float | None
    max_tool_rounds: int
    max_concurrency: int
    price: Price | None
    max_cost: Decimal | None
    prompt_cache: bool
    context: Policy
    context_window: int | None
    _toolset: Toolset
    _tool_threads: ToolThreads


class Host(Protocol):
    """What a turn needs of the session it runs in (session.Session is the one there is).

    The turn and the session own the history together: the turn holds the session
    (`_turning`, set under `_lock`) while it runs, reads `_messages` and `_decisions`, and
    commits through `_commit`.
    """

    agent: AgentConfig
    session_id: str
    system: str | None
    _lock: threading.Lock
    _turning: bool
    _messages: list[Message]
    _decisions: dict[str, tuple[bool, str | None, ToolCallPart]]
    #: What the session's requests spent (append-only, shared with a Retake's copy).
    _ledger: list[Spend]
    #: Why this session's turns are asked: "turn", or "retry" (a Retake's copy).
    _reason: str
    #: A Retake's copy: the session whose ledger it spends into, saved when a turn that kept
    #: nothing spent (None: its own).
    _payer: Host | None
    _allowed_tools: set[str]
    #: Waiting calls approved with always=True (Session.approve).
    _always: set[str]
    #: The session's token counts (per message, the system prompt and tools).
    _counts: Counts
    #: What the last request held, and the history it was made for (session.context()).
    _context: tuple[ContextReport, tuple[int, str | None]] | None
    #: The session's context policy (None: the agent's).
    context_policy: Policy | None
    #: The context decision of the turn a Retake's copy answers again, and the id of that
    #: turn's prompt (None: none).
    _carried_context: tuple[Any, str] | None

    @property
    def pending_approvals(self) -> list[ToolCallPart]: ...

    @property
    def _toolset(self) -> Toolset: ...

    def _idle(self) -> None: ...

    def _commit(
        self, messages: list[Message], usage: Usage, base: list[Message] | None = None
    ) -> None: ...

    def _autosave(self, *, quiet: bool = False, wait: bool = True, full: bool = False) -> None: ...

    async def _autosave_async(self, response: Response) -> None: ...


@dataclasses.dataclass(frozen=True)
class Settings:
    """A turn's settings, checked once before anything is sent.

    Each field is the option of the same name a call takes (`run(prompt, model=...)`), or the
    one its metadata names ("option": None for none): `own_options` reads them from here.
    """

    model: str
    toolset: Toolset = dataclasses.field(metadata={"option": "tools"})
    #: Asked before a requires_approval tool runs (None: such calls wait for a decision).
    approve: Callable[..., Any] | None
    #: What the provider is sent as settings (temperature, max_tokens, tool_choice, ...).
    request: dict[str, Any] = dataclasses.field(metadata={"option": None})
    images: tuple[ImagePart, ...] = ()
    output: OutputType | None = dataclasses.field(default=None, metadata={"option": None})
    #: How structured output is asked for (None: plain text).
    plan: OutputPlan | None = dataclasses.field(default=None, metadata={"option": "output_mode"})
    output_retries: int = 1
    #: A tool_choice that forces a call holds for the first round only, unless this is set.
    repeat_tool_choice: bool = False
    #: This call's budget in dollars (None: none); the session's is the agent's max_cost.
    max_cost: Decimal | None = None
    #: Whether requests mark what the provider may cache.
    prompt_cache: bool = True
    #: The most seconds the whole turn may take (None: no limit).
    deadline: float | None = None
    #: What a request that does not fit the context window does (docs/context.md).
    context: Any = "error"


#: Settings servers take whose names are near one of agent_nb's own: never taken for a typo
#: (OpenRouter's `models`, the models to fall back to).
_SERVER_SETTINGS = frozenset({"models"})


def own_options(agent_type: type) -> frozenset[str]:
    """The names of agent_nb's own options: a call's (the fields of Settings) and those of
    `agent_type`'s constructor (Agent's); any other setting is sent to the server."""
    found = _OWN.get(agent_type)
    if found is None:
        names = {f.metadata.get("option", f.name) for f in dataclasses.fields(Settings)}
        try:
            parameters = inspect.signature(agent_type.__init__).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover - a constructor without one
            parameters = []
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        found = _OWN[agent_type] = frozenset(names - {None, "self"})
    return found


_OWN: dict[type, frozenset[str]] = {}


def check_option_names(names: Iterable[str], own: frozenset[str], where: str) -> None:
    """ConfigurationError, before anything is sent, for a setting whose name is a letter or
    two from one of agent_nb's own options: a typo the server would ignore in silence."""
    for name in names:
        if name in own or name in _SERVER_SETTINGS:
            continue
        close = difflib.get_close_matches(name, own, n=1, cutoff=0.8)
        if close:
            raise ConfigurationError(
                f"{where} got {name}=..., which is not an option of agent_nb; did you mean "
                f"{close[0]}=...? (A setting agent_nb does not know is sent to the server as "
                "it is; this one is refused because it looks like a typo, and nothing was sent)"
            )


def check_deadline(deadline: Any) -> float | None:
    """`deadline=`: None, or a number of seconds > 0."""
    if deadline is None:
        return None
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise ConfigurationError(
            f"deadline= takes the most seconds a whole turn may take (a number > 0), or None "
            f"for no limit; got {deadline!r}"
        )
    return float(deadline)


def _prompt(session: Host, prompt: str, settings: Settings) -> Message:
    """The turn's prompt; for a turn answered again, with the context decision of the turn it
    replaces (a decision that started at that turn's prompt starts at this one)."""
    carried, replaced = session._carried_context or (None, None)
    message = Message(role="user", parts=(*settings.images, TextPart(text=clean_text(prompt))))
    if not carried:
        return message
    if isinstance(carried, Mapping) and carried.get("from") == replaced:
        carried = {**carried, "from": message.id}
    return message.model_copy(update={"metadata": {"context": carried}})


class TurnState:
    """The messages of a turn being built, kept aside until the turn completes."""

    def __init__(self, session: Host, prompt: str | None, settings: Settings) -> None:
        self.session = session
        self.base = session._messages  # the history this turn extends
        self.messages = [] if prompt is None else [_prompt(session, prompt, settings)]
        self.request_settings = settings.request  # less a forced tool_choice after round 1
        self.toolset = settings.toolset
        #: call id -> where its tool came from ({"server", "tool"}), for calls to MCP tools
        self.sources: dict[str, dict[str, str]] = {}
        self.rounds = 0  # tool rounds run
        self.completion: Completion | None = None  # the model round's, once it has ended
        self.done: set[str] = set()  # calls of the round resumed that already have results
        self.awaiting: list[str] = []  # calls of this round that wait for approval
        self.started = False  # tool calls have started
        self.decided: dict[str, Any] = {}  # approve()/deny() decisions this turn used
        self.answers: list[str] = []  # each answer given for structured output
        self.output: Any = None  # the validated structured output
        self.discarded: set[str] = set()  # ids of failed answers and their corrections
        self.pending: list[str] = []  # text of the answer still streaming
        self.calls: list[ToolCallPart] = []  # tool calls of the round being run
        self.results: list[ToolResultPart] = []
        self.retries: dict[str, int] = {}  # tool name -> retries asked of the model
        self.usage = Usage()
        #: What this turn's requests spent (also in the session's ledger as they happen).
        self.spent: list[Spend] = []
        #: Why the next request is sent (see _ledger.REASONS).
        self.why = "resume" if prompt is None else session._reason
        self.saw_text = False
        self.thought = 0  # characters of reasoning shown by the request being answered
        self.retried = False  # the request's attempt so far broke off (billed), is sent again
        self.last: Completion | None = None
        self.committed = False
        self.ended = False
        self.prompt = prompt
        #: The model's context window (set when the turn begins), the last request's report
        #: and its counts (see _context.fit).
        self.window: Window | None = None
        self.report: ContextReport | None = None
        self.sized: Any = None
        #: What the server did to the last request in silence (cut it), for the answer's
        #: metadata (None: nothing).
        self.truncated: str | None = None

    def mark(self, decision: dict[str, Any]) -> None:
        """Record the context decision on the turn's first message (the next turn reads it)."""
        first = self.messages[0]
        self.messages[0] = first.model_copy(
            update={"metadata": {**first.metadata, "context": decision}}
        )

    def record(self, spend: Spend) -> None:
        """Put one request's spend in the turn's and the session's ledger, as it happens."""
        self.spent.append(spend)
        self.session._ledger.append(spend)
        _ledger.count(spend)

    def take(self, batch: list[Any]) -> list[Event]:
        """Take a batch of the provider's events: the ones to show (text, thinking)."""
        shown: list[Event] = []
        for event in batch:
            kind = type(event)
            if kind is TextDelta:
                self.pending.append(event.text)
                shown.append(event)
            elif kind is Completion:
                self.completion = event
            elif kind is ThinkingDelta:
                self.thought += len(event.text)
                shown.append(event)
            elif kind is Retried:
                self.retried = True
        return shown

    def finish(self, completion: Completion) -> None:
        self.saw_text = self.saw_text or bool(self.pending)
        self.pending = []
        self.usage = self.usage + completion.usage
        self.last = completion
        tokens, estimated = answer_tokens(completion.message, completion.usage)
        facts: dict[str, Any] = {
            "model": completion.model,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage.to_dict(),
            "tokens": tokens,
        }
        if estimated:
            facts["tokens_estimated"] = True
        if self.truncated:
            facts["context_truncated"] = self.truncated
            self.truncated = None
        routed = getattr(self.session.agent, "answer_facts", None)  # router.py
        if routed is not None:
            facts.update(routed())
        if completion.refusal:
            facts["refusal"] = completion.refusal
        spend = self.spent[-1] if self.spent else None
        if spend is not None and spend.message == completion.message.id and spend.cost is not None:
            facts["cost"] = str(spend.cost)
        source = completion.message
        parts = _unique_call_ids(tuple(_clean_part(p) for p in source.parts))
        sources = self._sources(parts)
        if sources:
            facts["tool_sources"] = sources
        self.messages.append(
            Message(
                role="assistant",
                parts=parts,
                metadata={**source.metadata, **facts},
                id=source.id,
            )
        )

    def _sources(self, parts: tuple[Any, ...]) -> dict[str, dict[str, str]]:
        """Which server and tool each call among `parts` is to, for tools from servers."""
        found = {}
        for call in (p for p in parts if isinstance(p, ToolCallPart)):
            tool = self.toolset.tools.get(call.name)
            if tool is not None and tool.source is not None:
                found[call.id] = dict(tool.source)
        self.sources = found
        return found

    def output_ok(self, output: OutputType, retries: int) -> bool:
        """Whether the answer validates; if not, tell the model, within `retries` tries.

        A failed answer and the correction stay out of history: it keeps the valid answer.
        """
        answer = self.messages[-1]
        self.answers.append(answer.text)
        if self.last is not None and self.last.refusal:
            return True  # response() says so
        try:
            self.output = output.parse(answer.text)
            return True
        except OutputValidationError as error:
            if len(self.answers) > retries:
                raise OutputValidationError(
                    f"{error} ({len(self.answers)} answers, each in error.attempts; allow "
                    "more with output_retries=...)",
                    text=answer.text,
                    attempts=tuple(self.answers),
                ) from None
            correction = Message.user(output.correction(error))
            self.messages.append(correction)
            self.discarded |= {answer.id, correction.id}
            self.why = "validation_retry"
            return False

    def retry(self, tool: Tool, problem: str) -> str:
        """Count one retry asked of the model for `tool`; past its budget, end the turn."""
        used = self.retries.get(tool.name, 0) + 1
        self.retries[tool.name] = used
        if used > tool.retries:
            raise ToolError(
                f"tool {tool.name!r}: the model's call failed {used} times in this turn "
                f"(last: {problem}); the turn was not saved. Allow more with "
                f"@tool(retries=...) (now {tool.retries})",
                tool=tool.name,
            )
        return problem

    def resume_round(self) -> None:
        """Take up the round that waits for approval: its calls, and the results it has."""
        history = self.base
        self.base = history[:-1]  # the waiting tool message is replaced when this turn ends
        self.calls = history[-2].tool_calls
        recorded = history[-2].metadata.get("tool_sources")
        self.sources = _thaw(recorded) if isinstance(recorded, dict) else {}
        self.results = list(history[-1].tool_results)
        self.done = {r.tool_call_id for r in self.results}

    def end_tool_round(self) -> None:
        results = self._in_call_order(self.results)
        if self.awaiting:
            metadata = {"awaiting_approval": list(self.awaiting)}
            self.messages.append(Message(role="tool", parts=tuple(results), metadata=metadata))
        else:
            self.messages.append(Message.tool(results))
        self.calls, self.results, self.done = [], [], set()
        self.why = "tool_round"

    def _in_call_order(self, results: list[ToolResultPart]) -> list[ToolResultPart]:
        order = {call.id: index for index, call in enumerate(self.calls)}
        return sorted(results, key=lambda r: order.get(r.tool_call_id, len(order)))

    def response(self, output: OutputType | None) -> Response:
        last = self.last
        messages = [m for m in self.messages if m.id not in self.discarded]
        said = [m for m in messages if m.role == "assistant"]
        text = said[-1].text if said else ""
        if output is not None and not self.awaiting and last is not None and last.refusal:
            raise OutputValidationError(f"the model refused: {last.refusal}", text=text)
        return Response(
            text=text,
            messages=tuple(messages),
            usage=self.usage,
            spent=tuple(self.spent),
            model=last.model if last else None,
            finish_reason=last.finish_reason if last else None,
            output=self.output,
            refusal=last.refusal if last else None,
            attempts=len(self.answers),
            pending_approvals=tuple(c for c in self._round_calls() if c.id in self.awaiting),
        )

    def _round_calls(self) -> list[ToolCallPart]:
        for message in reversed([*self.base, *self.messages]):
            if message.tool_calls:
                return message.tool_calls
        return []

    def commit(self, response: Response) -> None:
        self.session._commit(list(response.messages), response.usage, base=self.base)
        self.committed = True

    def end(self, unseen: Callable[[], int] | None, *, stopped: bool) -> None:
        """Once per turn: keep what was seen of a stopped turn, then free the session."""
        if self.ended:
            return
        self.ended = True
        session = self.session
        try:
            kept = []
            if stopped and not self.committed:
                kept = self.interrupted(unseen() if unseen is not None else 0)
                if kept:
                    session._commit(kept, self.usage, base=self.base)
                    session._autosave(quiet=True, wait=False)  # never blocks the loop
            if not (self.committed or kept):  # nothing happened: the decisions still hold
                session._decisions.update(self.decided)
                if self.spent:  # but what it spent is saved (in the session it spent for)
                    (session._payer or session)._autosave(quiet=True, wait=False)
        finally:
            session._turning = False

    def interrupted(self, unseen: int) -> list[Message]:
        """What to keep of a turn stopped midway: nothing unless text was seen or tools ran.

        `unseen`: how many of the last text deltas the reader never took. Once a tool call
        has started, the round is kept (an unfinished call with an "interrupted" result), so
        that the model learns of it and no call ever runs twice.
        """
        if unseen:
            del self.pending[len(self.pending) - unseen :]
        if not (self.saw_text or self.pending or self.started):
            return []
        kept = [m for m in self.messages if m.id not in self.discarded]
        if self.calls:  # every tool call gets exactly one result
            done = {r.tool_call_id for r in self.results}
            missing = [
                ToolResultPart(tool_call_id=c.id, name=c.name, content=_INTERRUPTED, is_error=True)
                for c in self.calls
                if c.id not in done
            ]
            kept.append(
                Message(
                    role="tool",
                    parts=tuple(self._in_call_order([*self.results, *missing])),
                    metadata={"interrupted": True},
                )
            )
        if self.pending:
            kept.append(Message.assistant(clean_text("".join(self.pending)), interrupted=True))
        last = kept[-1]
        if not last.metadata.get("interrupted"):  # stopped between rounds
            kept[-1] = last.model_copy(update={"metadata": {**last.metadata, "interrupted": True}})
        return kept


def _clean_part(part: Any) -> Any:
    """A part of the model's answer with its text as history keeps it (see clean_text)."""
    if isinstance(part, TextPart | ThinkingPart) and clean_text(part.text) != part.text:
        return part.model_copy(update={"text": clean_text(part.text)})
    if isinstance(part, ToolCallPart):
        arguments = part.arguments_json()
        if clean_json(arguments) != arguments:  # built anew: the arguments are frozen then
            return ToolCallPart(
                id=part.id,
                name=part.name,
                arguments=clean_json(arguments),
                invalid_arguments=part.invalid_arguments,
            )
    return part


def _unique_call_ids(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """`parts` with every tool call's id unique (servers repeat ids: each call runs once)."""
    seen: set[str] = set()
    out = []
    for part in parts:
        if isinstance(part, ToolCallPart):
            new_id, number = part.id, 1
            while new_id in seen:
                number += 1
                new_id = f"{part.id}_{number}"
            seen.add(new_id)
            if new_id != part.id:
                part = part.model_copy(update={"id": new_id})
        out.append(part)
    return tuple(out)
