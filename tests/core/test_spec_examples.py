"""Every example of the Sessions spec, on the offline provider and on openai over loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from agent_nb import Agent, Message, Session, tool
from agent_nb.errors import AgentError
from agent_nb.stores import MemoryStore, SessionStore, SQLiteStore


def sent_user_texts(agent: Agent, server) -> list[list[str]]:
    """The user messages of every request the provider sent, per request."""
    if agent.provider.name == "test":
        return [[m.text for m in r.messages if m.role == "user"] for r in agent.provider.requests]
    return [
        [m["content"] for m in body["messages"] if m["role"] == "user"] for body in server.requests
    ]


@pytest.fixture
def server_or_none(make_agent, request):
    return request.getfixturevalue("server") if make_agent.provider == "openai" else None


def test_basic_usage_remembers_across_turns(make_agent, server_or_none):
    agent = make_agent()
    session = agent.session()
    session.run("My name is Alice")
    session.run("I'm a software engineer")
    response = session.run("What do you know about me?")

    assert "Alice" in response.text and "software engineer" in response.text
    assert sent_user_texts(agent, server_or_none)[-1] == [
        "My name is Alice",
        "I'm a software engineer",
        "What do you know about me?",
    ]
    assert [m.role for m in session.messages] == ["user", "assistant"] * 3


def test_custom_session_id(make_agent):
    session = make_agent().session(session_id="user-123-conv-456")
    assert session.session_id == "user-123-conv-456"


def test_generated_session_ids_differ(make_agent):
    agent = make_agent()
    assert agent.session().session_id != agent.session().session_id


def test_system_prompt_is_sent_and_not_in_history(make_agent, server_or_none):
    agent = make_agent()
    session = agent.session(
        system="You are a helpful coding assistant. Always provide code examples."
    )
    session.run("How do I read a file in Python?")
    assert session.system.startswith("You are a helpful coding assistant")
    assert len(session.messages) == 2
    if server_or_none is None:
        assert agent.provider.requests[-1].system == session.system
    else:
        first = server_or_none.requests[-1]["messages"][0]
        assert first == {"role": "system", "content": session.system}


def test_pre_populated_history_continues(make_agent, server_or_none):
    agent = make_agent()
    history = [
        Message.user("What's the capital of France?"),
        Message.assistant("The capital of France is Paris."),
    ]
    session = agent.session(messages=history)
    session.run("What about Germany?")
    assert sent_user_texts(agent, server_or_none)[-1] == [
        "What's the capital of France?",
        "What about Germany?",
    ]
    if server_or_none is not None:
        sent = server_or_none.requests[-1]["messages"]
        assert sent[1] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert session.messages[:2] == history


def test_run_passes_settings_through(make_agent, server_or_none):
    agent = make_agent(temperature=0.2)
    session = agent.session()
    session.run("Explain this concept", temperature=0.7, max_tokens=500)
    if server_or_none is None:
        assert agent.provider.requests[-1].settings == {"temperature": 0.7, "max_tokens": 500}
    else:
        body = server_or_none.requests[-1]
        assert body["temperature"] == 0.7 and body["max_tokens"] == 500
    session.run("And again")  # the agent's default applies when the call names none
    if server_or_none is not None:
        assert server_or_none.requests[-1]["temperature"] == 0.2


def test_run_async(make_agent):
    session = make_agent().session()

    async def main():
        return await session.run_async("Explain async/await")

    response = asyncio.run(main())
    assert "Explain async/await" in response.text
    assert len(session.messages) == 2


def test_stream_yields_deltas_and_updates_history_after(make_agent, server_or_none):
    session = make_agent().session()
    seen = []
    stream = session.stream("Write a story")
    for event in stream:
        if event.type == "text_delta":
            seen.append(event.text)
            assert len(session.messages) == 0  # history waits for the end
    assert len(seen) > 1
    assert "".join(seen) == stream.response.text == session.messages[-1].text
    assert len(session.messages) == 2
    if server_or_none is not None:
        assert server_or_none.requests[-1]["stream"] is True


def test_stream_async_both_spellings(make_agent):
    session = make_agent().session()

    async def main():
        texts = []
        async for event in await session.stream_async("Write a poem"):
            if event.type == "text_delta":
                texts.append(event.text)
        other = []
        async for event in session.stream_async("Write another poem"):
            if event.type == "text_delta":
                other.append(event.text)
        return "".join(texts), "".join(other)

    first, second = asyncio.run(main())
    assert "Write a poem" in first and "Write another poem" in second
    assert [m.text for m in session.messages[1::2]] == [first, second]


class Summary(BaseModel):
    key_points: list[str]
    conclusion: str


def test_json_structured_output(make_agent, server_or_none):
    session = make_agent().session()
    session.run("We're planning a trip to Japan")
    response = session.json("Summarize our conversation", schema=Summary)
    assert isinstance(response.output, Summary)
    assert response.output.key_points
    assert json.loads(response.text) == response.output.model_dump()
    if server_or_none is not None:
        format_ = server_or_none.requests[-1]["response_format"]
        assert format_["type"] == "json_schema"
        assert format_["json_schema"]["name"] == "Summary"
        assert format_["json_schema"]["schema"]["additionalProperties"] is False


def test_history_access_and_copy(make_agent):
    session = make_agent().session()
    session.run("Hello there")
    messages = session.messages
    messages.append(Message.user("not in the session"))
    assert len(session.messages) == 2
    for msg in session.messages:
        assert msg.role in {"user", "assistant"} and isinstance(msg.text[:50], str)


def test_clear_history_keeps_system(make_agent):
    session = make_agent().session(system="Be brief.")
    session.run("Hello")
    session.clear()
    assert len(session.messages) == 0
    assert session.system == "Be brief."


def test_add_messages_manually(make_agent, server_or_none):
    agent = make_agent()
    session = agent.session()
    session.add_message(Message.user("Custom user message"))
    session.add_message(Message.assistant("Custom assistant response"))
    assert [m.text for m in session.messages] == [
        "Custom user message",
        "Custom assistant response",
    ]
    session.run("Next")
    assert sent_user_texts(agent, server_or_none)[-1] == ["Custom user message", "Next"]


def test_fork_diverges_and_original_is_unchanged(make_agent):
    agent = make_agent()
    session = agent.session()
    session.run("We're planning a trip to Japan")
    session.run("I want to visit Tokyo and Kyoto")

    alt_session = session.fork(session_id="alternative-plan")
    assert alt_session.session_id == "alternative-plan"
    alt_session.run("Actually, let's focus on Osaka instead")

    response = session.run("What cities are we visiting?")
    assert "Tokyo and Kyoto" in response.text and "Osaka" not in response.text
    alt = alt_session.run("What cities are we visiting?")
    assert "Osaka" in alt.text
    assert len(session.messages) == 6 and len(alt_session.messages) == 8
    # fork shares the (immutable) messages, not copies of them
    assert session.messages[0] is alt_session.messages[0]


def test_serialization_round_trip_continues(make_agent, tmp_path, server_or_none):
    agent = make_agent()
    session = agent.session(system="Remember everything.")
    session.run("My name is Alice")
    data = session.to_dict()
    path = tmp_path / "session.json"
    path.write_text(json.dumps(data))

    restored = Session.from_dict(json.loads(path.read_text()), agent)
    assert restored.session_id == session.session_id
    assert restored.system == session.system
    assert restored.messages == session.messages
    response = restored.run("Where were we?")
    assert "My name is Alice" in response.text
    assert sent_user_texts(agent, server_or_none)[-1] == ["My name is Alice", "Where were we?"]


def test_memory_store(make_agent):
    session = make_agent().session()
    session.run("Hi")
    store = MemoryStore()
    store.save("session-1", session.to_dict())
    data = store.load("session-1")
    assert data == session.to_dict()
    assert store.list_sessions() == ["session-1"]
    assert store.delete("session-1") is True and store.load("session-1") is None


def test_sqlite_store(make_agent, tmp_path):
    agent = make_agent()
    session = agent.session()
    session.run("Hi")
    store = SQLiteStore(tmp_path / "sessions.db")
    store.save(session.session_id, session.to_dict())

    later = SQLiteStore(tmp_path / "sessions.db")  # another connection, as after a restart
    data = later.load(session.session_id)
    assert data
    restored = Session.from_dict(data, agent)
    assert restored.messages == session.messages
    restored.run("Still there?")
    assert len(restored.messages) == 4


class DictBackedStore(SessionStore):
    """The spec's custom store, on a dict that stands in for the Redis client."""

    def __init__(self, redis_client: dict):
        self.redis = redis_client

    def save(self, session_id: str, data: dict) -> None:
        self.redis[f"session:{session_id}"] = json.dumps(data)

    def load(self, session_id: str) -> dict | None:
        data = self.redis.get(f"session:{session_id}")
        return json.loads(data) if data else None

    def delete(self, session_id: str) -> bool:
        return self.redis.pop(f"session:{session_id}", None) is not None

    def list_sessions(self) -> list[str]:
        return [k.replace("session:", "") for k in self.redis]


