"""Sessions drawn by hypothesis from what the public API can make, and hostile stored data."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from agent_nb import Agent, Message, Session
from agent_nb.events import Usage
from agent_nb.messages import TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from agent_nb.providers.testing import TestProvider

#: For property tests: no example database in the worktree, no deadline on a shared machine.
SETTINGS = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Any text, lone surrogates (as a server splitting a surrogate pair sends them) included.
TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=30)
#: Text a store takes as a key: printable, no surrogates.
KEYS = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20).filter(
    str.strip
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
OBJECTS = st.dictionaries(TEXT, JSON, max_size=3)
IDS = TEXT.filter(str.strip)

PARTS = st.one_of(
    st.builds(TextPart, text=TEXT),
    st.builds(ThinkingPart, text=TEXT, signature=st.none() | TEXT),
    st.builds(ToolCallPart, id=TEXT, name=TEXT, arguments=OBJECTS),
    st.builds(ToolResultPart, tool_call_id=TEXT, name=TEXT, content=TEXT, is_error=st.booleans()),
)
RESULTS = st.lists(
    st.builds(ToolResultPart, tool_call_id=TEXT, name=TEXT, content=TEXT, is_error=st.booleans()),
    max_size=3,
)
MESSAGES = st.one_of(
    st.builds(Message.user, TEXT),
    st.builds(Message.assistant, TEXT, interrupted=st.just(True)),  # a stopped answer
    st.builds(Message.tool, RESULTS),
    st.builds(
        Message,
        role=st.sampled_from(["system", "user", "assistant", "tool"]),
        parts=st.lists(PARTS, max_size=4).map(tuple),
        metadata=OBJECTS,
    ),
)
USAGE = st.builds(Usage, *(st.integers(min_value=0, max_value=2**63) for _ in range(4)))


@st.composite
def sessions(draw: Any, session_ids: Any = IDS) -> Session:
    """A session as the public API makes them: history, system prompt, usage, and possibly
    a real turn and a stream stopped midway on the offline provider."""
    agent = Agent(provider=TestProvider(), model=draw(st.none() | TEXT) or "test-model")
    session = agent.session(
        session_id=draw(session_ids),
        system=draw(st.none() | TEXT),
        messages=draw(st.lists(MESSAGES, max_size=6)),
    )
    session.usage = draw(USAGE)
    if draw(st.booleans()):
        session.run(draw(TEXT))
    if draw(st.booleans()):
        stream = session.stream(draw(TEXT))
        next(stream, None)
        stream.close()
    return session


def has_surrogate(session: Session) -> bool:
    text = json.dumps(session.to_dict(), ensure_ascii=False)
    return any("\ud800" <= char <= "\udfff" for char in text)


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text nested `depth` levels deep, built as text (json.dumps would recurse)."""
    return '{"a":' * depth + leaf + "}" * depth
