"""ChatPanel: a chat window on a Session, inside the notebook (widget.py).

Only ChatPanel is public. It is imported when first asked for, so that
`python -m agent_nb.notebook.panel.protocol` (which writes panel.js's tables) runs its
module without the widget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .widget import ChatPanel

__all__ = ["ChatPanel"]


def __getattr__(name: str) -> object:
    if name == "ChatPanel":
        from .widget import ChatPanel

        return ChatPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
