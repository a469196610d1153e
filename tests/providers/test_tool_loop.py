"""The tool loop: a round's calls announced first, then run concurrently; errors the model can fix.

Overlap is checked by the order of start and end marks, never by timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import httpx
import pytest
from pydantic import BaseModel, Field
from test_conformance import FILES, load, oracle, provider_name

from agent_nb import Agent, Message, ModelRetry, Tool, tool
from agent_nb.errors import ConfigurationError, ToolError
from agent_nb.messages import ToolCallPart
from agent_nb.providers import resolve
from agent_nb.providers.testing import TestProvider


def calls(*specs: tuple[str, dict], text: str = "") -> Message:
    parts = [
        ToolCallPart(id=f"c{i}", name=name, arguments=args) for i, (name, args) in enumerate(specs)
    ]
    return Message(role="assistant", parts=tuple(parts))


def assert_valid(messages: list[Message]) -> None:
    """Every call is paired with exactly one result, in call order, in the next message."""
    for index, message in enumerate(messages):
        if message.tool_calls:
            results = messages[index + 1].tool_results
            assert [r.tool_call_id for r in results] == [c.id for c in message.tool_calls]


class Marks:
    """Start/end marks of tool runs, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []

    def add(self, what: str, name: str) -> None:
        with self.lock:
            self.log.append((what, name))

    def overlapped(self) -> bool:
        """Some run started while another was running."""
        running = 0
        for what, _ in self.log:
            running += 1 if what == "start" else -1
            if running > 1:
                return True
        return False


def sleepers(marks: Marks, *, seconds: float = 0.05):
    @tool
    async def nap(name: str) -> str:
        """Sleep a little (async)."""
        marks.add("start", name)
        await asyncio.sleep(seconds)
        marks.add("end", name)
        return f"{name} rested"

    @tool
    def doze(name: str) -> str:
        """Sleep a little (in a thread)."""
        marks.add("start", name)
        time.sleep(seconds)
        marks.add("end", name)
        return f"{name} dozed"

    return nap, doze


# -- the loop -------------------------------------------------------------------------------


def test_all_calls_are_announced_then_run_concurrently_results_kept_in_call_order():
    marks = Marks()
    nap, doze = sleepers(marks)

    @tool
    async def slow(name: str) -> str:
        """The slowest."""
        marks.add("start", name)
        await asyncio.sleep(0.3)
        marks.add("end", name)
        return "slow done"

    round_ = calls(("slow", {"name": "s"}), ("nap", {"name": "a"}), ("doze", {"name": "b"}))
    agent = Agent(
        provider=TestProvider([round_, "All rested."]), model="t", tools=[nap, doze, slow]
    )
    session = agent.session()
    events = list(session.stream("rest"))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["tool_call"] * 3 and kinds[3:6] == ["tool_result"] * 3
    assert [e.id for e in events[:3]] == ["c0", "c1", "c2"]  # the model's order
    assert events[5].tool_call_id == "c0"  # the slow one finishes last ...
    assert [m for m, _ in marks.log[:3]] == ["start"] * 3  # ... all three ran at once
    assert_valid(session.messages)  # ... and history keeps the model's order
    assert [r.content for r in session.messages[2].tool_results] == [
        "slow done",
        "a rested",
        "b dozed",
    ]


def test_max_concurrency_caps_the_calls_running_at_once():
    marks = Marks()
    nap, doze = sleepers(marks)
    round_ = calls(("nap", {"name": "a"}), ("doze", {"name": "b"}), ("nap", {"name": "c"}))
    agent = Agent(
        provider=TestProvider([round_, "ok"]), model="t", tools=[nap, doze], max_concurrency=1
    )
    agent.session().run("rest")
    assert not marks.overlapped() and len(marks.log) == 6
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Agent(provider="test", max_concurrency=0)


def test_a_sequential_tool_runs_alone():
    marks = Marks()
    nap, _ = sleepers(marks)

    @tool(sequential=True)
    def migrate(name: str) -> str:
        """Must not run beside anything."""
        marks.add("start", name)
        marks.add("end", name)
        return "migrated"

    round_ = calls(
        ("nap", {"name": "a"}),
        ("nap", {"name": "b"}),
        ("migrate", {"name": "m"}),
        ("nap", {"name": "c"}),
    )
    agent = Agent(provider=TestProvider([round_, "ok"]), model="t", tools=[nap, migrate])
    session = agent.session()
    session.run("go")
    log = marks.log
    m_start, m_end = log.index(("start", "m")), log.index(("end", "m"))
    assert m_end == m_start + 1  # nothing started or ended while it ran
    assert {n for _, n in log[:m_start]} == {"a", "b"} and log[m_end + 1 :] == [
        ("start", "c"),
        ("end", "c"),
    ]
    assert marks.log[:2] == [("start", "a"), ("start", "b")]  # the others did overlap
    assert_valid(session.messages)


