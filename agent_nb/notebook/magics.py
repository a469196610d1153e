"""%agent, %%chat and %session: conversations in notebook cells."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .. import _export as export
from .. import _render as render
from .. import _turns
from ..agent import Agent
from ..errors import (
    AgentError,
    InvalidSessionData,
    SessionChangedError,
    SessionNotFoundError,
    StoreError,
)
from ..events import Response
from ..messages import Message, _count
from ..session import Session
from ..stores.base import SessionStore
from . import _images, _panel_records, persist, prompts
from .cells import Cells
from .live import live_answer


class ChatError(Exception):
    """A short, clear message in place of a traceback; stops "Run all" like any error."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{type(self).__name__}: {render.clean(str(self))}\x1b[0m"]


class Interrupted(ChatError):
    """The stop button was pressed; what was shown is kept."""


@magics_class
class ChatMagics(Magics):
    """The magics, and the notebook's sessions."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.agent: Agent | None = None
        self.sessions: dict[str, Session] = {}
        self.current: str | None = None
        self.cells = Cells(self._saved_sources)
        #: cell id -> the first message of the turn its `%session retry` made: a re-run of
        #: that cell that fails shows that turn's record again (its output replaces the old)
        self._retried: dict[str, str] = {}
        self._offline: str | None = None  # the notice, until a turn uses the offline provider
        self.figures = _images.Figures(shell)

    def _saved_sources(self) -> list[str] | None:
        """The code cells' text in this notebook's file, as last saved, if it is known."""
        path = persist.notebook_path(self.shell.user_ns)
        return persist.cell_sources(path) if path is not None else None

    # -- the agent -------------------------------------------------------------------------

    @line_magic("agent")
    def agent_magic(self, line: str) -> None:
        """Configure the default agent: `%agent provider=openai model=gpt-4o [system=...]`.

        Other keys (temperature=0.2, max_tokens=500, base_url=...) are passed to Agent.
        `%agent NAME` uses the Agent in variable NAME (one with tools, say).
        `%agent` alone shows the configuration (never the key).
        """
        if not line.strip():
            print(self._describe(self._get_agent()))
            return
        if line.strip().isidentifier():
            chosen = self.shell.user_ns.get(line.strip())
            if not isinstance(chosen, Agent):
                raise ChatError(
                    f"%agent {line.strip()}: that name holds no Agent; make one with "
                    "Agent(provider=..., model=...), or use key=value pairs"
                )
            self._use_agent(chosen)
            return
        options: dict[str, Any] = {}
        for item in shlex.split(line):
            key, sep, value = item.partition("=")
            if not sep:
                raise ChatError(f"%agent takes key=value pairs, got {item!r}")
            options[key.replace("-", "_")] = _value(value)
        try:
            agent = Agent(**options)
        except (AgentError, TypeError) as exc:
            raise ChatError(str(exc)) from None
        self._use_agent(agent)

    def _use_agent(self, agent: Agent) -> None:
        self.agent = agent
        self._offline = None
        for session in self.sessions.values():
            session.agent = agent
        print(self._describe(agent))

    def _get_agent(self) -> Agent:
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
                self.agent = Agent(provider=provider, model=model)
            except AgentError as exc:
                raise ChatError(str(exc)) from None
        return self.agent

    @staticmethod
    def _describe(agent: Agent) -> str:
        lines = [f"provider: {agent.provider.name}", f"model: {agent.model}"]
        base_url = getattr(agent.provider, "base_url", None)
        if base_url:
            lines.append(f"base_url: {base_url}")
        if agent.system:
            lines.append(f"system: {agent.system}")
        if agent.defaults:
            lines.append("settings: " + ", ".join(f"{k}={v!r}" for k, v in agent.defaults.items()))
        if agent.tools:
            lines.append("tools: " + ", ".join(t.name for t in agent.tools))
        return agent.provider.redacted("\n".join(lines))  # a key in base_url or a setting

    # -- sessions --------------------------------------------------------------------------

    def session(self, session_id: str | None = None) -> Session:
        """The named session (made if new) or the current one; it becomes current."""
        session_id = session_id or self.current
        if session_id is None or session_id not in self.sessions:
            made = self._get_agent().session(session_id=session_id or "main")
            self.sessions[made.session_id] = made
            session_id = made.session_id
        self.current = session_id
        return self.sessions[session_id]

    # -- %%chat ------------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "session_id",
        nargs="?",
        help="the session to talk in (made if new); default: the current one",
    )
    @argument("-m", "--model", help="the model for this turn")
    @argument("--system", help="set the session's system prompt first")
    @argument("-t", "--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="the longest answer, in tokens")
    @argument("--schema", help="a pydantic model in the namespace: answer as that structure")
    @argument("--no-stream", action="store_true", help="wait for the whole answer")
    @argument("--fork", metavar="NEW_ID", help="fork the session into NEW_ID and talk there")
    @argument("-o", "--output", metavar="VAR", help="store the Response in this variable")
    @argument("--raw", action="store_true", help="send the text as typed: no {name} filled in")
    @argument("--image", action="append", metavar="PATH", help="send this image file (repeatable)")
    @argument("--plot", action="store_true", help="send the last matplotlib figure as an image")
    @cell_magic("chat")
    def chat(self, line: str, cell: str) -> None:
        """The cell is your next message; the answer streams into the cell as Markdown.

        `{name}` and `{name.attr}` put a variable's value in the message, `{In[3]}` /
        `{Out[3]}` a cell's input / output; other braces stay as typed (`{{name}}` is a
        literal `{name}`; --raw fills in nothing); `{fig}` naming a figure or picture sends
        it as an image. The Response is in `_` afterwards (and in VAR with -o VAR).
        """
        args = self._chat_args(line)
        try:
            args.images = _images.attached(args.image, args.plot, self.figures)
            prompt = (cell if args.raw else self._interpolate(cell, args.images)).strip()
        except AgentError as exc:
            raise ChatError(f"{exc} (nothing was sent)") from None
        if not prompt.strip():
            raise ChatError("the cell is empty: write your message below %%chat")
        previous = self.cells.previous(fork=bool(args.fork))
        again = previous if previous is not None and previous.first_id else None
        if again and args.session_id in (None, again.session_id) and not args.fork:
            in_place = self.sessions.get(again.session_id)
            if in_place is not None and again.first_id in {m.id for m in in_place.messages}:
                return self._chat_again(args, prompt, in_place, again)
        deleted = again and args.session_id is None and again.session_id not in self.sessions
        # a cell run again talks where it talked, made anew if it was deleted (Run All)
        session = self.session(again.session_id if deleted else args.session_id)
        fork_of = None
        if args.fork:
            fork_of = session.session_id
            session, _ = self._fork(session, args.fork, replace=False, previous=previous)
        self._chat_turn(args, prompt, session, fork_of=fork_of, previous=previous)

    def _settings(self, args: Any, session: Session) -> tuple[dict[str, Any], Any]:
        """The turn's settings and schema from %%chat's options."""
        settings: dict[str, Any] = {"images": args.images} if args.images else {}
        if args.model:
            settings["model"] = args.model
        if args.temperature is not None:
            settings["temperature"] = args.temperature
        if args.max_tokens is not None:
            settings["max_tokens"] = args.max_tokens
        return settings, self._schema(args.schema) if args.schema else None

    def _chat_turn(
        self, args: Any, prompt: str, session: Session, *, fork_of: str | None, previous: Any
    ) -> None:
        """A new turn at the end of `session`; the sessions kept until this cell ran go."""
        settings, schema = self._settings(args, session)
        drops = self.cells.superseded(previous, self.sessions)
        with _system_for_the_turn(session, args.system):
            response = self._turn(
                session,
                prompt,
                settings,
                schema,
                stream=not args.no_stream,
                fork_of=fork_of,
                extra={"drops": drops} if drops else {},
            )
        self._made(args, session, response, previous, drops)

    def _chat_again(self, args: Any, prompt: str, session: Session, previous: Any) -> None:
        """The cell made a turn in `session` before: that turn is made again, in its place;
        the turns after it stay, as a new session named in the output."""
        settings, schema = self._settings(args, session)
        history = session.messages
        order = [m.id for m in history]
        at, end = _turns.span(history, previous.first_id) or (len(history), len(history))
        later = self.cells.unmade({m.id for m in history[end:] if m.role == "user"})
        kept_as = self._free_name(session.session_id) if later else None
        drops = self.cells.superseded(previous, self.sessions)
        retake = session.retake(previous.first_id)
        trial = retake.copy

        def replace(response: Response) -> None:
            try:
                retake.check()
            except SessionChangedError as exc:
                raise ChatError(str(exc)) from None
            if kept_as is not None:
                self.sessions[kept_as] = session.fork(kept_as)
                self.cells.keep(kept_as, later, order)
            retake.commit()

        extra: dict[str, Any] = {"replaces": previous.first_id}
        if kept_as:
            extra["kept_as"] = kept_as
        if drops:
            extra["drops"] = drops
        try:
            with _system_for_the_turn(session, args.system):
                trial.system = session.system
                response = self._turn(
                    trial,
                    prompt,
                    settings,
                    schema,
                    stream=not args.no_stream,
                    fork_of=None,
                    replace=replace,
                    op="rerun",
                    extra=extra,
                )
        except ChatError:  # the cell's new output replaces its old record: it is given again
            self._show_again(session, history[at:end], "turn")
            raise
        self.current = session.session_id
        if kept_as is not None:
            print(
                f"agent_nb: this cell's turn was made again; the {len(history) - end} messages "
                f"after it are kept in session {kept_as!r} (%session use {kept_as})"
            )
        self._made(args, session, response, previous, drops)

    def _show_again(self, session: Session, kept: list[Message], op: str) -> None:
        """A turn the running cell made before, shown with its record again: the cell's new
        output replaces its old one, which a restore reads."""
        self._display(
            render.turn_html(kept),
            "\n".join(m.text for m in kept if m.role == "assistant"),
            persist.record(op, session, kept),
        )

    def _made(
        self, args: Any, session: Session, response: Response, previous: Any, drops: list[str]
    ) -> None:
        self.cells.made(session.session_id, response.messages[0].id if response.messages else None)
        self.cells.made_again(previous)
        for dropped in drops:  # every turn they kept has been made again by its cell
            self.sessions.pop(dropped, None)
        self.shell.user_ns["_"] = response
        if args.output:
            self.shell.user_ns[args.output] = response

    def _free_name(self, session_id: str) -> str:
        number = 1
        while f"{session_id}~{number}" in self.sessions:
            number += 1
        return f"{session_id}~{number}"

    def _turn(
        self,
        session: Session,
        prompt: str | None,
        settings: dict[str, Any],
        schema: Any,
        *,
        stream: bool,
        fork_of: str | None,
        replace: Callable[[Response], None] | None = None,
        op: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Response:
        """One turn shown live and recorded; with `replace`, a retry made on a copy of the
        session: `replace(response)` puts the finished answer in place of the last turn, and
        an answer that does not finish changes nothing, its record included. With `prompt`
        None, the turn resumes the calls that waited for approval."""
        if self._offline is not None and session.agent is self.agent:
            print(self._offline)  # once, and only when a turn is about to use it
            self._offline = None
        live = live_answer(rich=self._rich())
        before = len(session.messages)
        waiting = session.messages[-1].id if prompt is None else None
        started = time.monotonic()
        extra = {**({"fork_of": fork_of} if fork_of else {}), **(extra or {})}
        op = op or ("resume" if prompt is None else "turn" if replace is None else "retry")
        earlier = "this cell's earlier turn" if op == "rerun" else "its last turn"
        unsaved: StoreError | None = None
        try:
            if prompt is None:
                for call in session.pending_approvals:  # called in an earlier cell
                    live.tool_call(call.id, call.name, call.arguments_json())
                events = session.stream_resume(**settings)
            elif schema is not None:
                response = session.json(prompt, schema=schema, **settings)
            elif not stream:
                response = session.run(prompt, **settings)
            else:
                events = session.stream(prompt, **settings)
            if prompt is None or (stream and schema is None):
                try:
                    for event in events:
                        if event.type == "text_delta":
                            live.text(event.text)
                        elif event.type == "tool_call":
                            live.tool_call(event.id, event.name, event.arguments)
                        elif event.type == "tool_result":
                            live.tool_result(event.tool_call_id, event.content, event.is_error)
                finally:
                    events.close()
                response = events.response
        except KeyboardInterrupt:
            kept = session.messages[before:]
            if prompt is None:  # a resume replaces the waiting round, once anything ran
                changed = session.messages[before - 1].id != waiting
                kept = session.messages[before - 1 :] if changed else []
            partial = Response(
                text="".join(m.text for m in kept if m.role == "assistant"),
                messages=tuple(kept),
                model=settings.get("model", session.agent.model),
                interrupted=True,
            )
            live.finish(
                render.footer(partial, time.monotonic() - started),
                persist.record(op, session, kept, **extra) if kept and not replace else None,
                empty="*(stopped before any text arrived: nothing kept)*",
            )
            if replace is not None:  # the copy keeps what was shown; the session, nothing
                raise Interrupted(
                    f"stopped; session {session.session_id!r} is unchanged: {earlier} is kept"
                ) from None
            raise Interrupted(
                f"stopped; {'the partial answer is kept' if kept else 'nothing was kept'} in "
                f"session {session.session_id!r}"
            ) from None
        except StoreError as exc:  # the turn is in the session; only its store missed it
            if exc.response is None:
                raise ChatError(str(exc)) from None
            response, unsaved = exc.response, exc
        except AgentError as exc:
            note = f": {earlier} is kept" if replace is not None else ""
            raise ChatError(f"{exc} (session {session.session_id!r} is unchanged{note})") from None
        assert response is not None
        if replace is not None:
            replace(response)
        streamed = prompt is None or (stream and schema is None)  # else show it now, whole
        live.finish(
            render.footer(response, time.monotonic() - started),
            persist.record(op, session, list(response.messages), **extra),
            shown=None if streamed else render.turn_html(response.messages),
            plain=None if streamed else response.text,
        )
        if response.pending_approvals:
            self._show_waiting(session, list(response.pending_approvals))
        if unsaved is not None:
            raise ChatError(f"answered, and kept in this notebook, but {unsaved}") from None
        return response

    def _show_waiting(self, session: Session, calls: list[Any]) -> None:
        """The calls a turn stopped at, with the commands that decide them."""
        rows, lines = [], []
        for call in calls:
            args = ", ".join(f"{k}={v!r}" for k, v in call.arguments_json().items())
            what = f"{call.name}({args})"
            approve, deny = f"%session approve {call.id}", f"%session deny {call.id} [reason]"
            lines.append(f"waiting for approval: {what}\n  run: {approve}  or: {deny}")
            rows.append(
                f"<li>⏸ <code>{render.escaped(what)}</code> waits for your approval: run "
                f"<code>{render.escaped(approve)}</code> or <code>{render.escaped(deny)}</code>"
                "</li>"
            )
        self._display(f"<ul>{''.join(rows)}</ul>", "\n".join(lines), None)

    def _session_approve(self, rest: list[str]) -> Response | None:
        """%session approve ID [ID ...]: let waiting calls run; the last decision resumes."""
        return self._decide(rest, approved=True)

    def _session_deny(self, rest: list[str]) -> Response | None:
        """%session deny ID [REASON ...]: refuse a waiting call (the model is told why)."""
        return self._decide(rest, approved=False)

    def _decide(self, rest: list[str], *, approved: bool) -> Response | None:
        session = self.session()
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
        return self._turn(session, None, {}, None, stream=True, fork_of=None)

    def _interpolate(self, cell: str, images: list[Any]) -> str:
        try:
            filled, notes = prompts.fill(cell, self.shell.user_ns, images)
        except prompts.Unshowable as exc:
            raise ChatError(str(exc)) from None
        for note in notes:
            print(f"agent_nb: {note}")
        return filled

    def _chat_args(self, line: str) -> Any:
        try:
            words = shlex.split(line)  # IPython's own split keeps the quotes of --system "..."
        except ValueError as exc:
            raise ChatError(f"%%chat {line.strip()}: {exc}; close the quote") from None
        try:
            return self.chat.parser.parse_args(words)
        except UsageError as exc:
            options = []
            for action in self.chat.parser._actions:
                if action.option_strings and action.dest != "help":
                    takes = f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else ""
                    options.append("/".join(action.option_strings) + takes)
            raise ChatError(
                f"%%chat {line.strip()}: {exc}; usage: %%chat [SESSION] [options], the options "
                f"being {', '.join(options)}"
            ) from None

    def _schema(self, name: str) -> Any:
        schema = self.shell.user_ns.get(name)
        if schema is None:
            raise ChatError(
                f"--schema {name}: no such name in the notebook; define a pydantic "
                "model with that name first"
            )
        return schema

    def _rich(self) -> bool:
        return type(self.shell).__name__ != "TerminalInteractiveShell"

    # -- %session ----------------------------------------------------------------------------

    @line_magic("session")
    def session_magic(self, line: str) -> Any:
        """Manage the notebook's conversations.

        %session                     the current session (same as info)
        %session new [ID] [--system TEXT]
        %session list                every session, * marks the current one
        %session use ID              talk in ID from now on
        %session fork [NEW_ID]       branch the current conversation
        %session clear               forget the current session's messages
        %session undo                drop the last turn
        %session retry               answer the last prompt again
        %session approve ID [ID ...] let tool calls that wait for approval run (then resume)
        %session deny ID [REASON]    refuse one; the model is told, with REASON
        %session history [-n N]      the last N messages
        %session panel [ID]          a chat window on the session (ID or the current one)
        %session show                the whole transcript
        %session info                id, model, messages, tokens
        %session delete ID           forget a session
        %session restore [PATH]      rebuild sessions from the saved notebook
        %session save [PATH]         keep the current session in a store: PATH.ipynb (in
                                     that notebook's metadata), PATH.db (SQLite), or the
                                     default SQLite file ($AGENT_NB_DB)
        %session load ID [PATH]      take session ID from such a store into this notebook
        %session stored [PATH]       the sessions such a store holds, newest first
        %session insert              the last answer's Python code as a new cell below
                                     (not run)
        %session export PATH.ipynb [--code]
                                     the current session as a notebook (--code: Python
                                     blocks of answers as runnable code cells)
        """
        words = shlex.split(line)
        command, rest = (words[0], words[1:]) if words else ("info", [])
        handler = getattr(self, f"_session_{command}", None)
        if handler is None:
            known = " ".join(self._subcommands())
            raise ChatError(f"%session {command}: unknown subcommand; known: {known}")
        return handler(rest)

    def _subcommands(self) -> list[str]:
        return [n.removeprefix("_session_") for n in dir(self) if n.startswith("_session_")]

    def _session_new(self, rest: list[str]) -> None:
        system = None
        if "--system" in rest:
            at = rest.index("--system")
            system = " ".join(rest[at + 1 :])
            rest = rest[:at]
        previous = self.cells.previous(fork=True)
        name = rest[0] if rest else None
        again = previous is not None and previous.first_id is None
        again = again and previous.session_id == (name or previous.session_id)
        session = self._get_agent().session(
            session_id=previous.session_id if again else name, system=system
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
        note = f"; its earlier turns are kept in `{kept_as}`" if kept_as else ""
        self._publish(
            f"new session `{session.session_id}`{note}", persist.record("system", session)
        )

    def _session_panel(self, rest: list[str]) -> Any:
        from .panel import ChatPanel

        current = self.current  # a panel on another session does not move where %%chat talks
        panel = ChatPanel(self.session(rest[0] if rest else None))
        self.current = current or self.current
        panel._share(self.sessions)  # its forks and switches are the notebook's sessions
        return panel

    def _session_list(self, rest: list[str]) -> None:
        if not self.sessions:
            print("no sessions yet: %%chat makes one")
        for session_id, session in self.sessions.items():
            mark = "*" if session_id == self.current else " "
            print(f"{mark} {session_id}  ({len(session.messages)} messages)")

    def _session_use(self, rest: list[str]) -> None:
        if not rest or rest[0] not in self.sessions:
            raise ChatError(f"no session {rest[0] if rest else ''!r}; %session list shows them")
        self.current = rest[0]
        self._display(  # recorded, so that a restore lands in this session
            f"<pre>using session {render.escaped(repr(rest[0]))}</pre>",
            f"using session {rest[0]!r}",
            persist.record("use", self.sessions[rest[0]]),
        )

    def _session_fork(self, rest: list[str]) -> None:
        replace = "--replace" in rest
        rest = [word for word in rest if word != "--replace"]
        base = self.session()
        previous = self.cells.previous(fork=True)
        name = rest[0] if rest else None
        twin, kept_as = self._fork(base, name, replace=replace, previous=previous)
        note = f"; its earlier turns are kept in `{kept_as}`" if kept_as else ""
        self._publish(
            f"forked `{base.session_id}` into `{twin.session_id}`{note}",
            persist.record("fork", twin, fork_of=base.session_id, kept_as=kept_as),
        )

    def _fork(
        self, base: Session, name: str | None, *, replace: bool, previous: Any
    ) -> tuple[Session, str | None]:
        """`base` forked into `name`, which becomes current: (the fork, where the session
        that had that name before is kept). A cell run again forks again into the session it
        made; any other existing name is refused unless `replace`."""
        again = previous is not None and (
            previous.session_id == name or (name is None and previous.first_id is None)
        )
        name = name or (previous.session_id if again else None)
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
        kept_as = self._free_name(old.session_id)
        self.sessions[kept_as] = old.fork(kept_as)
        self.cells.keep(kept_as, later, [m.id for m in old.messages])
        return kept_as

    def _session_clear(self, rest: list[str]) -> None:
        session = self.session()
        session.clear()
        self._publish(f"cleared session `{session.session_id}`", persist.record("clear", session))

    def _session_undo(self, rest: list[str]) -> None:
        session = self.session()
        removed = session.undo()
        if removed is None:
            raise ChatError("nothing to undo")
        self._publish(
            f"dropped the last turn of `{session.session_id}` ({len(removed.messages)} messages)",
            persist.record("undo", session),
        )

    def _session_retry(self, rest: list[str]) -> Response:
        session = self.session()
        # The new answer is made on a copy that lacks the last turn: until it has finished,
        # the session, its store and the notebook's records are as they were.
        try:
            retake = session.retake()
        except AgentError:
            raise ChatError("nothing to retry") from None
        replaced = retake.replaced

        def replace(response: Response) -> None:
            try:
                new = retake.commit()
            except SessionChangedError as exc:
                raise ChatError(str(exc)) from None
            except StoreError as exc:
                new = list(response.messages)
                unsaved.append(exc)
            if new:
                self.cells.moved(replaced[0].id, new[0].id)

        unsaved: list[StoreError] = []
        prompt = replaced[0]
        try:
            response = self._turn(
                retake.copy,
                prompt.text,
                {"images": prompt.images} if prompt.images else {},
                None,
                stream=True,
                fork_of=None,
                replace=replace,
            )
        except ChatError:
            made = self._retried.get(self.cells.cell_id or "")
            if made is not None and prompt.id == made:  # this cell's, from its last run
                self._show_again(session, list(replaced), "retry")
            raise
        if self.cells.cell_id is not None and response.messages:
            self._retried[self.cells.cell_id] = response.messages[0].id
        if unsaved:
            raise ChatError(f"answered again, but {unsaved[0]}")
        return response

    def _session_history(self, rest: list[str]) -> None:
        count = int(rest[rest.index("-n") + 1]) if "-n" in rest else 10
        lines = []
        session = self.session()
        for message in session.messages[-count:]:
            text = render.one_line(message.text)
            role = message.role + (", interrupted" if message.metadata.get("interrupted") else "")
            lines.append(f"[{role}] {text[:100]}{'...' if len(text) > 100 else ''}")
        plain = "\n".join(lines) or f"no messages yet in session {session.session_id!r}"
        # shown as HTML: JupyterLab makes live links of URLs in printed text
        self._display(f"<pre>{render.escaped(plain)}</pre>", plain, None)

    def _session_show(self, rest: list[str]) -> None:
        session = self.session()
        if not session.messages:
            empty = f"no messages yet in session {session.session_id!r}"
            if session.system:
                empty += f" (system: {render.one_line(session.system)})"
            self._display(f"<pre>{render.escaped(empty)}</pre>", empty, None)
            return
        shown = render.transcript_html(session.messages, session.system)
        self._display(shown, render.transcript_text(session.messages, session.system), None)

    def _session_info(self, rest: list[str]) -> None:
        session = self.session()
        usage = session.usage
        print(
            f"session: {session.session_id}\nmodel: {session.agent.model}\n"
            f"messages: {len(session.messages)}\n"
            f"tokens: {usage.input_tokens} in, {usage.output_tokens} out\n"
            f"sessions in this notebook: {len(self.sessions)}"
        )
        for call in session.pending_approvals:
            print(f"waiting for approval: {call.id} ({call.name}): %session approve|deny {call.id}")

    def _session_delete(self, rest: list[str]) -> None:
        if not rest or rest[0] not in self.sessions:
            raise ChatError(f"no session {rest[0] if rest else ''!r}; %session list shows them")
        deleted = self.sessions.pop(rest[0])
        self.cells.forget(rest[0])
        if self.current == rest[0]:
            self.current = next(iter(self.sessions), None)
        now = f"; the current session is {self.current!r}" if self.current else ""
        self._display(  # recorded, so that a restore or Run All does not bring it back
            f"<pre>{render.escaped(f'deleted session {rest[0]!r}{now}')}</pre>",
            f"deleted session {rest[0]!r}{now}",
            persist.record("delete", deleted, current=self.current),
        )

    def _session_insert(self, rest: list[str]) -> None:
        session = self.session()
        answers = [m for m in session.messages if m.role == "assistant" and m.text]
        if not answers:
            raise ChatError(f"session {session.session_id!r} has no answer yet to take code from")
        blocks = render.code_blocks(answers[-1].text, export.PYTHON)
        code = "\n\n".join(render.clean(text) for kind, text in blocks if kind == "code")
        if not code:
            raise ChatError("the last answer has no Python code block (```python ... ```)")
        self.shell.set_next_input(code, replace=False)  # the front end makes the cell
        lines = _count(len(code.splitlines()), "line")
        print(f"agent_nb: the last answer's code ({lines}) is in a new cell below; it has not run")

    def _session_export(self, rest: list[str]) -> None:
        code_cells = "--code" in rest
        rest = [word for word in rest if word != "--code"]
        if len(rest) != 1 or not rest[0].endswith(".ipynb"):
            raise ChatError("usage: %session export PATH.ipynb [--code]")
        session = self.session()
        path = export.write_notebook(session, rest[0], code_cells=code_cells)
        print(
            f"exported session {session.session_id!r} ({len(session.messages)} messages) to {path}"
        )

    def _session_save(self, rest: list[str]) -> None:
        store = _store_at(rest[0] if rest else None)
        session = self.session()
        store.save(session.session_id, session.to_dict())
        print(
            f"saved session {session.session_id!r} ({len(session.messages)} messages) to {store!r}"
        )

    def _session_load(self, rest: list[str]) -> None:
        if not rest:
            raise ChatError("usage: %session load ID [PATH]; %session stored [PATH] lists them")
        store = _store_at(rest[1] if len(rest) > 1 else None)
        try:
            session = self._get_agent().load_session(rest[0], store=store)
        except (SessionNotFoundError, InvalidSessionData) as exc:
            raise ChatError(str(exc)) from None
        session.store = None  # it lives in this notebook now; %session save writes it back
        self.sessions[session.session_id] = session
        self.current = session.session_id
        self._publish(
            f"loaded {_described(session)} from {store!r}",
            persist.record("load", session, session.messages),
        )

    def _session_stored(self, rest: list[str]) -> None:
        store = _store_at(rest[0] if rest else None)
        infos = store.sessions(limit=50)
        if not infos:
            print(f"no sessions in {store!r}")
        for info in infos:
            when = (info.updated_at or "")[:16].replace("T", " ")
            print(f"{info.session_id}  {when}  {info.message_count:>4} messages  {info.title}")

    def _session_restore(self, rest: list[str], *, quiet: bool = False) -> None:
        from ..stores import _ipynb

        path = rest[0] if rest else persist.notebook_path(self.shell.user_ns)
        if path is None:
            raise ChatError(
                "cannot tell which notebook this is; give its path: %session restore PATH.ipynb"
            )
        try:
            found = persist.read_records(path)
        except (OSError, UnicodeDecodeError, _ipynb.UnreadableNotebook) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ChatError(f"cannot restore from {path}: {reason}; nothing was restored") from None
        skipped: list[str] = []

        def report(line: str) -> None:
            skipped.append(line)
            print(line, file=sys.stderr)

        replayed = persist.replay(found, self._get_agent(), report)
        sessions, turns = replayed.sessions, replayed.turns
        self.sessions.update(sessions)
        self.current = replayed.current or self.current
        self.cells.restored(replayed.made)
        self._retried.update(replayed.retried)
        for kept_as, (waiting, history) in replayed.kept.items():  # they go as in the run
            self.cells.keep(kept_as, waiting, history)
        _panel_records.restored(self.shell, replayed.panels)
        if quiet and not sessions and not skipped:
            return
        print(
            f"agent_nb: restored {_count(turns, 'turn')} in {_count(len(sessions), 'session')} "
            f"from {path}" + (f" ({_count(len(skipped), 'record')} skipped)" if skipped else "")
        )

    def _publish(self, markdown: str, metadata: dict[str, Any] | None) -> None:
        """A short message of ours (Markdown, with ids in it) and its record."""
        self._display(render.html(markdown), markdown, metadata)

    def _display(self, shown: str, plain: str, metadata: dict[str, Any] | None) -> None:
        if self._rich():
            from IPython.display import display

            display(
                render.display_data(shown, plain),
                raw=True,
                metadata=render.publishable(metadata) if metadata else {},
            )
        else:
            print(render.clean(plain))

    def complete(self, shell: Any, event: Any) -> list[str]:
        """Tab completion: %session's subcommands, then session ids where one is expected."""
        words = event.text_until_cursor.split()
        position = len(words) - (0 if event.text_until_cursor[-1:].isspace() else 1)
        if words[0] == "%%chat":
            return list(self.sessions) if position == 1 else []
        if position == 1:
            return self._subcommands()
        if position == 2 and words[1] in ("use", "delete"):
            return list(self.sessions)
        return []


@contextlib.contextmanager
def _system_for_the_turn(session: Session, system: str | None) -> Any:
    """%%chat --system: the session's system prompt from now on, unless the turn fails with
    nothing kept (then the session is as it was, its system prompt included)."""
    if system is None:
        yield
        return
    before, ids = session.system, [m.id for m in session.messages]
    session.system = system
    try:
        yield
    except BaseException:
        if [m.id for m in session.messages] == ids:
            session.system = before
        raise


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


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
