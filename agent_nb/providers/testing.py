"""An offline, deterministic provider for demos and for tests of code built on agent_nb."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ..events import Completion, TextDelta, Usage
from ..messages import Message, ToolCallPart
from .base import Provider, ProviderBatch, Request

Reply = str | Message | Callable[[Request], "str | Message"]

_VERBS = {
    "get",
    "fetch",
    "list",
    "find",
    "search",
    "lookup",
    "look",
    "read",
    "load",
    "set",
    "make",
    "create",
    "do",
    "run",
    "compute",
    "calc",
    "calculate",
    "check",
    "query",
    "retrieve",
    "call",
}
_WORD = re.compile(r"\S+\s*")
_PROMPTED_SCHEMA = re.compile(r"```json\n(.*?)\n```", re.DOTALL)  # json(output_mode="prompted")
_PROMPT_TOKEN = re.compile(r"[A-Za-z0-9][\w.@-]*[A-Za-z0-9]|[A-Za-z0-9]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class TestProvider(Provider):
    """Answers without a network, the same way every time.

    With no script it answers from the conversation (so memory is visible), calls the
    agent's tools when the prompt names what they are about, and returns schema-valid JSON
    for `json()`. `replies` scripts the answers in order: strings, Messages (for tool calls),
    or callables that receive the Request. `requests` keeps every request it was sent.
    """

    __test__ = False  # not a pytest test class
    name = "test"
    default_model = "test"
    output_modes = ("native", "tool", "prompted")

    def __init__(
        self,
        replies: Iterable[Reply] | None = None,
        *,
        delay: float = 0.0,
        words_per_delta: int = 1,
    ) -> None:
        self._replies: deque[Reply] = deque(replies or ())
        self.delay = delay
        self.words_per_delta = max(1, words_per_delta)
        self.requests: list[Request] = []
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"TestProvider(scripted={len(self._replies)})"

    def add_reply(self, reply: Reply) -> None:
        """Queue one more scripted reply."""
        self._replies.append(reply)

    async def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        self.requests.append(request)
        message = self._answer(request)
        text = message.text
        words = _WORD.findall(text)
        for start in range(0, len(words), self.words_per_delta):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield [TextDelta("".join(words[start : start + self.words_per_delta]))]
        if self.delay:
            await asyncio.sleep(self.delay)
        finish = "tool_calls" if message.tool_calls else "stop"
        yield [
            Completion(
                message=message,
                usage=Usage(input_tokens=_count_words(request), output_tokens=len(words)),
                finish_reason=finish,
                model=request.model,
            )
        ]

    def _answer(self, request: Request) -> Message:
        if self._replies:
            reply = self._replies.popleft()
            if callable(reply):
                reply = reply(request)
            if isinstance(reply, str):
                return Message.assistant(reply)
            if isinstance(reply, Message):
                return reply
            raise TypeError(
                f"a scripted reply must be a str or a Message, got {type(reply).__name__}"
            )
        last = request.messages[-1] if request.messages else None
        if request.output is not None:
            value = example(request.output.schema, _user_texts(request))
            return Message.assistant(json.dumps(value))
        forced = self._forced_call(request, last)
        if forced is not None:
            return forced
        asked = _PROMPTED_SCHEMA.search(request.system or "")
        if asked and not (last is not None and last.role == "tool"):
            value = example(json.loads(asked.group(1)), _user_texts(request))
            return Message.assistant(f"```json\n{json.dumps(value)}\n```")
        if last is not None and last.role == "tool":
            said = "; ".join(f"{r.name} returned {r.content}" for r in last.tool_results)
            return Message.assistant(f"Here is what I found: {said}.")
        calls = self._tool_calls(request)
        if calls:
            return Message(role="assistant", parts=tuple(calls))
        return Message.assistant(echo(_user_texts(request)))

    def _forced_call(self, request: Request, last: Message | None) -> Message | None:
        """A call to the tool `tool_choice` names (or, if "required", the last tool)."""
        choice = request.tool_choice
        if choice is None or not request.tools:
            return None
        if choice == "required":
            if self._tool_calls(request) and not (last is not None and last.role == "tool"):
                return None  # the tools the prompt asks for come first
            choice = request.tools[-1]["name"]
        spec = next((t for t in request.tools if t["name"] == choice), None)
        if spec is None:
            return None
        arguments = example(spec["parameters"], _user_texts(request), spec["name"])
        call = ToolCallPart(id=f"call_{next(self._ids)}", name=choice, arguments=arguments)
        return Message(role="assistant", parts=(call,))

    def _tool_calls(self, request: Request) -> list[ToolCallPart]:
        users = _user_texts(request)
        return [
            ToolCallPart(id=f"call_{next(self._ids)}", name=name, arguments=arguments)
            for name, arguments in tool_calls_for(request.tools, users)
        ]


def tool_calls_for(
    tools: list[dict[str, Any]], user_texts: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The tools the last prompt asks for, with arguments drawn from the conversation."""
    prompt = user_texts[-1].lower() if user_texts else ""
    return [
        (spec["name"], example(spec["parameters"], user_texts, spec["name"]))
        for spec in tools
        if _asks_for(spec["name"], prompt)
    ]


