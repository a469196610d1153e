"""Streams of a turn's events: Stream and AsyncStream, and their structured-output forms."""

from __future__ import annotations

import json
import time
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
    """Structured output as it grows: each new value the JSON so far validates as.

    Past its first _SMALL characters (each delta shows), the JSON so far is parsed again at
    the end of a piece that arrived (a batch of events) once it has grown by half since the
    last parse, or `_pause` times that parse's cost has passed: the work stays linear in the
    answer's length, however small its deltas, and a slow answer still shows progress.
    """

    #: After a parse, a parse made only because time passed waits this many times its cost.
    _pause = 8

    def __init__(self, output: OutputType) -> None:
        self._output = output
        self._pieces: list[str] = []  # the text of the answer so far, not yet joined
        self._size = 0  # its length
        self._parsed = 0  # its length at the last parse
        self._due = 0.0  # when a parse is due, however little the text grew
        self._last: Any = None

    def add(self, event: Event, end: bool) -> Any:
        """The new partial value `event` makes, or None if nothing new. `end`: the event is
        the last of the piece that arrived."""
        kind = type(event)
        if kind is TextDelta:
            self._pieces.append(event.text)
            self._size += len(event.text)
            if self._size <= _SMALL or (end and self._due_now()):
                return self._parse()
            return None
        if kind is Done:
            final = event.response.output
            return None if final == self._last else final
        if kind is ToolCall:  # the JSON comes after the tools
            self._pieces, self._size, self._parsed = [], 0, 0
        return None

    def add_texts(self, batch: list[Event], start: int) -> tuple[bool, Any]:
        """Take the rest of a piece that arrived, `batch[start:]`, at once if it is all text
        past the first _SMALL characters: (taken, the new partial value or None)."""
        if self._size <= _SMALL:
            return False, None
        texts = [event.text for event in batch[start:] if type(event) is TextDelta]
        if len(texts) != len(batch) - start:
            return False, None
        self._pieces += texts
        self._size += sum(map(len, texts))
        return True, (self._parse() if self._due_now() else None)

    def _due_now(self) -> bool:
        size = self._size
        return (size - self._parsed) * 2 >= size or time.monotonic() >= self._due

    def _parse(self) -> Any:
        started = time.monotonic()
        text = "".join(self._pieces)
        value = self._output.partial(text)
        if value is None and (rest := _after_json(text)) is not None:
            text = rest  # a whole answer, then more: a retry, a new answer
            value = self._output.partial(text)
        self._pieces, self._size, self._parsed = [text], len(text), len(text)
        ended = time.monotonic()
        self._due = ended + (ended - started) * self._pause
        if value is None or value == self._last:
            return None
        self._last = value
        return value


#: An answer this long is parsed at every delta.
_SMALL = 1024
_DECODER = json.JSONDecoder()


def _after_json(text: str) -> str | None:
    """What follows a whole JSON value at the start of `text` (past whitespace), if
    anything does: the start of another answer."""
    start = len(text) - len(text.lstrip())
    try:
        end = _DECODER.raw_decode(text, start)[1]
    except (ValueError, RecursionError):
        return None
    rest = text[end:]
    return rest if rest.strip() else None


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
        stream, channel, partials = self._stream, self._stream._channel, self._partials
        while True:
            batch, pos = channel.batch, channel.pos
            if pos < len(batch):
                taken, value = partials.add_texts(batch, pos)
                if taken:
                    channel.pos = len(batch)  # each one taken, as next() takes them
                    if value is not None:
                        return value
                    continue
            value = partials.add(next(stream), channel.pos == len(channel.batch))
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
        stream, reader, partials = self._stream, self._stream._reader, self._partials
        while True:
            batch, pos = reader.batch, reader.pos
            if pos < len(batch):
                taken, value = partials.add_texts(batch, pos)
                if taken:
                    reader.pos = len(batch)  # each one taken, as __anext__ takes them
                    if value is not None:
                        return value
                    continue
            event = await stream.__anext__()
            value = partials.add(event, reader.pos == len(reader.batch))
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
