"""OpenAI Chat Completions, and every server that speaks it (Ollama, vLLM, llama.cpp, ...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from ..events import Completion, TextDelta, ThinkingDelta, Usage
from ..messages import Message, TextPart, ThinkingPart, ToolCallPart
from ._http import HTTPClient, HTTPProvider
from .base import ProviderBatch, Request

OPENAI_BASE_URL = "https://api.openai.com/v1"
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models take `developer` messages and `max_completion_tokens`."""
    return model.split("/")[-1].startswith(_REASONING_PREFIXES)


class OpenAIProvider(HTTPProvider):
    """OpenAI's Chat Completions API over httpx.

    The key comes from `api_key` or OPENAI_API_KEY, the address from `base_url` or
    OPENAI_BASE_URL, as the official SDK reads them. A server at another address needs a
    key only if it says so.
    """

    name = "openai"
    default_model = "gpt-4o-mini"
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = keyed_base_url = OPENAI_BASE_URL

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        if not stream:
            yield self._parse_body(await self._http.post_json("/chat/completions", body))
            return
        state = _StreamState()
        feed, decode, http = state.feed, self._http.event_json, self._http

        def read(sse: ServerSentEvent, events: ProviderBatch) -> bool:
            data = sse.data
            if data == "[DONE]":
                state.done = True
                return True
            if data:
                chunk = decode(data, "a stream chunk")
                if type(chunk) is not dict or "error" in chunk or sse.event == "error":
                    raise http.error_event(chunk)
                feed(chunk, events)
            return False

        async for events in http.post_sse("/chat/completions", body, read):
            yield events
        if not state.done and state.finish_reason is None:
            raise http.ended_early("[DONE] or a finish reason")
        yield [state.completion(http)]

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a /chat/completions request."""
        reasoning = reasoning_model(request.model)
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append(
                {"role": "developer" if reasoning else "system", "content": request.system}
            )
        for message in request.messages:
            messages.extend(_wire_messages(message))
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": _function(spec)} for spec in request.tools
            ]
        if request.output is not None:
            json_schema: dict[str, Any] = {
                "name": request.output.name,
                "schema": request.output.schema,
                "strict": request.output.strict,
            }
            if request.output.description:
                json_schema["description"] = request.output.description
            body["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        for key, value in request.settings.items():
            if value is None:
                continue
            if key == "max_tokens" and reasoning:
                key = "max_completion_tokens"
            body[key] = value
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _parse_body(self, payload: Any) -> ProviderBatch:
        try:
            choice = payload["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise self._http.malformed(
                "the answer has no choices[0].message", json.dumps(payload)
            ) from None
        state = _StreamState()
        state.model = payload.get("model")
        state.feed_message(message)
        state.finish_reason = choice.get("finish_reason")
        state.usage = _usage(payload.get("usage"))
        events: ProviderBatch = []
        if state.thinking:
            events.append(ThinkingDelta("".join(state.thinking)))
        if state.text:
            events.append(TextDelta("".join(state.text)))
        events.append(state.completion(self._http))
        return events


@dataclass
class _ToolCallBuffer:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamState:
    """Accumulates chunks into the final assistant message."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCallBuffer] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    done: bool = False

    def feed(self, chunk: dict[str, Any], events: ProviderBatch) -> None:
        """Add the events of one chunk to `events`; a plain `{"content": ...}` delta is fast."""
        if self.model is None:
            self.model = chunk.get("model")
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if len(delta) > 1 or content is None:
                    self._feed_rare(delta, events)
                if content:
                    self.text.append(content)
                    events.append(TextDelta(content))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _feed_rare(self, delta: dict[str, Any], events: ProviderBatch) -> None:
        """Reasoning, refusals and tool calls."""
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thinking, str) and thinking:
            self.thinking.append(thinking)
            events.append(ThinkingDelta(thinking))
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        if delta.get("tool_calls"):
            for position, call in enumerate(delta["tool_calls"]):
                index = call.get("index", position)
                buffer = self.calls.setdefault(index, _ToolCallBuffer())
                if call.get("id"):
                    buffer.id = call["id"]
                function = call.get("function") or {}
                if function.get("name") and not buffer.name:
                    buffer.name = function["name"]  # some servers repeat it on every chunk
                if function.get("arguments"):
                    buffer.arguments.append(function["arguments"])

    def feed_message(self, message: dict[str, Any]) -> None:
        thinking = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(thinking, str) and thinking:
            self.thinking.append(thinking)
        if message.get("content"):
            self.text.append(message["content"])
        if message.get("refusal"):
            self.refusal.append(message["refusal"])
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            self.calls[index] = _ToolCallBuffer(
                id=call.get("id") or "",
                name=function.get("name") or "",
                arguments=[function.get("arguments") or ""],
            )

    def completion(self, http: HTTPClient) -> Completion:
        parts: list[Any] = []
        if self.thinking:
            parts.append(ThinkingPart(text="".join(self.thinking)))
        if self.text:
            parts.append(TextPart(text="".join(self.text)))
        for index in sorted(self.calls):
            buffer = self.calls[index]
            arguments = http.tool_arguments(buffer.name, "".join(buffer.arguments))
            parts.append(
                ToolCallPart(id=buffer.id or f"call_{index}", name=buffer.name, arguments=arguments)
            )
        refusal = "".join(self.refusal) or None
        return Completion(
            message=Message(role="assistant", parts=tuple(parts)),
            usage=self.usage,
            finish_reason=self.finish_reason,
            model=self.model,
            refusal=refusal,
        )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=raw.get("prompt_tokens") or 0,
        output_tokens=raw.get("completion_tokens") or 0,
        cached_tokens=prompt_details.get("cached_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def _function(spec: dict[str, Any]) -> dict[str, Any]:
    function = {"name": spec["name"], "parameters": spec["parameters"]}
    if spec.get("description"):
        function["description"] = spec["description"]
    return function


def _wire_messages(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": r.content}
            for r in message.tool_results
        ]
    wire: dict[str, Any] = {"role": message.role, "content": message.text}
    calls = message.tool_calls
    if calls:
        wire["content"] = message.text or None
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments_json())},
            }
            for call in calls
        ]
    return [wire]


class OllamaProvider(OpenAIProvider):
    """A local Ollama server through its OpenAI-compatible endpoint; no key needed."""

    name = "ollama"
    default_model = "llama3.2"
    key_env = "OLLAMA_API_KEY"
    base_url_env = "OLLAMA_BASE_URL"
    default_base_url = "http://localhost:11434/v1"
    keyed_base_url = None


class OpenAICompatibleProvider(OpenAIProvider):
    """Any server that speaks Chat Completions (vLLM, llama.cpp, LM Studio, proxies)."""

    name = "openai-compatible"
    default_model = None
    key_env = "OPENAI_COMPATIBLE_API_KEY"
    base_url_env = "OPENAI_COMPATIBLE_BASE_URL"
    default_base_url = keyed_base_url = None
