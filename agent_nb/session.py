"""Session: a conversation's history and the turn loop that extends it; Response."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydantic

from . import _runner
from ._output import OutputType
from .errors import (
    InvalidSessionData,
    OutputValidationError,
    SessionBusyError,
    StoreError,
    StreamError,
    ToolError,
)
from .events import (
    Completion,
    Done,
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from .messages import Message, ToolCallPart, ToolResultPart
from .providers.base import Request
from .tools import format_validation_error

if TYPE_CHECKING:
    from .agent import Agent
    from .stores.base import SessionStore

_log = logging.getLogger("agent_nb")

__all__ = ["AsyncStream", "Response", "Session", "Stream"]

#: The version of `Session.to_dict()`'s format; `from_dict` refuses newer data.
FORMAT_VERSION = 1
_INTERRUPTED = "interrupted before the tool finished"


@dataclass(frozen=True)
class Response:
    """One finished turn: its answer, the messages it added, and what it cost."""

    text: str
    messages: tuple[Message, ...]
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    finish_reason: str | None = None
    output: Any = None
    refusal: str | None = None
    interrupted: bool = False

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str | None:
        from .notebook.render import response_html

        return response_html(self)


class Session:
    """A multi-turn conversation with an agent; history updates after each completed turn."""

    def __init__(
        self,
        agent: Agent,
        session_id: str | None = None,
        system: str | None = None,
        messages: Iterable[Message] | None = None,
        *,
        store: SessionStore | None = None,
    ) -> None:
        self.agent = agent
        self.session_id = _check_id(session_id) if session_id is not None else _new_id()
        self.system = system
        self._messages: list[Message] = _check_messages(messages) if messages else []
        self._lock = threading.Lock()
        self.usage = Usage()
        self.created_at = self.updated_at = _now()
        #: Where the session saves itself after every change (None: nowhere).
        self.store = store
        self._saved: tuple[int, str | None] | None = None  # (count, last id) in `store`

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self.session_id!r}, messages={len(self._messages)}, "
            f"model={self.agent.model!r})"
        )

    # -- history ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """A copy of the history; changing it does not change the session."""
        return list(self._messages)

    def clear(self) -> None:
        """Forget every message; the system prompt stays."""
        with self._idle():
            self._messages = []
            self._touch()
            self._autosave()

    def _set_history(self, messages: list[Message]) -> None:
        """Replace the history with `messages` (one save, not one per message)."""
        with self._idle():
            self._messages = list(messages)
            self._touch()
            self._autosave()

    def add_message(self, message: Message) -> None:
        """Append a message to the history as it is."""
        if not isinstance(message, Message):
            raise TypeError(
                f"add_message takes a Message (Message.user(...), Message.assistant(...)), "
                f"got {type(message).__name__}"
            )
        with self._idle():
            self._messages.append(message)
            self._touch()
            self._autosave()

    def fork(self, session_id: str | None = None) -> Session:
        """A new session with this one's history so far; the two then diverge."""
        with self._idle():
            twin = Session(self.agent, session_id=session_id, system=self.system, store=self.store)
            twin._messages = list(self._messages)  # messages are immutable: share them
        return twin

    # -- turns -----------------------------------------------------------------------------

    def run(self, prompt: str, **settings: Any) -> Response:
        """Send `prompt`, wait for the whole answer, and return it."""
        return _runner.run(self.run_async(prompt, **settings))

    async def run_async(self, prompt: str, **settings: Any) -> Response:
        return await _final(self._turn(prompt, settings, None, stream=False))

    def stream(self, prompt: str, **settings: Any) -> Stream:
        """Send `prompt` and iterate the events of the answer as they arrive."""
        return Stream(
            lambda ready, unseen: self._turn(
                prompt, settings, None, stream=True, ready=ready, unseen=unseen
            )
        )

    def stream_async(self, prompt: str, **settings: Any) -> AsyncStream:
        """`async for e in session.stream_async(...)`; `await` first works as well."""
        return AsyncStream(
            lambda unseen: self._turn(prompt, settings, None, stream=True, unseen=unseen)
        )

    def json(self, prompt: str, schema: Any, **settings: Any) -> Response:
        """Ask for an answer shaped as `schema`; `response.output` is the validated instance."""
        return _runner.run(self.json_async(prompt, schema, **settings))

    async def json_async(self, prompt: str, schema: Any, **settings: Any) -> Response:
        return await _final(self._turn(prompt, settings, OutputType(schema), stream=False))

    async def _turn(
        self,
        prompt: str,
        settings: dict[str, Any],
        output: OutputType | None,
        *,
        stream: bool,
        ready: Callable[[], Awaitable[None]] | None = None,
        unseen: Callable[[], int] | None = None,
    ) -> AsyncGenerator[list[Event], None]:
        """One turn: request, stream, run tools, repeat; commit only a finished turn.

        Events come in lists, one per piece of the answer that arrived. `ready`, if given,
        is awaited just before the commit (the sync stream waits there until its reader has
        taken every event). `unseen`, if given, says how many text deltas already yielded
        the reader had not taken when the turn was stopped: they are not kept.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"the prompt must be a str, got {type(prompt).__name__}")
        if not self._lock.acquire(blocking=False):
            raise self._busy()
        try:
            agent = self.agent
            settings = {**agent.defaults, **settings}
            model = settings.pop("model", None) or agent.model
            turn = _Turn([Message.user(prompt)])
            try:
                for round_number in range(agent.max_tool_rounds + 1):
                    request = Request(
                        model=model,
                        messages=self._messages + turn.messages,
                        system=self.system,
                        tools=agent._tool_schemas,
                        output=output.request if output else None,
                        settings=settings,
                        stream=stream,
                    )
                    completion = None
                    async with aclosing(agent.provider.complete(request)) as batches:
                        async for batch in batches:
                            if type(batch) is not list:
                                raise TypeError(_NOT_A_BATCH.format(agent.provider, batch))
                            shown: list[Event] = []
                            for event in batch:
                                kind = type(event)
                                if kind is TextDelta:
                                    turn.pending.append(event.text)
                                    shown.append(event)
                                elif kind is Completion:
                                    completion = event
                                elif kind is ThinkingDelta:
                                    shown.append(event)
                            if shown:
                                yield shown
                    if completion is None:
                        raise StreamError(
                            "the provider's stream ended without a final message",
                            provider=agent.provider.name,
                        )
                    turn.finish(completion)
                    calls = turn.messages[-1].tool_calls
                    if not calls:
                        break
                    if round_number == agent.max_tool_rounds:
                        raise ToolError(
                            f"the model kept calling tools for {agent.max_tool_rounds} rounds; "
                            "raise Agent(max_tool_rounds=...) if that is expected"
                        )
                    turn.calls = calls
                    for call in calls:
                        yield [ToolCall(call.id, call.name, call.arguments_json())]
                        result = await self._call_tool(call)
                        turn.results.append(result)
                        yield [
                            ToolResult(
                                result.tool_call_id, result.name, result.content, result.is_error
                            )
                        ]
                    turn.end_tool_round()
                response = turn.response(output)
                if ready is not None:
                    await ready()
            except Exception:
                raise  # nothing of a failed turn reaches history
            except BaseException:  # cancelled, closed early, interrupted
                kept = turn.interrupted(unseen() if unseen is not None else 0)
                if kept:
                    self._commit(kept, turn.usage)
                    self._autosave(quiet=True)
                raise
            self._commit(list(response.messages), response.usage)
            await self._autosave_async(response)
        finally:
            self._lock.release()
        yield [Done(response)]

    async def _call_tool(self, call: ToolCallPart) -> ToolResultPart:
        tool = self.agent._tools.get(call.name)
        if tool is None:
            known = ", ".join(self.agent._tools) or "none"
            return ToolResultPart(
                tool_call_id=call.id,
                name=call.name,
                is_error=True,
                content=f"There is no tool named {call.name!r}. Available tools: {known}.",
            )
        try:
            content = await tool.invoke(call.arguments_json())
        except pydantic.ValidationError as exc:
            return ToolResultPart(
                tool_call_id=call.id,
                name=call.name,
                is_error=True,
                content=f"Invalid arguments: {format_validation_error(exc)}",
            )
        except Exception as exc:
            raise ToolError(
                f"tool {call.name!r} raised {type(exc).__name__}: {exc}; the turn was not saved",
                tool=call.name,
            ) from exc
        return ToolResultPart(tool_call_id=call.id, name=call.name, content=content)

    def _commit(self, messages: list[Message], usage: Usage) -> None:
        self._messages = self._messages + messages
        self.usage = self.usage + usage
        self._touch()

    def _touch(self) -> None:
        self.updated_at = _now()

    # -- autosave --------------------------------------------------------------------------

    def _changes(self) -> dict[str, Any] | None:
        """`store.append` arguments for what was added since the last save, if only added."""
        if self._saved is None:
            return None
        count, last_id = self._saved
        messages = self._messages
        if len(messages) < count or (count and messages[count - 1].id != last_id):
            return None
        new = [m.to_dict() for m in messages[count:]]
        return {"header": self._header(), "messages": new, "start": count, "last_id": last_id}

    def _mark_saved(self) -> None:
        messages = self._messages
        self._saved = (len(messages), messages[-1].id if messages else None)

    def _autosave(self, *, quiet: bool = False) -> None:
        """Save to `store` what changed; `quiet` logs a failure instead of raising it."""
        store = self.store
        if store is None:
            return
        try:
            changes = self._changes()
            if changes is None or not store.append(self.session_id, **changes):
                store.save(self.session_id, self.to_dict())
        except Exception as exc:
            error = self._save_failed(exc)
            if not quiet:
                raise error from exc
            _log.warning("%s", error)
        else:
            self._mark_saved()

    async def _autosave_async(self, response: Response) -> None:
        """`_autosave` through the store's async methods; a failure carries `response`."""
        store = self.store
        if store is None:
            return
        try:
            changes = self._changes()
            if changes is None or not await store.aappend(self.session_id, **changes):
                await store.asave(self.session_id, self.to_dict())
        except Exception as exc:
            raise self._save_failed(exc, response) from exc
        self._mark_saved()

    def _save_failed(self, exc: Exception, response: Response | None = None) -> StoreError:
        """Forget what was saved (the next save is a full one); the error to report."""
        self._saved = None
        return StoreError(
            f"session {self.session_id!r} could not be saved to {self.store!r} "
            f"({type(exc).__name__}: {exc}); the conversation is intact in memory and is "
            "saved in full with the next change",
            response=response,
        )

    def _busy(self) -> SessionBusyError:
        return SessionBusyError(
            f"session {self.session_id!r} is already running a turn; wait for it to finish, "
            "or fork() the session to run another conversation at the same time"
        )

    def _idle(self) -> _Held:
        if not self._lock.acquire(blocking=False):
            raise self._busy()
        return _Held(self._lock)

    # -- serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The session as JSON-ready data (no secrets); `Session.from_dict` reads it back."""
        return {**self._header(), "messages": [m.to_dict() for m in self._messages]}

    def _header(self) -> dict[str, Any]:
        """`to_dict()` without the messages."""
        return {
            "version": FORMAT_VERSION,
            "session_id": self.session_id,
            "system": self.system,
            "model": self.agent.model,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "usage": self.usage.to_dict(),
        }

    def to_notebook(self, *, code_cells: bool = False) -> Any:
        """The conversation as an nbformat v4 notebook, a cell per prompt and per answer.

        With `code_cells=True`, Python code blocks in answers become runnable code cells.
        `nbformat.write(nb, "chat.ipynb")` saves it; `Session.from_notebook` reads it back.
        """
        from .notebook.export import to_notebook

        return to_notebook(self, code_cells=code_cells)

    @classmethod
    def from_notebook(
        cls, path: str | os.PathLike[str], agent: Agent, session_id: str | None = None
    ) -> Session:
        """The session a notebook holds: an export, or a notebook of %%chat cells."""
        from .notebook.export import from_notebook

        return from_notebook(path, agent, session_id)

    def _repr_html_(self) -> str:
        from .notebook.render import session_html

        return session_html(self.session_id, self._messages, self.system)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], agent: Agent) -> Session:
        """Rebuild a session from `to_dict()` data; InvalidSessionData names what is wrong."""
        parsed = _parse_session_data(data)
        session = cls(agent, session_id=parsed.session_id, system=parsed.system)
        session._messages = list(parsed.messages)
        session.usage = Usage(**parsed.usage) if parsed.usage else Usage()
        session.created_at = parsed.created_at or session.created_at
        session.updated_at = parsed.updated_at or session.updated_at
        return session


