"""Session: a conversation's history and its turns (run, stream, json); Response; streams."""

from __future__ import annotations

import logging
import os
import threading
import uuid
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from . import _context, _counting, _format, _ledger, _loop, _runner, _turns
from ._context import ContextReport, Policy
from ._ledger import Cost, Spend
from ._output import OutputType
from ._streams import AsyncJsonStream, AsyncStream, JsonStream, Stream
from ._turn import AgentConfig
from ._turns import Turn
from .errors import (
    AgentError,
    ApprovalPendingError,
    ConfigurationError,
    SessionBusyError,
    SessionChangedError,
    StoreConflict,
    StoreError,
)
from .events import Event, Response, Usage
from .messages import Message, ToolCallPart, _short
from .stores.base import SessionStore, dumps, worker
from .tools import Tool, Toolset

_log = logging.getLogger("agent_nb")

__all__ = ["AsyncJsonStream", "AsyncStream", "JsonStream", "Retake", "Session", "Stream", "Turn"]


class Session:
    """A multi-turn conversation with an agent; history updates after each completed turn."""

    def __init__(
        self,
        agent: AgentConfig,
        session_id: str | None = None,
        system: str | None = None,
        messages: Iterable[Message] | None = None,
        *,
        store: SessionStore | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        context: Policy | None = None,
    ) -> None:
        #: What the session talks to (an Agent; in a routed session, its route: router.py).
        self.agent = agent
        #: This session's own tools (None: the agent's).
        self._tools = None if tools is None else Toolset(tools)
        #: approve()/deny() decisions on waiting calls: id -> (approved, reason, the call);
        #: a decision holds only for the very call it was made on, and goes with any change
        #: of history.
        self._decisions: dict[str, tuple[bool, str | None, ToolCallPart]] = {}
        #: Tools the user let run without asking, in this session (approve(..., always=True)).
        self._allowed_tools: set[str] = set()
        #: Waiting calls approved with always=True: their tool is allowed once the call runs
        #: on the tool it was made to (_calls.decided_calls), never from what a record says.
        self._always: set[str] = set()
        self.session_id = _check_id(session_id) if session_id is not None else _new_id()
        self.system = system
        self._messages: list[Message] = _format.check_messages(messages) if messages else []
        self._lock = threading.Lock()  # held while the history is changed
        self._turning = False  # a turn holds the session
        self.usage = Usage()
        #: Every request this session sent, append-only: undo, retry, clear never remove one.
        self._ledger: list[Spend] = []
        self._reason = "turn"  # why its turns are asked ("retry": a Retake's copy)
        self._payer: Session | None = None  # a Retake's copy: the session it spends for
        self.created_at = self.updated_at = _now()
        #: Where the session saves itself after every change (None: nowhere).
        self.store = store
        self._saved: list[Message] | None = None  # the history as `store` last got it
        self._policy: Policy | None = None
        self.context_policy = context
        self._counts = _counting.Counts()
        #: The context decision of the turn a Retake answers again (docs/context.md).
        self._carried_context: tuple[Any, str] | None = None
        #: What the last request held, and the history it was made for (see context()).
        self._context: tuple[ContextReport, tuple[int, str | None]] | None = None

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self.session_id!r}, messages={len(self._messages)}, "
            f"model={self.agent.model!r})"
        )

    @property
    def agent(self) -> AgentConfig:
        return self._agent

    @agent.setter
    def agent(self, agent: Any) -> None:
        """The agent from now on; a Router (or another session's route) gives the session a
        route of its own."""
        bind = getattr(agent, "_route_for", None)
        self._agent = bind(self) if bind is not None else agent

    def route_reset(self) -> None:
        """A routed session (Router) goes back to the candidate its router's strategy would
        choose now; it is recorded with the next answer."""
        reset = getattr(self.agent, "reset", None)
        if reset is None:
            raise ConfigurationError(
                f"session {self.session_id!r} is not routed: route_reset() is for sessions "
                "of a Router (Router([agent_a, agent_b]).session())"
            )
        with self._lock:
            self._idle()
            waiting = self.pending_approvals
            if waiting:  # the resume must go to the candidate that made the calls
                raise ApprovalPendingError(
                    f"session {self.session_id!r} has tool calls waiting for approval: "
                    "decide them and resume (session.approve/deny, then session.resume()) "
                    "before route_reset(); a turn never changes model inside its tool loop"
                )
            reset()

    @property
    def tools(self) -> list[Tool]:
        """The tools the model may call in this session (the agent's unless given others)."""
        return list(self._toolset.tools.values())

    @tools.setter
    def tools(self, tools: Iterable[Tool | Callable[..., Any]] | None) -> None:
        """This session's own tools from now on; None: the agent's."""
        self._tools = None if tools is None else Toolset(tools)

    @property
    def context_policy(self) -> Policy | None:
        """What a request that does not fit the context window does in this session (None:
        the agent's): "error", "trim", "summarize", Trim(), Summarize() or a function."""
        return self._policy

    @context_policy.setter
    def context_policy(self, value: Policy | None) -> None:
        self._policy = None if value is None else _context.policy(value, "the session's")

    def context(self, **settings: Any) -> ContextReport:
        """What the last request held against the model's context window: the window, the
        tokens used and kept for the answer, by part, and the messages sent; before any
        request (or once the history changed), what the next one would hold without its
        prompt. `settings` are a call's (model=..., context=..., max_tokens=...)."""
        kept = self._context
        if kept is not None and not settings and kept[1] == _context.history_mark(self._messages):
            if kept[0].source == _context.NOT_ASKED:  # a short conversation's: ask now
                self._context = kept = (_runner.run(_context.asked(self.agent, kept[0])), kept[1])
            return kept[0]
        return _runner.run(self._projected(settings))

    async def _projected(self, settings: dict[str, Any]) -> ContextReport:
        checked = _loop.settings_for(self, None, settings, None)
        window = await _context.window_of(self.agent, checked.model)
        request = _loop.request_of(self, checked, list(self._messages))
        return _context.projected(self, checked.context, window, request)

    @property
    def _toolset(self) -> Toolset:
        return self.agent._toolset if self._tools is None else self._tools

    # -- history ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """A copy of the history; changing it does not change the session."""
        return list(self._messages)

    @messages.setter
    def messages(self, messages: Iterable[Message]) -> None:
        """Replace the whole history (saved once); the system prompt stays."""
        checked = _format.check_messages(messages)
        with self._lock:
            self._idle()
            self._replace(checked)

    def clear(self) -> None:
        """Forget every message; the system prompt stays."""
        with self._lock:
            self._idle()
            self._replace([])

    def _replace(self, messages: list[Message]) -> None:
        """Make `messages` the history and save it; the caller holds the lock."""
        self._swap(messages, self.usage)
        self._autosave()

    def _swap(self, messages: list[Message], usage: Usage) -> None:
        """Make `messages` the history and `usage` its usage, at once; the caller holds the
        lock and saves."""
        self._messages, self.usage = messages, usage  # no call between: a Ctrl-C cannot split
        self._decisions.clear()
        self._always.clear()
        self._touch()

    def add_message(self, message: Message) -> None:
        """Append a message to the history as it is."""
        if not isinstance(message, Message):
            raise TypeError(
                f"add_message takes a Message (Message.user(...), Message.assistant(...)), "
                f"got {type(message).__name__}"
            )
        with self._lock:
            self._idle()
            self._replace([*self._messages, message])

    def fork(self, session_id: str | None = None, *, at: Turn | str | None = None) -> Session:
        """A new session with this one's history so far; the two then diverge.

        With `at` (a Turn of `turns()`, or its first message's id), the fork holds only the
        history before that turn: a place to ask it differently.
        """
        with self._lock:
            self._idle()
            end = len(self._messages) if at is None else self._find(at).start
            twin = Session(self.agent, session_id=session_id, system=self.system, store=self.store)
            twin._tools = self._tools
            twin._policy = self._policy
            twin._allowed_tools = set(self._allowed_tools)
            twin._messages = self._messages[:end]  # messages are immutable: share them
        return twin

    # -- turns as units of history ---------------------------------------------------------

    def turns(self) -> list[Turn]:
        """The history as turns: each prompt with everything that answered it."""
        return _turns.split(self._messages)

    def undo(self) -> Turn | None:
        """Remove the last turn (the last prompt and all after it); returns it, None if none."""
        with self._lock:
            self._idle()
            start = _turns.last_start(self._messages)
            if start is None:
                return None
            removed = Turn(start, tuple(self._messages[start:]))
            self._replace(self._messages[:start])
        return removed

    def remove_turn(self, turn: Turn | str) -> Turn | None:
        """Remove one turn (a Turn of `turns()`, or its first message's id); None if it is
        not in the history (any more)."""
        with self._lock:
            self._idle()
            try:
                removed = self._find(turn)
            except ValueError:
                return None
            self._replace(self._messages[: removed.start] + self._messages[removed.end :])
        return removed

    def retake(self, turn: Turn | str | None = None) -> Retake:
        """Answer `turn` (default: the last) again, on a copy, without touching this session.

        Run a turn on `retake.copy` (the history before `turn`, this session's agent, tools
        and system prompt, no store), then `retake.commit()`: the copy's new turn replaces
        `turn` and every turn after it, unless this session changed in the meantime.
        """
        with self._lock:
            self._idle()
            start = _turns.last_start(self._messages) if turn is None else self._find(turn).start
            if start is None:
                raise AgentError(f"session {self.session_id!r} has no prompt to answer again")
            return Retake(self, start)

    def retry(self, **settings: Any) -> Response:
        """Answer the last prompt again; the new answer replaces the old once it has finished.

        Nothing changes if it fails or is stopped. Settings as for `run()`.
        """
        return _runner.run(self.retry_async(**settings))

    async def retry_async(self, **settings: Any) -> Response:
        retake = self.retake()
        prompt = retake.replaced[0]
        if prompt.images and "images" not in settings:
            settings["images"] = list(prompt.images)
        response = await retake.copy.run_async(prompt.text, **settings)
        try:
            await retake.acommit()
        except StoreError as exc:  # the new answer is in the session: its store missed it
            raise StoreError(str(exc), response=response) from exc
        return response

    def _find(self, turn: Turn | str) -> Turn:
        """The turn that starts at `turn` (a Turn, or its first message's id)."""
        first_id = turn.id if isinstance(turn, Turn) else turn
        for found in _turns.split(self._messages):
            if found.id == first_id:
                return found
        raise ValueError(
            f"no turn starts at message {_short(first_id)} in session {self.session_id!r} "
            "(a turn starts at a prompt); take one from session.turns()"
        )

    # -- spend -----------------------------------------------------------------------------

    @property
    def cost(self) -> Cost:
        """What this session spent: every request it sent, failed and undone turns included
        (a fork counts from where it forked)."""
        return Cost.of(self._ledger)

    @property
    def ledger(self) -> tuple[Spend, ...]:
        """Every request this session sent, in order (see `spend()` for them as rows)."""
        return tuple(self._ledger)

    def spend(self) -> Any:
        """The ledger, a row per request sent: a pandas DataFrame when pandas is installed,
        else a list of dicts."""
        return _ledger.table(list(self._ledger))

    def add_spend(self, spends: Iterable[Spend | Mapping[str, Any]]) -> int:
        """Add requests spent elsewhere to the ledger (a notebook's restore does); entries it
        holds already are skipped. Dicts are checked as `Spend.to_dict()` writes them
        (InvalidSessionData names what is wrong). Returns how many were added."""
        checked = [
            s if isinstance(s, Spend) else _ledger.spend_of(_format.check_spend(s, n))
            for n, s in enumerate(spends)
        ]
        with self._lock:
            held = set(self._ledger)
            new = [s for s in dict.fromkeys(checked) if s not in held]
            self._ledger += new  # one store: a Ctrl-C adds all or nothing
        return len(new)

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

    @property
    def decisions(self) -> dict[str, bool]:
        """The approve()/deny() decisions made on waiting calls: call id -> approved."""
        return {call_id: made[0] for call_id, made in self._decisions.items()}

    def approve(self, call_id: str, *, always: bool = False) -> None:
        """Let a waiting tool call run when the turn resumes.

        `always=True`: and let its tool run without asking from now on, in this session
        (recorded in `to_dict()`, so a store keeps it; see `allowed_tools`): the tool the
        call runs on when the turn resumes, which must be the one it was made to.
        """
        self._decide(call_id, True, None)
        if always:
            self._always.add(call_id)

    @property
    def allowed_tools(self) -> list[str]:
        """The tools this session lets run without approval (`approve(id, always=True)`):
        a tool of one's own by its name, an MCP server's as `server:tool` (its server's name
        and the server's own name for it)."""
        return sorted(self._allowed_tools)

    def allow_tool(self, name: str) -> None:
        """Let tool `name` run without asking for approval, in this session (as
        `approve(id, always=True)` does; recorded in `allowed_tools`): a tool of one's own
        by its name, an MCP server's tool as `server:tool`."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"allow_tool takes a tool's name, got {name!r}")
        self._allowed_tools.add(name)

    def disallow_tool(self, name: str) -> None:
        """Ask again before each call of tool `name` in this session (`server:tool`, or a
        name: a tool of one's own, and any server's tool of that name)."""
        self._allowed_tools = {
            key for key in self._allowed_tools if key != name and key.split(":", 1)[-1] != name
        }

    def deny(self, call_id: str, reason: str | None = None) -> None:
        """Refuse a waiting tool call; the model is told so (with `reason`, if given)."""
        self._decide(call_id, False, reason)
        self._always.discard(call_id)

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

    def save(self) -> None:
        """Save the whole session to its store now (it saves itself after every change)."""
        if self.store is None:
            raise ConfigurationError(
                f"session {self.session_id!r} has no store to save to: "
                "agent.session(store=...) or session.store = ..."
            )
        with self._lock:
            self._idle()
            self._autosave(full=True)  # the whole session, whatever the store holds

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

    def _save_job(self, store: SessionStore, *, full: bool = False) -> Callable[[], str | None]:
        """The save of the session as it is now, to run on the store's worker thread.

        What to write is taken now (the messages, which never change); what the store holds
        is read when the job runs: the worker runs a store's jobs one at a time, in order, so
        that is what this session's earlier saves left there. The job appends the new
        messages, or saves in full when the history was rewritten or the store does not hold
        what this session saved last (or `full`), and returns a StoreConflict text when that
        full save replaced another writer's messages.
        """
        session_id, header = self.session_id, self._header()
        snapshot = list(self._messages)
        appends = type(store).append is not SessionStore.append

        def job() -> str | None:  # on the worker: a Ctrl-C never lands in a to_dict()
            changes = None if full else self._changes(self._saved, snapshot, header)
            conflict = None
            if changes is None or not store.append(session_id, **changes):
                messages = [m.to_dict() for m in snapshot]
                if changes is not None and appends:  # changed since this session's last save
                    conflict = _replaced(store, session_id, messages)
                store.save(session_id, {**header, "messages": messages})
            self._saved = snapshot
            return conflict

        return job

    def _autosave(self, *, quiet: bool = False, wait: bool = True, full: bool = False) -> None:
        """Save to `store` what changed, on the store's worker thread; `quiet` logs a failure
        instead of raising it. An interrupt while waiting leaves the save to finish on its
        own. With `wait=False` (a stopped turn's save, made on the event loop), the save is
        only queued: nothing waits for a store that may not answer."""
        store = self.store
        if store is None:
            return
        job = self._save_job(store, full=full)
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

    def _idle(self) -> None:
        """SessionBusyError if a turn holds the session; the caller holds `_lock`.

        A change to the history is made inside `with self._lock:` (a C-level context
        manager: a Ctrl-C can never leave it held, as it could a lock taken by a Python
        function that was interrupted before the `with` took over). A turn holds the session
        by `_turning`, set under the lock and cleared when it ends: changes never wait for a
        turn, only for each other.
        """
        if self._turning:
            raise self._busy()

    # -- serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The session as JSON-ready data (no secrets); `Session.from_dict` reads it back."""
        return {**self._header(), "messages": [m.to_dict() for m in self._messages]}

    def _header(self) -> dict[str, Any]:
        """`to_dict()` without the messages."""
        return {
            "version": _format.FORMAT_VERSION,
            "session_id": self.session_id,
            "system": self.system,
            "model": self.agent.model,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "usage": self.usage.to_dict(),
            "spend": [spend.to_dict() for spend in self._ledger],
            **({"allowed_tools": sorted(self._allowed_tools)} if self._allowed_tools else {}),
        }

    def to_notebook(self, *, code_cells: bool = False) -> Any:
        """The conversation as an nbformat v4 notebook, a cell per prompt and per answer.

        With `code_cells=True`, Python code blocks in answers become runnable code cells.
        `nbformat.write(nb, "chat.ipynb")` saves it; `Session.from_notebook` reads it back.
        """
        from ._export import to_notebook

        return to_notebook(self, code_cells=code_cells)

    @classmethod
    def from_notebook(
        cls, path: str | os.PathLike[str], agent: AgentConfig, session_id: str | None = None
    ) -> Session:
        """The session a notebook holds: an export, or a notebook of %%chat cells."""
        from ._export import from_notebook

        return from_notebook(path, agent, session_id, cls)  # type: ignore[return-value]

    def _repr_html_(self) -> str:
        from ._render import session_html

        return session_html(self.session_id, self._messages, self.system)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], agent: AgentConfig) -> Session:
        """Rebuild a session from `to_dict()` data; InvalidSessionData names what is wrong."""
        return cls._from_data(data, agent)

    @classmethod
    def _from_data(
        cls,
        data: Any,
        agent: AgentConfig,
        *,
        session_id: str | None = None,
        where: str | None = None,
    ) -> Session:
        """`from_dict`; `session_id` (a store's key) replaces the data's, errors start `where`."""
        parsed = _format.parse(data, where)
        session = cls(agent, session_id=session_id or parsed.session_id, system=parsed.system)
        session._messages = list(parsed.messages)
        session.usage = Usage(**parsed.usage.model_dump()) if parsed.usage else Usage()
        session._ledger = [_ledger.spend_of(s.model_dump()) for s in parsed.spend]
        session._allowed_tools = set(parsed.allowed_tools or ())
        session.created_at = parsed.created_at or session.created_at
        session.updated_at = parsed.updated_at or session.updated_at
        return session


