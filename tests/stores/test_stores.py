"""One contract for every session store: memory, SQLite, notebook, Redis, PostgreSQL.

The Redis and PostgreSQL stores run against real servers started on 127.0.0.1 (conftest).
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import open_store
from generated import KEYS, SETTINGS, has_surrogate, sessions
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_nb import Agent, Message
from agent_nb.errors import InvalidSessionData, SessionNotFoundError, StoreError
from agent_nb.messages import TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import SessionInfo, SessionStore

WORKER = Path(__file__).resolve().parents[1] / "store_worker.py"

UNICODE = "naïve café — 日本語のテキスト, עִברִית, emoji 🧪🚀, e\u0301, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, tab\tnl\nnul\x00"


def agent(store: SessionStore | None = None) -> Agent:
    return Agent(provider=TestProvider(), model="test-model", store=store)


def every_part_session() -> Any:
    session = agent().session(session_id="parts", system=f"system: {UNICODE}")
    session.add_message(Message.user(UNICODE, source="test"))
    session.add_message(
        Message(
            role="assistant",
            parts=(
                ThinkingPart(text="let me think", signature="sig-abc=="),
                TextPart(text="calling a tool"),
                ToolCallPart(id="call_1", name="lookup", arguments={"q": UNICODE, "n": [1, 2.5]}),
            ),
            metadata={"model": "m", "usage": {"input_tokens": 3}},
        )
    )
    session.add_message(
        Message.tool(
            [
                ToolResultPart(tool_call_id="call_1", name="lookup", content="found"),
                ToolResultPart(tool_call_id="call_2", name="x", content="boom", is_error=True),
            ]
        )
    )
    session.add_message(Message.assistant("done", interrupted=True))
    return session


# -- the four methods ------------------------------------------------------------------------


def test_save_load_delete_list(store):
    data = every_part_session().to_dict()
    assert store.load("parts") is None
    assert store.list_sessions() == []
    store.save("parts", data)
    assert store.load("parts") == data
    assert store.list_sessions() == ["parts"]
    assert "parts" in store and "other" not in store
    store.save("other", {**data, "session_id": "other", "messages": []})
    assert sorted(store.list_sessions()) == ["other", "parts"]
    assert store.delete("parts") is True
    assert store.delete("parts") is False
    assert store.load("parts") is None
    assert store.list_sessions() == ["other"]


def test_every_part_and_unicode_round_trip(store):
    session = every_part_session()
    store.save(session.session_id, session.to_dict())
    restored = agent().load_session("parts", store=store)
    assert restored.messages == session.messages
    assert restored.system == session.system
    assert restored.messages[1].parts[2].arguments_json() == {"q": UNICODE, "n": [1, 2.5]}
    assert restored.messages[2].tool_results[1].is_error is True


def test_saved_data_is_a_copy(store):
    data = every_part_session().to_dict()
    store.save("parts", data)
    data["messages"].clear()
    data["system"] = "changed"
    loaded = store.load("parts")
    assert len(loaded["messages"]) == 4 and loaded["system"] != "changed"


def test_odd_session_ids(store):
    data = every_part_session().to_dict()
    for session_id in ["with space", "quote'; DROP TABLE x; --", "колонка:1", "a/b\\c", "*"]:
        store.save(session_id, {**data, "session_id": session_id})
        assert store.load(session_id)["session_id"] == session_id
    assert len(store.list_sessions()) == 5


def test_bad_arguments_are_refused_and_change_nothing(store):
    data = every_part_session().to_dict()
    store.save("parts", data)
    with pytest.raises(TypeError, match="session_id"):
        store.save("", data)
    with pytest.raises(TypeError, match="Session.to_dict"):
        store.save("parts", "not a dict")
    with pytest.raises(TypeError, match="messages"):
        store.save("parts", {**data, "messages": ["not a dict"]})
    with pytest.raises(ValueError, match="limit"):
        store.sessions(limit=-1)
    assert store.load("parts") == data


# -- listing -----------------------------------------------------------------------------------


def test_sessions_lists_metadata_newest_first_with_limit_and_offset(store):
    bot = agent(store)
    first = bot.session(session_id="first")
    first.run("What is the boiling point of water at sea level, in degrees Celsius and Fahrenheit?")
    second = bot.session(session_id="second")
    second.run("hello")
    second.run("again")
    first.add_message(Message.assistant("a note"))  # now the most recent

    infos = store.sessions()
    assert [i.session_id for i in infos] == ["first", "second"]
    top = infos[0]
    assert isinstance(top, SessionInfo)
    assert top.title.startswith("What is the boiling point of water") and len(top.title) <= 80
    assert top.message_count == 3 and top.model == "test-model"
    assert top.created_at == first.created_at and top.updated_at == first.updated_at
    assert infos[1].message_count == 4 and infos[1].title == "hello"
    assert [i.session_id for i in store.sessions(limit=1)] == ["first"]
    assert [i.session_id for i in store.sessions(limit=1, offset=1)] == ["second"]
    assert store.sessions(offset=2) == [] and store.sessions(limit=0) == []


# -- async twins -------------------------------------------------------------------------------


def test_async_twins(store):
    data = every_part_session().to_dict()

    async def main():
        await store.asave("parts", data)
        assert await store.aload("parts") == data
        assert await store.alist_sessions() == ["parts"]
        assert [i.session_id for i in await store.asessions(limit=5)] == ["parts"]
        assert await store.adelete("parts") is True
        assert await store.aload("parts") is None

    asyncio.run(main())


# -- autosave and resume -----------------------------------------------------------------------


def test_autosave_after_every_turn_and_resume(store):
    bot = agent(store)
    session = bot.session(session_id="work", system="be brief")
    session.run("one")
    assert store.load("work") == session.to_dict()
    for prompt in ["two", "three"]:
        session.run(prompt)
        assert store.load("work") == session.to_dict()

    resumed = agent(store).session(session_id="work")  # e.g. after a kernel restart
    assert resumed.messages == session.messages and resumed.system == "be brief"
    assert resumed.usage == session.usage and resumed.created_at == session.created_at
    resumed.run("four")
    assert len(store.load("work")["messages"]) == 8

    resumed.undo()  # %session undo
    assert store.load("work") == resumed.to_dict()
    resumed.run("four again")
    assert store.load("work") == resumed.to_dict()
    resumed.clear()
    assert store.load("work")["messages"] == []
    resumed.run("fresh start")
    assert store.load("work") == resumed.to_dict()
    assert store.sessions()[0].title == "fresh start"


def test_streamed_and_interrupted_turns_are_saved(store):
    session = Agent(provider=TestProvider(delay=0.01), model="m", store=store).session()
    list(session.stream("streamed answer please"))
    assert store.load(session.session_id) == session.to_dict()
    stream = session.stream("one two three four five six")
    next(stream)
    stream.close()  # the stop button: the partial answer is kept, and saved
    saved = store.load(session.session_id)["messages"]
    assert saved[-1]["metadata"]["interrupted"] is True
    assert saved == [m.to_dict() for m in session.messages]


def test_fork_saves_under_its_own_id(store):
    session = agent(store).session(session_id="trunk")
    session.run("shared start")
    branch = session.fork("branch")
    branch.run("only in the branch")
    assert len(store.load("trunk")["messages"]) == 2
    assert len(store.load("branch")["messages"]) == 4


def test_agent_store_is_the_default_and_load_session_needs_an_existing_id(store):
    bot = agent(store)
    bot.session(session_id="known").run("hi")
    with pytest.raises(SessionNotFoundError, match=r"no session 'nope'.*'known'"):
        bot.load_session("nope")
    with pytest.raises(SessionNotFoundError, match="is empty"):
        agent().load_session("nope", store=_Empty())
    assert bot.load_session("known").messages[0].text == "hi"
    with pytest.raises(Exception, match="already in"):
        bot.session(session_id="known", messages=[Message.user("x")])


class _Empty(SessionStore):
    def save(self, session_id, data):
        raise AssertionError

    def load(self, session_id):
        return None

    def delete(self, session_id):
        return False

    def list_sessions(self):
        return []


def test_load_session_without_a_store_says_how_to_give_one():
    with pytest.raises(Exception, match="store="):
        agent().load_session("x")


def test_a_failing_store_raises_store_error_and_keeps_the_turn():
    class Broken(_Empty):
        def save(self, session_id, data):
            raise OSError("disk full")

    session = agent(Broken()).session()
    with pytest.raises(StoreError, match="disk full.*intact in memory") as caught:
        session.run("hello")
    assert caught.value.response.text
    assert len(session.messages) == 2  # the answer is kept in memory


# -- long sessions -----------------------------------------------------------------------------


def long_session(store: SessionStore | None, count: int = 10_000) -> Any:
    session = agent(store).session(session_id="long")
    messages = []
    for i in range(count // 2):
        messages += [Message.user(f"question {i} {UNICODE}"), Message.assistant(f"answer {i}")]
    session.messages = messages
    return session


@pytest.mark.slow
def test_ten_thousand_messages(store):
    session = long_session(store)
    assert store.load("long") == session.to_dict()
    session.run("one more")
    loaded = store.load("long")
    assert len(loaded["messages"]) == 10_002
    assert loaded == session.to_dict()
    assert store.sessions()[0].message_count == 10_002


# -- several processes -------------------------------------------------------------------------


def shared(store_where):
    kind, where = store_where
    if kind == "memory":
        pytest.skip("a MemoryStore lives in one process")
    return kind, where


@pytest.mark.slow
def test_concurrent_writers_in_several_processes(store_where, store):
    kind, where = shared(store_where)
    writers, turns = 4, 15
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "turns", kind, json.dumps(where), f"w{n}", str(turns)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "done", err
    assert sorted(store.list_sessions()) == [f"w{n}" for n in range(writers)]
    for n in range(writers):
        messages = store.load(f"w{n}")["messages"]
        users = [m["parts"][0]["text"] for m in messages if m["role"] == "user"]
        assert users == [f"w{n} turn {t}" for t in range(turns)]  # nothing lost or repeated
        assert len(messages) == 2 * turns


def test_a_crash_in_the_middle_of_a_save_keeps_the_previous_state(store_where, store):
    kind, where = shared(store_where)
    session = agent(store).session(session_id="precious")
    session.run("keep me")
    before = store.load("precious")
    result = subprocess.run(
        [sys.executable, str(WORKER), "crash", kind, json.dumps(where), "precious"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -9, result.stdout + result.stderr  # killed mid-save
    reopened = open_store(kind, where)  # a fresh handle, as after a restart
    assert reopened.load("precious") == before
    session.run("still usable")
    assert reopened.load("precious") == session.to_dict()
    getattr(reopened, "close", lambda: None)()


# -- bad data ----------------------------------------------------------------------------------


def corrupt(kind: str, store: Any, session_id: str) -> None:
    """Damage one stored session the way a bad disk, a bad hand edit or a bug would."""
    if kind == "memory":
        store._data[session_id].messages[0] = "{not json"
    elif kind == "sqlite":
        store._db.execute(
            "UPDATE agent_nb_message SET data = '{not json' WHERE session_id = ? AND position = 0",
            (session_id,),
        )
    elif kind == "postgres":
        with store._write() as cursor:
            cursor.execute(
                store._sql("UPDATE {message} SET data = '{{not json' WHERE session_id = ?"),
                (session_id,),
            )
    elif kind == "redis":
        store._redis.lset(store._keys(session_id)[1], 0, "{not json")
    elif kind == "notebook":
        notebook = json.loads(Path(store.path).read_text())
        notebook["metadata"]["agent_nb"]["sessions"][session_id] = "garbage"
        Path(store.path).write_text(json.dumps(notebook))


def test_corrupt_data_names_the_session_and_the_rest_stays_usable(store_where, store):
    kind, _ = store_where
    bot = agent(store)
    bot.session(session_id="good").run("fine")
    bot.session(session_id="bad").run("soon broken")
    corrupt(kind, store, "bad")

    with pytest.raises(InvalidSessionData, match="'bad'"):
        store.load("bad")
    with pytest.raises(InvalidSessionData, match="'bad'"):
        bot.load_session("bad")
    assert bot.load_session("good").messages[0].text == "fine"
    assert sorted(store.list_sessions()) == ["bad", "good"]
    assert {i.session_id for i in store.sessions()} >= {"good"}
    assert store.delete("bad") is True
    assert store.list_sessions() == ["good"]
    bot.session(session_id="bad").run("a new start")
    assert store.load("bad")["messages"][0]["parts"][0]["text"] == "a new start"


def test_secrets_never_reach_a_store(store_where, store, openai_env):
    from conftest import TEST_KEY

    session = Agent(provider="openai", model="gpt-4o-mini", store=store).session()
    session.run("hello")
    everything = json.dumps([store.load(i) for i in store.list_sessions()])
    assert session.messages and TEST_KEY not in everything
    _, where = store_where
    if "path" in where:
        assert TEST_KEY.encode() not in Path(where["path"]).read_bytes()
    assert TEST_KEY not in repr(store)


def inject(kind: str, store: Any, session_id: str, raw: str) -> None:
    """Put `raw` JSON text in place of the string "RAW" in the stored first message."""
    marker = '"RAW"'
    if kind == "memory":
        stored = store._data[session_id]
        stored.messages[0] = stored.messages[0].replace(marker, raw)
    elif kind == "sqlite":
        text = store._db.execute(
            "SELECT data FROM agent_nb_message WHERE session_id = ? AND position = 0",
            (session_id,),
        ).fetchone()[0]
        store._db.execute(
            "UPDATE agent_nb_message SET data = ? WHERE session_id = ? AND position = 0",
            (text.replace(marker, raw), session_id),
        )
    elif kind == "postgres":
        with store._write() as cursor:
            select = "SELECT data FROM {message} WHERE session_id = ? AND position = 0"
            cursor.execute(store._sql(select), (session_id,))
            text = cursor.fetchone()[0]
            update = "UPDATE {message} SET data = ? WHERE session_id = ? AND position = 0"
            cursor.execute(store._sql(update), (text.replace(marker, raw), session_id))
    elif kind == "redis":
        key = store._keys(session_id)[1]
        store._redis.lset(key, 0, store._redis.lindex(key, 0).decode().replace(marker, raw))
    elif kind == "notebook":
        path = Path(store.path)
        path.write_text(path.read_text().replace(marker, raw))


HOSTILE_MESSAGES = [
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"a":' * 150 + "1" + "}" * 150, r"messages\[0\]\.metadata: .*nested more than 100"),
    ('{"a": ', "not (valid )?JSON"),
    ('"x"}, "role": "wizard", "extra": {"q": 1', r"messages\[0\]\.(role|extra): "),
]


@pytest.fixture
def no_collection_at_depth():
    """No garbage collection while JSON is parsed ~1,000 levels deep: a collection that
    starts there runs other tests' finalizers (async generators' hooks) past the recursion
    limit, and pytest reports their RecursionError as unraisable. Not what is tested here."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.usefixtures("no_collection_at_depth")