def test_a_raising_tool_goes_back_to_the_model_by_default():
    @tool
    def weather(city: str) -> str:
        """Weather for a city."""
        raise RuntimeError(f"no station in {city}")

    provider = TestProvider([calls(("weather", {"city": "Paris"})), "Sorry, no weather."])
    session = Agent(provider=provider, model="t", tools=[weather]).session()
    response = session.run("weather?")
    result = session.messages[2].tool_results[0]
    assert result.is_error and result.content == "The tool raised RuntimeError: no station in Paris"
    assert provider.requests[1].messages[-1].tool_results[0].content == result.content
    assert response.text == "Sorry, no weather."


def test_a_users_tool_raising_tool_error_goes_back_to_the_model_too():
    """Only an MCP server that died mid-call ends the turn with its ToolError."""
    from agent_nb.errors import ToolError

    @tool
    def weather(city: str) -> str:
        """Weather for a city."""
        raise ToolError(f"no station in {city}")

    provider = TestProvider([calls(("weather", {"city": "Paris"})), "Sorry, no weather."])
    session = Agent(provider=provider, model="t", tools=[weather]).session()
    assert session.run("weather?").text == "Sorry, no weather."
    assert session.messages[2].tool_results[0].content == (
        "The tool raised ToolError: no station in Paris"
    )


def test_on_error_raise_ends_the_turn_history_unchanged_and_stops_other_calls():
    cancelled = threading.Event()

    @tool(on_error="raise")
    def strict(x: int) -> str:
        """Fails loudly."""
        raise ValueError("bad x")

    @tool
    async def long(x: int) -> str:
        """Runs long."""
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    provider = TestProvider()
    session = Agent(provider=provider, model="t", tools=[strict, long]).session()
    session.run("hello")  # the provider echoes: a first turn to keep
    before = session.to_dict()["messages"]
    provider.add_reply(calls(("long", {"x": 1}), ("strict", {"x": 2})))
    with pytest.raises(ToolError, match="strict.*ValueError: bad x") as caught:
        session.run("go")
    assert caught.value.tool == "strict"
    assert cancelled.is_set()  # the other call of the round was stopped
    assert session.to_dict()["messages"] == before


def test_model_retry_asks_again_within_the_tools_budget():
    tries = []

    @tool(retries=1)
    def pick(n: int) -> str:
        """Pick a number from 1 to 3."""
        tries.append(n)
        if n > 3:
            raise ModelRetry(f"{n} is out of range; pick 1, 2 or 3")
        return f"picked {n}"

    provider = TestProvider([calls(("pick", {"n": 7})), calls(("pick", {"n": 2})), "Picked 2."])
    session = Agent(provider=provider, model="t", tools=[pick]).session()
    assert session.run("pick").text == "Picked 2."
    first = session.messages[2].tool_results[0]
    assert first.is_error and first.content == "7 is out of range; pick 1, 2 or 3"
    assert tries == [7, 2]
    assert_valid(session.messages)

    before = session.to_dict()["messages"]
    for reply in (calls(("pick", {"n": 9})), calls(("pick", {"n": 8}))):
        provider.add_reply(reply)
    with pytest.raises(
        ToolError, match=r"'pick': the model's call failed 2 times.*retries=\.\.\.\) \(now 1\)"
    ):
        session.run("pick again")
    assert session.to_dict()["messages"] == before


def test_invalid_arguments_are_corrected_on_the_next_round_and_budgeted():
    @tool(retries=1)
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    provider = TestProvider(
        [calls(("add", {"a": "x", "b": 1})), calls(("add", {"a": 2, "b": 1})), "3"]
    )
    session = Agent(provider=provider, model="t", tools=[add]).session()
    session.run("add")
    bad = session.messages[2].tool_results[0]
    assert bad.is_error and bad.content.startswith(
        "Invalid arguments: a: Input should be a valid integer"
    )
    assert session.messages[4].tool_results[0].content == "3"
    for _ in range(2):
        provider.add_reply(calls(("add", {"a": "y"})))
    before = len(session.messages)
    with pytest.raises(ToolError, match="failed 2 times"):
        session.run("add again")
    assert len(session.messages) == before