def stored_session(data: Any, agent: AgentConfig, session_id: str, store: SessionStore) -> Session:
    """The session `store` holds under `session_id` (`data`), saving itself there."""
    # The key is the session's id, whatever id the data carries (data saved by hand under
    # another key, a copy): its saves then go to that key, never to a second entry.
    session = Session._from_data(
        data, agent, session_id=session_id, where=f"session {session_id!r} in {store!r}"
    )
    session.store = store
    session._mark_saved()
    return session


class Retake:
    """A turn answered again on a copy of its session (see `Session.retake`)."""

    def __init__(self, session: Session, start: int) -> None:
        history = session._messages
        self._session = session
        self._start = start
        self._ids = [m.id for m in history]
        #: What `commit()` replaces: the turn answered again and every turn after it.
        self.replaced: tuple[Message, ...] = tuple(history[start:])
        #: The session to answer on: the history before the turn.
        self.copy = Session(session.agent, session.session_id, session.system, history[:start])
        self.copy._tools = session._tools
        self.copy._policy = session._policy
        first = history[start] if start < len(history) else None
        if first is not None and first.role == "user":  # its context decision, made again
            self.copy._carried_context = (first.metadata.get("context"), first.id)
        self.copy._counts = session._counts
        self.copy._ledger = session._ledger  # what the copy spends, the session spent
        self.copy._payer = session
        self.copy._reason = "retry"

    @property
    def changed(self) -> bool:
        """Whether the session's history changed since the copy was made."""
        return [m.id for m in self._session._messages] != self._ids

    def check(self) -> None:
        """SessionChangedError if the session changed since the copy was made."""
        if self.changed:
            raise SessionChangedError(
                f"session {self._session.session_id!r} changed while its turn was answered "
                "again; it was left as it is"
            )

    def commit(self) -> list[Message]:
        """Put the copy's new messages in place of `replaced`; returns them ([]: the copy
        made none, and the session is left as it is). The copy's usage is added."""
        new = self._swap()
        if new:
            self._session._autosave()
        return new

    async def acommit(self) -> list[Message]:
        """`commit()` whose save is awaited: the event loop is never blocked by the store."""
        new = self._swap()
        if new:
            await self._session._autosave_async(None)
        return new

    def _swap(self) -> list[Message]:
        session, copy = self._session, self.copy
        new = copy._messages[self._start :]
        if not new:
            return []
        with session._lock:
            session._idle()
            self.check()
            session._swap(session._messages[: self._start] + new, session.usage + copy.usage)
            adopt = getattr(session.agent, "adopt", None)  # a routed session: where it went
            if adopt is not None and copy.agent is not session.agent:
                adopt(copy.agent)
        return new


# -- helpers -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _check_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise TypeError(f"session_id must be a non-empty str, got {_short(session_id)}")
    return session_id


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
