"""Python functions as tools: a JSON schema from the signature and docstring, validated calls.

Also tools described by a JSON schema of their own (`Tool.from_schema`, e.g. from MCP), and
`ModelRetry`, which a tool raises to ask the model to call it again differently.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import re
import threading
import typing
import warnings
from collections.abc import Callable, Iterable
from typing import Any, overload

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationError

from ._outcome import Outcome
from .errors import ConfigurationError

__all__ = ["ModelRetry", "Tool", "Toolset", "tool"]

#: A tool's result longer than this many characters is cut, with a note to the model.
MAX_RESULT_CHARS = 100_000
_ON_ERROR = ("return", "raise")

_ARG_NAMES = r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)"
_OTHER_NAMES = r"(Returns?|Raises|Yields?|Examples?|Notes?|See Also|References|Warns?|Attributes)"
_SECTION = re.compile(rf"^\s*{_ARG_NAMES}\s*:\s*$", re.IGNORECASE)  # Google
_OTHER_SECTION = re.compile(rf"^\s*{_OTHER_NAMES}\s*:\s*$", re.IGNORECASE)
_NUMPY_SECTION = re.compile(rf"^\s*(?:{_ARG_NAMES}|{_OTHER_NAMES})\s*$", re.IGNORECASE)
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\s*)(\*{0,2}\w+)\s*(?::.*)?$")
_SPHINX_FIELD = re.compile(r"^\s*:(\w+)((?:\s+[^\s:]+)*)\s*:\s*(.*)$")  # :param int x: ...


class ModelRetry(Exception):
    """Raised by a tool: its message goes back to the model, which may call the tool again."""


class ToolResultError(Exception):
    """Raised by a tool whose own answer is an error (an MCP server's `isError` result, a
    refused result): its message goes back to the model as the error result, as it is."""


class ResultText(str):
    """A tool result's text that carries images too (an MCP tool's), sent where the
    provider takes images in tool results."""

    images: tuple[Any, ...]

    def __new__(cls, text: str, images: Iterable[Any] = ()) -> ResultText:
        made = super().__new__(cls, text)
        made.images = tuple(images)
        return made


class Tool:
    """A function the model may call, with the JSON schema of its arguments.

    `requires_approval`: the call runs only once approved. `on_error`: "return" (the
    default) sends an exception back to the model as an error result, "raise" ends the turn
    with ToolError. `retries`: how many times in one turn the model may send arguments that
    fail validation, or be told ModelRetry, before the turn ends with ToolError.
    `sequential`: the call runs alone, never beside another call of its round.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        on_error: str = "return",
        retries: int = 2,
        sequential: bool = False,
        max_result_chars: int = MAX_RESULT_CHARS,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a tool must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = _check_name(name or getattr(fn, "__name__", ""))
        self.requires_approval = bool(requires_approval)
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be 'return' or 'raise', got {on_error!r}")
        self.on_error = on_error
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.retries = retries
        self.sequential = bool(sequential)
        self.max_result_chars = max_result_chars
        self._is_async = _is_async(fn)
        #: Where the tool comes from when not from this process ({"server", "tool"} for an
        #: MCP server's); recorded with each call in the session.
        self.source: dict[str, str] | None = None
        self._args_model: type[BaseModel] | None = None
        self._json_schema: dict[str, Any] | None = None
        if isinstance(fn, _SchemaHandler):
            self.description = description or ""
            self.parameters = fn.parameters
            return
        summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self._args_model = _arguments_model(fn, self.name, arg_docs)
        self.parameters = _clean_schema(self._args_model.model_json_schema())

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        handler: Callable[[dict[str, Any]], Any],
        **options: Any,
    ) -> Tool:
        """A tool described by a JSON schema (from MCP, say); `handler(arguments)` runs it.

        The arguments are checked against `parameters` before `handler` is called (sync or
        async) with them as one dict.
        """
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ValueError(
                f"tool {name!r}: parameters must be a JSON schema of an object "
                f'({{"type": "object", "properties": {{...}}}}), got {parameters!r}'
            )
        from jsonschema.validators import validator_for

        validator_for(parameters).check_schema(parameters)  # SchemaError names the fault
        schema = {"type": "object", "properties": {}, **parameters}
        return cls(_SchemaHandler(handler, schema), name=name, description=description, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    @property
    def allowance(self) -> str:
        """What "always allow" records for this tool (Session.allowed_tools): an MCP
        server's tool as `server:tool` (its server and the server's own name for it, never
        the name it is offered as, which another server may take later), one's own by its
        name (which holds no `:`)."""
        if self.source is None:
            return self.name
        return f"{self.source['server']}:{self.source['tool']}"

    def schema(self) -> dict[str, Any]:
        """The provider-neutral description: name, description, parameters."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: dict[str, Any]) -> Any:
        """Check the model's arguments; raises pydantic.ValidationError or ArgumentError."""
        if self._args_model is None:
            return self.fn.validate(arguments)
        return self._args_model.model_validate(arguments)

    async def invoke(self, arguments: dict[str, Any], *, threads: ToolThreads | None = None) -> str:
        """Validate and call; sync functions run in a worker thread so streams keep flowing
        (one of `threads`, the agent's, in a turn; else one of the event loop's).

        Returns the result as text for the model, cut to `max_result_chars` with a note.
        """
        values = self.validate(arguments)
        if self._args_model is None:
            args: tuple[Any, ...] = (values,)
            kwargs: dict[str, Any] = {}
        else:
            args, kwargs = (), {name: getattr(values, name) for name in type(values).model_fields}
        if self._is_async:
            result = await self.fn(*args, **kwargs)
        elif threads is not None:
            result = await threads.run(self.name, functools.partial(self.fn, *args, **kwargs))
        else:
            result = await asyncio.to_thread(self.fn, *args, **kwargs)
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            result = await result
        text = _cap(_to_text(result), self.max_result_chars)
        images = getattr(result, "images", None)
        return ResultText(text, images) if isinstance(result, ResultText) and images else text


class ToolThreads:
    """An agent's threads for its sync tools: each call on a thread of its own, never on the
    event loop's default executor, where a hung tool kept a turn's other work waiting.

    How many run at once is bounded per round, by Agent(max_concurrency=...); there is no
    agent-wide queue, which would deadlock a tool that runs a turn of its own agent (a
    sub-agent) while its callers hold every place. A call whose turn is stopped while its
    function runs is abandoned: Python cannot stop a thread, so the function runs on and its
    result is dropped. `abandoned` counts those still running; a RuntimeWarning says so
    when they reach 4, then 8, 16, ...
    """

    def __init__(self) -> None:
        self.abandoned = 0
        self._lock = threading.Lock()
        self._warn_at = 4

    async def run(self, name: str, fn: Callable[[], Any]) -> Any:
        call, outcome = _ToolCall(name), Outcome[Any]()
        done = outcome.future()
        run_in_context = contextvars.copy_context().run
        threading.Thread(
            target=self._work,
            args=(call, outcome, run_in_context, fn),
            name=f"agent_nb-tool-{name}",
            daemon=True,
        ).start()
        try:
            return await done
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    def _work(
        self, call: _ToolCall, outcome: Outcome[Any], run: Callable[..., Any], fn: Any
    ) -> None:
        outcome.run(run, (fn,), {})
        with self._lock:
            call.done = True
            if call.abandoned:
                self.abandoned -= 1

    def _abandon(self, call: _ToolCall) -> None:
        with self._lock:
            if call.done:
                return
            call.abandoned = True
            self.abandoned += 1
            count = self.abandoned
            warn = count >= self._warn_at
            if warn:
                self._warn_at *= 2
        if warn:
            warnings.warn(
                f"{count} sync tool calls whose turns were stopped are still running in "
                f"their threads (the last: {call.name!r}); Python cannot stop a thread, so "
                "each keeps what it holds until its function returns. Give slow tools a "
                "timeout of their own, or make them async (an async tool is cancelled with "
                "its turn)",
                RuntimeWarning,
                stacklevel=2,
            )


class _ToolCall:
    """One sync tool call for ToolThreads: whether it has ended, or was abandoned first."""

    __slots__ = ("abandoned", "done", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False
        self.abandoned = False


class ArgumentError(ValueError):
    """Arguments that do not match a `Tool.from_schema` tool's JSON schema."""


class _SchemaHandler:
    """A `from_schema` handler with the schema its arguments are checked against."""

    def __init__(self, handler: Callable[[dict[str, Any]], Any], parameters: dict[str, Any]):
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self.handler = handler
        self.parameters = parameters
        self.__name__ = getattr(handler, "__name__", "tool")
        from jsonschema.validators import validator_for

        self._validator = validator_for(parameters)(parameters)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        problems = [
            f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}"
            for e in sorted(self._validator.iter_errors(arguments), key=lambda e: e.path)
        ]
        if problems:
            raise ArgumentError("; ".join(problems[:5]))
        return arguments

    def __call__(self, arguments: dict[str, Any]) -> Any:
        return self.handler(arguments)


def _is_async(fn: Callable[..., Any]) -> bool:
    target = fn.handler if isinstance(fn, _SchemaHandler) else fn
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(
            f"tool name {name!r} must be 1-64 letters, digits, '_' or '-' (pass name=... to @tool)"
        )
    return name


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    on_error: str = "return",
    retries: int = 2,
    sequential: bool = False,
    max_result_chars: int = MAX_RESULT_CHARS,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None, /, **options: Any
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a tool: `@tool`, or `@tool(name=..., requires_approval=True, ...)`."""
    if fn is not None:
        return Tool(fn, **options)
    return lambda f: Tool(f, **options)


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """A Tool for a Tool or a plain function."""
    return obj if isinstance(obj, Tool) else Tool(obj)


def format_validation_error(error: ValidationError) -> str:
    """A short, model-readable account of what is wrong with the arguments."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def _to_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    try:
        return json.dumps(
            pydantic.TypeAdapter(Any).dump_python(result, mode="json"), ensure_ascii=False
        )
    except (TypeError, ValueError, pydantic.PydanticSerializationError):
        return str(result)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n[agent_nb: the result was cut to its first {limit:,} of "
        f"{len(text):,} characters]"
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and each argument's description.

    Reads Google (`Args:`), NumPy (`Parameters` over a line of dashes) and Sphinx
    (`:param name:`) styles.
    """
    summary: list[str] = []
    args: dict[str, str] = {}
    section = None  # None, "args", "numpy-args", "other"
    current = None
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        underlined = index + 1 < len(lines) and _UNDERLINE.match(lines[index + 1])
        if underlined and _NUMPY_SECTION.match(line):
            section = "numpy-args" if re.match(rf"\s*{_ARG_NAMES}", line, re.I) else "other"
            current = None
            continue
        if section in ("numpy-args", "other") and _UNDERLINE.match(line):
            continue
        if _SECTION.match(line):
            section, current = "args", None
            continue
        if _OTHER_SECTION.match(line):
            section, current = "other", None
            continue
        field = _SPHINX_FIELD.match(line)
        if field:
            kind, words, text = field.groups()
            if kind in ("param", "parameter", "arg", "argument", "key", "keyword") and words:
                section, current = "sphinx", words.split()[-1].lstrip("*")
                args[current] = text.strip()
            else:
                section, current = "sphinx-other", None
            continue
        if section is None:
            summary.append(line)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match and (not line.startswith(" " * 8) or current is None):
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
        elif section == "numpy-args":
            match = _NUMPY_ARG.match(line)
            if match and not match.group(1) and line.strip():
                current = match.group(2).lstrip("*")
                args[current] = ""
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
        elif section == "sphinx" and current and line.strip():
            args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(summary).strip(), args


def _arguments_model(
    fn: Callable[..., Any], name: str, arg_docs: dict[str, str]
) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    hints = _type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        described = param.name in arg_docs  # else keep an Annotated[..., Field(description=)]
        fields[param.name] = (
            annotation,
            pydantic.Field(default, description=arg_docs[param.name])
            if described
            else pydantic.Field(default),
        )
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_arguments", __config__=config, **fields)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that names something not importable here
        annotations = getattr(fn, "__annotations__", {})
        return {k: v for k, v in annotations.items() if not isinstance(v, str)}


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["type"] = "object"
    return schema


class Toolset:
    """The tools a turn may call, by name, and their schemas for the provider.

    Tool sources (MCP servers) are kept aside in `sources`: `resolved()` lists their tools,
    once a turn.
    """

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self.tools: dict[str, Tool] = {}
        self.sources: list[Any] = []
        for item in tools:
            if getattr(item, "_is_tool_source", False):
                if item not in self.sources:
                    self.sources.append(item)
                continue
            t = as_tool(item)
            if t.name in self.tools:
                raise ConfigurationError(f"two tools are named {t.name!r}; tool names must differ")
            self.tools[t.name] = t
        self.schemas = [t.schema() for t in self.tools.values()]

    def __bool__(self) -> bool:
        return bool(self.tools or self.sources)

    async def resolved(self) -> Toolset:
        """This toolset with its sources' tools listed (servers start on first need); a tool
        of a server named like another tool is offered as `server_tool` (mcp.resolve_names)."""
        if not self.sources:
            return self
        from .mcp import _Use, resolve_names

        use = _Use()
        listed = await asyncio.gather(*(source._resolve(use) for source in self.sources))
        out = Toolset(self.tools.values())
        for t in resolve_names([t for tools in listed for t in tools], set(self.tools)):
            out.tools[t.name] = t
        out.schemas = [t.schema() for t in out.tools.values()]
        return out
