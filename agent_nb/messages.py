"""Messages and their content parts: immutable, serializable, provider-neutral."""

from __future__ import annotations

import base64
import binascii
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
    model_validator,
)

__all__ = [
    "ImagePart",
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


def _count(number: int, thing: str) -> str:
    """`1 turn`, `3 turns`."""
    return f"{number} {thing}{'' if number == 1 else 's'}"


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


def tool_server(sources: Any, call_id: str) -> str | None:
    """The MCP server a call went to, from `tool_sources` (an answer's metadata: call id ->
    {"server", "tool"}); None for a call to a tool of one's own, or a record that is not
    what agent_nb writes."""
    source = sources.get(call_id) if isinstance(sources, Mapping) else None
    server = source.get("server") if isinstance(source, Mapping) else None
    return server if isinstance(server, str) and server else None


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


#: The image types every provider takes, and how their bytes begin.
IMAGE_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # and b"WEBP" at offset 8
}
#: The largest image, in bytes: 5 MiB once base64-encoded, the most Anthropic takes (OpenAI
#: takes more); a larger one is refused where it enters, before anything is sent or saved.
MAX_IMAGE_BYTES = 5 * 1024 * 1024 // 4 * 3
_CAP = f"{MAX_IMAGE_BYTES:,} bytes (3.75 MiB)"


def image_type(raw: bytes) -> str | None:
    """The media type `raw` is by its first bytes (PNG, JPEG, GIF or WebP), or None."""
    for media_type, magics in IMAGE_TYPES.items():
        if raw.startswith(magics) and (media_type != "image/webp" or raw[8:12] == b"WEBP"):
            return media_type
    return None


def check_image_size(size: int) -> None:
    """ValueError if an image of `size` bytes is over the cap."""
    if size > MAX_IMAGE_BYTES:
        raise ValueError(
            f"the image is {size:,} bytes, over the cap of {_CAP}: send a smaller one "
            "(fewer pixels, or JPEG)"
        )


class ImagePart(_Part):
    """An image sent with a message: its media type and its bytes, base64-encoded.

    Only PNG, JPEG, GIF and WebP, at most MAX_IMAGE_BYTES, and the bytes must be of the type
    named (checked by their first bytes). `ImagePart.from_bytes(raw)` finds the type itself.
    """

    type: Literal["image"] = "image"
    media_type: Literal["image/png", "image/jpeg", "image/gif", "image/webp"]
    data: StrictStr

    @model_validator(mode="after")
    def _check_image(self) -> ImagePart:
        # the size first, from the text's length: a huge string is not decoded to be refused
        check_image_size(len(self.data) // 4 * 3)
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the image data is not base64") from None
        found = image_type(raw)
        if found != self.media_type:
            what = f"a {found.split('/')[1].upper()} image" if found else "not an image"
            raise ValueError(
                f"the image data is {what}, not {self.media_type} as its media_type says"
            )
        return self

    @classmethod
    def from_bytes(cls, raw: bytes) -> ImagePart:
        """An image from its bytes; ValueError unless they are PNG, JPEG, GIF or WebP."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError(f"image bytes must be bytes, got {type(raw).__name__}")
        raw = bytes(raw)
        check_image_size(len(raw))
        media_type = image_type(raw)
        if media_type is None:
            raise ValueError(
                f"the data is not a PNG, JPEG, GIF or WebP image (it begins {raw[:8]!r})"
            )
        return cls(media_type=media_type, data=base64.b64encode(raw).decode("ascii"))

    @property
    def data_url(self) -> str:
        """The image as a `data:` URL."""
        return f"data:{self.media_type};base64,{self.data}"

    def __repr__(self) -> str:
        return f"ImagePart({self.media_type!r}, {len(self.data) // 4 * 3:,} bytes)"


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
    #: Images the tool returned beside its text (an MCP tool's), sent to the model where
    #: its provider takes images in tool results.
    images: tuple[ImagePart, ...] = Field(default=(), exclude_if=lambda v: not v)


Part = Annotated[
    TextPart | ImagePart | ThinkingPart | ToolCallPart | ToolResultPart,
    Field(discriminator="type"),
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

    @model_validator(mode="after")
    def _images_from_the_user(self) -> Message:
        if self.role != "user" and any(p.type == "image" for p in self.parts):
            raise ValueError(f"only user messages hold images, not a {self.role} message")
        return self

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
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

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
