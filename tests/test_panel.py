"""ChatPanel's widget model: what it sends over the comm, and that the session stays the truth.

The comm is replaced by a recorder, so every message the front end would get (custom
messages and state updates) is captured and measured as the JSON it would travel as.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from fake_openai import Reply
from xss_corpus import PAYLOADS, problems

from agent_nb import Agent, ChatPanel, Message, Session
from agent_nb.notebook import panel as panel_module
from agent_nb.notebook.live import MESSAGE_BYTES


class Recorder:
    """Listens on a panel's comm: keeps what it sends to the front end, as JSON."""

    def __init__(self, panel: ChatPanel) -> None:
        self.sent: list[dict] = []
        panel.comm.send = self.send  # the comm without a kernel (comm.DummyComm) sends nothing

    def send(self, data: dict, buffers: object = None, **kwargs: object) -> None:
        self.sent.append(json.loads(json.dumps(data)))

    def custom(self, kind: str | None = None) -> list[dict]:
        shown = [m["content"] for m in self.sent if m.get("method") == "custom"]
        return [m for m in shown if kind is None or m["type"] == kind]

    def bytes(self) -> int:
        """What went to the front end: the JSON, and Jupyter's wrapping of each message."""
        return sum(len(json.dumps(m)) + MESSAGE_BYTES for m in self.sent)


def panel_on(server, **kwargs) -> tuple[ChatPanel, Recorder]:
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
    panel = ChatPanel(agent.session(**kwargs))
    recorder = Recorder(panel)
    return panel, recorder


def test_importing_agent_nb_does_not_import_the_widget_libraries():
    code = "import sys, agent_nb; print(sorted({'anywidget', 'ipywidgets'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_panel_takes_a_session_or_an_agent():
    agent = Agent(provider="test")
    session = agent.session(session_id="s1")
    assert ChatPanel(session).session is session
    assert isinstance(ChatPanel(agent).session, Session)
    with pytest.raises(TypeError, match="takes a Session or an Agent"):
        ChatPanel("s1")  # type: ignore[arg-type]


@pytest.fixture
def every_token(monkeypatch):
    """No throttle: the front end is updated on every token (the worst case for bytes)."""
    monkeypatch.setattr(panel_module, "UPDATE_INTERVAL", 0.0)


async def test_a_long_answer_streams_as_deltas_not_resends(server, every_token):
    paragraphs = [f"para{i} " + " ".join(f"w{j}" for j in range(40)) for i in range(600)]
    answer = "\n\n".join(paragraphs)
    server.script(Reply(text=answer))
    panel, recorder = panel_on(server)
    response = await panel.send("write at length")
    assert response.text == answer
    deltas = recorder.custom("delta")
    assert len(deltas) > 600  # it streamed: many messages, each a small piece
    frozen = "".join(d["done"] for d in deltas)
    assert frozen.count("<p>para") > 500  # finished paragraphs, each sent once
    assert len(answer) < recorder.bytes() < 10 * len(answer), (recorder.bytes(), len(answer))
    # the end: the session's own messages, the live answer replaced by them
    (appended,) = recorder.custom("append")
    assert [i["role"] for i in appended["items"]] == ["user", "assistant"]
    assert appended["items"][1]["html"].count("<p>para") == 600
    assert panel.session.messages[-1].text == answer and not panel.busy


async def test_stop_mid_stream_keeps_what_was_read(server):
    words = " ".join(f"w{i}" for i in range(400))
    server.script(Reply(text=words, chunk_delay=0.02))
    panel, recorder = panel_on(server)
    task = panel.send("go")
    assert panel.busy
    while not any(d["tail"] for d in recorder.custom("delta")):
        await asyncio.sleep(0.01)
    panel.stop()
    await task
    kept = panel.session.messages
    assert [m.role for m in kept] == ["user", "assistant"]
    assert kept[-1].metadata.get("interrupted")
    assert 0 < len(kept[-1].text) < len(words) and words.startswith(kept[-1].text)
    (end,) = recorder.custom("end")
    assert "stopped" in end["error"] and "kept" in end["error"]
    (appended,) = recorder.custom("append")
    assert kept[-1].text.split()[-1] in appended["items"][-1]["html"]
    assert not panel.busy


async def test_the_front_end_can_send_and_stop_and_a_second_send_waits(server):
    server.script(Reply(text=" ".join(f"w{i}" for i in range(300)), chunk_delay=0.02))
    panel, recorder = panel_on(server)
    handle = panel._handle_custom_msg
    handle({"type": "send", "text": "first"}, [])
    task = panel._task
    assert task is not None and panel.busy
    handle({"type": "send", "text": "second"}, [])  # ignored while answering
    handle("not a dict", [])
    handle({"type": "send", "text": ["no"]}, [])
    assert panel._task is task
    while not recorder.custom("delta"):
        await asyncio.sleep(0.01)
    handle({"type": "stop"}, [])
    await task
    assert [m.text for m in panel.session.messages if m.role == "user"] == ["first"]
    assert len(server.requests) == 1


