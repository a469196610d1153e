"""The context window: counting a request, the policies (error, trim, summarize, a function),
and a server that cuts a request in silence. (The real llama.cpp server's window:
tests/servers/; the gauges: tests/notebook/ and tests/browser/.)"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_nb import Agent, ContextReport, Message, Session, Summarize, Trim, tool
from agent_nb._counting import image_tokens
from agent_nb.errors import ConfigurationError, ContextWindowError
from agent_nb.events import Completion, Usage
from agent_nb.messages import ImagePart, ToolCallPart, ToolResultPart
from agent_nb.providers.base import ProviderBatch, Request
from agent_nb.providers.testing import TestProvider


def tokens_of(request: Request, density: float = 1 / 3) -> int:
    """The server's own count: `density` tokens a character of each piece, 3 per message."""
    pieces = [request.system or "", *(json.dumps(t) for t in request.tools)]
    count = 3 * len(request.messages)
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                pieces.append(part.name + json.dumps(part.arguments_json()))
            elif isinstance(part, ToolResultPart):
                pieces.append(part.content)
            elif isinstance(part, ImagePart):
                count += 100
            else:
                pieces.append(getattr(part, "text", ""))
    return count + sum(math.ceil(len(p) * density) for p in pieces)


class Windowed(TestProvider):
    """The offline test provider with a window it enforces: it refuses a request that does
    not fit (as llama.cpp does), or, with `cuts`, keeps the request's end and answers (as
    Ollama does), reporting what it kept."""

    __test__ = False
    name = "windowed"

    def __init__(
        self,
        window: int,
        *,
        cuts: bool = False,
        density: float = 1 / 3,
        cached: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.window, self.cuts, self.density = window, cuts, density
        self.cached = cached  # report only what the last request did not start with
        self.counted: list[int] = []

    async def context_window(self, model: str) -> int | None:
        return self.window

    def _answer(self, request: Request) -> Message:
        answer = super()._answer(request)  # tool calls, JSON; but a short text for an echo
        if answer.tool_calls or request.output is not None or self.scripted:
            return answer
        return Message.assistant(words(12, len(request.messages)))

    async def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        self.scripted = bool(self._replies)
        problem = _unsendable(request)
        assert problem is None, problem  # every request is one a real server accepts
        count = tokens_of(request, self.density)
        previous = self.requests[-1] if self.requests else None
        self.counted.append(count)
        if count > self.window and not self.cuts:
            from agent_nb.errors import BadRequestError

            self.requests.append(request)
            raise BadRequestError("the request exceeds the available context size", status=400)
        async for batch in super().complete(request):
            if isinstance(batch[-1], Completion):
                done = batch[-1]
                new = count
                if self.cached and previous is not None:
                    held = len(previous.messages)
                    ids = [m.id for m in previous.messages]
                    if [m.id for m in request.messages[:held]] == ids:  # a cache hit
                        new -= tokens_of(
                            dataclasses.replace(request, messages=request.messages[:held]),
                            self.density,
                        )
                usage = Usage(
                    input_tokens=min(new, self.window),
                    output_tokens=math.ceil(len(done.message.text) / 3) + 1,
                )
                batch = [*batch[:-1], Completion(done.message, usage, done.finish_reason)]
            yield batch


def _unsendable(request: Request) -> str | None:
    """What a server would refuse in `request`'s messages (None: nothing)."""
    messages = request.messages
    if messages and messages[0].role != "user":
        return f"the request starts with a {messages[0].role} message"
    calls = {c.id for m in messages for c in m.tool_calls}
    results = {r.tool_call_id for m in messages for r in m.tool_results}
    if calls != results:
        return f"calls and results unpaired: {sorted(calls ^ results)}"
    return None


@tool
def lookup(city: str) -> str:
    """Look up facts about a city."""
    return f"{city} has many long streets and several very old bridges " * 3


def words(n: int, seed: int = 0) -> str:
    return " ".join(f"word{(i * 7 + seed) % 97}" for i in range(n))


def test_error_refuses_before_sending_and_changes_nothing():
    provider = Windowed(1000)
    session = Agent(provider=provider).session(system="Be brief.")
    with pytest.raises(ContextWindowError) as caught:
        for n in range(30):
            before, sent = session.messages, len(provider.requests)
            session.run(words(60, n))
    assert n >= 2
    error = caught.value
    assert error.window == 1000 and error.needed > 1000 and error.status is None
    assert "context='trim'" in str(error) and "nothing was sent" in str(error)
    assert f"{error.window:,}" in str(error) and f"{error.needed:,}" in str(error)
    assert session.messages == before and len(provider.requests) == sent


def test_trim_leaves_out_the_oldest_turns_and_keeps_the_history_whole():
    provider = Windowed(500)
    session = Agent(provider=provider, context="trim", max_tokens=50).session()
    for n in range(12):
        session.run(words(40, n))
    assert len(session.messages) == 24  # nothing lost
    report = session.context()
    assert report.left_out > 0 and report.policy == "trim"
    assert report.used + report.reserved <= 500
    assert list(report.messages) == list(provider.requests[-1].messages)
    assert report.messages[0].role == "user"
    assert all(count <= 500 for count in provider.counted)


def test_trim_moves_the_start_rarely_so_the_cached_prefix_survives():
    provider = Windowed(1000)
    session = Agent(provider=provider, context=Trim(target=0.5), max_tokens=50).session()
    for n in range(30):
        session.run(words(30, n))
    firsts = [r.messages[0].id for r in provider.requests]
    moves = sum(a != b for a, b in itertools.pairwise(firsts))
    assert 1 <= moves <= 6, moves  # each move frees about half the window: several turns


def test_a_turn_that_alone_does_not_fit_is_refused_under_trim_too():
    provider = Windowed(300)
    session = Agent(provider=provider, context="trim", max_tokens=50).session()
    session.run(words(20))
    with pytest.raises(ContextWindowError, match="this turn alone does not fit"):
        session.run(words(400))
    assert len(session.messages) == 2


def test_trim_never_splits_a_tool_call_from_its_result():
    provider = Windowed(700)
    agent = Agent(provider=provider, tools=[lookup], context="trim", max_tokens=60)
    session = agent.session()
    for city in ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Doha", "Baku", "Riga"]:
        session.run(f"lookup {city} please, and tell me about it")
    assert any(m.tool_calls for m in session.messages)
    assert session.context().left_out > 0


def test_the_decision_travels_with_the_history():
    provider = Windowed(500)
    agent = Agent(provider=provider, context="trim", max_tokens=50)
    session = agent.session()
    for n in range(10):
        session.run(words(40, n))
    first = provider.requests[-1].messages[0].id
    again = Session.from_dict(json.loads(json.dumps(session.to_dict())), agent)
    again.run("one more")
    assert provider.requests[-1].messages[0].id == first
    twin = session.fork()
    twin.run("and in the fork")
    assert provider.requests[-1].messages[0].id == first


def test_undoing_the_turn_that_trimmed_undoes_the_trim():
    provider = Windowed(500)
    session = Agent(provider=provider, context="trim", max_tokens=50).session()
    for n in range(20):
        session.run(words(40, n))
        if session.context().left_out:
            break
    assert session.context().left_out
    session.undo()
    assert session.context().left_out == 0
    session.context_policy = "error"
    session.run("fits again")
    assert provider.requests[-1].messages[0].id == session.messages[0].id


def test_a_larger_window_sends_everything_again():
    provider = Windowed(500)
    session = Agent(provider=provider, context="trim", max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))
    assert session.context().left_out
    provider.window = 100_000
    session.run("now the window is large")
    assert provider.requests[-1].messages[0].id == session.messages[0].id


