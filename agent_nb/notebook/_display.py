"""What the magics show in a cell's output: HTML with its record, or plain text in a terminal."""

from __future__ import annotations

from typing import Any

from .. import _render as render


def rich(shell: Any) -> bool:
    """Whether the front end shows HTML (anything but IPython in a terminal)."""
    return type(shell).__name__ != "TerminalInteractiveShell"


def show(shell: Any, shown: str, plain: str, metadata: dict[str, Any] | None) -> None:
    """`shown` (HTML) with its record in the output's metadata; `plain` in a terminal."""
    if rich(shell):
        from IPython.display import display

        display(
            render.display_data(shown, plain),
            raw=True,
            metadata=render.publishable(metadata) if metadata else {},
        )
    else:
        print(render.clean(plain))


def publish(shell: Any, markdown: str, metadata: dict[str, Any] | None) -> None:
    """A short message of ours (Markdown, with ids in it) and its record."""
    show(shell, render.html(markdown), markdown, metadata)
