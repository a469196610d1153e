"""The panel's messages as HTML, each rendered once: for the front end's items and for the
output's transcript (refreshed after every turn: a long session would otherwise be rendered
whole again each turn; 500 messages cost ~100 ms so, ~1 ms from here).

An item is what the front end shows of a message: {"id", "role", "html"}, a round's tool
results inside its calls' cards (cards.py)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ... import _render as render
from ...messages import Message, ToolResultPart
from . import cards


class RenderedMarkdown:
    """render.html, kept by text: the items and the transcript render each text once."""

    def __init__(self) -> None:
        self._kept: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        shown = self._kept.get(text)
        if shown is None:
            shown = self._kept[text] = render.html(text)
        return shown

    def keep_only(self, messages: list[Message]) -> None:
        """Forget the texts of no message in `messages`."""
        texts = {m.text for m in messages}
        for gone in [t for t in self._kept if t not in texts]:
            del self._kept[gone]


class RenderedMessages:
    """HTML kept by message id: `get(message, key, make, *args)` is make(*args) for
    `message` until the message or `key` (whatever else its HTML depends on) changes.

    A hit needs the same message (the very object, or an equal one: an id is only a name).
    `markdown` renders the texts (shared by the panel's two).
    """

    def __init__(self, markdown: RenderedMarkdown) -> None:
        self._kept: dict[str, tuple[Message, Hashable, str]] = {}
        self.markdown = markdown

    def get(self, message: Message, key: Hashable, make: Callable[..., str], *args: Any) -> str:
        kept = self._kept.get(message.id)
        if kept and (kept[0] is message or kept[0] == message) and kept[1] == key:
            return kept[2]
        shown = make(*args)
        self._kept[message.id] = (message, key, shown)
        return shown

    def keep_only(self, messages: list[Message]) -> None:
        """Forget the messages not in `messages` (another session, an undone turn)."""
        ids = {m.id for m in messages}
        for gone in [i for i in self._kept if i not in ids]:
            del self._kept[gone]
        self.markdown.keep_only(messages)

    def message_html(self, message: Message, results: dict[str, ToolResultPart]) -> str:
        """render.message_html, kept (a render.Shown, for the transcript)."""
        answers = tuple(results.get(call.id) for call in message.tool_calls)
        return self.get(message, answers, render.message_html, message, results, self.markdown)


def items_of(
    messages: list[Message], start: int, decided: dict[str, bool], rendered: RenderedMessages
) -> list[dict[str, str]]:
    """Messages from `start` on as the panel shows them: {"id", "role", "html"}, tool
    results inside their calls' cards; `decided`: calls approved or denied, still waiting."""
    waiting = cards.waiting_ids(messages)
    items = []
    for at in range(start, len(messages)):
        message = messages[at]
        if message.role == "assistant":
            # a round's results are in the message after it (servers reuse call ids)
            after = messages[at + 1] if at + 1 < len(messages) else None
            results = {r.tool_call_id: r for r in after.tool_results} if after else {}
            last_round = at == len(messages) - 2
            calls = [c.id for c in message.tool_calls]
            key = (
                tuple(results.get(c) for c in calls),
                last_round and tuple((c in waiting, decided.get(c)) for c in calls),
            )
            shown = rendered.get(
                message,
                key,
                cards.answer_html,
                message,
                results,
                waiting if last_round else set(),
                decided if last_round else {},
                rendered.markdown,
            )
        elif message.role in ("user", "system"):
            shown = rendered.get(message, None, render.message_html, message, {}, rendered.markdown)
        else:
            continue
        if shown:
            items.append({"id": message.id, "role": message.role, "html": shown})
    return items
