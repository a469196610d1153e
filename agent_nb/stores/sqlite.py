"""Sessions in a SQLite file: durable, and safe for several kernels sharing the file."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidSessionData
from .base import SessionStore, check_data, check_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_nb_sessions (
    session_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SQLiteStore(SessionStore):
    """Sessions in one SQLite file (WAL mode, with a busy timeout for concurrent writers)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=timeout, check_same_thread=False, isolation_level=None
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def save(self, session_id: str, data: dict[str, Any]) -> None:
        text = json.dumps(check_data(data), ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT INTO agent_nb_sessions (session_id, data, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, "
                "updated_at = excluded.updated_at",
                (check_key(session_id), text, time.time()),
            )

    def load(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM agent_nb_sessions WHERE session_id = ?", (check_key(session_id),)
            ).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except json.JSONDecodeError as exc:
            raise InvalidSessionData(
                f"session {session_id!r} in {self.path} is corrupt ({exc.msg}); "
                f"delete it with store.delete({session_id!r})"
            ) from None
        if not isinstance(data, dict):
            raise InvalidSessionData(f"session {session_id!r} in {self.path} is not an object")
        return data

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM agent_nb_sessions WHERE session_id = ?", (check_key(session_id),)
            )
        return cursor.rowcount > 0

    def list_sessions(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT session_id FROM agent_nb_sessions ORDER BY updated_at, session_id"
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
