"""scripts/_env.sh: the project is installed into .venv once, and again only when it changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A stand-in for .venv/bin/python: logs each pip run, does nothing else.
FAKE_PYTHON = '#!/bin/sh\necho "$*" >> "$(dirname "$0")/../calls"\n'


def a_clone(tmp_path: Path, python: str) -> Path:
    """A folder with the scripts and pyproject.toml, its .venv's python the script `python`."""
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "_env.sh", clone / "scripts")
    shutil.copy(ROOT / "pyproject.toml", clone)
    executable = clone / ".venv" / "bin" / "python"
    executable.parent.mkdir(parents=True)
    executable.write_text(python)
    executable.chmod(0o755)
    return clone


def sourced(clone: Path, steps: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`steps` run by bash in `clone` after scripts/_env.sh is sourced."""
    return subprocess.run(
        ["bash", "-c", f"source scripts/_env.sh && {steps}"],
        cwd=clone,
        capture_output=True,
        text=True,
        **options,
    )


def make_venv(clone: Path, extras: str = "run") -> str:
    return sourced(clone, f"make_venv {extras}", check=True).stderr


@pytest.mark.slow
def test_make_venv_installs_only_when_the_project_changed(tmp_path):
    clone = a_clone(tmp_path, FAKE_PYTHON)
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


#: A stand-in for .venv/bin/python for the llama.cpp steps: `-c` runs real Python; pip's
#: download writes a tiny sdist (with the vendored llama.cpp's server folder), its wheel
#: writes a wheel, its install fails until that wheel is kept; each pip run is logged.
LLAMA_PYTHON = """#!/bin/bash
if [ "$1" = -c ]; then exec python3 "$@"; fi
echo "$*" >> "$(dirname "$0")/../calls"
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in -d|-w) out="${args[$((i + 1))]}";; esac
done
case "$3" in
  download)
    top="$out/tree/llama_cpp_python-$VERSION"
    mkdir -p "$top/vendor/llama.cpp/tools/server"
    tar -czf "$out/llama_cpp_python-$VERSION.tar.gz" -C "$out/tree" "llama_cpp_python-$VERSION"
    rm -rf "$out/tree";;
  wheel) touch "$out/llama_cpp_python-$VERSION-cp311-cp311-linux_x86_64.whl";;
  install) ls "$WHEELS"/*.whl >/dev/null 2>&1;;
esac
"""

#: A stand-in for cmake: the build makes build/bin/llama-server.
FAKE_CMAKE = """#!/bin/bash
if [ "$1" = --build ]; then mkdir -p "$2/bin" && echo built > "$2/bin/llama-server"; fi
"""


def test_the_llama_sources_are_downloaded_once_for_both_builds(tmp_path):
    if shutil.which("dpkg-query") is None:
        pytest.skip("the steps check Debian packages with dpkg-query")
    for package in ("g++", "cmake", "ninja-build"):
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
            capture_output=True,
            text=True,
        )
        if status.stdout != "installed":
            pytest.skip(f"{package} is not installed: the step would apt-get it")
    clone = a_clone(tmp_path, LLAMA_PYTHON)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "cmake").write_text(FAKE_CMAKE)
    (tools / "cmake").chmod(0o755)
    wheels = tmp_path / "wheels"
    version = sourced(clone, "_llama_version", check=True).stdout.strip()
    env = {
        "PATH": f"{tools}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AGENT_NB_WHEELS": str(wheels),
        "WHEELS": str(wheels),
        "VERSION": version,
    }
    done = sourced(clone, "install_llama_cpp && install_llama_server", env=env)
    assert done.returncode == 0, done.stderr
    pips = (clone / ".venv" / "calls").read_text().splitlines()
    downloads = [call for call in pips if " download " in call]
    assert len(downloads) == 1, pips  # one download serves the wheel and the server
    assert "--no-binary llama-cpp-python" in downloads[0]  # its build needs come as wheels
    built = next(call for call in pips if " wheel " in call)
    assert built.endswith(f"sources/llama_cpp_python-{version}.tar.gz"), built
    assert (wheels / f"llama-server-{version}").read_text() == "built\n"
    assert not list((wheels / "sources").iterdir())  # both built: the sources are let go
