"""Where sessions are kept: `store.save(id, session.to_dict())`, `store.load(id)`.

The stores load on first use, so that `import agent_nb` does not import their drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _lazy
from .base import SessionInfo, SessionStore

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .notebook import NotebookStore
    from .postgres import PostgresStore
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = [
    "MemoryStore",
    "NotebookStore",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
]

_MODULES = {
    "MemoryStore": ".memory",
    "NotebookStore": ".notebook",
    "PostgresStore": ".postgres",
    "RedisStore": ".redis",
    "SQLiteStore": ".sqlite",
}


__getattr__ = _lazy.attributes(__name__, _MODULES)
