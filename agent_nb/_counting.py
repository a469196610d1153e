"""Counting a request's tokens: each message's count (the provider's, split back from its
reports, or an estimate scaled by what those reports taught), images by each provider's rule,
and the output a request keeps room for. Without a tokenizer: the provider's own figures are
the truth for everything it has been sent."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _images
from .messages import ImagePart, Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart

if TYPE_CHECKING:
    from .providers.base import Request

#: The output kept room for when nothing caps it (a long answer's length).
_DEFAULT_RESERVE = 4096
#: Tokens each message costs beyond its content (role, separators), as chat formats spend.
PER_MESSAGE = 4
#: The settings that cap a request's output, as the providers take them.
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
#: The most tokens a template wraps a message in (a tool's result in a tool-calling
#: template: about 150), as learnt: a report of more is not a wrapping.
_MOST_WRAPPING = 512
#: What a summary is introduced by, where it is sent.
SUMMARY_HEADER = "Summary of the earlier conversation (its turns are no longer shown):"


class Counts:
    """A session's token counts: per message (its `metadata["tokens"]`, else an estimate kept
    by id), what the system prompt and tools cost, and how far the estimates are off, as the
    provider's reports showed."""

    def __init__(self) -> None:
        self._estimates: dict[str, tuple[Message, int]] = {}
        #: the system prompt and tool schemas (by their hash) -> their tokens, as reported
        self.overhead: dict[str, int] = {}
        #: the provider's tokens per estimated token, learnt from its reports (code, or
        #: Chinese, take more tokens a character than prose)
        self.scale = 1.0
        self._reports = 0
        #: tokens a message of a role costs beyond its scaled estimate, as reported: the
        #: wrapping a server's template gives a tool's result, say
        self.extra: dict[str, float] = {}

    def message(self, message: Message, provider: str) -> tuple[int, bool]:
        """(tokens, exact): as the provider reported them, or estimated."""
        kept = self._estimates.get(message.id)
        if kept is None or kept[0] is not message:
            if len(self._estimates) > 100_000:  # messages dropped from history: forget them
                self._estimates.clear()
            kept = self._estimates[message.id] = (message, estimate(message, provider))
        recorded = message.metadata.get("tokens")
        # a count from a stranger's notebook is believed within reason (8 times the estimate)
        if type(recorded) is int and 0 <= recorded <= 8 * kept[1] + 4096:
            return recorded + PER_MESSAGE, not message.metadata.get("tokens_estimated", False)
        return self.scaled(kept[1]) + round(self.extra.get(message.role, 0.0)), False

    def learn_message(self, message: Message, tokens: int, provider: str) -> None:
        """Take a message's reported `tokens` (its wrapping included) into what a message of
        its role costs beyond its estimate."""
        beyond = max(0.0, tokens - self.scaled(estimate(message, provider)))
        beyond = min(beyond, _MOST_WRAPPING)  # more is the message, or an odd report
        known = self.extra.get(message.role)
        self.extra[message.role] = beyond if known is None else (known + beyond) / 2

    def learn_overhead(self, key: str, estimated: int, observed: float) -> None:
        """Take what a report says the system prompt and tools (`key`, `estimated` tokens)
        cost: within reason (4 times the estimate, and a server's own tool prompt), since
        it is kept for every later request."""
        most = 4 * estimated + 2 * _MOST_WRAPPING
        self.overhead[key] = max(0, min(round(estimated * observed), most))

    def scaled(self, estimate: int) -> int:
        return round(estimate * self.scale)

    def learn(self, observed: float) -> None:
        """Take a report's tokens per estimated token into the scale (smoothed)."""
        self.scale = min(
            4.0, max(0.25, self.scale * observed**0.5 if self.scale != 1.0 else observed)
        )


