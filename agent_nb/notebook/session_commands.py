"""%session's subcommands, one method each (`do_NAME`), on the kernel's Workspace."""

from __future__ import annotations

import sys
from argparse import ArgumentTypeError, Namespace
from collections.abc import Callable
from typing import Any

from .. import _export as export
from .. import _records
from .. import _render as render
from .._ledger import Cost, dollars, spent_here
from .._turns import recorded_usage
from ..errors import AgentError, InvalidSessionData, SessionNotFoundError
from ..messages import _count
from ..session import Session
from ..stores.base import SessionStore
from . import _display, _gauge, _routing, chat_turn
from ._args import Parser, did_you_mean, new_id, positive
from ._errors import ChatError
from .workspace import Workspace, notebook_path


def arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a subcommand, as argparse's add_argument takes it."""
    return names, options


def takes(*arguments: tuple[tuple[str, ...], dict[str, Any]]) -> Callable[[Any], Any]:
    """The arguments a `do_NAME` parses (its docstring's first line is its help)."""

    def mark(method: Any) -> Any:
        method.arguments = arguments
        return method

    return mark


class SessionCommands:
    """`%session NAME ARGS...` runs `do_NAME(ARGS parsed)`."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace

    def names(self) -> list[str]:
        """The subcommands, in alphabetical order."""
        return [name.removeprefix("do_") for name in dir(self) if name.startswith("do_")]

    def run(self, words: list[str]) -> Any:
        command, rest = (words[0], words[1:]) if words else ("info", [])
        if command in ("-h", "--help", "help"):
            print(_help(self))
            return None
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            known = " ".join(self.names())
            raise ChatError(
                f"%session {command}: unknown subcommand;{did_you_mean(command, self.names())} "
                f"known: {known}"
            )
        parsed = self.parser(command).parse(rest)
        return None if parsed is None else handler(parsed)

    def parser(self, command: str) -> Parser:
        """The parser of `%session COMMAND`."""
        handler = getattr(self, f"do_{command}")
        parser = Parser(f"%session {command}", (handler.__doc__ or "").split("\n")[0])
        for names, options in getattr(handler, "arguments", ()):
            parser.add_argument(*names, **options)
        return parser

    def _show(self, shown: str, plain: str, metadata: dict[str, Any] | None) -> None:
        _display.show(self._workspace.shell, shown, plain, metadata)

    def _kept_note(self, kept_as: str | None) -> str:
        """Where a session made again keeps its earlier turns: said unless this is a Run All
        going as the saved one went (their cells make them again further down)."""
        if kept_as is None or self._workspace.cells.in_order:
            return ""
        return f"; its earlier turns are kept in `{kept_as}`"

    def _publish(self, markdown: str, metadata: dict[str, Any] | None) -> None:
        _display.publish(self._workspace.shell, markdown, metadata)

    # -- the notebook's sessions -------------------------------------------------------------

    @takes(
        arg("name", nargs="?", type=new_id, metavar="ID", help="its id (default: a new one)"),
        arg("--system", nargs="+", metavar="TEXT", help="its system prompt (the rest of the line)"),
    )
    def do_new(self, args: Namespace) -> None:
        """A new empty session, current from now on."""
        system = " ".join(args.system) if args.system else None
        previous = self._workspace.cells.previous(fork=True)
        name = args.name
        session, kept_as = self._workspace.new_session(name, system, previous)
        note = self._kept_note(kept_as)
        self._publish(
            f"new session `{session.session_id}`{note}", _records.record("system", session)
        )

    @takes(arg("session", nargs="?", metavar="ID", help="the session (default: the current one)"))
    def do_panel(self, args: Namespace) -> Any:
        """A chat window on a session (made if new; where %%chat talks stays)."""
        from .panel import ChatPanel

        workspace = self._workspace
        current = workspace.current  # a panel on another session does not move where %%chat talks
        # its forks and switches are the notebook's sessions (the kernel's Workspace)
        panel = ChatPanel(workspace.session(args.session, make=""))  # made if new
        workspace.current = current or workspace.current
        return panel

    @takes()
    def do_list(self, args: Namespace) -> None:
        """Every session, * marks the current one."""
        workspace = self._workspace
        later = workspace.cells.not_yet_made()  # in a Run All: as a fresh run has them here
        listed = {k: s for k, s in workspace.sessions.items() if k not in later}
        if not listed:
            print("no sessions yet: %%chat makes one")
        for session_id, session in listed.items():
            mark = "*" if session_id == workspace.current else " "
            cost = session.cost
            spent = f", spent {cost}" if cost.worth_saying else ""
            print(f"{mark} {session_id}  ({len(session.messages)} messages{spent})")

    @takes(arg("session", metavar="ID", help="the session to talk in"))
    def do_use(self, args: Namespace) -> None:
        """Talk in SESSION from now on."""
        session = self._workspace.use(args.session)
        self._publish(  # recorded, so that a restore lands in this session
            f"using session `{session.session_id}`", _records.record("use", session)
        )

    @takes(
        arg(
            "new_id",
            nargs="?",
            type=new_id,
            metavar="NEW_ID",
            help="the fork's id (default: CURRENT~N)",
        ),
        arg("--replace", action="store_true", help="overwrite a session of that id"),
    )
    def do_fork(self, args: Namespace) -> None:
        """Branch the current conversation into NEW_ID, current from now on."""
        base = self._workspace.session()
        previous = self._workspace.cells.previous(fork=True)
        twin, kept_as = self._workspace.fork(
            base, args.new_id, replace=args.replace, previous=previous
        )
        note = self._kept_note(kept_as)
        self._publish(
            f"forked `{base.session_id}` into `{twin.session_id}`{note}",
            _records.record("fork", twin, fork_of=base.session_id, kept_as=kept_as),
        )

    @takes(
        arg(
            "names",
            nargs="+",
            metavar="[ID] NEW_ID",
            help="the session (default: the current one) and its new id",
        ),
    )
    def do_rename(self, args: Namespace) -> None:
        """Give a session (the current one) a new id."""
        workspace = self._workspace
        if len(args.names) > 2:
            raise ChatError("usage: %session rename [ID] NEW_ID")
        new = args.names[-1]
        try:
            new_id(new)
        except ArgumentTypeError as exc:
            raise ChatError(f"%session rename: {exc}") from None
        previous = workspace.cells.previous(fork=True)
        if len(args.names) == 2:
            old = args.names[0]
        elif previous is not None and previous.renamed_from and previous.session_id == new:
            old = previous.renamed_from  # this cell renamed the current session before
        else:
            old = workspace.session().session_id
        session, kept_as = workspace.rename(old, new, previous)
        if len(args.names) == 1:  # the current session's: current it stays
            workspace.current = new
        workspace.cells.made(new, None, renamed_from=old)
        self._publish(
            f"renamed session `{old}` to `{new}`{self._kept_note(kept_as)}",
            _records.record("rename", session, renamed_from=old, kept_as=kept_as),
        )

    @takes(arg("session", metavar="ID", help="the session to forget"))
    def do_delete(self, args: Namespace) -> None:
        """Forget a session."""
        workspace = self._workspace
        name = args.session
        deleted = workspace.delete(name)
        now = f"; the current session is {workspace.current!r}" if workspace.current else ""
        self._show(  # recorded, so that a restore or Run All does not bring it back
            f"<pre>{render.escaped(f'deleted session {name!r}{now}')}</pre>",
            f"deleted session {name!r}{now}",
            _records.record("delete", deleted, current=workspace.current),
        )

    # -- the current session's turns ---------------------------------------------------------

    @takes()
    def do_clear(self, args: Namespace) -> None:
        """Forget the current session's messages."""
        session = self._workspace.session()
        session.clear()
        self._publish(f"cleared session `{session.session_id}`", _records.record("clear", session))

    @takes()
    def do_undo(self, args: Namespace) -> None:
        """Drop the current session's last turn."""
        session = self._workspace.session()
        removed = session.undo()
        if removed is None:
            raise ChatError("nothing to undo")
        self._publish(
            f"dropped the last turn of `{session.session_id}` ({len(removed.messages)} messages)",
            _records.record("undo", session),
        )

    @takes()
    def do_retry(self, args: Namespace) -> None:
        """Answer the last prompt again (the new answer replaces the old)."""
        chat_turn.retry(self._workspace)  # shown once, by itself: not again as Out[n]

    @takes(
        arg(
            "call",
            nargs="+",
            metavar="ID",
            help="the id of a waiting tool call (see %session info)",
        ),
        arg(
            "--always",
            action="store_true",
            help="and let their tools run without asking from now on, in this session",
        ),
    )
    def do_approve(self, args: Namespace) -> None:
        """Let tool calls that wait for approval run; the last decision resumes the turn."""
        self._decide(args.call, None, approved=True, always=args.always)

    @takes(
        arg("call", metavar="ID", help="the id of a waiting tool call (see %session info)"),
        arg("reason", nargs="*", metavar="REASON", help="why (the model is told)"),
    )
    def do_deny(self, args: Namespace) -> None:
        """Refuse a tool call that waits for approval; the model is told, with REASON."""
        self._decide([args.call], " ".join(args.reason) or None, approved=False)

    def _decide(
        self, calls: list[str], reason: str | None, *, approved: bool, always: bool = False
    ) -> None:
        session = self._workspace.session()
        verb = "approve" if approved else "deny"
        try:
            if approved:
                for call_id in calls:
                    session.approve(call_id, always=always)
            else:
                session.deny(calls[0], reason)
        except AgentError as exc:
            raise ChatError(str(exc)) from None
        undecided = [c.id for c in session.pending_approvals if c.id not in session.decisions]
        if undecided:
            print(f"agent_nb: {verb}d; still waiting: {', '.join(undecided)}")
            return
        chat_turn.resume(self._workspace, session)

    # -- looking at the current session --------------------------------------------------------

    @takes(arg("-n", type=positive, default=10, metavar="N", help="how many (default 10)"))
    def do_history(self, args: Namespace) -> None:
        """The current session's last N messages, a line each."""
        count = args.n
        lines = []
        session = self._workspace.session()
        for message in session.messages[-count:]:
            text = render.one_line(message.text)
            role = message.role + (", interrupted" if message.metadata.get("interrupted") else "")
            lines.append(f"[{role}] {text[:100]}{'...' if len(text) > 100 else ''}")
        plain = "\n".join(lines) or f"no messages yet in session {session.session_id!r}"
        # shown as HTML (JupyterLab makes live links of URLs in printed text), a line each,
        # in the font of every other message of ours
        shown = "<br>".join(render.escaped(line) for line in plain.splitlines())
        self._show(f"<p>{shown}</p>", plain, None)

    @takes()
    def do_show(self, args: Namespace) -> None:
        """The current session's whole transcript."""
        session = self._workspace.session()
        if not session.messages:
            empty = f"no messages yet in session {session.session_id!r}"
            if session.system:
                empty += f" (system: {render.one_line(session.system)})"
            self._show(f"<pre>{render.escaped(empty)}</pre>", empty, None)
            return
        shown = render.transcript_html(session.messages, session.system)
        self._show(shown, render.transcript_text(session.messages, session.system), None)

    @takes()
    def do_info(self, args: Namespace) -> None:
        """The current session: id, model, messages, tokens, calls waiting for approval."""
        session = self._workspace.session()
        usage, cost = recorded_usage(session.messages), session.cost
        context = _gauge.described(_gauge.report(session))
        routed = "".join(f"{line}\n" for line in _routing.info(session))
        print(
            f"session: {session.session_id}\nmodel: {session.agent.model}\n{routed}"
            f"messages: {len(session.messages)}\n"
            f"context: {context}\n"
            f"tokens of the turns in history: {usage.input_tokens:,} in, "
            f"{usage.output_tokens:,} out\n"
            f"spent: {cost} in {_count(cost.requests, 'request')} (failed and undone turns "
            "included; session.spend() lists them)\n"
            + (f"the prompt cache saved: {dollars(cost.saved)}\n" if cost.saved > 0 else "")
            + f"sessions in this notebook: {len(self._workspace.sessions)}"
        )
        if session.allowed_tools:
            print(f"tools allowed without asking: {', '.join(session.allowed_tools)}")
        for call in session.pending_approvals:
            print(f"waiting for approval: {call.id} ({call.name}): %session approve|deny {call.id}")

    @takes(
        arg(
            "action",
            choices=("reset", "status"),
            help="reset: back to the candidate the router would choose now; status: its "
            "candidates' health",
        )
    )
    def do_route(self, args: Namespace) -> None:
        """The current session's route (a Router's session): reset, or its status."""
        session = self._workspace.session()
        route = _routing.route_of(session)
        if route is None:
            raise ChatError(
                f"session {session.session_id!r} is not routed: %agent ROUTER first, "
                "with ROUTER = Router([agent_a, agent_b])"
            )
        if args.action == "status":
            print(_routing.status(route.router))
            return
        before = route.label
        try:
            session.route_reset()
        except AgentError as exc:
            raise ChatError(str(exc)) from None
        after = session.agent.label
        moved = f"moves from {before} to {after}" if after != before else f"stays on {after}"
        print(f"agent_nb: session {session.session_id!r} {moved}")

    @takes()
    def do_cost(self, args: Namespace) -> None:
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

    @takes()
    def do_insert(self, args: Namespace) -> None:
        """The last answer's Python code as a new cell below (not run)."""
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

    @takes(
        arg("path", metavar="PATH.ipynb", help="the notebook to write"),
        arg("--code", action="store_true", help="Python blocks of answers as code cells"),
    )
    def do_export(self, args: Namespace) -> None:
        """The current session as a notebook."""
        if not args.path.endswith(".ipynb"):
            raise ChatError("usage: %session export PATH.ipynb [--code]")
        session = self._workspace.session()
        path = export.write_notebook(session, args.path, code_cells=args.code)
        print(f"exported {_described(session)} to {path}")

    @takes(
        arg(
            "path",
            nargs="?",
            metavar="PATH",
            help="PATH.ipynb, PATH.db, or the default SQLite file",
        )
    )
    def do_save(self, args: Namespace) -> None:
        """Keep the current session in a store."""
        store = _store_at(args.path)
        session = self._workspace.session()
        store.save(session.session_id, session.to_dict())
        print(f"saved {_described(session)} to {store!r}")

    @takes(
        arg("session", metavar="ID", help="the stored session (%session stored lists them)"),
        arg(
            "path",
            nargs="?",
            metavar="PATH",
            help="PATH.ipynb, PATH.db, or the default SQLite file",
        ),
    )
    def do_load(self, args: Namespace) -> None:
        """Take a session from a store into this notebook."""
        store = _store_at(args.path)
        try:
            session = self._workspace.default_agent().load_session(args.session, store=store)
        except (SessionNotFoundError, InvalidSessionData) as exc:
            raise ChatError(str(exc)) from None
        session.store = None  # it lives in this notebook now; %session save writes it back
        self._workspace.add(session)
        self._publish(
            f"loaded {_described(session)} from {store!r}",
            _records.record("load", session, session.messages),
        )

    @takes(
        arg(
            "path",
            nargs="?",
            metavar="PATH",
            help="PATH.ipynb, PATH.db, or the default SQLite file",
        )
    )
    def do_stored(self, args: Namespace) -> None:
        """The sessions a store holds, newest first."""
        store = _store_at(args.path)
        infos = store.sessions(limit=50)
        if not infos:
            print(f"no sessions in {store!r}")
        for info in infos:
            when = (info.updated_at or "")[:16].replace("T", " ")
            print(f"{info.session_id}  {when}  {info.message_count:>4} messages  {info.title}")

    @takes(
        arg("path", nargs="?", metavar="PATH", help="the notebook (default: this one)"),
        *(
            arg(f"--{cap}", type=positive, metavar="N", help=f"restore at most N {cap}")
            for cap in ("records", "sessions", "messages")  # _records.Limits' caps
        ),
    )
    def do_restore(self, args: Namespace, *, quiet: bool = False) -> None:
        """Rebuild sessions from the saved notebook's records."""
        from ..stores import _ipynb

        workspace = self._workspace
        path = args.path or notebook_path(workspace.shell.user_ns)
        # (%load_ext's restore passes only a path)
        caps = {name: getattr(args, name, None) for name in ("records", "sessions", "messages")}
        limits = _records.Limits(**{name: most for name, most in caps.items() if most})
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
        for session in sessions.values():  # a Router's: on what they recorded
            line = _routing.differs(session)
            if line is not None:
                print(line)


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


def _help(commands: SessionCommands) -> str:
    """`%session --help`: each subcommand's first line."""
    lines = ["%session SUBCOMMAND [-h] ...: manage the notebook's conversations"]
    for name in commands.names():
        lines.append(f"  {name:<9} {commands.parser(name).description}")
    return "\n".join(lines)
