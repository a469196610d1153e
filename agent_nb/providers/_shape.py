"""Reading the JSON a provider sent: decoding it, and type checks whose failure (a
Malformed) names the field.

A null counts as absent, as the official SDKs read it. HTTPClient turns a Malformed into a
StreamError that names the provider and shows the event or body it came from.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

from .._format import json_type
from ..messages import ToolCallPart

#: The largest token count taken: JSON's exact integers, which every store reads back.
MAX_TOKENS = 2**53 - 1


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_scan = _DECODER.scan_once  # the C scanner itself


def decode_json(text: str) -> Any:
    """json.loads, minus its per-call checks, refusing NaN and Infinity: what is kept in the
    history (tool arguments) must still be JSON when it is stored.

    The scanner is called directly: for a stream's tens of thousands of small events, the
    whitespace checks of `JSONDecoder.decode` around it cost a tenth of the whole stream.
    Text it does not take whole (whitespace around the value, an error) goes to `decode`.
    """
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    if end != len(text):
        return _DECODER.decode(text)
    return value


def loads(text: str) -> Any:
    """json.loads; ValueError for whatever is not JSON Python can hold (too deep, too long)."""
    try:
        return decode_json(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def tool_call(call_id: str, name: str, raw: str) -> ToolCallPart:
    """A tool call from the JSON text of its arguments the model wrote ("" means none).

    Text that is not a JSON object is kept as `invalid_arguments`: the turn sends it back
    to the model as an error result to correct, instead of failing.
    """
    try:
        arguments = loads(raw) if raw.strip() else {}
        if isinstance(arguments, dict):
            return ToolCallPart(id=call_id, name=name, arguments=arguments)
    except (ValueError, pydantic.ValidationError):  # not JSON, or not JSON we keep
        pass
    return ToolCallPart(id=call_id, name=name, invalid_arguments=raw)


class Malformed(Exception):
    """A field of a provider's answer has the wrong type or an impossible value."""


def wrong(where: str, expected: str, value: Any) -> Malformed:
    return Malformed(f"{where} is {json_type(value)}, expected {expected}")


def obj(value: Any, where: str) -> dict[str, Any]:
    """`value` as an object; null is an empty one."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise wrong(where, "an object", value)


def items(value: Any, where: str) -> list[Any]:
    """`value` as a list; null is an empty one."""
    if type(value) is list:
        return value
    if value is None:
        return []
    raise wrong(where, "a list", value)


def text(value: Any, where: str) -> str | None:
    """`value` as a string, or None when absent."""
    if value is None or type(value) is str:
        return value
    raise wrong(where, "a string", value)


def string(value: Any, where: str) -> str:
    """`value` as a string; null is an empty one."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise wrong(where, "a string", value)


def index(value: Any, where: str, default: int) -> int:
    """A position in a list the provider numbers (a choice, a content block, a tool call)."""
    if value is None:
        return default
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    raise wrong(where, "a non-negative integer", value)


def tokens(usage: dict[str, Any], name: str, where: str) -> int | None:
    """A token count of a usage object (`name` may be dotted: "details.cached_tokens")."""
    value: Any = usage
    path = where
    for key in name.split("."):
        value = obj(value, path).get(key)
        path = f"{path}.{key}"
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    if type(value) is int:
        raise Malformed(f"{path} is {value}, expected a token count from 0 to {MAX_TOKENS}")
    raise wrong(path, "a non-negative integer", value)
