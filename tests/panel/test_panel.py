"""ChatPanel's widget model: what it sends over the comm, and that the session stays the truth.

The comm is replaced by a recorder, so every message the front end would get (custom
messages and state updates) is captured and measured as the JSON it would travel as.
"""

from __future__ import annotations

import asyncio
import html
import json
import subprocess
import sys

import pytest
from fake_openai import Reply
from xss_corpus import PAYLOADS, problems

from agent_nb import Agent, ChatPanel, Message, Session, tool
from agent_nb.notebook import live
from agent_nb.notebook.live import MESSAGE_BYTES
from agent_nb.notebook.panel import widget as panel_module
from agent_nb.notebook.workspace import Workspace


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
    with pytest.raises(TypeError, match="takes a Session, an Agent or a Router"):
        ChatPanel("s1")  # type: ignore[arg-type]


@pytest.fixture
def every_token(monkeypatch):
    """No throttle: the front end is updated on every token (the worst case for bytes)."""
    monkeypatch.setattr(live, "UPDATE_INTERVAL", 0.0)


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


# -- the controls ----------------------------------------------------------------------------


def bank(ran: list[str], server, **kwargs) -> Agent:
    """An agent whose `transfer` tool needs approval; `ran` records what actually ran."""

    @tool(requires_approval=True)
    def transfer(amount: int, to: str) -> str:
        """Send money."""
        ran.append(f"transfer {amount} {to}")
        return f"sent {amount} to {to}"

    return Agent(
        provider="openai", model="m", base_url=server.url, api_key="k", tools=[transfer], **kwargs
    )


def transfer_call(*amounts: int) -> Reply:
    calls = [{"name": "transfer", "arguments": {"amount": a, "to": "Bob"}} for a in amounts]
    return Reply(tool_calls=calls)


def view(recorder: Recorder) -> list[dict]:
    """The items the front end shows now: its resets and appends, replayed."""
    items: list[dict] = []
    for message in recorder.custom():
        if message["type"] == "reset":
            items = list(message["items"])
        elif message["type"] == "append":
            items += message["items"]
    return items


def items_html(recorder: Recorder) -> str:
    return "".join(i["html"] for i in view(recorder))


def error_of(recorder: Recorder) -> str:
    """The last inline error, as the user reads it."""
    return html.unescape(recorder.custom("end")[-1]["error"])


def decide(panel: ChatPanel, recorder: Recorder, kind: str, call: str) -> None:
    """Click Approve or Deny on the card of `call`, as panel.js sends it: with the id of
    the message the card is in."""
    (item,) = [i for i in view(recorder) if call in call_ids(i["html"])]
    panel._handle_custom_msg({"type": kind, "call": call, "id": item["id"]}, [])


def call_ids(markup: str) -> list[str]:
    """The calls whose cards offer Approve / Deny (panel.js makes the buttons in this place)."""
    import re

    return re.findall(r'class="agent-nb-panel-approval" data-call="([^"]+)"', markup)


async def test_approve_runs_the_waiting_call_once_and_a_second_click_changes_nothing(server):
    ran: list[str] = []
    server.script(transfer_call(5), Reply(text="Sent."))
    panel = ChatPanel(bank(ran, server).session())
    recorder = Recorder(panel)
    response = await panel.send("pay Bob 5")
    assert response.pending_approvals and ran == []
    appended = items_html(recorder)
    (call,) = call_ids(appended)  # the card offers Approve and Deny
    assert "needs your approval" in appended
    handle = panel._handle_custom_msg
    click = {"call": call, "id": panel.session.messages[-2].id}
    handle({"type": "approve", **click}, [])
    task = panel._task
    handle({"type": "approve", **click}, [])  # a double click: ignored while it runs
    handle({"type": "deny", **click}, [])
    assert panel._task is task
    await task
    assert ran == ["transfer 5 Bob"] and len(server.requests) == 2
    (card,) = recorder.custom("card")  # while streaming: the result, in place of the call
    assert card["call"] == call and "sent 5 to Bob" in card["html"] and "amount" in card["html"]
    assert panel.session.messages[-1].text == "Sent." and panel.session.pending_approvals == []
    cards = items_html(recorder)
    assert "sent 5 to Bob" in cards and call_ids(cards) == []
    # the same click once more, from a view that is behind: said so, nothing runs
    before = panel.session.messages
    handle({"type": "approve", **click}, [])
    assert panel._task is None and ran == ["transfer 5 Bob"]
    assert panel.session.messages == before
    assert "no longer waits for approval" in error_of(recorder)


