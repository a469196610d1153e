"""The notebook layer's errors: a short message in place of a traceback."""

from __future__ import annotations


class ChatError(Exception):
    """A short, clear message in place of a traceback; stops "Run all" like any error."""

    def _render_traceback_(self) -> list[str]:
        from .. import _render as render

        return [f"\x1b[31m{type(self).__name__}: {render.clean(str(self))}\x1b[0m"]


class Interrupted(ChatError):
    """The stop button was pressed; what was shown is kept."""
