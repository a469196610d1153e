"""The turn loop: ask the provider, stream its answer, run the tools it calls, repeat.

A turn is built aside (`_Turn`) and committed to the session only once it completes; a turn
stopped midway keeps what its reader saw (see `_Turn.interrupted`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from ._images import image_parts
from ._output import OutputPlan
from .errors import (
    ApprovalPendingError,
    ImageError,
    OutputValidationError,
    ProviderError,
    StreamError,
    ToolError,
)
from .events import (
    Completion,
    Done,
    Event,
    Response,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from .messages import (
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    _count,
    clean_json,
    clean_text,
)
from .providers.base import Request
from .tools import (
    ArgumentError,
    ModelRetry,
    Tool,
    Toolset,
    ToolThreads,
    format_validation_error,
)

if TYPE_CHECKING:
    import threading

    from ._output import OutputType
    from .providers.base import Provider

_INTERRUPTED = "interrupted before the tool finished"
_NOT_A_BATCH = (
    "{0!r}.complete() must yield lists of events (one list per piece of the answer), got {1!r}"
)


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
    max_tool_rounds: int
    max_concurrency: int
    _toolset: Toolset
    _tool_threads: ToolThreads


class Host(Protocol):
    """What a turn needs of the session it runs in (session.Session is the one there is).

    The turn and the session own the history together: the turn holds `_lock` while it
    runs, reads `_messages` and `_decisions`, and commits through `_commit`.
    """

    agent: AgentConfig
    session_id: str
    system: str | None
    _lock: threading.Lock
    _messages: list[Message]
    _decisions: dict[str, tuple[bool, str | None, ToolCallPart]]

    @property
    def pending_approvals(self) -> list[ToolCallPart]: ...

    @property
    def _toolset(self) -> Toolset: ...

    def _busy(self) -> Exception: ...

    def _commit(
        self, messages: list[Message], usage: Usage, base: list[Message] | None = None
    ) -> None: ...

    def _autosave(self, *, quiet: bool = False, wait: bool = True) -> None: ...

    async def _autosave_async(self, response: Response) -> None: ...


class Reader(Protocol):
    """The reading side of a streamed turn, as the turn sees it.

    A reader that reads ahead of its consumer (the sync stream) also has `caught_up()`,
    awaited before the answer is finished and before tools run.
    """

    turn: _Turn | None

    def unseen(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class Settings:
    """A turn's settings, checked once before anything is sent."""

    model: str
    toolset: Toolset
    #: Asked before a requires_approval tool runs (None: such calls wait for a decision).
    approve: Callable[..., Any] | None
    #: What the provider is sent as settings (temperature, max_tokens, tool_choice, ...).
    request: dict[str, Any]
    images: tuple[ImagePart, ...] = ()
    output: OutputType | None = None
    #: How structured output is asked for (None: plain text).
    plan: OutputPlan | None = None
    output_retries: int = 1
    #: A tool_choice that forces a call holds for the first round only, unless this is set.
    repeat_tool_choice: bool = False