def test_custom_store(make_agent):
    agent = make_agent()
    store = DictBackedStore({})
    session = agent.session(session_id="abc")
    session.run("Hello")
    store.save(session.session_id, session.to_dict())
    assert store.list_sessions() == ["abc"]
    assert Session.from_dict(store.load("abc"), agent).messages == session.messages
    assert store.delete("abc") and not store.delete("abc")


@tool
def get_user_orders(user_id: str) -> str:
    """Get orders for a user."""
    return json.dumps(
        [
            {"id": "1", "item": "Laptop", "status": "shipped", "user": user_id},
            {"id": "2", "item": "Mouse", "status": "delivered", "user": user_id},
        ]
    )


def test_sessions_with_tools(make_agent, server_or_none):
    agent = make_agent(tools=[get_user_orders])
    session = agent.session(system="You are a customer service assistant.")
    first = session.run("I'm user-123, what are my recent orders?")
    roles = [m.role for m in first.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = first.messages[1].tool_calls[0]
    assert call.name == "get_user_orders" and call.arguments == {"user_id": "user-123"}
    result = first.messages[2].tool_results[0]
    assert result.tool_call_id == call.id and "Laptop" in result.content
    assert "Laptop" in first.text

    session.run("When will order 1 arrive?")
    if server_or_none is not None:
        sent = server_or_none.requests[-1]["messages"]
        assert [m["role"] for m in sent] == [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
        ]
        assert sent[2]["tool_calls"][0]["function"]["name"] == "get_user_orders"
        assert sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]
        assert server_or_none.requests[0]["tools"][0]["function"]["parameters"]["required"] == [
            "user_id"
        ]


