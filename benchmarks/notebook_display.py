"""The cost of showing an answer live: a long answer through %%chat, beside a naive display.

One real ipykernel; the loopback server (its own process) streams the same Markdown answer of
TOKENS tokens to two cells in turn:

  %%chat             agent_nb's live display
  naive              a loop over session.stream() that re-renders the whole answer on every
                     token: handle.update(Markdown(text)), the usual notebook pattern

For each: display messages and their rate while streaming, the bytes of all the cell's iopub
messages as JSON (what Jupyter relays to the browser) over the final answer's size, kernel CPU
seconds (from /proc) and wall seconds.
Target: at most ~20 updates a second, and bytes within 10x of the final answer.

    .venv/bin/python benchmarks/notebook_display.py [--tokens 50000] [--pace TOKENS_PER_S]
                                                    [--no-naive]

--pace sends the tokens at a model's speed instead of as fast as the loopback allows (the
naive display then needs as long as the stream: --no-naive skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from _server import ServerProcess
from jupyter_client.manager import start_new_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_openai import Reply

SETUP_CELL = """\
%load_ext agent_nb
%agent provider=openai model=bench base_url={url} api_key=bench
%session new warmup
"""

CHAT_CELL = "%%chat\nWrite at length"

NAIVE_CELL = """\
from IPython.display import Markdown, display
from agent_nb import Agent
_session = Agent(provider="openai", model="bench", base_url={url!r}, api_key="bench").session()
_handle, _text = display(Markdown(""), display_id=True), ""
for _event in _session.stream("Write at length"):
    if _event.type == "text_delta":
        _text += _event.text
        _handle.update(Markdown(_text))
"""


def answer(tokens: int, seed: int = 1) -> str:
    """Markdown of `tokens` words: paragraphs, lists and code blocks, as a model writes."""
    rng = random.Random(seed)
    vocabulary = ("the", "model", "data", "notebook", "answer", "stream", "value", "of", "a")
    blocks, count = [], 0
    while count < tokens:
        kind = rng.random()
        if kind < 0.1:
            lines = [f"def step_{count}(x):", "    return x * 2", "", "print(step(3))"]
            block = "```python\n" + "\n".join(lines) + "\n```"
        elif kind < 0.25:
            block = "\n".join(f"- {' '.join(rng.choices(vocabulary, k=8))}" for _ in range(4))
        else:
            block = " ".join(rng.choices(vocabulary, k=rng.randint(30, 120)))
        blocks.append(block)
        count += len(block.split(" ")) - 1  # "\n\n" joins two words into one token
    return " ".join("\n\n".join(blocks).split(" ")[:tokens])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(client, code: str, pid: int, timeout: float = 3600) -> dict[str, float]:
    """Run `code`; count its display messages, their bytes as JSON, kernel CPU, wall time."""
    cpu, started = cpu_seconds(pid), time.perf_counter()
    msg_id = client.execute(code)
    displays = size = 0
    first = last = None
    deadline = time.monotonic() + timeout
    while True:
        msg = client.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        size += len(json.dumps(msg, default=str))
        kind = msg["msg_type"]
        if kind == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if kind in ("display_data", "update_display_data"):
            displays += 1
            first = first or time.perf_counter()
            last = time.perf_counter()
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    streaming = (last - first) if first and last else 0.0
    return {
        "displays": displays,
        "per_s": (displays - 1) / streaming if streaming else 0.0,
        "bytes": size,
        "cpu": cpu_seconds(pid) - cpu,
        "wall": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--pace", type=float, default=0.0, help="tokens a second (0: no pause)")
    parser.add_argument("--no-naive", action="store_true", help="measure %%%%chat alone")
    args = parser.parse_args()
    text = answer(args.tokens)
    reply = Reply(text=text, chunk_delay=1 / args.pace if args.pace else 0.0)
    results = {}
    with ServerProcess(reply, runs=3) as url:
        manager, client = start_new_kernel(kernel_name="python3")
        try:
            pid = manager.provisioner.process.pid
            measure(client, SETUP_CELL.format(url=url), pid)
            results["%%chat (agent_nb)"] = measure(client, CHAT_CELL, pid)
            if not args.no_naive:
                results["naive re-render"] = measure(client, NAIVE_CELL.format(url=url), pid)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    final = len(text.encode())
    pace = f"{args.pace:,.0f} tokens/s" if args.pace else "as fast as the loopback allows"
    print(f"{args.tokens:,} tokens ({final:,} bytes of Markdown), sent {pace}")
    print(
        f"{'candidate':<20}{'displays':>9}{'per s':>8}{'MB sent':>9}{'x answer':>10}"
        f"{'kernel CPU s':>14}{'wall s':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<20}{r['displays']:>9,}{r['per_s']:>8.1f}{r['bytes'] / 1e6:>9.1f}"
            f"{r['bytes'] / final:>10.1f}{r['cpu']:>14.2f}{r['wall']:>8.1f}"
        )
    ours = results["%%chat (agent_nb)"]
    said = (
        f"agent_nb: {ours['per_s']:.1f} updates/s (target <= ~20), "
        f"bytes {ours['bytes'] / final:.1f}x the answer (target <= 10x)"
    )
    if naive := results.get("naive re-render"):
        said += (
            f"; naive / agent_nb: bytes {naive['bytes'] / ours['bytes']:.0f}x, "
            f"kernel CPU {naive['cpu'] / ours['cpu']:.1f}x"
        )
    print(said)


if __name__ == "__main__":
    main()
