"""What counting the context costs a turn: a session of 1,000 messages, counted before each
request, side by side with the same turn with the counting left out.

`counted` is agent_nb as it is (the request counted against the window, the policy checked,
the report kept); `uncounted` the same turn with `_context.fit` and `_context.answered`
replaced by pass-throughs. The two alternate, on the offline test provider (no network, so the
difference is the counting). Two histories: one as a session keeps it after its turns (every
message's count in its metadata, from the provider's reports) and one restored from data that
has none (each message estimated once, then kept by id). Target: counted - uncounted < 5 ms.

    .venv/bin/python benchmarks/context.py [--runs 30] [--messages 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from agent_nb import Agent, Message, _context, _counting

_FIT, _ANSWERED = _context.fit, _context.answered


async def _as_sent(state, settings, request):
    return request


def history(size: int, counted: bool) -> list[Message]:
    messages = []
    for n in range(size // 2):
        text = f"Question {n}: " + "what does this column of the data frame mean? " * 6
        answer = f"Answer {n}: " + "it holds the measured values, one a row, in metres. " * 8
        user, assistant = Message.user(text), Message.assistant(answer)
        if counted:
            user = _counting.counted(user, len(text) // 4, estimated=False)
            assistant = _counting.counted(assistant, len(answer) // 4, estimated=False)
        messages += [user, assistant]
    return messages


def turn_seconds(agent: Agent, messages: list[Message], counting: bool) -> float:
    _context.fit = _FIT if counting else _as_sent
    _context.answered = _ANSWERED if counting else (lambda *args: None)
    session = agent.session(messages=messages)
    session.run("warm")  # the first turn estimates a restored history once
    started = time.perf_counter()
    session.run("and this one?")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    agent = Agent(provider="test", context_window=1_000_000, max_tokens=100)
    print(f"one turn on a session of {args.messages:,} messages, median of {args.runs} runs")
    for label, counted in (("counts in metadata", True), ("restored, no counts", False)):
        messages = history(args.messages, counted)
        samples: dict[str, list[float]] = {"counted": [], "uncounted": []}
        for _ in range(args.runs):
            for name in samples:
                samples[name].append(turn_seconds(agent, messages, name == "counted"))
        with_ = statistics.median(samples["counted"]) * 1000
        without = statistics.median(samples["uncounted"]) * 1000
        print(
            f"  {label:<20} counted {with_:7.2f} ms   uncounted {without:7.2f} ms   "
            f"counting adds {with_ - without:+.2f} ms ({with_ / without:.2f}x)"
        )
    _context.fit, _context.answered = _FIT, _ANSWERED


if __name__ == "__main__":
    main()
