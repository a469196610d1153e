"""OpenAI Chat Completions, and every server that speaks it (Ollama, vLLM, llama.cpp, ...)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from ..events import Completion, TextDelta, ThinkingDelta, Usage
from ..messages import ImagePart, Message, TextPart, ThinkingPart, ToolCallPart
from ._errors import window_size
from ._shape import (
    Malformed,
    decode_json,
    index,
    items,
    obj,
    string,
    text,
    tokens,
    tool_call,
    wrong,
)
from ._transport import HTTPProvider
from .base import ProviderBatch, Request

OPENAI_BASE_URL = "https://api.openai.com/v1"
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_DATA_URL = re.compile(r"data:image/\w+;base64,[A-Za-z0-9+/=]*")
#: OpenAI's models that take no images (every newer one does).
_TEXT_ONLY = re.compile(
    r"gpt-3\.5.*|gpt-4(-0314|-0613|-32k.*|-1106-preview|-0125-preview|-turbo-preview)?"
    r"|o1-mini.*|o1-preview.*|o3-mini.*|(text-|davinci|babbage).*"
)


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
    #: Chat Completions servers other than OpenAI may take `{"type": "json_object", ...}`.
    json_object_form = True

    def __init__(self, *, reasoning_rules: bool | None = None, **options: Any) -> None:
        """`reasoning_rules`: apply OpenAI's rules for its reasoning models (o1, o3, gpt-5:
        `developer` messages, `max_completion_tokens`) to models so named; by default only
        on OpenAI's own servers, where those names mean those models."""
        super().__init__(**options)
        host = httpx.URL(self.base_url).host
        #: OpenAI itself (or Azure OpenAI), not another server that speaks its API.
        self.official = host == "api.openai.com" or host.endswith(".openai.azure.com")
        self.reasoning_rules = self.official if reasoning_rules is None else reasoning_rules
        self._image_support: dict[str, bool | None] = {}  # by model, as the server told
        self._windows: dict[str, int | None] = {}  # the context window, by model, as told
        self._props: dict[str, Any] = {}  # what the server says of a model (`_ask_props`)
        if not self.official and self.json_object_form:
            # another server: json_schema first, else the json_object-with-a-schema form
            # (llama.cpp's, grammar-enforced) before words in the instructions
            self.output_modes = ("native", "json_object", "prompted")

    async def takes_images(self, model: str) -> bool | None:
        if self.official:
            return False if _TEXT_ONLY.fullmatch(model.split("/")[-1]) else None
        if model not in self._image_support:
            self._image_support[model] = await self._server_takes_images(model)
        return self._image_support[model]

    async def _server_takes_images(self, model: str) -> bool | None:
        """What the server says: llama.cpp's in `GET /props` (`modalities.vision`)."""
        modalities = _field(await self._server_props(model), "modalities")
        vision = _field(modalities, "vision")
        return vision if isinstance(vision, bool) else None

    async def _server_props(self, model: str) -> Any:
        """What the server says about `model` (None: nothing), asked once per model: the one
        answer serves both the vision probe and the window."""
        if model not in self._props:
            self._props[model] = await self._ask_props(model)
        return self._props[model]

    async def _ask_props(self, model: str) -> Any:
        """llama.cpp's `GET /props`."""
        return await self._http.probe("GET", f"{server_root(self.base_url)}/props")

    async def context_window(self, model: str) -> int | None:
        if self.official:
            return None  # OpenAI's windows are in genai-prices' table
        if model not in self._windows:
            self._windows[model] = await self._server_window(model)
        return self._windows[model]

    async def _server_window(self, model: str) -> int | None:
        """The window the server loaded `model` with, as the local servers say it (asked once
        per model; a server that says none costs these probes once):

        - llama.cpp's `llama-server`: `GET /props`, `default_generation_settings.n_ctx` (the
          window of one slot, what one request may fill);
        - vLLM: `GET /v1/models`, the model's `max_model_len` (llama.cpp's `meta.n_ctx` there);
        - LM Studio: `GET /api/v0/models/{model}`, `loaded_context_length` (the model's own
          `max_context_length` is what it could be loaded with, not what it was).
        """
        props = await self._server_props(model)
        if window := window_size(_field(_field(props, "default_generation_settings"), "n_ctx")):
            return window
        listed = await self._http.probe("GET", f"{self.base_url}/models")
        for entry in _listed(listed, "data"):
            if _field(entry, "id") == model:
                window = window_size(_field(entry, "max_model_len"))
                if window := window or window_size(_field(_field(entry, "meta"), "n_ctx")):
                    return window
        if isinstance(props, dict):  # llama.cpp: LM Studio has no /props
            return None
        url = f"{server_root(self.base_url)}/api/v0/models/{quote(model, safe='')}"
        return window_size(_field(await self._http.probe("GET", url), "loaded_context_length"))

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        http = self._http
        if not stream:
            yield await http.post_json("/chat/completions", body, self._parse_body)
            return
        state = _StreamState()
        feed, decode = state.feed, http.event_object

        def read(sse: ServerSentEvent, events: ProviderBatch) -> bool:
            data = sse.data
            if data == "[DONE]":
                state.done = True
                return True
            if data:
                try:  # event_object's work, inline: this runs for every chunk
                    chunk = decode_json(data)
                except (ValueError, RecursionError):
                    chunk = None
                if type(chunk) is not dict or sse.event == "error":
                    chunk = decode(sse, "a stream chunk")  # raises what is wrong
                if "error" in chunk:
                    raise http.error_event(chunk)
                feed(chunk, events)
            return False

        def finish() -> Completion:
            if state.finish_reason is None:
                if not state.done:
                    raise http.ended_early("[DONE] or a finish reason", nothing=state.empty())
                if state.empty():
                    # only `[DONE]`: a server that failed quietly, not an empty answer
                    raise http.no_answer("finish reason")
            if state.usage is None:  # a server that sends none, even when asked
                state.usage = estimate_usage(body, state)
            return state.completion()

        async for events in http.post_sse("/chat/completions", body, read, finish):
            yield events

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a /chat/completions request."""
        reasoning = self.reasoning_rules and reasoning_model(request.model)
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append(
                {"role": "developer" if reasoning else "system", "content": request.system}
            )
        for message in request.messages:
            messages.extend(_wire_messages(message, self.official))
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": _function(spec)} for spec in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = (
                "required"
                if request.tool_choice == "required"
                else {"type": "function", "function": {"name": request.tool_choice}}
            )
        if request.output is not None and request.output.form == "json_object":
            body["response_format"] = {"type": "json_object", "schema": request.output.schema}
        elif request.output is not None:
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
        if type(payload) is not dict:
            raise wrong("it", "an object", payload)
        choices = items(payload.get("choices"), "choices")
        choice = obj(choices[0] if choices else None, "choices[0]")
        if choice.get("message") is None:
            raise Malformed("it has no choices[0].message")
        state = _StreamState()
        state.model = text(payload.get("model"), "model")
        state.feed_message(obj(choice["message"], "choices[0].message"))
        state.finish_reason = text(choice.get("finish_reason"), "choices[0].finish_reason") or None
        state.usage = _read_usage(payload.get("usage"))
        if state.finish_reason is None and state.empty():
            raise self._http.no_answer("finish reason")
        events: ProviderBatch = []
        if state.thinking:
            events.append(ThinkingDelta("".join(state.thinking)))
        if state.text:
            events.append(TextDelta("".join(state.text)))
        events.append(state.completion())
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
    usage: Usage | None = None  # None: the stream reported none
    model: str | None = None
    done: bool = False

    def feed(self, chunk: dict[str, Any], events: ProviderBatch) -> None:
        """Add the events of one chunk to `events`; a plain `{"content": ...}` delta is fast."""
        if self.model is None:
            self.model = text(chunk.get("model"), "model")
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = _read_usage(usage)
        choices = chunk.get("choices")
        if type(choices) is not list:
            choices = items(choices, "choices")
        for choice in choices:
            if type(choice) is not dict:
                raise wrong(_at(choices, choice), "an object", choice)
            number = choice.get("index", 0)
            if number != 0 and number is not None:
                index(number, f"{_at(choices, choice)}.index", 0)
                continue  # another choice than the first (n > 1)
            delta = choice.get("delta")
            if type(delta) is dict:
                content = delta.get("content")
                if len(delta) > 1 or content is None:
                    self._feed_rare(delta, events, f"{_at(choices, choice)}.delta")
                if type(content) is str:
                    if content:
                        self.text.append(content)
                        events.append(TextDelta(content))
                elif content is not None:
                    raise wrong(f"{_at(choices, choice)}.delta.content", "a string", content)
            elif delta is not None:
                raise wrong(f"{_at(choices, choice)}.delta", "an object", delta)
            finish = choice.get("finish_reason")
            if finish is not None and (
                finish := text(finish, f"{_at(choices, choice)}.finish_reason")
            ):
                self.finish_reason = finish

    def _feed_rare(self, delta: dict[str, Any], events: ProviderBatch, where: str) -> None:
        """Reasoning, refusals and tool calls."""
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thinking, str) and thinking:  # some servers put an object there: not ours
            self.thinking.append(thinking)
            events.append(ThinkingDelta(thinking))
        if refusal := text(delta.get("refusal"), f"{where}.refusal"):
            self.refusal.append(refusal)
        for position, call in enumerate(items(delta.get("tool_calls"), f"{where}.tool_calls")):
            at = f"{where}.tool_calls[{position}]"
            call = obj(call, at)
            buffer = self.calls.setdefault(
                index(call.get("index"), f"{at}.index", position), _ToolCallBuffer()
            )
            if call_id := text(call.get("id"), f"{at}.id"):
                buffer.id = call_id
            function = obj(call.get("function"), f"{at}.function")
            name = text(function.get("name"), f"{at}.function.name")
            if name and not buffer.name:
                buffer.name = name  # some servers repeat it on every chunk
            if arguments := text(function.get("arguments"), f"{at}.function.arguments"):
                buffer.arguments.append(arguments)

    def feed_message(self, message: dict[str, Any]) -> None:
        where = "choices[0].message"
        thinking = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(thinking, str) and thinking:
            self.thinking.append(thinking)
        if content := text(message.get("content"), f"{where}.content"):
            self.text.append(content)
        if refusal := text(message.get("refusal"), f"{where}.refusal"):
            self.refusal.append(refusal)
        for position, call in enumerate(items(message.get("tool_calls"), f"{where}.tool_calls")):
            at = f"{where}.tool_calls[{position}]"
            call = obj(call, at)
            function = obj(call.get("function"), f"{at}.function")
            self.calls[position] = _ToolCallBuffer(
                id=string(call.get("id"), f"{at}.id"),
                name=string(function.get("name"), f"{at}.function.name"),
                arguments=[string(function.get("arguments"), f"{at}.function.arguments")],
            )

    def empty(self) -> bool:
        """Whether nothing of an answer arrived: no text, reasoning, refusal or tool call."""
        return not (self.text or self.thinking or self.refusal or self.calls)

    def completion(self) -> Completion:
        parts: list[Any] = []
        if self.thinking:
            parts.append(ThinkingPart(text="".join(self.thinking)))
        if self.text:
            parts.append(TextPart(text="".join(self.text)))
        for position in sorted(self.calls):
            buffer = self.calls[position]
            parts.append(
                tool_call(buffer.id or f"call_{position}", buffer.name, "".join(buffer.arguments))
            )
        refusal = "".join(self.refusal) or None
        return Completion(
            message=Message(role="assistant", parts=tuple(parts)),
            usage=self.usage or Usage(),
            finish_reason=self.finish_reason,
            model=self.model,
            refusal=refusal,
        )


def _at(choices: list[Any], choice: Any) -> str:
    """Where `choice` is, for an error (found when needed: the loop does not count)."""
    return f"choices[{choices.index(choice)}]"


def estimate_usage(body: dict[str, Any], state: _StreamState) -> Usage:
    """Usage guessed at ~4 characters a token (an image as ~1,000 tokens, not by its base64),
    marked estimated (1 model call)."""
    sent = _DATA_URL.sub("x" * 4_000, json.dumps(body.get("messages", []), ensure_ascii=False))
    said = (
        "".join(state.text)
        + "".join("".join(b.arguments) for b in state.calls.values())
        + "".join(state.thinking)
    )
    return Usage(
        input_tokens=max(1, len(sent) // 4),
        output_tokens=(len(said) + 3) // 4,
        estimated=1,
    )


def _read_usage(raw: Any) -> Usage:
    usage = obj(raw, "usage")
    return Usage(
        input_tokens=tokens(usage, "prompt_tokens", "usage") or 0,
        output_tokens=tokens(usage, "completion_tokens", "usage") or 0,
        cached_tokens=tokens(usage, "prompt_tokens_details.cached_tokens", "usage") or 0,
        reasoning_tokens=tokens(usage, "completion_tokens_details.reasoning_tokens", "usage") or 0,
    )


def _function(spec: dict[str, Any]) -> dict[str, Any]:
    function = {"name": spec["name"], "parameters": spec["parameters"]}
    if spec.get("description"):
        function["description"] = spec["description"]
    return function


def _wire_messages(message: Message, official: bool = True) -> list[dict[str, Any]]:
    if message.role == "tool":
        wire = [
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": r.content}
            for r in message.tool_results
        ]
        shown = [r for r in message.tool_results if r.images]
        if shown:  # a tool message holds text only: the images follow as the user's
            content: list[dict[str, Any]] = []
            for r in shown:
                content.append({"type": "text", "text": f"Images from tool call {r.tool_call_id}:"})
                content += [
                    {"type": "image_url", "image_url": {"url": i.data_url}} for i in r.images
                ]
            wire.append({"role": "user", "content": content})
        return wire
    wire: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.images:
        wire["content"] = content_list(
            message,
            lambda text: {"type": "text", "text": text},
            lambda image: {"type": "image_url", "image_url": {"url": image.data_url}},
        )
    calls = message.tool_calls
    if calls:
        # OpenAI sends null beside tool calls; other servers' chat templates want a string
        wire["content"] = message.text or (None if official else "")
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_text(call)},
            }
            for call in calls
        ]
    return [wire]


def _field(value: Any, name: str) -> Any:
    """`value[name]` if `value` is a JSON object, else None: a probe's answer, any shape."""
    return value.get(name) if type(value) is dict else None


