"""What pricing costs: the first turn with and without it, a long ledger, a store's save.

1. `first turn`: each sample is a fresh process that imports agent_nb, makes an Agent (which
   starts loading genai-prices' table on a thread), waits `--pause` seconds (a user typing
   the first prompt; 0: the worst case, the turn races the load), then times one turn on a
   loopback server. `priced` is agent_nb as it is; `unpriced` the same turn with the ledger
   entry (and so the table) left out. The two alternate, so a busy machine slows them alike.
   Target: priced - unpriced < 50 ms with a pause (a warm kernel).
2. `ledger`: a session of 1,000 turns of 2 requests each: its cost, its rows (a DataFrame),
   and its ledger written and read by to_dict()/from_dict().
3. `save`: SQLite saving one more turn of that session, with its ledger and without.

    .venv/bin/python benchmarks/cost.py [--runs 7] [--pause 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServerProcess

_FIRST_TURN = """
import json, sys, time
import agent_nb
from agent_nb import Agent
{unpriced}
agent = Agent(provider="openai-compatible", model="gpt-4o-mini", base_url={url!r})
session = agent.session()
time.sleep({pause})
started = time.perf_counter()
session.run("hi")
print(json.dumps({{"seconds": time.perf_counter() - started, "cost": str(session.cost)}}))
"""
_UNPRICED = "import agent_nb._spending as s; s.answered = lambda *a, **k: None"
_BODY = (
    '{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,'
    '"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}'
)


def first_turn(runs: int, pause: float) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"priced": [], "unpriced": []}
    with ServerProcess(_BODY, runs * 2 + 2) as url:
        for _ in range(runs):
            for name in times:
                code = _FIRST_TURN.format(
                    url=url, pause=pause, unpriced=_UNPRICED if name == "unpriced" else ""
                )
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                times[name].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return times


def long_session(turns: int = 1_000):
    from agent_nb import Agent, Message, _prices
    from agent_nb.events import Usage

    agent = Agent(provider="openai", model="gpt-4o-mini", api_key="k")
    messages, ledger = [], []
    for n in range(turns):
        messages += [Message.user(f"question {n} " * 20), Message.assistant(f"answer {n} " * 40)]
        for why in ("turn", "tool_round"):
            usage = Usage(input_tokens=1_000 + n, output_tokens=100, cached_tokens=512)
            ledger.append(_prices.priced(agent.provider, "gpt-4o-mini", None, usage, why=why))
    session = agent.session(messages=messages)
    session.add_spend(ledger)
    return agent, session


def timed(function, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()

    for pause in (args.pause, 0.0):
        times = first_turn(args.runs, pause)
        priced, unpriced = (statistics.median(times[k]) for k in ("priced", "unpriced"))
        extra = (priced - unpriced) * 1000
        label = f"first turn, {pause:g} s after Agent()"
        print(
            f"{label:<34} priced {priced * 1000:7.1f} ms   unpriced {unpriced * 1000:7.1f} ms"
            f"   extra {extra:6.1f} ms"
            + ("   (target < 50 ms)" if pause else "   (the turn races the table's load)")
        )

    from agent_nb import Session
    from agent_nb.stores import SQLiteStore

    agent, session = long_session()
    data = session.to_dict()
    print(
        f"{'ledger of 2,000 requests':<34} cost {timed(lambda: session.cost) * 1000:6.2f} ms"
        f"   rows {timed(session.spend) * 1000:6.1f} ms"
        f"   to_dict {timed(session.to_dict) * 1000:6.1f} ms"
        f"   from_dict {timed(lambda: Session.from_dict(data, agent)) * 1000:6.1f} ms"
    )

    from agent_nb import Message

    with tempfile.TemporaryDirectory() as folder:
        figures = {}
        for name, ledger in (("with its ledger", True), ("without", False)):
            store = SQLiteStore(Path(folder) / f"{name}.db")
            kept = agent.session(session_id="s", messages=session.messages, store=store)
            if ledger:
                kept.add_spend(session._ledger)
            kept.save()

            def one_more(kept=kept):
                kept.add_message(Message.user("one more"))

            figures[name] = timed(one_more, 15)
            store.close()
        print(
            f"{'SQLite: one more message saved':<34} with ledger "
            f"{figures['with its ledger'] * 1000:6.2f} ms   without "
            f"{figures['without'] * 1000:6.2f} ms   ratio "
            f"{figures['with its ledger'] / figures['without']:.2f}"
        )


if __name__ == "__main__":
    main()