class _Held:
    """A lock already acquired, released by `with`."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Turn:
    """The messages of a turn being built, kept aside until the turn completes."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.pending: list[str] = []  # text of the answer still streaming
        self.calls: list[ToolCallPart] = []  # tool calls of the round being run
        self.results: list[ToolResultPart] = []
        self.usage = Usage()
        self.saw_text = False
        self.last: Completion | None = None

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
                parts=source.parts,
                metadata={**source.metadata, **facts},
                id=source.id,
            )
        )

    def end_tool_round(self) -> None:
        self.messages.append(Message.tool(self.results))
        self.calls, self.results = [], []

    def response(self, output: OutputType | None) -> Response:
        assert self.last is not None
        final = self.messages[-1]
        value = None
        if output is not None:
            if self.last.refusal:
                raise OutputValidationError(f"the model refused: {self.last.refusal}")
            value = output.parse(final.text)
        return Response(
            text=final.text,
            messages=tuple(self.messages),
            usage=self.usage,
            model=self.last.model,
            finish_reason=self.last.finish_reason,
            output=value,
            refusal=self.last.refusal,
        )

    def interrupted(self, unseen: int) -> list[Message]:
        """What to keep of a turn stopped midway: nothing unless text had been seen.

        `unseen`: how many of the last text deltas the reader never took.
        """
        if unseen:
            del self.pending[-unseen:]
        if not (self.saw_text or self.pending):
            return []
        kept = list(self.messages)
        if self.calls:  # every tool call gets exactly one result
            done = {r.tool_call_id for r in self.results}
            missing = [
                ToolResultPart(tool_call_id=c.id, name=c.name, content=_INTERRUPTED, is_error=True)
                for c in self.calls
                if c.id not in done
            ]
            kept.append(
                Message(
                    role="tool", parts=(*self.results, *missing), metadata={"interrupted": True}
                )
            )
        if self.pending:
            kept.append(Message.assistant("".join(self.pending), interrupted=True))
        return kept