def test_summarize_sends_a_summary_in_place_of_the_turns_it_leaves_out():
    provider = Windowed(600)
    session = Agent(provider=provider, context="summarize", max_tokens=50).session(system="Hi.")
    for n in range(10):
        session.run(words(40, n))
    report = session.context()
    assert report.left_out > 0 and report.summary
    last = provider.requests[-1]
    assert last.system == "Hi."  # the summary is the user's words, never the system's
    assert report.summary in last.messages[0].text and report.parts["summary"] > 0
    assert last.messages[0].id == report.messages[0].id
    assert not any("earlier conversation" in m.text for m in session.messages)  # as it was
    summaries = [s for s in session.ledger if s.why == "summary"]
    assert summaries  # priced in the session's ledger
    assert all(len(r.messages[0].parts) <= 2 for r in provider.requests)  # once, not again
    marked = [m for m in session.messages if "summary" in m.metadata.get("context", {})]
    assert marked and marked[-1].metadata["context"]["summary_of"]["messages"] == report.left_out
    assert len(session.messages) == 20


def test_summarize_with_a_cheaper_agent():
    writer = TestProvider()
    provider = Windowed(600)
    policy = Summarize(agent=Agent(provider=writer))
    session = Agent(provider=provider, context=policy, max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))
    assert writer.requests and session.context().summary
    assert all(r.output is not None for r in writer.requests)  # written with json()


