"""What the MCP tests share: the test server's script (tests/mcp_server.py) and the model's
answers that call its tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_nb.messages import Message, ToolCallPart

#: The MCP server of the tests, on the SDK's own MCPServer (stdio, or `http PORT`).
SERVER = str(Path(__file__).resolve().with_name("mcp_server.py"))
#: A hostile MCP server (tests/mcp_hostile.py SPEC), on the SDK's low-level Server.
HOSTILE = str(Path(__file__).resolve().with_name("mcp_hostile.py"))


def calls(*pairs: tuple[str, dict[str, Any]]) -> Message:
    """The model's answer calling these tools (ids c1, c2, ...)."""
    return Message(
        role="assistant",
        parts=tuple(
            ToolCallPart(id=f"c{i}", name=name, arguments=args)
            for i, (name, args) in enumerate(pairs, 1)
        ),
    )
