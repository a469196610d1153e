"""The images a %%chat cell sends: `--image PATH`, `--plot` (the last matplotlib figure) and
pictures named in the prompt (`{fig}`), each checked before anything is sent."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..errors import ImageError

if TYPE_CHECKING:
    from ..messages import ImagePart


class Figures:
    """Remembers the last matplotlib figure a cell drew, for `--plot`.

    The inline backend closes a cell's figures after showing them (in a `post_execute`
    callback), so the figure is taken just before: this callback is kept first in line.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.last: Any = None

    def install(self) -> None:
        self.shell.events.register("pre_execute", self.first_in_line)
        self.shell.events.register("post_execute", self.remember)

    def uninstall(self) -> None:
        for event, callback in (
            ("pre_execute", self.first_in_line),
            ("post_execute", self.remember),
        ):
            if callback in self.shell.events.callbacks.get(event, []):
                self.shell.events.unregister(event, callback)

    def first_in_line(self) -> None:
        callbacks = self.shell.events.callbacks["post_execute"]
        if callbacks and callbacks[0] != self.remember and self.remember in callbacks:
            callbacks.remove(self.remember)
            callbacks.insert(0, self.remember)

    def remember(self) -> None:
        figure = _open_figure()
        if figure is not None:
            self.last = figure

    def current(self) -> Any:
        """The figure open now, else the last one a cell drew; ImageError if there is none."""
        figure = _open_figure() or self.last
        if figure is None:
            raise ImageError(
                "--plot: no matplotlib figure to send; draw one in a cell above "
                "(plt.plot(...)), or name an image file with --image PATH"
            )
        return figure


def _open_figure() -> Any:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or not pyplot.get_fignums():
        return None
    return pyplot.gcf()


def attached(paths: list[str] | None, plot: bool, figures: Figures) -> list[ImagePart]:
    """The images of `--image PATH` (each) and `--plot`, in that order."""
    from .._images import image_part  # the images' checks: loaded when a cell sends one

    images = [image_part(path, f"--image {path}") for path in paths or ()]
    if plot:
        images.append(image_part(figures.current(), "--plot"))
    return images
