"""The context window where a notebook user looks: the gauge in the %%chat and ChatPanel
footers, the notice of a request a server cut in silence, and %session's account of it.

Everything here is built from figures and fixed words, escaped into HTML (no model text):
the footers take it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import _render as render
from .._context import CUT_ADVICE
from ..messages import _count

if TYPE_CHECKING:
    from .._context import ContextReport
    from ..messages import Message
    from ..session import Session

#: The gauge past 80% full, and the notice of a cut request, in a cell: an inline style (a
#: cell's output keeps no stylesheet of ours; its sanitizer keeps `color`), in the
#: highlighting palette's orange (_render.py), which reads on JupyterLab's light and dark
#: backgrounds alike (contrast 4.4:1 on white, 4.3:1 on #111, 3.7:1 on #212121).
WARNING_STYLE = "color:#b9610a;font-weight:bold"
#: The same in the panel: its stylesheet's class (panel.css), an orange for each theme
#: (4.5:1 at least on its background in both, as every text of the panel).
PANEL_WARNING = 'class="agent-nb-panel-warning"'
_CELL_WARNING = f'style="{WARNING_STYLE}"'


def report(session: Session) -> ContextReport | None:
    """`session.context()`: after a turn, the report its last request kept (cheap); None if
    it cannot be had (a footer never fails the turn it describes)."""
    try:
        return session.context()
    except Exception:  # a server's window that cannot be probed, a setting gone bad
        return None


def facts(found: ContextReport | None, warning: str = _CELL_WARNING) -> list[str]:
    """The footer's facts (HTML): "context 62% of 128k", in the warning style past 80%, and
    how many history messages the last request left out. Nothing for an unknown window: the
    footer already gives the turn's tokens, and a gauge needs the window it measures against
    (%session info says what is known). `warning`: the warning's attribute (a cell's
    inline style, or PANEL_WARNING)."""
    if found is None:
        return []
    shown = []
    if found.window:
        gauge = f"context {render.escaped(found.gauge())}"
        if found.warning:
            gauge = f"<span {warning}>⚠ {gauge}</span>"
        shown.append(gauge)
    if found.left_out:
        how = "summary" if found.summary else found.policy
        shown.append(f"left out {_count(found.left_out, 'earlier message')} ({how})")
    return shown


def cut(messages: Iterable[Message]) -> str | None:
    """What a server that cut the turn's request in silence did, as the answer's metadata
    says (the last of `messages` that says it; None: none did)."""
    found = None
    for message in messages:
        said = message.metadata.get("context_truncated") if message.role == "assistant" else None
        if isinstance(said, str) and said:
            found = said
    return found


def notice(problem: str, warning: str = _CELL_WARNING) -> tuple[str, str]:
    """The one-line notice of a cut request: (HTML, plain text)."""
    plain = f"⚠ {problem}. {CUT_ADVICE}."
    return f"<p><span {warning}>{render.escaped(plain)}</span></p>\n", plain


def last_turn(messages: list[Message]) -> list[Message]:
    """The history's last turn: from its last prompt on."""
    starts = [i for i, m in enumerate(messages) if m.role == "user"]
    return messages[starts[-1] :] if starts else messages


def described(found: ContextReport | None) -> str:
    """%session info's line: the report, or why there is none."""
    if found is None:
        return "not known (the model's window could not be had)"
    line = str(found)
    if not found.window:
        line += "; say the window with Agent(context_window=...) for a gauge"
    return line


def hint(error: Exception, policy: Any) -> str:
    """A request refused for the window under context='error' (`policy`: the one in
    effect): the policies as a notebook sets them ("" otherwise)."""
    from ..errors import ContextWindowError

    if not isinstance(error, ContextWindowError) or policy != "error":
        return ""
    return (
        ". In this notebook: `%%chat --context trim` (or summarize) for this cell, "
        "`%agent ... context=trim` for every session"
    )
