"""Sessions kept in this process's memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .base import (
    SessionInfo,
    SessionStore,
    assemble,
    check_data,
    check_key,
    dumps,
    newest_first,
    on_worker,
    parse,
    parse_messages,
    split,
    title_of,
)


@dataclass
class _Stored:
    header: str
    messages: list[str] = field(default_factory=list)  # JSON text: later changes cannot leak in
    last_id: str | None = None
    info: SessionInfo | None = None


class MemoryStore(SessionStore):
    """Sessions in a dict, kept as JSON text so that changes to a saved dict do not leak in.

    Calls run on the store's worker thread, in order, as the other built-in stores' do.
    """

    def __init__(self) -> None:
        self._data: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    @on_worker
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        check_key(session_id)
        header, messages = split(check_data(data))
        stored = _Stored(dumps(header), [dumps(m) for m in messages])
        _describe(stored, session_id, header, messages, title_of(messages))
        with self._lock:
            self._data[session_id] = stored

    @on_worker
    def append(
        self,
        session_id: str,
        header: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        start: int,
        last_id: str | None,
    ) -> bool:
        check_key(session_id)
        new = [dumps(m) for m in messages]
        with self._lock:
            stored = self._data.get(session_id)
            if stored is None or len(stored.messages) != start or stored.last_id != last_id:
                return False
            title = (stored.info.title if stored.info else "") or title_of(messages)
            stored.messages.extend(new)
            stored.header = dumps(header)
            _describe(stored, session_id, header, messages, title)
            return True

    @on_worker
    def load(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._data.get(check_key(session_id))
            if stored is None:
                return None
            header, messages = stored.header, list(stored.messages)
        where = repr(self)
        return assemble(
            session_id,
            where,
            parse(header, session_id, where, "header"),
            parse_messages(messages, session_id, where),
        )

    @on_worker
    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._data.pop(check_key(session_id), None) is not None

    @on_worker
    def list_sessions(self) -> list[str]:
        with self._lock:
            return list(self._data)

    @on_worker
    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        with self._lock:
            infos = [stored.info for stored in self._data.values() if stored.info]
        return newest_first(infos, limit, offset)

    @on_worker
    def __contains__(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._data

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._data)})"


def _describe(
    stored: _Stored,
    session_id: str,
    header: dict[str, Any],
    new: list[dict[str, Any]],
    title: str,
) -> None:
    if new:
        last = new[-1].get("id")
        stored.last_id = last if isinstance(last, str) else None
    elif not stored.messages:
        stored.last_id = None
    stored.info = SessionInfo(
        session_id=session_id,
        title=title,
        created_at=header.get("created_at"),
        updated_at=header.get("updated_at"),
        message_count=len(stored.messages),
        model=header.get("model"),
    )
