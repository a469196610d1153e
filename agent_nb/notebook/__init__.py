"""The notebook layer: magics, live rendering, conversations saved in the notebook."""

from __future__ import annotations

import sys
from argparse import Namespace
from typing import Any

_loaded: dict[int, Any] = {}  # the magics registered in each shell, by its id


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext agent_nb`: register the magics and restore this notebook's sessions."""
    from .magics import ChatError, ChatMagics
    from .workspace import Workspace, notebook_path

    if id(ipython) in _loaded:
        return
    workspace = Workspace.load(ipython)
    magics = ChatMagics(ipython, workspace)
    ipython.register_magics(magics)
    completer = getattr(ipython, "Completer", None)
    if completer is not None:  # %session's and %%chat's arguments
        completer.custom_matchers.append(magics.complete)
    _loaded[id(ipython)] = magics
    ipython.events.register("pre_run_cell", workspace.cells.before_cell)
    magics.figures.install()
    if notebook_path(ipython.user_ns) is not None:
        try:
            magics.commands.do_restore(Namespace(path=None), quiet=True)
        except ChatError as exc:  # a notebook we cannot read must not break loading
            print(f"agent_nb: {exc}", file=sys.stderr)
        except Exception as exc:  # nor must a fault of ours; say what it was, in a line
            print(
                f"agent_nb: restoring this notebook's sessions failed ({type(exc).__name__}: "
                f"{exc}); nothing was restored (a bug in agent_nb: please report it)",
                file=sys.stderr,
            )
    from .._prices import preload

    preload()  # the price table loads on its thread while the user writes a first prompt


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext agent_nb`: remove the magics; the kernel's sessions go with them."""
    from .workspace import Workspace

    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    ipython.events.unregister("pre_run_cell", magics.workspace.cells.before_cell)
    Workspace.unload(ipython)
    magics.figures.uninstall()
    completer = getattr(ipython, "Completer", None)
    if completer is not None and magics.complete in completer.custom_matchers:
        completer.custom_matchers.remove(magics.complete)
    registry = ipython.magics_manager.magics
    for kind, names in (("line", ("agent", "session")), ("cell", ("chat",))):
        for name in names:
            registry[kind].pop(name, None)
