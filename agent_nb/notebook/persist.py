"""Conversations saved in the notebook itself: a record per output, replayed in cell order.

Each record is checked on its own: a bad one (damaged, of a newer format, or not what
`record()` writes) is skipped with a line that names its cell, and the others replay.
A record copied along with its cell is replayed once: a turn whose messages were already
replayed (the same message ids) is a copy, and so is a record whose `record_id` was seen.

A chat panel's output holds one `panel` record: the log of what was done in the panel (its
turns, undos and switches, each a record of its own), replayed at the panel's cell. Its
entries do not change the current session, and no cell made its turns (see _panel_records.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from .. import _turns
from .._format import FORMAT_VERSION, check_session_id, describe
from ..agent import Agent
from ..messages import Message, _short
from ..session import Session

#: The key of agent_nb's records in output metadata.
KEY = "agent_nb"
#: What a record can say happened: `retry` replaces the last turn with the record's messages;
#: `resume` replaces the round that waited for approval with them; `rerun` replaces the turn
#: that starts with message `replaces` (a cell run again), keeping what followed it as the
#: session `kept_as`; `use` makes its session the current one; `delete` removes its session,
#: `current` being the one current after it; an `undo` with `replaces` drops that turn (if it
#: is there); `panel` holds a chat panel's `log` of records.
OPS = (
    *("turn", "retry", "resume", "load", "clear", "undo", "system", "fork", "rerun", "use"),
    *("delete", "panel"),
)
#: What a panel's log holds: its turns (`resume`: the round its Approve / Deny let go on), its
#: undos, and its switches (`load`: a session the panel opened or made, a branch with its
#: messages; `use`: one it had).
PANEL_OPS = ("turn", "resume", "undo", "load", "use")
_WITH_MESSAGES = ("turn", "retry", "resume", "load", "rerun")
_TURN_OPS = ("turn", "retry", "resume", "rerun")


def record(
    op: str, session: Session, messages: list[Message] | None = None, **extra: Any
) -> dict[str, Any]:
    """Output metadata for one change to a session: a turn, a fork, a clear, an undo, a load."""
    entry: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "op": op,
        "session_id": session.session_id,
        "system": session.system,
        "record_id": uuid.uuid4().hex,
    }
    if messages is not None:
        entry["messages"] = [m.to_dict() for m in messages]
    entry.update(extra)
    return {KEY: entry}


def notebook_path(user_ns: dict[str, Any]) -> Path | None:
    """The notebook this kernel runs, as the front end tells it (JupyterLab, VS Code)."""
    for candidate in (
        user_ns.get("__session__"),
        user_ns.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate)
    return None


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

    notebook = _ipynb.read_for_records(Path(path).read_text(encoding="utf-8"))
    return records(notebook.node, notebook.damaged_cells)


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


_SessionId = Annotated[pydantic.StrictStr, pydantic.AfterValidator(check_session_id)]


class _Record(pydantic.BaseModel):
    """A record as `record()` writes it; keys it does not know are ignored, not refused, so
    that a record with one key too many still restores its turn."""

    model_config = pydantic.ConfigDict(extra="ignore", defer_build=True)

    version: Annotated[pydantic.StrictInt, pydantic.Field(ge=1)]
    op: Literal[OPS]  # type: ignore[valid-type]
    session_id: _SessionId
    system: pydantic.StrictStr | None = None
    messages: list[Message] | None = None
    fork_of: _SessionId | None = None
    record_id: Annotated[pydantic.StrictStr, pydantic.Field(min_length=1)] | None = None
    replaces: pydantic.StrictStr | None = None
    kept_as: _SessionId | None = None
    drops: list[_SessionId] = []
    current: _SessionId | None = None
    log: list[Any] | None = None


class _Skip(Exception):
    """A record that is not replayed; the message says why."""


def _checked(found: Found) -> _Record:
    if found.problem is not None:
        raise _Skip(f"the cell cannot be read: {found.problem}")
    entry = found.entry
    if not isinstance(entry, Mapping):
        raise _Skip(f"the record is {_short(entry)}, not an object from %%chat or %session")
    version, op = entry.get("version"), entry.get("op")
    if type(version) is int and version > FORMAT_VERSION:
        raise _Skip(
            f"the record is format version {version}, newer than this agent_nb reads "
            f"({FORMAT_VERSION}); upgrade agent_nb (pip install -U agent-nb)"
        )
    if isinstance(op, str) and op not in OPS:
        raise _Skip(
            f"the record's op {_short(op)} is not one this agent_nb knows ({', '.join(OPS)}); "
            "a newer agent_nb may have written it (pip install -U agent-nb)"
        )
    try:
        checked = _Record.model_validate(entry)
    except pydantic.ValidationError as exc:
        raise _Skip(f"the record is malformed: {describe(exc)}") from None
    for key in ("kept_as", "fork_of"):  # a session kept as, or forked from, itself
        if getattr(checked, key) == checked.session_id:
            raise _Skip(f"the record's {key} is its own session {checked.session_id!r}")
    if checked.op in _WITH_MESSAGES and checked.messages is None:
        raise _Skip(f"the record of a {checked.op} has no messages")
    if checked.op == "panel" and checked.log is None:
        raise _Skip("the record of a panel has no log")
    return checked


def panel_entries(log: list[Any], where: str) -> tuple[list[tuple[Any, _Record]], list[str]]:
    """A panel log's entries that can be replayed (each as found and as checked), and a line
    for each that cannot."""
    entries, problems = [], []
    for index, item in enumerate(log):
        try:
            entry = _checked(Found(where, item))
            if entry.op not in PANEL_OPS:
                raise _Skip(f"a panel's log holds no {entry.op!r} (only {', '.join(PANEL_OPS)})")
        except _Skip as skip:
            problems.append(f"agent_nb: skipped entry {index + 1} of the panel in {where}: {skip}")
        else:
            entries.append((item, entry))
    return entries, problems


@dataclass(eq=False)  # each is one cell's work: told apart by identity, not by value
class Made:
    """What a cell made: a turn (from message `first_id` on) or a fork, in session_id."""

    session_id: str
    first_id: str | None
    cell_id: str | None = None
    source: str = ""
    place: int = 0  # the how-manieth turn or fork of its cell run


@dataclass(eq=False)
class Panel:
    """A chat panel's record as found in its cell: its log, and the session it showed last."""

    session_id: str
    log: list[dict[str, Any]]
    cell_id: str | None = None
    source: str = ""