async def test_a_call_id_the_server_uses_again_is_shown_with_its_own_round(server):
    ran: list[str] = []
    server.script(transfer_call(5), Reply(text="Sent."), transfer_call(7))  # both "call_0"
    panel = ChatPanel(bank(ran, server).session())
    recorder = Recorder(panel)
    await panel.send("pay Bob 5")
    (call,) = call_ids(items_html(recorder))
    decide(panel, recorder, "approve", call)
    await panel._task
    await panel.send("pay Bob 7")
    panel._handle_custom_msg({"type": "hello"}, [])  # a view opening: all of it, rendered again
    first, second = [i["html"] for i in view(recorder) if "agent-nb-panel-tool" in i["html"]]
    assert "sent 5 to Bob" in first and call_ids(first) == [] and "tool-done" in first
    assert call_ids(second) == [call] and "sent" not in second


async def test_a_stale_approve_does_not_decide_a_new_call_that_has_the_same_id(server):
    ran: list[str] = []
    server.script(transfer_call(5), transfer_call(700))  # the server calls both "call_0"
    panel = ChatPanel(bank(ran, server).session())
    recorder = Recorder(panel)
    await panel.send("pay Bob 5")
    (call,) = call_ids(items_html(recorder))
    stale = {"type": "approve", "call": call, "id": panel.session.messages[-2].id}
    panel._handle_custom_msg({"type": "undo"}, [])  # the user thinks again
    await panel.send("pay Bob 700")
    assert [c.id for c in panel.session.pending_approvals] == [call]  # the same id
    panel._handle_custom_msg(stale, [])  # a click on the old card, from a view behind
    assert panel._task is None and ran == [] and len(server.requests) == 2
    assert panel.session._decisions == {}
    assert "no longer waits for approval" in error_of(recorder)


async def test_deny_tells_the_model_and_runs_nothing(server):
    ran: list[str] = []
    server.script(transfer_call(5), Reply(text="Not sent."))
    panel = ChatPanel(bank(ran, server).session())
    recorder = Recorder(panel)
    await panel.send("pay Bob 5")
    (call,) = call_ids(items_html(recorder))
    decide(panel, recorder, "deny", call)
    await panel._task
    assert ran == []
    told = [m for m in server.requests[-1]["messages"] if m["role"] == "tool"]
    assert "did not approve" in told[0]["content"]
    assert panel.session.messages[-1].text == "Not sent."


async def test_two_waiting_calls_resume_when_both_are_decided(server):
    ran: list[str] = []
    server.script(transfer_call(1, 2), Reply(text="One sent."))
    panel = ChatPanel(bank(ran, server).session())
    recorder = Recorder(panel)
    await panel.send("pay twice")
    first, second = call_ids(items_html(recorder))
    decide(panel, recorder, "approve", first)
    assert panel._task is None and len(server.requests) == 1  # the other still waits
    shown = items_html(recorder)
    assert "approved: runs when" in shown and call_ids(shown) == [second]
    decide(panel, recorder, "deny", second)
    await panel._task
    assert ran == ["transfer 1 Bob"] and panel.session.messages[-1].text == "One sent."


def inert_items(history: list[Message]) -> list[dict]:
    """The items a view opening on a session with `history` gets, each checked inert."""
    panel = ChatPanel(Session(Agent(provider="test"), messages=history))
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    items = recorder.custom("reset")[-1]["items"]
    for item in items:
        assert problems(item["html"]) == [], item
    return items


