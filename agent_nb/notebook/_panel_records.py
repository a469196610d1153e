"""A chat panel's log in the notebook's records, and the session its cell opens again.

The panel's output carries one `panel` record (agent_nb/_records/): the log of what was done in the
panel itself (Send, Stop, Undo, a switch), each entry a record of its own. A cell's code that
calls `panel.send()` is that cell's work, as `session.run()` in a cell is, and is not logged:
it runs again with its cell.

A panel is known by the cell that makes it: the cell id the front end sends (JupyterLab,
Notebook 7, VS Code), or, where none is sent (nbclient), the cell's text, each saved panel
claimed once, in notebook order. Running that cell again opens the panel on the same session:
the log of the panel the cell made last in this kernel, or else the one saved in the notebook
(from `%load_ext agent_nb`'s restore, or read from the notebook's file). Its turns missing from
their sessions (a cell run again before it cut them off) are put back at the end, verbatim;
turns already there are not added again.

A notebook never writes into a store on its own: a session with a store (the one the panel is
given, or one its store holds) is taken as the store has it (the store wins), and if the log
would change it, the changed copy is kept aside, with no store, as a session of its own
(`NAME~N`), named in a notice. A session the log makes stays in the kernel, with no store,
until the user acts in it (sends a turn, forks): the panel then gives it its store
(`ChatPanel.own`).

What a kernel remembers of its panels (the saved ones not yet claimed, each cell's last
panel's log) is its Workspace's `panels`.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import _records
from ..agent import Agent
from ..messages import Message
from ..router import Router
from ..session import Session
from . import _routing
from .workspace import Workspace, kept_aside, notebook_path, stored_at


@dataclass(eq=False)
class Log:
    """What was done in one panel (the entries of its record), and the session it shows."""

    session_id: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def metadata(self, session: Session) -> dict[str, Any]:
        """The panel's output metadata: its record."""
        return _records.record("panel", session, log=self.entries, record_id=self.record_id)


@dataclass
class Opened:
    """What a new panel shows: its session, the sessions it knows, and its log."""

    session: Session
    sessions: dict[str, Session]
    log: Log
    #: Sessions the log made, kept in the kernel until the user acts in them.
    unowned: set[str] = field(default_factory=set)
    #: The store the panel's sessions save to (given, else its session's or agent's).
    store: Any = None


def open_panel(session_or_agent: Session | Agent | Router, store: Any) -> Opened:
    """The session a panel made now opens, and its log, from its cell's earlier panel.

    In a kernel with the extension loaded, the panel's sessions are the kernel's Workspace's
    (unless it is given a session of the same name as one of those: it keeps apart).
    """
    from IPython import get_ipython

    shell = get_ipython()
    given = session_or_agent if isinstance(session_or_agent, Session) else None
    # (a routed session's agent is its route: its sessions are made by the Router)
    agent = _routing.maker(given.agent) if given is not None else session_or_agent
    store = store if store is not None else (given.store if given is not None else agent.store)
    kernel = Workspace.of(shell) if shell is not None else None
    cell = _running_cell(shell)
    key = None
    if kernel is not None and cell and cell[0]:
        key = f"{cell[0]}/{kernel.panels.place(_run_id(shell))}"
    log, last = _earlier(shell, kernel, cell, key, agent)
    workspace = kernel if kernel is not None and kernel.loaded else Workspace()
    if given is not None and workspace.sessions.get(given.session_id, given) is not given:
        workspace = Workspace()  # a session of the same name as one of %%chat's: kept apart
    if given is not None:
        workspace.sessions[given.session_id] = given
    unowned: set[str] = set()
    entries = _put_back(log, workspace, agent, store, unowned)
    if given is not None:
        session = given
    elif last is not None:
        session = _session(last, agent.system, workspace.sessions, agent, store, unowned)
    else:
        session = agent.session(store=store)
    workspace.sessions.setdefault(session.session_id, session)
    opened = Log(session.session_id, entries)
    if key is not None and kernel is not None:
        kernel.panels.latest[key] = opened
    return Opened(session, workspace.sessions, opened, unowned, store)