def _listed(value: Any, name: str) -> list[Any]:
    """The list `value[name]`, or [] for any other shape."""
    found = _field(value, name)
    return found if type(found) is list else []


def server_root(base_url: str) -> str:
    """The server's own address: `base_url` without the `/v1` of its OpenAI-compatible API."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def content_list(
    message: Message,
    text: Callable[[str], dict[str, Any]],
    image: Callable[[ImagePart], dict[str, Any]],
) -> list[dict[str, Any]]:
    """A message's text and images as a list of content parts, in order."""
    return [
        image(part) if isinstance(part, ImagePart) else text(part.text)
        for part in message.parts
        if isinstance(part, ImagePart) or (isinstance(part, TextPart) and part.text)
    ]


class OllamaProvider(OpenAIProvider):
    """A local Ollama server through its OpenAI-compatible endpoint; no key needed."""

    name = "ollama"
    default_model = "llama3.2"
    key_env = "OLLAMA_API_KEY"
    base_url_env = "OLLAMA_BASE_URL"
    default_base_url = "http://localhost:11434/v1"
    keyed_base_url = None

    async def _ask_props(self, model: str) -> Any:
        """Ollama's `POST /api/show`."""
        root = server_root(self.base_url)
        return await self._http.probe("POST", f"{root}/api/show", {"model": model})

    async def _server_takes_images(self, model: str) -> bool | None:
        """What Ollama says in `POST /api/show`: "vision" among the model's capabilities."""
        capabilities = _field(await self._server_props(model), "capabilities")
        return "vision" in capabilities if isinstance(capabilities, list) else None

    async def context_window(self, model: str) -> int | None:
        """The window Ollama runs `model` with: `GET /api/ps`'s `context_length` when the
        model is loaded, else a `num_ctx` its Modelfile sets (`POST /api/show`'s
        `parameters`, the answer the vision probe reads). Not the model's trained length
        (`model_info`): Ollama serves a smaller default (2048 to 4096 tokens, or what
        OLLAMA_CONTEXT_LENGTH says) and truncates past it. Only a loaded model's window is
        kept: until then /api/ps is asked again each time (the next turn loads the model)."""
        if model in self._windows:
            return self._windows[model]
        root = server_root(self.base_url)
        window = None
        for entry in _listed(await self._http.probe("GET", f"{root}/api/ps"), "models"):
            if _ollama_name(model) in {_ollama_name(_field(entry, k)) for k in ("name", "model")}:
                window = window_size(_field(entry, "context_length"))
                break
        if window is None:
            parameters = _field(await self._server_props(model), "parameters")
            set_ = _NUM_CTX.search(parameters) if isinstance(parameters, str) else None
            window = window_size(int(set_.group(1))) if set_ else None
            return window  # the loaded model's, at the next turn, is what counts: not kept
        self._windows[model] = window
        return window


#: A `num_ctx` line of Ollama's `parameters` (`num_ctx                        8192`).
_NUM_CTX = re.compile(r"^num_ctx[ \t]+(\d{1,15})[ \t]*$", re.MULTILINE)


def _ollama_name(name: Any) -> str | None:
    """An Ollama model name with its tag (`llama3.2` is `llama3.2:latest`), for comparing."""
    if not isinstance(name, str):
        return None
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OpenAICompatibleProvider(OpenAIProvider):
    """Any server that speaks Chat Completions (vLLM, llama.cpp, LM Studio, proxies)."""

    name = "openai-compatible"
    default_model = None
    key_env = "OPENAI_COMPATIBLE_API_KEY"
    base_url_env = "OPENAI_COMPATIBLE_BASE_URL"
    default_base_url = keyed_base_url = None


def _arguments_text(call: ToolCallPart) -> str:
    """The arguments as the model wrote them (also when they were not valid JSON)."""
    if call.invalid_arguments is not None:
        return call.invalid_arguments
    return json.dumps(call.arguments_json())