def test_tool_cards_are_inert_with_hostile_names_arguments_results_and_ids():
    from agent_nb.messages import ToolCallPart, ToolResultPart

    history = []
    for n, payload in enumerate(PAYLOADS):
        call = ToolCallPart(
            id=f'c{n}"><img src=x onerror=alert(1)>', name=payload, arguments={"x": payload}
        )
        history.append(Message.user("go"))
        history.append(Message(role="assistant", parts=(call,)))
        history.append(
            Message.tool(
                [
                    ToolResultPart(
                        tool_call_id=call.id, name=payload, content=payload, is_error=n % 2 == 0
                    )
                ]
            )
        )
    history.append(Message.user("go"))
    waiting = ToolCallPart(id="w\"'><script>", name="<b>x</b>", arguments={})
    history.append(Message(role="assistant", parts=(waiting,)))
    history.append(Message(role="tool", parts=(), metadata={"awaiting_approval": [waiting.id]}))
    items = inert_items(history)
    assert all(item["id"] for item in items)
    assert call_ids(items[-1]["html"]) == ["w&quot;&#x27;&gt;&lt;script&gt;"]


async def test_regenerate_answers_again_and_keeps_the_old_answer_as_a_branch(server):
    server.script(Reply(text="first answer"), Reply(text="second answer"))
    panel, recorder = panel_on(server, session_id="main")
    await panel.send("question")
    old = panel.session.messages
    handle = panel._handle_custom_msg
    handle({"type": "regenerate", "id": old[-1].id}, [])
    task = panel._task
    handle({"type": "regenerate", "id": old[-1].id}, [])  # a double click
    assert panel._task is task
    await task
    assert len(server.requests) == 2
    assert [m.text for m in panel.session.messages] == ["question", "second answer"]
    assert panel.session.session_id == "main"
    kept = panel._sessions["main~1"]
    assert kept.messages == old  # the earlier answer, as it was
    # both answers were paid for: the session spent them; its branch counts none again
    assert [s.why for s in panel.session.ledger] == ["turn", "retry"]
    assert kept.cost.requests == 0
    controls = recorder.custom("controls")[-1]
    assert [b["id"] for b in controls["branches"]] == ["main", "main~1"]
    assert controls["current"] == "main"
    # an answer that is no longer the last one cannot be regenerated: said so, nothing changes
    handle({"type": "regenerate", "id": old[-1].id}, [])
    assert panel._task is None and len(server.requests) == 2
    assert "only the last answer" in recorder.custom("end")[-1]["error"]
    panel.switch("main~1")
    assert panel.session.messages[-1].text == "first answer"


async def test_regenerate_sends_the_prompts_pictures_again():
    """The prompt answered again is the prompt as it was sent: its text and its images."""
    import base64

    from agent_nb.providers.testing import TestProvider

    pixel = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    provider = TestProvider(["a cat", "a cat, again"])
    session = Agent(provider=provider, model="t").session(session_id="main")
    session.run("what is this?", images=[pixel])
    panel = ChatPanel(session)
    panel._handle_custom_msg({"type": "regenerate", "id": session.messages[-1].id}, [])
    await panel._task
    prompt = panel.session.messages[0]
    assert [m.text for m in panel.session.messages] == ["what is this?", "a cat, again"]
    assert len(prompt.images) == 1 and prompt.images[0].data == session.messages[0].images[0].data
    assert len(provider.requests[-1].messages[-1].images) == 1  # sent with the prompt


