"""Serialized sessions: versioned, validated, and free of secrets; configuration errors."""

from __future__ import annotations

import copy
import json
import logging
import re
from datetime import datetime

import pytest
from fake_openai import Reply
from generated import SETTINGS, sessions
from hypothesis import given, settings

from agent_nb import Agent, Message, Session
from agent_nb.errors import (
    AuthenticationError,
    InvalidSessionData,
    MissingAPIKeyError,
    UnknownProviderError,
)
from agent_nb.events import Usage
from agent_nb.messages import MAX_DEPTH, TextPart, ThinkingPart, ToolCallPart, ToolResultPart

SECRET = "secret-value-7f3a9c"


@pytest.fixture
def data():
    agent = Agent(provider="test")
    session = agent.session(session_id="s1", system="Be kind.")
    session.run("hello")
    return session.to_dict()


def test_to_dict_is_versioned_json(data):
    assert data["version"] == 2
    assert json.loads(json.dumps(data)) == data
    assert data["messages"][0] == {
        "role": "user",
        "parts": [{"type": "text", "text": "hello"}],
        "metadata": {"tokens": 1},  # the provider's count of it (docs/context.md)
        "id": data["messages"][0]["id"],
    }


def test_every_part_round_trips():
    parts = (
        ThinkingPart(text="hmm", signature="sig"),
        ToolCallPart(id="c1", name="f", arguments={"x": [1, {"y": "ü"}]}),
    )
    messages = [
        Message(role="assistant", parts=parts, metadata={"k": {"nested": [1, 2]}}),
        Message.tool([ToolResultPart(tool_call_id="c1", name="f", content="ok", is_error=True)]),
        Message.system("rules 🚀"),
    ]
    agent = Agent(provider="test")
    session = agent.session(messages=messages)
    restored = Session.from_dict(json.loads(json.dumps(session.to_dict())), agent)
    assert restored.messages == messages


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda d: d.pop("version"), "version: missing"),
        (lambda d: d.pop("session_id"), "session_id: missing"),
        (lambda d: d.pop("messages"), "messages: missing"),
        (lambda d: d.update(version=3), "version: session data is format version 3, newer"),
        (lambda d: d.update(messages="hello"), "messages: Input should be a valid list"),
        (lambda d: d["messages"][1].update(role="wizard"), "messages[1].role: Input should be"),
        (lambda d: d["messages"][0].pop("role"), "messages[0].role: missing"),
        (lambda d: d["messages"][0]["parts"][0].update(text=5), "messages[0].parts[0].text"),
        (lambda d: d["messages"][0]["parts"][0].update(type="video"), "messages[0].parts[0]"),
        (lambda d: d.update(system=["x"]), "system: Input should be a valid string"),
    ],
)
def test_from_dict_names_what_is_wrong(data, change, names):
    broken = copy.deepcopy(data)
    change(broken)
    with pytest.raises(InvalidSessionData, match=names.replace("[", r"\[").replace("]", r"\]")):
        Session.from_dict(broken, Agent(provider="test"))


def test_from_dict_rejects_non_dicts():
    with pytest.raises(InvalidSessionData, match="must be a dict"):
        Session.from_dict("[]", Agent(provider="test"))


def test_messages_are_immutable():
    message = Message.user("hi", source="cell 3")
    with pytest.raises(Exception):
        message.role = "assistant"
    with pytest.raises(TypeError, match="read-only"):
        message.metadata["source"] = "elsewhere"
    call = ToolCallPart(id="1", name="f", arguments={"a": [1]})
    with pytest.raises(TypeError):
        call.arguments["a"] = 2
    assert copy.deepcopy(call) == call


def test_message_constructors():
    assert Message.user("a").role == "user"
    assert Message.assistant("b").text == "b"
    assert Message.system("c").role == "system"
    with pytest.raises(TypeError, match="must be a str"):
        Message.user(42)


def test_no_secret_in_to_dict_repr_or_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    agent = Agent(provider="openai", model="gpt-4o", api_key=SECRET, base_url=server.url)
    session = agent.session()
    session.run("hello")
    server.script(Reply(status=401, error={"error": {"message": "Incorrect API key provided"}}))
    with pytest.raises(AuthenticationError) as caught:
        session.run("again")
    assert server.request_headers[0]["Authorization"] == f"Bearer {SECRET}"
    for text in (
        json.dumps(session.to_dict()),
        repr(agent),
        repr(session),
        repr(agent.provider),
        str(caught.value),
        repr(caught.value),
        caplog.text,
    ):
        assert SECRET not in text
    assert caught.value.status == 401 and "OPENAI_API_KEY" in str(caught.value)