def test_a_context_function_chooses_what_is_sent_and_is_checked():
    provider = Windowed(500)
    seen = []

    def last_two_turns(messages: list[Message], budget: int) -> list[Message]:
        seen.append(budget)
        return messages[-3:]

    session = Agent(provider=provider, context=last_two_turns, max_tokens=50).session()
    for n in range(8):
        session.run(words(40, n))
    assert seen and all(b < 500 for b in seen)
    assert len(provider.requests[-1].messages) == 3

    def drops_the_prompt(messages, budget):
        return messages[:1]

    with pytest.raises(ConfigurationError, match="keep this turn's messages"):
        session.run(words(40), context=drops_the_prompt)


def test_context_reports_the_parts_and_a_gauge():
    provider = Windowed(100_000)
    session = Agent(provider=provider, tools=[lookup], max_tokens=1000).session(system="Hi.")
    before = session.context()
    assert isinstance(before, ContextReport) and before.window == 100_000
    assert before.source == "server" and before.messages == ()
    session.run("hello there")
    report = session.context()
    assert report.parts["tools"] > 0 and report.parts["system"] > 0
    assert report.reserved == 1000 and report.gauge().endswith("of 100k")
    assert not report.warning
    assert "kept for the answer" in str(report)


def test_counts_come_from_the_servers_reports():
    provider = Windowed(100_000)
    session = Agent(provider=provider, max_tokens=100).session(system="Be brief, please.")
    for n in range(6):
        session.run(words(25 + n * 5, n))
    assert all("tokens" in m.metadata for m in session.messages)
    assert not any(m.metadata.get("tokens_estimated") for m in session.messages)
    last = session.context()  # what the last request held: its count made before it was sent
    assert abs(last.used - provider.counted[-1]) <= provider.counted[-1] * 0.05
    predicted = session.context(max_tokens=100).used  # the next request, before its prompt
    session.run("x")
    actual = provider.counted[-1] - tokens_of(Request(model="m", messages=[Message.user("x")]))
    assert abs(predicted - actual) <= actual * 0.03, (predicted, actual)


def test_a_server_that_cuts_the_request_in_silence_is_caught():
    provider = Windowed(600, cuts=True, density=1.0)  # a token a character: 4x the estimate
    session = Agent(provider=provider, max_tokens=50).session()
    with pytest.raises(ContextWindowError, match="cut the request in silence") as caught:
        session.run("字" * 700)
    assert caught.value.window == 600
    assert session.messages == [] and len(session.ledger) == 1  # not saved, but paid for
    session.context_policy = "trim"
    session.run("字" * 700)  # under trim: the answer is kept, with a warning
    answer = session.messages[-1]
    assert "cut the request in silence" in answer.metadata["context_truncated"]


