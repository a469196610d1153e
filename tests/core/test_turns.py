"""The rules users rely on: atomic turns, interrupts keep what was seen, one turn at a time."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
from fake_openai import Reply
from pydantic import BaseModel

from agent_nb import Agent, Message, tool
from agent_nb.errors import (
    APIConnectionError,
    APITimeoutError,
    OutputValidationError,
    ServerError,
    SessionBusyError,
    StreamError,
    ToolError,
)
from agent_nb.events import TextDelta
from agent_nb.messages import TextPart, ToolCallPart
from agent_nb.providers.base import Provider
from agent_nb.providers.testing import TestProvider


def assert_paired(messages: list[Message]) -> None:
    """Every tool call has exactly one result, in the message that follows it."""
    for index, message in enumerate(messages):
        calls = {c.id for c in message.tool_calls}
        if calls:
            results = [r.tool_call_id for r in messages[index + 1].tool_results]
            assert sorted(results) == sorted(calls)


def slow_agent(delay: float = 0.05, **kwargs) -> Agent:
    return Agent(provider=TestProvider(delay=delay), model="test", **kwargs)


def interrupt_main_thread_soon(after: float = 0.0) -> None:
    """Deliver SIGINT to the main thread, as the kernel's stop button does."""
    main = threading.main_thread().ident

    def fire() -> None:
        time.sleep(after)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()


# -- atomic turns ------------------------------------------------------------------------


@pytest.fixture
def openai_agent(openai_env):
    return Agent(provider="openai", model="gpt-4o", max_retries=0)


def test_http_error_leaves_history_unchanged(openai_agent, server):
    session = openai_agent.session()
    session.run("first")
    before = session.to_dict()
    server.script(Reply(status=500, error={"error": {"message": "The server had an error"}}))
    with pytest.raises(ServerError, match="The server had an error") as caught:
        session.run("second")
    assert caught.value.status == 500 and caught.value.request_id.startswith("req_fake")
    assert session.to_dict()["messages"] == before["messages"]


@pytest.mark.parametrize("mode", ["stream", "run"])
def test_dropped_connection_mid_stream_leaves_history_unchanged(openai_agent, server, mode):
    session = openai_agent.session()
    session.run("first")
    before = session.messages
    server.script(Reply(text="one two three four five six seven", drop_after=4))
    with pytest.raises(APIConnectionError, match="dropped"):
        if mode == "stream":
            for _ in session.stream("second"):
                pass
        else:
            asyncio.run(_drain(session.stream_async("second")))
    assert session.messages == before


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def test_malformed_stream_is_a_typed_error_naming_the_provider(openai_agent, server):
    session = openai_agent.session()
    server.script(Reply(raw='data: {"choices": [{"delta": {"content": "Hi"\n\n'))
    with pytest.raises(StreamError, match="openai: a stream chunk is not valid JSON"):
        list(session.stream("hello"))
    assert session.messages == []


def test_stream_cut_short_without_terminator_is_an_error(openai_agent, server):
    chunk = {"choices": [{"index": 0, "delta": {"content": "Half an ans"}, "finish_reason": None}]}
    server.script(Reply(raw=f"data: {json.dumps(chunk)}\n\n"))
    session = openai_agent.session()
    with pytest.raises(StreamError, match=r"ended before \[DONE\]"):
        list(session.stream("hello"))
    assert session.messages == []


@pytest.mark.parametrize("provider", ["test", "openai"])
def test_tool_that_raises_leaves_history_unchanged(provider, request):
    if provider == "openai":
        request.getfixturevalue("openai_env")

    @tool(on_error="raise")
    def get_weather(city: str) -> str:
        """Weather for a city."""
        raise RuntimeError("weather service down")

    agent = Agent(provider=provider, model="gpt-4o", tools=[get_weather])
    session = agent.session()
    session.run("hello")
    before = session.messages
    with pytest.raises(ToolError, match="get_weather.*weather service down") as caught:
        session.run("What is the weather in Paris?")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert session.messages == before


def test_invalid_structured_output_leaves_history_unchanged():
    class Point(BaseModel):
        x: int
        y: int

    agent = Agent(provider=TestProvider(['{"x": 1, "y": "north"}', "not json"]), model="t")
    session = agent.session()
    with pytest.raises(OutputValidationError, match="y: Input should be a valid integer"):
        session.json("Where?", schema=Point, output_retries=0)
    with pytest.raises(OutputValidationError, match="not valid JSON"):
        session.json("Where?", schema=Point, output_retries=0)
    assert session.messages == []


