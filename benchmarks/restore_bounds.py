"""What a hostile notebook's records cost a restore: time and memory, shape by shape.

Each shape is a notebook of about 10 MB of records a stranger could write, restored by
`%session restore PATH` in a fresh Python process with an IPython shell, after
`%load_ext agent_nb` (which loads the records code). The figures: seconds for the restore,
and peak memory (max RSS) over the process's RSS just before it. Targets: < 2 s (on an idle
machine: the CPU seconds are printed too, which a busy one inflates less) and < 200 MB over
that baseline, for every shape.

    .venv/bin/python benchmarks/restore_bounds.py [--mb 10] [--shape forks]

Shapes:
- forks: one long session, then fork records of it, each a new session (each fork used to
  copy the whole history and keep a set of its ids: 718 MB for a 1.4 MB notebook);
- refork: the same fork made again and again, each keeping the earlier one aside;
- reruns: a long session, then reruns of its last turn, each keeping the session aside;
- turns: one-message turns into one session (each used to re-check the whole history);
- sessions: one turn in each of as many sessions as fit;
- panel: one chat panel whose log holds the turns;
- ordinary: an ordinary notebook of 5,000 turns of two messages, a fork every 250 turns
  (restored whole: nothing skipped).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

TARGET_SECONDS = 2.0
TARGET_MB = 200.0


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": text}], "metadata": {}, "id": _id()}


def _id() -> str:
    return uuid.uuid4().hex


def _record(op: str, session: str, messages: list[Any] | None = None, **extra: Any) -> dict:
    entry = {"version": 1, "op": op, "session_id": session, "system": None, "record_id": _id()}
    if messages is not None:
        entry["messages"] = messages
    return {**entry, **extra}


def _cell(entries: list[dict]) -> dict:
    outputs = [
        {"output_type": "display_data", "data": {"text/plain": ""}, "metadata": {"agent_nb": e}}
        for e in entries
    ]
    return {"cell_type": "code", "metadata": {}, "source": "", "outputs": outputs}


def _long(count: int) -> tuple[list[dict], list[dict]]:
    """A turn record of `count` messages into session `main` (and its messages)."""
    messages = [_message("user" if i % 2 == 0 else "assistant", "m") for i in range(count)]
    return [_record("turn", "main", messages)], messages


def shape(name: str, size: int) -> list[dict]:
    """About `size` bytes of records of shape `name`."""
    entries: list[dict] = []
    used = 0

    def add(entry: dict) -> bool:
        nonlocal used
        entries.append(entry)
        used += len(json.dumps(entry)) + 120  # and its output around it
        return used < size

    if name == "forks":
        for entry in _long(4_000)[0]:
            add(entry)
        number = 0
        while add(_record("fork", f"f{number}", fork_of="main")):
            number += 1
    elif name == "refork":
        for entry in _long(4_000)[0]:
            add(entry)
        number = 0
        while add(_record("fork", "twin", fork_of="main", kept_as=f"twin~{number}")):
            number += 1
    elif name == "reruns":
        head, messages = _long(4_000)
        for entry in head:
            add(entry)
        last, number = messages[-1]["id"], 0
        while True:  # each cuts off the last turn, keeping the whole session aside
            new = [_message("user", "again")]
            if not add(_record("rerun", "main", new, replaces=last, kept_as=f"main~{number}")):
                break
            last, number = new[0]["id"], number + 1
    elif name == "turns":
        while add(_record("turn", "main", [_message("user", "x")])):
            pass
    elif name == "sessions":
        number = 0
        while add(_record("turn", f"s{number}", [_message("user", "x")])):
            number += 1
    elif name == "panel":
        log: list[dict] = []
        while add(_record("turn", "main", [_message("user", "x")])):
            log.append(entries.pop())
        entries.append(_record("panel", "main", log=log))
    elif name == "ordinary":
        for number in range(5_000):
            text = f"question {number} " * 5
            turn = [_message("user", text), _message("assistant", "an answer " * 20)]
            add(_record("turn", "main", turn))
            if number % 250 == 249:
                add(_record("fork", f"main-{number}", fork_of="main"))
    else:
        raise SystemExit(f"no shape {name!r}")
    return entries


def notebook(entries: list[dict]) -> dict:
    cells = [_cell(entries[i : i + 100]) for i in range(0, len(entries), 100)]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


_RUN = """
import json, resource, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
import agent_nb
shell.run_line_magic('load_ext', 'agent_nb')
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
base = rss()
started, cpu = time.perf_counter(), time.process_time()
import io, contextlib
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
    shell.run_line_magic('session', 'restore ' + sys.argv[1])
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lines = (out.getvalue() + err.getvalue()).strip().splitlines()
print(json.dumps({"seconds": seconds, "cpu": cpu, "mb": peak - base, "last": lines[-2:]}))
"""


def measure(path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


SHAPES = ("forks", "refork", "reruns", "turns", "sessions", "panel", "ordinary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of each notebook")
    parser.add_argument("--shape", choices=SHAPES, action="append")
    args = parser.parse_args()
    print(f"target: < {TARGET_SECONDS} s and < {TARGET_MB:.0f} MB over the baseline each")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.shape or SHAPES:
            path = Path(folder) / f"{name}.ipynb"
            path.write_text(json.dumps(notebook(shape(name, int(args.mb * 2**20)))))
            size = path.stat().st_size / 2**20
            result = measure(path)
            ok = result["seconds"] < TARGET_SECONDS and result["mb"] < TARGET_MB
            print(
                f"{name:9} {size:5.1f} MB file: {result['seconds']:5.2f} s "
                f"({result['cpu']:4.2f} s CPU), "
                f"{result['mb']:7.1f} MB over baseline  {'ok' if ok else 'OVER TARGET'}"
            )
            for line in result["last"]:
                print(f"          {line[:150]}")


if __name__ == "__main__":
    main()
