"""A notebook's records: the conversations `%%chat`, `%session` and chat panels write into
their outputs' metadata, and how they are read back and replayed into sessions.

Pure data (no IPython): the notebook layer writes and restores them in a kernel, and
Session.from_notebook reads a saved notebook's conversations with them. The modules:
`format` (a record, and how one found is checked), `read` (finding records in a notebook
file), `rebuild` (sessions rebuilt from them, by `replay()`). docs/notebook.md, "How a notebook's
conversations are rebuilt", tells the story.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .format import OPS, PANEL_OPS, Rebuilt, panel_entries, record
    from .read import KEY, Found, cell_sources, read_records, records
    from .rebuild import Limits, Made, Panel, Replayed, replay

__all__ = [
    "KEY",
    "OPS",
    "PANEL_OPS",
    "Found",
    "Limits",
    "Made",
    "Panel",
    "Rebuilt",
    "Replayed",
    "cell_sources",
    "panel_entries",
    "read_records",
    "record",
    "records",
    "replay",
]

_HOMES = {name: ".read" for name in ("KEY", "Found", "cell_sources", "read_records", "records")}
_HOMES |= {name: ".format" for name in ("OPS", "PANEL_OPS", "Rebuilt", "panel_entries", "record")}
_HOMES |= {name: ".rebuild" for name in ("Limits", "Made", "Panel", "Replayed", "replay")}


# the format and replay need pydantic's models: loaded when a record is first read or
# written, not by %load_ext in a notebook that has none
__getattr__ = _lazy.attributes(__name__, _HOMES)
