"""Structured output: schemas strict mode accepts, validation retries, partial objects."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # typing's cannot be validated before 3.12

from agent_nb import Agent, Message, tool
from agent_nb._output import OutputType
from agent_nb.errors import OutputValidationError
from agent_nb.events import Completion, TextDelta, Usage
from agent_nb.messages import ToolCallPart
from agent_nb.providers.base import Provider
from agent_nb.providers.testing import TestProvider


class Size(enum.Enum):
    S = "s"
    L = "l"


class Item(BaseModel):
    name: str = Field(min_length=2)
    qty: int = 1
    size: Size | None = None


class Order(BaseModel):
    customer: str
    items: list[Item]
    note: str | None = None
    channel: Literal["web", "phone"] = "web"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Person(TypedDict):
    name: str
    age: int


def agent_answering(*answers: str, **kwargs) -> tuple[Agent, TestProvider]:
    provider = TestProvider(list(answers), **kwargs)
    return Agent(provider=provider, model="t"), provider


# -- the schema sent ----------------------------------------------------------------------


def test_optional_fields_are_required_but_nullable_and_their_nulls_dropped():
    output = OutputType(Order)
    schema = output.request.schema
    assert output.request.strict is True
    assert schema["required"] == ["customer", "items", "note", "channel"]
    assert schema["additionalProperties"] is False
    item = schema["$defs"]["Item"]
    assert item["required"] == ["name", "qty", "size"] and item["additionalProperties"] is False
    assert {"type": "null"} in item["properties"]["qty"]["anyOf"]
    assert "default" not in json.dumps(schema) and "title" not in json.dumps(schema)
    # the null the model must send for an optional field gives the field its default
    parsed = output.parse(
        json.dumps(
            {
                "customer": "Ann",
                "items": [{"name": "tea", "qty": None, "size": None}],
                "note": None,
                "channel": None,
            }
        )
    )
    assert parsed == Order(customer="Ann", items=[Item(name="tea")])


def test_constraints_strict_mode_drops_are_said_and_still_enforced():
    output = OutputType(Order)
    name = output.request.schema["$defs"]["Item"]["properties"]["name"]
    assert "minLength" not in name and name["description"] == "at least 2 characters"
    with pytest.raises(OutputValidationError, match="items.0.name: String should have at least 2"):
        output.parse('{"customer": "Ann", "items": [{"name": "x"}]}')


def test_a_free_form_dict_is_sent_as_a_plain_schema():
    class Counts(BaseModel):
        by_word: dict[str, int]

    output = OutputType(Counts)
    assert output.request.strict is False
    assert output.request.schema["properties"]["by_word"]["additionalProperties"] == {
        "type": "integer"
    }


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (Order, Order(customer="Ann", items=[Item(name="tea", qty=2, size=Size.L)])),
        (Point, Point(1, 2)),
        (Person, {"name": "Bo", "age": 3}),
        (list[Item], [Item(name="ab"), Item(name="cd", qty=3)]),
        (Literal["yes", "no"], "no"),
        (Size, Size.S),
        (int, 42),
    ],
    ids=["model", "dataclass", "typeddict", "list", "literal", "enum", "int"],
)
def test_every_kind_of_type_round_trips(schema, value):
    from pydantic import TypeAdapter

    adapter = TypeAdapter(schema)
    data = adapter.dump_python(value, mode="json")
    output = OutputType(schema)
    answer = json.dumps({"value": data} if output._wrapped else data)
    agent, provider = agent_answering(answer)
    response = agent.session().json("give", schema=schema)
    assert response.output == value
    assert provider.requests[0].output.schema["type"] == "object"


def test_the_offline_provider_answers_every_schema_validly():
    session = Agent(provider="test").session()
    for schema in (Order, Point, Person, list[Item], Size):
        assert session.json("an example", schema=schema).output is not None


# -- retries --------------------------------------------------------------------------------


def test_a_failed_answer_is_sent_back_and_the_retry_kept_alone():
    bad = '{"customer": "Ann", "items": [{"name": "x"}]}'
    good = '{"customer": "Ann", "items": [{"name": "xy"}]}'
    agent, provider = agent_answering(bad, good)
    session = agent.session()
    response = session.json("order", schema=Order)
    assert response.output.items[0].name == "xy"
    assert response.attempts == 2
    _, second = provider.requests
    told = second.messages[-1]
    assert told.role == "user" and "items.0.name: String should have at least 2" in told.text
    assert second.messages[-2].text == bad
    assert [m.text for m in session.messages] == ["order", good]  # no failed attempt kept
    words = len(bad.split()) + len(good.split())
    assert response.usage.output_tokens == words  # every attempt counted


def test_retries_used_up_raise_with_every_attempt_and_leave_history_unchanged():
    agent, _ = agent_answering("hello", "nope", '{"customer": 1}', "still no")
    session = agent.session()
    session.run("hi")  # echo: a first turn to keep
    before = session.to_dict()["messages"]
    with pytest.raises(OutputValidationError, match=r"3 answers, each in error.attempts") as caught:
        session.json("order", schema=Order, output_retries=2)
    assert caught.value.attempts == ("nope", '{"customer": 1}', "still no")
    assert session.to_dict()["messages"] == before
    with pytest.raises(TypeError, match="output_retries"):
        session.json("order", schema=Order, output_retries=-1)


def test_a_refusal_is_not_retried():
    class Refuses(Provider):
        calls = 0

        async def complete(self, request):
            self.calls += 1
            yield [Completion(Message.assistant(""), Usage(1, 1), "stop", refusal="I can't.")]

    provider = Refuses()
    with pytest.raises(OutputValidationError, match="refused: I can't"):
        Agent(provider=provider, model="m").session().json("x", schema=Order)
    assert provider.calls == 1


def test_json_after_tools():
    @tool
    def lookup_customer(email: str) -> str:
        """Find a customer."""
        return "Ann Lee"

    call = Message(
        role="assistant",
        parts=(ToolCallPart(id="c", name="lookup_customer", arguments={"email": "a@x"}),),
    )
    answer = '{"customer": "Ann Lee", "items": [{"name": "tea"}]}'
    provider = TestProvider([call, answer])
    agent = Agent(provider=provider, model="t", tools=[lookup_customer])
    response = agent.session().json("order for a@x", schema=Order)
    assert response.output.customer == "Ann Lee"
    assert all(r.output is not None for r in provider.requests)  # the schema every round
    assert [m.role for m in response.messages] == ["user", "assistant", "tool", "assistant"]


# -- partial objects --------------------------------------------------------------------------


class Chunked(Provider):
    """Streams `text` in pieces of `size` characters."""

    def __init__(self, text: str, size: int = 3) -> None:
        self.text, self.size = text, size

    async def complete(self, request):
        for start in range(0, len(self.text), self.size):
            yield [TextDelta(self.text[start : start + self.size])]
        yield [Completion(Message.assistant(self.text), Usage(1, 1), "stop")]


ORDER_JSON = json.dumps(
    {"customer": "Ann", "items": [{"name": "tea", "qty": 2}, {"name": "cake"}], "note": None}
)


def test_stream_json_yields_growing_valid_objects_then_the_whole():
    session = Agent(provider=Chunked(ORDER_JSON), model="m").session()
    stream = session.stream_json("order", Order)
    values = list(stream)
    assert all(isinstance(v, Order) for v in values)
    assert values[-1] == stream.response.output == Order.model_validate_json(ORDER_JSON)
    counts = [len(v.items) for v in values]
    assert counts == sorted(counts) and counts[0] <= 1 and len(values) >= 3
    assert len({v.model_dump_json() for v in values}) == len(values)  # each one new


def test_stream_json_async_and_early_stop():
    session = Agent(provider=Chunked(ORDER_JSON, size=2), model="m").session()

    async def main():
        async with session.stream_json_async("order", Order) as stream:
            return [value async for value in stream]

    values = asyncio.run(main())
    assert values[-1] == Order.model_validate_json(ORDER_JSON)

    session = Agent(provider=Chunked(ORDER_JSON, size=2), model="m").session()
    with session.stream_json("order", Order) as stream:
        first = next(stream)
    assert first.customer == "Ann"
    kept = session.messages[-1]
    assert kept.metadata["interrupted"] is True and ORDER_JSON.startswith(kept.text)


def test_a_stream_json_stopped_during_the_retry_keeps_no_failed_answer():
    bad = '{"customer": "Ann", "items": "tea"}'
    good = '{"customer": "Ann", "items": [{"name": "tea"}]}'
    session = Agent(provider=TestProvider([bad, good]), model="t").session()
    with session.stream_json("order", Order) as stream:
        first = next(stream)  # from the second answer: the first never validates
    assert first.customer == "Ann"
    roles = [(m.role, m.metadata.get("interrupted", False)) for m in session.messages]
    assert roles == [("user", False), ("assistant", True)]
    assert good.startswith(session.messages[-1].text)
    assert "cannot be used" not in "".join(m.text for m in session.messages)


# -- issue 25, items 3 and 4: stream_json() is linear; deep JSON is a typed error -------------


def test_stream_json_parses_a_long_answer_in_tiny_deltas_in_linear_work(monkeypatch):
    """A 146 kB answer took 125 s: each 4-character delta re-parsed everything so far."""
    answer = json.dumps(
        {"customer": "Ann", "items": [{"name": f"item {n}", "qty": n} for n in range(4000)]}
    )
    parsed = []
    partial = OutputType.partial

    def counted(self, text):
        parsed.append(len(text))
        assert sum(parsed) < 20 * len(answer), "the work is not linear in the answer"
        return partial(self, text)

    monkeypatch.setattr(OutputType, "partial", counted)
    session = Agent(provider=Chunked(answer, size=4), model="m").session()
    stream = session.stream_json("order", Order)
    values = list(stream)
    assert values[-1] == stream.response.output == Order.model_validate_json(answer)
    counts = [len(v.items) for v in values]
    assert counts == sorted(counts) and len(values) > 20  # still growing as it streams


def test_stream_json_still_starts_over_on_a_retry_after_a_long_answer():
    bad = json.dumps({"customer": "Ann", "items": "x" * 20_000})
    good = json.dumps({"customer": "Bo", "items": [{"name": "tea"}] * 3000})
    session = Agent(provider=TestProvider([bad, good]), model="t").session()
    stream = session.stream_json("order", Order)
    values = list(stream)
    assert {v.customer for v in values} == {"Bo"} and values[-1] == stream.response.output


class Deep(BaseModel):
    value: list


@pytest.mark.parametrize("depth", [990, 5000])
def test_deeply_nested_json_is_an_output_validation_error_that_is_retried(depth):
    deep = '{"value": ' + "[" * depth + "]" * depth + "}"
    good = '{"value": [1]}'
    session = Agent(provider=TestProvider([deep, good]), model="t").session()
    response = session.json("go", Deep)
    assert response.output == Deep(value=[1]) and response.attempts == 2
    session = Agent(provider=TestProvider([deep, good]), model="t").session()
    stream = session.stream_json("go", Deep)
    assert list(stream)[-1] == Deep(value=[1]) and stream.response.attempts == 2
    session = Agent(provider=TestProvider([deep, deep]), model="t").session()
    with pytest.raises(OutputValidationError, match="nested too deeply") as caught:
        session.json("go", Deep)
    assert len(caught.value.attempts) == 2 and session.messages == []
