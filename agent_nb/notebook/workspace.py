"""A kernel's notebook state, with one owner: the default agent, the sessions, the current
one, which cell made what, and what the chat panels logged.

`%load_ext agent_nb` makes the kernel's Workspace and hands it to the magics; every ChatPanel
opened in that kernel uses it too, so a panel's branches are `%%chat NAME~N`'s sessions and
the notebook's sessions are listed in the panel. In a kernel without the extension, the
kernel's Workspace only remembers its panels (which cell opened which), and each panel keeps
its sessions in a Workspace of its own, as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _records
from ..errors import AgentError
from ._errors import ChatError
from ._spend_records import SpendRecords
from .cells import Cells

if TYPE_CHECKING:
    from ..agent import Agent
    from ..events import Response
    from ..messages import Message
    from ..router import Router
    from ..session import Session
    from ._panel_records import Log

#: Each kernel's workspace, by the id of its IPython shell.
_kernels: dict[int, Workspace] = {}


def free_name(root: str, taken: Callable[[str], bool]) -> str:
    """The first of `root~1`, `root~2`, ... that is not `taken`: where a fork or a session
    kept aside goes."""
    number = 1
    while taken(f"{root}~{number}"):
        number += 1
    return f"{root}~{number}"


def stored_at(store: Any, session_id: str) -> bool:
    """Whether `store` holds `session_id` (a store that cannot answer holds nothing: nothing
    is taken from it, nor written)."""
    try:
        return session_id in store
    except Exception:
        return False


def kept_aside(stored: Session, copy: Session, taken: Callable[[str], bool]) -> Session | None:
    """A notebook's `copy` of a session its store holds (`stored`, which wins): kept aside
    under a free name (`ID~N`, not `taken` nor in the store), with no store and a notice, if
    its history differs; None if it is the same."""
    if [m.id for m in copy.messages] == [m.id for m in stored.messages]:
        return None
    store = stored.store
    name = free_name(
        stored.session_id, lambda n: taken(n) or (store is not None and stored_at(store, n))
    )
    kept = copy.fork(name)
    kept.store = None
    print(
        f"agent_nb: session {stored.session_id!r} is taken from {store!r}, which holds it; "
        f"this notebook's copy differs and is kept aside as session {name!r}",
        file=sys.stderr,
    )
    return kept


@dataclass
class Panels:
    """A kernel's chat panels: saved ones not yet claimed, and each cell's last panel's log."""

    saved: list[_records.Panel] | None = None  # None: the notebook has not been read
    #: by cell id and place in the cell ("id/0", "id/1": a cell may open several panels)
    latest: dict[str, Log] = field(default_factory=dict)
    _run: str | None = field(default=None, init=False)  # the execution running now ...
    _opened: int = field(default=0, init=False)  # ... and the panels it has opened so far

    def place(self, run: str | None) -> int:
        """The place in the running cell (execution `run`) of the panel opening now."""
        if run != self._run:
            self._run, self._opened = run, 0
        self._opened += 1
        return self._opened - 1


