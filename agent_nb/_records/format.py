"""The record format: what %%chat, %session and a chat panel write in an output's metadata
(one record per change to a session), and how a record found in a notebook is checked."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

import pydantic

from .._format import FORMAT_VERSION, check_session_id, describe
from ..messages import Message, _short
from .read import KEY, Found

#: What a record can say happened: `retry` replaces the last turn with the record's messages;
#: `resume` replaces the round that waited for approval with them; `rerun` replaces the turn
#: that starts with message `replaces` (a cell run again), keeping what followed it as the
#: session `kept_as`; `use` makes its session the current one; `delete` removes its session,
#: `current` being the one current after it; an `undo` with `replaces` drops that turn (if it
#: is there); `panel` holds a chat panel's `log` of records; `rename` gives session
#: `renamed_from` its new id, `session_id`; `spend` only adds to its session's ledger (a
#: turn that failed). Any record may carry `spend`: entries of its session's ledger no
#: earlier record carries (see Session.add_spend). A record of a session carries its
#: `allowed_tools` (approved "always") as they were then; none: the key is left out. A
#: restore tells them but does not honour them (rebuild.allowed_line): no notebook approves.
OPS = (
    *("turn", "retry", "resume", "load", "clear", "undo", "system", "fork", "rerun", "use"),
    *("delete", "panel", "rename", "spend"),
)
#: What a panel's log holds: its turns (`resume`: the round its Approve / Deny let go on), its
#: undos, and its switches (`load`: a session the panel opened or made, a branch with its
#: messages; `use`: one it had), its renames, and what its failed turns spent.
PANEL_OPS = ("turn", "resume", "undo", "load", "use", "rename", "spend")
WITH_MESSAGES = ("turn", "retry", "resume", "load", "rerun")
TURN_OPS = ("turn", "retry", "resume", "rerun")


class Rebuilt(Protocol):
    """What replay does with the sessions it rebuilds (session.Session is the one there is:
    given to `replay`, so that this module, which Session.from_notebook uses, never imports
    session.py)."""

    session_id: str
    system: str | None
    messages: list[Message]
    usage: Any

    def fork(self, session_id: str | None = None) -> Rebuilt: ...

    def remove_turn(self, turn: Any) -> Any: ...

    def undo(self) -> Any: ...

    def clear(self) -> None: ...

    def add_spend(self, spends: Any) -> int: ...


def record(
    op: str, session: Rebuilt, messages: list[Message] | None = None, **extra: Any
) -> dict[str, Any]:
    """Output metadata for one change to a session: a turn, a fork, a clear, an undo, a load."""
    entry: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "op": op,
        "session_id": session.session_id,
        "system": session.system,
        "record_id": uuid.uuid4().hex,
    }
    if messages is not None:
        entry["messages"] = [m.to_dict() for m in messages]
    allowed = getattr(session, "allowed_tools", None)
    if allowed:  # as the session has them now (none: the key is left out)
        entry["allowed_tools"] = list(allowed)
    entry.update(extra)
    return {KEY: entry}


_SessionId = Annotated[pydantic.StrictStr, pydantic.AfterValidator(check_session_id)]


class Record(pydantic.BaseModel):
    """A record as `record()` writes it; keys it does not know are ignored, not refused, so
    that a record with one key too many still restores its turn."""

    model_config = pydantic.ConfigDict(extra="ignore", defer_build=True)

    version: Annotated[pydantic.StrictInt, pydantic.Field(ge=1)]
    op: Literal[OPS]  # type: ignore[valid-type]
    session_id: _SessionId
    system: pydantic.StrictStr | None = None
    messages: list[Message] | None = None
    fork_of: _SessionId | None = None
    record_id: Annotated[pydantic.StrictStr, pydantic.Field(min_length=1)] | None = None
    replaces: pydantic.StrictStr | None = None
    kept_as: _SessionId | None = None
    drops: list[_SessionId] = []
    current: _SessionId | None = None
    log: list[Any] | None = None
    spend: list[Any] | None = None
    renamed_from: _SessionId | None = None
    allowed_tools: list[pydantic.StrictStr] | None = None


class Skip(Exception):
    """A record that is not replayed; the message says why."""


def checked(found: Found) -> Record:
    if found.problem is not None:
        raise Skip(f"the cell cannot be read: {found.problem}")
    entry = found.entry
    if not isinstance(entry, Mapping):
        raise Skip(f"the record is {_short(entry)}, not an object from %%chat or %session")
    version, op = entry.get("version"), entry.get("op")
    if type(version) is int and version > FORMAT_VERSION:
        raise Skip(
            f"the record is format version {version}, newer than this agent_nb reads "
            f"({FORMAT_VERSION}); upgrade agent_nb (pip install -U agent-nb)"
        )
    if isinstance(op, str) and op not in OPS:
        raise Skip(
            f"the record's op {_short(op)} is not one this agent_nb knows ({', '.join(OPS)}); "
            "a newer agent_nb may have written it (pip install -U agent-nb)"
        )
    try:
        checked = Record.model_validate(entry)
    except pydantic.ValidationError as exc:
        raise Skip(f"the record is malformed: {describe(exc)}") from None
    for key in ("kept_as", "fork_of", "renamed_from"):  # a session kept as ... itself
        if getattr(checked, key) == checked.session_id:
            raise Skip(f"the record's {key} is its own session {checked.session_id!r}")
    if checked.op in WITH_MESSAGES and checked.messages is None:
        raise Skip(f"the record of a {checked.op} has no messages")
    if checked.op == "panel" and checked.log is None:
        raise Skip("the record of a panel has no log")
    if checked.op == "rename" and checked.renamed_from is None:
        raise Skip("the record of a rename has no renamed_from")
    return checked


def panel_entries(log: list[Any], where: str) -> tuple[list[tuple[Any, Record]], list[str]]:
    """A panel log's entries that can be replayed (each as found and as checked), and a line
    for each that cannot."""
    entries, problems = [], []
    for index, item in enumerate(log):
        try:
            entry = checked(Found(where, item))
            if entry.op not in PANEL_OPS:
                raise Skip(f"a panel's log holds no {entry.op!r} (only {', '.join(PANEL_OPS)})")
        except Skip as skip:
            problems.append(f"agent_nb: skipped entry {index + 1} of the panel in {where}: {skip}")
        else:
            entries.append((item, entry))
    return entries, problems