def own(session: Session, store: Any, unowned: set[str]) -> None:
    """The user acts in `session`: if the panel's log made it, it now saves to `store` (unless
    the store has a session of that id by now: that one is not overwritten)."""
    if session.session_id not in unowned or session.store is not None or store is None:
        return
    unowned.discard(session.session_id)
    if not stored_at(store, session.session_id):
        session.store = store


def from_the_front_end(shell: Any = None) -> bool:
    """Whether what runs now was asked for by the panel's front end, not by a cell's code."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    parent = _parent(shell)
    return parent is None or parent.get("header", {}).get("msg_type") != "execute_request"


def turn(session: Session, messages: list[Message]) -> dict[str, Any]:
    return _records.record("turn", session, messages)[_records.KEY]


def resume(session: Session, messages: list[Message]) -> dict[str, Any]:
    """The round that waited for approval, replaced by `messages` (Approve / Deny)."""
    return _records.record("resume", session, messages)[_records.KEY]


def spend(session: Session, carried: list[dict[str, Any]]) -> dict[str, Any]:
    """What a turn that kept nothing spent (its ledger entries, as `to_dict()` writes them)."""
    return _records.record("spend", session, spend=carried)[_records.KEY]


def undo(session: Session, removed: list[Message]) -> dict[str, Any]:
    return _records.record("undo", session, replaces=removed[0].id)[_records.KEY]


def rename(session: Session, old: str) -> dict[str, Any]:
    """The session shown, called `old` until now."""
    return _records.record("rename", session, renamed_from=old)[_records.KEY]


def switch(session: Session, known: bool) -> dict[str, Any]:
    """A switch to a session the panel had (`use`) or opened now (`load`, with its history)."""
    if known:
        return _records.record("use", session)[_records.KEY]
    return _records.record("load", session, session.messages)[_records.KEY]


# -- finding the earlier panel -----------------------------------------------------------------


def _run_id(shell: Any) -> str | None:
    """The id of the execution running now (its message's)."""
    return ((_parent(shell) or {}).get("header") or {}).get("msg_id")


def _parent(shell: Any) -> dict[str, Any] | None:
    kernel = getattr(shell, "kernel", None)
    try:
        parent = kernel.get_parent("shell") if kernel is not None else None
    except Exception:  # an older or other kernel: no parent to read
        return None
    return parent if isinstance(parent, dict) else None


def _running_cell(shell: Any) -> tuple[str | None, str] | None:
    """(cell id or None, text) of the cell running now; None outside a cell."""
    if shell is None or from_the_front_end(shell):
        return None
    parent = _parent(shell) or {}
    cell_id = (parent.get("metadata") or {}).get("cellId")
    code = (parent.get("content") or {}).get("code")
    return (cell_id if isinstance(cell_id, str) and cell_id else None), str(code or "")


def _earlier(
    shell: Any,
    kernel: Workspace | None,
    cell: tuple[str | None, str] | None,
    key: str | None,
    agent: Agent | Router,
) -> tuple[list[dict[str, Any]], str | None]:
    """The log of the panel this cell made before at this place (`key`: cell id/place), and
    the session it showed last."""
    if cell is None or kernel is None:
        return [], None
    cell_id, source = cell
    panels = kernel.panels
    if key is not None and key in panels.latest:
        latest = panels.latest[key]
        return list(latest.entries), latest.session_id
    if panels.saved is None:  # with the extension, its restore read them (or had nothing)
        panels.saved = [] if kernel.loaded else _read_notebook(shell, agent)
    if cell_id is not None:  # a new cell with the same text is another panel
        found = next((p for p in panels.saved if p.cell_id == cell_id), None)
    else:
        found = next((p for p in panels.saved if p.source == source), None)
    if found is None:
        return [], None
    panels.saved.remove(found)
    return list(found.log), found.session_id


def _read_notebook(shell: Any, agent: Agent | Router) -> list[_records.Panel]:
    """The panels saved in the notebook's file (no `%load_ext agent_nb` read them)."""
    from ..stores import _ipynb

    path = notebook_path(shell.user_ns)
    if path is None:
        return []
    try:
        found = _records.read_records(path)
    except (OSError, UnicodeDecodeError, _ipynb.UnreadableNotebook) as exc:
        print(f"agent_nb: cannot read {path} for its chat panels: {exc}", file=sys.stderr)
        return []
    found = [f for f in found if isinstance(f.entry, dict) and f.entry.get("op") == "panel"]
    return _records.replay(found, agent, Session, lambda line: print(line, file=sys.stderr)).panels


# -- putting its turns back --------------------------------------------------------------------


def _session(
    session_id: str,
    system: str | None,
    sessions: dict[str, Session],
    agent: Agent | Router,
    store: Any,
    unowned: set[str],
) -> Session:
    """The session `session_id`: the panel's, else its store's (the store wins), else made
    now, with no store until the user acts in it (`unowned`)."""
    if session_id not in sessions:
        if store is not None and stored_at(store, session_id):
            sessions[session_id] = agent.load_session(session_id, store=store)
        else:
            sessions[session_id] = Session(agent, session_id, system)
            unowned.add(session_id)
    return sessions[session_id]


def _put_back(
    log: list[dict[str, Any]],
    workspace: Workspace,
    agent: Agent | Router,
    store: Any,
    unowned: set[str],
) -> list[dict[str, Any]]:
    """The log's turns missing from their sessions appended again; the log, as it now is.
    A session with a store is not changed: the log changes a copy of it, kept aside."""
    entries, problems = _records.panel_entries(log, "this panel's log")
    for line in problems:
        print(line, file=sys.stderr)
    sessions = workspace.sessions
    aside: dict[str, Session] = {}  # a stored session's id -> the copy the log changes
    kept = []
    for raw, entry in entries:
        if entry.op == "rename":  # done again, unless it is done (or its session is gone)
            old = entry.renamed_from
            free = old in sessions and entry.session_id not in sessions
            if free and sessions[old].store is None:  # never a store's session
                workspace.rename(old, entry.session_id)
            kept.append(raw)
            continue
        session = _session(entry.session_id, entry.system, sessions, agent, store, unowned)
        if session.store is not None:  # the store's copy is the truth: the log's goes aside
            session = aside.get(entry.session_id) or _copy(session)
            aside[entry.session_id] = session
        if entry.op == "turn" and entry.messages:
            first = entry.messages[0].id
            if first not in {m.id for m in session.messages}:
                drops = _turn_again(session, list(entry.messages), workspace)
                raw = {**raw, "drops": drops} if drops else raw
        elif entry.op == "undo" and entry.replaces is not None:
            session.remove_turn(entry.replaces)
        kept.append(raw)
    for session_id, copy in aside.items():
        _keep_aside(sessions[session_id], copy, workspace, unowned)
    return kept


def _copy(session: Session) -> Session:
    copy = session.fork(session.session_id)
    copy.store = None
    return copy


def _keep_aside(stored: Session, copy: Session, workspace: Workspace, unowned: set[str]) -> None:
    """`copy` (what the log made of `stored`) kept as a session of its own, if it differs."""
    kept = kept_aside(stored, copy, workspace.sessions.__contains__)
    if kept is not None:
        workspace.sessions[kept.session_id] = kept
        unowned.add(kept.session_id)


def _turn_again(session: Session, messages: list[Message], workspace: Workspace) -> list[str]:
    """Append a logged turn; the sessions a cell run again kept only for it go."""
    made = _records.Made(session.session_id, messages[0].id)
    drops = workspace.superseded(made)
    session.messages = [*session.messages, *messages]
    workspace.made_again(made, drops)
    return drops
