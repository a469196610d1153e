"""A small MCP server for the tests, on the mcp SDK's own MCPServer (FastMCP in mcp 1.x).

`python tests/mcp_server.py` serves over stdio; `python tests/mcp_server.py http PORT` serves
streamable HTTP on 127.0.0.1:PORT at /mcp. `MCP_TEST_DIR` (if set) is where tools leave
marks: `cancelled-<tag>` when a slow call is cancelled, `started-<tag>` when it begins; a
file `die-on-list` there makes the server end when asked for its tools.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
from pathlib import Path

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

#: A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def _mark(name: str) -> None:
    folder = os.environ.get("MCP_TEST_DIR")
    if folder:
        Path(folder, name).write_text(str(os.getpid()))


class _Server(MCPServer):
    async def list_tools(self) -> list[types.Tool]:
        """The tools; while `MCP_TEST_DIR/die-on-list` exists, the process ends instead (a
        server that keeps crashing)."""
        folder = os.environ.get("MCP_TEST_DIR")
        if folder and Path(folder, "die-on-list").exists():
            _mark(f"died-on-list-{os.getpid()}")
            os._exit(4)
        return await super().list_tools()


server = _Server("agent-nb-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message."""
    raise ToolError(message)


@server.tool()
def image() -> types.ImageContent:
    """A 1x1 PNG."""
    return types.ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png")


@server.tool()
def resource() -> list[types.ContentBlock]:
    """A text resource and a blob resource, embedded."""
    return [
        types.EmbeddedResource(
            resource=types.TextResourceContents(uri="file:///notes.txt", text="the notes")
        ),
        types.EmbeddedResource(
            resource=types.BlobResourceContents(
                uri="file:///data.bin", mime_type="application/octet-stream", blob="AAEC"
            )
        ),
    ]


@server.tool()
def weather(city: str) -> dict[str, object]:
    """Structured weather for a city."""
    return {"city": city, "celsius": 21}


@server.tool()
async def slow(seconds: float, tag: str) -> str:
    """Sleeps, marking its start and its cancellation."""
    _mark(f"started-{tag}")
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        _mark(f"cancelled-{tag}")
        raise
    return f"slept {seconds}"


_arrived: dict[str, int] = {}


@server.tool()
async def barrier(tag: str, count: int) -> str:
    """Waits (10 s at most) until `count` calls with this tag have arrived."""
    _arrived[tag] = _arrived.get(tag, 0) + 1
    for _ in range(200):
        if _arrived[tag] >= count:
            return "met"
        await asyncio.sleep(0.05)
    return "alone"


@server.tool()
async def die(tag: str = "") -> str:
    """The server process ends while this call runs."""
    _mark(f"died-{tag}")
    os._exit(3)


@server.tool()
def big(size: int) -> str:
    """A result of `size` characters."""
    return "x" * size


@server.tool(description=f"Hostile description {XSS}")
def hostile() -> str:
    """Returns XSS payloads."""
    return f"result {XSS} **bold** [link](javascript:alert(3))"


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool `late` and says the list changed."""

    def late(word: str) -> str:
        """Added at run time."""
        return f"late {word}"

    server.add_tool(late)
    await ctx.notify_tools_changed()
    with contextlib.suppress(Exception):
        await ctx.request_context.session.send_tool_list_changed()
    return "grown"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        server.settings.log_level = "WARNING"
        asyncio.run(server.run_streamable_http_async(host="127.0.0.1", port=int(sys.argv[2])))
    else:
        server.run("stdio")