def settings_for(
    session: Host, prompt: str | None, given: dict[str, Any], output: OutputType | None
) -> Settings:
    """The turn's Settings from the call's `given` settings over the agent's defaults.

    `given` may hold `tools` (this call's tools instead of the session's), `approve` (the
    approval callback), `images` (sent with the prompt, see _images.image_parts), `model`,
    `output_mode`, `output_retries` and `repeat_tool_choice`; the rest goes to the provider.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"the prompt must be a str, got {type(prompt).__name__}")
    agent = session.agent
    given = dict(given)
    images = image_parts(given.pop("images", None))
    if images and prompt is None:
        raise TypeError("images= goes with a prompt; a resumed turn sends none")
    request = {**agent.defaults, **given}
    tools = request.pop("tools", None)
    approve = request.pop("approve", None) or agent.approve
    if approve is not None and not callable(approve):
        raise TypeError(f"approve= takes a function of the tool call, got {approve!r}")
    model = request.pop("model", None) or agent.model
    output_mode = request.pop("output_mode", "auto")
    repeat = bool(request.pop("repeat_tool_choice", False))
    retries = request.pop("output_retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise TypeError(f"output_retries must be an int >= 0, got {retries!r}")
    return Settings(
        model=model,
        toolset=session._toolset if tools is None else _call_tools(tools),
        approve=approve,
        request=request,
        images=images,
        output=output,
        plan=None if output is None else OutputPlan(output, output_mode, agent.provider, model),
        output_retries=retries,
        repeat_tool_choice=repeat,
    )


async def turn(
    session: Host,
    prompt: str | None,
    settings: dict[str, Any],
    output: OutputType | None,
    *,
    stream: bool,
    reader: Reader | None = None,
) -> AsyncGenerator[list[Event], None]:
    """One turn: settings, then model rounds and tool rounds until the answer, then finish;
    only a finished turn is committed.

    Events come in lists, one per piece of the answer that arrived. `reader` is the stream's
    side: what it has taken decides what a stopped turn keeps, and before the answer is
    finished and before tools run, the turn waits until the reader has taken every event so
    far (so nothing it did not see is kept, and no tool it did not see called runs).
    With `prompt` None, the turn resumes the round that waits for approvals: it runs the
    decided calls, then asks the model again.
    """
    checked = settings_for(session, prompt, settings, output)
    state = _begin(session, prompt, checked)
    caught_up = None
    if reader is not None:
        reader.turn = state
        caught_up = getattr(reader, "caught_up", None)
    stopped = False
    try:
        await _check_images(session.agent.provider, checked.model, state)
        if prompt is None:  # finish the round that waited
            state.resume_round()
            async with aclosing(_tool_round(state, checked, caught_up)) as round_:
                async for events in round_:  # closed with the turn: finished calls are kept
                    yield events
        while not state.awaiting:
            async with aclosing(_model_round(state, checked, stream)) as answer:
                async for events in answer:
                    yield events
            if caught_up is not None:
                await caught_up()
            calls = _answered(state, checked)
            if calls is None:
                break
            if not calls:
                continue  # the model was told what is wrong with its structured answer
            yield [ToolCall(c.id, c.name, c.arguments_json()) for c in calls]
            if caught_up is not None:
                await caught_up()
            async with aclosing(_tool_round(state, checked, caught_up)) as round_:
                async for events in round_:
                    yield events
        response = await _finish(state, checked)
    except Exception:
        # Nothing of a failed turn reaches history, but for a resume whose approved calls
        # ran: their round is kept, or they would wait (and run) again.
        stopped = prompt is None and state.started
        raise
    except BaseException:  # cancelled, closed early, interrupted
        stopped = True
        raise
    finally:
        state.end(reader.unseen if reader is not None else None, stopped=stopped)
    yield [Done(response)]


def _begin(session: Host, prompt: str | None, settings: Settings) -> _Turn:
    """The turn, once it holds the session: one turn at a time, none past waiting calls."""
    if not session._lock.acquire(blocking=False):
        raise session._busy()
    try:
        waiting = session.pending_approvals
        if prompt is not None and waiting:
            raise ApprovalPendingError(_waiting_text(session, waiting))
        if prompt is not None:
            session._decisions.clear()  # none can be for a call of this new turn
        if prompt is None and not waiting:
            raise ApprovalPendingError(
                f"session {session.session_id!r} has no tool calls waiting for approval: "
                "there is nothing to resume"
            )
        return _Turn(session, prompt, settings)
    except BaseException:
        session._lock.release()
        raise


async def _model_round(
    state: _Turn, settings: Settings, stream: bool
) -> AsyncIterator[list[Event]]:
    """One request and its streamed answer, shown as it comes; its Completion is left in
    `state.completion`. Asked again in the other output mode if the first fails unshown."""
    provider = state.session.agent.provider
    while True:
        request = _request(state, settings, stream)
        state.completion = None
        shown_any = False
        try:
            async with aclosing(provider.complete(request)) as batches:
                async for batch in batches:
                    if type(batch) is not list:
                        raise TypeError(_NOT_A_BATCH.format(provider, batch))
                    shown = state.take(batch)
                    if shown:
                        shown_any = True
                        yield shown
        except ProviderError as error:
            plan = settings.plan
            if not shown_any and plan is not None and plan.fallback(error):
                continue  # the same request, asked in the other mode
            raise
        if state.completion is None:
            raise StreamError(
                "the provider's stream ended without a final message", provider=provider.name
            )
        return


def _request(state: _Turn, settings: Settings, stream: bool) -> Request:
    system, schemas = state.session.system, settings.toolset.schemas
    tools, schema, choice = schemas, None, None
    if settings.plan is not None:
        system, tools, schema, choice = settings.plan.shape(system, schemas)
    return Request(
        model=settings.model,
        messages=state.base + state.messages,
        system=system,
        tools=tools,
        output=schema,
        settings=state.request_settings,
        stream=stream,
        tool_choice=choice,
    )


def _answered(state: _Turn, settings: Settings) -> list[ToolCallPart] | None:
    """Take the round's answer: the tool calls to run next, [] to ask again (a structured
    answer that failed validation), None when the turn has its answer."""
    assert state.completion is not None
    state.finish(state.completion)
    if settings.plan is not None:
        state.messages[-1] = settings.plan.answer(state.messages[-1])
    calls = state.messages[-1].tool_calls
    if not calls:
        output = settings.output
        return None if output is None or state.output_ok(output, settings.output_retries) else []
    limit = state.session.agent.max_tool_rounds
    if state.rounds == limit:
        raise ToolError(
            f"the model kept calling tools for {limit} rounds; "
            "raise Agent(max_tool_rounds=...) if that is expected"
        )
    state.rounds += 1
    forced = state.request_settings.get("tool_choice") not in (None, "auto", "none")
    if forced and not settings.repeat_tool_choice:
        state.request_settings = {
            k: v for k, v in state.request_settings.items() if k != "tool_choice"
        }
    state.calls = calls
    return calls


async def _tool_round(
    state: _Turn, settings: Settings, caught_up: Callable[[], Any] | None
) -> AsyncIterator[list[Event]]:
    """Decide and run the round's calls, then close the round with their results."""
    async with aclosing(_decided_calls(state, settings, caught_up)) as calls:
        async for events in calls:
            yield events
    state.end_tool_round()


