"""Tools from Model Context Protocol servers, on the official `mcp` SDK.

`MCP.stdio(command, args)` and `MCP.http(url)` describe a server; put one wherever tools go
(`Agent(tools=[...])`, `agent.session(tools=...)`, `run(..., tools=...)`). Each turn asks
its servers for their tools, so a list that changed is picked up by the next turn.

How servers live: one connection per server configuration in the process, started on first
use and shared by every agent and session that names it, run on one event loop thread of
its own (so a turn on any loop, the sync API's or the user's, can use it). A server that
crashed is started again at most once per turn; a call that was running when it died is
never sent again (it may have had effects): the turn ends with ToolError. `agent.close()`
(the servers among the agent's own tools), `MCP.close()` (or the end of `with MCP...:`) and
the end of the process stop the servers (a stdio server's whole process tree).

Trust: MCP tools require approval unless the server or the tool is marked otherwise
(`requires_approval=False`, `tool_approval={"name": False}`) or the agent's `approve=`
callback decides. What a server says is text, rendered inert like the model's own.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigurationError, ToolError
from .messages import IMAGE_TYPES, MAX_IMAGE_BYTES, ImagePart
from .tools import MAX_RESULT_CHARS, ResultText, Tool, ToolResultError

__all__ = ["MCP"]

#: The largest result a server may send, in characters of its content (text, base64 data
#: and structured content together):
#: a larger one is refused, and the model told so.
MAX_RESULT_BYTES = 10 * 1024 * 1024
#: How long one call may take by default, in seconds (MCP(timeout=...) changes it).
DEFAULT_TIMEOUT = 60.0
#: How long starting a server may take, in seconds.
START_TIMEOUT = 30.0
#: How long a started server may take to list its tools (all pages), in seconds: a server
#: that never answers, or whose answer the SDK cannot read, ends the turn with ToolError.
LIST_TIMEOUT = 30.0
#: The most tools one server may list; a longer list is refused (ToolError), not offered.
MAX_TOOLS = 1_000
#: The most characters one tool's description and JSON schema may take together; a larger
#: tool is refused (ToolError): it would be sent to the model with every request.
MAX_TOOL_CHARS = 100_000

_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class MCP:
    """A Model Context Protocol server, as a source of tools.

    Make one with `MCP.stdio(...)` or `MCP.http(...)`. Two MCP objects with the same
    configuration share one connection (and one process, for stdio).
    """

    _is_tool_source = True

    def __init__(
        self,
        *,
        transport: str,
        name: str | None = None,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        requires_approval: bool = True,
        tool_approval: Mapping[str, bool] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if transport not in ("stdio", "http"):
            raise ValueError(f"transport must be 'stdio' or 'http', got {transport!r}")
        self.transport = transport
        self.command = command
        self.args = tuple(args)
        self.url = url
        self._env = dict(env or {})  # never shown, never stored
        self._headers = dict(headers or {})
        self.cwd = cwd
        self.name = _clean_name(name or _default_name(transport, command, self.args, url))
        if not isinstance(requires_approval, bool):
            raise TypeError(f"requires_approval must be True or False, got {requires_approval!r}")
        self.requires_approval = requires_approval
        approval = dict(tool_approval or {})
        for key, value in approval.items():
            if not isinstance(key, str) or not isinstance(value, bool):
                raise TypeError(
                    f"tool_approval maps tool names to True or False, got {key!r}: {value!r}"
                )
        self.tool_approval = approval
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        requires_approval: bool = True,
        tool_approval: Mapping[str, bool] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> MCP:
        """A server run as a subprocess, spoken to over its stdin and stdout.

        `env` is added to a safe minimum of the kernel's environment (PATH, HOME, ...);
        its values are never shown or saved.
        """
        if not isinstance(command, str) or not command:
            raise TypeError(f"command must be a non-empty str, got {command!r}")
        if isinstance(args, str | bytes):
            raise TypeError("args takes a list of strings, not one string")
        args = [str(a) for a in args]
        return cls(
            transport="stdio",
            name=name,
            command=command,
            args=args,
            env=_strings(env, "env"),
            cwd=None if cwd is None else str(cwd),
            requires_approval=requires_approval,
            tool_approval=tool_approval,
            timeout=timeout,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        requires_approval: bool = True,
        tool_approval: Mapping[str, bool] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> MCP:
        """A server spoken to over streamable HTTP at `url`; `headers` (an Authorization,
        say) go with every request and are never shown or saved."""
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        return cls(
            transport="http",
            name=name,
            url=url,
            headers=_strings(headers, "headers"),
            requires_approval=requires_approval,
            tool_approval=tool_approval,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        where = (
            " ".join([self.command or "", *self.args])
            if self.transport == "stdio"
            else _safe_url(self.url)
        )
        return f"MCP.{self.transport}({self.name!r}: {where})"

    # -- what it offers ----------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        """The server's tools now (starting it if needed), as this agent_nb would offer them."""
        return _run_sync(self._connection().listing()).tools_for(self, _Use())

    async def tools_async(self) -> list[Tool]:
        return (await _on_loop(self._connection().listing())).tools_for(self, _Use())

    @property
    def running(self) -> bool:
        """Whether the server is started (and not known to have died)."""
        conn = _CONNECTIONS.get(self._key())
        return conn is not None and conn.alive

    def close(self) -> None:
        """Stop the server (its process tree, for stdio); the next use starts it again."""
        conn = _CONNECTIONS.get(self._key())
        if conn is not None:
            _run_sync(conn.stop())

    async def aclose(self) -> None:
        conn = _CONNECTIONS.get(self._key())
        if conn is not None:
            await _on_loop(conn.stop())

    def __enter__(self) -> MCP:
        """`with MCP.stdio(...) as server:` stops the server at the end of the block (a server
        given only to sessions is no agent's to stop: docs/mcp.md)."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MCP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def source(self) -> dict[str, Any]:
        """What a session records of this server: its name and transport, no secrets."""
        return {"server": self.name, "transport": self.transport}

    # -- internals ---------------------------------------------------------------------------

    def _key(self) -> str:
        """The connection's key: the whole configuration, secrets hashed (kept in memory only)."""
        raw = json.dumps(
            [
                self.transport,
                self.command,
                self.args,
                sorted(self._env.items()),
                self.cwd,
                self.url,
                sorted(self._headers.items()),
            ]
        )
        return hashlib.sha256(raw.encode()).hexdigest()

    def _connection(self) -> _Connection:
        key = self._key()
        with _LOCK:
            conn = _CONNECTIONS.get(key)
            if conn is None:
                conn = _CONNECTIONS[key] = _Connection(self)
            return conn

    async def _resolve(self, use: _Use) -> list[Tool]:
        """This turn's tools: listed (the server started, or restarted once) on first need."""
        conn = self._connection()
        listing = await _on_loop(use.guard(self, conn, conn.listing))
        return listing.tools_for(self, use)


