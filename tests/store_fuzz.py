"""Ctrl-C at random instants while a session saves: `python store_fuzz.py KIND WHERE SEED N`.

Runs changes on a session with a store (add_message, a rewrite that edits a middle message,
dropping the last turn, clear(), and a direct store.save of another session) until N of
them were interrupted, each by a KeyboardInterrupt raised in the main thread at a random
instant of the change: a SIGINT, what the kernel's stop button sends, that this process
sends itself when a setitimer alarm goes off (microsecond resolution). After each change,
interrupted or not:

- the store holds the session as it was before the change or after it, never a mix;
- the next change, not interrupted, saves, and then the store holds exactly the session
  in memory (and the direct session exactly what was saved last).

A failed check exits with status 1 and says which change broke what. At the end it prints
one JSON line ({"interrupts", "changes", "seconds", "digest"}) and waits for a line on stdin
before exiting, so that the caller can use the store from another process while this one
still has it open.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import open_store

from agent_nb import Agent, Message
from agent_nb.providers.testing import TestProvider


def digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def main() -> None:
    kind, where, seed, wanted = (
        sys.argv[1],
        json.loads(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    rng = random.Random(seed)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where it hangs
    store = open_store(kind, where)
    session = Agent(provider=TestProvider(), model="fuzz", store=store).session(session_id="fuzz")
    direct: dict = {"id": "direct", "messages": []}  # what store.save("direct") was given last

    def rewrite(messages: list[Message]) -> None:
        session.messages = messages  # the history replaced, saved once (undo, retry, a restore)

    # Each change is made ready first (building messages), then returned as the one call
    # that the interrupt may hit: the change itself, not the test's own preparation.
    def add():
        message = Message.user(f"note {rng.random()}")
        return lambda: session.add_message(message)

    def edit_middle():
        messages = session.messages
        if len(messages) < 3:
            return add()
        i = rng.randrange(len(messages) - 1)
        edited = Message.user(f"redacted {rng.random()}").model_copy(update={"id": messages[i].id})
        return lambda: rewrite([*messages[:i], edited, *messages[i + 1 :]])

    def drop_last_turn():
        messages = session.messages[:-2]
        return lambda: rewrite(messages)

    def clear():
        return session.clear

    def save_direct():
        data = {
            "id": "direct",
            "messages": [Message.user(f"direct {rng.random()}").to_dict() for _ in range(3)],
        }
        direct["next"] = data
        return lambda: store.save("direct", data)

    changes = [add] * 4 + [edit_middle] * 3 + [drop_last_turn, clear, save_direct]
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts = count = 0
    durations = [0.002]
    started = time.monotonic()
    while interrupts < wanted:
        count += 1
        if count > 50 * wanted:
            fail(f"only {interrupts} interrupts landed in {count} changes")
        if len(session.messages) > 30:
            session.clear()
        change = rng.choice(changes)
        call = change()
        before_session = store.load("fuzz")
        before_direct = store.load("direct")
        delay = rng.uniform(0, 1.5 * sorted(durations)[len(durations) // 2])
        began = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, delay)
            call()
            signal.setitimer(signal.ITIMER_REAL, 0)
            durations = [*durations, time.perf_counter() - began][-50:]
        except KeyboardInterrupt:
            interrupts += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        after = store.load("fuzz")  # through the store's worker: after the save ended
        if after not in (before_session, session.to_dict()):
            fail(f"change {count} ({change.__name__}): the store holds a mix of two states")
        if change is save_direct and store.load("direct") not in (before_direct, direct["next"]):
            fail(f"change {count}: store.save('direct') left a mix of two states")
        # the next change saves (in full if the last one was stopped): store == memory
        check = Message.user(f"check {count}")
        session.add_message(check)
        if store.load("fuzz") != session.to_dict():
            fail(f"change {count} ({change.__name__}): the next save did not catch up")
        if change is save_direct:
            store.save("direct", direct["next"])
            if store.load("direct") != direct["next"]:
                fail(f"change {count}: store.save('direct') did not save")
    result = {
        "interrupts": interrupts,
        "changes": count,
        "seconds": round(time.monotonic() - started, 1),
        "digest": digest(store.load("fuzz")),
    }
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # the store stays open until the caller is done


def fail(problem: str) -> None:
    print(problem, file=sys.stderr, flush=True)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
