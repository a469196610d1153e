"""An answer shown as it streams: throttled HTML in a kernel, plain text in a terminal.

A display update replaces a whole output, so re-sending the growing answer costs bytes that
grow with its square. Instead, finished blocks (cut only where Markdown allows: a blank line
outside any fenced block, before a line that starts a new block) are rendered once (render.py)
and frozen into outputs of their own, and only the tail is re-rendered and refreshed: at most
every UPDATE_INTERVAL, and only while the bytes sent stay within the budget below. The cell
ends as a few HTML outputs that together read as the one answer; the last carries the footer,
the turn's record and, as text/plain, the whole answer's text (so a plain-text reader sees it
once).

The cutting and rendering (MarkdownTail) and the pace (Throttle) are shared with the chat
panel, which sends the same finished blocks and tail as messages over its comm.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from typing import Any

from .._render import clean, display_data, html, publishable, tool_block, wrap

#: The display is refreshed at most this often while an answer streams.
UPDATE_INTERVAL = 0.05
#: Bytes sent to the front end before the end: at most BYTE_BUDGET per character received,
#: plus BYTE_ALLOWANCE (which lets a short answer refresh at the full rate). Each message
#: counts MESSAGE_BYTES more: what Jupyter wraps it in (headers, ids, dates).
BYTE_BUDGET = 6
BYTE_ALLOWANCE = 200_000
MESSAGE_BYTES = 1_000
#: Finished blocks are frozen into an output once they are this long, or 1/PART_FRACTION of
#: the answer so far, whichever is more (so a long answer stays a handful of outputs:
#: JupyterLab hides all but the first 50 outputs of a cell).
MIN_PART = 1_500
PART_FRACTION = 10
MAX_PARTS = 40

#: Ends every frozen part: JupyterLab gives an output's last element half the usual bottom
#: margin, so an empty last element keeps the gap between parts that between paragraphs.
PART_END = "<div></div>\n"

#: Under the answer while it streams; the last update, with the footer, has none.
STREAMING = '<p class="agent-nb-streaming"><sub>streaming…</sub></p>\n'

#: What each message costs besides the HTML of the answer: Jupyter's wrapping and ours.
_ENVELOPE = MESSAGE_BYTES + len(wrap(""))

_FENCE_OPEN = re.compile(r" {0,3}(?:(`{3,})[^`]*|(~{3,}).*|(\$\$)[ \t]*)$")


class _Blocks:
    """Finds where a growing Markdown text may be cut without changing how it renders."""

    def __init__(self) -> None:
        self.scanned = 0  # the text before this offset has been read, line by line
        self.fence: str | None = None  # the marker of the fenced block we are in
        self.blank = False  # the last line read was blank

    def last_cut(self, text: str) -> int:
        """The last offset in `text` that starts a new top-level block (0: none)."""
        cut = 0
        end = text.rfind("\n") + 1
        position = self.scanned
        while position < end:
            newline = text.index("\n", position)
            line = text[position:newline]
            if self.fence is not None:
                stripped = line.strip()
                if stripped.startswith(self.fence) and not stripped.strip(self.fence[0]):
                    self.fence = None
            elif not line.strip():
                self.blank = True
            else:
                if self.blank and not line[0].isspace():
                    cut = position
                self.blank = False
                opened = _FENCE_OPEN.match(line)
                if opened:
                    self.fence = next(marker for marker in opened.groups() if marker)
            position = newline + 1
        self.scanned = end
        rest = text[end:]
        if self.fence is None and self.blank and rest[:1].strip():
            cut = end  # the next block has begun: what precedes it is complete
        return cut

    def shift(self, cut: int) -> None:
        self.scanned -= cut


class MarkdownTail:
    """A growing Markdown text: finished blocks rendered once, the rest (its tail) on demand.

    The one streaming-Markdown tail of the package: `%%chat`'s live output and the chat
    panel's deltas both cut and render an answer with it.
    """

    def __init__(self) -> None:
        self._text: list[str] = []  # the text since the last cut
        self._blocks = _Blocks()

    def __len__(self) -> int:
        return sum(map(len, self._text))

    def add(self, delta: str) -> None:
        self._text.append(delta)

    def cut(self) -> str:
        """The HTML of the blocks finished since the last cut ("": none); they leave the tail."""
        if not self._text:
            return ""
        text = "".join(self._text)
        cut = self._blocks.last_cut(text)
        done = ""
        if cut:
            done = html(text[:cut])
            self._blocks.shift(cut)
            text = text[cut:]
        self._text = [text] if text else []
        return done

    def end(self) -> str:
        """The text is complete (a tool call follows): the HTML of all the tail, now finished."""
        text = "".join(self._text)
        self._text = []
        self._blocks = _Blocks()
        return html(text) if text else ""

    def html(self) -> str:
        """The tail rendered, as it stands."""
        text = "".join(self._text)
        return html(text) if text else ""


class Throttle:
    """When a streaming display may send: at most every UPDATE_INTERVAL, and only while the
    bytes sent stay within BYTE_BUDGET per character received plus `allowance`."""

    def __init__(self, allowance: int = 0) -> None:
        self.allowance = allowance
        self.received = 0  # characters of the answer so far
        self.sent = 0  # bytes sent to the front end so far
        self.last = 0.0  # when the display was last refreshed (time.monotonic)

    def due(self, now: float) -> bool:
        return now - self.last >= UPDATE_INTERVAL

    def room(self) -> int:
        """The bytes the budget has left."""
        return BYTE_BUDGET * self.received + self.allowance - self.sent


class LiveHTML:
    """An answer streaming into a notebook cell through display ids."""

    def __init__(self) -> None:
        self._text: list[str] = []  # all the text, for the plain-text version at the end
        self._done: list[str] = []  # the HTML of finished blocks not yet in an output
        self._done_size = 0
        #: call id -> [name, arguments, result, error, server]: tool_block's arguments
        self._tools: dict[str, list[Any]] = {}
        self._tail = MarkdownTail()  # the current message's text since the last cut
        self._throttle = Throttle(BYTE_ALLOWANCE)
        self._display_id: str | None = None
        self._parts = 0

    # -- what arrives -------------------------------------------------------------------------

    def text(self, delta: str) -> None:
        self._tail.add(delta)
        self._text.append(delta)
        self._arrived(len(delta))

    def tool_call(
        self, call_id: str, name: str, arguments: dict[str, Any], server: str | None = None
    ) -> None:
        self._end_text()
        self._tools[call_id] = [name, arguments, None, False, server]
        self._arrived(len(name) + len(str(arguments)))

    def tool_result(self, call_id: str, content: str, is_error: bool) -> None:
        if call_id in self._tools:
            self._tools[call_id][2:4] = [content, is_error]
        if all(tool[2] is not None for tool in self._tools.values()):
            for tool in self._tools.values():
                self._add_done(tool_block(*tool))
            self._tools.clear()
        self._arrived(len(content))

    def finish(
        self,
        footer: str,
        metadata: dict[str, Any] | None,
        *,
        shown: str | None = None,
        plain: str | None = None,
        empty: str = "",
    ) -> None:
        """The last update: what is left, the footer and the record (or the HTML `shown`).

        `footer` and `shown` are HTML; `empty` (Markdown) stands in for an answer of which
        nothing arrived.
        """
        if shown is None:
            shown, plain = self._live(), "".join(self._text)
            if not shown and not self._parts:
                shown = html(empty) if empty else ""
        self._publish(shown + footer, plain, metadata)

    # -- how it is shown ----------------------------------------------------------------------

    def _arrived(self, size: int) -> None:
        self._throttle.received += size
        now = time.monotonic()
        if self._throttle.due(now):
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        self._throttle.last = now
        self._add_done(self._tail.cut())
        if self._done_size >= max(MIN_PART, self._throttle.received // PART_FRACTION) and (
            self._parts < MAX_PARTS
        ):
            self._freeze()  # one message per refresh: the tail shows at the next
            return
        room = self._throttle.room() - _ENVELOPE - len(STREAMING)
        if self._done_size + len(self._tail) > room:
            return  # it cannot fit (HTML is no shorter than its text, give or take): no render
        shown = self._live()
        if shown.strip() and len(shown) <= room:
            self._publish(shown + STREAMING, None, None)

    def _end_text(self) -> None:
        """The message's text is complete: all of it is a finished block."""
        self._add_done(self._tail.end())

    def _add_done(self, rendered: str) -> None:
        if not rendered:
            return
        self._done.append(rendered)
        self._done_size += len(rendered)

    def _freeze(self) -> None:
        """Give the finished blocks an output of their own; the tail moves to a new one."""
        self._publish("".join(self._done) + PART_END, None, None)
        self._done, self._done_size = [], 0
        self._display_id = None
        self._parts += 1

    def _live(self) -> str:
        pending = "".join(tool_block(*tool) for tool in self._tools.values())
        return "".join(self._done) + pending + self._tail.html()

    def _publish(self, shown: str, plain: str | None, metadata: dict[str, Any] | None) -> None:
        from IPython.display import display, update_display

        data = display_data(shown, plain)  # plain: the whole answer, once, with the last output
        self._throttle.sent += sum(map(len, data.values())) + MESSAGE_BYTES
        metadata = publishable(metadata) if metadata else {}
        if self._display_id is None:
            self._display_id = uuid.uuid4().hex
            display(data, raw=True, display_id=self._display_id, metadata=metadata)
        else:
            update_display(data, raw=True, display_id=self._display_id, metadata=metadata)


