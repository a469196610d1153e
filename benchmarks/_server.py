"""Run the loopback OpenAI-compatible server in its own process, for benchmarks."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _serve(reply: Any, runs: int, ready: multiprocessing.Queue) -> None:
    from fake_openai import FakeOpenAI, Reply

    with FakeOpenAI() as server:
        server.script(*[reply if isinstance(reply, Reply) else Reply(raw=reply)] * runs)
        ready.put(server.url)
        ready.get()  # wait for "stop"


class ServerProcess:
    """`with ServerProcess(raw_body, runs) as url:` serves `raw_body` to `runs` requests.

    `raw_body` may instead be a tests/fake_openai.py Reply (a paced stream, say).

    Where it can, it pins the server to the last CPU and this process to the others, so the
    candidates are not timed against the scheduler moving the two around (on a 2-core
    machine that alone swings a run between 0.17 and 0.33 s).
    """

    def __init__(self, raw: Any, runs: int) -> None:
        self._queue: multiprocessing.Queue = multiprocessing.Queue()
        self._process = multiprocessing.Process(
            target=_serve, args=(raw, runs, self._queue), daemon=True
        )

    def __enter__(self) -> str:
        self._process.start()
        url = self._queue.get(timeout=30)
        self.pinned = _pin(self._process.pid)
        return url

    def __exit__(self, *exc: object) -> None:
        self._queue.put("stop")
        self._process.join(timeout=10)


def _pin(server_pid: int | None) -> bool:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if server_pid is None or len(cpus) < 2:
        return False
    os.sched_setaffinity(server_pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return True
