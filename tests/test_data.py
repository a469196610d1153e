"""Serialized sessions: versioned, validated, and free of secrets; configuration errors."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from fake_openai import Reply

from agent_nb import Agent, Message, Session
from agent_nb.errors import (
    AuthenticationError,
    InvalidSessionData,
    MissingAPIKeyError,
    UnknownProviderError,
)
from agent_nb.messages import ThinkingPart, ToolCallPart, ToolResultPart

SECRET = "secret-value-7f3a9c"


@pytest.fixture
def data():
    agent = Agent(provider="test")
    session = agent.session(session_id="s1", system="Be kind.")
    session.run("hello")
    return session.to_dict()


def test_to_dict_is_versioned_json(data):
    assert data["version"] == 1
    assert json.loads(json.dumps(data)) == data
    assert data["messages"][0] == {
        "role": "user",
        "parts": [{"type": "text", "text": "hello"}],
        "metadata": {},
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
        (lambda d: d.update(version=2), "version: session data is format version 2, newer"),
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
