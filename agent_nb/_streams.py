"""Streams of a turn's events: Stream and AsyncStream, and their structured-output forms."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _runner
from ._output import OutputType
from .events import Done, Event, Response, TextDelta, ToolCall

if TYPE_CHECKING:
    from ._turn import TurnState

__all__ = ["AsyncJsonStream", "AsyncStream", "JsonStream", "Stream"]


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
        self.turn: TurnState | None = None
        self.batch: list[Event] = []
        self.pos = 0

    def unseen(self) -> int:
        return _count_text(self.batch[self.pos :])


def _count_text(events: Iterable[Event]) -> int:
    return sum(type(event) is TextDelta for event in events)