class _Use:
    """One turn's use of its servers: each may be restarted once."""

    def __init__(self) -> None:
        self.restarted: set[str] = set()

    async def guard(self, server: MCP, conn: _Connection, action: Any) -> Any:
        """Run `action()` on the MCP loop; a server found dead is started again, once a turn."""
        if conn.dead:
            self._restart(server, conn)
        try:
            return await action()
        except _ServerGone as gone:
            if gone.in_flight:
                raise
            self._restart(server, conn)
            try:
                return await action()
            except _ServerGone as again:
                raise ToolError(
                    f"MCP server {server.name!r} stopped again after it was restarted in this "
                    f"turn ({again}); the turn was not saved",
                    tool=None,
                ) from None

    def _restart(self, server: MCP, conn: _Connection) -> None:
        key = server._key()
        if key in self.restarted:
            raise ToolError(
                f"MCP server {server.name!r} has stopped and was already restarted once in "
                "this turn; the turn was not saved. Check the server (its stderr is the "
                "kernel's), then run the turn again"
            )
        self.restarted.add(key)
        conn.reset()


class _ServerGone(Exception):
    """The connection to a server closed; `in_flight`: a call was running then."""

    def __init__(self, message: str, *, in_flight: bool) -> None:
        super().__init__(message)
        self.in_flight = in_flight


class _Listing:
    """A server's tools as listed (mcp_types.Tool), kept until the server says they changed."""

    def __init__(self, tools: list[Any]) -> None:
        self.tools = tools

    def tools_for(self, server: MCP, use: _Use) -> list[Tool]:
        made = []
        for spec in self.tools:
            made.append(_tool(server, spec, use))
        return made


