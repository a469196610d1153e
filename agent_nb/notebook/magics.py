"""%agent, %%chat and %session: each parses its arguments and hands the work on.

The kernel's notebook state is its Workspace (workspace.py); a %%chat turn is chat_turn.py's;
%session's subcommands are session_commands.py's.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..errors import AgentError
from . import _images
from ._args import Parser, identifier, new_id
from ._errors import ChatError, Interrupted

if TYPE_CHECKING:
    from ..agent import Agent
    from ..router import Router
    from .session_commands import SessionCommands
    from .workspace import Workspace

__all__ = ["ChatError", "ChatMagics", "Interrupted"]


def _chat_parser() -> Parser:
    parser = Parser(
        "%%chat",
        "The cell is your next message; the answer streams into the cell.",
        "%(prog)s [SESSION] [options]",
    )
    add = parser.add_argument
    add("session_id", nargs="?", help="the session to talk in; default: the current one")
    add("--new", action="store_true", help="SESSION_ID is a new session: make it")
    add("-m", "--model", help="the model for this turn")
    add("--system", help="set the session's system prompt first")
    add("-t", "--temperature", type=float, help="sampling temperature")
    add("--max-tokens", type=int, help="the longest answer, in tokens")
    add(
        "--context",
        choices=("error", "trim", "summarize"),
        help="a conversation longer than the model's window: refuse (the default), send "
        "without the oldest turns, or with a summary of them",
    )
    add("--schema", help="a pydantic model in the namespace: answer as that structure")
    add("--no-stream", action="store_true", help="wait for the whole answer")
    add("--fork", metavar="NEW_ID", type=new_id, help="fork the session into NEW_ID, talk there")
    add("-o", "--output", metavar="VAR", type=identifier, help="store the Response in VAR")
    add("--raw", action="store_true", help="send the text as typed: no {name} filled in")
    add("--image", action="append", metavar="PATH", help="send this image file (repeatable)")
    add("--plot", action="store_true", help="send the last matplotlib figure as an image")
    return parser


def _agent_parser() -> Parser:
    parser = Parser(
        "%agent",
        "Configure the default agent: `%agent provider=openai model=gpt-4o [system=...]`;\n"
        "other keys (temperature=0.2, max_tokens=500, base_url=...) are passed to Agent;\n"
        "`%agent NAME` uses the Agent (or Router) in variable NAME; `%agent` alone shows the "
        "configuration.",
    )
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE|NAME")
    return parser


def _with_help(parser: Parser) -> Any:
    """The magic's docstring, then its parser's help (what `%%chat?` shows)."""

    def add(function: Any) -> Any:
        function.__doc__ = f"{function.__doc__}\n\n{parser.format_help()}"
        return function

    return add


@magics_class
class ChatMagics(Magics):
    """The magics of one kernel, on its Workspace."""

    def __init__(self, shell: Any, workspace: Workspace) -> None:
        super().__init__(shell)
        self.workspace = workspace
        self.figures = _images.Figures(shell)
        self._commands: SessionCommands | None = None

    @property
    def commands(self) -> SessionCommands:
        """The `%session` subcommands (loaded with the first one run, not by %load_ext)."""
        if self._commands is None:
            from .session_commands import SessionCommands

            self._commands = SessionCommands(self.workspace)
        return self._commands

    # -- the agent -------------------------------------------------------------------------

    @line_magic("agent")
    @_with_help(_agent_parser())
    def agent_magic(self, line: str) -> None:
        """Configure the default agent: `%agent provider=openai model=gpt-4o [system=...]`.

        Other keys (temperature=0.2, max_tokens=500, base_url=...) are passed to Agent.
        `%agent NAME` uses the Agent in variable NAME (one with tools, say), or the Router
        (agents behind one, docs/routing.md).
        `%agent` alone shows the configuration (never the key).
        """
        from ..agent import Agent
        from ..router import Router

        words = _split("%agent", line)
        parsed = _agent_parser().parse(words)
        if parsed is None:
            return
        if not words:
            print(self._describe(self.workspace.default_agent()))
            return
        if len(words) == 1 and words[0].isidentifier():
            chosen = self.shell.user_ns.get(words[0])
            if not isinstance(chosen, Agent | Router):
                raise ChatError(
                    f"%agent {line.strip()}: that name holds no Agent or Router; make one with "
                    "Agent(provider=..., model=...), or use key=value pairs"
                )
            self._use(chosen)
            return
        options: dict[str, Any] = {}
        servers: list[Any] = []
        for item in words:
            key, sep, value = item.partition("=")
            if not sep:
                raise ChatError(f"%agent takes key=value pairs, got {item!r}")
            if key == "mcp":
                servers.append(self._server(value))
                continue
            options[key.replace("-", "_")] = _value(value)
        if servers:
            options["tools"] = [*options.get("tools", ()), *servers]
        try:
            agent = Agent(**options)
        except (AgentError, TypeError) as exc:
            raise ChatError(str(exc)) from None
        self._use(agent)

    def _server(self, value: str) -> Any:
        """`mcp=NAME` (a variable holding an MCP), `mcp=http://...` or `mcp="command args"`."""
        from ..mcp import MCP

        chosen = self.shell.user_ns.get(value) if value.isidentifier() else None
        if isinstance(chosen, MCP):
            return chosen
        if value.startswith(("http://", "https://")):
            return MCP.http(value)
        words = shlex.split(value)
        if not words:
            raise ChatError("%agent mcp= takes a server: a variable, a URL or a command")
        return MCP.stdio(words[0], words[1:])

    def _use(self, agent: Agent | Router) -> None:
        from . import _routing

        self.workspace.use_agent(agent)
        print(self._describe(agent))
        for session in self.workspace.sessions.values():  # restored: on what they recorded
            line = _routing.differs(session)
            if line is not None:
                print(line)

    @staticmethod
    def _describe(agent: Agent | Router) -> str:
        from ..router import Router

        if isinstance(agent, Router):
            from . import _routing

            lines = [_routing.described(agent)]
            if agent.system:
                lines.append(f"system: {agent.system}")
            return "\n".join(lines)  # (its candidates' keys are theirs: not shown)
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
        if agent.servers:
            lines.append("mcp: " + ", ".join(repr(s) for s in agent.servers))
        return agent.provider.redacted("\n".join(lines))  # a key in base_url or a setting

    # -- %%chat ------------------------------------------------------------------------------

    @cell_magic("chat")
    @_with_help(_chat_parser())
    def chat(self, line: str, cell: str) -> None:
        """The cell is your next message; the answer streams into the cell as Markdown.

        `{name}` and `{name.attr}` put a variable's value in the message, `{In[3]}` /
        `{Out[3]}` a cell's input / output; other braces stay as typed (`{{name}}` is a
        literal `{name}`; --raw fills in nothing); `{fig}` naming a figure or picture sends
        it as an image. The Response is in `_` afterwards (and in VAR with -o VAR).
        """
        from . import chat_turn

        args = _chat_parser().parse(_split("%%chat", line))
        if args is None:
            return
        if args.new and args.session_id is None:
            raise ChatError("%%chat --new NAME: name the new session")
        if args.new:
            new_id(args.session_id)  # a name the notebook can give
        try:
            images = _images.attached(args.image, args.plot, self.figures)
            prompt = (cell if args.raw else self._interpolate(cell, images)).strip()
        except AgentError as exc:
            raise ChatError(f"{exc} (nothing was sent)") from None
        if not prompt.strip():
            raise ChatError("the cell is empty: write your message below %%chat")
        settings: dict[str, Any] = {"images": images} if images else {}
        if args.model:
            settings["model"] = args.model
        if args.temperature is not None:
            settings["temperature"] = args.temperature
        if args.max_tokens is not None:
            settings["max_tokens"] = args.max_tokens
        if args.context is not None:
            settings["context"] = args.context
        request = chat_turn.Request(
            prompt,
            session_id=args.session_id,
            fork=args.fork,
            system=args.system,
            settings=settings,
            schema=args.schema,
            stream=not args.no_stream,
            new=args.new,
        )
        response = chat_turn.chat(self.workspace, request)
        self.shell.user_ns["_"] = response
        if args.output:
            self.shell.user_ns[args.output] = response

    def _interpolate(self, cell: str, images: list[Any]) -> str:
        from . import prompts

        try:
            filled, notes = prompts.fill(cell, self.shell.user_ns, images)
        except prompts.Unshowable as exc:
            raise ChatError(str(exc)) from None
        for note in notes:
            print(f"agent_nb: {note}")
        return filled

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
        %session approve ID [ID ...] let tool calls that wait for approval run (then resume);
                                     --always: and their tools from now on, in this session
        %session deny ID [REASON]    refuse one; the model is told, with REASON
        %session history [-n N]      the last N messages
        %session panel [ID]          a chat window on the session (ID or the current one)
        %session show                the whole transcript
        %session info                id, model, messages, tokens, what it spent
        %session cost                what each session spent, and this kernel in all
        %session route reset|status  a Router's session: back to the router's choice, or
                                     its candidates' health
        %session rename [ID] NEW_ID  give a session (the current one) a new id
        %session SUBCOMMAND -h       its options
        %session delete ID           forget a session
        %session restore [PATH]      rebuild sessions from the saved notebook (caps:
                                     --records N, --sessions N, --messages N)
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
        return self.commands.run(_split("%session", line))

    def complete(self, context: Any) -> dict[str, Any]:
        """Tab completion (an IPython matcher): %session's subcommands, then session ids
        where one is expected, alone (not Python's keywords after them)."""
        text = context.line_with_cursor[: context.cursor_position]
        words = text.split()
        position = len(words) - (0 if text[-1:].isspace() else 1)
        offered: list[str] = []
        if words and words[0] == "%%chat" and position == 1 and context.cursor_line == 0:
            offered = list(self.workspace.sessions)
        elif words and words[0] == "%session" and position == 1:
            offered = self.commands.names()
        elif words and words[0] == "%session" and position == 2 and words[1] in _NAMING:
            offered = list(self.workspace.sessions)
        from IPython.core.completer import SimpleCompletion

        token = context.token
        chosen = [SimpleCompletion(name) for name in offered if name.startswith(token)]
        return {"completions": chosen, "suppress": bool(chosen)}

    complete.matcher_api_version = 2  # type: ignore[attr-defined]


#: The %session subcommands whose argument is a session's id.
_NAMING = ("use", "delete", "panel")


def _split(command: str, line: str) -> list[str]:
    try:
        return shlex.split(line)  # IPython's own split keeps the quotes of --system "..."
    except ValueError as exc:
        raise ChatError(f"{command} {line.strip()}: {exc}; close the quote") from None


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
