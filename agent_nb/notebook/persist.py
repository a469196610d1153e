"""Conversations saved in the notebook itself: a record per output, replayed in cell order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..agent import Agent
from ..errors import InvalidSessionData
from ..messages import Message
from ..session import FORMAT_VERSION, Session

#: The key of agent_nb's records in output metadata.
KEY = "agent_nb"


def record(
    op: str, session: Session, messages: list[Message] | None = None, **extra: Any
) -> dict[str, Any]:
    """Output metadata for one change to a session: a turn, a fork, a clear, an undo, a load."""
    entry: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "op": op,
        "session_id": session.session_id,
        "system": session.system,
    }
    if messages is not None:
        entry["messages"] = [m.to_dict() for m in messages]
    entry.update(extra)
    return {KEY: entry}


def notebook_path(user_ns: dict[str, Any]) -> Path | None:
    """The notebook this kernel runs, as the front end tells it (JupyterLab, VS Code)."""
    for candidate in (
        user_ns.get("__session__"),
        user_ns.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate)
    return None


def records(notebook: Any) -> list[dict[str, Any]]:
    """agent_nb's records in a notebook, in cell order."""
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            entry = (output.get("metadata") or {}).get(KEY)
            if isinstance(entry, dict) and "op" in entry:
                found.append(entry)
    return found


def replay(
    entries: list[dict[str, Any]], agent: Agent
) -> tuple[dict[str, Session], str | None, int]:
    """Sessions rebuilt from records: (sessions by id, the last one used, turns restored)."""
    sessions: dict[str, Session] = {}
    current = None
    turns = 0
    for index, entry in enumerate(entries):
        if entry.get("version", 0) > FORMAT_VERSION:
            raise InvalidSessionData(
                f"record {index} in the notebook is format version {entry['version']}, newer than "
                "this agent_nb reads; upgrade agent_nb (pip install -U agent-nb)"
            )
        session_id = entry.get("session_id")
        if not isinstance(session_id, str):
            raise InvalidSessionData(f"record {index} in the notebook has no session_id")
        base = entry.get("fork_of")
        if session_id not in sessions:
            if base in sessions:
                sessions[session_id] = sessions[base].fork(session_id)
            else:
                # not agent.session(): a store of the agent's must not resume or record this
                sessions[session_id] = Session(agent, session_id, entry.get("system"))
        session = sessions[session_id]
        op = entry["op"]
        if op in ("turn", "load"):
            messages = []
            for raw in entry.get("messages", []):
                try:
                    messages.append(Message.model_validate(raw))
                except ValueError as exc:
                    raise InvalidSessionData(
                        f"record {index} (session {session_id!r}) holds a malformed message: {exc}"
                    ) from None
            if op == "load":  # a session loaded from a store replaces what was there
                session._set_history(messages)
            else:
                for message in messages:
                    session.add_message(message)
                turns += 1
        elif op == "clear":
            session.clear()
        elif op == "undo":
            drop_last_turn(session)
        elif op == "system":
            session.system = entry.get("system")
        current = session_id
    return sessions, current, turns


def drop_last_turn(session: Session) -> list[Message]:
    """Remove the last turn (from the last user message on); returns what was removed."""
    messages = session.messages
    starts = [i for i, m in enumerate(messages) if m.role == "user"]
    if not starts:
        return []
    cut = starts[-1]
    session._set_history(messages[:cut])
    return messages[cut:]
