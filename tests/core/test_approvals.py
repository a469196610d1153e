"""Approval: a requires_approval tool runs only once approved, also across a process restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agent_nb import Agent, Message, tool
from agent_nb.errors import ApprovalPendingError, ServerError
from agent_nb.messages import ToolCallPart
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def tools(ran: list[str]):
    @tool(requires_approval=True)
    def transfer(amount: int, to: str) -> str:
        """Send money."""
        ran.append(f"transfer {amount} {to}")
        return f"sent {amount} to {to}"

    @tool
    def balance() -> str:
        """The balance."""
        ran.append("balance")
        return "1000"

    return [transfer, balance]


def round_(*specs):
    return Message(
        role="assistant",
        parts=(*(ToolCallPart(id=i, name=n, arguments=a) for i, n, a in specs),),
    )


PAY = round_(("b", "balance", {}), ("t", "transfer", {"amount": 5, "to": "Bob"}))


def assert_paired(messages):
    for index, message in enumerate(messages):
        if message.tool_calls:
            results = messages[index + 1].tool_results
            assert [r.tool_call_id for r in results] == [c.id for c in message.tool_calls]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_callback_approves_or_denies_with_a_reason(kind):
    ran: list[str] = []
    asked = []

    def decide(call):
        asked.append((call.name, call.arguments))
        return call.arguments["amount"] < 100 or (False, "over the limit")

    async def decide_async(call):
        await asyncio.sleep(0)
        return decide(call)

    big = round_(("t2", "transfer", {"amount": 500, "to": "Eve"}))
    provider = TestProvider([PAY, "Sent.", big, "Not sent."])
    agent = Agent(
        provider=provider,
        model="t",
        tools=tools(ran),
        approve=decide if kind == "sync" else decide_async,
    )
    session = agent.session()
    assert session.run("pay Bob").text == "Sent."
    assert ran == ["balance", "transfer 5 Bob"]
    assert session.run("pay Eve").text == "Not sent."
    denied = session.messages[-2].tool_results[0]
    assert (
        denied.is_error and denied.content == "The user did not approve this call: over the limit."
    )
    assert asked == [
        ("transfer", {"amount": 5, "to": "Bob"}),
        ("transfer", {"amount": 500, "to": "Eve"}),
    ]
    assert ran == ["balance", "transfer 5 Bob"]  # balance was never asked about
    assert_paired(session.messages)


def test_without_a_callback_the_turn_stops_cleanly_and_resumes():
    ran: list[str] = []
    provider = TestProvider([PAY, "Done: sent."])
    session = Agent(provider=provider, model="t", tools=tools(ran)).session()
    events = list(session.stream("pay Bob"))
    assert [e.type for e in events] == ["tool_call", "tool_call", "tool_result", "done"]
    response = events[-1].response
    assert [c.id for c in response.pending_approvals] == ["t"]
    assert [c.id for c in session.pending_approvals] == ["t"]
    assert ran == ["balance"]  # the call that needs no approval ran
    with pytest.raises(ApprovalPendingError, match=r"'t' \(transfer\).*session.approve\(id\)"):
        session.run("something else")
    with pytest.raises(ApprovalPendingError, match="no tool call 'x' waits.*waiting: 't'"):
        session.approve("x")
    session.approve("t")
    resumed = session.resume()
    assert resumed.text == "Done: sent." and ran == ["balance", "transfer 5 Bob"]
    assert session.pending_approvals == []
    roles = [m.role for m in session.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert [r.content for r in session.messages[2].tool_results] == ["1000", "sent 5 to Bob"]
    assert_paired(session.messages)
    with pytest.raises(ApprovalPendingError, match="nothing to resume"):
        session.resume()


def test_a_denied_call_goes_back_to_the_model():
    ran: list[str] = []
    provider = TestProvider([PAY, "OK, I won't."])
    session = Agent(provider=provider, model="t", tools=tools(ran)).session()
    session.run("pay Bob")
    session.deny("t", "not today")
    assert session.resume().text == "OK, I won't."
    assert "transfer 5 Bob" not in ran
    sent = provider.requests[-1].messages[-1].tool_results
    assert [r.content for r in sent] == ["1000", "The user did not approve this call: not today."]


def test_a_resume_that_fails_after_the_call_ran_keeps_its_result_never_to_run_twice():
    ran: list[str] = []

    class Failing(TestProvider):
        fail = False

        async def complete(self, request):
            if self.fail:
                raise ServerError("the server is down", provider="test", status=503)
            async for batch in super().complete(request):
                yield batch

    provider = Failing([PAY, "Sent."])
    session = Agent(provider=provider, model="t", tools=tools(ran)).session()
    session.run("pay Bob")
    session.approve("t")
    provider.fail = True
    with pytest.raises(ServerError):
        session.resume()
    assert ran == ["balance", "transfer 5 Bob"]
    assert session.pending_approvals == []  # it ran: it no longer waits
    assert [r.content for r in session.messages[-1].tool_results] == ["1000", "sent 5 to Bob"]
    with pytest.raises(ApprovalPendingError, match="nothing to resume"):
        session.resume()
    provider.fail = False
    session.run("did it work?")  # the conversation goes on; the call ran once
    assert ran.count("transfer 5 Bob") == 1
    assert_paired(session.messages)


def test_a_resume_that_fails_before_any_call_ran_keeps_the_decision():
    ran: list[str] = []

    @tool(requires_approval=True)
    async def transfer(amount: int, to: str) -> str:
        """Send money."""
        ran.append("transfer")
        return "sent"

    def boom(call):
        raise RuntimeError("the approval service is down")

    provider = TestProvider([round_(("t", "transfer", {"amount": 1, "to": "A"}))])
    session = Agent(provider=provider, model="t", tools=[transfer]).session()
    session.run("pay")
    with pytest.raises(RuntimeError):  # a callback that fails: nothing ran
        session.resume(approve=boom)
    assert [c.id for c in session.pending_approvals] == ["t"] and ran == []


def test_a_decision_holds_only_for_the_call_it_was_made_on():
    """Servers reuse ids ("call_0" every time): an old yes must not approve a new call."""
    ran: list[str] = []

    @tool(requires_approval=True)
    def rm(path: str) -> str:
        """Delete a path."""
        ran.append(path)
        return "deleted"

    first = round_(("call_0", "rm", {"path": "/tmp/x"}))
    second = round_(("call_0", "rm", {"path": "/home"}))
    provider = TestProvider([first, second])
    session = Agent(provider=provider, model="t", tools=[rm]).session()
    session.run("clean up")
    session.approve("call_0")
    session.clear()  # history changes: the decision goes with it
    response = session.run("something else")
    assert ran == [] and [c.arguments_json() for c in response.pending_approvals] == [
        {"path": "/home"}
    ]
    session.approve("call_0")
    session._messages = [
        *session._messages[:-2],
        session._messages[-2].model_copy(update={"parts": first.parts}),
        session._messages[-1],
    ]  # the waiting call swapped under the decision (as a hostile store could)
    provider.add_reply("ok")
    session.resume()  # the decision was for /home, the call is /tmp/x: not approved
    assert ran == [] and session.pending_approvals[0].arguments_json() == {"path": "/tmp/x"}


def test_a_denial_read_then_stopped_is_kept():
    ran: list[str] = []
    provider = TestProvider([PAY, "ok"])
    session = Agent(provider=provider, model="t", tools=tools(ran)).session()
    session.run("pay Bob")
    session.deny("t", "no")
    stream = session.stream_resume()
    first = next(stream)
    assert first.type == "tool_result" and "did not approve" in first.content
    stream.close()
    assert session.pending_approvals == []
    result = session.messages[-1].tool_results[-1]
    assert result.tool_call_id == "t" and "did not approve this call: no" in result.content
    assert_paired(session.messages)


def test_an_async_stream_stopped_keeps_a_finished_calls_real_result():
    done = []

    @tool
    async def fast() -> str:
        """Fast."""
        return "fast done"

    @tool
    async def transfer() -> str:
        """Slow, with a side effect."""
        await asyncio.sleep(0.2)
        done.append("transfer")
        return "transferred"

    provider = TestProvider([round_(("a", "fast", {}), ("b", "transfer", {})), "ok"])
    session = Agent(provider=provider, model="t", tools=[fast, transfer]).session()

    async def main():
        stream = session.stream_async("go")
        async for event in stream:
            if event.type == "tool_result":
                break
        await asyncio.sleep(0.5)  # the slow call finishes meanwhile
        await stream.aclose()

    asyncio.run(main())
    assert done == ["transfer"]
    results = {r.tool_call_id: r.content for r in session.messages[-1].tool_results}
    assert results == {"a": "fast done", "b": "transferred"}


def test_waiting_state_of_the_wrong_type_does_not_break_the_session():
    session = Agent(provider=TestProvider(["fine"]), model="t").session()
    data = session.to_dict()
    data["messages"] = [
        Message.user("x").to_dict(),
        round_(("c", "transfer", {})).to_dict(),
        {**Message.tool([]).to_dict(), "metadata": {"awaiting_approval": 5}},
    ]
    from agent_nb import Session
    from agent_nb.errors import InvalidSessionData

    with pytest.raises(InvalidSessionData, match="awaiting_approval"):
        Session.from_dict(data, session.agent)


def test_an_approval_callback_that_answers_nonsense_is_a_clear_error():
    ran: list[str] = []
    agent = Agent(
        provider=TestProvider([PAY]), model="t", tools=tools(ran), approve=lambda call: "yes"
    )
    session = agent.session()
    with pytest.raises(TypeError, match=r"returns True, False or \(False, 'reason'\); got 'yes'"):
        session.run("pay")
    assert session.messages == []


def test_a_stopped_resume_keeps_a_started_call_done_never_to_run_twice():
    ran: list[str] = []
    started = threading.Event()

    @tool(requires_approval=True)
    async def transfer(amount: int, to: str) -> str:
        """Send money, slowly."""
        ran.append("transfer")
        started.set()
        await asyncio.sleep(10)
        return "sent"

    provider = TestProvider([round_(("t", "transfer", {"amount": 5, "to": "Bob"})), "ok"])
    session = Agent(provider=provider, model="t", tools=[transfer]).session()
    session.run("pay Bob")
    session.approve("t")
    with session.stream_resume():
        pass  # never read: the turn never started
    assert [c.id for c in session.pending_approvals] == ["t"] and ran == []

    stream = session.stream_resume()
    threading.Thread(target=lambda: (started.wait(5), stream.close()), daemon=True).start()
    assert list(stream) == []
    assert ran == ["transfer"] and session.pending_approvals == []
    result = session.messages[-1].tool_results[0]
    assert result.is_error and "interrupted" in result.content
    assert session.messages[-1].metadata["interrupted"] is True
    with pytest.raises(ApprovalPendingError, match="nothing to resume"):
        session.resume()
    assert_paired(session.messages)


def test_a_tool_that_started_is_kept_even_when_no_text_was_seen():
    started = threading.Event()

    @tool
    async def launch() -> str:
        """Launch, slowly."""
        started.set()
        await asyncio.sleep(10)
        return "launched"

    provider = TestProvider([round_(("l", "launch", {}))])
    session = Agent(provider=provider, model="t", tools=[launch]).session()
    stream = session.stream("launch")
    threading.Thread(target=lambda: (started.wait(5), stream.close()), daemon=True).start()
    assert [e.type for e in stream] == ["tool_call"]
    _, call, result = session.messages
    assert call.tool_calls[0].id == "l" and "interrupted" in result.tool_results[0].content


def test_waiting_calls_survive_a_process_restart(tmp_path):
    db = tmp_path / "team.db"
    ran: list[str] = []
    store = SQLiteStore(db)
    session = Agent(provider=TestProvider([PAY]), model="t", tools=tools(ran), store=store).session(
        session_id="pay-1"
    )
    session.run("pay Bob")
    assert [c.id for c in session.pending_approvals] == ["t"]
    store.close()

    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests" / "core")!r})
        from test_approvals import tools
        from agent_nb import Agent
        from agent_nb.stores import SQLiteStore
        ran = []
        store = SQLiteStore({str(db)!r})
        agent = Agent(provider="test", tools=tools(ran), store=store)
        session = agent.session(session_id="pay-1")
        waiting = [c.id for c in session.pending_approvals]
        session.approve("t")
        response = session.resume()
        print(json.dumps({{"waiting": waiting, "ran": ran, "text": response.text,
                          "roles": [m.role for m in session.messages]}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["waiting"] == ["t"] and result["ran"] == ["transfer 5 Bob"]
    assert "sent 5 to Bob" in result["text"]
    assert result["roles"] == ["user", "assistant", "tool", "assistant"]
    reloaded = SQLiteStore(db).load("pay-1")
    assert [m["role"] for m in reloaded["messages"]] == result["roles"]


def test_an_async_streamed_resume():
    ran: list[str] = []
    session = Agent(provider=TestProvider([PAY, "Sent."]), model="t", tools=tools(ran)).session()
    session.run("pay Bob")
    session.approve("t")

    async def main():
        return [e.type async for e in session.stream_resume_async()]

    assert asyncio.run(main())[-1] == "done" and ran == ["balance", "transfer 5 Bob"]
    assert session.pending_approvals == [] and session.messages[-1].text == "Sent."


@pytest.mark.parametrize(
    ("decide", "said"),
    [
        (lambda s: s.deny("t", "not today"), "The user did not approve this call: not today."),
        (lambda s: s.approve("t"), "There is no tool named 'transfer'. Available tools: none."),
    ],
    ids=["denied", "approved"],
)
def test_a_decided_call_to_a_tool_no_longer_there(decide, said):
    """Issue 25, item 9: a denial, not "there is no tool named ...", reaches the model."""
    ran: list[str] = []
    provider = TestProvider([PAY, "OK."])
    session = Agent(provider=provider, model="t", tools=tools(ran)).session()
    session.run("pay Bob")
    decide(session)
    assert session.resume(tools=[]).text == "OK."
    sent = provider.requests[-1].messages[-1].tool_results
    assert [(r.content, r.is_error) for r in sent] == [("1000", False), (said, True)]
    assert ran == ["balance"]


def test_a_session_from_a_notebook_file_lets_no_tool_run_unasked(tmp_path, caplog):
    """A notebook can come from anyone: a session NotebookStore loads keeps its history but
    not its "always allow" (a store of one's own, SQLite here, keeps it)."""
    from agent_nb.stores import NotebookStore

    ran: list[str] = []
    allowed = Agent(provider="test", tools=tools(ran)).session(session_id="pay")
    allowed.allow_tool("transfer")
    data = allowed.to_dict()
    shared, own = NotebookStore(tmp_path / "shared.ipynb"), SQLiteStore(tmp_path / "own.db")
    for store in (shared, own):
        store.save("pay", data)

    assert Agent(provider="test").load_session("pay", store=own).allowed_tools == ["transfer"]
    with caplog.at_level("WARNING", logger="agent_nb"):
        session = Agent(provider=TestProvider([PAY, "done"]), tools=tools(ran)).load_session(
            "pay", store=shared
        )
    assert session.allowed_tools == []
    assert "transfer" in caplog.text and "ask again" in caplog.text
    session.run("pay Bob")
    assert ran == ["balance"] and [c.name for c in session.pending_approvals] == ["transfer"]
