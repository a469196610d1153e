"""ChatPanel's controls: what each button of a view does to the panel's conversation.

Send, Stop, Undo, regenerate, edit = fork, approve / deny, retry, the switchers. The panel
holds one Controls (composition); protocol.py hands it the views' messages. Forks follow the
notebook's naming (`%session fork`, a cell run again): the forks of session `main` are
`main~1`, `main~2`, ...; the branch switcher shows a session's family (its root and the
root's forks), the session switcher one entry per family.

Every control checks the session as it is when the click arrives (a double click, a click
on a view that is behind), changes nothing when it cannot do what was asked, and says why
inline. A fork is saved to the store before anything else changes, so a store that fails
leaves the conversation as it was. What a control changes goes into the panel's log
(_panel_records.py), so a restore sees it: a branch as a `load` with its messages, a
regenerate as that branch, an `undo` of the old answer and the new turn.
"""

from __future__ import annotations

import contextlib
import re
from argparse import ArgumentTypeError
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import _render as render
from ...errors import AgentError, SessionChangedError
from ...messages import Message
from ...session import Session
from ...stores.base import title
from .. import _gauge, _panel_records
from .._args import new_id
from .._errors import ChatError
from ..workspace import Workspace, free_name, rename, stored_at
from . import cards
from .protocol import ToView

if TYPE_CHECKING:
    from ...stores.base import SessionInfo
    from .widget import ChatPanel

_FORK = re.compile(r"~\d+$")
#: How many of the store's sessions the switchers list.
_LISTED = 100


def _root_of(session_id: str) -> str:
    """The session a fork was made from by name: `main~2` -> `main`."""
    return _FORK.sub("", session_id)


def _snippet(text: str) -> str:
    return title(render.clean(text))