async def test_a_regenerate_that_fails_changes_nothing_and_retry_does_it_again(server):
    server.script(
        Reply(text="first answer"),
        Reply(status=500, error={"error": {"message": "boom"}}),
        Reply(text="second answer"),
    )
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k", max_retries=0)
    panel = ChatPanel(agent.session(session_id="main"))
    recorder = Recorder(panel)
    await panel.send("question")
    old = panel.session.messages
    panel._handle_custom_msg({"type": "regenerate", "id": old[-1].id}, [])
    await panel._task
    assert panel.session.messages == old and "main~1" not in panel._sessions
    end = recorder.custom("end")[-1]
    assert "boom" in end["error"] and end["retry"] is True
    assert "first answer" in items_html(recorder)
    panel._handle_custom_msg({"type": "retry"}, [])
    await panel._task
    assert [m.text for m in panel.session.messages] == ["question", "second answer"]
    assert panel._sessions["main~1"].messages == old
    assert recorder.custom("end")[-1]["retry"] is False


async def test_a_regenerate_stopped_midway_keeps_what_was_shown_and_the_old_answer(server):
    words = " ".join(f"w{i}" for i in range(400))
    server.script(Reply(text="old answer"), Reply(text=words, chunk_delay=0.02))
    panel, recorder = panel_on(server, session_id="main")
    await panel.send("question")
    old = panel.session.messages
    first = len(recorder.custom("delta"))
    panel._handle_custom_msg({"type": "regenerate", "id": old[-1].id}, [])
    while not any(d["tail"] for d in recorder.custom("delta")[first:]):
        await asyncio.sleep(0.01)
    panel._handle_custom_msg({"type": "stop"}, [])
    await panel._task
    question, partial = panel.session.messages
    assert question.text == "question" and partial.metadata.get("interrupted")
    assert 0 < len(partial.text) < len(words) and words.startswith(partial.text)
    assert panel._sessions["main~1"].messages == old
    assert "partial answer is kept" in error_of(recorder)


async def test_retry_sends_a_failed_prompt_again(server):
    server.script(Reply(status=401, error={"error": {"message": "bad key"}}), Reply(text="hi"))
    panel, recorder = panel_on(server)
    await panel.send("hello")
    assert recorder.custom("end")[-1]["retry"] is True
    assert recorder.custom("controls")[-1]["last_prompt"] == ""  # not in history: ↑ has none
    panel._handle_custom_msg({"type": "retry"}, [])
    await panel._task
    assert [m.text for m in panel.session.messages] == ["hello", "hi"]
    assert recorder.custom("controls")[-1]["last_prompt"] == "hello"
    panel._handle_custom_msg({"type": "retry"}, [])  # nothing failed: nothing to do
    assert panel._task is None and len(server.requests) == 2


class FailingStore:
    """A MemoryStore that fails to save sessions whose id matches `failing`."""

    def __new__(cls, failing: str):
        from agent_nb.stores import MemoryStore

        class Failing(MemoryStore):
            def save(self, session_id, data):
                if failing in session_id:
                    raise OSError("disk full")
                super().save(session_id, data)

        return Failing()


@pytest.mark.parametrize("control", ["regenerate", "edit"])
async def test_a_store_that_fails_mid_fork_leaves_the_conversation_as_it_was(server, control):
    server.script(Reply(text="answer"))
    store = FailingStore("~")
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
    panel = ChatPanel(agent.session(session_id="main", store=store))
    recorder = Recorder(panel)
    await panel.send("question")
    before, stored = panel.session.messages, store.load("main")
    if control == "regenerate":
        panel._handle_custom_msg({"type": "regenerate", "id": before[-1].id}, [])
    else:
        panel._handle_custom_msg({"type": "send", "text": "changed", "edit": before[0].id}, [])
    assert panel._task is None and len(server.requests) == 1
    assert panel.session.session_id == "main" and panel.session.messages == before
    assert store.load("main") == stored and store.list_sessions() == ["main"]
    assert list(panel._sessions) == ["main"]
    error = recorder.custom("end")[-1]["error"]
    assert "disk full" in error and ("branch" in error or "fork" in error)
    assert [m["id"] for m in recorder.custom("reset")[-1]["items"]] == [m.id for m in before]


