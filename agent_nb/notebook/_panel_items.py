"""The panel's messages as HTML, each rendered once: for the front end's items and the
output's transcript (refreshed after every turn, so a long session would otherwise be
rendered whole again each turn)."""

from __future__ import annotations

from ..messages import Message, ToolResultPart
from . import render


class RenderedMessages:
    """Each message's HTML (render.message_html), kept by message id while it is shown.

    A hit needs the same message (the very object, or an equal one: an id is only a name)
    and the same results for its tool calls (a call's block shows its result, which comes
    in a later message).
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Message, tuple[ToolResultPart | None, ...], str]] = {}

    def __call__(self, message: Message, results: dict[str, ToolResultPart]) -> str:
        answers = tuple(results.get(call.id) for call in message.tool_calls)
        kept = self._kept.get(message.id)
        if kept and (kept[0] is message or kept[0] == message) and kept[1] == answers:
            return kept[2]
        shown = render.message_html(message, results)
        self._kept[message.id] = (message, answers, shown)
        return shown

    def items(self, messages: list[Message], start: int) -> list[dict[str, str]]:
        """Messages from `start` on as the panel shows them: {"id", "role", "html"}, tool
        results inside their calls' blocks. Forgets the messages no longer in `messages`."""
        ids = {m.id for m in messages}
        for gone in [i for i in self._kept if i not in ids]:
            del self._kept[gone]
        results = {r.tool_call_id: r for m in messages for r in m.tool_results}
        items = []
        for message in messages[start:]:
            shown = self(message, results)
            if shown:
                items.append({"id": message.id, "role": message.role, "html": shown})
        return items
