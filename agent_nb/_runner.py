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
    """Iterates an async iterator on the runner, from the calling thread.

    A task on the runner drains the source into a queue, so items cross threads without a
    round trip each; items produced between two real suspensions (one network read) cross
    together, as one batch. `make_source` receives `caught_up`, an async function that returns once
    the consumer has taken every item queued so far: a source awaits it before anything the
    consumer must not miss (a commit). Closing, or an interrupt, cancels the task; the
    source sees the cancellation at its await point and cleans up before `close()` returns.
    """

    def __init__(self, make_source: Callable[[Callable[[], Awaitable[None]]], AsyncIterator[T]]):
        self._make_source = make_source
        self._queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._job: _Job[None] | None = None
        self._finished = False
        self._ready: list[T] = []  # items taken from the queue, not yet returned
        self._batch: list[T] = []  # items produced on the runner, not yet queued
        self._flush_scheduled = False

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
                return self._ready.pop()
            if kind == _MARK:
                self._job._loop.call_soon_threadsafe(_resolve, value)
                continue
            self._finished = True
            if kind == _ERROR:
                raise value
            raise StopIteration

    async def _caught_up(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._put(_MARK, future)
        await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._batch:
            self._queue.put((_ITEMS, self._batch))
            self._batch = []

    def _put(self, kind: int, value: Any) -> None:
        self._flush()
        self._queue.put((kind, value))

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        batch_append = self._batch.append
        try:
            async for item in self._make_source(self._caught_up):
                if not self._batch:
                    batch_append = self._batch.append
                batch_append(item)
                if not self._flush_scheduled:
                    # runs once this task really waits (on the network): a batch per read
                    self._flush_scheduled = True
                    loop.call_soon(self._flush)
        except asyncio.CancelledError:
            self._put(_END, None)
            raise
        except BaseException as exc:
            self._put(_ERROR, exc)
        else:
            self._put(_END, None)

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