class LivePlain:
    """An answer streaming into a terminal: the text as it comes, tool calls as lines."""

    def __init__(self) -> None:
        self._throttle = Throttle()
        self._wrote = False

    def text(self, delta: str) -> None:
        self._write(delta)

    def tool_call(
        self, call_id: str, name: str, arguments: dict[str, Any], server: str | None = None
    ) -> None:
        shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        where = f" (MCP server {server})" if server else ""
        self._write(f"\n[tool] {name}({shown}){where}\n")

    def tool_result(self, call_id: str, content: str, is_error: bool) -> None:
        first = content.splitlines()[0] if content else ""
        self._write(f"[tool] {'error: ' if is_error else '-> '}{first[:200]}\n")

    def finish(
        self,
        footer: str,
        metadata: dict[str, Any] | None,
        *,
        shown: str | None = None,
        plain: str | None = None,
        empty: str = "",
    ) -> None:
        if plain is not None and not self._wrote:
            sys.stdout.write(clean(plain))
        sys.stdout.write("\n")
        sys.stdout.flush()

    def _write(self, text: str) -> None:
        sys.stdout.write(clean(text))
        self._wrote = True
        now = time.monotonic()
        if self._throttle.due(now):
            sys.stdout.flush()
            self._throttle.last = now


def live_answer(*, rich: bool) -> LiveHTML | LivePlain:
    """The live display for a kernel with a front end (`rich`) or a terminal."""
    return LiveHTML() if rich else LivePlain()