def test_a_server_that_counts_only_what_its_cache_missed_is_no_cut():
    """Some Ollama releases reported only the prompt tokens their cache did not hold: a low
    figure far from the window is not taken for a cut, nor for the request's count."""
    provider = Windowed(100_000, cached=True)
    restored = [  # a history with no counts: each message estimated
        m for n in range(15) for m in (Message.user(words(40, n)), Message.assistant(words(30)))
    ]
    agent = Agent(provider=provider, max_tokens=50)
    session = agent.session(system="Be brief.", messages=restored)
    for n in range(6):
        session.run(words(40, n))
    assert provider.counted[-1] > 1000
    predicted = session.context(max_tokens=50).used
    session.run("x")
    assert abs(predicted - provider.counted[-1]) < provider.counted[-1] * 0.35


def test_policies_are_checked():
    with pytest.raises(ConfigurationError, match="context= takes"):
        Agent(provider="test", context="shrink")
    with pytest.raises(ConfigurationError, match="target"):
        Trim(target=1.5)
    with pytest.raises(ConfigurationError, match="context_window="):
        Agent(provider="test", context_window=-5)
    with pytest.raises(ConfigurationError, match="Summarize"):
        Summarize(agent="cheap")


def _png(width: int, height: int) -> ImagePart:
    from PIL import Image

    raw = io.BytesIO()
    Image.new("RGB", (width, height)).save(raw, "PNG")
    return ImagePart.from_bytes(raw.getvalue())


def test_images_count_by_each_providers_rule():
    square = _png(1024, 1024)
    assert image_tokens(square, "openai") == 765  # 4 tiles of 512 after 768 px: OpenAI's doc
    assert image_tokens(_png(2048, 4096), "openai") == 1105
    assert image_tokens(_png(1000, 1000), "anthropic") == 1334  # w x h / 750
    assert image_tokens(_png(4000, 4000), "anthropic") == 1600  # scaled to 1568 px, capped


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(5, 80), st.booleans()), min_size=3, max_size=25),
    st.integers(400, 1500),
)
def test_every_trimmed_request_is_valid_and_fits(turns, window):
    """A seeded fuzz of conversations with tool rounds: every request a trim makes starts at
    a user turn, keeps each call with its result, and fits; nothing leaves the history."""
    provider = Windowed(window)
    session = Agent(provider=provider, tools=[lookup], context="trim", max_tokens=40).session()
    made = 0
    for n, (size, calls) in enumerate(turns):
        prompt = f"lookup Paris {words(size, n)}" if calls else words(size, n)
        try:
            session.run(prompt)
            made += 1
        except ContextWindowError as error:
            assert "this turn alone" in str(error)
    assert all(count <= window for count in provider.counted)  # Windowed checks the rest
    assert sum(m.role == "user" for m in session.messages) == made


def test_a_turn_answered_again_keeps_its_summary():
    provider = Windowed(600)
    session = Agent(provider=provider, context="summarize", max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))
    assert session.context().summary
    summaries = sum(s.why == "summary" for s in session.ledger)
    first = provider.requests[-1].messages[0].id
    session.retry()  # the same turn again: the same decision, no second summary
    assert sum(s.why == "summary" for s in session.ledger) == summaries
    assert provider.requests[-1].messages[0].id == first
    assert provider.requests[-1].messages[0].text == provider.requests[-2].messages[0].text


@pytest.mark.parametrize(
    ("provider", "rule", "reserve"),
    [
        ("openai", "openai", 4096),
        ("openai-responses", "openai", 4096),
        ("anthropic", "anthropic", 4096),
    ],
)
def test_each_provider_counts_tools_images_and_the_reserve(
    all_providers_env, provider, rule, reserve
):
    """Against the loopback server, in each wire format: the tool schemas, the image by the
    provider's rule, the output kept (Anthropic's default max_tokens; elsewhere a quarter of
    the window, up to 4,096), and the thinking budget on top where one is set."""
    agent = Agent(provider=provider, model="gpt-4o", tools=[lookup], context_window=200_000)
    session = agent.session(system="Be brief.")
    image = _png(1024, 1024)
    session.run("what is in this picture?", images=[image])
    report = session.context()
    assert report.parts["tools"] > 10 and report.reserved == reserve
    assert report.parts["images"] == image_tokens(image, rule)
    assert report.parts["messages"] >= report.parts["images"]
    if provider == "anthropic":
        thinking = {"type": "enabled", "budget_tokens": 2000}
        assert session.context(thinking=thinking).reserved == 2000 + 4096
    assert session.context(max_tokens=123).reserved == 123
    small = Agent(provider=provider, model="gpt-4o", context_window=8000).session()
    assert small.context().reserved == (4096 if provider == "anthropic" else 2000)


