"""Execute a notebook in a fresh kernel and save the result: the headless demo.

    python examples/run_notebook.py notebooks/quickstart.ipynb quickstart.out.ipynb

Prints each %%chat prompt and the answer the notebook got, then where the executed notebook is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(source: str, target: str) -> None:
    notebook = nbformat.read(source, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(source).resolve().parent)}},
        # the kernel's "running over TCP without encryption" warning is about a kernel on
        # 127.0.0.1 that this process alone talks to: not news for a demo
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    ).execute()
    nbformat.write(notebook, target)
    for cell in notebook.cells:
        if cell.cell_type != "code" or not cell.source.startswith("%%chat"):
            continue
        prompt = cell.source.split("\n", 1)[1].strip()
        answer = next(
            (o["data"]["text/plain"] for o in cell.outputs if "agent_nb" in o.get("metadata", {})),
            "(no answer)",
        )
        print(f"> {prompt}\n{answer.strip()}\n")
    print(f"executed {len(notebook.cells)} cells; the notebook with its outputs: {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