def test_hostile_stored_messages_load_as_invalid_session_data(store_where, store):
    kind, _ = store_where
    bot = agent(store)
    bot.session(session_id="good").run("fine")
    for number, (raw, problem) in enumerate(HOSTILE_MESSAGES):
        session_id = f"bad-{number}"
        session = bot.session(session_id=session_id)
        session.add_message(Message.user("soon broken", raw="RAW"))
        inject(kind, store, session_id, raw)
        with pytest.raises(InvalidSessionData) as caught:
            bot.load_session(session_id)
        assert f"session {session_id!r}" in str(caught.value)
        assert re.search(problem, str(caught.value)), str(caught.value)[:300]
        assert len(str(caught.value)) < 1_000
        assert bot.load_session("good").messages[0].text == "fine"  # the others still load
        listed = {i.session_id: i for i in store.sessions()}
        assert set(listed) >= {"good", session_id}
        assert store.delete(session_id) is True
    bot.session(session_id="after").run("a new start")
    assert sorted(store.list_sessions()) == ["after", "good"]


def test_hostile_stored_headers_load_as_invalid_session_data(store):
    good = every_part_session().to_dict()
    cases = {
        "empty-id": ({"session_id": ""}, "session_id: .*empty"),
        "usage-key": ({"usage": {**good["usage"], "surprise_tokens": 1}}, "usage.surprise_tokens"),
        "usage-bool": ({"usage": {"input_tokens": False}}, "usage.input_tokens: .*boolean"),
        "usage-fraction": ({"usage": {"output_tokens": 0.5}}, "usage.output_tokens"),
        "usage-negative": ({"usage": {"output_tokens": -4}}, "usage.output_tokens"),
        "version-text": ({"version": "1"}, "version: .*string"),
        "newer": ({"version": 3}, "version: .*newer"),
        "system-list": ({"system": ["x"]}, "system: "),
        "unknown-key": ({"surprise": True}, "surprise: an unknown key"),
    }
    for session_id, (change, problem) in cases.items():
        store.save(session_id, {**good, **change})  # a store keeps whatever dict it is given
        with pytest.raises(InvalidSessionData) as caught:
            agent().load_session(session_id, store=store)
        message = str(caught.value)
        assert message.startswith(f"session {session_id!r} in {store!r}: ")
        assert re.search(problem, message), message


