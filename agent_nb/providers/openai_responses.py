"""OpenAI's Responses API: text, function calls, reasoning summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from .. import errors
from ..events import Completion, TextDelta, ThinkingDelta, Usage
from ..messages import Message, TextPart, ThinkingPart, ToolCallPart
from ._shape import items, obj, string, text, tokens, tool_call, wrong
from ._transport import HTTPClient
from .base import ProviderBatch, Request
from .openai import OpenAIProvider, _arguments_text, content_list, reasoning_model

_TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


class OpenAIResponsesProvider(OpenAIProvider):
    """The Responses API (`/v1/responses`), with the same key and address as `"openai"`."""

    name = "openai-responses"
    json_object_form = False

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        state = _ResponseState()
        http = self._http
        if not stream:

            def parse(payload: Any) -> ProviderBatch:
                if type(payload) is not dict:
                    raise wrong("it", "an object", payload)
                if type(payload.get("output")) is not list:
                    raise wrong("output", "a list", payload.get("output"))
                state.finish(payload, http, "")
                events: ProviderBatch = []
                if state.thinking:
                    events.append(ThinkingDelta("".join(state.thinking)))
                if state.text:
                    events.append(TextDelta("".join(state.text)))
                events.append(state.completion())
                return events

            yield await http.post_json("/responses", body, parse)
            return

        def read(sse: ServerSentEvent, events: ProviderBatch) -> bool:
            if not sse.data or sse.data == "[DONE]":
                return False
            data = http.event_object(sse)
            event = text(data.get("type"), "type") or sse.event
            if event == "error":
                raise http.error_event(data)
            if event == "response.output_text.delta":
                piece = string(data.get("delta"), "delta")
                state.text.append(piece)
                events.append(TextDelta(piece))
            elif event == "response.reasoning_summary_text.delta":
                piece = string(data.get("delta"), "delta")
                state.thinking.append(piece)
                events.append(ThinkingDelta(piece))
            elif event == "response.refusal.delta":
                state.refusal.append(string(data.get("delta"), "delta"))
            elif event in _TERMINAL:
                state.finish(obj(data.get("response"), "response"), http, "response.")
                return True
            return False

        def finish() -> Completion:
            if not state.finished:
                raise http.ended_early("response.completed")
            return state.completion()

        async for events in http.post_sse("/responses", body, read, finish):
            yield events

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
        if request.tool_choice is not None:
            body["tool_choice"] = (
                "required"
                if request.tool_choice == "required"
                else {"type": "function", "name": request.tool_choice}
            )
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
        elif (
            self.reasoning_rules and reasoning_model(request.model) and "reasoning" not in settings
        ):
            body["reasoning"] = {"summary": "auto"}
        body.update({k: v for k, v in settings.items() if v is not None})
        if request.stream:
            body["stream"] = True
        return body


def _items(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": r.tool_call_id,
                "output": [
                    {"type": "input_text", "text": r.content},
                    *({"type": "input_image", "image_url": i.data_url} for i in r.images),
                ]
                if r.images
                else r.content,
            }
            for r in message.tool_results
        ]
    items: list[dict[str, Any]] = []
    if message.images:
        content = content_list(
            message,
            lambda text: {"type": "input_text", "text": text},
            lambda image: {"type": "input_image", "image_url": image.data_url, "detail": "auto"},
        )
        items.append({"role": message.role, "content": content})
    elif message.text or not message.tool_calls:
        role = "developer" if message.role == "system" else message.role
        items.append({"role": role, "content": message.text})
    for call in message.tool_calls:
        items.append(
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": _arguments_text(call),
            }
        )
    return items


@dataclass
class _ResponseState:
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: list[ToolCallPart] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None
    finished: bool = False

    def finish(self, response: dict[str, Any], http: HTTPClient, where: str) -> None:
        """Read the final response object (at `where`): its output items, status and usage."""
        self.finished = True
        self.model = text(response.get("model"), f"{where}model")
        streamed_text = bool(self.text)
        for position, item in enumerate(items(response.get("output"), f"{where}output")):
            at = f"{where}output[{position}]"
            item = obj(item, at)
            kind = text(item.get("type"), f"{at}.type")
            if kind == "function_call":
                name = string(item.get("name"), f"{at}.name")
                call_id = text(item.get("call_id"), f"{at}.call_id")
                arguments = string(item.get("arguments"), f"{at}.arguments")
                call_id = call_id or string(item.get("id"), f"{at}.id")
                self.calls.append(tool_call(call_id, name, arguments))
            elif kind == "message" and not streamed_text:
                for number, content in enumerate(items(item.get("content"), f"{at}.content")):
                    part = f"{at}.content[{number}]"
                    content = obj(content, part)
                    ctype = content.get("type")
                    if ctype == "output_text":
                        self.text.append(string(content.get("text"), f"{part}.text"))
                    elif ctype == "refusal" and not self.refusal:
                        self.refusal.append(string(content.get("refusal"), f"{part}.refusal"))
            elif kind == "reasoning" and not self.thinking:
                for number, summary in enumerate(items(item.get("summary"), f"{at}.summary")):
                    part = f"{at}.summary[{number}]"
                    self.thinking.append(string(obj(summary, part).get("text"), f"{part}.text"))
        usage = obj(response.get("usage"), f"{where}usage")
        self.usage = Usage(
            input_tokens=tokens(usage, "input_tokens", f"{where}usage") or 0,
            output_tokens=tokens(usage, "output_tokens", f"{where}usage") or 0,
            cached_tokens=tokens(usage, "input_tokens_details.cached_tokens", f"{where}usage") or 0,
            reasoning_tokens=tokens(
                usage, "output_tokens_details.reasoning_tokens", f"{where}usage"
            )
            or 0,
        )
        status = text(response.get("status"), f"{where}status")
        details = obj(response.get("incomplete_details"), f"{where}incomplete_details")
        reason = text(details.get("reason"), f"{where}incomplete_details.reason")
        if status == "failed":
            error = obj(response.get("error"), f"{where}error")
            message = text(error.get("message"), f"{where}error.message") or "the response failed"
            code = text(error.get("code"), f"{where}error.code")
            raise http.context_overflow(message, code) or http.error(
                errors.ServerError, message, code=code
            )
        if status == "incomplete":
            self.finish_reason = "length" if reason == "max_output_tokens" else (reason or "length")
        elif self.refusal:
            self.finish_reason = "content_filter"
        else:
            self.finish_reason = "tool_calls" if self.calls else "stop"

    def completion(self) -> Completion:
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