async def test_an_error_is_shown_inline_and_history_is_unchanged(server):
    server.script(Reply(status=401, error={"error": {"message": "bad key"}}))
    panel, recorder = panel_on(server)
    before = panel.session.messages
    assert await panel.send("hello") is None
    assert panel.session.messages == before
    (end,) = recorder.custom("end")
    assert "401" in end["error"] or "bad key" in end["error"], end
    (appended,) = recorder.custom("append")
    assert appended["items"] == []  # the provisional prompt goes; nothing was kept


async def test_a_one_paragraph_answer_stays_within_the_byte_budget(server, every_token):
    answer = " ".join(f"w{i}" for i in range(20_000))  # no block ends: the tail only grows
    server.script(Reply(text=answer))
    panel, recorder = panel_on(server)
    await panel.send("go")
    assert recorder.custom("delta")[0]["tail"]  # the tail was shown while it was short
    assert recorder.bytes() < 10 * len(answer), (recorder.bytes(), len(answer))


async def test_stop_before_the_turn_starts_changes_nothing(server):
    panel, recorder = panel_on(server)
    task = panel.send("go")
    panel.stop()
    assert await task is None
    assert panel.session.messages == [] and not panel.busy
    assert "nothing kept" in recorder.custom("end")[0]["error"]


def test_a_view_opening_gets_the_whole_conversation_rendered_and_sanitized():
    history = [m for p in PAYLOADS for m in (Message.user(p), Message.assistant(p))]
    session = Session(Agent(provider="test"), messages=history)
    panel = ChatPanel(session)
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    (reset,) = recorder.custom("reset")
    assert len(reset["items"]) == len(history)
    for item in reset["items"]:
        assert item["role"] in ("user", "assistant")
        assert problems(item["html"]) == [], item
    bundle = panel._repr_mimebundle_()[0]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    fallback = bundle["text/html"]
    assert problems(fallback) == [] and fallback.count("<strong>you</strong>") == len(PAYLOADS)


def test_a_turn_made_in_a_cell_shows_up_when_the_cell_ends(server):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        server.script(Reply(text="from a cell"))
        panel, recorder = panel_on(server)
        shell.user_ns["session"] = panel.session
        shell.run_cell("session.run('hi')")
        (appended,) = recorder.custom("append")
        assert [i["role"] for i in appended["items"]] == ["user", "assistant"]
        assert "from a cell" in appended["items"][1]["html"]
        shell.run_cell("1 + 1")  # nothing new: nothing sent
        assert len(recorder.custom("append")) == 1
        shell.run_cell("session.clear()")  # history rewritten: the whole of it again
        assert recorder.custom("reset")[-1]["items"] == []
    finally:
        InteractiveShell.clear_instance()


def test_switch_shows_another_session_from_the_store(tmp_path):
    from agent_nb.stores import SQLiteStore

    store = SQLiteStore(str(tmp_path / "s.db"))
    agent = Agent(provider="test")
    other = agent.session(session_id="other", store=store)
    other.add_message(Message.user("kept in the store"))
    panel = ChatPanel(agent.session(session_id="first", store=store))
    recorder = Recorder(panel)
    switched = panel.switch("other")
    assert panel.session is switched and switched.session_id == "other"
    assert panel.session_id == "other"
    assert [m.text for m in switched.messages] == ["kept in the store"]
    assert "kept in the store" in recorder.custom("reset")[-1]["items"][0]["html"]
    assert panel.switch("first").session_id == "first"


async def test_undo_drops_the_last_turn_from_the_session(server):
    server.script(Reply(text="one"), Reply(text="two"))
    panel, recorder = panel_on(server)
    await panel.send("first")
    await panel.send("second")
    panel._handle_custom_msg({"type": "undo"}, [])
    assert [m.text for m in panel.session.messages] == ["first", "one"]
    items = recorder.custom("reset")[-1]["items"]
    assert [i["role"] for i in items] == ["user", "assistant"] and "one" in items[1]["html"]
    panel._handle_custom_msg({"type": "undo"}, [])
    panel._handle_custom_msg({"type": "undo"}, [])  # nothing left: said so, nothing changes
    assert panel.session.messages == []
    assert "nothing to undo" in recorder.custom("end")[-1]["error"]
