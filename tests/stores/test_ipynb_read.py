"""Reading a notebook's records (%load_ext's restore, a panel's earlier log): plain JSON,
without importing nbformat, and the part-by-part reading of a damaged file kept."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from agent_nb import _records
from agent_nb.agent import Agent
from agent_nb.messages import Message
from agent_nb.session import Session
from agent_nb.stores import _ipynb


def saved(tmp_path, *sources: str):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", {"text/plain": "x"}, metadata={"agent_nb": {}})
    ]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    return path


def deepest_python_stack(call, expected: type[Exception]) -> int:
    """How many Python frames deep `call` went (it raises `expected`)."""
    depth = deepest = 0

    def profile(frame, event, arg):
        nonlocal depth, deepest
        if event == "call":
            depth += 1
            deepest = max(deepest, depth)
        elif event == "return":
            depth -= 1

    sys.setprofile(profile)
    try:
        call()
    except expected:
        pass
    finally:
        sys.setprofile(None)
    return deepest


def test_a_notebook_is_read_as_plain_json_without_nbformat(tmp_path):
    path = saved(tmp_path, "a = 1", "%%chat\nhi")
    code = (
        "import sys\nfrom agent_nb.stores import _ipynb\n"
        f"nb = _ipynb.read_for_records(open({str(path)!r}).read())\n"
        "print(len(nb.node['cells']), nb.node['cells'][1]['outputs'][0]['metadata'],"
        " 'nbformat' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["2", "{'agent_nb':", "{}}", "False"]


def test_a_damaged_cell_is_still_read_part_by_part(tmp_path):
    path = saved(tmp_path, "a = 1", "%%chat\nhi", "b = 2")
    text = path.read_text().replace('"a = 1"', '"a = 1')  # the first cell's: broken JSON
    assert text != path.read_text()
    notebook = _ipynb.read_for_records(text)
    assert list(notebook.damaged_cells) == [0]
    assert notebook.node["cells"][1]["outputs"][0]["metadata"] == {"agent_nb": {}}


@pytest.mark.parametrize(
    "text", ["[]", '{"cells": 3}', '{"nbformat": 4, "cells": [], "metadata": []}', "[" * 100_000]
)
def test_what_is_no_notebook_is_refused_as_before(text):
    with pytest.raises(_ipynb.UnreadableNotebook, match="not|nested"):
        _ipynb.read_for_records(text)


def test_its_records_are_those_nbformat_reads(tmp_path):
    path = saved(tmp_path, "x", "%%chat\nhello\nthere")  # a source of several lines
    plain = _records.records(_ipynb.read_for_records(path.read_text()).node)
    assert plain == _records.records(nbformat.read(str(path), 4))
    assert plain[0].source == "%%chat\nhello\nthere"


@pytest.mark.parametrize("source", [["%%chat\n", 1], ["%%chat\n", None], 7])
def test_a_cell_source_of_the_wrong_type_does_not_stop_the_restore(tmp_path, source):
    path = saved(tmp_path, "x", "%%chat\nhi")
    nb = nbformat.read(str(path), 4)
    session = Session(Agent(provider="test"), "main")
    nb.cells[1].outputs[0].metadata = _records.record("turn", session, [Message.user("hi")])
    node = json.loads(nbformat.writes(nb))
    node["cells"][1]["source"] = source  # nbformat's read refused the whole file for this
    found = _records.records(_ipynb.read_for_records(json.dumps(node)).node)
    assert [f.source for f in found] == [""]
    replayed = _records.replay(found, Agent(provider="test"), Session)
    assert [m.text for m in replayed.sessions["main"].messages] == ["hi"]


def test_a_part_nested_deeper_than_read_takes_is_read_as_read_reads_it(tmp_path):
    path = saved(tmp_path, "x", "%%chat\nhi")
    node = json.loads(path.read_text())  # a panel's log entry 480 deep: plain JSON reads it,
    node["cells"][1]["outputs"][0]["metadata"]["agent_nb"] = json.loads("[" * 480 + "]" * 480)
    text = json.dumps(node)  # and publishing the log again raised RecursionError in its cell
    for read in (lambda: _ipynb.read(text, 4), lambda: _ipynb.read_for_records(text)):
        # never near the recursion limit, where any finalizer a garbage collection runs fails
        assert deepest_python_stack(read, _ipynb.UnreadableNotebook) < 100
        with pytest.raises(_ipynb.UnreadableNotebook, match="nested too deeply"):
            read()
    node["cells"][1]["outputs"][0]["metadata"]["agent_nb"] = json.loads("[" * 190 + "]" * 190)
    assert "nbformat" not in type(_ipynb.read_for_records(json.dumps(node)).node).__module__