def test_handle_errors_gracefully(make_agent, server_or_none):
    session = make_agent().session()
    session.run("Hello")
    before = session.messages
    if server_or_none is None:
        session.agent.provider.add_reply(lambda request: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            session.run("boom")
    else:
        from fake_openai import Reply

        server_or_none.script(Reply(status=400, error={"error": {"message": "bad input"}}))
        with pytest.raises(AgentError, match="bad input"):
            session.run("boom")
    assert session.messages == before


def test_summarize_into_new_session(make_agent):
    agent = make_agent()
    session = agent.session()
    for i in range(11):
        session.run(f"Fact number {i}")
    assert len(session.messages) > 20

    class ConversationSummary(BaseModel):
        points: list[str]

    summary_response = session.json(
        "Summarize our conversation so far in 3 bullet points", schema=ConversationSummary
    )
    new_session = agent.session(system=f"Previous conversation summary: {summary_response.output}")
    assert "Fact number" in new_session.system
    assert new_session.messages == []


def test_session_ids_for_tracking(make_agent):
    import uuid

    agent = make_agent()

    def create_support_session(user_id: str) -> Session:
        session_id = f"{user_id}-{uuid.uuid4().hex[:8]}"
        return agent.session(session_id=session_id, system="You are a support agent.")

    session = create_support_session("u42")
    assert session.session_id.startswith("u42-") and session.system == "You are a support agent."


def test_model_can_be_chosen_per_call(make_agent, server_or_none):
    agent = make_agent()
    agent.session().run("hi", model="gpt-4o-mini")
    if server_or_none is None:
        assert agent.provider.requests[-1].model == "gpt-4o-mini"
    else:
        assert server_or_none.requests[-1]["model"] == "gpt-4o-mini"
