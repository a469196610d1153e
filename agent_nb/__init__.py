"""agent_nb: conversations with language models, at home in Jupyter notebooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _lazy

if TYPE_CHECKING:
    from ._context import ContextReport, Summarize, Trim
    from ._ledger import Cost, Price, Spend
    from ._streams import AsyncJsonStream, AsyncStream, JsonStream, Stream
    from .agent import Agent
    from .errors import AgentError
    from .events import Response, Usage
    from .mcp import MCP
    from .messages import Message
    from .notebook.panel import ChatPanel
    from .router import Router
    from .session import Session
    from .tools import ModelRetry, Tool, tool

__all__ = [  # noqa: RUF022 - sorted as sorted() sorts (tests/core/test_api.py)
    "Agent",
    "AgentError",
    "AsyncJsonStream",
    "AsyncStream",
    "ChatPanel",
    "ContextReport",
    "Cost",
    "JsonStream",
    "MCP",
    "Message",
    "ModelRetry",
    "Price",
    "Response",
    "Router",
    "Session",
    "Spend",
    "Stream",
    "Summarize",
    "Tool",
    "Trim",
    "Usage",
    "tool",
]
__version__ = "0.1.0"


#: Where each public name lives: imported when first asked for, so that `import agent_nb`
#: and `%load_ext agent_nb` load only what a first cell uses (benchmarks/import_cost.py).
_HOMES = {
    "Agent": ".agent",
    "AgentError": ".errors",
    "AsyncJsonStream": "._streams",
    "AsyncStream": "._streams",
    "ChatPanel": ".notebook.panel",
    "ContextReport": "._context",
    "Cost": "._ledger",
    "JsonStream": "._streams",
    "MCP": ".mcp",
    "Message": ".messages",
    "ModelRetry": ".tools",
    "Price": "._ledger",
    "Response": ".events",
    "Router": ".router",
    "Session": ".session",
    "Spend": "._ledger",
    "Stream": "._streams",
    "Summarize": "._context",
    "Tool": ".tools",
    "Trim": "._context",
    "Usage": ".events",
    "tool": ".tools",
}


__getattr__ = _lazy.attributes(__name__, _HOMES)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext agent_nb`."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext agent_nb`."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
