"""The serialized session format (`Session.to_dict()`): its version, its validation, and
errors that name the field that is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import pydantic

from ._ledger import MOST
from .errors import InvalidSessionData
from .messages import Message, _short

#: The version of `Session.to_dict()`'s format; `from_dict` refuses newer data and reads
#: older: 2 added the spend ledger (`spend`; version 1 data has none).
FORMAT_VERSION = 2

_JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def json_type(value: Any, other: str | None = None) -> str:
    """What a JSON value is, in words (`other`, or its Python type's name, if not JSON)."""
    return _JSON_TYPES.get(type(value)) or other or type(value).__name__


def check_messages(messages: Iterable[Any]) -> list[Message]:
    """`messages` as Messages (dicts are validated); errors name the message and field."""
    if isinstance(messages, list | tuple) and set(map(type, messages)) <= {Message}:
        return list(messages)  # Messages all (a restore's million): told apart in C
    checked = []
    for index, message in enumerate(messages):
        if isinstance(message, Message):
            checked.append(message)
        elif isinstance(message, Mapping):
            try:
                checked.append(Message.model_validate(message))
            except pydantic.ValidationError as exc:
                raise InvalidSessionData(INVALID + describe(exc, f"messages[{index}]")) from None
        else:
            raise TypeError(
                f"messages[{index}] must be a Message (Message.user(...)), "
                f"got {type(message).__name__}"
            )
    return checked


_Count = Annotated[pydantic.StrictInt, pydantic.Field(ge=0)]


class _UsageData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", defer_build=True)

    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cached_tokens: _Count = 0
    reasoning_tokens: _Count = 0
    estimated: _Count = 0
    cache_write_tokens: _Count = 0


def _decimal(value: str | None, *, negative: bool = False) -> str | None:
    if value is not None:
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"a cost in dollars, as a decimal string, got {value!r}") from None
        if not number.is_finite() or (number < 0 and not negative) or number.copy_abs() >= MOST:
            limit = "a finite number" + ("" if negative else " >= 0") + f" under {MOST:,}"
            raise ValueError(f"a cost must be {limit}, got {value!r}")
    return value


def _signed(value: str | None) -> str | None:
    return _decimal(value, negative=True)


#: The longest text of a ledger entry (the names in it: a server names its model as it likes).
TEXT_MOST = 1000


def _within_most(value: str) -> str:
    # checked here, not with Field(max_length=): pydantic's constrained str refuses the lone
    # surrogates a server may send in a name, which a plain str (and JSON) holds
    if len(value) > TEXT_MOST:
        raise ValueError(f"String should have at most {TEXT_MOST} characters")
    return value


_Text = Annotated[pydantic.StrictStr, pydantic.AfterValidator(_within_most)]


class _SpendData(pydantic.BaseModel):
    """One entry of the ledger, as `Spend.to_dict()` writes it."""

    model_config = pydantic.ConfigDict(extra="forbid", defer_build=True)

    at: _Text
    why: _Text
    provider: _Text
    model: _Text
    served: _Text | None = None
    usage: _UsageData = _UsageData()
    cost: Annotated[pydantic.StrictStr | None, pydantic.AfterValidator(_decimal)] = None
    matched: _Text = "none"
    prices: _Text | None = None
    message: _Text | None = None
    saved: Annotated[pydantic.StrictStr | None, pydantic.AfterValidator(_signed)] = None


def check_spend(data: Any, index: int) -> dict[str, Any]:
    """`data` checked as one ledger entry (`Spend.to_dict()`); errors name `spend[index]`."""
    try:
        return _SpendData.model_validate(data).model_dump()
    except pydantic.ValidationError as exc:
        raise InvalidSessionData(INVALID + describe(exc, f"spend[{index}]")) from None


def check_session_id(value: str) -> str:
    if not value.strip():
        raise ValueError("a session id must not be empty or blank")
    return value


class SessionData(pydantic.BaseModel):
    """What `Session.to_dict()` makes, exactly: every field of the right JSON type, no others."""

    model_config = pydantic.ConfigDict(extra="forbid", defer_build=True)

    version: Annotated[pydantic.StrictInt, pydantic.Field(ge=1)]
    session_id: Annotated[pydantic.StrictStr, pydantic.AfterValidator(check_session_id)]
    system: pydantic.StrictStr | None = None
    model: pydantic.StrictStr | None = None
    messages: list[Message]
    created_at: pydantic.StrictStr | None = None
    updated_at: pydantic.StrictStr | None = None
    usage: _UsageData | None = None
    spend: list[_SpendData] = []
    #: Tools the user let run without approval in this session (approve(id, always=True)).
    allowed_tools: list[pydantic.StrictStr] | None = None


def parse(data: Any, where: str | None = None) -> SessionData:
    """`data` checked against the format; errors start with `where` (default: the data's id)."""
    if not isinstance(data, Mapping):
        raise InvalidSessionData(
            _named(where, f"session data must be a dict from Session.to_dict(), got {_short(data)}")
        )
    if where is None and isinstance(data.get("session_id"), str) and data["session_id"]:
        where = f"session {_short(data['session_id'])}"
    version = data.get("version")
    if type(version) is int and version > FORMAT_VERSION:
        raise InvalidSessionData(
            _named(
                where,
                f"version: session data is format version {version}, newer than this agent_nb "
                f"reads ({FORMAT_VERSION}); upgrade agent_nb (pip install -U agent-nb)",
            )
        )
    try:
        parsed = SessionData.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidSessionData(_named(where, INVALID + describe(exc))) from None
    problem = _waiting_problem(parsed.messages)
    if problem:
        raise InvalidSessionData(_named(where, INVALID + problem))
    return parsed


def _waiting_problem(messages: list[Message]) -> str | None:
    """What is wrong with the calls the history says wait for approval, if anything."""
    if not messages or "awaiting_approval" not in messages[-1].metadata:
        return None
    at = f"messages[{len(messages) - 1}].metadata.awaiting_approval"
    waiting = messages[-1].metadata["awaiting_approval"]
    if not isinstance(waiting, tuple | list) or not all(isinstance(w, str) for w in waiting):
        return f"{at}: a list of tool call ids, got {_short(waiting)}"
    calls = {c.id for c in messages[-2].tool_calls} if len(messages) > 1 else set()
    unknown = [w for w in waiting if w not in calls]
    if messages[-1].role != "tool" or unknown:
        return f"{at}: {_short(unknown or waiting)} is no tool call of the message before"
    return None


def _named(where: str | None, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


INVALID = "invalid session data: "


def describe(error: pydantic.ValidationError, prefix: str = "") -> str:
    """What is wrong, field by field (the first five): `messages[3].role: ...; ...`."""
    problems = []
    for item in error.errors(include_url=False)[:5]:
        path = prefix
        loc = item["loc"]
        for index, part in enumerate(loc):
            if isinstance(part, int):
                path += f"[{part}]"
            elif index >= 2 and loc[index - 2] == "parts" and isinstance(loc[index - 1], int):
                continue  # the part's type tag that pydantic puts in the path, not a field
            else:
                name = part if part.isidentifier() and len(part) <= 60 else _short(part)
                path += f".{name}" if path else name
        problems.append(f"{path}: {_reason(item)}")
    more = error.error_count() - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return "; ".join(problems) + tail


def _reason(item: Any) -> str:
    kind = item["type"]
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "an unknown key (agent_nb writes no such field)"
    if kind == "value_error":
        return str(item["ctx"]["error"])
    if kind.endswith("_type") or kind == "int_from_float":
        return f"{item['msg']}, got {json_type(item['input'], 'a Python object')}"
    return item["msg"]