class Workspace:
    """The sessions of a kernel (or of one panel), the current one, and what made them."""

    def __init__(self, shell: Any = None, *, panels: Panels | None = None) -> None:
        self.shell = shell
        #: Whether `%load_ext agent_nb` made this the kernel's: panels then share its sessions.
        self.loaded = False
        self.agent: Agent | Router | None = None
        self.sessions: dict[str, Session] = {}
        self.current: str | None = None
        self.cells = Cells(self._saved_sources)
        self.panels = panels if panels is not None else Panels()
        #: Which spend the notebook's records carry (each record carries the rest).
        self.spend = SpendRecords()
        self._offline: str | None = None  # the notice, until a turn uses the offline provider

    @classmethod
    def of(cls, shell: Any) -> Workspace:
        """The kernel's workspace; made now if it has none (a panel without the extension)."""
        found = _kernels.get(id(shell))
        if found is None or found.shell is not shell:  # a shell gone, whose id was reused
            found = _kernels[id(shell)] = cls(shell)
        return found

    @classmethod
    def load(cls, shell: Any) -> Workspace:
        """`%load_ext agent_nb`: the kernel's new workspace, shared with its panels; what its
        panels logged so far stays."""
        made = _kernels[id(shell)] = cls(shell, panels=cls.of(shell).panels)
        made.loaded = True
        return made

    @classmethod
    def unload(cls, shell: Any) -> None:
        """`%unload_ext agent_nb`: the kernel's sessions go; what its panels logged stays."""
        _kernels[id(shell)] = cls(shell, panels=cls.of(shell).panels)

    def _saved_sources(self) -> list[str] | None:
        """The code cells' text in this notebook's file, as last saved, if it is known."""
        path = notebook_path(self.shell.user_ns) if self.shell is not None else None
        return _records.cell_sources(path) if path is not None else None

    # -- the default agent -----------------------------------------------------------------

    def default_agent(self) -> Agent | Router:
        """The agent (or Router) new sessions talk to: set by `%agent`, else one from the
        environment."""
        if self.agent is None:
            provider = os.environ.get("AGENT_NB_PROVIDER")
            model = os.environ.get("AGENT_NB_MODEL")
            if not provider and not model:
                if os.environ.get("OPENAI_API_KEY"):
                    provider, model = "openai", "gpt-4o-mini"
                elif os.environ.get("ANTHROPIC_API_KEY"):
                    provider = "anthropic"
                else:
                    provider = "test"
                    self._offline = (
                        "agent_nb: no API key, so the offline 'test' provider answers "
                        "(%agent provider=openai model=gpt-4o)"
                    )
            try:
                from ..agent import Agent

                self.agent = Agent(provider=provider, model=model)
            except AgentError as exc:
                raise ChatError(str(exc)) from None
        return self.agent

    def use_agent(self, agent: Agent | Router) -> None:
        """`agent` is the default from now on, every session's included (a Router gives each
        session a route of its own, on the candidate its history's last answer came from)."""
        self.agent = agent
        self._offline = None
        for session in self.sessions.values():
            session.agent = agent

    def offline_notice(self, session: Session) -> str | None:
        """Once, and only when a turn is about to use it: that the offline provider answers."""
        if self._offline is None or session.agent is not self.agent:
            return None
        notice, self._offline = self._offline, None
        return notice

    # -- sessions --------------------------------------------------------------------------

    def session(self, session_id: str | None = None, *, make: str | None = None) -> Session:
        """The named session or the current one (the first, 'main', made when needed); it
        becomes current. A name that is no session is an error naming a close one and how
        to make it (`make`: the command that would, "%%chat --new"), unless `make` is ""
        (then it is made)."""
        first = session_id == "main" and not self.sessions  # the default, made when needed
        if session_id is not None and session_id not in self.sessions and make != "" and not first:
            raise self.missing(session_id, make)
        session_id = session_id or self.current
        if session_id is None or session_id not in self.sessions:
            made = self.default_agent().session(session_id=session_id or "main")
            self.sessions[made.session_id] = made
            session_id = made.session_id
        self.current = session_id
        return self.sessions[session_id]

    def missing(self, session_id: str, make: str | None = None) -> ChatError:
        """The error for a session that does not exist: a close name, and how to make it
        (`make`: the command that would: "%%chat --new", "%session new")."""
        from ._args import did_you_mean

        how = ""
        if make:
            also = f" (or %session new {session_id})" if make != "%session new" else ""
            how = f" To make it: {make} {session_id}{also}."
        return ChatError(
            f"no session {session_id!r};{did_you_mean(session_id, self.sessions)} "
            f"%session list shows them.{how}"
        )

    def message(self, message_id: str) -> Message | None:
        """The message of this id, in whichever session holds it."""
        for session in self.sessions.values():
            for message in session.messages:
                if message.id == message_id:
                    return message
        return None

    def free_name(self, root: str) -> str:
        """A name for a session kept aside from `root`: `root~N`, not yet a session here."""
        return free_name(root, self.sessions.__contains__)

    def add(self, session: Session) -> None:
        """`session` (loaded from a store) is this notebook's, and the current one."""
        self.sessions[session.session_id] = session
        self.current = session.session_id

    def use(self, session_id: str) -> Session:
        """Talk in `session_id` from now on."""
        if session_id not in self.sessions:
            raise self.missing(session_id, "%session new")
        self.current = session_id
        return self.sessions[session_id]

    def rename(
        self, session_id: str, new: str, previous: _records.Made | None = None
    ) -> tuple[Session, str | None]:
        """Session `session_id` is `new` from now on (current if it was), in its store too;
        what cells made in it, they made in `new`: (it, where the session that had the id
        `new` is kept). The cell that renamed it before (`previous`) renames it again: done
        if it is, else in place of the session it made then (its turns no cell has made
        again kept aside, as a fork run again keeps them)."""
        mine = previous is not None and previous.renamed_from == session_id
        mine = mine and previous is not None and previous.session_id == new
        if mine and session_id not in self.sessions and new in self.sessions:
            return self.sessions[new], None  # done already
        if session_id not in self.sessions:
            raise self.missing(session_id)
        kept_as = None
        if mine and new in self.sessions:
            base = self.sessions[session_id]
            kept_as = self._keep_unmade(self.sessions[new], {m.id for m in base.messages})
            self.sessions.pop(new)
            self.cells.forget(new)
        session = rename(self.sessions, self.sessions[session_id], new)
        if self.current == session_id:
            self.current = new
        self.cells.renamed(session_id, new)
        return session, kept_as

    def delete(self, session_id: str) -> Session:
        """Forget `session_id`; the first session left becomes current if it was."""
        if session_id not in self.sessions:
            raise self.missing(session_id)
        deleted = self.sessions.pop(session_id)
        self.cells.forget(session_id)
        if self.current == session_id:
            self.current = next(iter(self.sessions), None)
        return deleted

    def new_session(
        self, name: str | None, system: str | None, previous: _records.Made | None
    ) -> tuple[Session, str | None]:
        """A new empty session, current: (it, where the one its cell made before is kept).
        A cell run again makes its session anew; any other existing name is refused."""
        again = previous is not None and previous.first_id is None
        again = again and (name or previous.session_id) in (previous.session_id, previous.made_as)
        session = self.default_agent().session(
            session_id=(name or previous.session_id) if previous is not None and again else name,
            system=system,
        )
        old = self.sessions.get(session.session_id)
        if old is not None and not again:
            raise ChatError(
                f"session {session.session_id!r} exists; %session use {session.session_id}"
            )
        kept_as = self._keep_unmade(old, set()) if old is not None else None
        self.sessions[session.session_id] = session
        self.current = session.session_id
        self.cells.made(session.session_id, None)
        return session, kept_as

    def fork(
        self, base: Session, name: str | None, *, replace: bool, previous: _records.Made | None
    ) -> tuple[Session, str | None]:
        """`base` forked into `name`, which becomes current: (the fork, where the session
        that had that name before is kept). A cell run again forks again into the session it
        made; any other existing name is refused unless `replace`."""
        again = previous is not None and (
            name in (previous.session_id, previous.made_as)
            or (name is None and previous.first_id is None)
        )
        name = name or (previous.session_id if previous is not None and again else None)
        if name == base.session_id:
            raise ChatError(
                f"session {name!r} is the current session; fork it under a new name: "
                f"%session fork {name}-2"
            )
        kept_as = None
        old = self.sessions.get(name) if name is not None else None
        if old is not None:
            if not (replace or again):
                raise ChatError(
                    f"session {name!r} exists; fork under a new name, or overwrite it: "
                    f"%session fork {name} --replace"
                )
            if again:
                kept_as = self._keep_unmade(old, {m.id for m in base.messages})
            self.cells.forget(name)
        twin = base.fork(name)
        self.sessions[twin.session_id] = twin
        self.current = twin.session_id
        self.cells.made(twin.session_id, None)
        return twin, kept_as

    def _keep_unmade(self, old: Session, ours: set[str]) -> str | None:
        """A session its cell makes again (a fork, a new session): where its turns that no
        cell has made again (not among `ours`, the ones it shares with its base) are kept."""
        own = [m for m in old.messages if m.id not in ours]
        later = self.cells.unmade({m.id for m in own if m.role == "user"})
        if not later:
            return None
        kept_as = self.free_name(old.session_id)
        self.keep(old.fork(kept_as), later, [m.id for m in old.messages])
        return kept_as

    def keep(self, kept: Session, waiting: set[str], history: list[str]) -> None:
        """`kept` holds turns (first ids `waiting`) of cells not yet run again; it goes once
        they have, if its history (message ids) is still `history`."""
        self.sessions[kept.session_id] = kept
        self.cells.keep(kept.session_id, waiting, history)

    # -- what cells made ---------------------------------------------------------------------

    def superseded(self, previous: _records.Made | None) -> list[str]:
        """The kept sessions that go once the cell that made `previous` has run again."""
        return self.cells.superseded(previous, self.sessions)

    def made_again(self, previous: _records.Made | None, drops: Iterable[str]) -> None:
        """The cell that made `previous` made it again: the kept sessions `drops` go."""
        self.cells.made_again(previous)
        for dropped in drops:  # every turn they kept has been made again by its cell
            self.sessions.pop(dropped, None)

    def made(
        self, session: Session, response: Response, previous: _records.Made | None, drops: list[str]
    ) -> None:
        """The running cell's turn in `session` (now current) answered with `response`."""
        self.cells.made(session.session_id, response.messages[0].id if response.messages else None)
        self.made_again(previous, drops)
        self.current = session.session_id

    def restored(self, replayed: _records.Replayed) -> None:
        """What a restore rebuilt from the notebook's records joins what is here. A session
        the default agent's store holds is taken from the store (the store wins); the
        notebook's copy, if it differs, is kept aside. Nothing is written to the store."""
        store = self.agent.store if self.agent is not None else None
        for session_id, rebuilt in list(replayed.sessions.items()):
            if store is None or not stored_at(store, session_id):
                self.sessions[session_id] = rebuilt
                continue
            try:
                stored = self.default_agent().load_session(session_id)
            except Exception as exc:  # unreadable: the notebook's copy, in the kernel only
                print(f"agent_nb: {exc}; the notebook's copy is restored", file=sys.stderr)
                self.sessions[session_id] = rebuilt
                continue
            self.sessions[session_id] = stored
            kept = kept_aside(stored, rebuilt, self.sessions.__contains__)
            if kept is not None:
                self.sessions[kept.session_id] = kept
        self.current = replayed.current or self.current
        self.spend.restored(replayed.sessions.values(), replayed.spend_of)  # type: ignore[arg-type]
        self.cells.restored(replayed.made, replayed.retried)
        for kept_as, (waiting, history) in replayed.kept.items():  # they go as in the run
            self.cells.keep(kept_as, waiting, history)
        self.panels.saved = list(replayed.panels)


def rename(sessions: dict[str, Session], session: Session, new: str) -> Session:
    """`session` (in `sessions`, where it keeps its place) under the id `new`; its store
    holds it under `new`, no longer under its old id."""
    old = session.session_id
    if new in sessions or (session.store is not None and stored_at(session.store, new)):
        raise ChatError(f"session {new!r} exists; choose another name")
    if session.pending_approvals:
        raise ChatError(f"session {old!r} has tool calls waiting for approval: decide them first")
    session.session_id = new
    if session.store is not None:
        try:
            session.save()  # under the new id, in full
        except AgentError as exc:
            session.session_id = old
            raise ChatError(f"{exc}; session {old!r} keeps its name") from None
        try:
            session.store.delete(old)
        except Exception as exc:  # the store keeps a copy under the old id: say so
            print(f"agent_nb: {old!r} stays in {session.store!r} too ({exc})", file=sys.stderr)
    order = list(sessions.items())
    sessions.clear()  # in place: a panel holds this very dict
    sessions.update((new if key == old else key, value) for key, value in order)
    return session


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
