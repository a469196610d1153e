"""The context policies against real llama.cpp servers with a 512-token window: the gauge reads
the window llama-server loaded, "error" refuses before sending, "trim" and "summarize" keep a
30-turn conversation (with tool rounds) going with every request one the server accepts, and
a server that shifts its context while answering is caught.

The tests' tiny model (tests/llama_model.py) has a byte-level vocabulary: about a token a
character, four times what agent_nb estimates before the server's first report teaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest

from agent_nb import Agent, Summarize, tool
from agent_nb.errors import ContextWindowError

FORCE_WEATHER = {"type": "function", "function": {"name": "weather"}}


@tool
def weather(city: Literal["Paris", "Kyoto"]) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def agent(server: Any, **settings: Any) -> Agent:
    options = {"temperature": 0.0, "max_tokens": 8, **settings}
    return Agent(provider="openai", model="tiny", base_url=server.url, api_key="none", **options)


def prompt(n: int) -> str:
    return f"turn {n}: " + "tell me more " * 3


@pytest.fixture
def proxy(llama_cpp_server: Any) -> Iterator[Any]:
    from llama_proxy import RecordingProxy

    with RecordingProxy(llama_cpp_server.url) as recording:
        yield recording


@pytest.fixture(scope="module")
def shifting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama-server with --context-shift: an answer that reaches the window goes on,
    dropping the start of the conversation."""
    from servers import LlamaCppServer, llama_serving

    yield from llama_serving(
        tmp_path_factory, LlamaCppServer, n_ctx=512, options=("--context-shift",)
    )


def test_the_gauge_reads_the_window_llama_server_loaded(llama_cpp_server):
    session = agent(llama_cpp_server).session()
    assert session.context().window == 512  # before any turn: asked of the server
    session.run("hello")
    report = session.context()
    assert (report.window, report.source) == (512, "server")
    assert report.gauge().endswith("of 512") and report.used > 0


def test_error_refuses_before_sending(proxy):
    session = agent(proxy).session()
    with pytest.raises(ContextWindowError) as caught:
        for n in range(60):
            sent = len(proxy.bodies)
            session.run(prompt(n))
    error = caught.value
    assert error.status is None and error.window == 512  # ours, not the server's 400
    assert len(proxy.bodies) == sent  # the request was never sent
    assert len(session.messages) == 2 * n
    assert all(e.status == 200 for e in proxy.exchanges if e.path.endswith("completions"))


@pytest.mark.parametrize("policy", ["trim", "summarize"])
def test_thirty_turns_go_on_with_every_request_accepted(proxy, all_providers_env, policy):
    """Summaries by a cheaper agent (the loopback server: the tiny model never ends a free
    text in JSON), sent to llama-server in the first message it gets."""
    if policy == "summarize":
        cheap = Agent(provider="openai", model="gpt-4o-mini")
        policy = Summarize(agent=cheap)
    session = agent(proxy, context=policy).session(system="Be brief.")
    for n in range(30):
        session.run(prompt(n))  # a request the server refused would raise here
    assert len(session.messages) == 60  # nothing left the history
    report = session.context()
    assert report.left_out > 0 and report.messages[0].role == "user"
    chats = [e for e in proxy.exchanges if e.path.endswith("chat/completions")]
    assert all(e.status == 200 for e in chats)
    if isinstance(policy, Summarize):
        assert report.summary and any(s.why == "summary" for s in session.ledger)
        assert report.summary in proxy.bodies[-1]["messages"][1]["content"]


@pytest.mark.parametrize("policy", ["trim", "summarize"])
def test_thirty_turns_with_tool_rounds_keep_calls_with_results(
    llama_server, all_providers_env, policy
):
    """On llama-cpp-python's server (a 2,048-token window, which it does not say: given; its
    grammar forces the tool calls, and its tool prompt alone takes some 500 tokens), every
    third turn calls a tool: what is left out takes whole tool rounds, and each request the
    server gets is one it accepts."""
    from llama_proxy import RecordingProxy

    if policy == "summarize":
        policy = Summarize(agent=Agent(provider="openai", model="gpt-4o-mini"))
    with RecordingProxy(llama_server.url) as recording:
        window = llama_server.n_ctx
        base = agent(recording, context=policy, context_window=window, tools=[weather])
        session = base.session()
        for n in range(30):
            forced = {"tool_choice": FORCE_WEATHER} if n % 3 == 0 else {}
            session.run(prompt(n) * 2, **forced)
        chats = [e for e in recording.exchanges if e.path.endswith("chat/completions")]
    assert all(e.status == 200 for e in chats)
    assert sum(bool(m.tool_calls) for m in session.messages) == 10
    assert session.context().left_out > 0
    for body in recording.bodies:
        sent = body["messages"]
        calls = {c["id"] for m in sent for c in m.get("tool_calls") or ()}
        results = {m["tool_call_id"] for m in sent if m["role"] == "tool"}
        assert calls == results
        first = next(m for m in sent if m["role"] != "system")
        assert first["role"] == "user"


def test_an_answer_that_shifts_the_context_is_caught(shifting_server):
    """With --context-shift, llama-server answers past its window by dropping the start of
    the conversation: the prompt and the answer add up to more than the window."""
    session = agent(shifting_server, max_tokens=300).session()
    with pytest.raises(ContextWindowError, match="dropped the start of the conversation"):
        session.run("tell me more " * 20)  # ~260 tokens in, 300 asked for: 560 > 512
    assert session.messages == [] and len(session.ledger) == 1
    session.context_policy = "trim"
    response = session.run("tell me more " * 20)
    assert "dropped the start" in response.messages[-1].metadata["context_truncated"]
