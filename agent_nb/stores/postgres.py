"""Sessions in PostgreSQL (psycopg 3): one store for a team, `pip install agent-nb[postgres]`."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigurationError, StoreError, StoreTimeout
from ._sql import Cursor, SQLStore
from .base import check_timeout, on_worker, problem, retire

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("PostgresStore needs psycopg 3: pip install 'agent-nb[postgres]'") from exc

#: Errors that mean "waited too long": statement_timeout, lock_timeout, connect_timeout.
_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    pg_errors.QueryCanceled,
    pg_errors.LockNotAvailable,
    *((pg_errors.ConnectionTimeout,) if hasattr(pg_errors, "ConnectionTimeout") else ()),
)


class PostgresStore(SQLStore):
    """Sessions in PostgreSQL tables `<prefix>session` and `<prefix>message`.

    `conninfo` is a libpq connection string or URL ("postgresql://user@host/db"), or an open
    psycopg Connection (in autocommit mode; the store does its own transactions). A save
    locks its session's row, so many kernels can share the database. A connection the store
    opened is opened again when it is lost (and the call tried once more), or when a call
    that never finished left it unusable. Every call gives up after `timeout` seconds
    without an answer (StoreTimeout): connecting, each statement, waiting for a lock.
    """

    _lock_row = " FOR UPDATE"
    _no_limit = None

    def __init__(
        self,
        conninfo: str | psycopg.Connection[Any],
        *,
        timeout: float = 10.0,
        table_prefix: str = "agent_nb_",
    ) -> None:
        super().__init__(table_prefix)
        self.timeout = check_timeout(timeout)
        self._lock = threading.RLock()
        self._watch = threading.Lock()  # the deadline of the call running, and the watchdog
        self._call = 0  # which call the watchdog's timer is for
        self._expired = False
        self._connection: psycopg.Connection[Any] | None = None
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
            where = conninfo_to_dict(conninfo)
        # what repr shows: never a password
        self._address = " ".join(
            f"{key}={where[key]}" for key in ("host", "port", "dbname", "user") if where.get(key)
        )
        if self._conninfo is not None:
            self._connection = self._attempt(self._connect)
            # a store dropped unclosed closes the connection it opened (a kernel never
            # closes its stores; psycopg would warn of the connection when it is collected)
            weakref.finalize(self, _close_owned, vars(self))
        self._attempt(self._create_schema)

    def __repr__(self) -> str:
        return f"PostgresStore({self._address!r}, table_prefix={self.table_prefix!r})"

    # -- connections and timeouts ----------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection, with the store's timeouts where the conninfo sets none."""
        assert self._conninfo is not None
        given = conninfo_to_dict(self._conninfo)
        millis = int(self.timeout * 1000)
        seconds = max(1, math.ceil(self.timeout))
        params: dict[str, Any] = {
            "connect_timeout": seconds,  # libpq waits at least 2 s
            "keepalives": 1,
            "keepalives_idle": seconds,
            "keepalives_interval": max(1, seconds // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": millis,
        }
        params = {key: value for key, value in params.items() if key not in given}
        options = given.get("options") or ""
        for setting in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
            if setting not in options:
                options += f" -c {setting}={millis}"
        connection = psycopg.connect(
            self._conninfo, autocommit=True, options=options.strip(), **params
        )
        if self._expired:  # connected only after the call's time was up
            connection.close()
            raise TimeoutError("connecting took longer than the timeout")
        return connection

    def _live(self) -> psycopg.Connection[Any]:
        connection = self._connection
        if not connection.closed and connection.info.transaction_status != TransactionStatus.IDLE:
            self._rollback(connection)  # left so by a call that never finished
        if self._connection.closed and self._conninfo is not None:
            self._connection = self._connect()
        return self._connection

    def _rollback(self, connection: psycopg.Connection[Any]) -> None:
        """End a transaction that went wrong; a connection that cannot is closed (and, if the
        store opened it, replaced at the next call)."""
        status = connection.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                connection.execute("ROLLBACK")
                return
            except psycopg.Error:
                pass
        if status != TransactionStatus.IDLE:  # a command in progress, or the link is gone
            connection.close()

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """Give up on the call after `timeout` seconds: a server that accepted the connection
        and never answers is cut off (our end of the socket is shut down), so the call ends."""
        with self._watch:
            self._call += 1
            self._expired = False
            call = self._call
        timer = threading.Timer(self.timeout, self._expire, (call,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            with self._watch:
                self._call += 1

    def _expire(self, call: int) -> None:
        with self._watch:
            if call != self._call:
                return  # that call has ended
            self._expired = True
            try:
                fd = self._connection.pgconn.socket
                cut = socket.socket(fileno=os.dup(fd))
            except (psycopg.Error, OSError, AttributeError):
                return  # no socket yet: connect_timeout ends the call
            try:
                cut.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                cut.close()

    def _attempt(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `method` within the timeout; a connection found lost is reopened and the
        call made once more (a save is replayed whole: it replaces what was there)."""
        for attempt in (1, 2):
            try:
                with self._deadline():
                    return method(*args, **kwargs)
            except (psycopg.Error, TimeoutError) as exc:
                if self._expired or isinstance(exc, _TIMEOUTS):
                    raise StoreTimeout(
                        f"{self!r} did not answer within timeout={self.timeout:g} s "
                        f"({problem(exc)}): the server is down, hung or overloaded, or another "
                        "writer holds the session; try again, or wait longer with "
                        "PostgresStore(..., timeout=...)"
                    ) from None
                lost = isinstance(exc, psycopg.OperationalError) and self._connection.closed
                if attempt == 1 and lost and self._conninfo is not None:
                    continue  # dropped: reconnect and try once more
                raise StoreError(
                    f"{self!r} failed ({problem(exc)}); check that the server is running and "
                    "reachable at that address, and that the user may use the database"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _sql(self, text: str) -> str:
        return super()._sql(text).replace("?", "%s")

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Cursor]:
        with self._lock:
            connection = self._live()
            with connection.cursor() as cursor:
                try:  # the transaction begins inside: whatever stops it, it is rolled back
                    cursor.execute(begin)
                    yield cursor  # type: ignore[misc]
                    cursor.execute("COMMIT")
                except BaseException:
                    self._rollback(connection)
                    raise

    def _write(self) -> Any:
        return self._transaction("BEGIN")

    def _read(self) -> Any:
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def _lock_schema(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._tables["meta"],))

    @on_worker
    def close(self) -> None:
        with self._lock:
            self._connection.close()
        retire(self)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _close_owned(state: dict[str, Any]) -> None:
    """Close the connection a collected PostgresStore had open (`state`: its attributes)."""
    connection = state.get("_connection")
    if connection is not None and not connection.closed:
        with contextlib.suppress(Exception):
            connection.close()
