"""Sessions kept in this process's memory."""

from __future__ import annotations

import json
import threading
from typing import Any

from .base import SessionStore, check_data, check_key


class MemoryStore(SessionStore):
    """Sessions in a dict, stored as JSON text so later changes to a saved dict do not leak in."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def save(self, session_id: str, data: dict[str, Any]) -> None:
        text = json.dumps(check_data(data), ensure_ascii=False)
        with self._lock:
            self._data[check_key(session_id)] = text

    def load(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._data.get(check_key(session_id))
        return None if text is None else json.loads(text)

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._data.pop(check_key(session_id), None) is not None

    def list_sessions(self) -> list[str]:
        with self._lock:
            return list(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._data)})"
