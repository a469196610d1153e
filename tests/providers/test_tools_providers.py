"""The tool loop and structured output on every HTTP provider, each speaking its own wire format.

The loopback server is scripted with the model's side (tool calls, answers); the requests it
receives show what agent_nb sent back. After every scenario the history is valid: each call
paired with exactly one result, and a failed turn leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from fake_openai import Reply
from pydantic import BaseModel

from agent_nb import Agent, ModelRetry, Session, tool
from agent_nb.errors import OutputValidationError, ToolError

PROVIDERS = ["openai", "ollama", "openai-compatible", "openai-responses", "anthropic"]
ROOT = Path(__file__).resolve().parents[2]


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


@pytest.fixture(params=PROVIDERS)
def make(request, server):
    name = request.param

    def agent(**kwargs) -> Agent:
        base = server.url.removesuffix("/v1") if name == "anthropic" else server.url
        key = None if name in ("ollama", "openai-compatible") else "k"
        return Agent(provider=name, model="m", base_url=base, api_key=key, max_retries=0, **kwargs)

    agent.name = name
    agent.base = server.url.removesuffix("/v1") if name == "anthropic" else server.url
    return agent


def assert_valid(session: Session) -> None:
    messages = session.messages
    for index, message in enumerate(messages):
        if message.tool_calls:
            results = messages[index + 1].tool_results
            assert [r.tool_call_id for r in results] == [c.id for c in message.tool_calls]
    again = Session.from_dict(session.to_dict(), session.agent)  # saved after tools: reloads
    assert [m.to_dict() for m in again.messages] == [m.to_dict() for m in messages]


def results_sent(server) -> list[str]:
    """The tool results the last request carried, whatever the wire format."""
    body = server.requests[-1]
    if "input" in body:  # Responses
        return [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]
    out = []
    for message in body["messages"]:
        if message.get("role") == "tool":
            out.append(message["content"])
        elif isinstance(message.get("content"), list):
            out += [b["content"] for b in message["content"] if b.get("type") == "tool_result"]
    return out


class Overlap:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    async def visit(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        await asyncio.sleep(0.1)
        with self.lock:
            self.running -= 1


def test_parallel_calls_are_announced_then_run_together(make, server):
    overlap = Overlap()

    @tool
    async def probe(host: str) -> str:
        """Probe a host."""
        await overlap.visit()
        return f"{host} up"

    server.script(
        Reply(tool_calls=[call("probe", host=h) for h in ("a", "b", "c")]), Reply(text="All up.")
    )
    session = make(tools=[probe]).session()
    events = list(session.stream("probe a, b and c"))
    kinds = [e.type for e in events if e.type.startswith("tool")]
    assert kinds == ["tool_call"] * 3 + ["tool_result"] * 3
    assert overlap.most == 3
    assert results_sent(server) == ["a up", "b up", "c up"]
    assert events[-1].response.text == "All up."
    assert_valid(session)


def test_a_chain_of_rounds_with_errors_the_model_fixes(make, server):
    @tool(retries=2)
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    @tool
    def check(value: int) -> str:
        """Check a value."""
        if value < 0:
            raise ModelRetry("the value must be positive")
        return "fine"

    server.script(
        Reply(tool_calls=[call("add", a="two", b=1)]),  # invalid: corrected next round
        Reply(tool_calls=[call("add", a=2, b=1), call("nope")]),  # unknown tool
        Reply(tool_calls=[call("divide", a=3, b=0)]),  # raises: fed back
        Reply(tool_calls=[call("check", value=-1)]),  # ModelRetry
        Reply(tool_calls=[call("check", value=3)]),
        Reply(text="3, and fine."),
    )
    session = make(tools=[add, divide, check]).session()
    assert session.run("compute").text == "3, and fine."
    results = [r for m in session.messages for r in m.tool_results]
    contents = [r.content for r in results]
    assert contents[0].startswith("Invalid arguments: a: Input should be a valid integer")
    assert contents[1:3] == [
        "3",
        "There is no tool named 'nope'. Available tools: add, divide, check.",
    ]
    assert contents[3] == "The tool raised ZeroDivisionError: division by zero"
    assert contents[4] == "the value must be positive" and contents[5] == "fine"
    assert [r.is_error for r in results] == [True, False, True, True, True, False]
    assert len(server.requests) == 6
    assert_valid(session)


def test_what_cannot_be_fixed_ends_the_turn_with_history_unchanged(make, server):
    @tool(on_error="raise")
    def strict() -> str:
        """Fails."""
        raise RuntimeError("broken")

    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    agent = make(tools=[strict, ping], max_tool_rounds=2)
    session = agent.session()
    server.script(Reply(text="Hello."))
    session.run("hi")
    before = session.to_dict()["messages"]
    server.script(Reply(tool_calls=[call("strict")]))
    with pytest.raises(ToolError, match="strict.*RuntimeError: broken"):
        session.run("go")
    server.script(*[Reply(tool_calls=[call("ping")]) for _ in range(3)])
    with pytest.raises(ToolError, match="kept calling tools for 2 rounds"):
        session.run("ping forever")
    assert session.to_dict()["messages"] == before


def test_approval_granted_refused_and_waiting_across_a_process_restart(make, server, tmp_path):
    ran = []

    @tool(requires_approval=True)
    def transfer(amount: int, to: str) -> str:
        """Send money."""
        ran.append((amount, to))
        return f"sent {amount} to {to}"

    def decide(event):
        return event.arguments["amount"] < 100 or (False, "over the limit")

    server.script(
        Reply(tool_calls=[call("transfer", amount=5, to="Bob")]),
        Reply(text="Sent."),
        Reply(tool_calls=[call("transfer", amount=500, to="Eve")]),
        Reply(text="Not sent."),
    )
    session = make(tools=[transfer], approve=decide).session()
    session.run("pay Bob")
    session.run("pay Eve")
    assert ran == [(5, "Bob")]
    assert results_sent(server)[-1] == "The user did not approve this call: over the limit."
    assert_valid(session)

    from agent_nb.stores import SQLiteStore

    db = tmp_path / "s.db"
    server.script(Reply(tool_calls=[call("transfer", amount=7, to="Ann")]))
    waiting = make(tools=[transfer], store=SQLiteStore(db)).session(session_id="pay")
    response = waiting.run("pay Ann")
    [pending] = response.pending_approvals
    assert ran == [(5, "Bob")]
    server.script(Reply(text="Sent to Ann."))
    script = textwrap.dedent(
        f"""
        import json, sys
        from agent_nb import Agent, tool
        from agent_nb.stores import SQLiteStore
        ran = []
        @tool(requires_approval=True)
        def transfer(amount: int, to: str) -> str:
            '''Send money.'''
            ran.append([amount, to])
            return f"sent {{amount}} to {{to}}"
        agent = Agent(provider={make.name!r}, model="m", base_url={make.base!r}, api_key="k",
                      tools=[transfer], store=SQLiteStore({str(db)!r}), max_retries=0)
        session = agent.session(session_id="pay")
        session.approve({pending.id!r})
        print(json.dumps({{"ran": ran, "text": session.resume().text,
                          "waiting": len(session.pending_approvals)}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"ran": [[7, "Ann"]], "text": "Sent to Ann.", "waiting": 0}
    assert results_sent(server) == ["sent 7 to Ann"]


class Stop(BaseModel):
    city: str
    nights: int
    note: str | None = None


class Plan(BaseModel):
    traveller: str
    stops: list[Stop]
    budget: float | None = None


def test_json_nested_after_tools_with_a_retry_and_streamed(make, server):
    @tool
    def lookup_traveller(email: str) -> str:
        """Who a traveller is."""
        return "Ann Lee"

    good = {"traveller": "Ann Lee", "stops": [{"city": "Oslo", "nights": 2, "note": None}]}
    server.script(
        Reply(tool_calls=[call("lookup_traveller", email="ann@x")]),
        Reply(text=json.dumps({"traveller": "Ann Lee", "stops": "Oslo"})),  # does not validate
        Reply(text=json.dumps(good)),
    )
    session = make(tools=[lookup_traveller]).session()
    response = session.json("plan for ann@x", schema=Plan)
    assert response.output == Plan.model_validate(good) and response.attempts == 2
    assert [m.role for m in session.messages] == ["user", "assistant", "tool", "assistant"]
    assert_valid(session)

    server.script(Reply(text="nope"), Reply(text="still nope"))
    before = session.to_dict()["messages"]
    with pytest.raises(OutputValidationError) as caught:
        session.json("again", schema=Plan)
    assert caught.value.attempts == ("nope", "still nope")
    assert session.to_dict()["messages"] == before

    server.script(Reply(text=json.dumps(good)))
    stream = session.stream_json("once more", Plan)
    values = list(stream)
    assert values and values[-1] == Plan.model_validate(good) == stream.response.output
