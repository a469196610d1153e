"""Messages and their content parts: immutable, serializable, provider-neutral."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

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


class _FrozenDict(dict):
    """A dict that refuses changes, so a frozen message's metadata stays frozen."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("message metadata is read-only; build a new Message instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FrozenDict, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


_Frozen = Annotated[dict[str, Any], PlainSerializer(_thaw)]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class TextPart(_Part):
    """Plain text."""

    type: Literal["text"] = "text"
    text: str


class ThinkingPart(_Part):
    """The model's reasoning; `signature` is what the provider needs to accept it back."""

    type: Literal["thinking"] = "thinking"
    text: str
    signature: str | None = None


class ToolCallPart(_Part):
    """The model asks for a tool to be called with these arguments."""

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: _Frozen = Field(default_factory=dict)

    @field_validator("arguments", mode="after")
    @classmethod
    def _freeze_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _freeze(value)

    def arguments_json(self) -> dict[str, Any]:
        """The arguments as plain, mutable JSON values (lists, dicts)."""
        return _thaw(self.arguments)


class ToolResultPart(_Part):
    """What a tool returned (or the error it raised), answering one tool call."""

    type: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


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
    id: str = Field(default_factory=_new_id)

    @field_validator("metadata", mode="after")
    @classmethod
    def _freeze_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _freeze(value)

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
        return self.model_dump(mode="json")

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