def test_an_unknown_tool_is_told_which_tools_exist():
    @tool
    def known() -> str:
        """A tool."""
        return "ok"

    provider = TestProvider([calls(("unknown", {})), "fine"])
    session = Agent(provider=provider, model="t", tools=[known]).session()
    session.run("go")
    result = session.messages[2].tool_results[0]
    assert (
        result.is_error
        and result.content == "There is no tool named 'unknown'. Available tools: known."
    )


def test_tools_per_agent_session_and_call():
    @tool
    def alpha() -> str:
        """Alpha."""
        return "a"

    @tool
    def beta() -> str:
        """Beta."""
        return "b"

    provider = TestProvider(["1", "2", "3", "4", "5"])
    agent = Agent(provider=provider, model="t", tools=[alpha])
    names = lambda: [t["name"] for t in provider.requests[-1].tools]  # noqa: E731
    plain = agent.session()
    plain.run("x")
    assert names() == ["alpha"]
    own = agent.session(tools=[beta])
    own.run("x")
    assert names() == ["beta"] and [t.name for t in own.tools] == ["beta"]
    assert [t.name for t in own.fork().tools] == ["beta"]
    own.run("x", tools=[alpha, beta])
    assert names() == ["alpha", "beta"]
    own.run("x", tools=[])
    assert names() == []
    with pytest.raises(TypeError, match=r"tools= takes a list"):
        own.run("x", tools=alpha)


def test_results_are_text_json_or_capped_with_a_note():
    @dataclasses.dataclass
    class Point:
        x: int
        when: object

    class Reading(BaseModel):
        value: float

    import datetime

    @tool
    def point() -> Point:
        """A dataclass."""
        return Point(1, datetime.date(2026, 12, 1))

    @tool
    def reading() -> Reading:
        """A model."""
        return Reading(value=2.5)

    @tool(max_result_chars=10)
    def big() -> str:
        """Too long."""
        return "x" * 25

    provider = TestProvider([calls(("point", {}), ("reading", {}), ("big", {})), "ok"])
    session = Agent(provider=provider, model="t", tools=[point, reading, big]).session()
    session.run("go")
    contents = [r.content for r in session.messages[2].tool_results]
    assert contents[0] == '{"x": 1, "when": "2026-12-01"}'
    assert contents[1] == '{"value":2.5}'
    assert (
        contents[2]
        == "x" * 10 + "\n[agent_nb: the result was cut to its first 10 of 25 characters]"
    )


# -- tools described elsewhere ----------------------------------------------------------------


def test_tool_from_schema_checks_arguments_and_calls_the_handler_with_a_dict():
    seen = []

    async def handler(arguments):
        seen.append(arguments)
        return {"echo": arguments["text"]}

    echo = Tool.from_schema(
        "echo",
        "Echo the text.",
        {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1}},
            "required": ["text"],
        },
        handler,
    )
    assert echo.schema()["parameters"]["required"] == ["text"]
    provider = TestProvider([calls(("echo", {"text": ""}), ("echo", {"text": "hi"})), "ok"])
    session = Agent(provider=provider, model="t", tools=[echo]).session()
    session.run("go")
    bad, good = session.messages[2].tool_results
    assert bad.is_error and "Invalid arguments: text: '' should be non-empty" in bad.content
    assert good.content == '{"echo": "hi"}' and seen == [{"text": "hi"}]
    with pytest.raises(ValueError, match="parameters must be a JSON schema of an object"):
        Tool.from_schema("x", "d", {"type": "string"}, handler)
    with pytest.raises(
        Exception, match="is not valid under any of the given schemas|is not of type"
    ):
        Tool.from_schema("x", "d", {"type": "object", "properties": {"a": {"type": 5}}}, handler)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str
    zip: str | None = None


@dataclasses.dataclass
class Window:
    start: int
    end: int


def test_schema_from_type_hints():
    @tool
    def book(
        name: Annotated[str, Field(description="Who books")],
        seats: int,
        price: float,
        vip: bool,
        color: Color,
        size: Literal["s", "m", "l"],
        tags: list[str],
        extra: dict[str, int],
        address: Address,
        window: Window,
        note: str | None = None,
        count: int = 1,
    ) -> str:
        """Book a table."""
        return f"{name} {color.value} {address.city} {window.end} {note} {count}"

    params = book.parameters
    props = params["properties"]
    assert props["name"]["description"] == "Who books"
    assert props["seats"]["type"] == "integer" and props["price"]["type"] == "number"
    assert props["vip"]["type"] == "boolean" and props["tags"] == {
        "items": {"type": "string"},
        "type": "array",
    }
    assert props["size"]["enum"] == ["s", "m", "l"]
    assert props["extra"]["additionalProperties"] == {"type": "integer"}
    assert set(params["$defs"]) >= {"Address", "Color", "Window"}
    assert params["required"] == [
        "name",
        "seats",
        "price",
        "vip",
        "color",
        "size",
        "tags",
        "extra",
        "address",
        "window",
    ]
    args = {
        "name": "Ann",
        "seats": 2,
        "price": 9.5,
        "vip": True,
        "color": "blue",
        "size": "m",
        "tags": [],
        "extra": {},
        "address": {"city": "Oslo"},
        "window": {"start": 1, "end": 2},
    }
    provider = TestProvider([calls(("book", args)), "booked"])
    session = Agent(provider=provider, model="t", tools=[book]).session()
    session.run("book")
    assert session.messages[2].tool_results[0].content == "Ann blue Oslo 2 None 1"


