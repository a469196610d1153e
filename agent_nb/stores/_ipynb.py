"""A notebook file read part by part, so that one damaged part does not hide the others.

nbformat reads a notebook as one JSON document: a syntax error, or nesting deeper than
Python's recursion limit, anywhere in it makes the whole file unreadable. When that happens
the file is cut where nbformat and Jupyter always lay it out (keys sorted, one space of
indent per level), and each cell, and each session in `metadata["agent_nb"]["sessions"]`,
is read on its own. A file laid out otherwise is unreadable as a whole, as before.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

#: How deeply a recovered part may nest (the cell or the session is level 1); nbformat
#: copies what it reads recursively, so deeper parts are reported instead of read.
MAX_PART_DEPTH = 200

_KEY = re.compile(r'\s*("(?:[^"\\]|\\.)*")\s*:')
_CELL_COUNT = re.compile(r'^   "execution_count": (\d{1,9}),?$', re.M)
_CELL_ID = re.compile(r'^   "id": ("[A-Za-z0-9_-]{1,64}"),?$', re.M)


class UnreadableNotebook(ValueError):
    """The file is not a notebook, even read part by part; the message says why."""


@dataclass(frozen=True)
class Damaged:
    """A session that could not be read: what is wrong, and its text as it is in the file."""

    problem: str
    text: str


@dataclass
class Notebook:
    """A notebook as read: its NotebookNode, and the parts that could not be read.

    A damaged cell is an empty raw cell in `node`, its problem in `damaged_cells` (by the
    cell's position). A damaged session is None in `metadata["agent_nb"]["sessions"]`, and
    in `damaged_sessions` (by session id); `writes` puts its text back as it was.
    """

    node: Any
    damaged_cells: dict[int, str] = field(default_factory=dict)
    damaged_sessions: dict[str, Damaged] = field(default_factory=dict)


def writes(notebook: Notebook) -> str:
    """The notebook as nbformat writes it, with each damaged session (neither replaced nor
    deleted) written back as it was read."""
    import nbformat

    sessions = notebook.node.get("metadata", {}).get("agent_nb", {}).get("sessions", {})
    kept = {}
    for session_id, damaged in notebook.damaged_sessions.items():
        if session_id in sessions and sessions[session_id] is None:
            marker = f"agent_nb-damaged-{uuid.uuid4().hex}"
            sessions[session_id] = marker
            kept[marker] = damaged.text
    try:
        text = nbformat.writes(notebook.node)
    finally:
        for session_id in notebook.damaged_sessions:
            if isinstance(sessions.get(session_id), str):  # a marker of ours
                sessions[session_id] = None
    for marker, original in kept.items():
        text = text.replace(json.dumps(marker), original, 1)
    return text


def read(text: str, as_version: int) -> Notebook:
    """The notebook in `text`, converted to `as_version` (nbformat.NO_CONVERT: as it is)."""
    import nbformat

    whole = _too_deep(text)
    if whole is None:
        try:
            return Notebook(nbformat.reads(text, as_version=as_version))
        except Exception as exc:  # nbformat raises JSON, schema and version errors alike
            whole = _problem(exc)
    parts = _Parts.cut(text)
    if parts is None:
        raise UnreadableNotebook(whole)
    try:
        skeleton = json.loads(parts.skeleton)
        recovered = parts.fill(skeleton)
        node = nbformat.reads(json.dumps(recovered), as_version=as_version)
    except Exception:  # the damage is outside the parts read one by one
        raise UnreadableNotebook(whole) from None
    return Notebook(node, parts.damaged_cells, parts.damaged_sessions)


def read_for_records(text: str) -> Notebook:
    """The notebook in `text` for reading its cells' outputs, as plain JSON: not nbformat,
    whose first import costs about a second in a Jupyter kernel (jsonschema's format
    checkers), in `%load_ext` and in opening a panel. What plain JSON does not read as a
    version 4 notebook is read by `read` (its recovery, its errors)."""
    try:
        node = json.loads(text)
    except (ValueError, RecursionError):
        node = None
    if (
        isinstance(node, dict)
        and node.get("nbformat") == 4
        and isinstance(node.get("cells"), list)
        and isinstance(node.get("metadata"), dict)
        and _depth(node, MAX_PART_DEPTH + 2) <= MAX_PART_DEPTH + 2  # as in _too_deep
    ):
        return Notebook(node)
    return read(text, 4)


def _too_deep(text: str) -> str | None:
    """Why `text` must not reach nbformat, whose copy recurses a few frames a level: at the
    recursion limit, any finalizer that runs then (a garbage collection) fails as well."""
    try:
        node = json.loads(text)
    except (ValueError, RecursionError):
        return None  # nbformat's own error says what is wrong
    if _depth(node, MAX_PART_DEPTH + 2) > MAX_PART_DEPTH + 2:  # a cell is level 3
        return "it is nested too deeply to read"
    return None


def _problem(exc: BaseException) -> str:
    for error in (exc, exc.__cause__ or exc.__context__):
        if isinstance(error, json.JSONDecodeError):
            return f"it is not valid JSON ({error.msg}: line {error.lineno})"
        if isinstance(error, RecursionError):
            return "it is nested too deeply to read"
    return "it is not a Jupyter notebook (a JSON object with cells, metadata and nbformat)"


@dataclass
class _Parts:
    """The lines of a file cut into the cells, the sessions, and the rest (the skeleton)."""

    skeleton: str
    cells: list[tuple[int, str]]  # (the first line's number, the text)
    sessions: list[tuple[int, str]]
    damaged_cells: dict[int, str] = field(default_factory=dict)
    damaged_sessions: dict[str, Damaged] = field(default_factory=dict)

    @classmethod
    def cut(cls, text: str) -> _Parts | None:
        lines = text.splitlines(keepends=True)
        cut = []
        cells = _block(lines, 1, ' "cells": [', 1)
        if cells is not None:
            cut.append((*cells, 2, "{", False))
        metadata = _find(lines, cells[1] if cells else 1, ' "metadata": {', 1)
        ours = _find(lines, metadata + 1, '  "agent_nb": {', 2) if metadata is not None else None
        sessions = _block(lines, ours + 1, '   "sessions": {', 3) if ours is not None else None
        if sessions is not None:
            cut.append((*sessions, 4, '"', True))
        if not cut:
            return None
        skeleton, found = [], {False: [], True: []}
        at = 0
        for first, last, indent, opener, is_session in cut:
            skeleton += lines[at : first + 1]
            regions = _regions(lines, first + 1, last, indent, opener)
            if regions is None:
                return None
            found[is_session] = regions
            at = last
        skeleton += lines[at:]
        return cls("".join(skeleton), found[False], found[True])

    def fill(self, skeleton: Any) -> Any:
        """`skeleton` with the cells and sessions read one by one put back."""
        cells = []
        for index, (line, text) in enumerate(self.cells):
            cell, problem = _part(text.strip().removesuffix(","), line)
            if problem is None and not isinstance(cell, dict):
                problem = "it is not a cell (a JSON object)"
            if problem is not None:
                self.damaged_cells[index] = problem
                cell = _stand_in(text, index)
            cells.append(cell)
        skeleton["cells"] = cells
        if self.sessions:
            sessions = skeleton["metadata"]["agent_nb"]["sessions"]
            for line, text in self.sessions:
                item = text.strip().removesuffix(",")
                entry, problem = _part("{" + item + "}", line)
                if problem is not None:
                    name = _KEY.match(item)
                    if name is None:
                        raise ValueError("a session without a readable id")
                    session_id = json.loads(name.group(1))
                    value = item[name.end() :].strip()
                    self.damaged_sessions[session_id] = Damaged(problem, value)
                    entry = {session_id: None}
                sessions.update(entry)
        return skeleton


def _stand_in(text: str, index: int) -> dict[str, Any]:
    """An empty code cell in place of a damaged one, with its id and count if they show."""
    count = _CELL_COUNT.search(text)
    name = _CELL_ID.search(text)
    return {
        "cell_type": "code",
        "execution_count": int(count.group(1)) if count else None,
        "id": json.loads(name.group(1)) if name else f"damaged-{index}",
        "metadata": {},
        "outputs": [],
        "source": "",
    }


def _find(lines: list[str], start: int, opening: str, indent: int) -> int | None:
    """The index of the line `opening`, before the block of depth `indent - 1` ends."""
    for index in range(start, len(lines)):
        line = lines[index].rstrip()
        if line == opening:
            return index
        if _indent(line) < indent and line.strip():
            return None
    return None


def _block(lines: list[str], start: int, opening: str, indent: int) -> tuple[int, int] | None:
    """(the opening line, the closing line) of a block laid out one item a line or more."""
    first = _find(lines, start, opening, indent)
    if first is None:
        return None
    for index in range(first + 1, len(lines)):
        line = lines[index].rstrip()
        if _indent(line) == indent and line.lstrip()[:1] in "]}":
            return first, index
    return None


def _regions(
    lines: list[str], start: int, end: int, indent: int, opener: str
) -> list[tuple[int, str]] | None:
    """The items between `start` and `end`: each begins at a line of `indent` spaces."""
    regions: list[tuple[int, list[str]]] = []
    for index in range(start, end):
        line = lines[index]
        if _indent(line) == indent and line.lstrip().startswith(opener):
            regions.append((index + 1, [line]))
        elif regions:
            regions[-1][1].append(line)
        elif line.strip():
            return None  # text before the first item: not the layout this reader knows
    return [(number, "".join(text)) for number, text in regions]


def _part(text: str, line: int) -> tuple[Any, str | None]:
    """(the JSON value `text`, None), or (None, what is wrong); `text` starts at `line`."""
    too_deep = f"it is nested more than {MAX_PART_DEPTH} levels deep"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"it is not valid JSON ({exc.msg}: line {line + exc.lineno - 1})"
    except RecursionError:
        return None, too_deep
    return (None, too_deep) if _depth(value) > MAX_PART_DEPTH else (value, None)


def _depth(value: Any, limit: int = MAX_PART_DEPTH) -> int:
    """How deeply `value` nests (a scalar is 0), counted without recursion, up to the first
    level past `limit`. (What nbformat refused, or read part by part, must not reach code
    that recurses, such as a panel's record being published again.)"""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:  # one level at a time: what a 10 MB notebook holds, each once, in C loops
        depth += 1
        if depth > limit:
            return depth
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend([child for child in children if isinstance(child, dict | list)])
        level = below
    return depth


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
