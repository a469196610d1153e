"""Messages and their content parts: immutable, serializable, provider-neutral."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictStr,
    field_validator,
)

__all__ = [
    "Message",
    "Part",
    "Role",
    "TextPart",
    "ThinkingPart",
    "ToolCallPart",
    "ToolResultPart",
]

Role = Literal["system", "user", "assistant", "tool"]

#: How deeply message metadata and tool arguments may nest (the dict itself is level 1).
#: Deeper data is refused where it enters, so that everything kept can be saved and read back.
MAX_DEPTH = 100


class _FrozenDict(dict):
    """A dict that refuses changes, so a frozen message's metadata stays frozen."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("message metadata is read-only; build a new Message instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FrozenDict, (dict(self),))


class _NotJSON(ValueError):
    """A value that is not plain JSON; `path` says where, innermost key last."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _freeze(value: Any, depth: int = 1) -> Any:
    """`value` made immutable; _NotJSON unless it is JSON nested at most MAX_DEPTH deep."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSON(f"{value} is not a JSON number")
        return value
    if isinstance(value, str | int):
        return value
    if not isinstance(value, Mapping | list | tuple):
        raise _NotJSON(f"a {kind.__name__} is not a JSON value")
    if depth > MAX_DEPTH:
        raise _NotJSON(f"it is nested more than {MAX_DEPTH} levels deep")
    is_map = isinstance(value, Mapping)
    frozen = {}
    for key, item in value.items() if is_map else enumerate(value):
        if is_map and not isinstance(key, str):
            raise _NotJSON(f"the key {_short(key)} is not a str")
        try:
            frozen[key] = _freeze(item, depth + 1)
        except _NotJSON as problem:
            problem.path.append(f"[{key!r}]")
            raise
    return _FrozenDict(frozen) if is_map else tuple(frozen.values())


def _frozen_json(value: Any, what: str) -> Any:
    """`_freeze(value)`, with an error that says where in `what` the problem is."""
    try:
        return _freeze(value)
    except _NotJSON as problem:
        path = problem.path[::-1]
        where = "".join(path[:4]) + ("[...]" if len(path) > 4 else "")
        at = f"at {where}: " if where else ""
        raise ValueError(
            f"{at}{problem.reason}; {what} must be plain JSON (str, int, finite float, bool, "
            f"None, lists, dicts with str keys), at most {MAX_DEPTH} levels deep"
        ) from None


def _short(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to about `limit` characters."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return shortener.repr(value)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


_Frozen = Annotated[dict[StrictStr, Any], PlainSerializer(_thaw)]
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` as UTF-8 can hold it: a surrogate pair split in two (as streams deliver them)
    joined, a lone surrogate made U+FFFD. Text entering history goes through this."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_json(value: Any) -> Any:
    """`clean_text` over every string of a JSON value, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class TextPart(_Part):
    """Plain text."""

    type: Literal["text"] = "text"
    text: StrictStr


class ThinkingPart(_Part):
    """The model's reasoning; `signature` is what the provider needs to accept it back."""

    type: Literal["thinking"] = "thinking"
    text: StrictStr
    signature: StrictStr | None = None


class ToolCallPart(_Part):
    """The model asks for a tool to be called with these arguments."""

    type: Literal["tool_call"] = "tool_call"
    id: StrictStr
    name: StrictStr
    arguments: _Frozen = Field(default_factory=dict)
    #: The model's arguments text when it was not a JSON object (`arguments` is then empty):
    #: the turn tells the model so, and it is sent back as written.
    invalid_arguments: StrictStr | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("arguments", mode="after")
    @classmethod
    def _freeze_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _frozen_json(value, "tool arguments")

    def arguments_json(self) -> dict[str, Any]:
        """The arguments as plain, mutable JSON values (lists, dicts)."""
        return _thaw(self.arguments)


class ToolResultPart(_Part):
    """What a tool returned (or the error it raised), answering one tool call."""

    type: Literal["tool_result"] = "tool_result"
    tool_call_id: StrictStr
    name: StrictStr
    content: StrictStr
    is_error: StrictBool = False


Part = Annotated[
    TextPart | ThinkingPart | ToolCallPart | ToolResultPart, Field(discriminator="type")
]


def _new_id() -> str:
    return uuid.uuid4().hex


class Message(BaseModel):
    """One message of a conversation: a role and its content parts. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    role: Role
    parts: tuple[Part, ...] = ()
    metadata: _Frozen = Field(default_factory=dict)
    id: StrictStr = Field(default_factory=_new_id)

    @field_validator("metadata", mode="after")
    @classmethod
    def _freeze_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _frozen_json(value, "metadata")

    @classmethod
    def user(cls, text: str, **metadata: Any) -> Message:
        """A message from the user."""
        return cls(role="user", parts=(TextPart(text=_text(text)),), metadata=metadata)

    @classmethod
    def assistant(cls, text: str, **metadata: Any) -> Message:
        """A message from the model."""
        return cls(role="assistant", parts=(TextPart(text=_text(text)),), metadata=metadata)

    @classmethod
    def system(cls, text: str, **metadata: Any) -> Message:
        """An instruction to the model, inside the history."""
        return cls(role="system", parts=(TextPart(text=_text(text)),), metadata=metadata)

    @classmethod
    def tool(cls, results: Iterable[ToolResultPart]) -> Message:
        """The results of one round of tool calls."""
        return cls(role="tool", parts=tuple(results))

    @property
    def text(self) -> str:
        """The text parts joined; empty when the message holds only tool calls or results."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [p for p in self.parts if isinstance(p, ToolResultPart)]

    def to_dict(self) -> dict[str, Any]:
        try:
            return self.model_dump(mode="json")
        except UnicodeEncodeError:  # a lone surrogate in a key, which JSON mode cannot hold
            data = self.model_dump()
            data["parts"] = list(data["parts"])
            return data

    def __repr__(self) -> str:
        kinds = [p.type for p in self.parts if p.type != "text"]
        extra = f", parts={kinds}" if kinds else ""
        text = self.text
        short = text if len(text) <= 60 else text[:57] + "..."
        return f"Message.{self.role}({short!r}{extra})"


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"message text must be a str, got {type(value).__name__}")
    return value
