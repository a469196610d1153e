"""stream_json() against stream() on the same answer: a 1 MB JSON answer in 4-byte deltas.

The answer comes from an in-process provider (64 deltas a batch, as one network read brings
them), so what is timed is agent_nb's side alone: the partial parsing stream_json() adds on
top of stream(). Runs are interleaved; the ratio is the median of the per-round ratios.
Target: stream_json() within 1.5x of stream() (it was quadratic: a 146 kB answer took 125 s).

    .venv/bin/python benchmarks/stream_json_throughput.py [--size 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from pydantic import BaseModel

from agent_nb import Agent, Message
from agent_nb.events import Completion, TextDelta, Usage
from agent_nb.providers import Provider


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    customer: str
    items: list[Item]


class Deltas(Provider):
    """Streams `text` in pieces of `size` characters, `per_read` pieces a batch."""

    def __init__(self, text: str, size: int = 4, per_read: int = 64) -> None:
        self.text, self.size, self.per_read = text, size, per_read

    async def complete(self, request):
        pieces = [TextDelta(self.text[i : i + self.size]) for i in range(0, len(self.text), 4)]
        for start in range(0, len(pieces), self.per_read):
            yield pieces[start : start + self.per_read]
        yield [Completion(Message.assistant(self.text), Usage(1, 1), "stop")]


def answer_of(size: int) -> str:
    items, n = [], 0
    while len(json.dumps({"customer": "Ann", "items": items})) < size:
        items.extend({"name": f"item number {n + k}", "qty": n + k} for k in range(500))
        n += 500
    return json.dumps({"customer": "Ann", "items": items})


def plain(text: str) -> int:
    session = Agent(provider=Deltas(text), model="m").session()
    return sum(len(e.text) for e in session.stream("go") if e.type == "text_delta")


def structured(text: str) -> int:
    session = Agent(provider=Deltas(text), model="m").session()
    stream = session.stream_json("go", Order)
    values = list(stream)
    assert values[-1] == stream.response.output
    return len(values[-1].items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    text = answer_of(args.size)
    items = len(json.loads(text)["items"])
    times: dict[str, list[float]] = {"stream()": [], "stream_json()": []}
    assert plain(text) == len(text) and structured(text) == items  # warm up
    for _ in range(args.runs):
        for name, candidate in (("stream()", plain), ("stream_json()", structured)):
            started = time.perf_counter()
            candidate(text)
            times[name].append(time.perf_counter() - started)
    print(f"{len(text):,} characters in {len(text) // 4:,} deltas of 4, {args.runs} rounds")
    for name, values in times.items():
        print(f"{name:<16}{statistics.median(values):>8.3f} s")
    ratio = statistics.median(
        j / s for j, s in zip(times["stream_json()"], times["stream()"], strict=True)
    )
    print(f"stream_json() / stream() = {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
