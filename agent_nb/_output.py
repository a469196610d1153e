"""Structured output: a Python type to a strict JSON schema, and the model's JSON back."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from .errors import OutputValidationError
from .providers.base import OutputSchema

_DROP_IN_STRICT = {"title", "default", "format", "examples"}


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
        self.request = OutputSchema(
            name=self.name, schema=_strict(json_schema), description=json_schema.get("description")
        )

    def parse(self, text: str) -> Any:
        """The validated instance; OutputValidationError names what does not match."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputValidationError(
                f"the model's answer is not valid JSON ({exc.msg} at position {exc.pos}): "
                f"{text[:200]!r}",
                text=text,
            ) from None
        if self._wrapped:
            if not isinstance(data, dict) or "value" not in data:
                raise OutputValidationError(
                    f"the model's answer lacks the 'value' field: {text[:200]!r}", text=text
                )
            data = data["value"]
        try:
            return self._adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise OutputValidationError(
                f"the model's answer does not match {self.name}: {problems}", text=text
            ) from None


def _schema_name(schema: Any) -> str:
    name = getattr(schema, "__name__", None) or type(schema).__name__
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "output"


def _strict(schema: Any) -> Any:
    """Every object closed and every property required, as OpenAI's strict mode asks."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {
        key: _strict(value)
        for key, value in schema.items()
        if key not in _DROP_IN_STRICT or key == "properties"
    }
    if "properties" in schema:
        result["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    if result.get("type") == "object" or "properties" in result:
        result["additionalProperties"] = False
        result["required"] = list(result.get("properties", {}))
    return result
