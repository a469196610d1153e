"""Finding records in a notebook: each output's record, with the cell it is in."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..messages import _short

#: The key of agent_nb's records in output metadata.
KEY = "agent_nb"


def cell_sources(path: Path) -> list[str] | None:
    """The text of each code cell of the notebook saved at `path`, or None if unreadable."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(cells, list):
        return None
    return [
        _source(cell.get("source"))
        for cell in cells
        if isinstance(cell, Mapping) and cell.get("cell_type") == "code"
    ]


@dataclass(frozen=True)
class Found:
    """A record as found in a notebook: where it is, and what it holds (anything at all)."""

    where: str
    entry: Any
    problem: str | None = None  # set when the cell itself could not be read
    cell_id: str | None = None
    source: str = ""


def read_records(path: str | Path) -> list[Found]:
    """agent_nb's records in the notebook saved at `path`, in cell order. Raises OSError,
    UnicodeDecodeError or UnreadableNotebook (stores._ipynb) when the file cannot be read."""
    from ..stores import _ipynb

    text = Path(path).read_text(encoding="utf-8")
    with paused_gc():
        notebook = _ipynb.read_for_records(text)
        return records(notebook.node, notebook.damaged_cells)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a notebook's records are read and replayed: they
    make a great many objects and no cycles, and each collection would walk them all again
    (a restore of a 10 MB notebook took twice as long)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def records(notebook: Any, damaged: Mapping[int, str] | None = None) -> list[Found]:
    """agent_nb's records in a notebook, in cell order; `damaged`: unreadable cells by index."""
    found = []
    cells = notebook.get("cells") if isinstance(notebook, Mapping) else None
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        where = _cell_name(index, cell)
        if damaged and index in damaged:
            found.append(Found(where, None, damaged[index]))
            continue
        outputs = cell.get("outputs") if isinstance(cell, Mapping) else None
        for output in outputs if isinstance(outputs, list) else []:
            metadata = output.get("metadata") if isinstance(output, Mapping) else None
            if isinstance(metadata, Mapping) and KEY in metadata:
                cell_id = cell.get("id")
                found.append(
                    Found(
                        where,
                        metadata[KEY],
                        cell_id=cell_id if isinstance(cell_id, str) else None,
                        source=_source(cell.get("source")),
                    )
                )
    return found


def _source(source: Any) -> str:
    """A cell's source as text: a string, or a list of strings joined ("" for anything else:
    plain JSON reads a file as it is, without nbformat's joining, which refused it)."""
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    return source if isinstance(source, str) else ""


def _cell_name(index: int, cell: Any) -> str:
    """`cell 3 (In [5], id 'a1b2')`: the cell's position, execution count and id."""
    details = []
    if isinstance(cell, Mapping):
        count = cell.get("execution_count")
        if type(count) is int:
            details.append(f"In [{count}]")
        if isinstance(cell.get("id"), str):
            details.append(f"id {_short(cell['id'], 40)}")
    return f"cell {index + 1}" + (f" ({', '.join(details)})" if details else "")
