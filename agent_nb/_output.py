"""Structured output: a Python type to a JSON schema a provider enforces, and its JSON back.

OpenAI's strict mode wants every object closed and every property required, and drops
constraints such as lengths, patterns and formats. So an optional field is sent required but
nullable (a null the model sends for it is dropped before validation, so the field's default
applies, instead of the model inventing a value), a dropped constraint is said in the
field's description, and our validation enforces everything the type says. A type strict
mode cannot express at all (a free-form dict) is sent as a plain, non-strict schema.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pydantic
import pydantic_core

from .errors import OutputValidationError
from .messages import Message, TextPart
from .providers.base import OutputSchema

_DROP = {"title", "default", "examples"}
#: Constraints strict mode does not take: said in the description instead.
_CONSTRAINTS = {
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "pattern": "matching the regular expression {}",
    "format": "in {} format",
    "minimum": "at least {}",
    "maximum": "at most {}",
    "exclusiveMinimum": "more than {}",
    "exclusiveMaximum": "less than {}",
    "multipleOf": "a multiple of {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "uniqueItems": "items all different",
    "minProperties": "at least {} keys",
    "maxProperties": "at most {} keys",
}


MODES = ("auto", "native", "json_object", "tool", "prompted")
#: The tool a "tool" mode answer is given through.
FINAL_TOOL = "final_result"
_INSTRUCTIONS = (
    "Answer with only a JSON value that matches the JSON schema below: no prose before or "
    "after it.\n```json\n{schema}\n```"
)
_FENCED = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
#: What a server says when it does not take a way of asking for structured output.
_UNSUPPORTED = re.compile(
    r"response_format|json_schema|output_config|output_format|structured|tool_choice|"
    r"not supported|unsupported|does not support|Input should be",
    re.IGNORECASE,
)


class OutputPlan:
    """How one turn asks for its structured output: the mode, and what it changes in requests.

    `auto` takes the mode that worked before for this provider and model, else the
    provider's first; on an error that says the server does not take it, it falls back
    once, to the provider's second mode.
    """

    def __init__(self, output: OutputType, mode: str, provider: Any, model: str) -> None:
        if mode not in MODES:
            raise ValueError(f"output_mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.output = output
        self.provider = provider
        self.model = model
        self.auto = mode == "auto"
        modes = getattr(provider, "output_modes", ("native",))
        known = _worked(provider).get(model)
        self.mode = (known or modes[0]) if self.auto else mode
        self._fallback = modes[1] if self.auto and not known and len(modes) > 1 else None

    def shape(
        self, system: str | None, tools: list[dict[str, Any]]
    ) -> tuple[str | None, list[dict[str, Any]], OutputSchema | None, str | None]:
        """(system, tools, output schema, tool_choice) of a request in this mode."""
        request = self.output.request
        if self.mode == "native":
            return system, tools, request, None
        if self.mode == "json_object":
            return system, tools, dataclasses.replace(request, form="json_object"), None
        if self.mode == "tool":
            final = {
                "name": FINAL_TOOL,
                "description": "Give the final answer, as these arguments.",
                "parameters": request.schema,
            }
            return system, [*tools, final], None, "required" if tools else FINAL_TOOL
        said = _INSTRUCTIONS.format(schema=json.dumps(request.schema, ensure_ascii=False))
        return (f"{system}\n\n{said}" if system else said), tools, None, None

    def fallback(self, error: Exception) -> bool:
        """Switch to the fallback mode if `error` says the server does not take this one."""
        if self._fallback is None or not _UNSUPPORTED.search(str(error)):
            return False
        self.mode, self._fallback = self._fallback, None
        return True

    def answer(self, message: Message) -> Message:
        """In tool mode, a call to the final tool made a plain answer: its arguments as JSON."""
        if self.mode != "tool":
            return message
        final = next((c for c in message.tool_calls if c.name == FINAL_TOOL), None)
        if final is None:
            return message
        text = final.invalid_arguments
        if text is None:
            text = json.dumps(final.arguments_json(), ensure_ascii=False)
        thinking = [p for p in message.parts if p.type == "thinking"]
        return message.model_copy(update={"parts": (*thinking, TextPart(text=text))})

    def worked(self) -> None:
        if self.auto:
            _worked(self.provider)[self.model] = self.mode


def _worked(provider: Any) -> dict[str, str]:
    """The mode that worked, per model, remembered on the provider instance."""
    try:
        return provider.__dict__.setdefault("_output_modes_worked", {})
    except AttributeError:  # a provider without a __dict__: nothing remembered
        return {}


class OutputType:
    """A type the answer must be an instance of: a pydantic model, dataclass, TypedDict, ..."""

    def __init__(self, schema: Any) -> None:
        try:
            self._adapter = pydantic.TypeAdapter(schema)
            json_schema = self._adapter.json_schema()
        except (
            pydantic.PydanticSchemaGenerationError,
            pydantic.PydanticUserError,
            TypeError,
        ) as exc:
            raise TypeError(
                f"schema must be a type pydantic can describe (a BaseModel subclass, a "
                f"dataclass, a TypedDict, list[...], ...); got {schema!r}: {exc}"
            ) from None
        self.name = _schema_name(schema)
        # Providers want an object at the top; other types travel wrapped in {"value": ...}.
        self._wrapped = json_schema.get("type") != "object"
        if self._wrapped:
            defs = json_schema.pop("$defs", None)
            json_schema = {
                "type": "object",
                "properties": {"value": json_schema},
                "required": ["value"],
            }
            if defs:
                json_schema["$defs"] = defs
        self._schema = json_schema  # as pydantic wrote it: what "optional" means
        #: Whether a null may need dropping (an optional field that takes no null): if not,
        #: a long answer is not walked in Python at every partial parse.
        self._drops = _optional_not_null(json_schema, json_schema.get("$defs", {}), set())
        strict = _expressible(json_schema)
        self.request = OutputSchema(
            name=self.name,
            schema=_strict(json_schema) if strict else _plain(json_schema),
            strict=strict,
            description=json_schema.get("description"),
        )

    def parse(self, text: str) -> Any:
        """The validated instance; OutputValidationError names what does not match.

        JSON inside a Markdown code fence (as models write it when asked in words) is read.
        """
        fenced = _FENCED.match(text)
        try:
            data = json.loads(fenced.group(1) if fenced else text)
            data = self._unwrap(data, text)
            return self._adapter.validate_python(data)
        except json.JSONDecodeError as exc:
            raise OutputValidationError(
                f"the model's answer is not valid JSON ({exc.msg} at position {exc.pos}): "
                f"{text[:200]!r}",
                text=text,
            ) from None
        except RecursionError:  # a stranger's answer must not take the stack
            raise OutputValidationError(
                f"the model's answer is JSON nested too deeply to read: {text[:200]!r}",
                text=text,
            ) from None
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise OutputValidationError(
                f"the model's answer does not match {self.name}: {problems}", text=text
            ) from None

    def partial(self, text: str) -> Any:
        """What the JSON so far validates as (lists and strings cut short), or None."""
        try:
            data = pydantic_core.from_json(text, allow_partial="trailing-strings")
            if self._wrapped:
                if not isinstance(data, dict) or "value" not in data:
                    return None
                data = data["value"]
            if self._drops:
                data = _drop_nulls(data, self._inner_schema(), self._schema.get("$defs", {}))
            return self._adapter.validate_python(data, experimental_allow_partial=True)
        except (ValueError, RecursionError, pydantic.ValidationError):
            return None

    @staticmethod
    def correction(error: OutputValidationError) -> str:
        """What the model is told after an answer that does not validate."""
        return (
            f"Your answer cannot be used: {error}. Answer again with only the JSON that "
            "matches the schema, with these problems fixed."
        )

    def _unwrap(self, data: Any, text: str) -> Any:
        if self._wrapped:
            if not isinstance(data, dict) or "value" not in data:
                raise OutputValidationError(
                    f"the model's answer lacks the 'value' field: {text[:200]!r}", text=text
                )
            data = data["value"]
        if not self._drops:
            return data
        return _drop_nulls(data, self._inner_schema(), self._schema.get("$defs", {}))

    def _inner_schema(self) -> dict[str, Any]:
        return self._schema["properties"]["value"] if self._wrapped else self._schema


def _schema_name(schema: Any) -> str:
    name = getattr(schema, "__name__", None) or type(schema).__name__
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "output"


def _expressible(schema: Any) -> bool:
    """Whether strict mode can say what `schema` says (it has no open-ended objects)."""
    if isinstance(schema, list):
        return all(_expressible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    extra = schema.get("additionalProperties")
    if extra not in (None, False) or (
        schema.get("type") == "object" and "properties" not in schema
    ):
        return False
    return all(_expressible(value) for key, value in schema.items() if key != "enum")


def _plain(schema: Any) -> Any:
    """`schema` without the keys providers need not see."""
    if isinstance(schema, list):
        return [_plain(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: _plain(value)
        if key not in ("properties", "$defs")
        else {k: _plain(v) for k, v in value.items()}
        for key, value in schema.items()
        if key not in _DROP or key == "properties"
    }


def _strict(schema: Any) -> Any:
    """Every object closed, every property required (optional ones nullable)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    notes = []
    for key, value in schema.items():
        if key in _CONSTRAINTS:
            notes.append(_CONSTRAINTS[key].format(json.dumps(value) if key == "pattern" else value))
        elif key in ("properties", "$defs"):
            result[key] = {k: _strict(v) for k, v in value.items()}
        elif key not in _DROP:
            result[key] = _strict(value)
    if notes:
        said = "; ".join(notes)
        result["description"] = (
            f"{result['description']} ({said})" if "description" in result else said
        )
    if result.get("type") == "object" or "properties" in result:
        required = set(schema.get("required", ()))
        properties = result.setdefault("properties", {})
        for name, prop in properties.items():
            if name not in required and not _allows_null(prop):
                properties[name] = {"anyOf": [prop, {"type": "null"}]}
        result["additionalProperties"] = False
        result["required"] = list(properties)
    return result


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(
        _allows_null(branch) for branch in schema.get("anyOf", ()) if isinstance(branch, dict)
    )