def test_data_too_deep_to_store_is_refused_and_changes_nothing(store):
    data = every_part_session().to_dict()
    store.save("parts", data)
    value: list = []
    for _ in range(100_000):
        value = [value]
    hostile = {**data, "messages": [{**data["messages"][0], "metadata": {"k": value}}]}
    with pytest.raises(ValueError, match="nested too deeply"):
        store.save("parts", hostile)
    with pytest.raises(ValueError, match="nested too deeply"):
        store.save("other", hostile)
    assert store.load("parts") == data
    assert "other" not in store.list_sessions()


# -- resuming by store key -------------------------------------------------------------------


def test_resuming_by_store_key_gives_that_key_as_the_session_id(store):
    original = agent().session()  # a random id
    original.run("hello")
    store.save("session-1", original.to_dict())  # the docs' own pattern

    resumed = agent().session(session_id="session-1", store=store)
    assert resumed.session_id == "session-1"
    assert resumed.messages == original.messages and resumed.usage == original.usage
    resumed.run("and again")
    assert store.list_sessions() == ["session-1"]  # no second entry under the old id
    stored = store.load("session-1")
    assert stored["session_id"] == "session-1" and len(stored["messages"]) == 4
    assert stored == resumed.to_dict()
    loaded = agent().load_session("session-1", store=store)
    assert loaded.session_id == "session-1" and loaded.messages == resumed.messages
    twin = loaded.fork("branch")
    twin.run("only in the branch")
    assert sorted(store.list_sessions()) == ["branch", "session-1"]