async def test_edit_an_earlier_prompt_forks_there_and_the_branch_switcher_goes_back(server):
    server.script(Reply(text="one"), Reply(text="two"), Reply(text="edited answer"))
    panel, recorder = panel_on(server, session_id="main")
    await panel.send("first")
    await panel.send("second")
    original = panel.session.messages
    handle = panel._handle_custom_msg
    handle({"type": "edit", "id": original[0].id}, [])
    (editing,) = recorder.custom("editing")
    assert editing == {"type": "editing", "id": original[0].id, "text": "first"}
    handle({"type": "send", "text": "first, edited", "edit": original[0].id}, [])
    await panel._task
    fork = panel.session
    assert fork.session_id == "main~1" and panel.session_id == "main~1"
    assert [m.text for m in fork.messages] == ["first, edited", "edited answer"]
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "first, edited"}]
    controls = recorder.custom("controls")[-1]
    assert [b["id"] for b in controls["branches"]] == ["main", "main~1"]
    assert [s["id"] for s in controls["sessions"]] == ["main~1"]  # one family, one entry
    handle({"type": "switch", "session": "main"}, [])
    assert panel.session.messages == original
    # a prompt that is gone (the view was behind): said so, nothing sent
    handle({"type": "send", "text": "x", "edit": "no-such-id"}, [])
    handle({"type": "edit", "id": fork.messages[0].id}, [])  # not in this branch
    assert panel._task is None and len(server.requests) == 3
    assert "no longer in session 'main'" in error_of(recorder)


async def test_switching_while_an_answer_streams_is_refused_and_the_answer_goes_on(server):
    server.script(Reply(text=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.01))
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
    other = agent.session(session_id="other")
    panel = ChatPanel(agent.session(session_id="main"))
    panel._sessions["other"] = other
    recorder = Recorder(panel)
    task = panel.send("go")
    while not recorder.custom("delta"):
        await asyncio.sleep(0.01)
    handle = panel._handle_custom_msg
    handle({"type": "switch", "session": "other"}, [])
    handle({"type": "new"}, [])
    assert panel.session.session_id == "main" and panel._task is task
    assert all("Stop first" in e["error"] for e in recorder.custom("end"))
    response = await task
    assert response.text.endswith("w199") and panel.session.messages[-1].text == response.text
    handle({"type": "switch", "session": "nowhere"}, [])  # not a listed session: refused
    assert panel.session.session_id == "main"
    assert "no session 'nowhere'" in error_of(recorder)
    handle({"type": "switch", "session": "other"}, [])
    assert panel.session is other


def test_the_session_switcher_lists_the_store_newest_first_with_titles(tmp_path):
    from agent_nb.stores import SQLiteStore

    store = SQLiteStore(str(tmp_path / "s.db"))
    agent = Agent(provider="test")
    for day, name in ((1, "old"), (2, "newer")):
        saved = agent.session(session_id=name, messages=[Message.user(f"about {name}")])
        saved.updated_at = f"2026-01-0{day}T00:00:00.000+00:00"
        store.save(name, saved.to_dict())
    panel = ChatPanel(agent.session(session_id="newest", store=store))
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    controls = recorder.custom("controls")[-1]
    assert [(s["id"], s["title"]) for s in controls["sessions"]] == [
        ("newest", ""),
        ("newer", "about newer"),
        ("old", "about old"),
    ]
    panel._handle_custom_msg({"type": "switch", "session": "old"}, [])
    assert [m.text for m in panel.session.messages] == ["about old"]
    panel._handle_custom_msg({"type": "new"}, [])
    made = panel.session
    assert made.session_id not in ("old", "newer", "newest") and made.messages == []
    assert recorder.custom("controls")[-1]["current"] == made.session_id
    assert recorder.custom("reset")[-1]["items"] == []