class _Context:
    def __init__(self, user_texts: list[str]) -> None:
        self.user_texts = user_texts
        self.prompt = user_texts[-1] if user_texts else ""


def _user_texts(request: Request) -> list[str]:
    return [m.text for m in request.messages if m.role == "user" and m.text]


def echo(user_texts: list[str]) -> str:
    """The test provider's answer to plain text: what the user said, now and before."""
    users = user_texts
    if not users:
        return "Hello! Say something and I will remember it."
    answer = f"You said: “{users[-1]}”."
    if len(users) > 1:
        earlier = "; ".join(f"“{text}”" for text in users[:-1])
        answer += f" Earlier you told me: {earlier}."
    return answer


def _count_words(request: Request) -> int:
    """The request's input "tokens": its words (tool calls and results included)."""
    words = len((request.system or "").split())
    for message in request.messages:
        words += len(message.text.split())
        words += sum(len(r.content.split()) for r in message.tool_results)
        words += sum(1 + len(json.dumps(c.arguments_json()).split()) for c in message.tool_calls)
    return words


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w.lower() for w in re.split(r"[_\-\s]+", spaced) if w]


def _asks_for(tool_name: str, prompt: str) -> bool:
    if tool_name.lower() in prompt:
        return True
    words = [w for w in _name_words(tool_name) if w not in _VERBS]
    return bool(words) and all(w.rstrip("s") in prompt for w in words)


def example(schema: dict[str, Any], user_texts: list[str], name: str = "") -> Any:
    """A value that satisfies the JSON `schema`, drawn from the conversation where it can be."""
    return _example(schema, schema, _Context(user_texts), name)


def _example(schema: Any, root: dict[str, Any], context: _Context, name: str) -> Any:
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return _example(target, root, context, name)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _example(options[0], root, context, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = schema.get("required", list(properties))
        return {
            key: _example(sub, root, context, key)
            for key, sub in properties.items()
            if key in required
        }
    if kind == "array":
        items = schema.get("items", {})
        if isinstance(items, dict) and items.get("type") == "string" and context.user_texts:
            values: list[Any] = context.user_texts[-5:]
        else:
            values = [_example(items, root, context, name)]
        low = schema.get("minItems", 0)
        while len(values) < low:
            values.append(values[-1])
        return values[: schema.get("maxItems", len(values))]
    if kind == "integer":
        numbers = [n for n in _NUMBER.findall(context.prompt) if "." not in n]
        return int(numbers[0]) if numbers else 1
    if kind == "number":
        numbers = _NUMBER.findall(context.prompt)
        return float(numbers[0]) if numbers else 1.0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_for(name, context)


def _string_for(name: str, context: _Context) -> str:
    tokens = _PROMPT_TOKEN.findall(context.prompt)
    for stem in (w for w in _name_words(name) if w not in {"id", "name", "key"}):
        for token in tokens:
            if token.lower().startswith(stem) and len(token) > len(stem):
                return token
    quoted = re.findall(r"[\"“']([^\"”']+)[\"”']", context.prompt)
    if quoted:
        return quoted[0]
    proper = [t for t in tokens[1:] if t[0].isupper()]
    if proper:
        return proper[-1]
    return context.prompt or name or "text"