def test_missing_api_key_is_reported_at_the_first_request():
    agent = Agent(provider="openai", model="gpt-4o")  # constructing is fine
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        agent.session().run("hello")


def test_custom_base_url_needs_no_key(server):
    agent = Agent(provider="openai", model="llama", base_url=server.url)
    assert agent.session().run("hello").text
    assert "Authorization" not in server.request_headers[-1]


def test_environment_configures_openai(openai_env):
    agent = Agent(provider="openai", model="gpt-4o")
    assert agent.provider.base_url == openai_env.url
    agent.session().run("hi")
    assert openai_env.request_headers[-1]["Authorization"].startswith("Bearer ")


def test_unknown_provider_lists_the_known_ones():
    with pytest.raises(UnknownProviderError, match="known providers: .*openai.*test"):
        Agent(provider="openia", model="x")


def test_provider_prefix_in_model(server):
    agent = Agent(model="openai-compatible:my-model", base_url=server.url)
    assert agent.provider.name == "openai-compatible" and agent.model == "my-model"


def test_session_and_agent_arguments_are_checked():
    agent = Agent(provider="test")
    with pytest.raises(TypeError, match="session_id must be a non-empty str"):
        agent.session(session_id=3)
    with pytest.raises(TypeError, match=r"messages\[1\] must be a Message"):
        agent.session(messages=[Message.user("a"), "b"])
    with pytest.raises(TypeError, match="add_message takes a Message"):
        agent.session().add_message("hi")
    with pytest.raises(TypeError, match="prompt must be a str"):
        agent.session().run(["hi"])


# -- data the library writes, it reads; any other data is InvalidSessionData -----------------


