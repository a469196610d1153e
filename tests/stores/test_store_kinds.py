"""What each store adds to the contract: files, schema, expiry, addresses, prefixes."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import nbformat
import pytest
from generated import nested

from agent_nb import Agent, Message
from agent_nb.errors import ConfigurationError, InvalidSessionData, StoreError
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import MemoryStore, NotebookStore, SQLiteStore


def bot(store) -> Agent:
    return Agent(provider=TestProvider(), model="test", store=store)


# -- SQLite ------------------------------------------------------------------------------------


def test_sqlite_default_path_comes_from_the_environment_or_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_NB_DB", str(tmp_path / "from-env.db"))
    with SQLiteStore() as store:
        assert store.path == tmp_path / "from-env.db" and store.path.exists()
    monkeypatch.delenv("AGENT_NB_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with SQLiteStore() as store:
        assert store.path == tmp_path / "data" / "agent_nb" / "sessions.db"


def test_sqlite_after_a_turn_writes_only_that_turn(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    session = bot(store).session()
    session.messages = [Message.user(f"m{i}") for i in range(500)]
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    session.run("one more")
    inserts = [s for s in statements if s.startswith("INSERT INTO agent_nb_message")]
    assert len(inserts) == 2  # the prompt and the answer, nothing rewritten
    assert not any(s.startswith("DELETE") for s in statements)

    statements.clear()
    store.save(
        session.session_id, {**session.to_dict(), "messages": session.to_dict()["messages"][:-2]}
    )
    assert [s for s in statements if s.startswith("DELETE")]  # an undo deletes the tail
    assert not [s for s in statements if s.startswith("INSERT INTO agent_nb_message")]


def test_sqlite_migrates_the_one_document_per_session_schema(tmp_path):
    path = tmp_path / "old.db"
    old = bot(None).session(session_id="old")
    old.run("from before")
    with sqlite3.connect(path) as db:  # what agent_nb 0.1 wrote
        db.execute(
            "CREATE TABLE agent_nb_sessions "
            "(session_id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO agent_nb_sessions VALUES (?, ?, 0)", ("old", json.dumps(old.to_dict()))
        )
        db.execute("INSERT INTO agent_nb_sessions VALUES ('broken', '{nope', 0)")
    store = SQLiteStore(path)
    assert store.load("old") == old.to_dict()
    assert sorted(store.list_sessions()) == ["broken", "old"]
    with pytest.raises(InvalidSessionData, match="'broken'"):
        store.load("broken")
    resumed = bot(store).session(session_id="old")
    resumed.run("and now")
    assert len(SQLiteStore(path).load("old")["messages"]) == 4


def test_sqlite_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE agent_nb_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigurationError, match="newer agent_nb.*pip install -U"):
        SQLiteStore(path)


def test_sql_table_prefix_must_be_an_identifier(tmp_path):
    with pytest.raises(ConfigurationError, match="table_prefix"):
        SQLiteStore(tmp_path / "x.db", table_prefix="x; DROP TABLE y")
    a = SQLiteStore(tmp_path / "x.db", table_prefix="team_a_")
    b = SQLiteStore(tmp_path / "x.db", table_prefix="team_b_")
    bot(a).session(session_id="s").run("only in a")
    assert b.list_sessions() == [] and a.list_sessions() == ["s"]


LONE = "broken \ud800 surrogate"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_text_with_a_lone_surrogate_round_trips(kind, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    session = bot(store).session()
    session.add_message(Message.user(LONE))
    assert store.load(session.session_id)["messages"][0]["parts"][0]["text"] == LONE


def test_session_ids_with_control_characters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="control character"):
        SQLiteStore(tmp_path / "s.db").save("a\x00b", {"messages": []})


# -- notebook ----------------------------------------------------------------------------------


def notebook_file(path: Path) -> str:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Analysis"),
        nbformat.v4.new_code_cell(
            "x = 1\nx",
            outputs=[
                nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=1)
            ],
            execution_count=1,
        ),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.metadata["custom"] = {"keep": ["me", "ünïcode"]}
    nbformat.write(notebook, path)
    return path.read_text()


def test_notebook_store_leaves_every_other_part_of_the_notebook_alone(tmp_path):
    path = tmp_path / "analysis.ipynb"
    before = notebook_file(path)
    store = NotebookStore(path)
    session = bot(store).session(session_id="s")
    session.run("hello")
    after = nbformat.read(path, as_version=4)
    nbformat.validate(after)
    assert after.metadata["agent_nb"]["sessions"]["s"] == session.to_dict()
    del after.metadata["agent_nb"]
    assert nbformat.writes(after) + "\n" == before  # byte for byte, but for our key
    assert store.delete("s") and nbformat.read(path, as_version=4).metadata["agent_nb"] == {
        "sessions": {}
    }
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_notebook_store_creates_a_missing_notebook(tmp_path):
    path = tmp_path / "new" / "sessions.ipynb"
    store = NotebookStore(path)
    assert store.load("x") is None and store.list_sessions() == []
    bot(store).session(session_id="x").run("hi")
    nbformat.validate(nbformat.read(path, as_version=4))


def test_a_notebook_that_is_not_json_is_never_overwritten(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [')
    store = NotebookStore(path)
    with pytest.raises(InvalidSessionData, match="cannot be read as a notebook"):
        store.load("x")
    session = bot(store).session()
    with pytest.raises(StoreError, match="cannot be read as a notebook") as caught:
        session.run("hello")
    assert caught.value.response.text and len(session.messages) == 2
    assert path.read_text() == '{"cells": ['


def test_notebook_store_says_when_text_cannot_be_written(tmp_path):
    store = NotebookStore(tmp_path / "n.ipynb")
    session = bot(store).session()
    with pytest.raises(StoreError, match="surrogate"):
        session.add_message(Message.user(LONE))


# -- Redis -------------------------------------------------------------------------------------


def test_redis_ttl_expires_sessions_and_their_index_entries(redis_url):
    from agent_nb.stores import RedisStore

    store = RedisStore(redis_url, prefix=f"ttl{time.time_ns()}:", ttl=0.5)
    bot(store).session(session_id="brief").run("hello")
    assert store.list_sessions() == ["brief"]
    assert 0 < store._redis.pttl(store._keys("brief")[0]) <= 500
    time.sleep(0.8)
    assert store.load("brief") is None
    assert store.list_sessions() == [] and store.sessions() == []
    assert store._redis.zcard(f"{store.prefix}updated") == 0


def test_redis_prefixes_keep_stores_apart_and_repr_hides_the_password(redis_url):
    from agent_nb.stores import RedisStore

    a = RedisStore(redis_url, prefix=f"a{time.time_ns()}:")
    b = RedisStore(redis_url, prefix=f"b{time.time_ns()}:")
    bot(a).session(session_id="s").run("only in a")
    assert b.list_sessions() == [] and a.list_sessions() == ["s"]
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisStore(redis_url, ttl=0)
    hidden = RedisStore("redis://:hunter2-secret@127.0.0.1:1/0")
    assert "hunter2" not in repr(hidden)


# -- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_repr_hides_the_password_and_accepts_an_open_connection(postgres_dsn):
    import psycopg

    from agent_nb.stores import PostgresStore

    with_password = postgres_dsn.replace("@", ":hunter2-secret@")
    store = PostgresStore(with_password, table_prefix="pw_")
    assert "hunter2" not in repr(store) and "127.0.0.1" in repr(store)
    store.close()
    with pytest.raises(ConfigurationError, match="autocommit"):
        PostgresStore(psycopg.connect(postgres_dsn))
    connection = psycopg.connect(postgres_dsn, autocommit=True)
    store = PostgresStore(connection, table_prefix="conn_")
    bot(store).session(session_id="s").run("hello")
    assert store.load("s")["messages"][0]["parts"][0]["text"] == "hello"


def test_postgres_reconnects_after_losing_its_connection(postgres_dsn):
    from agent_nb.stores import PostgresStore

    store = PostgresStore(postgres_dsn, table_prefix="reconnect_")
    session = bot(store).session()
    session.run("before")
    store._connection.close()  # as after a server restart or a network cut
    session.run("after")
    assert len(store.load(session.session_id)["messages"]) == 4


def test_one_damaged_session_does_not_hide_the_others_in_a_notebook(tmp_path):
    path = tmp_path / "shared.ipynb"
    notebook_file(path)
    store = NotebookStore(path)
    for session_id in ("alpha", "deep", "broken", "omega"):
        session = bot(store).session(session_id=session_id)
        session.add_message(Message.user(f"I am {session_id}", raw=f"RAW-{session_id}"))
    text = path.read_text()
    text = text.replace('"RAW-deep"', nested(100_000))  # valid JSON, too deep for Python
    text = text.replace('"RAW-broken"', '{"a": ')  # a bad hand edit
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # as a whole, the file is not JSON any more

    assert bot(store).load_session("alpha").messages[0].text == "I am alpha"
    assert bot(store).load_session("omega").messages[0].text == "I am omega"
    with pytest.raises(InvalidSessionData, match="'deep'.*nested more than 200 levels"):
        store.load("deep")
    with pytest.raises(InvalidSessionData, match="'broken'.*not valid JSON .*line"):
        bot(store).load_session("broken")
    assert sorted(store.list_sessions()) == ["alpha", "broken", "deep", "omega"]
    titles = {info.session_id: info.title for info in store.sessions()}
    assert titles["alpha"] == "I am alpha" and titles["deep"] == "(corrupt: cannot be read)"
    assert "deep" in store and "nope" not in store

    # a write keeps the damaged sessions as they are in the file, byte for byte
    alpha = bot(store).load_session("alpha")
    alpha.run("hello")
    written = path.read_text()
    assert nested(100_000) in written and '{"a": ' in written
    assert len(bot(store).load_session("alpha").messages) == 3
    with pytest.raises(InvalidSessionData, match="'deep'.*nested"):
        store.load("deep")
    assert store.delete("deep") is True
    store.save("broken", bot(None).session(session_id="broken").to_dict())  # replaced
    alpha.run("hello again")
    after = nbformat.read(path, as_version=4)  # whole again
    nbformat.validate(after)
    assert after.metadata["custom"] == {"keep": ["me", "ünïcode"]}  # the rest of the file
    assert [c.cell_type for c in after.cells] == ["markdown", "code"]
    assert sorted(store.list_sessions()) == ["alpha", "broken", "omega"]
    assert len(store.load("alpha")["messages"]) == 5


def test_a_notebook_with_a_damaged_cell_is_read_but_never_written(tmp_path):
    path = tmp_path / "cells.ipynb"
    notebook_file(path)
    store = NotebookStore(path)
    bot(store).session(session_id="s").run("hello")
    text = path.read_text().replace('"x = 1\\n"', '"x = 1\\n')  # an unterminated string
    path.write_text(text)
    assert bot(store).load_session("s").messages[0].text == "hello"
    with pytest.raises(InvalidSessionData, match="cell 2 of .*cannot be read.*not changed"):
        store.save("t", bot(None).session().to_dict())
    assert path.read_text() == text
