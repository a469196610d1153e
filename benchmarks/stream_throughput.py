"""Streaming overhead: a 20,000-chunk answer through agent_nb, a bare httpx loop, and the SDK.

The loopback server (its own process) sends an OpenAI-style stream of CHUNKS text deltas.
Each candidate reads it all and joins the text; runs are interleaved, and each ratio is the
median of the per-round ratios.
Target: agent_nb's `stream()` within 1.1x of the bare httpx + httpx-sse loop, and faster
than the official openai SDK.

    .venv/bin/python benchmarks/stream_throughput.py [--chunks 20000] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
from _server import ServerProcess
from httpx_sse import connect_sse


def stream_body(chunks: int) -> tuple[bytes, str]:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
    }
    words = [f"w{i} " for i in range(chunks)]
    lines = [{"role": "assistant", "content": ""}] + [{"content": w} for w in words]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in lines]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1},
        }
    )
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return body.encode(), "".join(words)


def bare_httpx(url: str) -> str:
    parts = []
    with (
        httpx.Client() as client,
        connect_sse(
            client,
            "POST",
            f"{url}/chat/completions",
            json={
                "model": "bench",
                "messages": [{"role": "user", "content": "go"}],
                "stream": True,
            },
        ) as source,
    ):
        for sse in source.iter_sse():
            if sse.data == "[DONE]":
                break
            for choice in json.loads(sse.data)["choices"]:
                content = choice["delta"].get("content")
                if content:
                    parts.append(content)
    return "".join(parts)


def official_sdk(url: str) -> str:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
    parts = []
    for chunk in client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": "go"}], stream=True
    ):
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
    client.close()
    return "".join(parts)


def agent_nb_stream(url: str) -> str:
    from agent_nb import Agent

    session = Agent(provider="openai", model="bench", base_url=url, api_key="bench").session()
    parts = [e.text for e in session.stream("go") if e.type == "text_delta"]
    return "".join(parts)


CANDIDATES = {
    "bare httpx + httpx-sse": bare_httpx,
    "agent_nb stream()": agent_nb_stream,
    "official openai SDK": official_sdk,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    body, expected = stream_body(args.chunks)
    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    server = ServerProcess(body, runs=(args.runs + 1) * len(CANDIDATES))
    with server as url:
        for name, candidate in CANDIDATES.items():  # warm up: imports, connections
            assert candidate(url) == expected, name
        for _ in range(args.runs):
            for name, candidate in CANDIDATES.items():
                started = time.perf_counter()
                text = candidate(url)
                times[name].append(time.perf_counter() - started)
                assert text == expected, name
    bare, ours, sdk = (times[name] for name in CANDIDATES)
    pinning = "server and client pinned to separate CPUs" if server.pinned else "not pinned"
    print(f"{args.chunks} chunks, {args.runs} interleaved rounds, {pinning}")
    print(f"{'candidate':<26}{'median s':>10}{'chunks/s':>12}{'vs bare':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = _paired(values, bare)
        print(f"{name:<26}{median:>10.3f}{args.chunks / median:>12,.0f}{ratio:>8.2f}x")
    print(
        f"agent_nb / bare = {_paired(ours, bare):.2f} (target <= 1.1); "
        f"agent_nb / SDK = {_paired(ours, sdk):.2f} (target < 1)"
    )


def _paired(values: list[float], base: list[float]) -> float:
    """The median of the per-round ratios: steadier than a ratio of medians on a busy machine."""
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


if __name__ == "__main__":
    main()
