"""The turn loop: ask the provider, stream its answer, run the tools it calls, repeat.

A turn is built aside (`TurnState`) and committed to the session only once it completes; a turn
stopped midway keeps what its reader saw (see `TurnState.interrupted`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

from . import _context, _spending
from ._calls import call_event, decided_calls
from ._images import image_parts
from ._ledger import budget
from ._output import OutputPlan
from ._turn import Host, Settings, TurnState, check_deadline, check_option_names, own_options
from .errors import (
    APITimeoutError,
    ApprovalPendingError,
    ContextWindowError,
    ImageError,
    ProviderError,
    StreamError,
    ToolError,
)
from .events import (
    Done,
    Event,
    Response,
)
from .messages import (
    Message,
    ToolCallPart,
    _count,
)
from .providers.base import Request
from .tools import (
    Toolset,
)

if TYPE_CHECKING:
    from ._output import OutputType

_log = logging.getLogger("agent_nb")
_NOT_A_BATCH = (
    "{0!r}.complete() must yield lists of events (one list per piece of the answer), got {1!r}"
)


class Reader(Protocol):
    """The reading side of a streamed turn, as the turn sees it.

    A reader that reads ahead of its consumer (the sync stream) also has `caught_up()`,
    awaited before the answer is finished and before tools run.
    """

    turn: TurnState | None

    def unseen(self) -> int: ...


def settings_for(
    session: Host, prompt: str | None, given: dict[str, Any], output: OutputType | None
) -> Settings:
    """The turn's Settings from the call's `given` settings over the agent's defaults.

    `given` may hold `tools` (this call's tools instead of the session's), `approve` (the
    approval callback), `images` (sent with the prompt, see _images.image_parts), `model`,
    `output_mode`, `output_retries`, `repeat_tool_choice`, `max_cost` (this call's budget),
    `prompt_cache` and `deadline`; the rest goes to the provider, unless its name looks like a
    typo of one of these (ConfigurationError).
    """
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"the prompt must be a str, got {type(prompt).__name__}")
    agent = session.agent
    options = own_options(type(getattr(agent, "agent", agent)))  # a route: its candidate's
    check_option_names(given, options, "this call")
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
    max_cost = budget(request.pop("max_cost", None), "max_cost=")
    prompt_cache = bool(request.pop("prompt_cache", agent.prompt_cache))
    retries = request.pop("output_retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise TypeError(f"output_retries must be an int >= 0, got {retries!r}")
    deadline = check_deadline(request.pop("deadline")) if "deadline" in request else agent.deadline
    if "context" in request:
        context = _context.policy(request.pop("context"), "this call's")
    else:
        own = session.context_policy
        context = agent.context if own is None else own
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
        max_cost=max_cost,
        prompt_cache=prompt_cache,
        deadline=deadline,
        context=context,
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
    """One turn (see `_attempt`); in a routed session (router.py), asked again of the next
    candidate if it failed on its own before showing anything (a prompt's turn only: never
    once its output, its tool loop or a validation retry began, nor a resume)."""
    route = getattr(session.agent, "fallback", None) and session.agent
    if route is None:
        async with aclosing(_attempt(session, prompt, settings, output, stream, reader)) as one:
            async for events in one:
                yield events
        return
    if prompt is not None:
        route.before_turn(prompt)
    tried: set[int] = set()
    why = None
    try:
        while True:
            started, shown = time.monotonic(), False
            try:
                attempt = _attempt(session, prompt, settings, output, stream, reader, why)
                async with aclosing(attempt) as one:
                    async for events in one:
                        if not shown:
                            route.timed(time.monotonic() - started)
                            shown = True
                        yield events
                return
            except (ProviderError, ImageError) as error:
                if shown or prompt is None or not route.fallback(error, tried):
                    raise
                why = "fallback"
    finally:
        route.settle()  # the switch kept in history, or left for the next answer


async def _attempt(
    session: Host,
    prompt: str | None,
    settings: dict[str, Any],
    output: OutputType | None,
    stream: bool,
    reader: Reader | None,
    why: str | None = None,
) -> AsyncGenerator[list[Event], None]:
    """One turn: settings, then model rounds and tool rounds until the answer, then finish;
    only a finished turn is committed. `why`: why its first request is sent, if not the
    session's usual reason (a fallback).

    Events come in lists, one per piece of the answer that arrived. `reader` is the stream's
    side: what it has taken decides what a stopped turn keeps, and before the answer is
    finished and before tools run, the turn waits until the reader has taken every event so
    far (so nothing it did not see is kept, and no tool it did not see called runs).
    With `prompt` None, the turn resumes the round that waits for approvals: it runs the
    decided calls, then asks the model again.
    """
    checked = settings_for(session, prompt, settings, output)
    if checked.toolset.sources:  # MCP servers: their tools, listed (started) for this turn
        checked = dataclasses.replace(checked, toolset=await checked.toolset.resolved())
    state = _begin(session, prompt, checked)
    if why is not None:
        state.why = why
    within = _clock(checked.deadline, session.agent.provider.name)
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
                async for events in within(round_):  # closed with the turn: calls are kept
                    yield events
        while not state.awaiting:
            async with aclosing(_model_round(state, checked, stream)) as answer:
                async for events in within(answer):
                    yield events
            if caught_up is not None:
                await caught_up()
            calls = _answered(state, checked)
            if calls is None:
                break
            if not calls:
                continue  # the model was told what is wrong with its structured answer
            yield [call_event(c, state) for c in calls]
            if caught_up is not None:
                await caught_up()
            async with aclosing(_tool_round(state, checked, caught_up)) as round_:
                async for events in within(round_):
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


def _clock(
    deadline: float | None, provider: str
) -> Callable[[AsyncIterator[list[Event]]], AsyncIterator[list[Event]]]:
    """What a turn's rounds are read through: as they are, or, with a `deadline`, each
    wait for their next events cut off at the turn's end time (APITimeoutError)."""
    if deadline is None:
        return lambda source: source
    ends = asyncio.get_running_loop().time() + deadline

    async def within(source: AsyncIterator[list[Event]]) -> AsyncIterator[list[Event]]:
        while True:
            timer = asyncio.timeout_at(ends)
            try:
                async with timer:
                    events = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not timer.expired():
                    raise
                raise APITimeoutError(
                    f"the turn passed its deadline of {deadline:g} s; nothing of it was "
                    "saved. Allow more with deadline=... (on Agent or on the call), or None "
                    "for no limit",
                    provider=provider,
                ) from None
            yield events

    return within


def _begin(session: Host, prompt: str | None, settings: Settings) -> TurnState:
    """The turn, once it holds the session: one turn at a time, none past waiting calls."""
    taken = False
    try:
        with session._lock:
            session._idle()
            session._turning = True
            taken = True  # no call between the two stores: a Ctrl-C cannot split them
        waiting = session.pending_approvals
        if prompt is not None and waiting:
            raise ApprovalPendingError(_waiting_text(session, waiting))
        if prompt is not None:
            session._decisions.clear()  # none can be for a call of this new turn
            session._always.clear()
        if prompt is None and not waiting:
            raise ApprovalPendingError(
                f"session {session.session_id!r} has no tool calls waiting for approval: "
                "there is nothing to resume"
            )
        return TurnState(session, prompt, settings)
    except BaseException:
        if taken:
            session._turning = False
        raise


async def _model_round(
    state: TurnState, settings: Settings, stream: bool
) -> AsyncIterator[list[Event]]:
    """One request and its streamed answer, shown as it comes; its Completion is left in
    `state.completion`. Asked again in the other output mode if the first fails unshown."""
    provider = state.session.agent.provider
    while True:
        request = await _context.fit(state, settings, _request(state, settings, stream))
        _spending.check(state, settings, request)
        state.completion = None
        shown = began = False
        try:
            async with aclosing(provider.complete(request)) as batches:
                async for batch in batches:
                    if type(batch) is not list:
                        raise TypeError(_NOT_A_BATCH.format(provider, batch))
                    taken = state.take(batch)
                    if state.retried:  # an attempt that had begun broke off: it was paid
                        state.retried = 0
                        _spending.cut_short(state, settings, request, True)
                        began = False  # (the provider asks again)
                        continue
                    began = True  # the server answers: the request is paid for
                    if taken:
                        shown = True
                        yield taken
        except ProviderError as error:
            plan = settings.plan
            if not shown and plan is not None and plan.fallback(error):
                state.why = "output_fallback"
                continue  # the same request, asked in the other mode
            _spending.cut_short(state, settings, request, began)
            raise
        except BaseException:  # stopped: what was streamed was paid for
            _spending.cut_short(state, settings, request, began)
            raise
        if state.completion is None:
            _spending.cut_short(state, settings, request, began)
            raise StreamError(
                "the provider's stream ended without a final message", provider=provider.name
            )
        _spending.answered(state, settings, state.completion)
        _check_truncation(state, settings, request)
        return


def _check_truncation(state: TurnState, settings: Settings, request: Request) -> None:
    """What the server's report says of the request it answered: its counts for the next
    requests, and whether it cut the request in silence (an error under context='error',
    else a warning in the answer's metadata)."""
    assert state.completion is not None
    problem = _context.answered(state, request, state.completion)
    if problem is None:
        return
    provider = state.session.agent.provider.name
    if settings.context == "error":
        raise ContextWindowError(
            f"session {state.session.session_id!r}: {problem}. Nothing of this turn was saved "
            f"(what it spent is in session.spend()). {_context.CUT_ADVICE}",
            window=state.window.tokens if state.window else None,
            needed=state.report.used + state.report.reserved if state.report else None,
            provider=provider,
        )
    _log.warning("agent_nb: session %r: %s", state.session.session_id, problem)
    state.truncated = problem


def _request(state: TurnState, settings: Settings, stream: bool) -> Request:
    return request_of(
        state.session, settings, state.base + state.messages, state.request_settings, stream
    )


def request_of(
    session: Host,
    settings: Settings,
    messages: list[Message],
    request_settings: dict[str, Any] | None = None,
    stream: bool = True,
) -> Request:
    """The request a turn of `session` sends with `messages`, before its context policy."""
    portable = getattr(session.agent, "portable", None)  # a routed session's candidate
    if portable is not None:
        messages = portable(messages)
    system, schemas = session.system, settings.toolset.schemas
    tools, schema, choice = schemas, None, None
    if settings.plan is not None:
        system, tools, schema, choice = settings.plan.shape(system, schemas)
    return Request(
        model=settings.model,
        messages=messages,
        system=system,
        tools=tools,
        output=schema,
        settings=settings.request if request_settings is None else request_settings,
        stream=stream,
        tool_choice=choice,
        cache=settings.prompt_cache,
    )


def _answered(state: TurnState, settings: Settings) -> list[ToolCallPart] | None:
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
    state: TurnState, settings: Settings, caught_up: Callable[[], Any] | None
) -> AsyncIterator[list[Event]]:
    """Decide and run the round's calls, then close the round with their results."""
    async with aclosing(decided_calls(state, settings, caught_up)) as calls:
        async for events in calls:
            yield events
    state.end_tool_round()


async def _finish(state: TurnState, settings: Settings) -> Response:
    """The finished turn: its Response, committed to history and saved."""
    response = state.response(settings.output)
    if settings.plan is not None:
        settings.plan.worked()
    state.commit(response)
    if state.report is not None:
        session = state.session
        session._context = (state.report, _context.history_mark(session._messages))
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


async def _check_images(provider: Any, model: str, state: TurnState) -> None:
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
