"""A hostile MCP server for the tests, on the mcp SDK's own low-level Server (stdio).

`python tests/mcp_hostile.py SPEC` serves over stdio what the JSON file SPEC says, read
anew at each request (a test changes it between turns):

- `tools`: the tools listed, each {"name", "description", "schema"} (any name at all);
- `count`: that many more tools, `t0`, `t1`, ... (a list too long to offer);
- `deep`: a tool `deep` whose schema nests this many levels;
- `hang_list`: tools/list is never answered;
- `answer`: what every call returns: "text" (the tool's name and arguments), `items` N
  (N text blocks) or `image` N (a PNG-typed base64 string of N characters);
- `spam`: every call first sends this many log and tool-list-changed notifications;
- `stderr`: write this many bytes to stderr before serving (a chatty server);
- `exit`: end the process as soon as it starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

SPEC = Path(sys.argv[1])


def spec() -> dict[str, Any]:
    return json.loads(SPEC.read_text())


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return {"type": "object", "properties": {"x": schema}}


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    said = spec()
    if said.get("hang_list"):
        await asyncio.sleep(3600)
    tools = [
        types.Tool(
            name=t["name"],
            description=t.get("description", ""),
            input_schema=t.get("schema", {"type": "object", "properties": {}}),
        )
        for t in said.get("tools", [])
    ]
    for i in range(said.get("count", 0)):
        tools.append(types.Tool(name=f"t{i}", input_schema={"type": "object"}))
    if said.get("deep"):
        tools.append(types.Tool(name="deep", input_schema=nested(said["deep"])))
    return types.ListToolsResult(tools=tools)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    said = spec()
    for i in range(said.get("spam", 0)):
        await ctx.session.send_log_message(level="info", data=f"spam {i}")
        await ctx.session.send_tool_list_changed()
    if "items" in said:
        blocks = [types.TextContent(text="i")] * said["items"]
        return types.CallToolResult(content=blocks)
    if "image" in said:
        data = "A" * said["image"]
        return types.CallToolResult(content=[types.ImageContent(data=data, mime_type="image/png")])
    text = json.dumps({"pid": os.getpid(), "tool": params.name, "args": params.arguments})
    return types.CallToolResult(content=[types.TextContent(text=text)])


server = Server("hostile", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    said = spec()
    if said.get("exit"):
        os._exit(5)
    if said.get("stderr"):
        sys.stderr.write("e" * said["stderr"])
        sys.stderr.flush()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    asyncio.run(main())