@pytest.mark.parametrize(
    "doc",
    [
        """Find rooms.

        Args:
            city: The city to search.
            guests (int): How many
                people come.
        """,
        """Find rooms.

        Parameters
        ----------
        city : str
            The city to search.
        guests : int
            How many
            people come.

        Returns
        -------
        str
            The rooms.
        """,
        """Find rooms.

        :param city: The city to search.
        :param int guests: How many
            people come.
        :returns: The rooms.
        """,
    ],
    ids=["google", "numpy", "sphinx"],
)
def test_parameter_descriptions_from_every_docstring_style(doc):
    def find(city: str, guests: int = 1) -> str:
        return city

    find.__doc__ = doc
    made = tool(find)
    assert made.description == "Find rooms."
    props = made.parameters["properties"]
    assert props["city"]["description"] == "The city to search."
    assert props["guests"]["description"] == "How many people come."
    assert made.parameters["required"] == ["city"]


# -- on every provider's recorded traffic ------------------------------------------------------

PARALLEL = [
    p for p in FILES if load(p)["response"]["status"] < 400 and len(oracle(p).calls or []) >= 2
]
FOLLOW_UP = {  # a plain text answer of the same provider, streamed or not
    ("openai", True): "openai-chat/call__openai_gpt_4o_completions__stream__0.json",
    ("openai", False): "openai-chat/call__openai_gpt_4o_completions__sync__0.json",
    ("anthropic", True): "anthropic/call__anthropic_claude_sonnet_4_0__stream__0.json",
    ("anthropic", False): "anthropic/call__anthropic_claude_sonnet_4_0__sync__0.json",
    (
        "openai-responses",
        True,
    ): "openai-responses/openai_responses__test_responses_basic_streaming__0.json",
    ("openai-compatible", True): "openai-chat/call__openai_gpt_4o_completions__stream__0.json",
}


def test_several_recordings_have_parallel_calls():
    assert {provider_name(p) for p in PARALLEL} >= {"openai", "anthropic", "openai-responses"}


@pytest.mark.parametrize("path", PARALLEL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_parallel_calls_are_all_announced_before_any_result(path: Path):
    kind = provider_name(path)
    stream = bool(load(path)["request"]["body"].get("stream"))
    follow = load(path.parents[1] / FOLLOW_UP[(kind, stream)])["response"]
    served = [load(path)["response"], follow]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # a window probe (/props, /v1/models): none recorded
            return httpx.Response(404)
        recorded = served.pop(0)
        return httpx.Response(
            recorded["status"], headers=recorded["headers"], content=recorded["body"].encode()
        )

    provider, _ = resolve(
        kind,
        "m",
        api_key="k",
        base_url="http://recorded.test/v1",
        transport=httpx.MockTransport(handler),
        max_retries=0,
    )
    expected = oracle(path).calls
    ran = []

    def make(name: str) -> Tool:
        async def run(arguments):
            ran.append(name)
            await asyncio.sleep(0.01)
            return f"{name} ok"

        return Tool.from_schema(name, name, {"type": "object"}, run)

    tools = [make(name) for name in dict.fromkeys(name for _, name, _ in expected)]
    session = Agent(provider=provider, model="m", tools=tools).session()
    if stream:
        events = list(session.stream("go"))
    else:
        response = session.run("go")
        events = []
    messages = session.messages
    assert_valid(messages)
    assert [(c.id, c.name, c.arguments_json()) for c in messages[1].tool_calls] == expected
    assert len(ran) == len(expected)
    if stream:
        kinds = [e.type for e in events if e.type in ("tool_call", "tool_result")]
        assert kinds == ["tool_call"] * len(expected) + ["tool_result"] * len(expected)
    else:
        assert response.text
    again = reloaded(session, provider)
    assert again == messages


def reloaded(session, provider):
    """A session saved after tool use reloads with the same history."""
    from agent_nb import Session

    return Session.from_dict(session.to_dict(), Agent(provider=provider, model="m")).messages
