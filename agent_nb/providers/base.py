"""The one protocol every provider speaks, and the provider-neutral request it receives."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..events import Completion, Retried, TextDelta, ThinkingDelta
from ..messages import Message

ProviderEvent = TextDelta | ThinkingDelta | Completion | Retried
#: The events of one network read: a provider yields them together, so that the layers above
#: pay per read, not per event (a long answer has tens of thousands of events).
ProviderBatch = list[ProviderEvent]


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """A JSON schema the answer must follow; `name` is what providers call it."""

    name: str
    schema: dict[str, Any]
    strict: bool = True
    description: str | None = None
    #: "json_schema", or "json_object": the form some OpenAI-compatible servers take instead
    #: (`{"type": "json_object", "schema": ...}`, llama.cpp's, enforced by a grammar).
    form: str = "json_schema"


@dataclass(frozen=True, slots=True)
class Request:
    """Everything a provider needs for one model call."""

    model: str
    messages: list[Message]
    system: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    output: OutputSchema | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    stream: bool = True
    #: None (the model decides), "required" (some tool), or the name of the tool to call.
    tool_choice: str | None = None
    #: Mark what the provider may cache (Anthropic's cache breakpoints); others cache alone.
    cache: bool = True


class Provider(abc.ABC):
    """Translates a Request to a wire format and the wire stream back to provider events.

    `complete` returns an async iterator of lists of TextDelta / ThinkingDelta events, a list
    for each piece of the answer that arrives (one network read), the last list ending with
    exactly one Completion; anything else raises a ProviderError subclass. Capabilities are
    attributes (`output_modes`) and async methods (`takes_images`, `context_window`) the
    session asks.
    """

    #: The name users pass as `provider=`.
    name: str = "provider"
    #: The model used when the agent names none.
    default_model: str | None = None
    #: How json() asks for structured output here, in the order `auto` tries them: "native"
    #: (the API's own JSON schema), "json_object" (the json_object form with a schema),
    #: "tool" (a forced tool call), "prompted" (the schema in the instructions). `auto` falls
    #: back once, to the second, on an "unsupported" error.
    output_modes: tuple[str, ...] = ("native", "prompted")

    @abc.abstractmethod
    def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        """Stream one model call."""

    async def takes_images(self, model: str) -> bool | None:
        """Whether `model` takes images: False refuses a turn with images before it is sent,
        naming the model; None (not known, the default) sends it, and the provider says if
        it cannot. Asked before each turn that carries images, so cache what it costs."""
        return None

    async def context_window(self, model: str) -> int | None:
        """The context window, in tokens, that serves `model` on this provider's server, as
        the server says (a local server's loaded window: llama.cpp's n_ctx, Ollama's
        num_ctx, vLLM's max_model_len); None: the server does not say (the window then
        comes from `Agent(context_window=...)` or genai-prices' table). Asked before each
        turn: cache what it costs."""
        return None

    async def aclose(self) -> None:
        """Release connections."""

    def redacted(self, text: str) -> str:
        """`text` safe to show: a provider with credentials masks them (and key shapes)."""
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
