"""The contract every session store keeps, and what the built-in stores share."""

from __future__ import annotations

import abc
import atexit
import contextlib
import functools
import json
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._outcome import Outcome
from ..errors import ConfigurationError, InvalidSessionData

T = TypeVar("T")

#: Longest title `SessionInfo` takes from a first user message.
TITLE_LENGTH = 80
#: Why data nested beyond what JSON can be written with is refused (to_dict() never is).
TOO_DEEP = "the session data is nested too deeply to be stored; Session.to_dict() never is"
_UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One line of a store's listing: what a session is, without loading its messages."""

    session_id: str
    title: str
    created_at: str | None
    updated_at: str | None
    message_count: int
    model: str | None


class SessionStore(abc.ABC):
    """Keeps serialized sessions (`Session.to_dict()` data) by session id.

    A store implements `save`, `load`, `delete` and `list_sessions`. The async twins run
    those on the store's worker thread (`worker`) unless a store has a native version;
    `sessions()` lists with metadata by loading each session unless a store keeps it aside;
    `append` lets a store write just a turn, and by default declines so that a full `save`
    is made instead.
    """

    @abc.abstractmethod
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        """Store `data` under `session_id`, replacing what was there."""

    @abc.abstractmethod
    def load(self, session_id: str) -> dict[str, Any] | None:
        """The data stored under `session_id`, or None."""

    @abc.abstractmethod
    def delete(self, session_id: str) -> bool:
        """Forget `session_id`; True if it was there."""

    @abc.abstractmethod
    def list_sessions(self) -> list[str]:
        """The stored session ids."""

    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        """The stored sessions with their metadata, most recently updated first."""
        infos = []
        for session_id in self.list_sessions():
            try:
                data = self.load(session_id)
            except InvalidSessionData:
                infos.append(unreadable(session_id))
                continue
            if data is not None:
                infos.append(info_of(session_id, data))
        return newest_first(infos, limit, offset)

    def append(
        self,
        session_id: str,
        header: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        start: int,
        last_id: str | None,
    ) -> bool:
        """Add `messages` after the first `start` stored ones and store `header`.

        `header` is `Session.to_dict()` without "messages". Only when the stored session has
        exactly `start` messages, the last with id `last_id` (None: no messages at all), is
        anything written; otherwise this returns False and the caller saves in full. The
        default always returns False.
        """
        return False

    async def asave(self, session_id: str, data: dict[str, Any]) -> None:
        await worker(self).acall(self.save, session_id, data)

    async def aload(self, session_id: str) -> dict[str, Any] | None:
        return await worker(self).acall(self.load, session_id)

    async def adelete(self, session_id: str) -> bool:
        return await worker(self).acall(self.delete, session_id)

    async def alist_sessions(self) -> list[str]:
        return await worker(self).acall(self.list_sessions)

    async def asessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        return await worker(self).acall(self.sessions, limit, offset)

    async def aappend(
        self,
        session_id: str,
        header: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        start: int,
        last_id: str | None,
    ) -> bool:
        if type(self).append is SessionStore.append:
            return False  # no thread for a store that never appends
        return await worker(self).acall(
            self.append, session_id, header, messages, start=start, last_id=last_id
        )

    def __contains__(self, session_id: str) -> bool:
        return self.load(session_id) is not None

    def _attempt(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """How a built-in store makes a call on its worker (`on_worker`): errors as StoreError."""
        return method(*args, **kwargs)


# -- the store's worker thread ---------------------------------------------------------------


class Worker:
    """One thread that runs a store's calls, one at a time, in the order they came.

    Sessions save through it, and the built-in stores run every call on it (`on_worker`):
    so a Ctrl-C, which lands in the kernel's main thread, never lands inside a driver call
    or a transaction. The caller waits on a lock of its own (an interrupt there leaves
    nothing half done: the call finishes on its own, bounded by the store's timeout). A
    call made on the worker itself runs at once. Calls still queued when the interpreter
    exits are finished first (for at most EXIT_WAIT seconds in all).
    """

    def __init__(self, name: str) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _running.add(self)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
            del job  # nothing of a finished call (its store, its session) is held here

    def here(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Outcome[T]:
        outcome: Outcome[T] = Outcome()
        self._jobs.put(functools.partial(outcome.run, fn, args, kwargs))
        return outcome

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.here():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).wait()

    async def acall(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        outcome = self.submit(fn, *args, **kwargs)
        return await outcome.future()

    def stop(self, wait: float | None = None) -> None:
        """End the thread once the calls queued so far are done (waiting `wait` seconds)."""
        self._jobs.put(None)
        _running.discard(self)
        if wait is not None and not self.here():
            self._thread.join(wait)


#: How long, in all, an exiting interpreter waits for the saves still queued.
EXIT_WAIT = 30.0
_running: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _finish_queued() -> None:
    deadline = time.monotonic() + EXIT_WAIT
    for found in list(_running):
        found.stop(wait=max(0.0, deadline - time.monotonic()))


_workers_lock = threading.Lock()
_WORKER = "_agent_nb_worker"
_slotted: dict[int, Worker] = {}


def worker(store: SessionStore) -> Worker:
    """`store`'s worker thread (one per store object, made on first use)."""
    found = getattr(store, _WORKER, None) or _slotted.get(id(store))
    if found is not None and found.pid == os.getpid():
        return found
    with _workers_lock:
        found = getattr(store, _WORKER, None) or _slotted.get(id(store))
        if found is None or found.pid != os.getpid():  # none yet, or made before a fork
            found = Worker(f"agent_nb-store-{type(store).__name__}")
            try:
                object.__setattr__(store, _WORKER, found)
            except AttributeError:  # a store with __slots__: kept here instead, for good
                found = _slotted.setdefault(id(store), found)
            with contextlib.suppress(TypeError):  # the thread ends with its store
                weakref.finalize(store, found.stop)
        return found


def retire(store: SessionStore) -> None:
    """Let a closed store's worker thread end (a later call would start another)."""
    found = store.__dict__.pop(_WORKER, None) if hasattr(store, "__dict__") else None
    found = found or _slotted.pop(id(store), None)
    if found is not None:
        found.stop()


def on_worker(method: Callable[..., T]) -> Callable[..., T]:
    """A built-in store's method, run on the store's worker by the store's `_attempt`."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> T:
        return worker(self).call(self._attempt, method, self, *args, **kwargs)

    return run


def check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def problem(exc: BaseException) -> str:
    """An exception as "Type: its first line", for an error message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- for the built-in stores ---------------------------------------------------------------


def check_key(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise TypeError(f"session_id must be a non-empty str, got {session_id!r}")
    if _UNSTORABLE.search(session_id):
        raise ValueError(
            f"session_id {session_id!r} has a control character or a lone surrogate; "
            "use printable text"
        )
    return session_id


def plain(text: str) -> str:
    """`text` on one line, with what a database column cannot hold replaced by spaces."""
    return " ".join(_UNSTORABLE.sub(" ", text).split())


def check_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"a store saves the dict from Session.to_dict(), got {type(data).__name__}")
    messages = data.get("messages", [])
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("data['messages'] must be a list of dicts, as Session.to_dict() makes")
    return data


def split(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`to_dict()` data as (header, messages)."""
    header = {key: value for key, value in data.items() if key != "messages"}
    return header, data.get("messages", [])


def title(text: str) -> str:
    """`text` as a session's title: on one line, cut at TITLE_LENGTH with an ellipsis."""
    text = plain(text)
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1].rstrip() + "…"


def title_of(messages: list[dict[str, Any]]) -> str:
    """The start of the first user message's text, on one line."""
    for message in messages:
        if message.get("role") == "user":
            text = " ".join(
                part.get("text", "")
                for part in message.get("parts", ())
                if isinstance(part, dict) and part.get("type") == "text"
            )
            return title(text)
    return ""


def unreadable(session_id: str) -> SessionInfo:
    """The listing line of a session whose data is corrupt (loading it says what is wrong)."""
    return SessionInfo(session_id, "(corrupt: cannot be read)", None, None, 0, None)


def newest_first(infos: list[SessionInfo], limit: int | None, offset: int) -> list[SessionInfo]:
    """One page of `infos`, the most recently updated first."""
    check_page(limit, offset)
    infos.sort(key=lambda info: info.updated_at or "", reverse=True)
    return infos[offset : None if limit is None else offset + limit]


def info_of(session_id: str, data: dict[str, Any]) -> SessionInfo:
    messages = data.get("messages") or []
    return SessionInfo(
        session_id=session_id,
        title=title_of(messages),
        created_at=data.get("created_at"),
        updated_at=data.get("updated_at"),
        message_count=len(messages),
        model=data.get("model"),
    )


def check_page(limit: int | None, offset: int) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")


def dumps(value: Any) -> str:
    """Compact JSON, all ASCII: text with lone surrogates (which UTF-8 cannot encode) is safe."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def parse(text: str | bytes, session_id: str, where: str, what: str = "data") -> Any:
    """JSON read back from a store; InvalidSessionData names the session if it is not JSON."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        deep = isinstance(exc, RecursionError)
        problem = "is nested too deeply to read" if deep else f"is not JSON ({exc})"
        raise InvalidSessionData(
            f"session {session_id!r} in {where} is corrupt: its {what} {problem}; "
            f"delete it with store.delete({session_id!r}) or restore it from a backup"
        ) from None


def parse_messages(texts: list[Any], session_id: str, where: str) -> list[Any]:
    """Stored messages (JSON text each) read back, in one parse when none is corrupt."""
    if not texts:
        return []
    if isinstance(texts[0], bytes):
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]
    try:
        messages = json.loads("[" + ",".join(texts) + "]")
    except (json.JSONDecodeError, TypeError, RecursionError):
        messages = None
    if type(messages) is not list or len(messages) != len(texts):  # a row held 0 or 2 values
        messages = [parse(t, session_id, where, f"messages[{i}]") for i, t in enumerate(texts)]
    return messages


def assemble(session_id: str, where: str, header: Any, messages: list[Any]) -> dict[str, Any]:
    """`to_dict()` data from a stored header and messages, checked for shape."""
    if not isinstance(header, dict):
        raise InvalidSessionData(
            f"session {session_id!r} in {where} is corrupt: its header is not an object; "
            f"delete it with store.delete({session_id!r})"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidSessionData(
                f"session {session_id!r} in {where} is corrupt: messages[{index}] is not an "
                f"object; delete it with store.delete({session_id!r})"
            )
    return {**header, "messages": messages}