def test_bad_tool_arguments_go_back_to_the_model():
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    bad = Message(
        role="assistant", parts=(ToolCallPart(id="c1", name="add", arguments={"a": "x"}),)
    )
    unknown = Message(role="assistant", parts=(ToolCallPart(id="c2", name="nope", arguments={}),))
    agent = Agent(provider=TestProvider([bad, unknown, "Sorry."]), model="t", tools=[add])
    response = agent.session().run("add things")
    results = [m.tool_results[0] for m in response.messages if m.role == "tool"]
    assert results[0].is_error and "a: Input should be a valid integer" in results[0].content
    assert "b: Field required" in results[0].content
    assert results[1].is_error and "no tool named 'nope'" in results[1].content
    assert response.text == "Sorry."
    assert_paired(list(response.messages))


def test_endless_tool_calls_stop_with_a_clear_error():
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    call = Message(role="assistant", parts=(ToolCallPart(id="c", name="ping"),))
    agent = Agent(provider=TestProvider([call] * 5), model="t", tools=[ping], max_tool_rounds=3)
    session = agent.session()
    with pytest.raises(ToolError, match="3 rounds"):
        session.run("go")
    assert session.messages == []


# -- interrupts --------------------------------------------------------------------------


def test_keyboard_interrupt_during_stream_keeps_what_was_seen():
    session = slow_agent(delay=0.2).session()
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for event in session.stream("one two three four five six seven eight"):
            if event.type == "text_delta":
                seen.append(event.text)
                if len(seen) == 3:
                    interrupt_main_thread_soon(0.05)
    user, partial = session.messages
    assert user.text == "one two three four five six seven eight"
    assert partial.role == "assistant" and partial.metadata["interrupted"] is True
    assert partial.text == "".join(seen)


