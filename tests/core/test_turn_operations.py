"""Session's turn operations: turns(), undo(), remove_turn(), fork(at=), retake() and retry()."""

from __future__ import annotations

import pytest

from agent_nb import Agent, Message, tool
from agent_nb.errors import (
    AgentError,
    ConfigurationError,
    ProviderError,
    SessionBusyError,
    SessionChangedError,
    StoreError,
)
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import MemoryStore


def chat(*prompts: str, replies=None, **session_options):
    agent = Agent(provider=TestProvider(replies), model="test")
    session = agent.session(**session_options)
    for prompt in prompts:
        session.run(prompt)
    return session


def test_turns_cut_the_history_at_each_prompt():
    session = chat("one", "two", replies=["a1", "a2"])
    session.add_message(Message.assistant("said by hand, after the last prompt"))
    turns = session.turns()
    assert [t.prompt.text for t in turns] == ["one", "two"]
    assert [t.text for t in turns] == ["a1", "said by hand, after the last prompt"]
    assert [(t.start, t.end) for t in turns] == [(0, 2), (2, 5)]
    assert [m for t in turns for m in t.messages] == session.messages
    assert turns[1].id == session.messages[2].id


def test_messages_before_any_prompt_make_a_turn_without_one():
    session = chat()
    session.add_message(Message.assistant("hello first"))
    session.add_message(Message.user("hi"))
    turns = session.turns()
    assert turns[0].prompt is None
    assert [len(t.messages) for t in turns] == [1, 1]
    assert chat().turns() == []


def test_undo_removes_the_last_turn_and_saves_once():
    store = MemoryStore()
    session = chat("one", "two", replies=["a1", "a2"], store=store)
    removed = session.undo()
    assert removed is not None and removed.prompt.text == "two"
    assert [m.text for m in session.messages] == ["one", "a1"]
    assert [m["parts"][0]["text"] for m in store.load(session.session_id)["messages"]] == [
        "one",
        "a1",
    ]
    assert session.undo().prompt.text == "one"
    assert session.undo() is None
    assert session.messages == []


def test_remove_turn_takes_a_turn_or_its_id_and_keeps_the_rest():
    session = chat("one", "two", "three", replies=["a1", "a2", "a3"])
    middle = session.turns()[1]
    assert session.remove_turn(middle) == middle
    assert [m.text for m in session.messages] == ["one", "a1", "three", "a3"]
    assert session.remove_turn(middle) is None  # gone already: nothing changes
    assert session.remove_turn(session.turns()[0].id).prompt.text == "one"
    assert [m.text for m in session.messages] == ["three", "a3"]


def test_fork_at_a_turn_holds_the_history_before_it_and_the_tools():
    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        return word

    session = chat("one", "two", replies=["a1", "a2"], tools=[lookup])
    twin = session.fork("what-if", at=session.turns()[1])
    assert [m.text for m in twin.messages] == ["one", "a1"]
    assert twin.tools == session.tools
    assert len(session.messages) == 4
    with pytest.raises(ValueError, match="no turn starts at message"):
        session.fork(at="not-a-message")


def test_retake_commits_the_copys_turn_in_place_of_the_last():
    session = chat("one", "two", replies=["a1", "a2", "a2, again"])
    before = session.usage
    retake = session.retake()
    assert [m.text for m in retake.replaced] == ["two", "a2"]
    assert [m.text for m in retake.copy.messages] == ["one", "a1"]
    response = retake.copy.run("two")
    assert [m.text for m in session.messages][-1] == "a2"  # untouched until the commit
    new = retake.commit()
    assert [m.text for m in new] == ["two", "a2, again"]
    assert [m.text for m in session.messages] == ["one", "a1", "two", "a2, again"]
    assert session.usage == before + response.usage


def test_retake_of_an_earlier_turn_replaces_it_and_every_turn_after():
    session = chat("one", "two", "three", replies=["a1", "a2", "a3", "a2 anew"])
    retake = session.retake(session.turns()[1])
    assert len(retake.replaced) == 4
    retake.copy.run("two, differently")
    retake.commit()
    assert [m.text for m in session.messages] == ["one", "a1", "two, differently", "a2 anew"]


def test_a_retake_commits_nothing_if_the_session_changed_meanwhile():
    session = chat("one", replies=["a1", "a2", "retaken"])
    retake = session.retake()
    retake.copy.run("one")
    session.run("more")  # the session moved on while the copy answered
    assert retake.changed
    before = session.messages
    with pytest.raises(SessionChangedError, match="changed while its turn was answered again"):
        retake.commit()
    assert session.messages == before