async def _final(batches: AsyncGenerator[list[Event], None]) -> Response:
    async with aclosing(batches):
        async for batch in batches:
            if type(batch[-1]) is Done:
                return batch[-1].response
    raise AssertionError("a turn ended without a Done event")  # pragma: no cover


class Stream:
    """The events of one streamed turn; `.response` is set once it has finished."""

    def __init__(
        self,
        make_turn: Callable[
            [Callable[[], Awaitable[None]], Callable[[], int]], AsyncGenerator[list[Event], None]
        ],
    ) -> None:
        self._events = _runner.SyncIterator(make_turn, _count_text)
        self.response: Response | None = None

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Event:
        event = next(self._events)
        if type(event) is Done:
            self.response = event.response
        return event

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the turn; text that has arrived is kept in history, marked interrupted."""
        self._events.close()


class AsyncStream:
    """The events of one streamed turn, for `async for`; awaiting it returns itself."""

    def __init__(
        self, make_turn: Callable[[Callable[[], int]], AsyncGenerator[list[Event], None]]
    ) -> None:
        self._turn = make_turn(self._unseen)
        self._ready: list[Event] = []  # the rest of the current batch, last event first
        self.response: Response | None = None

    def __await__(self):  # type: ignore[no-untyped-def]
        async def itself() -> AsyncStream:
            return self

        return itself().__await__()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Event:
        if not self._ready:
            batch = await self._turn.__anext__()
            batch.reverse()
            self._ready = batch
        event = self._ready.pop()
        if type(event) is Done:
            self.response = event.response
        return event

    def _unseen(self) -> int:
        return _count_text(self._ready)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the turn; text that has arrived is kept in history, marked interrupted."""
        await self._turn.aclose()


