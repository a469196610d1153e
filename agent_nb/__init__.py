"""agent_nb: conversations with language models, at home in Jupyter notebooks."""

from __future__ import annotations

from ._streams import AsyncJsonStream, AsyncStream, JsonStream, Stream
from .agent import Agent
from .errors import AgentError
from .events import Response, Usage
from .messages import Message
from .session import Session
from .tools import ModelRetry, Tool, tool

__all__ = [
    "Agent",
    "AgentError",
    "AsyncJsonStream",
    "AsyncStream",
    "ChatPanel",
    "JsonStream",
    "Message",
    "ModelRetry",
    "Response",
    "Session",
    "Stream",
    "Tool",
    "Usage",
    "tool",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ChatPanel needs anywidget and ipywidgets: imported only when asked for
    if name == "ChatPanel":
        from .notebook.panel import ChatPanel

        return ChatPanel
    raise AttributeError(f"module 'agent_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext agent_nb`."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext agent_nb`."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
