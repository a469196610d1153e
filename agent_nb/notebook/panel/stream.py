"""The answer as it streams into the panel's views: `delta` and `card` messages.

Blocks are cut and rendered as `%%chat` cuts them (live.py's MarkdownTail): each finished
block is sent once (`done`), and the tail re-rendered (`tail`) at most every UPDATE_INTERVAL
and only while the bytes stay within live.py's budget (its Throttle), so a long answer costs
a few times its size over the comm, not its square. A tool call's card is a finished block;
the card with its result takes its place when the result comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ...messages import ToolResultPart, tool_server
from ...session import Session
from ..live import MESSAGE_BYTES, MarkdownTail, Throttle
from . import cards
from .protocol import ToView

#: Bytes the tail may cost beyond BYTE_BUDGET per character received (a short answer's
#: tail refreshes at the full rate; then the budget rules).
BYTE_ALLOWANCE = 20_000

#: How the panel sends a message to its views: post(kind, **fields).
Post = Callable[..., None]


async def stream(
    session: Session, prompt: str | None, post: Post, images: Sequence[Any] = ()
) -> Any:
    """Run a turn of `session` (`prompt` with `images`; None: resume the approved calls),
    sending the answer to the views as it comes; the turn's Response."""
    deltas = _Deltas(post)
    sent = {"images": list(images)} if images else {}
    turn = session.stream_async(prompt, **sent) if prompt else session.stream_resume_async()
    # by call id: a result's card shows its call's arguments and server too (a resume's
    # calls are the waiting ones: no tool_call event comes for them)
    waiting = session.pending_approvals
    sources = session.messages[-2].metadata.get("tool_sources") if waiting else None
    arguments = {c.id: c.arguments_json() for c in waiting}
    servers = {c.id: tool_server(sources, c.id) for c in waiting}
    async for event in turn:
        if event.type == "text_delta":
            deltas.text(event.text)
        elif event.type == "tool_call":
            arguments[event.id], servers[event.id] = event.arguments, event.server
            card = cards.tool_card(event.id, event.name, event.arguments, server=event.server)
            deltas.block(card)
        elif event.type == "tool_result":
            call = event.tool_call_id
            result = ToolResultPart(
                tool_call_id=call,
                name=event.name,
                content=event.content,
                is_error=event.is_error,
            )
            shown = cards.tool_card(
                call, event.name, arguments.get(call, {}), result, server=servers.get(call)
            )
            post(ToView.CARD, call=call, html=shown)  # in place of the call's card
    return turn.response


class _Deltas:
    """The streaming answer as `delta` messages: finished blocks once, the tail again."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self._tail = MarkdownTail()
        self._done: list[str] = []  # finished blocks not sent yet
        self._throttle = Throttle(BYTE_ALLOWANCE)

    def text(self, delta: str) -> None:
        self._tail.add(delta)
        self._throttle.received += len(delta)
        self._finished(self._tail.cut())
        self._flush()

    def block(self, shown: str) -> None:
        """A whole block of HTML (a tool call): the text before it is finished."""
        self._finished(self._tail.end())
        self._finished(shown)
        self._flush(force=True)

    def _finished(self, shown: str) -> None:
        if shown:
            self._done.append(shown)

    def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self._throttle.due(now):
            return
        tail = None  # over budget (its HTML is no shorter than its text): finished blocks only
        if MESSAGE_BYTES + len(self._tail) <= self._throttle.room():
            tail = self._tail.html()
        elif not self._done:
            return
        done = "".join(self._done)
        self._done = []
        self._post(ToView.DELTA, done=done, tail=tail)
        self._throttle.sent += MESSAGE_BYTES + len(done) + len(tail or "")
        self._throttle.last = now