def _count_text(events: Iterable[Event]) -> int:
    return sum(type(event) is TextDelta for event in events)


_NOT_A_BATCH = (
    "{0!r}.complete() must yield lists of events (one list per piece of the answer), got {1!r}"
)


# -- helpers -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _check_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise TypeError(f"session_id must be a non-empty str, got {session_id!r}")
    return session_id


def _check_messages(messages: Iterable[Any]) -> list[Message]:
    checked = []
    for index, message in enumerate(messages):
        if isinstance(message, Message):
            checked.append(message)
        elif isinstance(message, Mapping):
            try:
                checked.append(Message.model_validate(message))
            except pydantic.ValidationError as exc:
                raise InvalidSessionData(_describe(exc, f"messages[{index}]")) from None
        else:
            raise TypeError(
                f"messages[{index}] must be a Message (Message.user(...)), "
                f"got {type(message).__name__}"
            )
    return checked


class _SessionData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", defer_build=True)

    version: int
    session_id: str
    system: str | None = None
    messages: list[Message]
    created_at: str | None = None
    updated_at: str | None = None
    usage: dict[str, int] | None = None


def _parse_session_data(data: Any) -> _SessionData:
    if not isinstance(data, Mapping):
        raise InvalidSessionData(
            f"session data must be a dict from Session.to_dict(), got {type(data).__name__}"
        )
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise InvalidSessionData(
            f"version: session data is format version {version}, newer than this agent_nb "
            f"reads ({FORMAT_VERSION}); upgrade agent_nb (pip install -U agent-nb)"
        )
    try:
        parsed = _SessionData.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidSessionData(_describe(exc)) from None
    if parsed.version < 1:
        raise InvalidSessionData(f"version: {parsed.version} is not a session format version")
    return parsed


def _describe(error: pydantic.ValidationError, prefix: str = "") -> str:
    problems = []
    for item in error.errors(include_url=False)[:5]:
        path = prefix
        loc = item["loc"]
        for index, part in enumerate(loc):
            if isinstance(part, int):
                path += f"[{part}]"
            elif index >= 2 and loc[index - 2] == "parts" and isinstance(loc[index - 1], int):
                continue  # the part's type tag that pydantic puts in the path, not a field
            else:
                path += f".{part}" if path else str(part)
        reason = "missing" if item["type"] == "missing" else item["msg"]
        problems.append(f"{path}: {reason}")
    more = len(error.errors()) - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return "invalid session data: " + "; ".join(problems) + tail
