"""What the SQL stores (SQLite, PostgreSQL) share: the schema, and saving only what changed.

A session is one row of `<prefix>session` (its header as JSON, and the facts the listing
shows) and one row per message in `<prefix>message`. A save compares the stored messages
with the new ones and rewrites from the first that differs (so an edit anywhere is saved,
and a save that only adds writes only the new messages); an `append` (a session's save
after a turn) checks the stored count and last id and writes just the turn. Each call is
one transaction, run on the store's worker thread (`base.on_worker`).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..errors import ConfigurationError, InvalidSessionData
from .base import (
    SessionInfo,
    SessionStore,
    assemble,
    check_data,
    check_key,
    check_page,
    dumps,
    on_worker,
    parse,
    parse_messages,
    plain,
    split,
    title_of,
)

#: 1 was one JSON document per session (agent_nb 0.1's SQLiteStore); 2 is a row per message.
SCHEMA_VERSION = 2
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, params: Iterator[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SQLStore(SessionStore):
    """A session store on a SQL database; subclasses bring the connection and transactions."""

    #: Appended to the SELECT that reads a session's row before writing it.
    _lock_row = ""
    #: The LIMIT that means "no limit".
    _no_limit: Any = None

    def __init__(self, table_prefix: str) -> None:
        if not isinstance(table_prefix, str) or not _IDENTIFIER.match(table_prefix):
            raise ConfigurationError(
                f"table_prefix must be letters, digits and underscores, got {table_prefix!r}"
            )
        self.table_prefix = table_prefix
        p = table_prefix
        self._tables = {"meta": f"{p}meta", "session": f"{p}session", "message": f"{p}message"}

    # -- what a subclass provides ----------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """A transaction that may write, serialized with other writers of the session."""

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A transaction that reads one consistent snapshot."""

    def _sql(self, text: str) -> str:
        """`text` with table names filled in and `?` placeholders in the driver's style."""
        return text.format(**self._tables)

    def _message_table(self) -> str:
        return (
            "CREATE TABLE IF NOT EXISTS {message} (session_id TEXT NOT NULL, "
            "position INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (session_id, position))"
        )

    def _migrate_legacy(self, cursor: Cursor) -> None:
        """Bring data from before the schema version was recorded into the current tables."""

    def _lock_schema(self, cursor: Cursor) -> None:
        """Keep two processes from creating or migrating the tables at once."""

    # -- schema ----------------------------------------------------------------------------

    def _create_schema(self) -> None:
        sql = self._sql
        with self._write() as cursor:
            self._lock_schema(cursor)
            cursor.execute(
                sql("CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            )
            cursor.execute(sql("SELECT value FROM {meta} WHERE key = ?"), ("schema_version",))
            row = cursor.fetchone()
            version = int(row[0]) if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self!r} was written by a newer agent_nb (schema version {version}, "
                    f"this one reads {SCHEMA_VERSION}); upgrade: pip install -U agent-nb"
                )
            if version == SCHEMA_VERSION:
                return
            cursor.execute(
                sql(
                    "CREATE TABLE IF NOT EXISTS {session} (session_id TEXT PRIMARY KEY, "
                    "header TEXT NOT NULL, title TEXT NOT NULL, model TEXT, created_at TEXT, "
                    "updated_at TEXT, message_count INTEGER NOT NULL, last_id TEXT)"
                )
            )
            cursor.execute(sql(self._message_table()))
            cursor.execute(
                sql(
                    "CREATE INDEX IF NOT EXISTS {session}_updated ON {session} "
                    "(updated_at DESC, session_id)"
                )
            )
            if version is None:
                self._migrate_legacy(cursor)
            cursor.execute(
                sql(
                    "INSERT INTO {meta} (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                ("schema_version", str(SCHEMA_VERSION)),
            )

    # -- the contract ----------------------------------------------------------------------

    @abc.abstractmethod
    def _attempt(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` with the driver's errors as StoreError (on the worker)."""

    @on_worker
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        check_key(session_id)
        header, messages = split(check_data(data))
        texts = [dumps(m) for m in messages]
        with self._write() as cursor:
            count, _ = self._lock_session(cursor, session_id)
            keep = self._unchanged(cursor, session_id, texts[:count])
            if keep < count:
                cursor.execute(
                    self._sql("DELETE FROM {message} WHERE session_id = ? AND position >= ?"),
                    (session_id, keep),
                )
            self._insert(cursor, session_id, keep, texts[keep:])
            title = title_of(messages)
            self._update(cursor, session_id, header, len(messages), _last_id(messages), title, True)

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
        texts = [dumps(m) for m in messages]
        with self._write() as cursor:
            count, stored_last = self._lock_session(cursor, session_id)
            if count != start or stored_last != last_id:
                return False
            self._insert(cursor, session_id, start, texts)
            new_last = _last_id(messages) if messages else last_id
            title = title_of(messages)
            self._update(cursor, session_id, header, start + len(messages), new_last, title, False)
        return True

    @on_worker
    def load(self, session_id: str) -> dict[str, Any] | None:
        check_key(session_id)
        sql = self._sql
        with self._read() as cursor:
            cursor.execute(
                sql("SELECT header, message_count FROM {session} WHERE session_id = ?"),
                (session_id,),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(
                sql("SELECT data FROM {message} WHERE session_id = ? ORDER BY position"),
                (session_id,),
            )
            rows = cursor.fetchall()
        where = repr(self)
        if len(rows) != row[1]:
            raise InvalidSessionData(
                f"session {session_id!r} in {where} is corrupt: it should have {row[1]} "
                f"messages, {len(rows)} are stored; delete it with store.delete({session_id!r})"
            )
        header = parse(row[0], session_id, where, "header")
        messages = parse_messages([r[0] for r in rows], session_id, where)
        return assemble(session_id, where, header, messages)

    @on_worker
    def delete(self, session_id: str) -> bool:
        check_key(session_id)
        with self._write() as cursor:
            cursor.execute(self._sql("DELETE FROM {session} WHERE session_id = ?"), (session_id,))
            existed = cursor.rowcount > 0
            cursor.execute(self._sql("DELETE FROM {message} WHERE session_id = ?"), (session_id,))
        return existed

    @on_worker
    def list_sessions(self) -> list[str]:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT session_id FROM {session} ORDER BY created_at, session_id")
            )
            return [row[0] for row in cursor.fetchall()]

    @on_worker
    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        check_page(limit, offset)
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT session_id, title, created_at, updated_at, message_count, model "
                    "FROM {session} "
                    "ORDER BY updated_at DESC, session_id LIMIT ? OFFSET ?"
                ),
                (self._no_limit if limit is None else limit, offset),
            )
            return [SessionInfo(*row) for row in cursor.fetchall()]

    @on_worker
    def __contains__(self, session_id: str) -> bool:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT 1 FROM {session} WHERE session_id = ?"),
                (check_key(session_id),),
            )
            return cursor.fetchone() is not None

    # -- helpers ---------------------------------------------------------------------------

    def _lock_session(self, cursor: Cursor, session_id: str) -> tuple[int, str | None]:
        """The stored message count and last id, the row locked until the transaction ends.

        A session not stored yet gets an empty row, which the transaction fills in or, rolled
        back, takes away again: no other connection ever sees it.
        """
        cursor.execute(
            self._sql(
                "INSERT INTO {session} (session_id, header, title, message_count) "
                "VALUES (?, '', '', 0) ON CONFLICT (session_id) DO NOTHING"
            ),
            (session_id,),
        )
        cursor.execute(
            self._sql(
                "SELECT message_count, last_id FROM {session} WHERE session_id = ?" + self._lock_row
            ),
            (session_id,),
        )
        count, last_id = cursor.fetchone()
        return count, last_id

    def _unchanged(self, cursor: Cursor, session_id: str, texts: list[str]) -> int:
        """How many of the stored messages, from the first, are `texts` as they are."""
        if not texts:
            return 0
        cursor.execute(
            self._sql(
                "SELECT data FROM {message} WHERE session_id = ? AND position < ? ORDER BY position"
            ),
            (session_id, len(texts)),
        )
        keep = 0
        for (stored,), text in zip(cursor.fetchall(), texts, strict=False):
            if stored != text:
                break
            keep += 1
        return keep

    def _insert(self, cursor: Cursor, session_id: str, start: int, texts: list[str]) -> None:
        """Store messages (JSON text each) at positions `start`, `start` + 1, ..."""
        if texts:
            cursor.executemany(
                self._sql("INSERT INTO {message} (session_id, position, data) VALUES (?, ?, ?)"),
                ((session_id, start + i, text) for i, text in enumerate(texts)),
            )

    def _update(
        self,
        cursor: Cursor,
        session_id: str,
        header: dict[str, Any],
        count: int,
        last_id: str | None,
        title: str,
        replace_title: bool,
    ) -> None:
        """Store the header; the title changes only when replaced or still empty."""
        model = header.get("model")
        keep = "?" if replace_title else "CASE WHEN title = '' THEN ? ELSE title END"
        cursor.execute(
            self._sql(
                "UPDATE {session} SET header = ?, model = ?, created_at = ?, updated_at = ?, "
                f"message_count = ?, last_id = ?, title = {keep} WHERE session_id = ?"
            ),
            (
                dumps(header),
                _text(model),
                _text(header.get("created_at")),
                _text(header.get("updated_at")),
                count,
                last_id,
                title,
                session_id,
            ),
        )


def _last_id(messages: list[dict[str, Any]]) -> str | None:
    if not messages:
        return None
    last = messages[-1].get("id")
    return last if isinstance(last, str) else None


def _text(value: Any) -> str | None:
    return plain(value) if isinstance(value, str) else None
