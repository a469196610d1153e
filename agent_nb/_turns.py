"""Turns: where a history's turns start and end (a turn starts at each user message)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from .events import _USAGE_FIELDS, Usage
from .messages import Message

__all__ = ["Turn", "last_start", "recorded_usage", "span", "split"]


@dataclass(frozen=True)
class Turn:
    """One turn of a history: a prompt and everything that answered it, up to the next prompt.

    Messages before the first prompt (added by hand) make a turn of their own, whose
    `prompt` is None.
    """

    #: Where the turn starts in `session.messages`.
    start: int
    messages: tuple[Message, ...]

    @property
    def id(self) -> str:
        """The id of the turn's first message (its prompt's)."""
        return self.messages[0].id

    @property
    def prompt(self) -> Message | None:
        first = self.messages[0]
        return first if first.role == "user" else None

    @property
    def text(self) -> str:
        """The text of the turn's last answer ("" if none)."""
        answers = [m for m in self.messages if m.role == "assistant"]
        return answers[-1].text if answers else ""

    @property
    def end(self) -> int:
        """Where the next turn starts."""
        return self.start + len(self.messages)


def starts(messages: Sequence[Message]) -> list[int]:
    """Where each turn of `messages` starts."""
    found = [i for i, m in enumerate(messages) if m.role == "user"]
    return [0, *found] if messages and (not found or found[0] != 0) else found


def split(messages: Sequence[Message]) -> list[Turn]:
    """`messages` cut into turns."""
    bounds = [*starts(messages), len(messages)]
    return [Turn(a, tuple(messages[a:b])) for a, b in itertools.pairwise(bounds)]


def last_start(messages: Sequence[Message]) -> int | None:
    """Where the last turn starts (its user message), or None if no prompt was sent."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return None


def span(messages: Sequence[Message], first_id: str) -> tuple[int, int] | None:
    """(start, end) from message `first_id` to the next prompt after it; None if it is gone.

    `first_id` is a turn's first message, or the first message a resumed turn added (its
    tool results), which counts as the start of what that resume made.
    """
    start = next((i for i, m in enumerate(messages) if m.id == first_id), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(messages)) if messages[i].role == "user"), None)
    return start, len(messages) if end is None else end


def recorded_usage(messages: Sequence[Message]) -> Usage:
    """The tokens the answers in `messages` spent, as each recorded them in its metadata
    (a history rebuilt from a notebook's records has no other account); a figure that is not
    a count >= 0 counts 0."""
    totals = dict.fromkeys(_USAGE_FIELDS, 0)
    for message in messages:
        usage = message.metadata.get("usage") if message.role == "assistant" else None
        if isinstance(usage, dict):
            for name in _USAGE_FIELDS:
                value = usage.get(name)
                if type(value) is int and value >= 0:
                    totals[name] += value
    return Usage(**totals)