def _tool(server: MCP, spec: Any, use: _Use) -> Tool:
    remote = spec.name
    schema = dict(spec.input_schema or {"type": "object"})
    schema.pop("title", None)
    schema.setdefault("type", "object")
    approval = server.tool_approval.get(remote, server.requires_approval)
    description = spec.description or spec.title or ""
    size = len(description) + len(json.dumps(schema, default=str))
    if size > MAX_TOOL_CHARS:
        raise ToolError(
            f"MCP server {server.name!r} describes tool {_clean_name(remote)!r} in {size:,} "
            f"characters (description and schema), over the cap of {MAX_TOOL_CHARS:,}: it "
            "would go to the model with every request. The turn was not saved"
        )

    async def call(arguments: dict[str, Any]) -> Any:
        conn = server._connection()

        async def once() -> Any:
            return await conn.call(remote, arguments, server.timeout)

        try:
            result = await _on_loop(use.guard(server, conn, once))
        except _ServerGone as gone:
            raise ToolError(
                f"MCP server {server.name!r} stopped while tool {remote!r} ran ({gone}); the "
                "call may have had effects, so it was not sent again. The turn was not saved; "
                "the next use starts the server again",
                tool=remote,
            ) from None
        return _mapped(result, server.name, remote)

    t = Tool.from_schema(
        _clean_name(remote),
        description,
        schema,
        call,
        requires_approval=approval,
        max_result_chars=MAX_RESULT_CHARS,
    )
    t.source = {"server": server.name, "tool": remote}
    return t


class _Connection:
    """One running server: its client, on the MCP loop, and its tools as last listed."""

    def __init__(self, server: MCP) -> None:
        self.server = server
        self.client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._starting: asyncio.Future[None] | None = None
        self.dead = False  # it died: the next use restarts it (once a turn)

    @property
    def alive(self) -> bool:
        return self.client is not None and not self.dead

    def reset(self) -> None:
        self.dead = False

    async def listing(self) -> _Listing:
        """The server's tools, asked for anew each turn: a list that changed (notified or
        not) is picked up, and a server that died since is found before any call is sent."""
        await self.start()
        name = self.server.name
        tools: list[Any] = []
        cursor = None
        try:
            async with asyncio.timeout(LIST_TIMEOUT):
                for _ in range(100):  # a server that pages forever cannot hang the turn
                    page = await self._request(
                        lambda c=cursor: self.client.list_tools(cursor=c), "tools/list"
                    )
                    tools.extend(page.tools)
                    if len(tools) > MAX_TOOLS:
                        raise ToolError(
                            f"MCP server {name!r} lists more than {MAX_TOOLS:,} tools, more "
                            "than agent_nb offers a model from one server; the turn was not "
                            "saved. Leave the server out, or use one that lists fewer"
                        )
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except TimeoutError:
            raise ToolError(
                f"MCP server {name!r} did not list its tools within {LIST_TIMEOUT:g} seconds "
                "(or sent a list that could not be read); the turn was not saved"
            ) from None
        except ToolResultError as exc:  # an error answer: the turn's error, not a tool's
            raise ToolError(
                f"MCP server {name!r} could not list its tools ({exc}); the turn was not saved"
            ) from None
        return _Listing(tools)

    async def call(self, name: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        await self.start()
        return await self._request(
            lambda: self.client.call_tool(name, arguments, read_timeout_seconds=timeout),
            f"tool {name!r}",
            in_flight=True,
            timeout=timeout,
        )

    async def _request(
        self, send: Any, what: str, *, in_flight: bool = False, timeout: float | None = None
    ) -> Any:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        if self.dead or self.client is None:
            raise _ServerGone("the connection is closed", in_flight=False)
        try:
            return await send()
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                await self._died()
                raise _ServerGone(f"{exc.message}", in_flight=in_flight) from None
            if exc.code == REQUEST_TIMEOUT:
                raise ToolResultError(
                    f"the call timed out after {timeout:g} seconds; the server was told to stop it"
                ) from None
            raise ToolResultError(
                f"the MCP server answered {what} with error {exc.code}: {exc.message}"
            ) from None
        except (OSError, EOFError) as exc:
            await self._died()
            raise _ServerGone(f"{type(exc).__name__}: {exc}", in_flight=in_flight) from None

    async def _died(self) -> None:
        self.dead = True
        await self.stop()
        self.dead = True

    async def start(self) -> None:
        if self.client is not None and not self.dead:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        loop = asyncio.get_running_loop()
        self._starting = starting = loop.create_future()
        self._stop = asyncio.Event()
        self._task = loop.create_task(self._serve(starting, self._stop))
        try:
            await asyncio.wait_for(asyncio.shield(starting), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise ToolError(
                f"MCP server {self.server.name!r} did not start within {START_TIMEOUT:g} seconds"
            ) from None
        finally:
            self._starting = None

    async def _serve(self, started: asyncio.Future[None], stop: asyncio.Event) -> None:
        """The connection's life, in one task: the SDK's contexts open and close here."""
        try:
            from mcp import Client
        except ImportError:  # pragma: no cover - the mcp extra
            started.set_exception(
                ConfigurationError("MCP servers need the mcp package: pip install 'agent-nb[mcp]'")
            )
            return
        server = self.server
        try:
            client = Client(
                _transport(server),
                cache=None,
                client_info=None,
            )
            async with client:
                self.client = client
                self.dead = False
                started.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(
                    ToolError(
                        f"MCP server {server.name!r} could not be started: "
                        f"{type(exc).__name__}: {_first_line(exc)}"
                    )
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.client = None

    async def stop(self) -> None:
        task, stop = self._task, self._stop
        self._task = None
        if task is None:
            return
        if stop is not None:
            stop.set()
        if task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)
        self.client = None


def _transport(server: MCP) -> Any:
    if server.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=server.command, args=list(server.args), env=server._env or None, cwd=server.cwd
        )
        return stdio_client(params, errlog=_errlog())
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=server._headers, timeout=httpx2.Timeout(30.0, read=300.0))
    return _OwnedHttp(streamable_http_client(server.url, http_client=http), http)


