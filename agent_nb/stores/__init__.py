"""Where sessions are kept: `store.save(id, session.to_dict())`, `store.load(id)`."""

from __future__ import annotations

from .base import SessionStore
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "SessionStore"]
