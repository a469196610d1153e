"""Every way out of a stream ends its turn at once, keeps exactly what the reader took, no more.

The ways out: `break`, an exception in the loop body, dropping the last reference, `close()`,
`with`, KeyboardInterrupt at any instant; for the async form `break`, `aclose()` and
cancellation at any instant. Afterwards the session is never busy, history keeps the text the
reader took (marked interrupted), and no tool ran that the reader had not seen called.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import signal
import threading
import time

import pytest

from agent_nb import Agent, Message, tool
from agent_nb.errors import SessionBusyError
from agent_nb.events import Completion, TextDelta, Usage
from agent_nb.messages import TextPart, ToolCallPart
from agent_nb.providers.base import Provider

WORDS = ["one ", "two ", "three ", "four ", "five ", "six "]


class Scripted(Provider):
    """Answers each request with the next script: batches of text deltas, then tool calls.

    `pause` is awaited between batches (0: only a loop turn). Records every request.
    """

    name = "scripted"

    def __init__(self, rounds, pause: float = 0.0) -> None:
        self.rounds = list(rounds)
        self.pause = pause
        self.requests = 0
        self.finished = threading.Event()  # the provider has sent its last event

    async def complete(self, request):
        batches, calls = self.rounds[self.requests % len(self.rounds)]
        self.requests += 1
        for batch in batches:
            await asyncio.sleep(self.pause)
            yield [TextDelta(text) for text in batch]
        parts = [TextPart(text="".join("".join(b) for b in batches))] if batches else []
        parts += [ToolCallPart(id=f"c{i}", name=name, arguments={}) for i, name in calls]
        self.finished.set()
        yield [Completion(Message(role="assistant", parts=tuple(parts)), Usage(3, 4), "stop")]


def two_rounds_with_a_tool(pause: float = 0.0):
    """Text, a call to `lookup`; then text again. The list of tool runs is returned too."""
    runs: list[str] = []

    @tool
    def lookup() -> str:
        """Look it up."""
        runs.append("lookup")
        return "found"

    provider = Scripted(
        [([["Let ", "me "], ["check."]], [(1, "lookup")]), ([["It ", "is "], ["found."]], [])],
        pause,
    )
    return Agent(provider=provider, model="m", tools=[lookup]), provider, runs


def text_agent(pause: float = 0.0) -> tuple[Agent, Scripted]:
    provider = Scripted([([WORDS[:2], WORDS[2:4], WORDS[4:]], [])], pause)
    return Agent(provider=provider, model="m"), provider


def assert_kept(session, taken: list[str]) -> None:
    """History holds the prompt and exactly the text taken, marked interrupted."""
    messages = session.messages
    assert messages[-1].role == "assistant" and messages[-1].text == "".join(taken)
    assert messages[-1].metadata["interrupted"] is True


def assert_usable(session) -> None:
    count = len(session.messages)
    assert session.run("again").text
    assert len(session.messages) == count + 2


# -- sync ---------------------------------------------------------------------------------


def test_break_out_of_a_stream_ends_the_turn():
    agent, _ = text_agent()
    session = agent.session()
    taken = []
    for event in session.stream("count"):
        taken.append(event.text)
        break
    assert_kept(session, taken)
    assert_usable(session)


def test_an_exception_in_the_loop_body_ends_the_turn():
    agent, _ = text_agent()
    session = agent.session()
    taken = []
    with pytest.raises(ZeroDivisionError):
        for event in session.stream("count"):
            taken.append(event.text)
            if len(taken) == 3:
                1 / 0  # noqa: B018
    assert_kept(session, taken)
    assert_usable(session)


def test_dropping_the_last_reference_ends_the_turn():
    agent, _ = text_agent()
    session = agent.session()
    stream = session.stream("count")
    taken = [next(stream).text]
    del stream
    assert_kept(session, taken)
    assert_usable(session)


def test_a_stream_kept_open_says_so_when_the_session_is_busy():
    agent, _ = text_agent()
    session = agent.session()
    stream = session.stream("count")
    next(stream)
    with pytest.raises(SessionBusyError, match=r"close\(\)"):
        session.run("again")
    stream.close()
    assert_usable(session)


def test_closing_after_the_provider_finished_keeps_only_what_was_taken():
    agent, provider = text_agent()
    session = agent.session()
    with session.stream("count") as stream:
        taken = [next(stream).text]
        assert provider.finished.wait(5)
        time.sleep(0.05)  # the background task has read everything there is
    assert_kept(session, taken)
    assert session.messages[-1].text == "one "


def test_a_tool_the_reader_never_saw_called_does_not_run():
    agent, provider, runs = two_rounds_with_a_tool()
    session = agent.session()
    with session.stream("go") as stream:
        taken = [next(stream).text]
        assert provider.finished.wait(5)
        time.sleep(0.05)
    assert runs == []
    assert_kept(session, taken)
    assert len(session.messages) == 2  # the prompt and the partial text: no tool call


def test_the_whole_answer_read_but_not_its_end_is_kept_whole():
    agent, _ = text_agent()
    session = agent.session()
    stream = session.stream("count")
    taken = [next(stream).text for _ in range(6)]
    stream.close()
    assert session.messages[-1].text == "".join(taken) == "".join(WORDS)


# -- async --------------------------------------------------------------------------------


def test_async_break_ends_the_turn_without_waiting_for_gc():
    agent, _ = text_agent()
    session = agent.session()

    async def main():
        taken = []
        async for event in session.stream_async("count"):
            taken.append(event.text)
            break
        assert_kept(session, taken)
        response = await session.run_async("again")  # immediately: not busy
        return response

    gc.disable()
    try:
        assert asyncio.run(main()).text
    finally:
        gc.enable()


def test_async_exception_in_the_loop_body_ends_the_turn():
    agent, _ = text_agent()
    session = agent.session()

    async def main():
        taken = []
        with pytest.raises(ZeroDivisionError):
            async for event in session.stream_async("count"):
                taken.append(event.text)
                if len(taken) == 2:
                    1 / 0  # noqa: B018
        assert_kept(session, taken)
        return await session.run_async("again")

    gc.disable()
    try:
        assert asyncio.run(main()).text
    finally:
        gc.enable()


def test_async_tool_not_run_until_the_reader_takes_its_call():
    agent, _, runs = two_rounds_with_a_tool()
    session = agent.session()

    async def main():
        stream = session.stream_async("go")
        taken = [(await anext(stream)).text for _ in range(3)]
        await asyncio.sleep(0.05)
        assert runs == []
        assert (await anext(stream)).type == "tool_call"
        await asyncio.sleep(0.05)
        assert runs == []  # seen, but the reader has not asked for more yet
        await stream.aclose()
        return taken

    taken = asyncio.run(main())
    assert runs == []
    _, said, result = session.messages
    assert said.text == "".join(taken) and said.tool_calls[0].name == "lookup"
    assert result.tool_results[0].is_error and result.metadata["interrupted"] is True


# -- seeded fuzz: interrupts and cancellations at random instants --------------------------


def _received(events: list, last) -> list:
    """The events the reader got: those recorded, plus the last one if the record missed it."""
    if last is not None and (not events or events[-1] is not last):
        events.append(last)
    return events


def _check_turn(session, before: int, events: list, runs: list[str]) -> None:
    """The invariants of a turn stopped anywhere."""
    added = session.messages[before:]
    shown = "".join(e.text for e in events if e.type == "text_delta")
    kept = "".join(m.text for m in added if m.role == "assistant")
    assert kept == shown, (kept, shown, [e.type for e in events])
    called = sum(e.type == "tool_call" for e in events)
    assert len(runs) <= called  # no tool ran that the reader had not seen called
    for index, message in enumerate(added):  # every call paired with one result
        if message.tool_calls:
            results = added[index + 1].tool_results
            assert sorted(r.tool_call_id for r in results) == sorted(
                c.id for c in message.tool_calls
            )
    done = any(e.type == "done" for e in events)
    if added and not done and kept != "Let me check.It is found.":
        assert added[-1].metadata.get("interrupted") is True
    session.clear()  # never busy


@pytest.fixture
def no_stray_finalizers():
    """No garbage collection while SIGINTs fly: a signal landing in the `__del__` of another
    test's leftovers would be swallowed there (and reported as unraisable), not ours to test."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_stray_finalizers")
