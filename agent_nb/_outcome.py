"""A call's outcome, made on one thread and waited for or awaited on another."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Outcome(Generic[T]):
    """What a call run on another thread (a store's worker, a sync tool's thread) gave, when
    it is done: waited for with a plain lock (a Ctrl-C can interrupt the wait but never break
    it), or awaited on an event loop (settled there, thread-safely; a closed loop is left)."""

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._ok = False
        self._value: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[T] | None = None

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._value, self._ok = fn(*args, **kwargs), True
        except BaseException as exc:
            self._value = exc
        self._done.release()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits it
                loop.call_soon_threadsafe(self._settle)

    def wait(self) -> T:
        self._done.acquire()
        self._done.release()  # for a second waiter
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def future(self) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        self._future = loop.create_future()
        self._loop = loop
        if not self._done.locked():  # done before the loop was known
            self._settle()
        return self._future

    def _settle(self) -> None:
        future = self._future
        if future is None or future.done():
            return
        if self._ok:
            future.set_result(self._value)
        else:
            future.set_exception(self._value)
