"""Replay: sessions rebuilt from a notebook's records, record by record, in cell order.

Each record is checked on its own: a bad one (damaged, of a newer format, or not what
`record()` writes) is skipped with a line that names its cell, and the others replay.
A record copied along with its cell is replayed once: a turn whose messages were already
replayed (the same message ids) is a copy, and so is a record whose `record_id` was seen.
A chat panel's output holds one `panel` record: the log of what was done in the panel (its
turns, undos and switches, each a record of its own), replayed at the panel's cell. Its
entries do not change the current session, and no cell made its turns.

A restore is bounded (`Limits`): what a record costs is linear in its size, a fork shares its
base's messages (and counts their number against the cap), and past a cap the records that
do not fit are skipped and told in one line, the rest restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .. import _turns
from .._format import check_spend
from ..errors import InvalidSessionData
from ..messages import Message
from .format import OPS, TURN_OPS, Rebuilt, Record, Skip, checked, panel_entries
from .read import Found, paused_gc

if TYPE_CHECKING:
    from .._turn import AgentConfig


#: How replay makes a session: `make(agent, session_id, system)` (the Session class).
Make = Callable[["AgentConfig", str, "str | None"], Rebuilt]


@dataclass(frozen=True)
class Limits:
    """How much one restore rebuilds: a notebook of thousands of turns fits whole; past a
    cap, the records that do not fit are skipped (one line says so), the rest restored."""

    #: Records replayed (a chat panel's log entries count one each).
    records: int = 100_000
    #: Sessions rebuilt (forks and kept sessions included).
    sessions: int = 1_000
    #: Messages put into the sessions' histories: those the records hold, and the whole
    #: history a fork or a kept session starts with.
    messages: int = 1_000_000

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))


class _Capped(Skip):
    """A record skipped because it does not fit in the restore's `cap`."""

    def __init__(self, cap: str) -> None:
        super().__init__(cap)
        self.cap = cap