@pytest.mark.slow
def test_fuzz_keyboard_interrupts_at_random_instants():
    rng = random.Random(20261201)
    main = threading.main_thread().ident
    deadline = time.monotonic() + 40.0  # a bound for a loaded machine; ~3 s when idle
    trials = 0
    while time.monotonic() < deadline and trials < 1500:
        trials += 1
        agent, _, runs = two_rounds_with_a_tool()
        session = agent.session()
        delay = rng.random() * 0.0006  # a whole turn takes about 0.5 ms here
        fired = threading.Event()

        def fire(delay=delay, fired=fired):
            time.sleep(delay)
            signal.pthread_kill(main, signal.SIGINT)
            fired.set()

        events: list = []
        event = None
        try:
            threading.Thread(target=fire, daemon=True).start()
            for event in session.stream("go"):
                events.append(event)
            while True:  # the interrupt lands after the end
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        fired.wait()
        _check_turn(session, 0, _received(events, event), runs)
    assert trials >= 200


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_stray_finalizers")
@pytest.mark.slow
def test_fuzz_keyboard_interrupts_during_run():
    """`run` interrupted anywhere: never busy; history unchanged, whole, or marked partial."""
    rng = random.Random(2026)
    main = threading.main_thread().ident
    deadline = time.monotonic() + 40.0
    trials = 0
    while time.monotonic() < deadline and trials < 600:
        trials += 1
        agent, _, runs = two_rounds_with_a_tool()
        session = agent.session()
        fired = threading.Event()
        delay = rng.random() * 0.002

        def fire(delay=delay, fired=fired):
            time.sleep(delay)
            signal.pthread_kill(main, signal.SIGINT)
            fired.set()

        try:
            threading.Thread(target=fire, daemon=True).start()
            session.run("go")
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        fired.wait()
        messages = session.messages
        assert len(runs) <= 1
        if messages and messages[-1].text != "It is found.":
            assert messages[-1].metadata["interrupted"] is True
        session.clear()  # never busy
    assert trials >= 200


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_fuzz_cancellations_at_random_instants():
    rng = random.Random(1201)

    async def trial(steps: int):
        agent, _, runs = two_rounds_with_a_tool()
        session = agent.session()
        events: list = []

        async def read():
            async for event in session.stream_async("go"):
                events.append(event)

        task = asyncio.create_task(read())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _check_turn(session, 0, events, runs)

    async def main():
        deadline = time.monotonic() + 40.0
        trials = 0
        while time.monotonic() < deadline and trials < 1500:
            trials += 1
            await trial(rng.randrange(0, 40))
        return trials

    assert asyncio.run(main()) >= 200