class Controls:
    """The controls of one panel: its views' requests, done on its conversation."""

    def __init__(self, panel: ChatPanel) -> None:
        self._panel = panel
        self.again: Callable[[], Any] | None = None  # what Retry does after an error
        self.seconds: dict[str, float] = {}  # answer id -> how long its turn took here

    # -- the conversation ----------------------------------------------------------------

    def hello(self) -> None:
        """A view opened: it gets the whole conversation."""
        self._panel._sync(reset=True)

    def send(self, text: str) -> None:
        if not self._panel.busy:  # a second prompt while the first is answered
            self._panel.send(text)

    def stop(self) -> None:
        self._panel.stop()

    def undo(self) -> None:
        """Drop the session's last turn (the Undo button)."""
        panel = self._panel
        if panel.busy:
            return
        try:
            removed = panel.session.undo()
        except AgentError as exc:  # a store that failed: the session is as it was
            panel._end(error=f"<p>{render.escaped(str(exc))}</p>")
            return
        panel._notes = {}
        if removed:
            panel._note(_panel_records.undo(panel.session, list(removed.messages)))
        panel._sync()
        if not removed:
            panel._end(error="<p>nothing to undo</p>")
        panel._refresh_fallback()

    # -- regenerate ----------------------------------------------------------------------

    def regenerate(self, message_id: Any) -> None:
        """Answer the last prompt again; the earlier answer stays, in a fork (`ID~N`)."""
        panel = self._panel
        if panel.busy:
            return  # a second click while the first regenerates
        session = panel.session
        history = session.messages
        turns = session.turns()
        last = turns[-1] if turns and turns[-1].prompt is not None else None
        if last is None or message_id not in [m.id for m in last.messages]:
            self._problem(
                "only the last answer can be regenerated, and this one is no longer last "
                f"in session {session.session_id!r}; the panel now shows the session as it is"
            )
            return
        try:
            kept = self._fork()
        except AgentError as exc:
            self._problem(f"could not keep the earlier answer as a branch: {exc}")
            return
        retake = session.retake(last)

        def finish(problem: str | None) -> str | None:
            try:
                new = retake.commit()
            except SessionChangedError:
                self._drop(kept)
                return (
                    f"session {session.session_id!r} changed while its last prompt was "
                    "answered again; the new answer was dropped"
                )
            except AgentError as exc:  # answered, and in the session: its store missed it
                return f"answered again, but {exc}"
            if not new:  # nothing came: the session keeps its answer, the copy goes
                self._drop(kept)
                return problem
            if panel._logged:  # in the notebook's records: the branch, then the swap
                panel._note(_panel_records.switch(kept, known=False))
                panel._note(_panel_records.undo(session, list(last.messages)))
            return problem

        panel._show_only(history[: last.start])
        panel._launch(
            panel._turn(
                last.prompt.text,
                target=retake.copy,
                finish=finish,
                again=lambda: self.regenerate(message_id),
                images=last.prompt.images,  # the prompt as it was sent
            )
        )

    # -- edit an earlier prompt: a fork from there -----------------------------------------

    def edit(self, message_id: Any) -> None:
        """The front end asks for a prompt's text, to edit it."""
        message = self._prompt(message_id)
        if message is not None:
            self._panel._post(ToView.EDITING, id=message.id, text=render.clean(message.text))

    def send_edited(self, message_id: Any, text: str) -> None:
        """Fork the session just before prompt `message_id` and send `text` in the fork."""
        panel = self._panel
        if panel.busy:
            return
        message = self._prompt(message_id)
        if message is None:
            return
        try:
            fork = self._fork(at=message.id)
        except AgentError as exc:
            self._problem(f"could not fork the conversation: {exc}")
            return
        if _panel_records.from_the_front_end():
            panel._note(_panel_records.switch(fork, known=False))
        self._show(fork.session_id)
        panel.send(text)

    def _prompt(self, message_id: Any) -> Message | None:
        session = self._panel.session
        found = next((m for m in session.messages if m.id == message_id and m.role == "user"), None)
        if found is None:
            self._problem(
                f"that prompt is no longer in session {session.session_id!r}; "
                "the panel now shows the session as it is"
            )
        return found

    # -- approve / deny --------------------------------------------------------------------

    def decide(self, call_id: Any, approved: bool, message_id: Any, always: bool = False) -> None:
        """Approve or deny a waiting call of message `message_id`; once every waiting call is
        decided, resume. `always` (Always allow): approved, and its tool runs without asking
        from now on, in this session (`session.approve(id, always=True)`).

        The message is checked too: servers reuse call ids, and a click on a card that is no
        longer the waiting one must not decide a new call that has the same id.
        """
        panel = self._panel
        if panel.busy:
            return
        session = panel.session
        history = session.messages
        try:
            if len(history) < 2 or history[-2].id != message_id or not isinstance(call_id, str):
                raise AgentError(
                    f"that tool call no longer waits for approval in session "
                    f"{session.session_id!r}; the panel now shows the calls that do"
                )
            if approved:
                session.approve(call_id, always=always)
            else:
                session.deny(call_id, "denied in the chat panel")
        except AgentError as exc:
            self._problem(str(exc))
            return
        waiting = {call.id for call in session.pending_approvals}
        if waiting <= set(session.decisions):
            panel._launch(panel._turn(None, again=self._resume))
        else:
            panel._resync()  # the card says what was decided

    def _resume(self) -> None:
        panel = self._panel
        if not panel.busy and panel.session.pending_approvals:
            panel._launch(panel._turn(None, again=self._resume))

    # -- retry -----------------------------------------------------------------------------

    def retry(self) -> None:
        """Do again what failed (the Retry button of an inline error)."""
        again = self.again
        if self._panel.busy or again is None:
            return
        self.again = None
        again()

    # -- the switchers -----------------------------------------------------------------------

    def choose(self, session_id: Any) -> None:
        """The session or branch switcher: show one of the listed sessions."""
        if self._panel.busy:
            self._problem("the panel is answering: press Stop first, then switch")
            return
        listed = [entry["id"] for entry in self._listing()]
        if not isinstance(session_id, str) or session_id not in listed:
            self._problem(f"no session {session_id!r} to switch to; the list is up to date now")
            return
        self._show(session_id)

    def new_session(self) -> None:
        panel = self._panel
        if panel.busy:
            self._problem("the panel is answering: press Stop first")
            return
        session = panel.session.agent.session(store=panel._store)  # a route: its Router's
        panel._sessions[session.session_id] = session
        if _panel_records.from_the_front_end():
            panel._note(_panel_records.switch(session, known=False))
        self._show(session.session_id)

    def rename(self, name: Any) -> None:
        """Give the session shown a new id (the header's Rename); the notebook's sessions,
        the store and the records know it by that id from now on."""
        panel = self._panel
        if panel.busy:
            self._problem("the panel is answering: press Stop first, then rename")
            return
        session = panel.session
        old = session.session_id
        try:
            new = new_id(name if isinstance(name, str) else "")
            if new == old:
                return panel._sync()
            _renamed(panel._sessions, session, new)
        except (ArgumentTypeError, ChatError) as exc:
            self._problem(str(exc))
            return
        panel._log.session_id = new
        if _panel_records.from_the_front_end():
            panel._note(_panel_records.rename(session, old))
        panel.session_id = new
        panel._sync()
        panel._refresh_fallback()

    def _show(self, session_id: str) -> None:
        panel = self._panel
        self.again = None
        try:
            panel.switch(session_id)
        except AgentError as exc:  # corrupt data: the error names it and the fix
            self._problem(str(exc))
        except Exception as exc:  # a store that fails to read: the panel stays where it was
            self._problem(
                f"could not open session {session_id!r} from {panel._store!r} "
                f"({type(exc).__name__}: {exc}); the panel still shows "
                f"{panel.session.session_id!r}"
            )

    def _listing(self) -> list[dict[str, Any]]:
        """Every session the panel knows of, newest first: its own, then the store's."""
        entries: dict[str, dict[str, Any]] = {}
        for info in self._stored():
            entries[info.session_id] = {
                "id": info.session_id,
                "title": info.title,
                "count": info.message_count,
                "updated": info.updated_at or "",
            }
        for session in self._panel._sessions.values():
            messages = session.messages
            prompts = [m.text for m in messages if m.role == "user"]
            entries[session.session_id] = {
                "id": session.session_id,
                "title": _snippet(prompts[0]) if prompts else "",
                "last": _snippet(prompts[-1]) if prompts else "",
                "count": len(messages),
                "updated": session.updated_at,
            }
        return sorted(entries.values(), key=lambda e: e["updated"], reverse=True)

    def _stored(self) -> list[SessionInfo]:
        store = self._panel._store
        if store is None:
            return []
        try:
            return store.sessions(limit=_LISTED)
        except Exception:  # a store that cannot list: the panel's own sessions still are
            return []

    def state(self) -> dict[str, Any]:
        """What the controls around the log show (a `controls` message): the switchers, the
        footer, the prompt ↑ recalls."""
        session = self._panel.session
        current = session.session_id
        listing = self._listing()
        by_id = {entry["id"]: entry for entry in listing}
        families: dict[str, dict[str, Any]] = {}
        for entry in listing:  # newest first: a family is listed where its newest member is
            root = _root_of(entry["id"])
            if root not in families:  # shown by the current branch, the root, or the newest
                chosen = current if root == _root_of(current) else root
                first = by_id.get(root, entry)
                families[root] = {"id": by_id.get(chosen, entry)["id"], "title": first["title"]}
        branches = [
            {"id": e["id"], "title": e.get("last") or e["title"], "count": e["count"]}
            for e in listing
            if _root_of(e["id"]) == _root_of(current)
        ]
        branches.sort(key=lambda e: (e["id"] != _root_of(e["id"]), e["id"]))
        messages = session.messages
        prompts = [m.text for m in messages if m.role == "user"]
        answers = [m for m in messages if m.role == "assistant"]
        seconds = self.seconds.get(answers[-1].id) if answers else None
        return {
            "current": current,
            "sessions": [{"id": f["id"], "title": f["title"]} for f in families.values()],
            "branches": branches,
            "footer": cards.footer(
                messages,
                session.agent.model,
                seconds,
                session.updated_at,
                session.cost,
                _gauge.report(session),
            ),
            "last_prompt": render.clean(prompts[-1]) if prompts else "",
            "can_undo": any(m.role == "user" for m in messages),
        }

    # -- forks -------------------------------------------------------------------------------

    def _fork(self, at: str | None = None) -> Session:
        """A new branch of the session (of its history before message `at`), saved to its
        store first."""
        base = self._panel.session
        self._panel._own(base)
        twin = base.fork(self._free_name(_root_of(base.session_id)), at=at)
        if twin.store is not None:
            twin.save()  # StoreError: nothing has changed yet
        self._panel._sessions[twin.session_id] = twin
        return twin

    def _free_name(self, root: str) -> str:
        taken = set(self._panel._sessions) | {info.session_id for info in self._stored()}
        store = self._panel.session.store
        return free_name(
            root, lambda name: name in taken or (store is not None and stored_at(store, name))
        )

    def _drop(self, fork: Session) -> None:
        """Forget a fork made for nothing (a regenerate that brought no answer)."""
        self._panel._sessions.pop(fork.session_id, None)
        if fork.store is not None:
            # a store that fails here keeps a copy of the session: harmless
            with contextlib.suppress(Exception):
                fork.store.delete(fork.session_id)

    def _problem(self, text: str) -> None:
        """Say inline why a control did nothing, with the panel showing the session as it is."""
        self._panel._resync()
        self._panel._end(error=f"<p>{render.escaped(text)}</p>")


def _renamed(sessions: dict[str, Session], session: Session, new: str) -> None:
    """`session` is `new` from now on: in the kernel's Workspace if the panel shares its
    sessions (its cells made their turns in it under the old id), else in the panel's own."""
    from IPython import get_ipython

    shell = get_ipython()
    kernel = Workspace.of(shell) if shell is not None else None
    if kernel is not None and kernel.sessions is sessions:
        kernel.rename(session.session_id, new)  # (a panel's rename: no cell made it)
    else:
        rename(sessions, session, new)