class _History:
    """A session as replay rebuilds it: its history, where each message id first is in it,
    and the ids of the messages records put in it (a copy of a turn is replayed once)."""

    __slots__ = ("allowed", "messages", "seen", "session_id", "spend", "system", "where")

    def __init__(self, session_id: str, system: str | None) -> None:
        self.session_id = session_id
        self.system = system
        self.messages: list[Message] = []
        self.where: dict[str, int] = {}
        self.seen: set[str] = set()
        self.spend: list[dict[str, Any]] = []  # its ledger's entries, checked (a fork: none)
        self.allowed: list[str] = []  # the tools it lets run without asking

    def fork(self, session_id: str) -> _History:
        """A copy under another id: the same (immutable) messages, never copied."""
        twin = _History(session_id, self.system)
        twin.messages = list(self.messages)
        twin.where = dict(self.where)
        twin.allowed = list(self.allowed)
        return twin

    def holds(self, ids: Iterable[str]) -> bool:
        """Whether any of `ids` is in the history, or was put in it by a record."""
        return any(i in self.where or i in self.seen for i in ids)

    def append(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.where.setdefault(message.id, len(self.messages))
            self.messages.append(message)

    def cut(self, start: int) -> None:
        """The history before `start`."""
        for message in self.messages[start:]:
            if self.where.get(message.id, -1) >= start:
                del self.where[message.id]
        del self.messages[start:]

    def replace(self, messages: list[Message]) -> None:
        self.cut(0)
        self.append(messages)

    def last_start(self) -> int | None:
        return _turns.last_start(self.messages)

    def remove_turn(self, first_id: str) -> int:
        """The turn starting at message `first_id` taken out, if it is there; the number of
        messages after it moved up."""
        start = self.where.get(first_id)
        history = self.messages
        if start is None or not (start == 0 or history[start].role == "user"):
            return 0
        end = next((i for i in range(start + 1, len(history)) if history[i].role == "user"), None)
        if end is None:
            self.cut(start)
            return 0
        later = history[end:]
        self.cut(start)
        self.append(later)
        return len(later)


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
    skipped: int = 0  # records (and panel entries) not replayed, for a problem or a cap
    #: The spend each record carried, by its cell id and by the first id of its turn: a
    #: cell run again replaces its output, so its new record carries these again.
    spend_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class _Replay:
    """Sessions rebuilt record by record, within `limits`."""

    def __init__(
        self, agent: AgentConfig, make: Make, report: Callable[[str], None] | None, limits: Limits
    ) -> None:
        self.agent = agent
        self.make = make
        self.report = report
        self.limits = limits
        self.panels: list[Panel] = []
        self.sessions: dict[str, _History] = {}
        self.records: set[str] = set()  # record ids replayed
        self.undone: set[str] = set()  # first ids of turns a panel undid
        self.current: str | None = None
        self.turns = 0
        self.made: list[Made] = []
        self.by_first: dict[str, list[Made]] = {}  # what cells made, by their turn's first id
        self.kept: dict[str, tuple[set[str], list[str]]] = {}
        self.retried: dict[str, str] = {}
        self.replayed = 0  # records (and panel entries) taken on
        self.placed = 0  # messages (and ledger entries) put into histories
        self.capped: dict[str, int] = {}  # records skipped past each cap
        self.spend_of: dict[str, list[dict[str, Any]]] = {}

    def take(self, found: Found, entry: Record | None = None, *, in_panel: bool = False) -> None:
        """Replay one record (checked here unless `entry` is given): Skip says why not."""
        if self.replayed >= self.limits.records:
            raise _Capped("records")
        self.replayed += 1
        if entry is None:
            self._hopeless(found.entry)
            entry = checked(found)
        self.apply(entry, found, in_panel=in_panel)

    def _hopeless(self, raw: Any) -> None:
        """Capped, before the record is checked, if it cannot fit whatever it holds (checking
        costs more than the rest: a notebook of records past the caps is skipped quickly)."""
        if not isinstance(raw, Mapping):
            return
        op, session_id, base = raw.get("op"), raw.get("session_id"), raw.get("fork_of")
        messages = raw.get("messages")
        count = len(messages) if isinstance(messages, list) else 0
        if op == "fork" and isinstance(base, str) and base in self.sessions:
            count += len(self.sessions[base].messages)
        if self.placed + count > self.limits.messages:
            raise _Capped("messages")
        new = isinstance(session_id, str) and session_id not in self.sessions
        makes = new and op in OPS and op not in ("use", "delete", "panel")
        if makes and len(self.sessions) >= self.limits.sessions:
            raise _Capped("sessions")

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
        self._fits(entry)
        if entry.op == "fork" and entry.session_id in self.sessions:  # a fork made again
            self._forget_fork(entry)
        session = self._session(entry)
        messages = entry.messages or []
        spend = self._spend(entry, found)
        self._change(session, entry, messages)
        session.allowed = list(entry.allowed_tools or ())  # as they were at this record
        if spend:
            session.spend += spend
            for key in (found.cell_id, messages[0].id if messages else None):
                if key is not None and not in_panel:
                    self.spend_of.setdefault(key, []).extend(spend)
        for dropped in entry.drops:
            self.sessions.pop(dropped, None)
        session.seen.update(m.id for m in messages)
        if entry.record_id is not None:
            self.records.add(entry.record_id)
        if in_panel:  # the panel's turns: no cell made them, and the current session stays
            return
        self.current = entry.session_id
        if entry.op == "retry" and found.cell_id is not None and messages:
            self.retried[found.cell_id] = messages[0].id
        if entry.op in ("turn", "rerun", "fork", "system"):  # "system": a %session new
            first = messages[0].id if messages and entry.op in TURN_OPS else None
            self._made(Made(entry.session_id, first, found.cell_id, found.source))

    def _made(self, made: Made) -> None:
        self.made.append(made)
        if made.first_id is not None:
            self.by_first.setdefault(made.first_id, []).append(made)

    def _fits(self, entry: Record) -> None:
        """Capped unless what `entry` may add fits: its messages, and the history of a
        session it makes from another (a fork, a session kept)."""
        new = 0 if entry.session_id in self.sessions else 1
        copied = 0
        if (new or entry.op == "fork") and entry.fork_of in self.sessions:
            copied += len(self.sessions[entry.fork_of].messages)
        if entry.kept_as and entry.session_id in self.sessions:
            new += 1
            copied += len(self.sessions[entry.session_id].messages)
        if len(self.sessions) + new > self.limits.sessions:
            raise _Capped("sessions")
        self._place(len(entry.messages or ()) + len(entry.spend or ()) + copied)

    def _spend(self, entry: Record, found: Found) -> list[dict[str, Any]]:
        """The ledger entries `entry` carries that can be read; a line for those that
        cannot (the record itself is replayed)."""
        good, bad = [], 0
        for index, item in enumerate(entry.spend or ()):
            try:
                good.append(check_spend(item, index))
            except InvalidSessionData:
                bad += 1
        if bad and self.report is not None:
            self.report(
                f"agent_nb: left out {bad} malformed spend entr{'y' if bad == 1 else 'ies'} of "
                f"the record in {found.where} (its turn is restored)"
            )
        return good

    def _place(self, count: int) -> None:
        if self.placed + count > self.limits.messages:
            raise _Capped("messages")
        self.placed += count

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
            self.sessions[new] = session  # (its `seen` goes with it)
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
            ours = base.where if base is not None else {}
            self._keep(old, entry.kept_as, [m for m in old.messages if m.id not in ours])
        del self.sessions[entry.session_id]

    def _change(self, session: _History, entry: Record, messages: list[Message]) -> None:
        """What the record says happened to `session`."""
        if entry.op in TURN_OPS:
            if session.holds(m.id for m in messages):
                raise Skip("it holds a turn already restored (a copied cell); replayed once")
            if messages and messages[0].id in self.undone:
                raise Skip("its turn was undone in a chat panel")
            self._turn(session, entry, messages)
        elif entry.op == "load":  # a session loaded from a store replaces what was there
            session.replace(messages)
            session.system = entry.system
        elif entry.op == "clear":
            session.cut(0)
        elif entry.op == "undo" and entry.replaces is not None:
            moved = len(session.messages) - session.where.get(entry.replaces, len(session.messages))
            self._place(moved)  # what follows the turn moves up
            session.remove_turn(entry.replaces)
            self.undone.add(entry.replaces)  # a later cell's turn, if it comes later
        elif entry.op == "undo":
            start = session.last_start()
            if start is not None:
                session.cut(start)
        elif entry.op == "system":
            session.system = entry.system
        # "spend": only what it carries (taken by apply)

    def _turn(self, session: _History, entry: Record, messages: list[Message]) -> None:
        """A turn appended, or put in place of the one a retry, resume or rerun replaces."""
        history = session.messages
        if entry.op == "retry":
            cut = session.last_start() or 0
            if cut < len(history) and messages:  # the cell that made the turn made its new one
                for made in self.by_first.pop(history[cut].id, []):
                    made.first_id = messages[0].id
                    self.by_first.setdefault(made.first_id, []).append(made)
            session.cut(cut)
        elif entry.op == "resume":
            if not (history and history[-1].metadata.get("awaiting_approval")):
                raise Skip("it resumes tool calls that no earlier record left waiting")
            session.cut(len(history) - 1)
        elif entry.op == "rerun":  # the turn it replaces may be one an earlier run made
            start = session.where.get(entry.replaces) if entry.replaces is not None else None
            if start is not None:
                if entry.kept_as:
                    self._keep(session, entry.kept_as, history[start + 1 :])
                session.cut(start)
        session.append(messages)
        session.system = entry.system  # as it was when the turn was made (%%chat --system)
        self.turns += 1

    def _panel(self, entry: Record, found: Found) -> None:
        entries, problems = panel_entries(entry.log or [], found.where)
        replayed = []
        for raw, item in entries:
            try:
                self.take(found, item, in_panel=True)
            except _Capped as capped:
                self.capped[capped.cap] = self.capped.get(capped.cap, 0) + 1
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

    def _keep(self, session: _History, kept_as: str, later: list[Message]) -> None:
        """`session` kept as `kept_as`, waiting for the cells of the turns in `later`."""
        kept = session.fork(kept_as)
        self.sessions[kept_as] = kept
        waiting = {m.id for m in later if m.role == "user"}
        self.kept[kept_as] = (waiting, [m.id for m in kept.messages])

    def _session(self, entry: Record) -> _History:
        session_id = entry.session_id
        if session_id not in self.sessions:
            base = self.sessions.get(entry.fork_of) if entry.fork_of else None
            made = base.fork(session_id) if base is not None else _History(session_id, entry.system)
            self.sessions[session_id] = made
        return self.sessions[session_id]

    def rebuilt(self) -> dict[str, Rebuilt]:
        """The sessions, made now (not agent.session(): a store of the agent's must not
        resume or record them)."""
        made = {}
        for session_id, history in self.sessions.items():
            session = self.make(self.agent, session_id, history.system)
            session.messages = history.messages
            session.usage = _turns.recorded_usage(history.messages)
            if history.spend:
                session.add_spend(history.spend)
            made[session_id] = session  # history.allowed: not honoured (allowed_line)
        return made

    def allowed_line(self) -> str | None:
        """One line for the tools the records say were let run without asking, or None.

        They are not let run so: a notebook's records are data that anyone who wrote the
        notebook chose, and an approval is the user's, so a restored session asks again."""
        said = [(sid, h.allowed) for sid, h in self.sessions.items() if h.allowed]
        if not said:
            return None
        shown = "; ".join(f"{sid!r}: {', '.join(names[:5])}" for sid, names in said[:3])
        more = " ..." if len(said) > 3 or any(len(names) > 5 for _, names in said) else ""
        return (
            f"agent_nb: the records let tools run without asking ({shown}{more}); a restore "
            "does not: a notebook's records cannot approve tools. Their calls ask again "
            "(approve one with --always, or the panel's Always allow, to allow its tool)"
        )

    def capped_line(self) -> str | None:
        """One line for the records past the caps, or None if every record fit."""
        if not self.capped:
            return None
        skipped = sum(self.capped.values())
        caps = ", ".join(f"{getattr(self.limits, cap):,} {cap}" for cap in self.capped)
        flags = " ".join(f"--{cap} N" for cap in self.capped)
        return (
            f"agent_nb: restored what fits in a restore ({caps}); skipped "
            f"{skipped:,} record{'s' if skipped != 1 else ''} past that; to restore them "
            f"too, raise the cap: %session restore {flags}"
        )


#: How many records skipped for a problem are told one by one; the rest in one line.
TOLD = 20


def replay(
    found: list[Found],
    agent: AgentConfig,
    make: Make,
    report: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> Replayed:
    """Sessions of `agent` rebuilt from records, each made by `make` (the Session class).

    `report` is given one line for each record skipped (the first `TOLD`), naming its cell
    and the problem, then one line for the rest, and one for those past the `limits`.
    """
    skipped = 0

    def told(line: str) -> None:
        nonlocal skipped
        skipped += 1
        if report is not None and skipped <= TOLD:
            report(line)

    state = _Replay(agent, make, told, limits or Limits())
    with paused_gc():
        _replay_all(state, found, told)
        sessions = state.rebuilt()
    if report is not None and skipped > TOLD:
        report(f"agent_nb: skipped {skipped - TOLD:,} more records (or panel entries) as unusable")
    for line in (state.allowed_line(), state.capped_line()):
        if report is not None and line is not None:
            report(line)
    kept = {name: wait for name, wait in state.kept.items() if name in state.sessions}
    return Replayed(
        sessions,
        state.current,
        state.turns,
        state.made,
        kept,
        state.panels,
        state.retried,
        skipped + sum(state.capped.values()),
        state.spend_of,
    )


def _replay_all(state: _Replay, found: list[Found], told: Callable[[str], None]) -> None:
    for item in found:
        try:
            state.take(item)
        except _Capped as capped:
            state.capped[capped.cap] = state.capped.get(capped.cap, 0) + 1
            continue
        except Skip as skip:
            problem = str(skip)
        except Exception as exc:  # a record no check foresaw must not stop the others
            problem = f"it could not be replayed ({type(exc).__name__}: {exc})"
        else:
            continue
        told(f"agent_nb: skipped the record in {item.where}: {problem}")