@dataclass
class Replayed:
    """Sessions rebuilt from records, the last one used, turns restored, what each cell made,
    and the kept sessions (`NAME~N`) with the first ids of the turns each waits for and its
    message ids when kept, and the chat panels found."""

    sessions: dict[str, Session]
    current: str | None
    turns: int
    made: list[Made]
    kept: dict[str, tuple[set[str], list[str]]]
    panels: list[Panel]
    retried: dict[str, str]  # cell id -> the first message of the turn its retry made


class _Replay:
    """Sessions rebuilt record by record."""

    def __init__(self, agent: Agent, report: Callable[[str], None] | None) -> None:
        self.agent = agent
        self.report = report
        self.panels: list[Panel] = []
        self.sessions: dict[str, Session] = {}
        self.seen: dict[str, set[str]] = {}  # message ids replayed, by session
        self.records: set[str] = set()  # record ids replayed
        self.undone: set[str] = set()  # first ids of turns a panel undid
        self.current: str | None = None
        self.turns = 0
        self.made: list[Made] = []
        self.kept: dict[str, tuple[set[str], list[str]]] = {}
        self.retried: dict[str, str] = {}

    def apply(self, entry: _Record, found: Found, *, in_panel: bool = False) -> None:
        if entry.record_id is not None and entry.record_id in self.records:
            raise _Skip("it is a copy of an earlier record (a copied cell); replayed once")
        if entry.op == "panel":
            return self._panel(entry, found)
        if in_panel and entry.op == "load" and entry.session_id in self.sessions:
            entry = entry.model_copy(update={"op": "use"})  # a panel opened one it had
        if entry.op in ("use", "delete") and entry.session_id not in self.sessions:
            raise _Skip(
                f"it {entry.op}s session {entry.session_id!r}, which no earlier record made"
            )
        if entry.op == "delete":
            del self.sessions[entry.session_id]
            if entry.record_id is not None:
                self.records.add(entry.record_id)
            self.current = entry.current if entry.current in self.sessions else None
            return
        if entry.op == "fork" and entry.session_id in self.sessions:  # a fork made again
            if entry.kept_as:
                old = self.sessions[entry.session_id]
                base = self.sessions.get(entry.fork_of) if entry.fork_of else None
                ours = {m.id for m in base.messages} if base is not None else set()
                self._keep(old, entry.kept_as, [m for m in old.messages if m.id not in ours])
            del self.sessions[entry.session_id]
        session = self._session(entry)
        messages = entry.messages or []
        ids = {m.id for m in messages}
        seen = self.seen[entry.session_id]
        if entry.op in _TURN_OPS and ids & seen:
            raise _Skip("it holds a turn already restored (a copied cell); replayed once")
        if entry.op in _TURN_OPS and messages and messages[0].id in self.undone:
            raise _Skip("its turn was undone in a chat panel")
        if entry.op == "load":  # a session loaded from a store replaces what was there
            session.messages = messages
            session.system = entry.system
        elif entry.op in _TURN_OPS:
            history = session.messages
            if entry.op == "retry":
                cut = _turns.last_start(history) or 0
                for made in self.made:  # the cell that made the turn made its new answer
                    if cut < len(history) and messages and made.first_id == history[cut].id:
                        made.first_id = messages[0].id
                history = history[:cut]
            elif entry.op == "resume":
                if not (history and history[-1].metadata.get("awaiting_approval")):
                    raise _Skip("it resumes tool calls that no earlier record left waiting")
                history = history[:-1]
            elif entry.op == "rerun":  # the turn it replaces may be one an earlier run made
                order = [m.id for m in history]
                if entry.replaces in order:
                    if entry.kept_as:
                        later = history[order.index(entry.replaces) + 1 :]
                        self._keep(session, entry.kept_as, later)
                    history = history[: order.index(entry.replaces)]
            session.messages = history + messages
            session.system = entry.system  # as it was when the turn was made (%%chat --system)
            self.turns += 1
        elif entry.op == "clear":
            session.clear()
        elif entry.op == "undo" and entry.replaces is not None:
            session.remove_turn(entry.replaces)
            self.undone.add(entry.replaces)  # a later cell's turn, if it comes later
        elif entry.op == "undo":
            session.undo()
        elif entry.op == "system":
            session.system = entry.system
        for dropped in entry.drops:
            self.sessions.pop(dropped, None)
        seen |= ids
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        if in_panel:  # the panel's turns: no cell made them, and the current session stays
            return
        self.current = entry.session_id
        if entry.op == "retry" and found.cell_id is not None and messages:
            self.retried[found.cell_id] = messages[0].id
        if entry.op in ("turn", "rerun", "fork", "system"):  # "system": a %session new
            first = messages[0].id if messages and entry.op in _TURN_OPS else None
            self.made.append(Made(entry.session_id, first, found.cell_id, found.source))

    def _panel(self, entry: _Record, found: Found) -> None:
        entries, problems = panel_entries(entry.log or [], found.where)
        replayed = []
        for raw, item in entries:
            try:
                self.apply(item, found, in_panel=True)
            except _Skip as skip:
                problems.append(f"agent_nb: skipped an entry of the panel in {found.where}: {skip}")
            else:
                replayed.append(raw)
        for line in problems:
            if self.report is not None:
                self.report(line)
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        self.panels.append(Panel(entry.session_id, replayed, found.cell_id, found.source))

    def _keep(self, session: Session, kept_as: str, later: list[Message]) -> None:
        """`session` kept as `kept_as`, waiting for the cells of the turns in `later`."""
        kept = session.fork(kept_as)
        self.sessions[kept_as] = kept
        self.seen[kept_as] = {m.id for m in kept.messages}
        waiting = {m.id for m in later if m.role == "user"}
        self.kept[kept_as] = (waiting, [m.id for m in kept.messages])

    def _session(self, entry: _Record) -> Session:
        session_id = entry.session_id
        if session_id not in self.sessions:
            base = self.sessions.get(entry.fork_of) if entry.fork_of else None
            if base is not None:
                made = base.fork(session_id)
            else:
                # not agent.session(): a store of the agent's must not resume or record this
                made = Session(self.agent, session_id, entry.system)
            self.sessions[session_id] = made
            self.seen[session_id] = {m.id for m in made.messages}
        return self.sessions[session_id]


def replay(
    found: list[Found], agent: Agent, report: Callable[[str], None] | None = None
) -> Replayed:
    """Sessions rebuilt from records.

    `report` is given one line for each record skipped, naming its cell and the problem.
    """
    state = _Replay(agent, report)
    for item in found:
        try:
            state.apply(_checked(item), item)
        except _Skip as skip:
            problem = str(skip)
        except Exception as exc:  # a record no check foresaw must not stop the others
            problem = f"it could not be replayed ({type(exc).__name__}: {exc})"
        else:
            continue
        if report is not None:
            report(f"agent_nb: skipped the record in {item.where}: {problem}")
    kept = {name: wait for name, wait in state.kept.items() if name in state.sessions}
    return Replayed(
        state.sessions, state.current, state.turns, state.made, kept, state.panels, state.retried
    )