def estimate(message: Message, provider: str) -> int:
    """`message`'s tokens, estimated: ~4 characters a token, images by the provider's rule."""
    characters, tokens = 0, PER_MESSAGE
    for part in message.parts:
        kind = type(part)
        if kind is TextPart or kind is ThinkingPart:
            characters += len(part.text)
        elif kind is ToolResultPart:
            characters += len(part.content)
            tokens += sum(image_tokens(i, provider) for i in part.images)
        elif kind is ToolCallPart:
            characters += len(part.name) + len(json.dumps(part.arguments_json()))
        elif kind is ImagePart:
            tokens += image_tokens(part, provider)
    return tokens + (characters + 3) // 4


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def image_tokens(image: ImagePart, provider: str) -> int:
    """What an image costs in tokens on `provider`: OpenAI's tiles (high detail), Anthropic's
    width x height / 750 (scaled to 1568 px at most), else a typical 768."""
    size = _images.dimensions(image)
    if provider in ("openai", "openai-responses"):
        if size is None:
            return 765
        width, height = _fit(*size, 2048)
        short = min(width, height)
        if short > 768:
            width, height = width * 768 / short, height * 768 / short
        return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)
    if provider == "anthropic":
        if size is None:
            return 1600
        width, height = _fit(*size, 1568)
        return max(1, min(1600, math.ceil(width * height / 750)))
    return 768


def _fit(width: float, height: float, most: float) -> tuple[float, float]:
    scale = min(1.0, most / max(width, height, 1))
    return width * scale, height * scale


def overhead_key(system: str | None, tools: Sequence[Mapping[str, Any]]) -> str:
    text = json.dumps([system, list(tools)], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def reserved(settings: Mapping[str, Any], provider: Any, window: int | None) -> int:
    """The output the request leaves room for: its max_tokens (and thinking budget), or, with
    none set, the provider's default cap (Anthropic's), else a quarter of the window up to
    4,096 tokens (genai-prices has no model's most output; a server given no cap stops the
    answer at the window, it does not refuse the request)."""
    thinking = settings.get("thinking")
    budget = thinking.get("budget_tokens", 0) if isinstance(thinking, Mapping) else 0
    budget = budget if type(budget) is int and budget > 0 else 0
    for name in _OUTPUT_CAPS:
        value = settings.get(name)
        if type(value) is int and value > 0:
            return value
    default = getattr(provider, "default_max_tokens", None)
    if type(default) is int:
        return max(default, budget + default) if budget else default
    return budget + (min(window // 4, _DEFAULT_RESERVE) if window else 0)


@dataclasses.dataclass
class Sized:
    """A request's parts and their counts."""

    key: str  # the system prompt and tools, for Counts.overhead
    system: int  # the system prompt
    tools: int
    messages: list[int]
    exact: list[bool]
    overhead_exact: bool  # system + tools as reported
    images: int
    summary: int = 0  # the summary sent at the start of the first message (estimated)

    @property
    def total(self) -> int:
        return self.system + self.tools + sum(self.messages) + self.summary


def size(
    counts: Counts, request: Request, provider: str, system: str | None, summary: str | None
) -> Sized:
    """The counts of `request`, whose system prompt is `system`, and of `summary`."""
    key = overhead_key(system, request.tools)
    tools = sum(text_tokens(json.dumps(schema, default=str)) for schema in request.tools)
    tools = counts.scaled(tools)
    known = counts.overhead.get(key)
    own = counts.scaled(text_tokens(system or "")) if known is None else max(0, known - tools)
    extra = counts.scaled(text_tokens(SUMMARY_HEADER + summary) + 2) if summary else 0
    sized = [counts.message(m, provider) for m in request.messages]
    images = sum(
        image_tokens(p, provider)
        for m in request.messages
        for p in m.parts
        if isinstance(p, ImagePart)
    )
    return Sized(
        key=key,
        system=own,
        tools=tools,
        messages=[n for n, _ in sized],
        exact=[e for _, e in sized],
        overhead_exact=known is not None,
        images=images,
        summary=extra,
    )


def counted(message: Message, tokens: int, *, estimated: bool) -> Message:
    """`message` with its token count in its metadata."""
    metadata = {
        k: v for k, v in message.metadata.items() if k not in ("tokens", "tokens_estimated")
    }
    metadata["tokens"] = tokens
    if estimated:
        metadata["tokens_estimated"] = True
    return message.model_copy(update={"metadata": metadata})


def answer_tokens(message: Message, usage: Any) -> tuple[int, bool]:
    """What an answer will count as input later: its output tokens (less reasoning the
    provider does not send back), or, with thinking in it or no report, an estimate."""
    if usage.estimated or any(isinstance(p, ThinkingPart) for p in message.parts):
        return max(0, estimate(message, "") - PER_MESSAGE), True
    return max(0, usage.output_tokens - usage.reasoning_tokens), False