@pytest.mark.timeout(60)
def test_fuzz_breaking_out_after_a_random_number_of_events():
    rng = random.Random(7)
    for _ in range(300):
        agent, _, runs = two_rounds_with_a_tool()
        session = agent.session()
        stop = rng.randrange(0, 12)
        events: list = []
        for event in session.stream("go"):
            events.append(event)
            if len(events) > stop:
                break
        _check_turn(session, 0, events, runs)


def test_text_enters_history_as_utf8_can_hold_it_and_every_store_keeps_it(tmp_path):
    """A pair split across deltas is joined, a lone surrogate made U+FFFD: in the answer, a
    partial answer, a tool's arguments and result, and the prompt."""
    from agent_nb.stores import NotebookStore, SQLiteStore

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text + " \udc00"

    provider = Scripted(
        [
            ([["A \ud83d", "\ude00 \udfff"]], [(1, "echo")]),
            ([["ok"]], []),
        ]
    )
    for store in (SQLiteStore(tmp_path / "s.db"), NotebookStore(tmp_path / "s.ipynb")):
        session = Agent(provider=provider, model="m", tools=[echo], store=store).session()
        list(session.stream("hi \ud800"))
        texts = [m.text for m in session.messages] + [
            r.content for m in session.messages for r in m.tool_results
        ]
        for text in texts:
            text.encode("utf-8")  # raises on a surrogate
        assert session.messages[1].text == "A \U0001f600 \ufffd"
        assert session.messages[0].text == "hi \ufffd"
        assert store.load(session.session_id)["messages"][1]["parts"][0]["text"] == (
            "A \U0001f600 \ufffd"
        )
        session.to_notebook()  # exports too