async def _finish(state: _Turn, settings: Settings) -> Response:
    """The finished turn: its Response, committed to history and saved."""
    response = state.response(settings.output)
    if settings.plan is not None:
        settings.plan.worked()
    state.commit(response)
    await state.session._autosave_async(response)
    return response


async def final(batches: AsyncGenerator[list[Event], None]) -> Response:
    """The Response of a turn run to its end without a reader."""
    async with aclosing(batches):
        async for batch in batches:
            if type(batch[-1]) is Done:
                return batch[-1].response
    raise AssertionError("a turn ended without a Done event")  # pragma: no cover


def _waiting_text(session: Host, waiting: list[ToolCallPart]) -> str:
    calls = ", ".join(f"{c.id!r} ({c.name})" for c in waiting)
    return (
        f"session {session.session_id!r} has tool calls waiting for approval: {calls}; "
        "decide with session.approve(id) or session.deny(id, reason), then session.resume()"
    )


def _call_tools(tools: Any) -> Toolset:
    if isinstance(tools, Toolset):
        return tools
    if isinstance(tools, str | bytes) or not isinstance(tools, Iterable):
        raise TypeError(
            f"tools= takes a list of tools (functions or @tool), or [] for none; got {tools!r}"
        )
    return Toolset(tools)


# -- tools ----------------------------------------------------------------------------------


