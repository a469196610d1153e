"""Session: a conversation's history and its turns (run, stream, json); Response; streams."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import pydantic

from . import _loop, _runner
from ._output import OutputType
from .errors import (
    ApprovalPendingError,
    InvalidSessionData,
    SessionBusyError,
    StoreConflict,
    StoreError,
)
from .events import Done, Event, TextDelta, ToolCall, Usage
from .messages import Message, ToolCallPart, _short
from .stores.base import SessionStore, dumps, worker

if TYPE_CHECKING:
    from .agent import Agent
    from .tools import Tool

_log = logging.getLogger("agent_nb")

__all__ = ["AsyncJsonStream", "AsyncStream", "JsonStream", "Response", "Session", "Stream"]

#: The version of `Session.to_dict()`'s format; `from_dict` refuses newer data.
FORMAT_VERSION = 1


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
    #: Tool calls this turn stopped at, waiting for approval (see Session.resume).
    pending_approvals: tuple[ToolCallPart, ...] = ()
    #: Answers the model gave for structured output (more than 1: retries; `usage` counts all).
    attempts: int = 0

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
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
    ) -> None:
        self.agent = agent
        #: This session's own tools (None: the agent's).
        self._tools = None if tools is None else _loop.Toolset(tools)
        #: approve()/deny() decisions on waiting calls: id -> (approved, reason, the call);
        #: a decision holds only for the very call it was made on, and goes with any change
        #: of history.
        self._decisions: dict[str, tuple[bool, str | None, ToolCallPart]] = {}
        self.session_id = _check_id(session_id) if session_id is not None else _new_id()
        self.system = system
        self._messages: list[Message] = _check_messages(messages) if messages else []
        self._lock = threading.Lock()
        self.usage = Usage()
        self.created_at = self.updated_at = _now()
        #: Where the session saves itself after every change (None: nowhere).
        self.store = store
        self._saved: list[Message] | None = None  # the history as `store` last got it
        self._save_token: object = None  # the latest save asked for (see _save_job)

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self.session_id!r}, messages={len(self._messages)}, "
            f"model={self.agent.model!r})"
        )

    @property
    def tools(self) -> list[Tool]:
        """The tools the model may call in this session (the agent's unless given others)."""
        return list(self._toolset.tools.values())

    @property
    def _toolset(self) -> _loop.Toolset:
        return self.agent._toolset if self._tools is None else self._tools

    # -- history ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """A copy of the history; changing it does not change the session."""
        return list(self._messages)

    def clear(self) -> None:
        """Forget every message; the system prompt stays."""
        with self._idle():
            self._messages = []
            self._decisions.clear()
            self._touch()
            self._autosave()

    def _set_history(self, messages: list[Message]) -> None:
        """Replace the history with `messages` (one save, not one per message)."""
        with self._idle():
            self._messages = list(messages)
            self._decisions.clear()
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
            self._decisions.clear()
            self._touch()
            self._autosave()

    def fork(self, session_id: str | None = None) -> Session:
        """A new session with this one's history so far; the two then diverge."""
        with self._idle():
            twin = Session(self.agent, session_id=session_id, system=self.system, store=self.store)
            twin._tools = self._tools
            twin._messages = list(self._messages)  # messages are immutable: share them
        return twin

    # -- turns -----------------------------------------------------------------------------

    def run(self, prompt: str, **settings: Any) -> Response:
        """Send `prompt`, wait for the whole answer, and return it.

        `images=[...]` sends pictures with it (paths, bytes, figures, PIL images), as every
        turn method does; a model known to take none refuses them before anything is sent.
        """
        return _runner.run(self.run_async(prompt, **settings))

    async def run_async(self, prompt: str, **settings: Any) -> Response:
        return await _loop.final(_loop.turn(self, prompt, settings, None, stream=False))

    def stream(self, prompt: str, **settings: Any) -> Stream:
        """Send `prompt` and iterate the events of the answer as they arrive."""
        return Stream(self._streamed(prompt, settings, None))

    def stream_async(self, prompt: str, **settings: Any) -> AsyncStream:
        """`async for e in session.stream_async(...)`; `await` first works as well."""
        return AsyncStream(self._streamed(prompt, settings, None))

    # -- approvals -------------------------------------------------------------------------

    @property
    def pending_approvals(self) -> list[ToolCallPart]:
        """The tool calls the last turn stopped at, waiting for approve()/deny(), then resume()."""
        messages = self._messages
        waiting = messages[-1].metadata.get("awaiting_approval") if messages else None
        if len(messages) < 2 or not isinstance(waiting, tuple | list):
            return []
        return [call for call in messages[-2].tool_calls if call.id in set(waiting)]

    def approve(self, call_id: str) -> None:
        """Let a waiting tool call run when the turn resumes."""
        self._decide(call_id, True, None)

    def deny(self, call_id: str, reason: str | None = None) -> None:
        """Refuse a waiting tool call; the model is told so (with `reason`, if given)."""
        self._decide(call_id, False, reason)

    def _decide(self, call_id: str, approved: bool, reason: str | None) -> None:
        waiting = {call.id: call for call in self.pending_approvals}
        if call_id not in waiting:
            known = ", ".join(map(repr, waiting)) or "none"
            raise ApprovalPendingError(
                f"no tool call {call_id!r} waits for approval in session "
                f"{self.session_id!r} (waiting: {known})"
            )
        self._decisions[call_id] = (approved, reason, waiting[call_id])

    def resume(self, **settings: Any) -> Response:
        """Run the decided tool calls of the waiting round, then let the model answer."""
        return _runner.run(self.resume_async(**settings))

    async def resume_async(self, **settings: Any) -> Response:
        return await _loop.final(_loop.turn(self, None, settings, None, stream=False))

    def stream_resume(self, **settings: Any) -> Stream:
        """`resume()`, streamed: the results of the decided calls, then the answer."""
        return Stream(self._streamed(None, settings, None))

    def stream_resume_async(self, **settings: Any) -> AsyncStream:
        """`stream_resume()` for `async for`."""
        return AsyncStream(self._streamed(None, settings, None))

    def json(self, prompt: str, schema: Any, **settings: Any) -> Response:
        """Ask for an answer shaped as `schema`; `response.output` is the validated instance."""
        return _runner.run(self.json_async(prompt, schema, **settings))

    def stream_json(self, prompt: str, schema: Any, **settings: Any) -> JsonStream:
        """`json()`, streamed: iterate the answer as it grows, validated so far (partial).

        Each item is an instance of `schema` with what has arrived (lists and strings may be
        cut short, later fields missing); the last is the whole validated answer, also in
        `.response.output` once finished.
        """
        output = OutputType(schema)
        return JsonStream(Stream(self._streamed(prompt, settings, output)), output)

    def stream_json_async(self, prompt: str, schema: Any, **settings: Any) -> AsyncJsonStream:
        """`stream_json()` for `async for`."""
        output = OutputType(schema)
        return AsyncJsonStream(AsyncStream(self._streamed(prompt, settings, output)), output)

    async def json_async(self, prompt: str, schema: Any, **settings: Any) -> Response:
        output = OutputType(schema)
        return await _loop.final(_loop.turn(self, prompt, settings, output, stream=False))

    def _streamed(
        self, prompt: str | None, settings: dict[str, Any], output: OutputType | None
    ) -> Callable[[Any], AsyncGenerator[list[Event], None]]:
        """What a Stream or AsyncStream starts: this turn, streamed, with its reader."""
        return lambda reader: _loop.turn(self, prompt, settings, output, stream=True, reader=reader)

    def _commit(
        self, messages: list[Message], usage: Usage, base: list[Message] | None = None
    ) -> None:
        """Add a turn's messages to `base` (the history it started from, by default all)."""
        self._messages = (self._messages if base is None else base) + messages
        self.usage = self.usage + usage
        self._touch()

    def _touch(self) -> None:
        self.updated_at = _now()

    # -- autosave --------------------------------------------------------------------------

    @staticmethod
    def _changes(
        saved: list[Message] | None, messages: list[Message], header: dict[str, Any]
    ) -> dict[str, Any] | None:
        """`store.append` arguments for what `messages` add to `saved`, if they only add."""
        if saved is None:
            return None
        count = len(saved)
        if len(messages) < count or messages[:count] != saved:  # an edit: a full save
            return None
        new = [m.to_dict() for m in messages[count:]]
        last_id = saved[-1].id if saved else None
        return {"header": header, "messages": new, "start": count, "last_id": last_id}

    def _mark_saved(self) -> None:
        self._saved = list(self._messages)

    def _save_job(self, store: SessionStore) -> Callable[[], str | None]:
        """The save of the session as it is now, to run on the store's worker thread.

        What to write is taken now (the messages, which never change); the job appends the
        new messages, or saves in full when the history was rewritten or the store does not
        hold what this session saved last, and returns a StoreConflict text when that full
        save replaced another writer's messages. Only the latest save asked for records what
        the store holds.
        """
        session_id, header = self.session_id, self._header()
        snapshot, saved = list(self._messages), self._saved
        token = self._save_token = object()
        appends = type(store).append is not SessionStore.append

        def job() -> str | None:  # on the worker: a Ctrl-C never lands in a to_dict()
            changes = self._changes(saved, snapshot, header)
            conflict = None
            if changes is None or not store.append(session_id, **changes):
                messages = [m.to_dict() for m in snapshot]
                if changes is not None and appends:  # changed since this session's last save
                    conflict = _replaced(store, session_id, messages)
                store.save(session_id, {**header, "messages": messages})
            if self._save_token is token:
                self._saved = snapshot
            return conflict

        return job

    def _autosave(self, *, quiet: bool = False, wait: bool = True) -> None:
        """Save to `store` what changed, on the store's worker thread; `quiet` logs a failure
        instead of raising it. An interrupt while waiting leaves the save to finish on its
        own. With `wait=False` (a stopped turn's save, made on the event loop), the save is
        only queued: nothing waits for a store that may not answer."""
        store = self.store
        if store is None:
            return
        job = self._save_job(store)
        if not wait:
            worker(store).submit(self._in_background, job)
            return
        try:
            conflict = worker(store).call(job)
        except Exception as exc:
            error = self._save_failed(exc)
            if not quiet:
                raise error from exc
            _log.warning("%s", error)
        except BaseException:  # interrupted while waiting: the next save is a full one
            self._saved = None
            raise
        else:
            _warn(conflict)

    def _in_background(self, job: Callable[[], str | None]) -> None:
        try:
            conflict = job()
        except Exception as exc:
            _log.warning("%s", self._save_failed(exc))
        else:
            _warn(conflict)

    async def _autosave_async(self, response: Response) -> None:
        """`_autosave` for a finished turn, awaited on its event loop (which the save never
        blocks); a failure carries `response`. Cancelled, the save goes on in the background."""
        store = self.store
        if store is None:
            return
        job = self._save_job(store)
        try:
            conflict = await worker(store).acall(job)
        except Exception as exc:
            raise self._save_failed(exc, response) from exc
        except BaseException:  # stopped midway: what reached the store is unknown
            self._saved = None
            raise
        _warn(conflict)

    def _save_failed(self, exc: Exception, response: Response | None = None) -> StoreError:
        """Forget what was saved (the next save is a full one); the error to report."""
        self._saved = None
        kept = "the turn" if response is not None else "the change"
        return StoreError(
            f"session {self.session_id!r} could not be saved to {self.store!r} "
            f"({type(exc).__name__}: {exc}); {kept} is kept in its history: the conversation "
            "is intact in memory and is saved in full with the next change",
            response=response,
        )

    def _busy(self) -> SessionBusyError:
        return SessionBusyError(
            f"session {self.session_id!r} is already running a turn; wait for it to finish "
            "(a stream counts until it is read to the end or closed: stream.close(), or "
            "`with session.stream(...) as stream:`), or fork() the session to run another "
            "conversation at the same time"
        )

    def _idle(self) -> threading.Lock:
        """The session's lock, for `with`, if no turn holds it (else SessionBusyError).

        The `with` statement takes it, so that a Ctrl-C can never land between taking it and
        the block that gives it back (which left the session busy for good).
        """
        if self._lock.locked():
            raise self._busy()
        return self._lock

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
        return cls._from_data(data, agent)

    @classmethod
    def _from_data(
        cls, data: Any, agent: Agent, *, session_id: str | None = None, where: str | None = None
    ) -> Session:
        """`from_dict`; `session_id` (a store's key) replaces the data's, errors start `where`."""
        parsed = _parse_session_data(data, where)
        session = cls(agent, session_id=session_id or parsed.session_id, system=parsed.system)
        session._messages = list(parsed.messages)
        session.usage = Usage(**parsed.usage.model_dump()) if parsed.usage else Usage()
        session.created_at = parsed.created_at or session.created_at
        session.updated_at = parsed.updated_at or session.updated_at
        return session


class Stream(_runner.SyncIterator[Event]):
    """The events of one streamed turn; `.response` is set once it has finished.

    Leaving the loop early in any way (`break`, an exception, `close()`, `with`, dropping
    the stream, Ctrl-C) ends the turn at once, keeping the text read so far.
    """

    def __init__(self, make_turn: Callable[[Any], AsyncGenerator[list[Event], None]]) -> None:
        super().__init__(make_turn, _count_text)
        self.response: Response | None = None

    def _arrived(self, events: list[Event]) -> None:
        if type(events[-1]) is Done:
            self.response = events[-1].response

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the turn; text that has been read is kept in history, marked interrupted."""
        super().close()


class AsyncStream:
    """The events of one streamed turn, for `async for`; awaiting it returns itself.

    Leaving the loop early (`break`, an exception, dropping the stream) ends the turn at
    once, keeping the text read so far; so does `aclose()` or cancelling the reading task.
    """

    def __init__(self, make_turn: Callable[[Any], AsyncGenerator[list[Event], None]]) -> None:
        self._reader = _PullReader()  # shared with the turn, which must not hold `self`
        self._turn = make_turn(self._reader)
        self.response: Response | None = None

    def __await__(self):  # type: ignore[no-untyped-def]
        async def itself() -> AsyncStream:
            return self

        return itself().__await__()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Event:
        reader = self._reader
        if reader.pos == len(reader.batch):
            batch = await self._turn.__anext__()
            if type(batch[-1]) is Done:
                self.response = batch[-1].response
            reader.batch, reader.pos = batch, 0
        event = reader.batch[reader.pos]
        reader.pos += 1
        return event

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the turn; text that has been read is kept in history, marked interrupted."""
        await self._turn.aclose()

    def __del__(self) -> None:
        # Dropped while its turn waits at a `yield` (a `break`): end the turn now, not when
        # the event loop gets round to closing the generator, so the session is free at once.
        turn = self._reader.turn
        if turn is not None and not turn.ended:
            turn.end(self._reader.unseen, stopped=True)


class _Partials:
    """Structured output as it grows: each new value the JSON so far validates as."""

    def __init__(self, output: OutputType) -> None:
        self._output = output
        self._text = ""
        self._last: Any = None

    def add(self, event: Event) -> Any:
        """The new partial value `event` makes, or None if nothing new."""
        kind = type(event)
        if kind is Done:
            final = event.response.output
            return None if final == self._last else final
        if kind is not TextDelta:
            if kind is ToolCall:  # the JSON comes after the tools
                self._text = ""
            return None
        before = self._text
        self._text += event.text
        value = self._output.partial(self._text)
        if value is None and before and _complete_json(before):  # a retry: a new answer
            self._text = event.text
            value = self._output.partial(self._text)
        if value is None or value == self._last:
            return None
        self._last = value
        return value


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class JsonStream:
    """The structured answer of one streamed turn, validated so far, as it grows."""

    def __init__(self, stream: Stream, output: OutputType) -> None:
        self._stream = stream
        self._partials = _Partials(output)

    @property
    def response(self) -> Response | None:
        return self._stream.response

    def __iter__(self) -> JsonStream:
        return self

    def __next__(self) -> Any:
        while True:
            value = self._partials.add(next(self._stream))
            if value is not None:
                return value

    def __enter__(self) -> JsonStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the turn (what was read is kept, as for `stream()`)."""
        self._stream.close()


class AsyncJsonStream:
    """`JsonStream` for `async for`."""

    def __init__(self, stream: AsyncStream, output: OutputType) -> None:
        self._stream = stream
        self._partials = _Partials(output)

    @property
    def response(self) -> Response | None:
        return self._stream.response

    def __aiter__(self) -> AsyncJsonStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            value = self._partials.add(await self._stream.__anext__())
            if value is not None:
                return value

    async def __aenter__(self) -> AsyncJsonStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _PullReader:
    """What an AsyncStream shares with its turn: the batch being read and how far."""

    def __init__(self) -> None:
        self.turn: _loop._Turn | None = None
        self.batch: list[Event] = []
        self.pos = 0

    def unseen(self) -> int:
        return _count_text(self.batch[self.pos :])


def _count_text(events: Iterable[Event]) -> int:
    return sum(type(event) is TextDelta for event in events)


# -- helpers -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _check_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise TypeError(f"session_id must be a non-empty str, got {_short(session_id)}")
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
                raise InvalidSessionData(_INVALID + _describe(exc, f"messages[{index}]")) from None
        else:
            raise TypeError(
                f"messages[{index}] must be a Message (Message.user(...)), "
                f"got {type(message).__name__}"
            )
    return checked


_Count = Annotated[pydantic.StrictInt, pydantic.Field(ge=0)]


class _UsageData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", defer_build=True)

    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cached_tokens: _Count = 0
    reasoning_tokens: _Count = 0
    estimated: _Count = 0


def _session_id(value: str) -> str:
    if not value.strip():
        raise ValueError("a session id must not be empty or blank")
    return value


class _SessionData(pydantic.BaseModel):
    """What `Session.to_dict()` makes, exactly: every field of the right JSON type, no others."""

    model_config = pydantic.ConfigDict(extra="forbid", defer_build=True)

    version: Annotated[pydantic.StrictInt, pydantic.Field(ge=1)]
    session_id: Annotated[pydantic.StrictStr, pydantic.AfterValidator(_session_id)]
    system: pydantic.StrictStr | None = None
    model: pydantic.StrictStr | None = None
    messages: list[Message]
    created_at: pydantic.StrictStr | None = None
    updated_at: pydantic.StrictStr | None = None
    usage: _UsageData | None = None


def _parse_session_data(data: Any, where: str | None = None) -> _SessionData:
    """`data` checked against the format; errors start with `where` (default: the data's id)."""
    if not isinstance(data, Mapping):
        raise InvalidSessionData(
            _named(where, f"session data must be a dict from Session.to_dict(), got {_short(data)}")
        )
    if where is None and isinstance(data.get("session_id"), str) and data["session_id"]:
        where = f"session {_short(data['session_id'])}"
    version = data.get("version")
    if type(version) is int and version > FORMAT_VERSION:
        raise InvalidSessionData(
            _named(
                where,
                f"version: session data is format version {version}, newer than this agent_nb "
                f"reads ({FORMAT_VERSION}); upgrade agent_nb (pip install -U agent-nb)",
            )
        )
    try:
        parsed = _SessionData.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidSessionData(_named(where, _INVALID + _describe(exc))) from None
    problem = _waiting_problem(parsed.messages)
    if problem:
        raise InvalidSessionData(_named(where, _INVALID + problem))
    return parsed


def _waiting_problem(messages: list[Message]) -> str | None:
    """What is wrong with the calls the history says wait for approval, if anything."""
    if not messages or "awaiting_approval" not in messages[-1].metadata:
        return None
    at = f"messages[{len(messages) - 1}].metadata.awaiting_approval"
    waiting = messages[-1].metadata["awaiting_approval"]
    if not isinstance(waiting, tuple | list) or not all(isinstance(w, str) for w in waiting):
        return f"{at}: a list of tool call ids, got {_short(waiting)}"
    calls = {c.id for c in messages[-2].tool_calls} if len(messages) > 1 else set()
    unknown = [w for w in waiting if w not in calls]
    if messages[-1].role != "tool" or unknown:
        return f"{at}: {_short(unknown or waiting)} is no tool call of the message before"
    return None


def _named(where: str | None, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


_INVALID = "invalid session data: "


def _describe(error: pydantic.ValidationError, prefix: str = "") -> str:
    """What is wrong, field by field (the first five): `messages[3].role: ...; ...`."""
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
                name = part if part.isidentifier() and len(part) <= 60 else _short(part)
                path += f".{name}" if path else name
        problems.append(f"{path}: {_reason(item)}")
    more = error.error_count() - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return "; ".join(problems) + tail


def _reason(item: Any) -> str:
    kind = item["type"]
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "an unknown key (agent_nb writes no such field)"
    if kind == "value_error":
        return str(item["ctx"]["error"])
    if kind.endswith("_type") or kind == "int_from_float":
        return f"{item['msg']}, got {_JSON_TYPES.get(type(item['input']), 'a Python object')}"
    return item["msg"]


_JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
    list: "a list",
    dict: "an object",
}


def _replaced(store: SessionStore, session_id: str, messages: list[dict[str, Any]]) -> str | None:
    """What a full save of `messages` would throw away of `store`'s copy, said for a
    StoreConflict warning; None when it holds nothing this session lacks."""
    try:
        stored = store.load(session_id)
    except Exception:
        return None  # unreadable: the save itself says what is wrong, or replaces it
    ours = {dumps(m) for m in messages}
    lost = [m for m in (stored or {}).get("messages", ()) if dumps(m) not in ours]
    if not lost:
        return None
    return (
        f"session {session_id!r} in {store!r} held {len(lost)} message(s) this session does "
        "not have, saved by another writer (another kernel or process using the same session "
        "id) since this session last saved; this save replaced them (the later save wins). "
        "Give each writer its own session id, session.fork(), to keep both"
    )


def _warn(conflict: str | None) -> None:
    if conflict is not None:
        warnings.warn(conflict, StoreConflict, stacklevel=3)