def _errlog() -> Any:
    """Where a stdio server's stderr goes: the process's own (a kernel's sys.stderr is a
    stream to the notebook, with no file descriptor a subprocess could write to)."""
    import sys

    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
            return stream
        except (AttributeError, OSError, ValueError):
            continue
    import subprocess

    return subprocess.DEVNULL


class _OwnedHttp:
    """The SDK's HTTP transport, with the httpx2 client it was given closed after it."""

    def __init__(self, transport: Any, http: Any) -> None:
        self._transport, self._http = transport, http

    async def __aenter__(self) -> Any:
        await self._http.__aenter__()
        try:
            return await self._transport.__aenter__()
        except BaseException:
            await self._http.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._transport.__aexit__(*exc)
        finally:
            await self._http.__aexit__(None, None, None)


# -- results -----------------------------------------------------------------------------------


def _mapped(result: Any, server: str, tool: str) -> Any:
    """A CallToolResult as a tool result: text (images as ImageParts beside it); an error
    result raises ToolResultError, which the model sees."""
    size = _size(result)
    if size > MAX_RESULT_BYTES:
        raise ToolResultError(
            f"the result of MCP tool {tool!r} (server {server!r}) is {size:,} characters, over "
            f"the cap of {MAX_RESULT_BYTES:,}: it was refused. Ask for less"
        )
    texts: list[str] = []
    images: list[ImagePart] = []
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)
        elif kind == "image":
            image = _image(block.data, block.mime_type)
            if image is None:
                texts.append(f"[an image ({block.mime_type}) the model cannot be sent]")
            else:
                images.append(image)
                texts.append(f"[image {len(images)}: {block.mime_type}]")
        elif kind == "audio":
            texts.append(f"[audio ({block.mime_type}), not sent to the model]")
        elif kind == "resource_link":
            texts.append(f"[resource link: {block.name} <{block.uri}>]")
        elif kind == "resource":
            res = block.resource
            if getattr(res, "text", None) is not None:
                texts.append(f"[resource <{res.uri}>]\n{res.text}")
            else:
                image = _image(res.blob, res.mime_type or "")
                if image is not None:
                    images.append(image)
                    texts.append(f"[image {len(images)}: resource <{res.uri}>]")
                else:
                    raw = len(res.blob) // 4 * 3
                    texts.append(
                        f"[resource <{res.uri}> ({res.mime_type or 'binary'}), {raw:,} bytes of "
                        "binary data, not sent to the model]"
                    )
    structured = getattr(result, "structured_content", None)
    if structured is not None and not any(t.strip() for t in texts):
        texts.append(json.dumps(structured, ensure_ascii=False))
    text = "\n".join(texts)
    if result.is_error:
        raise ToolResultError(text or f"MCP tool {tool!r} failed and said nothing more")
    if images:
        return ResultText(text, images)
    return text