# -- any session the public API makes, through every store -----------------------------------


@given(session=sessions(KEYS), data=st.data())
@settings(SETTINGS, max_examples=40)
def test_any_session_round_trips_through_every_store(store_where, store, session, data):
    kind, _ = store_where
    key = f"{session.session_id}-{uuid.uuid4().hex[:6]}"
    data_before = session.to_dict()
    if kind == "notebook" and has_surrogate(session):  # UTF-8 cannot hold it: refused, clearly
        before = Path(store.path).read_bytes() if Path(store.path).exists() else None
        with pytest.raises(InvalidSessionData, match="surrogate"):
            store.save(key, data_before)
        assert (Path(store.path).read_bytes() if Path(store.path).exists() else None) == before
        return
    store.save(key, data_before)
    loaded = agent().load_session(key, store=store)
    assert loaded.messages == session.messages and loaded.system == session.system
    assert loaded.usage == session.usage
    assert loaded.to_dict() == {**data_before, "session_id": key, "model": "test-model"}
    # and saved as autosave does it: message by message, appended
    grown = agent(store).session(session_id=f"{key}-grown", system=session.system)
    for message in session.messages:
        grown.add_message(message)
    if session.messages:
        assert agent().load_session(grown.session_id, store=store).messages == session.messages
    store.delete(key)
    store.delete(grown.session_id)


def test_huge_strings_round_trip(store):
    huge = "x" * 1_000_000 + UNICODE
    session = agent(store).session(session_id="huge", system=huge)
    session.add_message(Message.user(huge, note=huge))
    session.add_message(Message.assistant("short"))
    resumed = agent().load_session("huge", store=store)
    assert resumed.messages == session.messages and resumed.system == huge
    assert store.sessions()[0].title.startswith("xxx") and len(store.sessions()[0].title) <= 80
