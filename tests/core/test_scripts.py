"""scripts/_env.sh: the project is installed into .venv once, and again only when it changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A stand-in for .venv/bin/python: logs each pip run, does nothing else.
FAKE_PYTHON = '#!/bin/sh\necho "$*" >> "$(dirname "$0")/../calls"\n'


def make_venv(clone: Path, extras: str = "run") -> str:
    done = subprocess.run(
        ["bash", "-c", f"source scripts/_env.sh && make_venv {extras}"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr


def test_make_venv_installs_only_when_the_project_changed(tmp_path):
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "_env.sh", clone / "scripts")
    shutil.copy(ROOT / "pyproject.toml", clone)
    python = clone / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (clone / ".venv" / "pyvenv.cfg").write_text("version = 3.11\n")
    calls = clone / ".venv" / "calls"

    said = make_venv(clone)
    assert "installing agent_nb[run]" in said and "installed in" in said
    assert make_venv(clone) == ""  # nothing changed: no pip, nothing said
    assert len(calls.read_text().splitlines()) == 1
    make_venv(clone, "lab")  # other extras: installed
    with (clone / "pyproject.toml").open("a") as file:
        file.write("\n# changed\n")
    make_venv(clone)  # a changed project: installed again
    assert len(calls.read_text().splitlines()) == 3