def test_keyboard_interrupt_during_run_before_any_text_keeps_nothing(openai_agent, server):
    server.script(Reply(text="slow answer", stall_after=0, stall=2.0))
    session = openai_agent.session()
    interrupt_main_thread_soon(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        session.run("hello")
    assert time.monotonic() - started < 1.5  # the request was cancelled, not waited for
    assert session.messages == []
    assert session.run("again").text  # the session is usable: not left busy


def test_closing_a_sync_stream_early_keeps_the_partial_answer():
    session = slow_agent(delay=0.02).session()
    stream = session.stream("alpha beta gamma delta epsilon zeta")
    texts = []
    for event in stream:
        texts.append(event.text)
        if len(texts) == 3:
            break
    stream.close()
    assert stream.response is None
    assert session.messages[-1].text == "".join(texts)
    assert session.messages[-1].metadata["interrupted"] is True
    assert session.run("next").text  # lock released


def test_closing_before_any_text_keeps_nothing():
    session = slow_agent(delay=0.2).session()
    stream = session.stream("hello")
    with stream:
        pass  # never iterated: the turn never started
    assert session.messages == []
    stream = session.stream("hello")
    thread = threading.Timer(0.05, stream.close)
    thread.start()
    assert list(stream) == []
    thread.join()
    assert session.messages == []


def test_cancelling_an_async_task_after_text_keeps_the_partial_answer():
    session = slow_agent(delay=0.05).session()
    seen = []

    async def consume():
        async for event in session.stream_async("one two three four five six"):
            if event.type == "text_delta":
                seen.append(event.text)

    async def main():
        task = asyncio.create_task(consume())
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert session.messages[-1].metadata["interrupted"] is True
    assert session.messages[-1].text == "".join(seen)


def test_cancelling_before_any_text_keeps_nothing():
    session = slow_agent(delay=0.3).session()

    async def main():
        task = asyncio.create_task(session.run_async("hello"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert session.messages == []


class OneReadThenSilence(Provider):
    """Three text deltas arrive in one network read; then the server goes quiet."""

    name = "one-read"

    async def complete(self, request):
        yield [TextDelta("one "), TextDelta("two "), TextDelta("three")]
        await asyncio.sleep(30)
        raise AssertionError("the turn should have been stopped")  # pragma: no cover


def test_closing_a_sync_stream_keeps_only_the_events_taken_from_a_read():
    session = Agent(provider=OneReadThenSilence(), model="m").session()
    stream = session.stream("count")
    assert next(stream).text == "one "
    stream.close()
    assert session.messages[-1].text == "one "
    assert session.messages[-1].metadata["interrupted"] is True


def test_closing_an_async_stream_keeps_only_the_events_taken_from_a_read():
    session = Agent(provider=OneReadThenSilence(), model="m").session()

    async def main():
        stream = session.stream_async("count")
        texts = [(await anext(stream)).text, (await anext(stream)).text]
        await stream.aclose()
        return texts

    assert asyncio.run(main()) == ["one ", "two "]
    assert session.messages[-1].text == "one two "


def test_a_provider_that_yields_single_events_gets_a_clear_error():
    class OldStyle(Provider):
        async def complete(self, request):
            yield TextDelta("hi")

    session = Agent(provider=OldStyle(), model="m").session()
    with pytest.raises(TypeError, match=r"must yield lists of events"):
        session.run("hello")
    assert session.messages == []


def test_interrupt_while_a_tool_runs_pairs_every_call_with_a_result():
    started = threading.Event()

    @tool(sequential=True)  # runs alone, after the quick one has finished
    async def slow_lookup(query: str) -> str:
        """Look something up, slowly."""
        started.set()
        await asyncio.sleep(5)
        return "never"

    @tool
    def quick_lookup(query: str) -> str:
        """Look something up."""
        return "quick answer"

    first = Message(
        role="assistant",
        parts=(
            TextPart(text="Let me check."),
            ToolCallPart(id="a", name="quick_lookup", arguments={"query": "x"}),
            ToolCallPart(id="b", name="slow_lookup", arguments={"query": "y"}),
        ),
    )
    agent = Agent(provider=TestProvider([first]), model="t", tools=[slow_lookup, quick_lookup])
    session = agent.session()

    async def main():
        task = asyncio.create_task(session.run_async("check"))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    messages = session.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert_paired(messages)
    results = {r.tool_call_id: r for r in messages[2].tool_results}
    assert results["a"].content == "quick answer" and not results["a"].is_error
    assert results["b"].is_error and "interrupted" in results["b"].content
    assert messages[2].metadata["interrupted"] is True


# -- sync in a running loop; one turn at a time ------------------------------------------


def test_sync_api_works_inside_a_running_event_loop(make_agent):
    class Answer(BaseModel):
        value: str

    session = make_agent().session()

    async def main():
        assert asyncio.get_running_loop().is_running()
        session.run("one")
        texts = [e.text for e in session.stream("two") if e.type == "text_delta"]
        output = session.json("three", schema=Answer).output
        return texts, output

    texts, output = asyncio.run(main())
    assert "two" in "".join(texts) and isinstance(output, Answer)
    assert len(session.messages) == 6


def test_a_second_turn_on_a_busy_session_is_refused():
    session = slow_agent(delay=0.05).session()

    async def main():
        first = asyncio.create_task(session.run_async("one two three"))
        await asyncio.sleep(0.02)
        with pytest.raises(SessionBusyError, match="already running a turn"):
            await session.run_async("interleaved")
        with pytest.raises(SessionBusyError):
            session.add_message(Message.user("sneaky"))
        with pytest.raises(SessionBusyError):
            session.clear()
        return await first

    response = asyncio.run(main())
    assert [m.text for m in session.messages] == ["one two three", response.text]


def test_sync_stream_and_run_on_one_session_from_two_threads_is_refused():
    session = slow_agent(delay=0.05).session()
    errors = []
    stream = session.stream("a b c d e f")
    first = next(stream)

    def other():
        try:
            session.run("interleaved")
        except SessionBusyError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    rest = list(stream)
    assert len(errors) == 1
    assert (
        first.text + "".join(e.text for e in rest if e.type == "text_delta") == stream.response.text
    )


def test_different_sessions_run_concurrently():
    agent = slow_agent(delay=0.1)
    sessions = [agent.session() for _ in range(4)]

    async def main():
        return await asyncio.gather(*(s.run_async("one two three") for s in sessions))

    started = time.monotonic()
    responses = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert all(len(s.messages) == 2 for s in sessions)
    assert len({r.text for r in responses}) == 1
    assert elapsed < 4 * 0.4 * 0.75  # overlapped: far less than one after another


def test_read_timeout_on_a_stalled_stream(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    agent = Agent(provider="openai", model="m", base_url=server.url, timeout=0.5, max_retries=0)
    server.script(Reply(text="a b c d", stall_after=2, stall=3.0))
    session = agent.session()
    with pytest.raises(APITimeoutError, match="stalled"):
        list(session.stream("hi"))
    assert session.messages == []


def test_tool_calls_with_one_id_get_unique_ids_and_run_once_each():
    runs = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        runs.append((a, b))
        return a + b

    calls = Message(
        role="assistant",
        parts=(
            ToolCallPart(id="0", name="add", arguments={"a": 1, "b": 2}),
            ToolCallPart(id="0", name="add", arguments={"a": 3, "b": 4}),
            ToolCallPart(id="0_2", name="add", arguments={"a": 5, "b": 6}),
        ),
    )
    agent = Agent(provider=TestProvider([calls, "Done."]), model="t", tools=[add])
    session = agent.session()
    events = list(session.stream("add"))
    assert runs == [(1, 2), (3, 4), (5, 6)]
    ids = [e.id for e in events if e.type == "tool_call"]
    assert len(set(ids)) == 3 and ids[0] == "0"
    results = {e.tool_call_id: e.content for e in events if e.type == "tool_result"}
    assert results == dict(zip(ids, ["3", "7", "11"], strict=True))
    assert_paired(session.messages)
    assert [r.content for r in session.messages[2].tool_results] == ["3", "7", "11"]
