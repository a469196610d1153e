"""The comm between a ChatPanel and its views: every message, both ways, named here once.

Besides its synced traits (`session_id`, `busy`, `_fallback_id`), the panel talks to its
views in custom messages, each a JSON object whose `type` is its kind:

kernel -> view (ToView)
  reset     items, [error, retry]: the whole conversation (and the last turn's notes)
  append    items: the messages new in the session (they replace the live answer)
  controls  current, sessions, branches, footer, last_prompt, can_undo: the session's id,
            the switchers, the footer, the prompt that ↑ recalls, whether Undo has a turn
  editing   id, text: a prompt's text, to edit (Send then forks there)
  start     user: a prompt is on its way (its HTML; "" for a resumed round)
  delta     done, tail: finished blocks of the streaming answer, appended once, and the
            re-rendered tail since the last block (null: unchanged)
  card      call, html: a tool call's card with its result, in place of the call's
  end       error, retry: the turn's error (HTML, "" for none), whether Retry can do it again

view -> kernel (ToKernel)
  hello       a view opened: send it the conversation
  send        text, [edit]: the prompt (with `edit`: fork before that prompt and send there)
  stop        stop the answer
  undo        drop the last turn
  regenerate  id: answer the last prompt again (the answer `id` stays, in a branch)
  edit        id: the front end wants prompt `id`'s text
  approve     call, id, [always]: approve waiting call `call` of message `id` (with
              `always`: true, and let its tool run without asking, in this session)
  deny        call, id: deny it
  retry       do again what failed
  switch      session: show that session
  new         show a new session
  rename      name: the session shown is called `name` from now on

Items are {"id", "role", "html"} (items.py). Every piece of HTML is rendered and sanitized in
the kernel; the front end only inserts it. panel.js holds the same two tables, generated from
these (`python -m agent_nb.notebook.panel.protocol` writes them there; a test checks that they
agree), and dispatches what comes from a table keyed by them, as `receive` does here.
"""

from __future__ import annotations

import enum
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .controls import Controls


class ToView(enum.StrEnum):
    """What the kernel sends the views."""

    RESET = "reset"
    APPEND = "append"
    CONTROLS = "controls"
    EDITING = "editing"
    START = "start"
    DELTA = "delta"
    CARD = "card"
    END = "end"


class ToKernel(enum.StrEnum):
    """What the views send the kernel."""

    HELLO = "hello"
    SEND = "send"
    STOP = "stop"
    UNDO = "undo"
    REGENERATE = "regenerate"
    EDIT = "edit"
    APPROVE = "approve"
    DENY = "deny"
    RETRY = "retry"
    SWITCH = "switch"
    NEW = "new"
    RENAME = "rename"


def message(kind: ToView, **fields: Any) -> dict[str, Any]:
    """A message to the views, as the comm carries it."""
    return {"method": "custom", "content": {"type": kind.value, **fields}}


def receive(controls: Controls, content: Any) -> None:
    """Do what a message from a view asks; anything else (not a known kind) is ignored."""
    if not isinstance(content, dict):
        return
    kind = content.get("type")
    handle = _RECEIVED.get(kind) if isinstance(kind, str) else None
    if handle is not None:
        handle(controls, content)


def _send(controls: Controls, content: dict[str, Any]) -> None:
    text = content.get("text")
    if not isinstance(text, str) or not text.strip():
        return
    if "edit" in content:
        controls.send_edited(content["edit"], text)
    else:
        controls.send(text)


#: The kernel's side of the views' messages: kind -> what it does (c: the panel's controls,
#: m: the message).
_RECEIVED: dict[str, Callable[[Controls, dict[str, Any]], None]] = {
    ToKernel.HELLO: lambda c, m: c.hello(),
    ToKernel.SEND: _send,
    ToKernel.STOP: lambda c, m: c.stop(),
    ToKernel.UNDO: lambda c, m: c.undo(),
    ToKernel.REGENERATE: lambda c, m: c.regenerate(m.get("id")),
    ToKernel.EDIT: lambda c, m: c.edit(m.get("id")),
    ToKernel.APPROVE: lambda c, m: c.decide(
        m.get("call"), True, m.get("id"), m.get("always") is True
    ),
    ToKernel.DENY: lambda c, m: c.decide(m.get("call"), False, m.get("id")),
    ToKernel.RETRY: lambda c, m: c.retry(),
    ToKernel.SWITCH: lambda c, m: c.choose(m.get("session")),
    ToKernel.NEW: lambda c, m: c.new_session(),
    ToKernel.RENAME: lambda c, m: c.rename(m.get("name")),
}


def js() -> str:
    """The two tables as panel.js holds them, between its markers (generated: see _write_js)."""
    lines = [_JS_BEGIN]
    for name, kinds in (("TO_VIEW", ToView), ("TO_KERNEL", ToKernel)):
        lines.append(f"const {name} = Object.freeze({{")
        lines.extend(f'  {kind.value}: "{kind.value}",' for kind in kinds)
        lines.append("});")
    lines.append(_JS_END)
    return "\n".join(lines) + "\n"


_JS_BEGIN = "// <protocol> generated by `python -m agent_nb.notebook.panel.protocol`"
_JS_END = "// </protocol>"
_PANEL_JS = pathlib.Path(__file__).with_name("panel.js")


def _write_js() -> bool:
    """Put js() in panel.js in place of its tables; whether that changed the file."""
    source = _PANEL_JS.read_text(encoding="utf-8")
    start = source.index(_JS_BEGIN)
    end = source.index(_JS_END, start) + len(_JS_END) + 1
    updated = source[:start] + js() + source[end:]
    if updated != source:
        _PANEL_JS.write_text(updated, encoding="utf-8")
    return updated != source


if __name__ == "__main__":
    print(f"{_PANEL_JS}: {'updated' if _write_js() else 'up to date'}")
