"""A tool round's calls: decided (approvals), then run, concurrently where allowed."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import pydantic

from ._turn import Settings, TurnState
from .errors import (
    ToolError,
)
from .events import (
    Event,
    ToolCall,
    ToolResult,
)
from .messages import (
    ToolCallPart,
    ToolResultPart,
    clean_text,
    tool_server,
)
from .tools import (
    ArgumentError,
    ModelRetry,
    Tool,
    ToolResultError,
    Toolset,
    format_validation_error,
)

if TYPE_CHECKING:
    pass


async def decided_calls(
    state: TurnState, settings: Settings, caught_up: Callable[[], Any] | None
) -> AsyncIterator[list[Event]]:
    """Decide the round's calls that need approval, then run the approved and the rest.

    A call with no decision and no callback to ask waits: `state.awaiting` says which.
    """
    toolset, approve = settings.toolset, settings.approve
    decisions = state.session._decisions
    allowed = state.session._allowed_tools
    runnable = []
    for call in state.calls:
        if call.id in state.done:
            continue
        tool = toolset.tools.get(call.name)
        decision: tuple[bool, str | None] | None = None
        made = decisions.pop(call.id, None)
        if made is not None and made[2] == call:  # only for the very call it was made on
            state.decided[call.id] = made
            decision = made[0], made[1]
        if decision is None or decision[0]:  # a denial holds whatever the name is now
            _check_source(call, tool, state)
        if decision is not None and decision[0] and call.id in state.session._always:
            state.session._always.discard(call.id)
            if tool is not None:  # the tool it runs on (checked): never a record's word
                allowed.add(tool.allowance)
        free = tool is None or not tool.requires_approval or tool.allowance in allowed
        if free and (decision is None or decision[0]):
            runnable.append(call)  # a denial holds even for a tool no longer there
            continue
        if decision is None and approve is not None:
            decision = await _ask(approve, call_event(call, state))
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


def call_event(call: ToolCallPart, state: TurnState) -> ToolCall:
    """The `tool_call` event of `call` (with its MCP server's name, if it is to one)."""
    server = tool_server(state.sources, call.id)
    return ToolCall(call.id, call.name, call.arguments_json(), server)


async def _ask(approve: Callable[..., Any], event: ToolCall) -> tuple[bool, str | None]:
    """The approval callback's decision on the call of `event`: (approved, reason)."""
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
    calls: list[ToolCallPart], toolset: Toolset, state: TurnState, max_concurrency: int
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


async def _call(call: ToolCallPart, toolset: Toolset, state: TurnState) -> ToolResultPart:
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
    except ToolResultError as exc:  # the tool's own answer is an error: the model sees it
        return _error(call, str(exc))
    except Exception as exc:
        if isinstance(exc, ToolError) and tool.source is not None:
            raise  # its MCP server died mid-call: the turn cannot go on (a user's tool that
            # raises ToolError is any other error: the model sees it, as it always did)
        if tool.on_error == "raise":
            raise ToolError(
                f"tool {call.name!r} raised {type(exc).__name__}: {exc}; the turn was not saved",
                tool=call.name,
            ) from exc
        return _error(call, f"The tool raised {type(exc).__name__}: {exc}")
    images = getattr(content, "images", ())
    return ToolResultPart(
        tool_call_id=call.id, name=call.name, content=clean_text(str(content)), images=images
    )


def _check_source(call: ToolCallPart, tool: Tool | None, state: TurnState) -> None:
    """ToolError unless `call` goes to the tool it was made to: a waiting call resumed may
    find its server gone, or its name taken since by another server's tool (or one's own).
    An approval is for the tool the call was shown with, never for what answers to its name."""
    source = state.sources.get(call.id) or None
    now = None if tool is None else tool.source
    if now == source or (tool is None and source is None):
        return
    made = _described(source)
    if tool is None:
        server = source.get("server") if source else None
        raise ToolError(
            f"tool call {call.id!r} is to {made}, which this session does not have now; give "
            f"it the server (tools=[MCP.stdio(..., name={server!r})] or MCP.http(...)), then "
            "run the turn again. Nothing was run",
            tool=call.name,
        )
    raise ToolError(
        f"tool call {call.id!r} was made to {made}, but the name {call.name!r} is now "
        f"{_described(now)}; the call was not run (an approval is for the tool it was made "
        "to). Deny it, or give the session that server as it was, then run the turn again",
        tool=call.name,
    )


def _described(source: Any) -> str:
    if not source:
        return "a tool of the session's own"
    return f"tool {source.get('tool')!r} of MCP server {source.get('server')!r}"


def _error(call: ToolCallPart, content: str) -> ToolResultPart:
    return ToolResultPart(
        tool_call_id=call.id, name=call.name, content=clean_text(content), is_error=True
    )