def test_a_strangers_recorded_decision_cannot_wedge_a_session():
    """A notebook's data says where to start and what summary to send: a summary too large
    to send is written anew, a start that is not a prompt is ignored, and counts past reason
    are estimated instead."""
    history = []
    for n in range(10):
        history += [Message.user(words(40, n)), Message.assistant(words(12))]
    huge = {"policy": "summarize", "from": history[16].id, "summary": "x" * 200_000}
    history[16] = history[16].model_copy(update={"metadata": {"context": huge}})
    history[3] = history[3].model_copy(update={"metadata": {"tokens": 10**9}})
    provider = Windowed(1000)
    session = Agent(provider=provider, context="summarize", max_tokens=50).session(messages=history)
    session.run("and now?")
    assert len(provider.requests[-1].messages[0].text) < 20_000
    assert all(count <= 1000 for count in provider.counted)
    bad_start = {"policy": "trim", "from": history[5].id}  # an answer, not a prompt
    history[16] = history[16].model_copy(update={"metadata": {"context": bad_start}})
    session = Agent(provider=Windowed(100_000), context="trim").session(messages=history)
    session.run("and now?")
    assert session.context().left_out == 0


def test_a_summary_that_cannot_be_written_leaves_the_turns_out_without_one(caplog):
    writer = TestProvider(replies=["not JSON at all"] * 10)
    provider = Windowed(600)
    policy = Summarize(agent=Agent(provider=writer))
    session = Agent(provider=provider, context=policy, max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))  # the turns go on
    report = session.context()
    assert report.left_out > 0 and report.summary is None
    assert "the summary could not be written" in caplog.text
    assert any(s.why == "summary" for s in session.ledger)  # what it spent is counted


class Inflating(Windowed):
    """A server that reports `figure` input tokens for its first request."""

    __test__ = False

    def __init__(self, window: int, figure: int) -> None:
        super().__init__(window)
        self.figure = figure

    async def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        async for batch in super().complete(request):
            if isinstance(batch[-1], Completion) and len(self.counted) == 1:
                done = batch[-1]
                usage = Usage(input_tokens=self.figure, output_tokens=done.usage.output_tokens)
                batch = [Completion(done.message, usage, done.finish_reason)]
            yield batch


def test_one_odd_report_does_not_swell_every_later_prompt():
    """A server that reported 100,000 input tokens for a one-word prompt: that prompt counts
    so, but what a message's wrapping costs is learnt within reason, so the next prompts do
    not each count 100,000 too."""

    provider = Inflating(128_000, 100_000)
    session = Agent(provider=provider, max_tokens=50).session()
    session.run("first")
    for n in range(3):
        session.run(f"next {n}")  # each would be refused if it counted another 100,000
    assert session.context().used < 102_000


# -- an adversarial review's findings ----------------------------------------------------------


def test_a_summary_too_long_to_send_leaves_the_turns_out_not_the_turn(caplog):
    """A writer with a large window (a cheaper hosted model for a small local one) was let
    write a summary as long as its own window allowed: longer than the session's whole
    window, so every later turn was refused as 'this turn alone does not fit'. It is now
    asked for what fits, and one that still does not fit is left out."""
    verbose = json.dumps({"summary": "blah " * 1200})  # ~1,500 tokens: ignores its cap
    writer = TestProvider(replies=[verbose] * 20)
    provider = Windowed(600)
    policy = Summarize(agent=Agent(provider=writer))
    session = Agent(provider=provider, context=policy, max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))  # old: ContextWindowError from the 5th turn on
    assert len(session.messages) == 20 and session.context().left_out > 0
    assert "too long to send" in caplog.text
    caps = [r.settings["max_tokens"] for r in writer.requests]
    assert caps and all(cap < 600 for cap in caps)  # old: 4,096, the writer's own cap
    assert all(count <= 600 for count in provider.counted)


