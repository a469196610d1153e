"""Sessions in Redis (redis-py): one store for a team, `pip install agent-nb[redis]`."""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigurationError, InvalidSessionData, StoreError, StoreTimeout
from .base import (
    SessionInfo,
    SessionStore,
    assemble,
    check_data,
    check_key,
    check_page,
    check_timeout,
    dumps,
    on_worker,
    parse,
    parse_messages,
    plain,
    problem,
    retire,
    split,
    title_of,
)

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisStore needs redis-py: pip install 'agent-nb[redis]'") from exc

_CHUNK = 1000  # messages per RPUSH of a full save


class RedisStore(SessionStore):
    """Sessions in Redis: a hash per session, a list of messages, two indexes.

    Keys: `<prefix>session:<id>` (header and listing facts), `<prefix>messages:<id>` (one
    JSON message per item), `<prefix>created` and `<prefix>updated` (sorted sets of ids).
    `url` is a redis:// URL or an open `redis.Redis`. With `ttl` (seconds), a session expires
    that long after its last save. Each save is one MULTI/EXEC transaction, retried if
    another writer changed the session meanwhile (WATCH). A client made from a URL waits
    `timeout` seconds for the server (to connect, and for each answer; then StoreTimeout);
    a call that finds the connection dropped is made once more on a new one.
    """

    def __init__(
        self,
        url: str | redis.Redis = "redis://localhost:6379/0",
        *,
        prefix: str = "agent_nb:",
        ttl: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a str, got {type(prefix).__name__}")
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            raise ConfigurationError(f"ttl must be None or a number of seconds > 0, got {ttl!r}")
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = check_timeout(timeout)
        if isinstance(url, str):  # settings in the URL (?socket_timeout=...) win
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # retried once here, never after a timeout
            )
        else:
            self._redis = url
        options = self._redis.connection_pool.connection_kwargs
        # what repr shows: never a password
        self._address = (
            f"{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"
        )

    def __repr__(self) -> str:
        return f"RedisStore({self._address!r}, prefix={self.prefix!r})"

    def _attempt(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                return method(*args, **kwargs)
            except redis.exceptions.TimeoutError as exc:
                raise StoreTimeout(
                    f"{self!r} did not answer within {self._waits()} ({problem(exc)}): the "
                    "server is down, hung or overloaded; try again, or wait longer with "
                    "RedisStore(..., timeout=...)"
                ) from None
            except redis.exceptions.ConnectionError as exc:
                if attempt == 1:
                    continue  # dropped: a new connection, once more (a save is replayed whole)
                raise StoreError(
                    f"{self!r} could not reach the server ({problem(exc)}); check that it is "
                    "running and reachable at that address"
                ) from None
            except redis.exceptions.RedisError as exc:
                raise StoreError(f"{self!r} failed ({problem(exc)})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _waits(self) -> str:
        waits = self._redis.connection_pool.connection_kwargs.get("socket_timeout")
        return f"{waits:g} s" if waits else "its timeout"

    def _keys(self, session_id: str) -> tuple[str, str]:
        return f"{self.prefix}session:{session_id}", f"{self.prefix}messages:{session_id}"

    # -- the contract ----------------------------------------------------------------------

    @on_worker
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        check_key(session_id)
        header, messages = split(check_data(data))
        hash_key, list_key = self._keys(session_id)
        texts = [dumps(m) for m in messages]

        def write(pipe: redis.client.Pipeline) -> None:
            count, _ = _stored(pipe, hash_key)
            keep = 0  # how many stored messages, from the first, stay as they are
            if count and texts:
                for stored, text in zip(
                    pipe.lrange(list_key, 0, len(texts) - 1), texts, strict=False
                ):
                    if stored != text.encode():
                        break
                    keep += 1
            keep = min(keep, count)
            pipe.multi()
            if keep == 0:
                pipe.delete(list_key)
            elif keep < count:
                pipe.ltrim(list_key, 0, keep - 1)
            for start in range(keep, len(texts), _CHUNK):
                pipe.rpush(list_key, *texts[start : start + _CHUNK])
            self._write_header(pipe, session_id, header, len(texts), messages, title_of(messages))

        self._redis.transaction(write, hash_key)

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
        hash_key, list_key = self._keys(session_id)
        texts = [dumps(m) for m in messages]

        def write(pipe: redis.client.Pipeline) -> bool:
            count, stored_last = _stored(pipe, hash_key)
            if count != start or stored_last != last_id:
                return False
            title = None if pipe.hget(hash_key, "title") else title_of(messages)
            pipe.multi()
            if texts:
                pipe.rpush(list_key, *texts)
            self._write_header(pipe, session_id, header, start + len(texts), messages, title)
            return True

        return self._redis.transaction(write, hash_key, value_from_callable=True)

    @on_worker
    def load(self, session_id: str) -> dict[str, Any] | None:
        check_key(session_id)
        hash_key, list_key = self._keys(session_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(hash_key, "header", "count")
            pipe.lrange(list_key, 0, -1)
            (header_text, count), rows = pipe.execute()
        if header_text is None:
            return None
        where = repr(self)
        if count is None or int(count) != len(rows):
            raise InvalidSessionData(
                f"session {session_id!r} in {where} is corrupt: it should have "
                f"{count!r} messages, {len(rows)} are stored; delete it with "
                f"store.delete({session_id!r})"
            )
        header = parse(header_text, session_id, where, "header")
        messages = parse_messages(rows, session_id, where)
        return assemble(session_id, where, header, messages)

    @on_worker
    def delete(self, session_id: str) -> bool:
        check_key(session_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(session_id))
            pipe.zrem(f"{self.prefix}created", session_id)
            pipe.zrem(f"{self.prefix}updated", session_id)
            deleted, *_ = pipe.execute()
        return deleted > 0

    @on_worker
    def list_sessions(self) -> list[str]:
        ids = [i.decode() for i in self._redis.zrange(f"{self.prefix}created", 0, -1)]
        return self._alive(ids)

    @on_worker
    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        check_page(limit, offset)
        end = -1 if limit is None else offset + limit - 1
        if limit == 0:
            return []
        ids = [i.decode() for i in self._redis.zrevrange(f"{self.prefix}updated", offset, end)]
        fields = ("title", "created_at", "updated_at", "count", "model")
        with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hmget(self._keys(session_id)[0], *fields)
            rows = pipe.execute()
        infos = []
        for session_id, (title, created, updated, count, model) in zip(ids, rows, strict=True):
            if count is None:
                continue  # expired since the index was read
            infos.append(
                SessionInfo(
                    session_id=session_id,
                    title=(title or b"").decode(),
                    created_at=_text(created),
                    updated_at=_text(updated),
                    message_count=int(count),
                    model=_text(model),
                )
            )
        if len(infos) < len(ids):
            self._alive(ids)
        return infos

    @on_worker
    def __contains__(self, session_id: str) -> bool:
        return bool(self._redis.exists(self._keys(check_key(session_id))[0]))

    @on_worker
    def close(self) -> None:
        self._redis.close()
        retire(self)

    # -- helpers ---------------------------------------------------------------------------

    def _write_header(
        self,
        pipe: redis.client.Pipeline,
        session_id: str,
        header: dict[str, Any],
        count: int,
        messages: list[dict[str, Any]],
        title: str | None,
    ) -> None:
        hash_key, list_key = self._keys(session_id)
        fields: dict[str, Any] = {
            "header": dumps(header),
            "count": count,
            "created_at": _field(header.get("created_at")),
            "updated_at": _field(header.get("updated_at")),
            "model": _field(header.get("model")),
        }
        if messages:
            last = messages[-1].get("id")
            fields["last_id"] = last if isinstance(last, str) else ""
        elif count == 0:
            fields["last_id"] = ""
        if title is not None:
            fields["title"] = title
        pipe.hset(hash_key, mapping=fields)
        now = time.time()
        pipe.zadd(f"{self.prefix}created", {session_id: now}, nx=True)
        pipe.zadd(f"{self.prefix}updated", {session_id: now})
        if self.ttl is not None:
            milliseconds = int(self.ttl * 1000)
            pipe.pexpire(hash_key, milliseconds)
            pipe.pexpire(list_key, milliseconds)

    def _alive(self, ids: list[str]) -> list[str]:
        """`ids` whose sessions still exist; expired ones leave the indexes."""
        if self.ttl is None or not ids:
            return ids
        with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.exists(self._keys(session_id)[0])
            exists = pipe.execute()
        gone = [i for i, alive in zip(ids, exists, strict=True) if not alive]
        if gone:
            self._redis.zrem(f"{self.prefix}created", *gone)
            self._redis.zrem(f"{self.prefix}updated", *gone)
        return [i for i, alive in zip(ids, exists, strict=True) if alive]


def _stored(pipe: redis.client.Pipeline, hash_key: str) -> tuple[int, str | None]:
    count, last_id = pipe.hmget(hash_key, "count", "last_id")
    return (int(count) if count else 0), (last_id.decode() or None) if last_id else None


def _field(value: Any) -> str:
    return plain(value) if isinstance(value, str) else ""


def _text(value: bytes | None) -> str | None:
    return value.decode() or None if value else None
