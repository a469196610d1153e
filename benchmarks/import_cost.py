"""What `%load_ext agent_nb` costs a kernel, beside importing what agent_nb builds on.

Each sample is a fresh Python process that first loads what a Jupyter kernel has loaded
before its first cell (ipykernel: asyncio, zmq, tornado, comm; an IPython shell), then times
one thing:
- `deps`: `import httpx, httpx_sse, pydantic` (the libraries a first turn needs anyway);
- `load_ext`: `%load_ext agent_nb` (the package, its magics, and what they import);
- `import`: `import agent_nb` alone;
- `first_chat`: `%load_ext agent_nb`, then a first `%%chat` cell answered by the offline
  provider (not a target: what the first turn costs once, with everything it loads).
The candidates alternate, so a busy machine slows them alike. Target: load_ext / deps <= 1.5.

    .venv/bin/python benchmarks/import_cost.py [--runs 7] [--modules]

`--modules` also lists the agent_nb modules and the heavy libraries `%load_ext` loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

# What a Jupyter kernel has loaded before its first cell runs: ipykernel (asyncio, zmq,
# tornado, comm, traitlets) and an IPython shell.
_SETUP = (
    "import ipykernel.ipkernel\n"
    "from IPython.core.interactiveshell import InteractiveShell\n"
    "shell = InteractiveShell.instance()\n"
)
_TIMED = {
    "deps": "import httpx, httpx_sse, pydantic",
    "load_ext": "shell.run_line_magic('load_ext', 'agent_nb')",
    "import": "import agent_nb",
    # not a target: what the first %%chat cell adds (the core, pydantic, httpx, a turn)
    "first_chat": (
        "shell.run_line_magic('load_ext', 'agent_nb')\nshell.run_cell_magic('chat', '', 'hi')"
    ),
}
_REPORT = """
import json, sys, time
started = time.perf_counter()
{timed}
seconds = time.perf_counter() - started
ours = sorted(m for m in sys.modules if m.startswith('agent_nb'))
heavy = sorted(m for m in ('nbformat', 'ipywidgets', 'anywidget', 'markdown_it', 'nh3',
    'pygments', 'jsonschema', 'httpx', 'pydantic', 'psycopg', 'redis') if m in sys.modules)
print(json.dumps({{"seconds": seconds, "ours": ours, "heavy": heavy}}))
"""


def sample(name: str) -> dict:
    code = _SETUP + _REPORT.format(timed=_TIMED[name])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--modules", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in _TIMED}
    last: dict[str, dict] = {}
    for _ in range(args.runs):
        for name in _TIMED:
            last[name] = sample(name)
            times[name].append(last[name]["seconds"])
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v * 1000:.0f}" for v in sorted(values))
        print(f"{name:9} median {median[name] * 1000:6.1f} ms  (runs, ms: {shown})")
    print(f"load_ext / deps = {median['load_ext'] / median['deps']:.2f}  (target <= 1.5)")
    print(f"import / deps   = {median['import'] / median['deps']:.2f}")
    print(f"first_chat / deps = {median['first_chat'] / median['deps']:.2f}  (no target)")
    if args.modules:
        print(f"%load_ext loaded {len(last['load_ext']['ours'])} agent_nb modules:")
        print("  " + " ".join(last["load_ext"]["ours"]))
        print("and these libraries: " + " ".join(last["load_ext"]["heavy"]))


if __name__ == "__main__":
    main()
