"""Run the loopback OpenAI-compatible server in its own process, for benchmarks."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _serve(raw: bytes, runs: int, ready: multiprocessing.Queue) -> None:
    from fake_openai import FakeOpenAI, Reply

    with FakeOpenAI() as server:
        server.script(*[Reply(raw=raw)] * runs)
        ready.put(server.url)
        ready.get()  # wait for "stop"


class ServerProcess:
    """`with ServerProcess(raw_body, runs) as url:` serves `raw_body` to `runs` requests."""

    def __init__(self, raw: bytes, runs: int) -> None:
        self._queue: multiprocessing.Queue = multiprocessing.Queue()
        self._process = multiprocessing.Process(
            target=_serve, args=(raw, runs, self._queue), daemon=True
        )

    def __enter__(self) -> str:
        self._process.start()
        return self._queue.get(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self._queue.put("stop")
        self._process.join(timeout=10)
