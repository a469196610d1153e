"""A notebook's records restore within bounds: forks share, replay is linear, caps hold.

benchmarks/restore_bounds.py measures the time and memory of 10 MB hostile notebooks.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid
from typing import Any

import pytest

from agent_nb import Agent, _format, _records
from agent_nb.session import Session


def message(role: str, text: str = "m") -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": text}], "id": uuid.uuid4().hex}


def entry(op: str, session: str, messages: list | None = None, **extra: Any) -> dict[str, Any]:
    made = {"version": 1, "op": op, "session_id": session, "record_id": uuid.uuid4().hex}
    return {**made, **({"messages": messages} if messages is not None else {}), **extra}


def notebook(entries: list[dict[str, Any]]) -> dict[str, Any]:
    outputs = [
        {"output_type": "display_data", "data": {}, "metadata": {"agent_nb": e}} for e in entries
    ]
    cell = {"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs}
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def long_session(count: int) -> dict[str, Any]:
    return entry(
        "turn", "main", [message("user" if i % 2 == 0 else "assistant") for i in range(count)]
    )


def replay(entries: list[dict[str, Any]], **limits: int) -> tuple[_records.Replayed, list[str]]:
    lines: list[str] = []
    agent = Agent(provider="test", model="t")
    found = _records.records(notebook(entries))
    return _records.replay(found, agent, Session, lines.append, _records.Limits(**limits)), lines


def test_forks_share_their_base_and_past_the_sessions_cap_one_line_says_what_was_skipped():
    """3,000 fork records of a 500-message session: each fork used to copy the history and a
    set of its ids (hundreds of MB). The forks hold their base's very messages, replay stays
    small, and past the cap of 1,000 sessions the rest is skipped in one line."""
    entries = [long_session(500)] + [entry("fork", f"f{i}", fork_of="main") for i in range(3_000)]
    tracemalloc.start()
    try:
        replayed, lines = replay(entries)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(replayed.sessions) == 1_000 and replayed.skipped == 2_001
    base = replayed.sessions["main"].messages
    assert all(a is b for a, b in zip(replayed.sessions["f7"].messages, base, strict=True))
    assert peak < 60 * 2**20, f"{peak / 2**20:.0f} MB"
    assert lines == [
        "agent_nb: restored what fits in a restore (1,000 sessions); skipped 2,001 records past "
        "that; to restore them too, raise the cap: %session restore --sessions N"
    ]


@pytest.mark.parametrize(
    ("cap", "entries"),
    [
        ("records", [entry("turn", "main", [message("user")]) for _ in range(30)]),
        ("messages", [long_session(12) for _ in range(3)]),
    ],
)
def test_each_cap_restores_what_fits_and_says_so(cap, entries):
    replayed, lines = replay(entries, **{cap: 25 if cap == "records" else 30})
    restored = replayed.sessions["main"].messages
    assert len(restored) == (25 if cap == "records" else 24)
    assert replayed.skipped == (5 if cap == "records" else 1)
    assert len(lines) == 1 and f"--{cap} N" in lines[0]


def test_each_message_is_checked_once_not_once_per_turn(monkeypatch):
    """Replay is linear: 2,000 one-message turns used to re-check the whole history at each
    (2 million checks); now each message once."""
    checked = 0
    original = _format.check_messages

    def counting(messages: Any) -> Any:
        nonlocal checked
        result = original(messages)
        checked += len(result)
        return result

    monkeypatch.setattr(_format, "check_messages", counting)
    replayed, _ = replay([entry("turn", "main", [message("user")]) for _ in range(2_000)])
    assert len(replayed.sessions["main"].messages) == 2_000
    assert checked <= 2_000


def test_an_ordinary_notebook_of_thousands_of_turns_restores_whole():
    entries = []
    for number in range(5_000):
        entries.append(
            entry("turn", "main", [message("user", "q " * 20), message("assistant", "a " * 80)])
        )
        if number % 500 == 499:
            entries.append(entry("fork", f"main-{number}", fork_of="main"))
    replayed, lines = replay(entries)
    assert lines == [] and replayed.skipped == 0 and replayed.turns == 5_000
    assert len(replayed.sessions) == 11 and len(replayed.sessions["main"].messages) == 10_000


def test_a_flood_of_bad_records_is_told_in_twenty_lines_and_one_more():
    replayed, lines = replay([{"op": "turn", "version": 1}] * 500 + [long_session(2)])
    assert replayed.skipped == 500 and len(replayed.sessions["main"].messages) == 2
    assert len(lines) == 21 and lines[-1] == (
        "agent_nb: skipped 480 more records (or panel entries) as unusable"
    )


def test_session_restore_takes_raised_caps(tmp_path, capsys):
    """The line names the flag; `%session restore PATH --sessions N` restores it all."""
    from IPython.core.interactiveshell import InteractiveShell

    path = tmp_path / "forks.ipynb"
    entries = [long_session(4)] + [entry("fork", f"f{i}", fork_of="main") for i in range(1_200)]
    path.write_text(json.dumps(notebook(entries)))
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "agent_nb")
        shell.run_line_magic("session", f"restore {path}")
        first = capsys.readouterr()
        assert "(1,000 sessions)" in first.err and "--sessions N" in first.err
        assert "1 turn in 1 session" not in first.out and "(201 records skipped)" in first.out
        shell.run_line_magic("session", f"restore {path} --sessions 2000")
        again = capsys.readouterr()
        assert again.err == "" and "in 1201 sessions" in again.out
        with pytest.raises(Exception, match="--sessions: takes a whole number of at least 1"):
            shell.run_line_magic("session", f"restore {path} --sessions many")
    finally:
        shell.run_line_magic("unload_ext", "agent_nb")
        InteractiveShell.clear_instance()