async def test_the_footer_comes_from_the_history(server):
    server.script(
        Reply(text="one", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}),
        Reply(text="two", usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}),
    )
    panel, recorder = panel_on(server)
    await panel.send("a")
    await panel.send("b")
    footer = recorder.custom("controls")[-1]["footer"]
    assert "<code>m</code>" in footer and "20 in · 5 out" in footer
    assert "context" not in footer  # model "m": no window known, so no gauge
    assert " s" in footer  # this panel timed the turn
    # a new view of the same session (a re-opened notebook, another panel): the same facts
    again = ChatPanel(panel.session)
    other = Recorder(again)
    again._handle_custom_msg({"type": "hello"}, [])
    shown = other.custom("controls")[-1]["footer"]
    assert "20 in · 5 out" in shown
    assert f"updated {panel.session.updated_at[:10]}" in shown  # it did not time the turn
    again._handle_custom_msg({"type": "undo"}, [])  # after undo: the turn left
    shown = other.custom("controls")[-1]["footer"]
    assert "11 in · 3 out" in shown


async def test_the_footer_gauges_the_context_window_and_warns_past_80_percent():
    """The gauge of `session.context()`, as under a %%chat cell: "N% of 1k", in the warning
    style past 80%, and how many messages the last request left out under context='trim'."""
    from agent_nb.notebook._gauge import PANEL_WARNING

    agent = Agent(provider="test", context_window=1000, context="trim")
    panel = ChatPanel(agent.session())
    recorder = Recorder(panel)
    await panel.send("hello there")
    footer = recorder.custom("controls")[-1]["footer"]
    report = panel.session.context()
    assert f"context {report.fill:.0%} of 1k" in footer and not report.warning
    assert PANEL_WARNING not in footer and "left out" not in footer
    await panel.send("word " * 600)  # 600 tokens (the test provider counts words) and the
    # 250 kept for the answer: past 80%
    footer = recorder.custom("controls")[-1]["footer"]
    assert panel.session.context().warning
    assert f"<span {PANEL_WARNING}>⚠ context " in footer and "% of 1k</span>" in footer
    await panel.send("word " * 300)  # it no longer fits with the turns before: trimmed
    report = panel.session.context()
    assert report.left_out == 4
    footer = recorder.custom("controls")[-1]["footer"]
    assert "left out 4 earlier messages (trim)" in footer and problems(footer) == []


async def test_the_footer_says_when_the_server_cut_the_last_request_in_silence(server):
    """A server that reports far fewer input tokens than its own earlier reports add up to
    cut the request (Ollama's num_ctx): under context='trim' the answer is kept, and the
    footer says so, and what to do, until a turn is not cut."""
    from agent_nb.notebook._gauge import CUT_ADVICE

    usage = {"prompt_tokens": 800, "completion_tokens": 5, "total_tokens": 805}
    cut = {"prompt_tokens": 700, "completion_tokens": 5, "total_tokens": 705}  # < 800: cut
    server.script(Reply(text="one", usage=usage), Reply(text="two", usage=cut), Reply(text="3"))
    agent = Agent(
        provider="openai",
        model="m",
        base_url=server.url,
        api_key="k",
        context="trim",
        context_window=1000,
        max_tokens=50,
    )
    panel = ChatPanel(agent.session())
    recorder = Recorder(panel)
    await panel.send("first " * 300)
    assert "cut the request" not in recorder.custom("controls")[-1]["footer"]
    await panel.send("second")
    footer = recorder.custom("controls")[-1]["footer"]
    assert "the server reported 700 input tokens" in footer and "cut the request" in footer
    assert html.escape(CUT_ADVICE) in footer and problems(footer) == []
    await panel.send("third")  # reported nothing: nothing cut
    assert "cut the request" not in recorder.custom("controls")[-1]["footer"]


async def test_controls_take_hostile_messages_from_the_front_end_without_a_change(server):
    server.script(Reply(text="answer"))
    panel, _ = panel_on(server, session_id="main")
    await panel.send("question")
    before = panel.session.messages
    handle = panel_module._Handler(panel)  # called directly: ipywidgets would log an exception
    for kind in ("regenerate", "edit", "approve", "deny", "switch", "retry", "send"):
        for value in (None, 1, ["x"], {"a": 1}, "", "no-such-id"):
            message = {"type": kind, "id": value, "call": value, "session": value}
            if kind == "send":
                message.update(text="changed", edit=value)
            handle(panel, message, [])
            assert panel._task is None, (kind, value)
    assert panel.session.messages == before and panel.session.session_id == "main"
    assert list(panel._sessions) == ["main"] and len(server.requests) == 1


