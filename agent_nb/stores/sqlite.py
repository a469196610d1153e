"""Sessions in a SQLite file: the embedded default, safe for several kernels sharing the file."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidSessionData, StoreError, StoreTimeout
from ._sql import Cursor, SQLStore
from .base import check_timeout, dumps, on_worker, parse, problem, retire, split, title_of

#: Overrides where `SQLiteStore()` keeps its file.
DB_ENV = "AGENT_NB_DB"
_LEGACY_TABLE = "agent_nb_sessions"  # schema 1: one JSON document per session
_FACTS = ("model", "created_at", "updated_at")


def default_path() -> Path:
    """$AGENT_NB_DB, else sessions.db in the user's data directory for agent_nb."""
    configured = os.environ.get(DB_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("agent_nb", appauthor=False)) / "sessions.db"


class SQLiteStore(SQLStore):
    """Sessions in one SQLite file: a row per message, WAL mode, a busy timeout.

    With no path, the file is $AGENT_NB_DB or sessions.db in the user's data directory.
    Several processes may use one file at once: each save is one IMMEDIATE transaction, and
    a writer waits up to `timeout` seconds for another to finish (then StoreTimeout).
    """

    _no_limit = -1

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        table_prefix: str = "agent_nb_",
    ) -> None:
        super().__init__(table_prefix)
        self.timeout = check_timeout(timeout)
        self.path = default_path() if path is None else Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), timeout=timeout, check_same_thread=False, isolation_level=None
        )
        # a store dropped unclosed closes its database (a kernel never closes its stores)
        weakref.finalize(self, self._db.close)
        self._attempt(self._open)

    def _open(self) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._create_schema()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _attempt(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreTimeout(
                    f"{self!r}: another process held the database for longer than "
                    f"timeout={self.timeout:g} s ({problem(exc)}); try again, or wait longer "
                    "with SQLiteStore(..., timeout=...)"
                ) from None
            raise self._failed(exc) from None
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"{self!r} failed ({problem(exc)}); check that the file and its folder can be "
            "read and written, and that the disk is not full"
        )

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        """The connection's cursor; a transaction a stopped call left open is rolled back."""
        with self._lock:
            if self._db.in_transaction:
                self._db.rollback()
            yield self._db.cursor()

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._cursor() as cursor:
            try:  # the transaction begins inside: whatever stops it, it is rolled back
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._cursor() as cursor:
            try:
                cursor.execute("BEGIN")
                yield cursor
            finally:
                self._db.rollback()  # read only: nothing to keep

    def _message_table(self) -> str:
        return super()._message_table() + " WITHOUT ROWID"

    def _migrate_legacy(self, cursor: Cursor) -> None:
        """Schema 1 (agent_nb 0.1): a JSON document per session, into rows per message."""
        cursor.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_LEGACY_TABLE,)
        )
        if cursor.fetchone() is None or self.table_prefix != "agent_nb_":
            return
        cursor.execute(f"SELECT session_id, data FROM {_LEGACY_TABLE}")
        for session_id, text in cursor.fetchall():
            try:
                header, messages = split(parse(text, session_id, repr(self)))
            except (InvalidSessionData, AttributeError):
                header, messages = text, []  # kept as it was: loading it names the problem
            cursor.execute(
                self._sql(
                    "INSERT INTO {session} (session_id, header, title, model, created_at, "
                    "updated_at, message_count, last_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    session_id,
                    dumps(header) if isinstance(header, dict) else header,
                    title_of(messages),
                    *(header.get(key) if isinstance(header, dict) else None for key in _FACTS),
                    len(messages),
                    messages[-1].get("id") if messages else None,
                ),
            )
            self._insert(cursor, session_id, 0, [dumps(m) for m in messages])
        cursor.execute(f"DROP TABLE {_LEGACY_TABLE}")

    @on_worker
    def close(self) -> None:
        with self._lock:
            self._db.close()
        retire(self)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