async def _decided_calls(
    state: _Turn, settings: Settings, caught_up: Callable[[], Any] | None
) -> AsyncIterator[list[Event]]:
    """Decide the round's calls that need approval, then run the approved and the rest.

    A call with no decision and no callback to ask waits: `state.awaiting` says which.
    """
    toolset, approve = settings.toolset, settings.approve
    decisions = state.session._decisions
    runnable = []
    for call in state.calls:
        if call.id in state.done:
            continue
        tool = toolset.tools.get(call.name)
        if tool is None or not tool.requires_approval:
            runnable.append(call)
            continue
        decision: tuple[bool, str | None] | None = None
        made = decisions.pop(call.id, None)
        if made is not None and made[2] == call:  # only for the very call it was made on
            state.decided[call.id] = made
            decision = made[0], made[1]
        if decision is None and approve is not None:
            decision = await _ask(approve, call)
        if decision is None:
            state.awaiting.append(call.id)
        elif decision[0]:
            runnable.append(call)
        else:
            result = _denied(call, decision[1])
            state.results.append(result)
            state.started = True  # acted on: a stop keeps it
            yield [_result_event(result)]
    if runnable and caught_up is not None:
        await caught_up()
    if runnable:
        state.started = True  # from here a stop keeps the round: no call may run twice
    limit = state.session.agent.max_concurrency
    async with aclosing(_run_calls(runnable, toolset, state, limit)) as results:
        async for result in results:
            yield [_result_event(result)]


async def _ask(approve: Callable[..., Any], call: ToolCallPart) -> tuple[bool, str | None]:
    """The approval callback's decision on `call`: (approved, reason)."""
    event = ToolCall(call.id, call.name, call.arguments_json())
    if inspect.iscoroutinefunction(approve):
        answer = await approve(event)
    else:
        answer = await asyncio.to_thread(approve, event)
        if inspect.isawaitable(answer):
            answer = await answer
    return decision(answer)


def decision(answer: Any) -> tuple[bool, str | None]:
    """(approved, reason) from True / False or (False, "reason")."""
    if isinstance(answer, bool):
        return answer, None
    if (
        isinstance(answer, tuple)
        and len(answer) == 2
        and isinstance(answer[0], bool)
        and (answer[1] is None or isinstance(answer[1], str))
    ):
        return answer[0], answer[1]
    raise TypeError(
        f"an approval callback returns True, False or (False, 'reason'); got {answer!r}"
    )


def _denied(call: ToolCallPart, reason: str | None) -> ToolResultPart:
    said = f": {reason}" if reason else ""
    return _error(call, f"The user did not approve this call{said}.")


def _result_event(result: ToolResultPart) -> ToolResult:
    return ToolResult(result.tool_call_id, result.name, result.content, result.is_error)


async def _run_calls(
    calls: list[ToolCallPart], toolset: Toolset, state: _Turn, max_concurrency: int
) -> AsyncIterator[ToolResultPart]:
    """Run a round's calls, concurrently but for `sequential` tools; yield results as they end.

    Calls run in groups, in the model's order: each `sequential` call alone, the calls
    between them together (at most `max_concurrency` at once). A stopped round cancels what
    is still running (a sync tool's thread runs on; its result is dropped).
    """
    limit = asyncio.Semaphore(max(1, max_concurrency))

    async def one(call: ToolCallPart) -> ToolResultPart:
        async with limit:
            return await _call(call, toolset, state)

    for group in _groups(calls, toolset):
        running = {asyncio.ensure_future(one(call)): call for call in group}
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: calls.index(running[t])):
                    del running[task]
                    result = task.result()
                    state.results.append(result)
                    yield result
        finally:
            for task in running:  # stopped: a call that did finish keeps its real result
                if task.done() and not task.cancelled() and task.exception() is None:
                    state.results.append(task.result())
                else:
                    task.cancel()
            if running:
                await asyncio.wait(running)


