"""A separate process that writes to a store: `python store_worker.py ACTION KIND WHERE ...`.

turns SESSION N    run N turns in SESSION (autosaved), then print "done"
crash SESSION      start saving SESSION in full, and die (SIGKILL) in the middle of the save
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import open_store

from agent_nb import Agent, Message
from agent_nb.providers.testing import TestProvider


def die(*args: object, **kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_inside_save(kind: str) -> None:
    """Make the next save die after it has written some of its data, before it commits."""
    if kind in ("sqlite", "postgres"):
        from agent_nb.stores import _sql

        _sql.SQLStore._update = die  # runs after the messages are written, before COMMIT
    elif kind == "redis":
        from agent_nb.stores import redis as redis_store

        redis_store.RedisStore._write_header = die  # inside MULTI, before EXEC
    elif kind == "notebook":
        from agent_nb.stores import notebook

        notebook.os.replace = die  # the new file is written, not yet renamed over the old
    else:
        raise SystemExit(f"no crash point for {kind}")


def main() -> None:
    action, kind, where = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    store = open_store(kind, where)
    agent = Agent(provider=TestProvider(), model="test", store=store)
    if action == "turns":
        session_id, turns = sys.argv[4], int(sys.argv[5])
        session = agent.session(session_id=session_id)
        for number in range(turns):
            session.run(f"{session_id} turn {number}")
        print("done", flush=True)
    elif action == "crash":
        session = agent.load_session(sys.argv[4])
        rewritten = [Message.user(f"rewritten {i} " * 20) for i in range(200)]
        crash_inside_save(kind)
        store.save(
            session.session_id, {**session.to_dict(), "messages": [m.to_dict() for m in rewritten]}
        )
        print("saved: the crash point was never reached", flush=True)


if __name__ == "__main__":
    main()
