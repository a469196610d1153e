"""%session's subcommands, one method each (`do_NAME`), on the kernel's Workspace."""

from __future__ import annotations

import sys
from typing import Any

from .. import _export as export
from .. import _records
from .. import _render as render
from .._ledger import Cost, dollars, spent_here
from .._turns import recorded_usage
from ..errors import AgentError, InvalidSessionData, SessionNotFoundError
from ..events import Response
from ..messages import _count
from ..session import Session
from ..stores.base import SessionStore
from . import _display, chat_turn
from ._errors import ChatError
from .panel import cards
from .workspace import Workspace, notebook_path


class SessionCommands:
    """`%session NAME ARGS...` runs `do_NAME(ARGS)`."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace

    def names(self) -> list[str]:
        """The subcommands, in alphabetical order."""
        return [name.removeprefix("do_") for name in dir(self) if name.startswith("do_")]

    def run(self, words: list[str]) -> Any:
        command, rest = (words[0], words[1:]) if words else ("info", [])
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            known = " ".join(self.names())
            raise ChatError(f"%session {command}: unknown subcommand; known: {known}")
        return handler(rest)

    def _show(self, shown: str, plain: str, metadata: dict[str, Any] | None) -> None:
        _display.show(self._workspace.shell, shown, plain, metadata)

    def _publish(self, markdown: str, metadata: dict[str, Any] | None) -> None:
        _display.publish(self._workspace.shell, markdown, metadata)

    # -- the notebook's sessions -------------------------------------------------------------

    def do_new(self, rest: list[str]) -> None:
        system = None
        if "--system" in rest:
            at = rest.index("--system")
            system = " ".join(rest[at + 1 :])
            rest = rest[:at]
        previous = self._workspace.cells.previous(fork=True)
        name = rest[0] if rest else None
        session, kept_as = self._workspace.new_session(name, system, previous)
        note = f"; its earlier turns are kept in `{kept_as}`" if kept_as else ""
        self._publish(
            f"new session `{session.session_id}`{note}", _records.record("system", session)
        )

    def do_panel(self, rest: list[str]) -> Any:
        from .panel import ChatPanel

        workspace = self._workspace
        current = workspace.current  # a panel on another session does not move where %%chat talks
        # its forks and switches are the notebook's sessions (the kernel's Workspace)
        panel = ChatPanel(workspace.session(rest[0] if rest else None))
        workspace.current = current or workspace.current
        return panel

    def do_list(self, rest: list[str]) -> None:
        workspace = self._workspace
        if not workspace.sessions:
            print("no sessions yet: %%chat makes one")
        for session_id, session in workspace.sessions.items():
            mark = "*" if session_id == workspace.current else " "
            cost = session.cost
            spent = f", spent {cost}" if cost.worth_saying else ""
            print(f"{mark} {session_id}  ({len(session.messages)} messages{spent})")

    def do_use(self, rest: list[str]) -> None:
        session = self._workspace.use(rest[0] if rest else "")
        self._show(  # recorded, so that a restore lands in this session
            f"<pre>using session {render.escaped(repr(session.session_id))}</pre>",
            f"using session {session.session_id!r}",
            _records.record("use", session),
        )

    def do_fork(self, rest: list[str]) -> None:
        replace = "--replace" in rest
        rest = [word for word in rest if word != "--replace"]
        base = self._workspace.session()
        previous = self._workspace.cells.previous(fork=True)
        name = rest[0] if rest else None
        twin, kept_as = self._workspace.fork(base, name, replace=replace, previous=previous)
        note = f"; its earlier turns are kept in `{kept_as}`" if kept_as else ""
        self._publish(
            f"forked `{base.session_id}` into `{twin.session_id}`{note}",
            _records.record("fork", twin, fork_of=base.session_id, kept_as=kept_as),
        )

    def do_delete(self, rest: list[str]) -> None:
        workspace = self._workspace
        name = rest[0] if rest else ""
        deleted = workspace.delete(name)
        now = f"; the current session is {workspace.current!r}" if workspace.current else ""
        self._show(  # recorded, so that a restore or Run All does not bring it back
            f"<pre>{render.escaped(f'deleted session {name!r}{now}')}</pre>",
            f"deleted session {name!r}{now}",
            _records.record("delete", deleted, current=workspace.current),
        )

    # -- the current session's turns ---------------------------------------------------------

    def do_clear(self, rest: list[str]) -> None:
        session = self._workspace.session()
        session.clear()
        self._publish(f"cleared session `{session.session_id}`", _records.record("clear", session))

    def do_undo(self, rest: list[str]) -> None:
        session = self._workspace.session()
        removed = session.undo()
        if removed is None:
            raise ChatError("nothing to undo")
        self._publish(
            f"dropped the last turn of `{session.session_id}` ({len(removed.messages)} messages)",
            _records.record("undo", session),
        )

    def do_retry(self, rest: list[str]) -> Response:
        return chat_turn.retry(self._workspace)

    def do_approve(self, rest: list[str]) -> Response | None:
        """%session approve ID [ID ...]: let waiting calls run; the last decision resumes."""
        return self._decide(rest, approved=True)

    def do_deny(self, rest: list[str]) -> Response | None:
        """%session deny ID [REASON ...]: refuse a waiting call (the model is told why)."""
        return self._decide(rest, approved=False)

    def _decide(self, rest: list[str], *, approved: bool) -> Response | None:
        session = self._workspace.session()
        verb = "approve" if approved else "deny"
        if not rest:
            raise ChatError(f"%session {verb} ID: name the call (see %session info)")
        try:
            if approved:
                for call_id in rest:
                    session.approve(call_id)
            else:
                session.deny(rest[0], " ".join(rest[1:]) or None)
        except AgentError as exc:
            raise ChatError(str(exc)) from None
        undecided = [c.id for c in session.pending_approvals if c.id not in session.decisions]
        if undecided:
            print(f"agent_nb: {verb}d; still waiting: {', '.join(undecided)}")
            return None
        return chat_turn.resume(self._workspace, session)

    # -- looking at the current session --------------------------------------------------------

    def do_history(self, rest: list[str]) -> None:
        count = int(rest[rest.index("-n") + 1]) if "-n" in rest else 10
        lines = []
        session = self._workspace.session()
        for message in session.messages[-count:]:
            text = render.one_line(message.text)
            role = message.role + (", interrupted" if message.metadata.get("interrupted") else "")
            lines.append(f"[{role}] {text[:100]}{'...' if len(text) > 100 else ''}")
        plain = "\n".join(lines) or f"no messages yet in session {session.session_id!r}"
        # shown as HTML: JupyterLab makes live links of URLs in printed text
        self._show(f"<pre>{render.escaped(plain)}</pre>", plain, None)

    def do_show(self, rest: list[str]) -> None:
        session = self._workspace.session()
        if not session.messages:
            empty = f"no messages yet in session {session.session_id!r}"
            if session.system:
                empty += f" (system: {render.one_line(session.system)})"
            self._show(f"<pre>{render.escaped(empty)}</pre>", empty, None)
            return
        shown = render.transcript_html(session.messages, session.system)
        self._show(shown, render.transcript_text(session.messages, session.system), None)

    def do_info(self, rest: list[str]) -> None:
        session = self._workspace.session()
        usage, cost = recorded_usage(session.messages), session.cost
        context, estimated = cards.context_now(session.messages)
        about = "~" if estimated else ""
        print(
            f"session: {session.session_id}\nmodel: {session.agent.model}\n"
            f"messages: {len(session.messages)}\n"
            f"context now: {about}{context:,} tokens (the last answer's request and answer)\n"
            f"tokens of the turns in history: {usage.input_tokens:,} in, "
            f"{usage.output_tokens:,} out\n"
            f"spent: {cost} in {_count(cost.requests, 'request')} (failed and undone turns "
            "included; session.spend() lists them)\n"
            + (f"the prompt cache saved: {dollars(cost.saved)}\n" if cost.saved > 0 else "")
            + f"sessions in this notebook: {len(self._workspace.sessions)}"
        )
        for call in session.pending_approvals:
            print(f"waiting for approval: {call.id} ({call.name}): %session approve|deny {call.id}")

    def do_cost(self, rest: list[str]) -> None:
        """What each of the notebook's sessions spent, and this kernel since it started."""
        workspace = self._workspace
        total = Cost()
        lines = []
        for session_id, session in workspace.sessions.items():
            cost = session.cost
            total += cost
            lines.append(f"{session_id}: {cost} in {_count(cost.requests, 'request')}")
        lines.append(f"all sessions of this notebook: {total}")
        lines.append(f"this kernel since it started: {spent_here()}")
        print("\n".join(lines))

    def do_insert(self, rest: list[str]) -> None:
        session = self._workspace.session()
        answers = [m for m in session.messages if m.role == "assistant" and m.text]
        if not answers:
            raise ChatError(f"session {session.session_id!r} has no answer yet to take code from")
        blocks = render.code_blocks(answers[-1].text, export.PYTHON)
        code = "\n\n".join(render.clean(text) for kind, text in blocks if kind == "code")
        if not code:
            raise ChatError("the last answer has no Python code block (```python ... ```)")
        self._workspace.shell.set_next_input(code, replace=False)  # the front end makes the cell
        lines = _count(len(code.splitlines()), "line")
        print(f"agent_nb: the last answer's code ({lines}) is in a new cell below; it has not run")

    # -- elsewhere: files and stores ---------------------------------------------------------

    def do_export(self, rest: list[str]) -> None:
        code_cells = "--code" in rest
        rest = [word for word in rest if word != "--code"]
        if len(rest) != 1 or not rest[0].endswith(".ipynb"):
            raise ChatError("usage: %session export PATH.ipynb [--code]")
        session = self._workspace.session()
        path = export.write_notebook(session, rest[0], code_cells=code_cells)
        print(f"exported {_described(session)} to {path}")

    def do_save(self, rest: list[str]) -> None:
        store = _store_at(rest[0] if rest else None)
        session = self._workspace.session()
        store.save(session.session_id, session.to_dict())
        print(f"saved {_described(session)} to {store!r}")

    def do_load(self, rest: list[str]) -> None:
        if not rest:
            raise ChatError("usage: %session load ID [PATH]; %session stored [PATH] lists them")
        store = _store_at(rest[1] if len(rest) > 1 else None)
        try:
            session = self._workspace.default_agent().load_session(rest[0], store=store)
        except (SessionNotFoundError, InvalidSessionData) as exc:
            raise ChatError(str(exc)) from None
        session.store = None  # it lives in this notebook now; %session save writes it back
        self._workspace.add(session)
        self._publish(
            f"loaded {_described(session)} from {store!r}",
            _records.record("load", session, session.messages),
        )

    def do_stored(self, rest: list[str]) -> None:
        store = _store_at(rest[0] if rest else None)
        infos = store.sessions(limit=50)
        if not infos:
            print(f"no sessions in {store!r}")
        for info in infos:
            when = (info.updated_at or "")[:16].replace("T", " ")
            print(f"{info.session_id}  {when}  {info.message_count:>4} messages  {info.title}")

    def do_restore(self, rest: list[str], *, quiet: bool = False) -> None:
        from ..stores import _ipynb

        workspace = self._workspace
        rest, limits = _limits(rest)
        path = rest[0] if rest else notebook_path(workspace.shell.user_ns)
        if path is None:
            raise ChatError(
                "cannot tell which notebook this is; give its path: %session restore PATH.ipynb"
            )
        try:
            found = _records.read_records(path)
        except (OSError, UnicodeDecodeError, _ipynb.UnreadableNotebook) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ChatError(f"cannot restore from {path}: {reason}; nothing was restored") from None

        def report(line: str) -> None:
            print(line, file=sys.stderr)

        replayed = _records.replay(found, workspace.default_agent(), Session, report, limits)
        workspace.restored(replayed)
        sessions = replayed.sessions
        if quiet and not sessions and not replayed.skipped:
            return
        print(
            f"agent_nb: restored {_count(replayed.turns, 'turn')} in "
            f"{_count(len(sessions), 'session')} from {path}"
            + (f" ({_count(replayed.skipped, 'record')} skipped)" if replayed.skipped else "")
        )


def _limits(rest: list[str]) -> tuple[list[str], _records.Limits]:
    """`%session restore`'s words without its caps (`--records N`, `--sessions N`,
    `--messages N`), and the caps."""
    words, caps = [], {}
    names = _records.Limits().names()
    items = iter(rest)
    for word in items:
        name = word.removeprefix("--")
        if word.startswith("--") and name in names:
            value = next(items, "")
            if not value.replace("_", "").isdigit() or int(value) < 1:
                raise ChatError(f"--{name} takes a whole number above 0, got {value!r}")
            caps[name] = int(value)
        else:
            words.append(word)
    return words, _records.Limits(**caps)


def _store_at(path: str | None) -> SessionStore:
    """The store %session save / load / stored name: a notebook, a SQLite file, the default."""
    from ..stores import NotebookStore, SQLiteStore

    if path is None:
        return SQLiteStore()
    if path.endswith(".ipynb"):
        return NotebookStore(path)
    return SQLiteStore(path)


def _described(session: Session) -> str:
    return f"session {session.session_id!r} ({len(session.messages)} messages)"
