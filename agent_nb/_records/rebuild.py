"""Replay: sessions rebuilt from a notebook's records, record by record, in cell order.

Each record is checked on its own: a bad one (damaged, of a newer format, or not what
`record()` writes) is skipped with a line that names its cell, and the others replay.
A record copied along with its cell is replayed once: a turn whose messages were already
replayed (the same message ids) is a copy, and so is a record whose `record_id` was seen.
A chat panel's output holds one `panel` record: the log of what was done in the panel (its
turns, undos and switches, each a record of its own), replayed at the panel's cell. Its
entries do not change the current session, and no cell made its turns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _turns
from ..messages import Message
from .format import TURN_OPS, Rebuilt, Record, Skip, checked, panel_entries
from .read import Found

if TYPE_CHECKING:
    from .._turn import AgentConfig


#: How replay makes a session: `make(agent, session_id, system)` (the Session class).
Make = Callable[["AgentConfig", str, "str | None"], Rebuilt]


@dataclass(eq=False)  # each is one cell's work: told apart by identity, not by value
class Made:
    """What a cell made: a turn (from message `first_id` on) or a fork, in session_id."""

    session_id: str
    first_id: str | None
    cell_id: str | None = None
    source: str = ""
    place: int = 0  # the how-manieth turn or fork of its cell run
    renamed_from: str | None = None  # a rename: the session's id before
    made_as: str = ""  # session_id when it was made (a later rename changes session_id)

    def __post_init__(self) -> None:
        self.made_as = self.made_as or self.session_id


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

    sessions: dict[str, Rebuilt]
    current: str | None
    turns: int
    made: list[Made]
    kept: dict[str, tuple[set[str], list[str]]]
    panels: list[Panel]
    retried: dict[str, str]  # cell id -> the first message of the turn its retry made


class _Replay:
    """Sessions rebuilt record by record."""

    def __init__(
        self, agent: AgentConfig, make: Make, report: Callable[[str], None] | None
    ) -> None:
        self.agent = agent
        self.make = make
        self.report = report
        self.panels: list[Panel] = []
        self.sessions: dict[str, Rebuilt] = {}
        self.seen: dict[str, set[str]] = {}  # message ids replayed, by session
        self.records: set[str] = set()  # record ids replayed
        self.undone: set[str] = set()  # first ids of turns a panel undid
        self.current: str | None = None
        self.turns = 0
        self.made: list[Made] = []
        self.kept: dict[str, tuple[set[str], list[str]]] = {}
        self.retried: dict[str, str] = {}

    def apply(self, entry: Record, found: Found, *, in_panel: bool = False) -> None:
        if entry.record_id is not None and entry.record_id in self.records:
            raise Skip("it is a copy of an earlier record (a copied cell); replayed once")
        if entry.op == "panel":
            return self._panel(entry, found)
        if entry.op == "rename":
            return self._rename(entry, found, in_panel)
        if in_panel and entry.op == "load" and entry.session_id in self.sessions:
            entry = entry.model_copy(update={"op": "use"})  # a panel opened one it had
        if entry.op in ("use", "delete") and entry.session_id not in self.sessions:
            raise Skip(f"it {entry.op}s session {entry.session_id!r}, which no earlier record made")
        if entry.op == "delete":
            return self._delete(entry)
        if entry.op == "fork" and entry.session_id in self.sessions:  # a fork made again
            self._forget_fork(entry)
        session = self._session(entry)
        messages = entry.messages or []
        self._change(session, entry, messages)
        for dropped in entry.drops:
            self.sessions.pop(dropped, None)
        self.seen[entry.session_id] |= {m.id for m in messages}
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        if in_panel:  # the panel's turns: no cell made them, and the current session stays
            return
        self.current = entry.session_id
        if entry.op == "retry" and found.cell_id is not None and messages:
            self.retried[found.cell_id] = messages[0].id
        if entry.op in ("turn", "rerun", "fork", "system"):  # "system": a %session new
            first = messages[0].id if messages and entry.op in TURN_OPS else None
            self.made.append(Made(entry.session_id, first, found.cell_id, found.source))

    def _rename(self, entry: Record, found: Found, in_panel: bool) -> None:
        """Session `renamed_from` is `session_id` from now on: its turns, the cells that
        made them, the panels that showed it. A rename made again (in a run after this
        notebook's first) finds it done."""
        old, new = entry.renamed_from, entry.session_id
        assert old is not None  # checked()
        if old in self.sessions and new in self.sessions:  # made again: in place of the last
            if entry.kept_as:
                ours = {m.id for m in self.sessions[old].messages}
                mine = self.sessions[new]
                self._keep(mine, entry.kept_as, [m for m in mine.messages if m.id not in ours])
            del self.sessions[new]
        if old in self.sessions and new not in self.sessions:
            session = self.sessions.pop(old)
            session.session_id = new
            self.sessions[new] = session
            self.seen[new] = self.seen.pop(old, set())
            for item in [*self.made, *self.panels]:
                if item.session_id == old:
                    item.session_id = new
            if self.current == old:
                self.current = new
        elif new not in self.sessions:
            raise Skip(f"it renames session {old!r}, which no earlier record made")
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        if not in_panel:
            self.made.append(Made(new, None, found.cell_id, found.source, renamed_from=old))

    def _delete(self, entry: Record) -> None:
        del self.sessions[entry.session_id]
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        self.current = entry.current if entry.current in self.sessions else None

    def _forget_fork(self, entry: Record) -> None:
        """A fork made again: the earlier one goes, its own turns kept as `kept_as`."""
        if entry.kept_as:
            old = self.sessions[entry.session_id]
            base = self.sessions.get(entry.fork_of) if entry.fork_of else None
            ours = {m.id for m in base.messages} if base is not None else set()
            self._keep(old, entry.kept_as, [m for m in old.messages if m.id not in ours])
        del self.sessions[entry.session_id]

    def _change(self, session: Rebuilt, entry: Record, messages: list[Message]) -> None:
        """What the record says happened to `session`."""
        if entry.op in TURN_OPS:
            if {m.id for m in messages} & self.seen[entry.session_id]:
                raise Skip("it holds a turn already restored (a copied cell); replayed once")
            if messages and messages[0].id in self.undone:
                raise Skip("its turn was undone in a chat panel")
            self._turn(session, entry, messages)
        elif entry.op == "load":  # a session loaded from a store replaces what was there
            session.messages = messages
            session.system = entry.system
        elif entry.op == "clear":
            session.clear()
        elif entry.op == "undo" and entry.replaces is not None:
            session.remove_turn(entry.replaces)
            self.undone.add(entry.replaces)  # a later cell's turn, if it comes later
        elif entry.op == "undo":
            session.undo()
        elif entry.op == "system":
            session.system = entry.system

    def _turn(self, session: Rebuilt, entry: Record, messages: list[Message]) -> None:
        """A turn appended, or put in place of the one a retry, resume or rerun replaces."""
        history = session.messages
        if entry.op == "retry":
            cut = _turns.last_start(history) or 0
            for made in self.made:  # the cell that made the turn made its new answer
                if cut < len(history) and messages and made.first_id == history[cut].id:
                    made.first_id = messages[0].id
            history = history[:cut]
        elif entry.op == "resume":
            if not (history and history[-1].metadata.get("awaiting_approval")):
                raise Skip("it resumes tool calls that no earlier record left waiting")
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

    def _panel(self, entry: Record, found: Found) -> None:
        entries, problems = panel_entries(entry.log or [], found.where)
        replayed = []
        for raw, item in entries:
            try:
                self.apply(item, found, in_panel=True)
            except Skip as skip:
                problems.append(f"agent_nb: skipped an entry of the panel in {found.where}: {skip}")
            else:
                replayed.append(raw)
        for line in problems:
            if self.report is not None:
                self.report(line)
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        self.panels.append(Panel(entry.session_id, replayed, found.cell_id, found.source))

    def _keep(self, session: Rebuilt, kept_as: str, later: list[Message]) -> None:
        """`session` kept as `kept_as`, waiting for the cells of the turns in `later`."""
        kept = session.fork(kept_as)
        self.sessions[kept_as] = kept
        self.seen[kept_as] = {m.id for m in kept.messages}
        waiting = {m.id for m in later if m.role == "user"}
        self.kept[kept_as] = (waiting, [m.id for m in kept.messages])

    def _session(self, entry: Record) -> Rebuilt:
        session_id = entry.session_id
        if session_id not in self.sessions:
            base = self.sessions.get(entry.fork_of) if entry.fork_of else None
            if base is not None:
                made = base.fork(session_id)
            else:
                # not agent.session(): a store of the agent's must not resume or record this
                made = self.make(self.agent, session_id, entry.system)
            self.sessions[session_id] = made
            self.seen[session_id] = {m.id for m in made.messages}
        return self.sessions[session_id]


def replay(
    found: list[Found],
    agent: AgentConfig,
    make: Make,
    report: Callable[[str], None] | None = None,
) -> Replayed:
    """Sessions of `agent` rebuilt from records, each made by `make` (the Session class).

    `report` is given one line for each record skipped, naming its cell and the problem.
    """
    state = _Replay(agent, make, report)
    for item in found:
        try:
            state.apply(checked(item), item)
        except Skip as skip:
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