def test_a_panel_from_session_panel_shares_the_notebooks_sessions(server):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        server.script(Reply(text="first"), Reply(text="again"), Reply(text="in the branch"))
        shell.user_ns["bot"] = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
        shell.run_cell("%load_ext agent_nb\n%agent bot\n%session new other")
        panel = shell.run_cell("%session panel main").result
        recorder = Recorder(panel)
        panel.send("question")
        panel._handle_custom_msg({"type": "regenerate", "id": panel.session.messages[-1].id}, [])
        # the notebook's sessions are listed, and the old answer's branch is the notebook's
        listed = [s["id"] for s in recorder.custom("controls")[-1]["sessions"]]
        assert sorted(listed) == ["main", "other"]
        shell.run_cell("%%chat main~1\nand from a cell")
        assert [m.text for m in panel._sessions["main~1"].messages] == [
            "question",
            "first",
            "and from a cell",
            "in the branch",
        ]
    finally:
        from agent_nb import notebook

        notebook._loaded.pop(id(shell), None)  # a later shell may get this id
        InteractiveShell.clear_instance()


def test_the_footer_and_the_switchers_are_inert_with_hostile_names():
    hostile = "<img src=x onerror=alert(1)>"
    answer = Message.assistant("hi", model=hostile, usage={"input_tokens": 1, "output_tokens": 1})
    session = Session(Agent(provider="test"), hostile, messages=[Message.user(hostile), answer])
    panel = ChatPanel(session)
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    controls = recorder.custom("controls")[-1]
    assert problems(controls["footer"]) == [] and "&lt;img" in controls["footer"]
    # titles and ids go into <option>s as text (panel.js sets textContent), as they are
    assert controls["sessions"] == [{"id": hostile, "title": hostile}]


def test_a_store_that_fails_to_load_a_listed_session_leaves_the_panel_where_it_was():
    from agent_nb.stores import MemoryStore

    class Unreadable(MemoryStore):
        def load(self, session_id):
            if session_id == "other":
                raise OSError("the disk went away")
            return super().load(session_id)

    store = Unreadable()
    agent = Agent(provider="test")
    stored = agent.session(session_id="other", messages=[Message.user("kept")])
    store.save("other", stored.to_dict())
    panel = ChatPanel(agent.session(session_id="main", store=store))
    recorder = Recorder(panel)
    panel._handle_custom_msg({"type": "hello"}, [])
    assert "other" in [s["id"] for s in recorder.custom("controls")[-1]["sessions"]]
    panel_module._Handler(panel)(panel, {"type": "switch", "session": "other"}, [])
    assert panel.session.session_id == "main" and panel.session_id == "main"
    assert "the disk went away" in error_of(recorder) and "still shows 'main'" in error_of(recorder)


async def test_an_approved_round_is_in_the_panels_log_and_a_restore_rebuilds_it(server):
    """Approve lets the waiting round go on: the log says `resume` with the messages that
    replaced it, so the notebook's records rebuild the session exactly."""
    from agent_nb import _records
    from agent_nb.session import Session

    ran: list[str] = []
    server.script(transfer_call(5), Reply(text="Sent."))
    agent = bank(ran, server)
    panel = ChatPanel(agent.session())
    recorder = Recorder(panel)
    await panel.send("pay Bob 5")
    (call,) = call_ids(items_html(recorder))
    decide(panel, recorder, "approve", call)
    await panel._task
    assert [e["op"] for e in panel._log.entries] == ["turn", "resume"]
    entry = panel._log.metadata(panel.session)[_records.KEY]
    replayed = _records.replay([_records.Found("cell 1", entry)], agent, Session, None)
    rebuilt = replayed.sessions[panel.session.session_id].messages
    assert [m.to_dict() for m in rebuilt] == [m.to_dict() for m in panel.session.messages]
    assert not any(m.metadata.get("awaiting_approval") for m in rebuilt)


