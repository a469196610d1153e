"""Stream events: what `Session.stream` yields, and what providers send the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._ledger import Cost, Spend
    from .messages import Message, ToolCallPart

__all__ = [
    "Completion",
    "Done",
    "Event",
    "Response",
    "Retried",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolResult",
    "Usage",
]


#: The fields of `Usage`, as `Usage.to_dict()` names them.
_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated",
    "cache_write_tokens",
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent. `input_tokens` counts every input token, `cached_tokens` (read from the
    prompt cache) and `cache_write_tokens` (written to it) among them; `reasoning_tokens` are
    part of `output_tokens`."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: How many of the model calls counted here were estimated (~4 characters a token):
    #: their server reported no usage.
    estimated: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _USAGE_FIELDS:
            value = getattr(self, name)
            if type(value) is not int:  # not a bool, a float, a str or an int subclass
                if isinstance(value, int) and not isinstance(value, bool):
                    object.__setattr__(self, name, int(value))
                    continue
                raise TypeError(f"Usage.{name} must be an int, got {value!r:.60}")
            if value < 0:
                raise ValueError(f"Usage.{name} must be >= 0, got {value}")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated + other.estimated,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        data = {name: getattr(self, name) for name in _USAGE_FIELDS}
        for name in ("estimated", "cache_write_tokens"):
            if not data[name]:
                del data[name]  # as before they existed
        return data


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, as it arrives."""

    text: str
    type: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the model's reasoning, as it arrives."""

    text: str
    type: Literal["thinking_delta"] = "thinking_delta"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model called a tool; the session is about to run it. `server`: the name of the
    MCP server the tool is from (None for a tool of your own)."""

    id: str
    name: str
    arguments: dict[str, Any]
    server: str | None = None
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool finished; `content` is what goes back to the model."""

    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True, slots=True)
class Done:
    """The turn is complete and committed to history."""

    response: Response
    type: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's last event for one request: the whole assistant message and its facts."""

    message: Message
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None
    refusal: str | None = None
    type: Literal["completion"] = "completion"


@dataclass(frozen=True, slots=True)
class Retried:
    """A provider's word that the request's attempt so far, which the server had begun to
    answer (and so bills), broke off before any output, and is being sent again."""

    type: Literal["retried"] = "retried"


Event = TextDelta | ThinkingDelta | ToolCall | ToolResult | Done


@dataclass(frozen=True)
class Response:
    """One finished turn: its answer, the messages it added, and what it cost."""

    text: str
    messages: tuple[Message, ...]
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    finish_reason: str | None = None
    output: Any = None
    refusal: str | None = None
    interrupted: bool = False
    #: Tool calls this turn stopped at, waiting for approval (see Session.resume).
    pending_approvals: tuple[ToolCallPart, ...] = ()
    #: Answers the model gave for structured output (more than 1: retries; `usage` counts all).
    attempts: int = 0
    #: Every request the turn sent, as the session's ledger has them (see `cost`).
    spent: tuple[Spend, ...] = ()

    @property
    def cost(self) -> Cost:
        """What the turn cost: every request it sent (tool rounds, retries included)."""
        from ._ledger import Cost

        return Cost.of(self.spent)

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str | None:
        from ._render import answer_html

        return answer_html(self.text, self.refusal)