def test_a_retake_whose_copy_made_nothing_leaves_the_session_as_it_is():
    session = chat("one", replies=["a1"])
    before = session.messages
    assert session.retake().commit() == []
    assert session.messages == before
    with pytest.raises(AgentError, match="no prompt to answer again"):
        chat().retake()


def test_retry_answers_the_last_prompt_again_with_the_sessions_tools():
    calls = []

    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        calls.append(word)
        return f"{word} means something"

    session = Agent(provider="test").session(tools=[lookup])
    session.run("lookup the word cat")
    first = session.messages
    response = session.retry()
    assert calls and len(calls) == 2  # the copy had the session's own tools
    assert response.messages[0].text == first[0].text
    assert response.messages[0].id != first[0].id
    assert session.messages == list(response.messages)


def test_a_failed_retry_changes_nothing_and_saves_nothing():
    def broken(request):
        raise ProviderError("the server fell over", provider="test")

    store = MemoryStore()
    session = chat("one", replies=["a1", broken], store=store)
    saved, before = store.load(session.session_id), session.messages
    with pytest.raises(ProviderError):
        session.retry()
    assert session.messages == before
    assert store.load(session.session_id) == saved


def test_the_messages_setter_replaces_the_history_once_validated():
    store = MemoryStore()
    session = chat("one", replies=["a1"], store=store)
    session.messages = [
        Message.user("hi"),
        {"role": "assistant", "parts": [{"type": "text", "text": "yo"}]},
    ]
    assert [m.text for m in session.messages] == ["hi", "yo"]
    assert len(store.load(session.session_id)["messages"]) == 2
    with pytest.raises(TypeError, match=r"messages\[0\] must be a Message"):
        session.messages = ["not a message"]
    assert [m.text for m in session.messages] == ["hi", "yo"]


def test_save_writes_the_whole_session_and_needs_a_store():
    store = MemoryStore()
    session = chat("one", replies=["a1"])
    with pytest.raises(ConfigurationError, match="has no store"):
        session.save()
    session.store = store
    session.save()
    assert len(store.load(session.session_id)["messages"]) == 2


def test_a_failed_save_raises_store_error_and_keeps_the_history():
    class Broken(MemoryStore):
        def save(self, session_id, data):
            raise OSError("disk full")

    session = chat("one", replies=["a1"])
    session.store = Broken()
    with pytest.raises(StoreError, match="disk full"):
        session.save()
    assert len(session.messages) == 2


def test_turn_operations_wait_for_no_running_turn():
    session = chat("one", replies=["a1", "a2 " * 50], store=MemoryStore())
    stream = session.stream("two")
    next(iter(stream))
    assert len(session.turns()) == 1  # reading is always allowed
    for operation in (session.undo, session.retake, session.fork, session.save):
        with pytest.raises(SessionBusyError):
            operation()
    with pytest.raises(SessionBusyError):
        session.messages = []
    stream.close()
    assert session.undo().prompt.text == "two"


def test_decisions_are_read_only_and_name_the_waiting_calls():
    @tool(requires_approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        return "deleted"

    session = Agent(provider="test", tools=[delete]).session()
    session.run("delete the file notes.txt")
    (call,) = session.pending_approvals
    assert session.decisions == {}
    session.deny(call.id, "no")
    assert session.decisions == {call.id: False}
    session.decisions.clear()  # a copy
    assert session.decisions == {call.id: False}


def test_a_turn_is_named_by_its_prompt_never_by_a_message_inside_it():
    """A tool round is never split: an id inside a turn (a tool call's result) is refused."""

    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        return word

    session = Agent(provider="test").session(tools=[lookup])
    session.run("lookup the word cat")
    inside = next(m for m in session.messages if m.role == "tool")
    before = session.messages
    assert session.remove_turn(inside.id) is None
    with pytest.raises(ValueError, match="a turn starts at a prompt"):
        session.retake(inside.id)
    with pytest.raises(ValueError, match="a turn starts at a prompt"):
        session.fork(at=inside.id)
    assert session.messages == before


def test_an_interrupt_as_a_retake_commits_changes_all_or_nothing(monkeypatch):
    """Ctrl-C lands when a call starts: a commit interrupted there leaves history and usage
    both as they were, and committing again adds the copy's usage once."""
    from agent_nb.session import Session

    session = chat("one", replies=["a1", "a1 again"])
    before, history = session.usage, session.messages
    retake = session.retake()
    retake.copy.run("one")
    swap = Session._swap
    calls = []

    def interrupted_once(self, messages, usage):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return swap(self, messages, usage)

    monkeypatch.setattr(Session, "_swap", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        retake.commit()
    assert session.usage == before and session.messages == history
    retake.commit()
    assert session.usage == before + retake.copy.usage
    assert [m.text for m in session.messages] == ["one", "a1 again"]