async def test_what_panel_turns_spend_is_in_its_log_and_a_restore_rebuilds_the_ledger(server):
    """A turn's entry carries its spend; a turn that failed after paid output (nothing
    kept) logs a `spend` entry of its own: the notebook keeps the whole ledger."""
    from agent_nb import _records
    from agent_nb.session import Session

    usage = {"prompt_tokens": 1_000, "completion_tokens": 10, "total_tokens": 1_010}
    server.script(Reply(text="one", usage=usage), Reply(text="cut off in the middle", drop_after=3))
    agent = Agent(provider="openai-compatible", model="gpt-4o-mini", base_url=server.url)
    panel = ChatPanel(agent.session())
    Recorder(panel)
    await panel.send("first")
    await panel.send("second")  # the stream breaks after some text: an error, nothing kept
    assert [e["op"] for e in panel._log.entries] == ["turn", "spend"]
    assert len(panel.session.messages) == 2 and panel.session.cost.requests == 2
    entry = panel._log.metadata(panel.session)[_records.KEY]
    replayed = _records.replay([_records.Found("cell 1", entry)], agent, Session, None)
    rebuilt = replayed.sessions[panel.session.session_id]
    assert rebuilt.ledger == panel.session.ledger
    assert str(rebuilt.cost) == str(panel.session.cost) and rebuilt.cost.estimated


def test_rename_gives_the_session_a_new_id_in_the_store_and_refuses_bad_names(tmp_path):
    from agent_nb.stores import SQLiteStore

    store = SQLiteStore(str(tmp_path / "s.db"))
    agent = Agent(provider="test")
    session = agent.session(session_id="main", store=store)
    session.run("hello")
    panel = ChatPanel(session)
    recorder = Recorder(panel)
    handle = panel_module._Handler(panel)
    for name in (None, 1, ["x"], "", "--bogus", "two words", "-h"):
        handle(panel, {"type": "rename", "name": name}, [])
        assert panel.session.session_id == "main" and "main" in store, name
    assert "cannot name a session" in error_of(recorder)
    handle(panel, {"type": "rename", "name": "analysis"}, [])
    assert panel.session is session and session.session_id == "analysis"
    assert panel.session_id == "analysis" and "analysis" in store and "main" not in store
    assert agent.load_session("analysis", store=store).messages[0].text == "hello"
    controls = recorder.custom("controls")[-1]
    assert controls["current"] == "analysis"
    assert [s["id"] for s in controls["sessions"]] == ["analysis"]
    other = agent.session(session_id="other", store=store)
    other.run("hi")
    handle(panel, {"type": "rename", "name": "other"}, [])  # taken, in the store
    assert session.session_id == "analysis" and "session 'other' exists" in error_of(recorder)


def test_a_rename_in_the_panel_is_the_notebooks(server):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        server.script(Reply(text="first"), Reply(text="second"))
        shell.user_ns["bot"] = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
        shell.run_cell("%load_ext agent_nb\n%agent bot")
        shell.run_cell("%%chat\nquestion")
        panel = shell.run_cell("%session panel").result
        panel._handle_custom_msg({"type": "rename", "name": "analysis"}, [])
        shell.run_cell("%%chat\nmore")  # the current session, by its new id
        workspace = Workspace.of(shell)
        assert list(workspace.sessions) == ["analysis"] and workspace.current == "analysis"
        assert [m.text for m in workspace.sessions["analysis"].messages] == [
            "question",
            "first",
            "more",
            "second",
        ]
        assert [e["op"] for e in panel._log.entries] == ["rename"]
        assert panel._log.entries[0]["renamed_from"] == "main"
    finally:
        from agent_nb import notebook

        notebook._loaded.pop(id(shell), None)  # a later shell may get this id
        InteractiveShell.clear_instance()