def _optional_not_null(schema: Any, defs: dict[str, Any], seen: set[str]) -> bool:
    """Whether `schema` has, anywhere, an optional property that takes no null: one whose
    null `_drop_nulls` would drop."""
    if isinstance(schema, list):
        return any(_optional_not_null(item, defs, seen) for item in schema)
    if not isinstance(schema, dict):
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return False
        seen.add(name)
        return _optional_not_null(defs.get(name, {}), defs, seen)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        required = set(schema.get("required", ()))
        for key, value in properties.items():
            if key not in required and not _allows_null(_resolve(value, defs)):
                return True
            if _optional_not_null(value, defs, seen):
                return True
    return any(
        _optional_not_null(value, defs, seen)
        for key, value in schema.items()
        if key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "prefixItems")
    )


def _drop_nulls(data: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """`data` without the nulls strict mode made the model send for optional fields."""
    while "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if isinstance(data, dict):
        properties = schema.get("properties")
        if properties:
            required = set(schema.get("required", ()))
            return {
                key: _drop_nulls(value, properties.get(key, {}), defs)
                for key, value in data.items()
                if not (
                    value is None
                    and key not in required
                    and not _allows_null(_resolve(properties.get(key, {}), defs))
                )
            }
        for branch in schema.get("anyOf", ()):
            if isinstance(branch, dict) and _resolve(branch, defs).get("properties"):
                return _drop_nulls(data, branch, defs)
        return data
    if isinstance(data, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_drop_nulls(item, items, defs) for item in data]
        for branch in schema.get("anyOf", ()):
            if isinstance(branch, dict) and "items" in branch:
                return _drop_nulls(data, branch, defs)
    return data


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema
