"""Router: a model per session, a fallback only where it is safe, and a pin that travels with
the history. Against several loopback servers (tests/fake_openai.py), each a candidate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI, Reply
from pydantic import BaseModel
from servers import free_port

from agent_nb import Agent, Router, Session, tool
from agent_nb.errors import (
    APIConnectionError,
    ConfigurationError,
    OutputValidationError,
    ServerError,
    StreamError,
)
from agent_nb.messages import Message, TextPart, ThinkingPart
from agent_nb.stores import MemoryStore, SQLiteStore


@pytest.fixture
def servers() -> Iterator[list[FakeOpenAI]]:
    with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI() as c:
        yield [a, b, c]


def candidate(server: FakeOpenAI | str, model: str = "gpt-4o-mini", **options: Any) -> Agent:
    url = server if isinstance(server, str) else server.url
    return Agent(provider="openai-compatible", model=model, base_url=url, max_retries=0, **options)


def router(servers: list[FakeOpenAI], **options: Any) -> Router:
    return Router([candidate(s, f"model-{n}") for n, s in enumerate(servers)], **options)


def chats(server: FakeOpenAI) -> int:
    return len(server.requests)


OVERLOADED = (
    b'data: {"error": {"message": "Overloaded", "type": "overloaded_error", '
    b'"code": "overloaded"}}\n\n'
)


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=503, error={"error": {"message": "busy"}}),
        Reply(status=429, error={"error": {"message": "slow down"}}),
        Reply(status=500, error={"error": {"message": "boom"}}),
        Reply(raw=OVERLOADED),  # a 200, then an error event before the first delta
    ],
    ids=["503", "429", "500", "overloaded-event"],
)
def test_a_turn_that_fails_before_any_output_goes_to_the_next(servers, failure):
    first, second, _ = servers
    first.script(failure)
    session = router(servers).session()
    stream = session.stream("hello")
    assert "".join(e.text for e in stream if e.type == "text_delta")
    response = stream.response
    assert response.text and chats(first) == 1 and chats(second) == 1
    switch = response.messages[-1].metadata["route"]
    assert switch["from"] == "openai-compatible:model-0"
    assert switch["to"] == "openai-compatible:model-1"
    assert response.messages[-1].metadata["candidate"] == "openai-compatible:model-1"
    assert session.agent.model == "model-1"
    assert [s.why for s in session.ledger][-1] == "fallback"


def test_a_server_that_is_not_there_is_fallen_back_from(servers):
    gone = f"http://127.0.0.1:{free_port()}/v1"
    routed = Router([candidate(gone, "gone"), candidate(servers[0], "here")])
    session = routed.session()
    assert session.run("hi").text
    assert session.agent.model == "here"
    status = {row["candidate"]: row for row in routed.status()}
    assert not status["openai-compatible:gone"]["healthy"]
    assert status["openai-compatible:gone"]["last_error"] == "connection"
    assert status["openai-compatible:here"]["healthy"]


def test_no_fallback_once_output_was_shown(servers):
    first, second, _ = servers
    first.script(Reply(text="one two three four five six", drop_after=3))
    session = router(servers).session()
    with pytest.raises((StreamError, APIConnectionError)):
        list(session.stream("hello"))
    assert chats(second) == 0 and session.agent.model == "model-0"


def test_the_session_stays_where_it_fell_back_until_reset(servers):
    first, second, _ = servers
    first.script(Reply(status=503))
    session = router(servers).session()
    session.run("one")
    session.run("two")
    session.run("three")
    assert chats(first) == 1 and chats(second) == 3  # sticky: the first was not asked again
    session.route_reset()
    answer = session.run("four").messages[-1]
    assert session.agent.model == "model-0" and chats(first) == 2
    assert answer.metadata["route"]["why"] == "reset"


def test_probe_back_tries_the_first_choice_again(servers):
    first, _, _ = servers
    first.script(Reply(status=503))
    session = router(servers, cooldown=0, probe_back=0).session()
    session.run("one")  # on model-1 now
    answer = session.run("two").messages[-1]  # probe_back passed: model-0 again
    assert session.agent.model == "model-0" and answer.metadata["route"]["why"] == "probe_back"


def test_every_candidate_failing_fails_the_turn_unchanged(servers):
    for server in servers:
        server.script(Reply(status=503))
    session = router(servers).session()
    with pytest.raises(ServerError):
        session.run("hello")
    assert session.messages == [] and sum(map(chats, servers)) == 3  # each asked once


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city}: sunny"


def test_no_switch_inside_a_tool_loop(servers):
    first, second, _ = servers
    first.script(
        Reply(tool_calls=[{"name": "lookup", "arguments": {"city": "Oslo"}}]), Reply(status=503)
    )
    agents = [candidate(s, f"model-{n}", tools=[lookup]) for n, s in enumerate(servers)]
    session = Router(agents).session()
    with pytest.raises(ServerError):
        session.run("lookup Oslo")
    assert chats(second) == 0 and session.messages == []


def test_no_switch_in_a_json_validation_retry(servers):
    class City(BaseModel):
        name: str

    first, second, _ = servers
    first.script(Reply(text="not json"), Reply(status=503))
    session = router(servers).session()
    with pytest.raises(ServerError):
        session.json("a city", schema=City)
    assert chats(second) == 0


def test_round_robin_spreads_new_sessions_and_pins_each(servers):
    routed = router(servers, strategy="round_robin")
    sessions = [routed.session() for _ in range(3)]
    for session in sessions:
        session.run("hi")
        session.run("again")
    assert [chats(s) for s in servers] == [2, 2, 2]
    assert [s.agent.model for s in sessions] == ["model-0", "model-1", "model-2"]


def test_fastest_measures_then_chooses_the_quickest(servers):
    slow, quick, _ = servers
    slow.chunk_delay = 0.05
    routed = Router([candidate(slow, "slow"), candidate(quick, "quick")], strategy="fastest")
    for _ in range(8):
        list(routed.session().stream("hello there friend"))  # streamed: the delay shows
    assert routed.session().agent.model == "quick"
    measured = {row["model"]: row["measured"] for row in routed.status()}
    assert measured["slow"] >= 3 and measured["quick"] >= 3  # both warmed up first


def test_cheapest_goes_by_the_ledgers_prices(servers):
    routed = Router(
        [candidate(servers[0], "gpt-4o"), candidate(servers[1], "gpt-4o-mini")],
        strategy="cheapest",
    )
    assert routed.session().agent.model == "gpt-4o-mini"


def test_a_custom_strategy_chooses(servers):
    agents = [candidate(s, f"model-{n}") for n, s in enumerate(servers)]
    seen = []

    def last_one(request, session, candidates):
        seen.append((request.messages[-1].text, len(candidates)))
        return candidates[-1]

    session = Router(agents, strategy=last_one).session()
    session.run("hi")
    assert session.agent.model == "model-2" and seen == [("hi", 3)]
    with pytest.raises(ConfigurationError, match="must return one of its agents"):
        Router(agents, strategy=lambda *a: "nobody").session().run("hi")


def test_the_pin_travels_with_the_history(servers, tmp_path):
    servers[0].script(Reply(status=503))
    routed = router(servers, store=SQLiteStore(tmp_path / "s.db"))
    session = routed.session("trip")
    session.run("hello")
    assert session.agent.model == "model-1"
    again = Session.from_dict(json.loads(json.dumps(session.to_dict())), routed)
    assert again.agent.model == "model-1"
    stored = routed.load_session("trip")  # a kernel restart: the store's copy
    assert stored.agent.model == "model-1"
    stored.run("more")
    assert chats(servers[0]) == 1 and chats(servers[1]) == 2
    memory = MemoryStore()
    twin = session.fork()
    assert twin.agent.model == "model-1"
    copied = routed.session("copy", store=memory, messages=session.messages)
    assert copied.agent.model == "model-1"


def test_an_image_in_history_skips_a_candidate_that_takes_none(servers):
    from test_images import png

    blind, sighted, _ = servers
    blind.props = {"modalities": {"vision": False}}
    session = router(servers).session()
    response = session.run("what is this?", images=[png()])
    assert chats(blind) == 0 and chats(sighted) == 1
    assert response.messages[-1].metadata["route"]["why"] == "images"
    status = {row["model"]: row for row in session.agent.router.status()}
    assert status["model-0"]["healthy"]  # it is not broken, only blind


def test_a_window_too_small_routes_to_a_larger_one(servers):
    small = candidate(servers[0], "small", context_window=300, max_tokens=50)
    large = candidate(servers[1], "large", context_window=100_000, max_tokens=50)
    routed = Router([small, large])
    session = routed.session()
    session.run("short")
    assert session.agent.model == "small"
    answer = session.run("a long one " * 200).messages[-1]
    assert session.agent.model == "large" and answer.metadata["route"]["why"] == "window"
    assert all(row["healthy"] for row in routed.status())  # a window is no failure


def test_thinking_from_another_provider_is_left_out_not_sent_as_text(servers):
    routed = router(servers)
    thought = Message(
        role="assistant",
        parts=(ThinkingPart(text="secret plan", signature="sig-abc"), TextPart(text="Hi!")),
        metadata={"candidate": "anthropic:claude"},
    )
    session = routed.session(messages=[Message.user("hello"), thought])
    answer = session.run("and now?").messages[-1]
    sent = json.dumps(servers[0].requests[-1])
    assert "secret plan" not in sent and "sig-abc" not in sent and "Hi!" in sent
    assert "route_dropped" not in answer.metadata  # not this router's: left as it is


def test_thinking_of_a_candidate_left_behind_is_dropped_and_said(servers):
    anthropic = Agent(
        provider="anthropic",
        model="claude-sonnet-4-5",
        api_key="k",
        base_url=servers[2].url.removesuffix("/v1"),
        max_retries=0,
    )
    routed = Router([anthropic, candidate(servers[0], "local")])
    label = routed.labels[0]
    thought = Message(
        role="assistant",
        parts=(ThinkingPart(text="secret plan", signature="sig-abc"), TextPart(text="Hi!")),
        metadata={"candidate": label},
    )
    session = routed.session(messages=[Message.user("hello"), thought])
    servers[2].script(Reply(status=529))
    answer = session.run("and now?").messages[-1]
    sent = json.dumps(servers[0].requests[-1])
    assert "secret plan" not in sent and "sig-abc" not in sent and "Hi!" in sent
    assert answer.metadata["route_dropped"] == {"thinking": 1}
    assert session.messages[1].parts[0].text == "secret plan"  # the history keeps it


def test_a_router_is_checked():
    with pytest.raises(ConfigurationError, match="list of Agents"):
        Router([])
    with pytest.raises(ConfigurationError, match="strategy"):
        Router([Agent(provider="test")], strategy="random")
    with pytest.raises(ConfigurationError, match="not routed"):
        Agent(provider="test").session().route_reset()
    routed = Router([Agent(provider="test"), Agent(provider="test")]).session()
    with pytest.raises(ConfigurationError, match="did you mean max_tool_rounds"):
        routed.run("hi", max_tool_round=3)  # a typo of an Agent's option, as on an Agent


def test_an_error_that_is_the_requests_fault_is_not_fallen_back_from(servers):
    servers[0].script(Reply(status=400, error={"error": {"message": "bad field"}}))
    session = router(servers).session()
    with pytest.raises(Exception, match="bad field"):
        session.run("hi")
    assert chats(servers[1]) == 0


def test_a_validation_error_is_no_fallback_either(servers):
    class City(BaseModel):
        name: str

    servers[0].script(Reply(text="no"), Reply(text="still no"))
    with pytest.raises(OutputValidationError):
        router(servers).session().json("a city", schema=City)
    assert chats(servers[1]) == 0


def test_the_pin_survives_each_store_and_another_process(servers, store_where):
    """Saved in each store kind, opened again from a fresh store object (as a kernel restart
    does), the session is on the candidate it fell back to."""
    from conftest import open_store

    kind, where = store_where
    servers[0].script(Reply(status=503))
    first = open_store(kind, where)
    session = router(servers, store=first).session("pinned")
    session.run("hello")
    session.save()
    again = first if kind == "memory" else open_store(kind, where)  # memory: one process
    restored = router(servers, store=again).load_session("pinned")
    assert restored.agent.model == "model-1"
    restored.run("more")
    assert chats(servers[0]) == 1 and chats(servers[1]) == 2
    for opened in {id(first): first, id(again): again}.values():
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def test_a_session_made_from_a_routed_sessions_agent_is_routed_too(servers):
    session = router(servers).session()
    other = session.agent.session()  # as a panel's "new session" does
    assert hasattr(other.agent, "router") and other.agent.router is session.agent.router


@pytest.mark.parametrize("strategy", ["round_robin", "custom"])
def test_probe_back_returns_to_the_sessions_own_choice_only(servers, strategy):
    """probe_back tries again the candidate the session fell back from: never a new choice
    of the strategy (round_robin would move the session every turn; a function would be
    asked without a request)."""
    asked = []

    def first(request, session, candidates):
        asked.append(request.messages[-1].text)
        return candidates[0]

    chosen = first if strategy == "custom" else strategy
    routed = router(servers, strategy=chosen, probe_back=0, cooldown=0)
    servers[0].script(Reply(status=503))
    session = routed.session()
    session.run("one")  # model-0 fails: on model-1
    assert session.agent.model == "model-1"
    models = []
    for prompt in ("two", "three", "four"):
        session.run(prompt)
        models.append(session.agent.model)
    assert models == ["model-0"] * 3  # back home once, and stays
    assert asked == (["one"] if strategy == "custom" else [])


def test_a_switch_is_recorded_even_when_the_turn_after_it_failed(servers):
    """The turn after a fallback failed past its first answer (its tool loop): that answer
    never reached history, so the next answer records the switch, once."""

    first, second, _ = servers
    first.script(Reply(status=503))
    second.script(
        Reply(tool_calls=[{"name": "lookup", "arguments": {"city": "Oslo"}}]), Reply(status=503)
    )
    agents = [candidate(s, f"model-{n}", tools=[lookup]) for n, s in enumerate(servers)]
    session = Router(agents).session()
    with pytest.raises(ServerError):
        session.run("lookup Oslo")
    assert session.messages == [] and session.agent.model == "model-1"
    answer = session.run("again").messages[-1]
    assert answer.metadata["route"]["from"] == "openai-compatible:model-0"
    assert answer.metadata["route"]["to"] == "openai-compatible:model-1"
    assert "route" not in session.run("once more").messages[-1].metadata  # once only


def test_a_retry_that_fell_back_leaves_the_session_where_it_went(servers):
    first, _, _ = servers
    session = router(servers).session()
    session.run("one")
    first.script(Reply(status=503))
    retried = session.retry()
    assert retried.messages[-1].metadata["candidate"] == "openai-compatible:model-1"
    assert session.agent.model == "model-1"
    session.run("two")
    assert chats(first) == 2  # the failing candidate was not asked again


def test_no_reset_while_tool_calls_wait_for_approval(servers):
    from agent_nb.errors import ApprovalPendingError

    @tool(requires_approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        return "deleted"

    servers[0].script(Reply(status=503))  # the session falls back to model-1
    servers[1].script(Reply(tool_calls=[{"name": "delete", "arguments": {"path": "x"}}]))
    agents = [candidate(s, f"model-{n}", tools=[delete]) for n, s in enumerate(servers)]
    session = Router(agents).session()
    session.run("delete x")
    assert session.pending_approvals and session.agent.model == "model-1"
    with pytest.raises(ApprovalPendingError, match="before route_reset"):
        session.route_reset()
    session.approve(session.pending_approvals[0].id)
    session.resume()
    assert session.agent.model == "model-1" and chats(servers[0]) == 1


def test_a_stream_stopped_after_a_fallback_keeps_exactly_what_was_seen(servers):
    """The first candidate fails; the second streams; the reader breaks after two deltas:
    the session keeps what was seen, on the candidate it fell back to, asked once."""
    first, second, _ = servers
    first.script(Reply(status=503))
    second.script(Reply(text="alpha beta gamma delta epsilon"))
    session = router(servers).session()
    seen = []
    for event in session.stream("hello"):
        if event.type == "text_delta":
            seen.append(event.text)
            if len(seen) == 2:
                break
    assert session.messages[-1].text == "".join(seen)
    assert session.messages[-1].metadata.get("interrupted") is True
    assert chats(first) == 1 and chats(second) == 1 and session.agent.model == "model-1"
