"""OpenAI's Responses API: text, function calls, reasoning summaries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from .. import errors
from ..events import Completion, TextDelta, ThinkingDelta, Usage
from ..messages import Message, TextPart, ThinkingPart, ToolCallPart
from .base import ProviderBatch, Request
from .openai import OpenAIProvider, reasoning_model

_TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


class OpenAIResponsesProvider(OpenAIProvider):
    """The Responses API (`/v1/responses`), with the same key and address as `"openai"`."""

    name = "openai-responses"

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        state = _State()
        events: ProviderBatch = []
        if not stream:
            payload = await self._http.post_json("/responses", body)
            if not isinstance(payload, dict) or not isinstance(payload.get("output"), list):
                raise self._http.malformed("the answer has no output list", json.dumps(payload))
            state.finish(payload, self._http)
            if state.thinking:
                events.append(ThinkingDelta("".join(state.thinking)))
            if state.text:
                events.append(TextDelta("".join(state.text)))
            events.append(state.completion(self._http))
            yield events
            return
        http = self._http

        def read(sse: ServerSentEvent, events: ProviderBatch) -> bool:
            if not sse.data or sse.data == "[DONE]":
                return False
            data = http.event_json(sse.data)
            kind = data.get("type") or sse.event
            if kind == "error" or sse.event == "error":
                raise http.error_event(data)
            if kind == "response.output_text.delta":
                state.text.append(data.get("delta", ""))
                events.append(TextDelta(data.get("delta", "")))
            elif kind == "response.reasoning_summary_text.delta":
                state.thinking.append(data.get("delta", ""))
                events.append(ThinkingDelta(data.get("delta", "")))
            elif kind == "response.refusal.delta":
                state.refusal.append(data.get("delta", ""))
            elif kind in _TERMINAL:
                state.finish(data.get("response") or {}, http)
                return True
            return False

        async for events in http.post_sse("/responses", body, read):
            yield events
        if not state.finished:
            raise http.ended_early("response.completed")
        yield [state.completion(http)]

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a /v1/responses request."""
        items: list[dict[str, Any]] = []
        for message in request.messages:
            items.extend(_items(message))
        body: dict[str, Any] = {"model": request.model, "input": items}
        if request.system:
            body["instructions"] = request.system
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t["name"],
                    "description": t.get("description") or "",
                    "parameters": t["parameters"],
                    "strict": False,
                }
                for t in request.tools
            ]
        if request.output is not None:
            fmt: dict[str, Any] = {
                "type": "json_schema",
                "name": request.output.name,
                "schema": request.output.schema,
                "strict": request.output.strict,
            }
            if request.output.description:
                fmt["description"] = request.output.description
            body["text"] = {"format": fmt}
        settings = dict(request.settings)
        if "max_tokens" in settings:
            settings["max_output_tokens"] = settings.pop("max_tokens")
        if "reasoning_effort" in settings:
            body["reasoning"] = {"effort": settings.pop("reasoning_effort")}
        elif reasoning_model(request.model) and "reasoning" not in settings:
            body["reasoning"] = {"summary": "auto"}
        body.update({k: v for k, v in settings.items() if v is not None})
        if request.stream:
            body["stream"] = True
        return body


def _items(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "function_call_output", "call_id": r.tool_call_id, "output": r.content}
            for r in message.tool_results
        ]
    items: list[dict[str, Any]] = []
    if message.text or not message.tool_calls:
        role = "developer" if message.role == "system" else message.role
        items.append({"role": role, "content": message.text})
    for call in message.tool_calls:
        items.append(
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": json.dumps(call.arguments_json()),
            }
        )
    return items


@dataclass
class _State:
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: list[ToolCallPart] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None
    finished: bool = False

    def finish(self, response: dict[str, Any], http: Any) -> None:
        """Read the final response object: its output items, status and usage."""
        self.finished = True
        self.model = response.get("model")
        streamed_text = bool(self.text)
        for item in response.get("output") or ():
            kind = item.get("type")
            if kind == "function_call":
                arguments = http.tool_arguments(item.get("name") or "", item.get("arguments") or "")
                self.calls.append(
                    ToolCallPart(
                        id=item.get("call_id") or item.get("id") or "",
                        name=item.get("name") or "",
                        arguments=arguments,
                    )
                )
            elif kind == "message" and not streamed_text:
                for content in item.get("content") or ():
                    if content.get("type") == "output_text":
                        self.text.append(content.get("text", ""))
                    elif content.get("type") == "refusal" and not self.refusal:
                        self.refusal.append(content.get("refusal", ""))
            elif kind == "reasoning" and not self.thinking:
                self.thinking.extend(s.get("text", "") for s in item.get("summary") or ())
        raw_usage = response.get("usage") or {}
        self.usage = Usage(
            input_tokens=raw_usage.get("input_tokens") or 0,
            output_tokens=raw_usage.get("output_tokens") or 0,
            cached_tokens=(raw_usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
            reasoning_tokens=(raw_usage.get("output_tokens_details") or {}).get("reasoning_tokens")
            or 0,
        )
        status = response.get("status")
        reason = (response.get("incomplete_details") or {}).get("reason")
        if status == "failed":
            error = response.get("error") or {}
            raise errors.ServerError(
                error.get("message") or "the response failed",
                provider="openai-responses",
                code=error.get("code"),
            )
        if status == "incomplete":
            self.finish_reason = "length" if reason == "max_output_tokens" else (reason or "length")
        elif self.refusal:
            self.finish_reason = "content_filter"
        else:
            self.finish_reason = "tool_calls" if self.calls else "stop"

    def completion(self, http: Any) -> Completion:
        parts: list[Any] = []
        if self.thinking:
            parts.append(ThinkingPart(text="".join(self.thinking)))
        if self.text:
            parts.append(TextPart(text="".join(self.text)))
        parts.extend(self.calls)
        return Completion(
            message=Message(role="assistant", parts=tuple(parts)),
            usage=self.usage,
            finish_reason=self.finish_reason,
            model=self.model,
            refusal="".join(self.refusal) or None,
        )
