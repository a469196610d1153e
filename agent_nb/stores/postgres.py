"""Sessions in PostgreSQL (psycopg 3): one store for a team, `pip install agent-nb[postgres]`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigurationError
from ._sql import Cursor, SQLStore

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("PostgresStore needs psycopg 3: pip install 'agent-nb[postgres]'") from exc


class PostgresStore(SQLStore):
    """Sessions in PostgreSQL tables `<prefix>session` and `<prefix>message`.

    `conninfo` is a libpq connection string or URL ("postgresql://user@host/db"), or an open
    psycopg Connection (in autocommit mode; the store does its own transactions). A save
    locks its session's row, so many kernels can share the database; a lost connection is
    opened again on the next call when the store opened it.
    """

    _lock_row = " FOR UPDATE"
    _no_limit = None

    def __init__(
        self, conninfo: str | psycopg.Connection[Any], *, table_prefix: str = "agent_nb_"
    ) -> None:
        super().__init__(table_prefix)
        self._lock = threading.RLock()
        if isinstance(conninfo, psycopg.Connection):
            if not conninfo.autocommit:
                raise ConfigurationError(
                    "PostgresStore needs a connection in autocommit mode: "
                    "psycopg.connect(..., autocommit=True)"
                )
            self._conninfo = None
            self._connection = conninfo
            where = conninfo.info.get_parameters()
        else:
            self._conninfo = conninfo
            self._connection = self._connect()
            where = conninfo_to_dict(conninfo)
        # what repr shows: never a password
        self._address = " ".join(
            f"{key}={where[key]}" for key in ("host", "port", "dbname", "user") if where.get(key)
        )
        self._create_schema()

    def __repr__(self) -> str:
        return f"PostgresStore({self._address!r}, table_prefix={self.table_prefix!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        assert self._conninfo is not None
        return psycopg.connect(self._conninfo, autocommit=True)

    def _live(self) -> psycopg.Connection[Any]:
        if self._connection.closed and self._conninfo is not None:
            self._connection = self._connect()
        return self._connection

    def _sql(self, text: str) -> str:
        return super()._sql(text).replace("?", "%s")

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._lock:
            connection = self._live()
            with connection.transaction(), connection.cursor() as cursor:
                yield cursor  # type: ignore[misc]

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._lock:
            connection = self._live()
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cursor  # type: ignore[misc]

    def _lock_schema(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._tables["meta"],))

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
