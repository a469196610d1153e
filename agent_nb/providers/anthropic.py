"""Anthropic's Messages API over httpx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from .. import errors
from ..events import Completion, TextDelta, ThinkingDelta, Usage
from ..messages import ImagePart, Message, TextPart, ThinkingPart, ToolCallPart
from ._shape import index, obj, string, text, tokens, tool_call, wrong
from ._transport import HTTPProvider
from .base import ProviderBatch, Request

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

#: Anthropic's stop reasons in the vocabulary every Response uses.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(HTTPProvider):
    """Claude through the Messages API; the key from `api_key` or ANTHROPIC_API_KEY."""

    name = "anthropic"
    default_model = "claude-sonnet-4-5"
    #: The max_tokens a request is sent with when none is set (Anthropic requires one).
    default_max_tokens = DEFAULT_MAX_TOKENS
    output_modes = ("native", "tool", "prompted")  # older models lack output_config
    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    default_base_url = keyed_base_url = ANTHROPIC_BASE_URL

    async def takes_images(self, model: str) -> bool | None:
        # every Claude since Claude 3 takes images; the ones before took text only
        return False if model.startswith(("claude-2", "claude-instant", "claude-1")) else None

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        state = _MessageState()
        http = self._http
        if not stream:

            def parse(payload: Any) -> ProviderBatch:
                if type(payload) is not dict:
                    raise wrong("it", "an object", payload)
                if type(payload.get("content")) is not list:
                    raise wrong("content", "a list", payload.get("content"))
                state.read_message(payload)
                if state.stop_reason is None and not state.blocks:
                    raise http.no_answer("stop reason")
                events: ProviderBatch = []
                if state.thinking_text():
                    events.append(ThinkingDelta(state.thinking_text()))
                if state.text():
                    events.append(TextDelta(state.text()))
                events.append(state.completion())
                return events

            yield await http.post_json("/v1/messages", body, parse)
            return

        def read(sse: ServerSentEvent, events: ProviderBatch) -> bool:
            if sse.event == "ping" or not sse.data:
                return False
            data = http.event_object(sse)
            if data.get("type") == "error":
                raise http.error_event(data)
            state.feed(data, events)
            return state.stopped

        def finish() -> Completion:
            if not state.stopped:
                raise http.ended_early("message_stop")
            if not state.started:
                raise http.error(  # the SDK refuses such a stream too
                    errors.StreamError,
                    "the stream did not start with message_start; the turn was not saved, "
                    "try again",
                )
            if state.stop_reason is None and not state.blocks:
                raise http.no_answer("stop reason")
            return state.completion()

        async for events in http.post_sse("/v1/messages", body, read, finish):
            yield events

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a /v1/messages request."""
        system = [request.system] if request.system else []
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            if message.role == "system":
                system.append(message.text)
                continue
            role, blocks = _wire(message)
            if not blocks:
                continue
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)  # the API wants roles to alternate
            else:
                messages.append({"role": role, "content": blocks})
        for wire in messages:  # a lone text block travels as a plain string, as the SDK sends it
            content = wire["content"]
            if len(content) == 1 and content[0]["type"] == "text":
                wire["content"] = content[0]["text"]
        settings = dict(request.settings)
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        max_tokens = settings.pop("max_tokens", None)
        thinking = settings.get("thinking")
        budget = thinking.get("budget_tokens", 0) if isinstance(thinking, dict) else 0
        body["max_tokens"] = max_tokens or max(DEFAULT_MAX_TOKENS, budget + DEFAULT_MAX_TOKENS)
        if system:
            body["system"] = "\n\n".join(system)
        if request.tools:
            body["tools"] = [
                {
                    "name": t["name"],
                    "description": t.get("description") or "",
                    "input_schema": t["parameters"],
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = (
                {"type": "any"}
                if request.tool_choice == "required"
                else {"type": "tool", "name": request.tool_choice}
            )
        if request.output is not None:
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": request.output.schema}
            }
        if "stop" in settings:
            stop = settings.pop("stop")
            settings["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body.update({k: v for k, v in settings.items() if v is not None})
        if request.stream:
            body["stream"] = True
        if request.cache:
            mark_cache(body)
        return body


#: Anthropic caches a prefix only from this many tokens on (1,024 for Sonnet and Opus, more
#: for Haiku); a shorter one is not marked, so no request pays for a write it cannot use.
CACHE_MINIMUM_TOKENS = 1024
_EPHEMERAL = {"type": "ephemeral"}


def mark_cache(body: dict[str, Any]) -> None:
    """Put cache breakpoints in `body` (at most 4, the caller's own included): the tools, the
    system prompt, the end of the history before the current prompt (the last stable turn)
    and the end of the request, each only once the prefix it closes is long enough to be
    cached (~4 characters a token). With too few left, the latest places are marked.

    The next request (a tool round, the next turn) then reads everything before its new
    messages from the cache, at a tenth of the input price; writing costs 1.25x, once.
    """
    size = 0  # characters of the prefix so far

    def long_enough(piece: Any) -> bool:
        nonlocal size
        size += len(json.dumps(piece, ensure_ascii=False))
        return size >= CACHE_MINIMUM_TOKENS * 4

    marks: list[Callable[[], None]] = []
    tools, system = body.get("tools"), body.get("system")
    if tools and long_enough(tools):
        marks.append(lambda: tools.__setitem__(-1, {**tools[-1], "cache_control": _EPHEMERAL}))
    if isinstance(system, str) and system and long_enough(system):
        block = {"type": "text", "text": system, "cache_control": _EPHEMERAL}
        marks.append(lambda: body.__setitem__("system", [block]))
    elif isinstance(system, list) and system and long_enough(system):  # the caller's blocks
        marks.append(lambda: body.__setitem__("system", _marked_copy(system)))
    messages = body["messages"]
    prompt = _last_prompt(messages)
    for position, message in enumerate(messages):
        if long_enough(message["content"]) and position in (prompt - 1, len(messages) - 1):
            marks.append(lambda message=message: _mark_last_block(message))
    room = _MOST_MARKS - sum(_has_mark(block) for block in (*(tools or ()), *_blocks(system)))
    for mark in marks[max(len(marks) - room, 0) :] if room > 0 else ():
        mark()


#: Anthropic takes at most this many cache breakpoints in a request.
_MOST_MARKS = 4


def _blocks(system: Any) -> list[Any]:
    return system if isinstance(system, list) else []


def _has_mark(block: Any) -> bool:
    return isinstance(block, dict) and "cache_control" in block


def _marked_copy(blocks: list[Any]) -> list[Any]:
    """The caller's system blocks (never changed in place), the last that takes a
    breakpoint marked, unless it has one."""
    copy = list(blocks)
    _mark_last_block({"content": copy})
    return copy


def _last_prompt(messages: list[dict[str, Any]]) -> int:
    """Where the current turn's prompt is: the last user message with text (not only tool
    results); -1 if none."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        content = message["content"]
        if message["role"] == "user" and (
            isinstance(content, str) or any(b.get("type") == "text" for b in content)
        ):
            return position
    return -1


def _mark_last_block(message: dict[str, Any]) -> None:
    content = message["content"]
    if isinstance(content, str):
        content = message["content"] = [{"type": "text", "text": content}]
    for position in range(len(content) - 1, -1, -1):
        block = content[position]
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking") or (kind == "text" and not block["text"]):
            continue  # neither takes a breakpoint
        if "cache_control" not in block:
            content[position] = {**block, "cache_control": _EPHEMERAL}
        return


def _wire(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        return "user", [
            {
                "type": "tool_result",
                "tool_use_id": r.tool_call_id,
                "content": [
                    {"type": "text", "text": r.content},
                    *(
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": i.media_type,
                                "data": i.data,
                            },
                        }
                        for i in r.images
                    ),
                ]
                if r.images
                else r.content,
                **({"is_error": True} if r.is_error else {}),
            }
            for r in message.tool_results
        ]
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart) and part.text:
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            source = {"type": "base64", "media_type": part.media_type, "data": part.data}
            blocks.append({"type": "image", "source": source})
        elif isinstance(part, ToolCallPart):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": part.arguments_json(),
                }
            )
        elif isinstance(part, ThinkingPart) and part.signature and message.role == "assistant":
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    return ("assistant" if message.role == "assistant" else "user"), blocks


@dataclass
class _Block:
    kind: str
    text: list[str] = field(default_factory=list)
    signature: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


def _block(block: dict[str, Any], where: str) -> _Block:
    """A content block as it starts (stream) or as it is (whole answer)."""
    kind = text(block.get("type"), f"{where}.type") or "unknown"
    first = text(block.get("text"), f"{where}.text") or text(
        block.get("thinking"), f"{where}.thinking"
    )
    return _Block(
        kind=kind,
        text=[first or ""],
        signature=string(block.get("signature"), f"{where}.signature"),
        id=string(block.get("id"), f"{where}.id"),
        name=string(block.get("name"), f"{where}.name"),
        input=obj(block.get("input"), f"{where}.input") if kind == "tool_use" else None,
    )


def _joined(blocks: list[_Block]) -> list[_Block]:
    """`blocks` with the tool_use blocks that share an id made one, in the first's place.

    A gateway may split one call into several blocks under the same id: their pieces of
    JSON, joined, are the call's arguments (their inputs, merged, when none streamed any).
    """
    calls: dict[str, _Block] = {}
    out = []
    for block in blocks:
        first = calls.get(block.id) if block.kind == "tool_use" and block.id else None
        if first is None:
            if block.kind == "tool_use" and block.id:
                block = calls[block.id] = _Block(
                    kind=block.kind,
                    text=list(block.text),
                    id=block.id,
                    name=block.name,
                    input=dict(block.input or {}),
                )
            out.append(block)
            continue
        first.text.extend(block.text)
        first.name = first.name or block.name
        first.input.update(block.input or {})
    return out


@dataclass
class _MessageState:
    blocks: dict[int, _Block] = field(default_factory=dict)
    uncached_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    model: str | None = None
    started: bool = False
    stopped: bool = False

    def feed(self, data: dict[str, Any], events: ProviderBatch) -> None:
        """Read one stream event; text and thinking deltas are added to `events`."""
        kind = data.get("type")
        if kind == "content_block_delta":
            number = data.get("index")
            if type(number) is not int and number is not None:
                raise wrong("index", "an integer", number)
            delta = data.get("delta")
            if type(delta) is not dict:
                delta = obj(delta, "delta")
            target = self.blocks.get(number)  # type: ignore[arg-type]
            if target is None:
                return
            dtype = delta.get("type")
            if dtype == "text_delta" and target.kind == "text":
                piece = string(delta.get("text"), "delta.text")
                target.text.append(piece)
                events.append(TextDelta(piece))
            elif dtype == "thinking_delta":
                piece = string(delta.get("thinking"), "delta.thinking")
                target.text.append(piece)
                events.append(ThinkingDelta(piece))
            elif dtype == "signature_delta":
                target.signature += string(delta.get("signature"), "delta.signature")
            elif dtype == "input_json_delta":
                target.text.append(string(delta.get("partial_json"), "delta.partial_json"))
        elif kind == "message_start":
            self.started = True
            message = obj(data.get("message"), "message")
            self.model = text(message.get("model"), "message.model")
            self._take_usage(message.get("usage"), "message.usage")
        elif kind == "content_block_start":
            position = index(data.get("index"), "index", len(self.blocks))
            self.blocks[position] = _block(
                obj(data.get("content_block"), "content_block"), "content_block"
            )
        elif kind == "message_delta":
            delta = obj(data.get("delta"), "delta")
            self.stop_reason = (
                text(delta.get("stop_reason"), "delta.stop_reason") or self.stop_reason
            )
            self._take_usage(data.get("usage"), "usage")
        elif kind == "message_stop":
            self.stopped = True

    def read_message(self, payload: dict[str, Any]) -> None:
        self.model = text(payload.get("model"), "model")
        self.stop_reason = text(payload.get("stop_reason"), "stop_reason")
        self._take_usage(payload.get("usage"), "usage")
        for position, block in enumerate(payload["content"]):
            where = f"content[{position}]"
            self.blocks[position] = _block(obj(block, where), where)
        self.started = self.stopped = True

    def _take_usage(self, raw: Any, where: str) -> None:
        """Take the usage figures `raw` has (message_start, then cumulative in message_delta).

        Anthropic's `input_tokens` leaves out both cache counters: the total adds them.
        """
        usage = obj(raw, where)
        read = tokens(usage, "cache_read_input_tokens", where)
        if read is not None:
            self.cached_tokens = read
        written = tokens(usage, "cache_creation_input_tokens", where)
        if written is not None:
            self.cache_write_tokens = written
        uncached = tokens(usage, "input_tokens", where)
        if uncached is not None:
            self.uncached_tokens = uncached
        output = tokens(usage, "output_tokens", where)
        if output is not None:
            self.output_tokens = output  # cumulative in message_delta

    def text(self) -> str:
        return "".join("".join(b.text) for b in self._ordered() if b.kind == "text")

    def thinking_text(self) -> str:
        return "".join("".join(b.text) for b in self._ordered() if b.kind == "thinking")

    def _ordered(self) -> list[_Block]:
        return [self.blocks[i] for i in sorted(self.blocks)]

    def completion(self) -> Completion:
        parts: list[Any] = []
        for block in _joined(self._ordered()):
            if block.kind == "text":
                text = "".join(block.text)
                if parts and isinstance(parts[-1], TextPart):
                    parts[-1] = TextPart(text=parts[-1].text + text)
                elif text:
                    parts.append(TextPart(text=text))
            elif block.kind == "thinking":
                parts.append(
                    ThinkingPart(text="".join(block.text), signature=block.signature or None)
                )
            elif block.kind == "tool_use":
                raw = "".join(block.text)
                if raw.strip():
                    parts.append(tool_call(block.id, block.name, raw))
                else:
                    parts.append(ToolCallPart(id=block.id, name=block.name, arguments=block.input))
            # other block kinds (server tools and their results) are skipped
        refusal = None
        if self.stop_reason == "refusal":
            refusal = self.text() or "the model declined to answer"
        return Completion(
            message=Message(role="assistant", parts=tuple(parts)),
            usage=Usage(
                input_tokens=self.uncached_tokens + self.cached_tokens + self.cache_write_tokens,
                output_tokens=self.output_tokens,
                cached_tokens=self.cached_tokens,
                cache_write_tokens=self.cache_write_tokens,
            ),
            finish_reason=FINISH_REASONS.get(self.stop_reason or "", self.stop_reason),
            model=self.model,
            refusal=refusal,
        )
