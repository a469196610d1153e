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
from collections.abc import AsyncIterator, Callable, Coroutine
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
    """A coroutine to run as a task on the runner, with a way to cancel it and wait.

    Made in two steps (`_Job(...)`, then `start()`) so that a caller can store the job before
    it runs: an interrupt between the two then finds a job it can cancel, never a task that
    runs on unowned. Cancelling a job that never started closes its coroutine.
    """

    def __init__(self, make_coro: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._loop = _runner_loop()
        self._make_coro = make_coro
        self._done = threading.Event()
        self._task: asyncio.Task[T] | None = None
        self._cancelled = False

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._cancelled:
            return
        self._task = self._loop.create_task(self._make_coro())
        self._task.add_done_callback(lambda _: self._done.set())

    def wait(self) -> None:
        self._done.wait()

    def outcome(self) -> T:
        """The finished task's result (or its exception, raised)."""
        assert self._task is not None
        return self._task.result()

    def cancel(self, *, wait: bool = True) -> None:
        """Cancel the task and (with `wait`) return once its cleanup has run.

        A second Ctrl-C while waiting waits on: the cleanup is what keeps history right.
        """
        self._loop.call_soon_threadsafe(self._cancel)
        while wait:
            try:
                self._done.wait()
                return
            except KeyboardInterrupt:
                continue

    def _cancel(self) -> None:
        if self._task is None:  # never started: it never will
            self._cancelled = True
            self._done.set()
        else:
            self._task.cancel()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the runner and return its result; an interrupt cancels it first."""
    job = _Job(lambda: coro)
    try:
        job.start()
        job.wait()
    except BaseException:
        job.cancel()
        coro.close()  # if it never started
        raise
    return job.outcome()


def on_runner() -> bool:
    """Whether this is the runner's thread (where nothing may wait for the runner)."""
    return threading.current_thread() is _thread


_ITEMS, _END, _ERROR, _MARK = 0, 1, 2, 3


class SyncIterator(Generic[T]):
    """Iterates, from the calling thread, an async iterator of item lists running on the runner.

    A task on the runner drains the source into a queue, a list at a time, so items cross
    threads without a round trip each. The source is built by `make_source(channel)` and may
    call two methods of it: `caught_up()`, async, returns once the consumer has taken every
    item queued so far (a source awaits it before anything the consumer must not miss, such
    as running a tool or finishing the answer); `unseen()` says how many of the items queued
    so far, as counted by `count`, the consumer never took (a source stopped midway keeps
    only what was seen). Closing, an interrupt, or dropping the iterator cancels the task;
    the source sees the cancellation at its await point and cleans up before `close()`
    returns. The task holds only the channel, never the iterator, so dropping the iterator
    is seen at once.

    What was taken is counted exactly even under KeyboardInterrupt at any instant: Python
    raises it only at calls and loop jumps, and none stands between taking an item (the
    `pos` store) and returning it, nor between the stores that switch to a new batch.
    """

    def __init__(
        self,
        make_source: Callable[[_Channel[T]], AsyncIterator[list[T]]],
        count: Callable[[list[T]], int],
    ) -> None:
        self._channel = _Channel(make_source, count)
        self._job: _Job[None] | None = None
        self._finished = False

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        channel = self._channel
        if channel.pos == len(channel.batch):
            self._next_batch()
        item = channel.batch[channel.pos]
        channel.pos += 1
        return item

    def _next_batch(self) -> None:
        """Wait for the next list of items; an interrupt while waiting closes the stream."""
        if self._finished:
            raise StopIteration
        channel = self._channel
        try:
            if self._job is None:
                job = _Job(channel.pump)
                self._job = job
                job.start()
            while True:
                kind, value = channel.queue.get()
                if kind == _ITEMS:
                    self._arrived(value)
                    taken = channel.taken + channel.count(channel.batch)
                    channel.batch = value  # no call from here to the return
                    channel.pos = 0
                    channel.taken = taken
                    return
                if kind == _MARK:
                    self._job._loop.call_soon_threadsafe(_resolve, value)
                    continue
                self._finished = True
                if kind == _ERROR:
                    raise value
                raise StopIteration
        except (KeyboardInterrupt, SystemExit):
            self.close()
            raise

    def _arrived(self, items: list[T]) -> None:
        """A new list of items is about to be returned (for subclasses)."""

    def close(self) -> None:
        """Stop early; returns once the source has cleaned up."""
        self._finished = True
        if self._job is not None:
            self._job.cancel(wait=not on_runner())

    def __del__(self) -> None:
        if not self._finished and self._job is not None:
            self._finished = True
            # From any thread but the runner's, wait for the cleanup, so that the next call
            # on the session (right after a `break`) finds it idle.
            self._job.cancel(wait=not on_runner() and _thread is not None and _thread.is_alive())


class _Channel(Generic[T]):
    """What the consumer and the runner's task share: the queue and the counts."""

    def __init__(
        self,
        make_source: Callable[[_Channel[T]], AsyncIterator[list[T]]],
        count: Callable[[list[T]], int],
    ) -> None:
        self.make_source = make_source
        self.count = count
        self.queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.batch: list[T] = []  # the list being returned, from `pos` on
        self.pos = 0
        self.taken = 0  # counted items in the lists before `batch`
        self.queued = 0  # counted items put in the queue (by the task)

    async def caught_up(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.queue.put((_MARK, future))
        await future

    def unseen(self) -> int:
        """On the runner, once the task is stopping: counted items queued, never taken."""
        return self.queued - self.taken - self.count(self.batch[: self.pos])

    async def pump(self) -> None:
        put, count = self.queue.put, self.count
        try:
            async for items in self.make_source(self):
                self.queued += count(items)
                put((_ITEMS, items))
        except asyncio.CancelledError:
            put((_END, None))
            raise
        except BaseException as exc:
            put((_ERROR, exc))
        else:
            put((_END, None))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