def test_a_retry_keeps_a_summary_that_left_out_every_earlier_turn():
    """A turn so long that every earlier turn was summarized: its decision starts at its own
    prompt, and a retry (a re-run cell) sent its summary again instead of writing another."""
    provider = Windowed(600)
    session = Agent(provider=provider, context="summarize", max_tokens=50).session()
    for n in range(3):
        session.run(words(40 if n < 2 else 180, n))
    decision = session.messages[-2].metadata["context"]
    assert decision["from"] == session.messages[-2].id and decision["summary"]
    written = sum(s.why == "summary" for s in session.ledger)
    session.retry()
    assert sum(s.why == "summary" for s in session.ledger) == written  # old: written again
    again = session.messages[-2].metadata["context"]
    assert again["from"] == session.messages[-2].id and again["summary"] == decision["summary"]
    assert decision["summary"] in provider.requests[-1].messages[0].text


def test_one_odd_report_does_not_swell_the_system_prompt_for_good():
    """What the system prompt and tools cost is learnt once and kept for every request: one
    absurd report (60,000 input tokens for a one-word prompt) made a 12-token system prompt
    count 40,000 tokens in every later request."""

    provider = Inflating(128_000, 60_000)
    session = Agent(provider=provider, max_tokens=50).session(system="Answer briefly, please.")
    session.run("first")
    session.run("second")
    assert session.context().parts["system"] < 2_000  # old: 40,000


@tool(requires_approval=True)
def forget(city: str) -> str:
    """Delete the facts kept about a city."""
    return f"forgot {city}"


def test_a_summary_runs_no_tools():
    """The summary's writer was given the session's tools: a model summarizing a talk about
    them could call them (here one that needs approval: the summary then crashed)."""
    provider = Windowed(600)
    agent = Agent(provider=provider, tools=[lookup, forget], context="summarize", max_tokens=50)
    session = agent.session()
    for n in range(10):
        session.run(f"forget Paris {words(40, n)}" if n == 1 else words(40, n))
        for call in session.messages[-2].tool_calls:
            session.approve(call.id)
            session.resume()
    written = [r for r in provider.requests if r.output is not None]
    assert written and not any(r.tools for r in written)  # old: the tools, and a crash
    assert session.context().summary


def test_a_writer_that_cannot_be_reached_leaves_the_turns_out_without_a_summary(caplog):
    from agent_nb.errors import APIConnectionError

    class Down(TestProvider):
        __test__ = False

        async def complete(self, request):
            raise APIConnectionError("cannot reach the writer", provider="down")
            yield  # pragma: no cover

    provider = Windowed(600)
    policy = Summarize(agent=Agent(provider=Down()))
    session = Agent(provider=provider, context=policy, max_tokens=50).session()
    for n in range(10):
        session.run(words(40, n))  # old: APIConnectionError, every turn from the 5th
    assert session.context().left_out > 0 and session.context().summary is None
    assert "cannot reach the writer" in caplog.text


def test_a_summary_is_not_written_past_the_budget():
    """The summary's request was sent whatever the budget left: a call with max_cost spent
    on a summary before its own request was refused."""
    from agent_nb.errors import BudgetExceeded

    provider = Windowed(600)
    price = {"input": 1000, "output": 1000}
    session = Agent(provider=provider, context="summarize", max_tokens=50, price=price).session()
    for n in range(4):
        session.run(words(40, n))
    sent = len(provider.requests)
    with pytest.raises(BudgetExceeded, match="summary"):
        session.run(words(40, 9), max_cost=0.000001)
    assert len(provider.requests) == sent  # old: one more, the summary's
    assert len(session.messages) == 8
    session.run(words(40, 9))  # with no budget in the way, the summary is written
    assert session.context().summary
