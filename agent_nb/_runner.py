"""A background event loop that runs the async core for the sync API.

Sync calls hand their coroutine to this loop's thread and wait, so they work the same in a
plain script and inside Jupyter's running loop, without nest_asyncio. A KeyboardInterrupt
while waiting (the kernel's stop button) cancels the task, waits for its cleanup, and is
raised again.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _runner_loop() -> asyncio.AbstractEventLoop:
    """The runner's loop, started on first use; refuses calls from the runner's own thread."""
    global _loop, _thread
    if threading.current_thread() is _thread:
        raise RuntimeError(
            "a sync agent_nb call was made on the agent's own event loop (from an async "
            "tool?); use the async API there: await session.run_async(...)"
        )
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="agent_nb-runner", daemon=True
            )
            _thread.start()
        return _loop


class _Job(Generic[T]):
    """A coroutine running as a task on the runner, with a way to cancel it and wait."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._loop = _runner_loop()
        self._done = threading.Event()
        self._task: asyncio.Task[T] | None = None
        self._loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(lambda _: self._done.set())

    def result(self) -> T:
        """Wait for the task and return its result; an interrupt cancels it first."""
        try:
            self._done.wait()
        except KeyboardInterrupt:
            self.cancel()
            raise
        assert self._task is not None
        return self._task.result()

    def cancel(self) -> None:
        """Cancel the task and wait until its cleanup has run (a second Ctrl-C waits too)."""
        self._loop.call_soon_threadsafe(self._cancel)
        while True:
            try:
                self._done.wait()
                return
            except KeyboardInterrupt:
                continue

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the runner and return its result."""
    return _Job(coro).result()


_ITEMS, _END, _ERROR, _MARK = 0, 1, 2, 3


class SyncIterator(Generic[T]):
    """Iterates, from the calling thread, an async iterator of item lists running on the runner.

    A task on the runner drains the source into a queue, a list at a time, so items cross
    threads without a round trip each. `make_source` receives two functions: `caught_up`,
    async, returns once the consumer has taken every item queued so far (a source awaits it
    before anything the consumer must not miss, such as a commit); `unseen` returns how many
    of the items queued so far the consumer never took, as counted by `count` (a source
    stopped midway calls it to keep only what was seen). Closing, or an interrupt, cancels the
    task; the source sees the cancellation at its await point and cleans up before `close()`
    returns.
    """

    def __init__(
        self,
        make_source: Callable[
            [Callable[[], Awaitable[None]], Callable[[], int]], AsyncIterator[list[T]]
        ],
        count: Callable[[list[T]], int],
    ) -> None:
        self._make_source = make_source
        self._count = count
        self._queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._job: _Job[None] | None = None
        self._finished = False
        self._ready: list[T] = []  # items taken from the queue, not yet returned; last first

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._ready:
            return self._ready.pop()
        if self._finished:
            raise StopIteration
        if self._job is None:
            self._job = _Job(self._pump())
        while True:
            try:
                kind, value = self._queue.get()
            except KeyboardInterrupt:
                self.close()
                raise
            if kind == _ITEMS:
                value.reverse()
                self._ready = value
                return value.pop()
            if kind == _MARK:
                self._job._loop.call_soon_threadsafe(_resolve, value)
                continue
            self._finished = True
            if kind == _ERROR:
                raise value
            raise StopIteration

    async def _caught_up(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.put((_MARK, future))
        await future

    def _unseen(self) -> int:
        """Called on the runner once the task is stopping: the consumer takes nothing more."""
        unseen = self._count(self._ready)
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                return unseen
            if kind == _ITEMS:
                unseen += self._count(value)

    async def _pump(self) -> None:
        put = self._queue.put
        try:
            async for items in self._make_source(self._caught_up, self._unseen):
                put((_ITEMS, items))
        except asyncio.CancelledError:
            put((_END, None))
            raise
        except BaseException as exc:
            put((_ERROR, exc))
        else:
            put((_END, None))

    def close(self) -> None:
        """Stop early; returns once the source has cleaned up."""
        self._finished = True
        if self._job is not None:
            self._job.cancel()

    def __del__(self) -> None:
        if not self._finished and self._job is not None:
            self._finished = True
            self._job._loop.call_soon_threadsafe(self._job._cancel)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