def _image(data: str, mime_type: str) -> ImagePart | None:
    if mime_type not in IMAGE_TYPES or len(data) // 4 * 3 > MAX_IMAGE_BYTES:
        return None
    try:
        return ImagePart.from_bytes(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def _size(result: Any) -> int:
    total = 0
    for block in result.content:
        for field in ("text", "data"):
            value = getattr(block, field, None)
            if isinstance(value, str):
                total += len(value)
        res = getattr(block, "resource", None)
        if res is not None:
            total += len(getattr(res, "text", None) or getattr(res, "blob", None) or "")
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        total += len(json.dumps(structured, default=str)) if total < MAX_RESULT_BYTES else 0
    return total


# -- the loop the connections live on ------------------------------------------------------------

_LOCK = threading.Lock()
_CONNECTIONS: dict[str, _Connection] = {}
_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="agent_nb-mcp", daemon=True).start()
            ready.wait()
            _LOOP = loop
            atexit.register(close_all)
        return _LOOP


async def _on_loop(coro: Any) -> Any:
    """Await `coro` on the MCP loop from any loop; cancelling this cancels it there."""
    loop = _loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def _run_sync(coro: Any, timeout: float | None = None) -> Any:
    loop = _loop()
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


def close_all(timeout: float = 10.0) -> None:
    """Stop every server this process started (at exit, and when a kernel shuts down)."""
    if _LOOP is None or _LOOP.is_closed():
        return
    conns = list(_CONNECTIONS.values())

    async def stop_all() -> None:
        await asyncio.gather(*(c.stop() for c in conns), return_exceptions=True)

    with contextlib.suppress(Exception):
        _run_sync(stop_all(), timeout)


def close_servers(sources: Iterable[Any]) -> None:
    """Stop the servers among `sources` (agent.close())."""
    for source in sources:
        if isinstance(source, MCP):
            source.close()


def resolve_names(tools: list[Tool], static: set[str]) -> list[Tool]:
    """`tools` from servers, renamed `server_tool` where a name is taken twice; a name that
    is still taken (a server that lists `weather_forecast` beside a server `weather`'s
    `forecast`, or two names that clean to one) gets `_2`, `_3`, ...: no server's list can
    keep another's tools, or the user's, from a turn."""
    counts: dict[str, int] = {}
    for t in tools:
        counts[t.name] = counts.get(t.name, 0) + 1
    taken = set(static)
    for t in tools:
        name = t.name
        if counts[name] > 1 or name in static:
            name = _clean_name(f"{t.source['server']}_{name}")
        base, n = name, 2
        while name in taken:
            suffix = f"_{n}"
            name, n = base[: 64 - len(suffix)] + suffix, n + 1
        taken.add(name)
        t.name = name
    return tools


# -- small helpers -----------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    cleaned = _NAME.sub("_", name).strip("_") or "mcp"
    return cleaned[:64]


def _default_name(
    transport: str, command: str | None, args: tuple[str, ...], url: str | None
) -> str:
    if transport == "http":
        from urllib.parse import urlsplit

        return urlsplit(url or "").hostname or "mcp"
    words = [w for w in args if not w.startswith("-")] or [command or "mcp"]
    last = re.split(r"[\\/]", words[-1])[-1]
    return re.sub(r"\.(py|js|ts|mjs)$", "", last) or "mcp"


def _safe_url(url: str | None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url or "")
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _strings(values: Mapping[str, str] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a dict of str to str, got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{what} must map str to str; {key!r} maps to a {type(value).__name__}")
    return dict(values)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_first_line(e) for e in exc.exceptions[:3])
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