def _groups(calls: list[ToolCallPart], toolset: Toolset) -> list[list[ToolCallPart]]:
    groups: list[list[ToolCallPart]] = [[]]
    for call in calls:
        tool = toolset.tools.get(call.name)
        if tool is not None and tool.sequential:
            groups += [[call], []]
        else:
            groups[-1].append(call)
    return [group for group in groups if group]


async def _call(call: ToolCallPart, toolset: Toolset, state: _Turn) -> ToolResultPart:
    """One call's result; what went wrong goes back to the model unless it must end the turn."""
    tool = toolset.tools.get(call.name)
    if tool is None:
        known = ", ".join(toolset.tools) or "none"
        return _error(call, f"There is no tool named {call.name!r}. Available tools: {known}.")
    if call.invalid_arguments is not None:
        raw = call.invalid_arguments
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        problem = f"Invalid arguments: they must be a JSON object, got {shown!r}"
        return _error(call, state.retry(tool, problem))
    try:
        content = await tool.invoke(
            call.arguments_json(), threads=state.session.agent._tool_threads
        )
    except pydantic.ValidationError as exc:
        return _error(call, state.retry(tool, f"Invalid arguments: {format_validation_error(exc)}"))
    except ArgumentError as exc:
        return _error(call, state.retry(tool, f"Invalid arguments: {exc}"))
    except ModelRetry as exc:
        return _error(call, state.retry(tool, str(exc) or "Try again."))
    except Exception as exc:
        if tool.on_error == "raise":
            raise ToolError(
                f"tool {call.name!r} raised {type(exc).__name__}: {exc}; the turn was not saved",
                tool=call.name,
            ) from exc
        return _error(call, f"The tool raised {type(exc).__name__}: {exc}")
    return ToolResultPart(tool_call_id=call.id, name=call.name, content=clean_text(content))


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


def _error(call: ToolCallPart, content: str) -> ToolResultPart:
    return ToolResultPart(
        tool_call_id=call.id, name=call.name, content=clean_text(content), is_error=True
    )


# -- the turn being built ---------------------------------------------------------------------


async def _check_images(provider: Any, model: str, state: _Turn) -> None:
    """ImageError, before anything is sent, if the turn would send images to a model that
    takes none (as far as the provider knows)."""
    new = sum(len(m.images) for m in state.messages)
    old = sum(len(m.images) for m in state.base)
    if not (new or old) or await provider.takes_images(model) is not False:
        return
    sent = f"{_count(new, 'image')} with this prompt" if new else ""
    held = f"{_count(old, 'image')} in the session's history" if old else ""
    raise ImageError(
        f"model {model!r} of provider {provider.name!r} takes no images, and the request "
        f"would send {' and '.join(filter(None, (sent, held)))}: choose a model that takes "
        "images (model=...), or leave them out; nothing was sent"
    )


class _Turn:
    """The messages of a turn being built, kept aside until the turn completes."""

    def __init__(self, session: Host, prompt: str | None, settings: Settings) -> None:
        self.session = session
        self.base = session._messages  # the history this turn extends
        self.messages = (
            []
            if prompt is None
            else [Message(role="user", parts=(*settings.images, TextPart(text=clean_text(prompt))))]
        )
        self.request_settings = settings.request  # less a forced tool_choice after round 1
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
        self.saw_text = False
        self.last: Completion | None = None
        self.committed = False
        self.ended = False

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
                shown.append(event)
        return shown

    def finish(self, completion: Completion) -> None:
        self.saw_text = self.saw_text or bool(self.pending)
        self.pending = []
        self.usage = self.usage + completion.usage
        self.last = completion
        facts: dict[str, Any] = {
            "model": completion.model,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage.to_dict(),
        }
        if completion.refusal:
            facts["refusal"] = completion.refusal
        source = completion.message
        self.messages.append(
            Message(
                role="assistant",
                parts=_unique_call_ids(tuple(_clean_part(p) for p in source.parts)),
                metadata={**source.metadata, **facts},
                id=source.id,
            )
        )

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
        finally:
            session._lock.release()

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
