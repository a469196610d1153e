"""ChatPanel: a chat window on a Session, inside the notebook (widget.py)."""

from .widget import ChatPanel

__all__ = ["ChatPanel"]
