"""Session stores with long histories: a save after one more turn, and a load.

For each store, a session of 100 and of 10,000 messages is saved; then each round adds one
turn (a prompt and an answer) and times the save a Session makes after a turn (autosave:
only the new messages are written); then come the loads. Beside them, the same on the
openai-agents SDK's SQLiteSession (`add_items` of the turn's two items, `get_items`).
Everything runs through the async APIs on one event loop, as both libraries' turns do; the
garbage collector runs before each timed call (as timeit keeps it out), so a collection
that the previous load's garbage set off is not billed to the next save.
Targets: a save after a turn at 10,000 messages within 2x of one at 100, and faster than
the peer's.

    .venv/bin/python benchmarks/store_speed.py [--rounds 15]

Redis and PostgreSQL servers are started on 127.0.0.1 as the tests start them (Debian's
redis-server and postgresql); a store whose server cannot start is reported and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import _server  # noqa: F401 - puts tests/ on sys.path for the servers

from agent_nb import Agent, Message
from agent_nb.events import Usage
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import MemoryStore, NotebookStore, SessionStore, SQLiteStore

SIZES = (100, 10_000)
PROMPT = "Could you summarise what we found about the regional sales figures so far?"
ANSWER = "Sales rose 4% in the north and fell 2% in the south; " * 8


def history(count: int) -> list[Message]:
    messages = []
    for i in range(count // 2):
        messages += [Message.user(f"{i}: {PROMPT}"), Message.assistant(f"{i}: {ANSWER}")]
    return messages


async def time_ours(store: SessionStore, count: int, rounds: int) -> tuple[float, float]:
    """Median seconds of (a save after one turn, a load) at `count` messages."""
    session = Agent(provider=TestProvider(), model="bench").session(store=store)
    await asyncio.to_thread(setattr, session, "messages", history(count))
    saves, loads = [], []
    for _ in range(rounds):
        session._commit([Message.user(PROMPT), Message.assistant(ANSWER)], Usage())
        gc.collect()
        started = time.perf_counter()
        await session._autosave_async(None)  # what a turn runs after it commits
        saves.append(time.perf_counter() - started)
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        data = await store.aload(session.session_id)
        loads.append(time.perf_counter() - started)
        assert data is not None and len(data["messages"]) == len(session.messages)
    return statistics.median(saves), statistics.median(loads)


async def time_peer(folder: Path, count: int, rounds: int) -> tuple[float, float]:
    from agents import SQLiteSession

    session = SQLiteSession(f"peer-{count}", folder / f"peer-{count}.db")
    items: list[Any] = []
    for i in range(count // 2):
        items += [
            {"role": "user", "content": f"{i}: {PROMPT}"},
            {"role": "assistant", "content": f"{i}: {ANSWER}"},
        ]
    await session.add_items(items)
    saves, loads = [], []
    for _ in range(rounds):
        turn = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}]
        gc.collect()
        started = time.perf_counter()
        await session.add_items(turn)
        saves.append(time.perf_counter() - started)
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        loaded = await session.get_items()
        loads.append(time.perf_counter() - started)
        assert len(loaded) >= count
    session.close()
    return statistics.median(saves), statistics.median(loads)


@contextmanager
def stores(folder: Path) -> Iterator[dict[str, Callable[[int], SessionStore] | str]]:
    """Each store by name: a function making a fresh one, or why it is unavailable."""
    from servers import PostgresServer, RedisServer, ServerUnavailable

    made: dict[str, Callable[[int], SessionStore] | str] = {
        "memory": lambda n: MemoryStore(),
        "sqlite": lambda n: SQLiteStore(folder / f"s{n}.db"),
        "notebook": lambda n: NotebookStore(folder / f"n{n}.ipynb"),
    }
    servers: list[Any] = []
    try:
        redis = RedisServer(folder)
        servers.append(redis)
        from agent_nb.stores import RedisStore

        made["redis"] = lambda n: RedisStore(redis.url, prefix=f"bench{n}:")
    except ServerUnavailable as exc:
        made["redis"] = f"skipped: {exc}"
    try:
        pg_folder = Path(tempfile.mkdtemp(prefix="agent_nb-bench-pg-"))
        postgres = PostgresServer(pg_folder)
        servers.append(postgres)
        from agent_nb.stores import PostgresStore

        made["postgres"] = lambda n: PostgresStore(postgres.dsn, table_prefix=f"bench{n}_")
    except ServerUnavailable as exc:
        made["postgres"] = f"skipped: {exc}"
    try:
        yield made
    finally:
        for server in servers:
            with suppress(Exception):
                server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as name, stores(Path(name)) as made:
        folder = Path(name)
        for store_name, make in made.items():
            if isinstance(make, str):
                print(f"{store_name}: {make}")
                continue
            results[store_name] = {}
            for count in SIZES:
                results[store_name][count] = await time_ours(make(count), count, args.rounds)
        results["openai-agents SQLiteSession"] = {
            count: await time_peer(folder, count, args.rounds) for count in SIZES
        }
    small, large = SIZES
    print(f"median of {args.rounds} rounds; ms; a turn = a prompt and an answer")
    print(
        f"{'store':<29}{'save@' + str(small):>10}{'save@' + str(large):>12}{'ratio':>7}"
        f"{'load@' + str(small):>10}{'load@' + str(large):>12}"
    )
    for name, by_size in results.items():
        (save_s, load_s), (save_l, load_l) = by_size[small], by_size[large]
        print(
            f"{name:<29}{save_s * 1e3:>10.3f}{save_l * 1e3:>12.3f}{save_l / save_s:>7.2f}"
            f"{load_s * 1e3:>10.2f}{load_l * 1e3:>12.2f}"
        )
    peer = results["openai-agents SQLiteSession"]
    ours = results["sqlite"]
    print(
        f"sqlite vs the peer at {large} messages: save {ours[large][0] / peer[large][0]:.2f}x, "
        f"load {ours[large][1] / peer[large][1]:.2f}x (below 1 is faster)"
    )


if __name__ == "__main__":
    asyncio.run(main())