def deep(depth: int, inner=None):
    """A dict nested `depth` levels deep, built without recursion."""
    value = {} if inner is None else inner
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def deep_list(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def hostile(data):
    """(what is changed, the field the error names) for each way stored data can be wrong."""
    message = data["messages"][0]
    huge = "x" * 5_000_000
    return [
        ({"usage": {**data["usage"], "bogus_tokens": 1}}, "usage.bogus_tokens"),
        ({"usage": {"input_tokens": True}}, "usage.input_tokens: .*boolean"),
        ({"usage": {"input_tokens": -1}}, "usage.input_tokens: .*greater than or equal to 0"),
        ({"usage": {"output_tokens": 1.5}}, "usage.output_tokens: .*integer"),
        ({"usage": {"output_tokens": 2.0}}, "usage.output_tokens: .*integer"),
        ({"usage": {"cached_tokens": "3"}}, "usage.cached_tokens: .*string"),
        ({"usage": [1, 2]}, "usage: "),
        ({"session_id": ""}, "session_id: .*empty"),
        ({"session_id": "   "}, "session_id: .*empty"),
        ({"session_id": 7}, "session_id: .*string"),
        ({"version": True}, "version: .*boolean"),
        ({"version": "1"}, "version: .*string"),
        ({"version": 0}, "version: "),
        ({"version": 1.0}, "version: "),
        ({"system": 3}, "system: "),
        ({"model": ["m"]}, "model: "),
        ({"created_at": 5}, "created_at: "),
        ({"surprise": 1}, "surprise: an unknown key"),
        ({huge: 1}, "an unknown key"),
        ({"messages": {"0": message}}, "messages: .*list"),
        ({"messages": deep_list(100_000)}, r"messages\[0\]: "),
        ({"messages": [{**message, "parts": deep_list(100_000)}]}, r"messages\[0\]\.parts\[0\]"),
        ({"system": deep(100_000)}, "system: .*got an object"),
        ({"usage": deep(100_000)}, "usage.a: an unknown key"),
        ({"messages": [message, None]}, r"messages\[1\]: "),
        ({"messages": [{**message, "id": 3}]}, r"messages\[0\]\.id: "),
        ({"messages": [{**message, "role": huge}]}, r"messages\[0\]\.role: "),
        ({"messages": [{**message, "metadata": []}]}, r"messages\[0\]\.metadata: "),
        ({"messages": [{**message, "extra": 1}]}, r"messages\[0\]\.extra: "),
        ({"messages": [{**message, "parts": [{"type": "text", "text": b"x"}]}]}, "text: "),
        (
            {
                "messages": [
                    {
                        **message,
                        "parts": [
                            {
                                "type": "tool_result",
                                "tool_call_id": "c",
                                "name": "f",
                                "content": "ok",
                                "is_error": "yes",
                            }
                        ],
                    }
                ]
            },
            r"messages\[0\]\.parts\[0\]\.is_error: .*boolean",
        ),
        (
            {
                "messages": [
                    {
                        **message,
                        "parts": [
                            {
                                "type": "tool_call",
                                "id": "c",
                                "name": "f",
                                "arguments": deep(100_000),
                            }
                        ],
                    }
                ]
            },
            r"messages\[0\]\.parts\[0\]\.arguments: .*nested more than 100 levels",
        ),
        (
            {"messages": [{**message, "metadata": deep(100_000)}]},
            r"messages\[0\]\.metadata: .*nested more than 100 levels",
        ),
        (
            {"messages": [{**message, "metadata": {"k": deep_list(100_000)}}]},
            r"messages\[0\]\.metadata: .*nested more than 100 levels",
        ),
        (
            {"messages": [{**message, "metadata": {"k": float("nan")}}]},
            r"messages\[0\]\.metadata: .*nan is not a JSON number",
        ),
    ]


def test_every_way_data_can_be_wrong_is_invalid_session_data_naming_session_and_field(data):
    agent = Agent(provider="test")
    for change, field in hostile(data):
        broken = {**data, **change}
        with pytest.raises(InvalidSessionData) as caught:
            Session.from_dict(broken, agent)
        text = str(caught.value)
        assert re.search(field, text), (field, text[:300])
        named = broken.get("session_id")
        if isinstance(named, str) and named.strip():
            assert text.startswith(f"session {named!r}: ")
        assert len(text) < 1_000  # a huge value is never copied into the message


def test_usage_refuses_what_is_not_a_count():
    for value in (True, 1.5, 2.0, "3", None):
        with pytest.raises(TypeError, match="Usage.input_tokens must be an int"):
            Usage(input_tokens=value)
    with pytest.raises(ValueError, match="Usage.output_tokens must be >= 0"):
        Usage(output_tokens=-1)
    assert Usage(1, 2, 3, 4) + Usage(1) == Usage(2, 2, 3, 4)


def test_what_enters_a_message_is_json_nested_at_most_max_depth():
    assert Message.user("a", k=deep(MAX_DEPTH - 1)).metadata["k"] == deep(MAX_DEPTH - 1)
    ToolCallPart(id="c", name="f", arguments=deep(MAX_DEPTH))
    for build in (
        lambda: Message.user("a", k=deep(MAX_DEPTH)),
        lambda: ToolCallPart(id="c", name="f", arguments=deep(MAX_DEPTH + 1)),
        lambda: Message.user("a", k=deep_list(100_000)),
    ):
        with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels deep"):
            build()
    for value, problem in [
        (datetime.now(), "a datetime is not a JSON value"),
        (float("inf"), "inf is not a JSON number"),
        ({1: "x"}, "the key 1 is not a str"),
        ({"ok": [1, {b"k": 2}]}, r"at \['k'\]\['ok'\]\[1\]: the key b'k' is not a str"),
        (object(), "a object is not a JSON value"),
        (b"\xff", "a bytes is not a JSON value"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Message.user("a", k=value)


@given(session=sessions())
@settings(SETTINGS, max_examples=300)
def test_any_session_the_api_makes_round_trips_through_to_dict_and_json(session):
    data = session.to_dict()
    for again in (data, json.loads(json.dumps(data))):
        restored = Session.from_dict(again, session.agent)
        assert restored.to_dict() == data
        assert restored.messages == session.messages
        assert (restored.session_id, restored.system, restored.usage) == (
            session.session_id,
            session.system,
            session.usage,
        )


def test_lone_surrogates_anywhere_round_trip():
    lone = "\ud800"
    message = Message(
        role="assistant",
        parts=(
            TextPart(text=lone),
            ToolCallPart(id=lone, name="f", arguments={lone: [lone, {"\udc00": 1}]}),
        ),
        metadata={lone: {"\udfff": [lone]}},
    )
    agent = Agent(provider="test")
    session = agent.session(session_id=f"s{lone}", system=lone, messages=[message])
    data = json.loads(json.dumps(session.to_dict()))
    assert Session.from_dict(data, agent).messages == [message]
