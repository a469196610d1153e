"""A round of three tool calls that each take SECONDS: concurrent (the default) vs one at a time.

The model (the offline test provider) asks for three calls in one round; each tool sleeps
SECONDS, async on the event loop or sync in a worker thread. Candidates, side by side in one
run: agent_nb's default loop, and the same with `max_concurrency=1` (how rounds ran before:
one call after another). Target: the round takes about SECONDS, not 3 x SECONDS.

    .venv/bin/python benchmarks/tool_concurrency.py [--seconds 1.0] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from agent_nb import Agent, Message, tool
from agent_nb.messages import ToolCallPart
from agent_nb.providers.testing import TestProvider


def tools(seconds: float):
    @tool
    async def fetch_page(url: str) -> str:
        """Fetch a page (async)."""
        await asyncio.sleep(seconds)
        return f"<html>{url}</html>"

    @tool
    def query_db(sql: str) -> str:
        """Run a query (sync: a worker thread)."""
        time.sleep(seconds)
        return "3 rows"

    @tool
    async def call_api(path: str) -> str:
        """Call an API (async)."""
        await asyncio.sleep(seconds)
        return '{"ok": true}'

    return [fetch_page, query_db, call_api]


def one_turn(seconds: float, max_concurrency: int) -> float:
    round_ = Message(
        role="assistant",
        parts=(
            ToolCallPart(id="a", name="fetch_page", arguments={"url": "https://example.com"}),
            ToolCallPart(id="b", name="query_db", arguments={"sql": "select 1"}),
            ToolCallPart(id="c", name="call_api", arguments={"path": "/status"}),
        ),
    )
    agent = Agent(
        provider=TestProvider([round_, "All three are back."]),
        model="test",
        tools=tools(seconds),
        max_concurrency=max_concurrency,
    )
    started = time.perf_counter()
    agent.session().run("Check the page, the database and the API")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    candidates = {"agent_nb (concurrent)": 8, "one call at a time": 1}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.runs):  # interleaved
        for name, cap in candidates.items():
            times[name].append(one_turn(args.seconds, cap))
    print(f"3 tool calls of {args.seconds:g} s each, {args.runs} interleaved runs (median)")
    print(f"{'candidate':26} {'turn s':>8} {'x one call':>11}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:26} {value:8.2f} {value / args.seconds:10.2f}x")
    ratio = medians["one call at a time"] / medians["agent_nb (concurrent)"]
    print(
        f"-> one at a time / concurrent = {ratio:.2f}x "
        f"(target: about 3x, the round about {args.seconds:g} s)"
    )


if __name__ == "__main__":
    main()
