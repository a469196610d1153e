"""The spend ledger: one entry per request actually sent, whatever became of its turn; prices
from genai-prices, `price=`, the local rule; budgets; Anthropic's prompt cache priced."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fake_openai import Reply
from genai_prices import Usage as TheirUsage
from genai_prices import calc_price
from pydantic import BaseModel

from agent_nb import Agent, Session
from agent_nb._ledger import Cost, Price, dollars
from agent_nb.errors import BudgetExceeded, ServerError
from agent_nb.events import Usage

GPT = "gpt-4o-mini"


def their_price(model: str, usage: Usage, provider: str = "openai") -> Decimal:
    """genai-prices' own figure for `usage` on `model`."""
    return calc_price(
        TheirUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model,
        provider_id=provider,
    ).total_price


def usage(prompt: int, completion: int, cached: int = 0) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


@pytest.fixture
def agent(server):
    """An agent on the loopback server, for a model genai-prices knows by its name."""
    return Agent(provider="openai-compatible", model=GPT, base_url=server.url, max_retries=0)


def add(x: int, y: int) -> int:
    """Add two numbers."""
    return x + y


# -- every request is in the ledger ---------------------------------------------------------


def test_a_turn_with_tool_rounds_has_an_entry_per_request_priced_by_name(server, agent):
    server.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], usage=usage(100, 20)),
        Reply(text="3", usage=usage(150, 5, cached=100)),
    )
    session = agent.session(tools=[add])
    response = session.run("add 1 and 2")
    first, second = response.spent
    assert (first.why, second.why) == ("turn", "tool_round")
    assert first.cost == their_price(GPT, Usage(100, 20))
    assert second.cost == their_price(GPT, Usage(150, 5, cached_tokens=100))
    assert first.matched == "name"  # a server at another address, a model the table knows
    assert response.cost.amount == first.cost + second.cost
    assert session.cost == response.cost
    assert response.messages[-1].metadata["cost"] == str(second.cost)


def test_a_failed_turn_after_paid_rounds_is_spent_but_not_in_history(server, agent):
    server.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], usage=usage(100, 20)),
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 3, "y": 4}}], usage=usage(200, 20)),
        Reply(status=500, error={"error": {"message": "boom"}}),
    )
    session = agent.session(tools=[add])
    with pytest.raises(ServerError):
        session.run("add twice")
    assert session.messages == []
    assert [s.why for s in session._ledger] == ["turn", "tool_round"]  # the 500 is not billed
    assert session.cost.amount == their_price(GPT, Usage(100, 20)) + their_price(
        GPT, Usage(200, 20)
    )
    assert session.cost.requests == 2


class Answer(BaseModel):
    n: int


def test_a_validation_retry_is_spent(server, agent):
    server.script(
        Reply(text='{"n": "many"}', usage=usage(50, 5)), Reply(text='{"n": 3}', usage=usage(80, 5))
    )
    session = agent.session()
    response = session.json("how many?", Answer)
    assert response.output == Answer(n=3)
    assert [s.why for s in response.spent] == ["turn", "validation_retry"]
    assert len(session.messages) == 2  # the failed answer is not in history; its cost is
    assert session.cost.requests == 2


def test_a_stopped_stream_is_spent_as_an_estimate(server, agent):
    server.script(Reply(text="one two three four five six seven eight", chunk_delay=0.01))
    session = agent.session()
    for _event in session.stream("count"):
        break
    [spend] = session._ledger
    assert spend.estimated and spend.usage.output_tokens >= 1 and spend.usage.input_tokens >= 1
    assert spend.cost == their_price(GPT, spend.usage)
    assert str(session.cost).startswith("~$")


def test_undo_retry_clear_never_erase_spend_and_a_fork_counts_its_own(server, agent):
    session = agent.session()
    session.run("one")
    session.run("two")
    session.retry()
    assert [s.why for s in session._ledger] == ["turn", "turn", "retry"]
    session.undo()
    session.clear()
    assert session.cost.requests == 3
    fork = session.fork()
    assert fork.cost.requests == 0
    fork.run("three")
    assert (fork.cost.requests, session.cost.requests) == (1, 3)


def test_a_failed_retry_is_spent_too(server, agent):
    session = agent.session(tools=[add])
    session.run("one")
    server.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], usage=usage(100, 20)),
        Reply(status=500, error={"error": {"message": "boom"}}),
    )
    with pytest.raises(ServerError):
        session.retry()
    assert len(session.messages) == 2  # the first answer stays
    assert [s.why for s in session._ledger] == ["turn", "retry"]
    assert session._ledger[1].usage == Usage(100, 20)


# -- the ledger travels -------------------------------------------------------------------------


def test_the_ledger_round_trips_through_to_dict_and_every_store(store, server, agent):
    session = agent.session(session_id="spent", store=store)
    session.run("one")
    session.undo()  # its spend stays
    session.run("two")
    expected = list(session._ledger)
    restored = Session.from_dict(json.loads(json.dumps(session.to_dict())), agent)
    assert restored._ledger == expected
    loaded = agent.load_session("spent", store=store)
    assert loaded._ledger == expected
    assert loaded.cost == session.cost


def test_a_model_named_with_a_lone_surrogate_keeps_the_session_loadable(store, server):
    """A server names its model as it likes, a split surrogate pair included: the entry
    round-trips like the messages' text does (a constrained pydantic str refused it)."""
    odd = "gpt-\ud83d"
    agent = Agent(provider="openai-compatible", model=odd, base_url=server.url, max_retries=0)
    session = agent.session(session_id="odd", store=store)
    if type(store).__name__ == "NotebookStore":  # UTF-8 cannot hold it: refused, clearly
        with pytest.raises(Exception, match="surrogate"):
            session.run("hi")
        return
    session.run("hi")
    assert session._ledger[-1].model == odd  # as configured (the served name is cleaned)
    restored = Session.from_dict(json.loads(json.dumps(session.to_dict())), agent)
    assert restored._ledger == session._ledger
    assert agent.load_session("odd", store=store)._ledger == session._ledger


def test_an_old_saved_session_loads_with_an_empty_ledger():
    old = {
        "version": 1,
        "session_id": "old",
        "system": None,
        "model": "test",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "usage": {"input_tokens": 3, "output_tokens": 4, "cached_tokens": 0, "reasoning_tokens": 0},
    }
    session = Session.from_dict(old, Agent(provider="test"))
    assert session.usage == Usage(3, 4) and session._ledger == [] and session.cost.requests == 0
    assert session.to_dict()["version"] == 2


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"cost": "lots"}, "spend.0.cost"),
        ({"cost": "-1"}, "spend.0.cost"),
        ({"cost": 0.5}, "spend.0.cost"),
        ({"usage": {"input_tokens": -1}}, "spend.0.usage.input_tokens"),
        ({"surprise": 1}, "spend.0.surprise"),
    ],
)
def test_a_corrupt_ledger_is_invalid_session_data_naming_the_field(entry, problem):
    from agent_nb.errors import InvalidSessionData

    agent = Agent(provider="test")
    session = agent.session()
    session.run("hi")
    data = session.to_dict()
    data["spend"][0].update(entry)
    with pytest.raises(InvalidSessionData, match=problem.replace(".", r"[.\[\]]+")):
        Session.from_dict(data, agent)


# -- prices ---------------------------------------------------------------------------------


def test_price_given_local_rule_and_no_price(server):
    given = Agent(
        provider="openai-compatible",
        model="my-model",
        base_url=server.url,
        price={"input": 2, "output": 8, "cache_read": "0.5"},
    )
    server.script(Reply(text="ok", usage=usage(1_000_000, 1_000_000, cached=500_000)))
    spend = given.session().run("hi").spent[0]
    assert spend.cost == Decimal("1") + Decimal("0.25") + Decimal("8")
    assert (spend.matched, spend.prices) == ("given", "price=")

    local = Agent(provider="openai-compatible", model="my-model", base_url=server.url)
    spend = local.session().run("hi").spent[0]
    assert (spend.cost, spend.matched) == (Decimal(0), "local")

    remote = Agent(
        provider="openai-compatible", model="my-model", base_url="https://gw.example.com/v1"
    )
    from agent_nb import _prices

    spend = _prices.priced(remote.provider, "my-model", None, Usage(10, 10), why="turn")
    assert (spend.cost, spend.matched) == (None, "none")
    assert str(Cost.of([spend])) == "no price"


def test_a_local_family_name_is_not_priced_as_the_vendors_api(server):
    """deepseek-r1:8b on a local server is a distill run at home, not DeepSeek's API."""
    agent = Agent(provider="openai-compatible", model="deepseek-r1:8b", base_url=server.url)
    assert agent.session().run("hi").spent[0].matched == "local"


@pytest.mark.parametrize(
    "bad", [{"input": 1}, {"input": 1, "output": 2, "cache": 3}, {"input": "x", "output": 1}, 5]
)
def test_a_bad_price_is_refused_with_what_it_takes(bad):
    with pytest.raises((TypeError, ValueError), match="price|Price"):
        Agent(provider="test", price=bad)


def test_money_is_shown_with_sensible_precision():
    assert dollars(Decimal("0.003100000004")) == "$0.0031"
    assert dollars(Decimal("12.345")) == "$12.35"
    assert str(Cost(Decimal("0.0031"), 2, 1, True)) == "~$0.0031 + 1 unpriced"
    assert Price(input=3, output=15).cost(Usage(1_000_000, 0)) == Decimal(3)


# -- budgets --------------------------------------------------------------------------------


def test_a_budget_refuses_before_anything_is_sent(server):
    agent = Agent(provider="openai-compatible", model=GPT, base_url=server.url, max_cost=0.000001)
    session = agent.session()
    with pytest.raises(BudgetExceeded, match="nothing was sent") as caught:
        session.run("x" * 40_000)
    assert server.requests == [] and session.messages == [] and session.cost.requests == 0
    assert caught.value.limit == Decimal("0.000001") and caught.value.bound > 0


def test_a_call_budget_stops_a_turn_at_the_next_request(server, agent):
    server.script(
        Reply(
            tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], usage=usage(100_000, 20)
        ),
        Reply(text="3"),
    )
    session = agent.session(tools=[add])
    with pytest.raises(BudgetExceeded, match="this call has spent"):
        session.run("add", max_cost=0.01)
    assert len(server.requests) == 1  # the second request was never sent
    assert session.messages == [] and session.cost.requests == 1
    session.run("again")  # the session's own budget is not the call's


def test_a_session_budget_counts_every_turn(server):
    agent = Agent(
        provider="openai-compatible",
        model=GPT,
        base_url=server.url,
        max_cost="0.02",
        context_window=1_000_000,  # the server reports 100k tokens a turn: more than 128k
    )
    session = agent.session()
    server.script(Reply(text="a", usage=usage(100_000, 10)))
    session.run("one " * 50_000)  # $0.015; it counts as the 100k tokens the server reported
    server.script(Reply(text="b", usage=usage(100_000, 10)))
    with pytest.raises(BudgetExceeded, match="the next request costs at least"):
        session.run("two")  # 200k tokens at least ($0.03): refused before it is sent
    assert len(session.messages) == 2 and len(server.requests) == 1


def test_a_budget_without_a_price_is_refused(server):
    agent = Agent(
        provider="openai-compatible",
        model="mystery",
        base_url="https://gw.example.com/v1",
        max_cost=1,
        api_key="k",
    )
    with pytest.raises(BudgetExceeded, match="no known price"):
        agent.session().run("hi")


# -- Anthropic's prompt cache -----------------------------------------------------------------


def test_a_second_turn_reads_the_cache_at_the_cached_rate(server):
    model = "claude-sonnet-4-5"
    agent = Agent(
        provider="anthropic",
        model=model,
        base_url=server.url.removesuffix("/v1"),
        api_key="k",
        system="You are terse. " * 400,
    )
    first = {"input_tokens": 10, "cache_creation_input_tokens": 2_000, "output_tokens": 30}
    second = {
        "input_tokens": 12,
        "cache_read_input_tokens": 2_000,
        "cache_creation_input_tokens": 45,
        "output_tokens": 30,
    }
    server.script(Reply(text="one", usage=first), Reply(text="two", usage=second))
    session = agent.session()
    session.run("first")
    session.run("second")
    body = server.requests[1]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    a, b = session._ledger
    assert b.usage == Usage(2_057, 30, cached_tokens=2_000, cache_write_tokens=45)
    assert a.cost == their_price(model, a.usage, "anthropic")
    assert b.cost == their_price(model, b.usage, "anthropic")
    uncached = their_price(model, Usage(2_057, 30), "anthropic")
    assert b.cost < uncached  # the reads at a tenth of the input price
    assert a.cost > their_price(model, Usage(2_010, 30), "anthropic")  # the write premium
    assert b.saved == uncached - b.cost  # the ledger shows the saving
    assert a.saved == their_price(model, Usage(2_010, 30), "anthropic") - a.cost < 0
    assert session.cost.saved == a.saved + b.saved > 0
    assert Session.from_dict(session.to_dict(), agent).ledger == session.ledger


def test_prompt_cache_off_sends_no_breakpoints(server):
    agent = Agent(
        provider="anthropic",
        model="claude-sonnet-4-5",
        base_url=server.url.removesuffix("/v1"),
        api_key="k",
        system="You are terse. " * 400,
        prompt_cache=False,
    )
    agent.session().run("hi")
    assert "cache_control" not in json.dumps(server.requests[0])


# -- the notebook's records -----------------------------------------------------------------


def test_a_records_malformed_spend_is_left_out_with_a_line_and_its_turn_restored():
    from agent_nb import _records

    agent = Agent(provider="test")
    session = agent.session(session_id="main")
    response = session.run("hi")
    good = response.spent[0].to_dict()
    entry = _records.record(
        "turn", session, list(response.messages), spend=[good, {"cost": "lots"}, 7]
    )[_records.KEY]
    lines: list[str] = []
    replayed = _records.replay([_records.Found("cell 1", entry)], agent, Session, lines.append)
    rebuilt = replayed.sessions["main"]
    assert [m.id for m in rebuilt.messages] == [m.id for m in session.messages]
    assert rebuilt.ledger == session.ledger
    assert lines == [
        "agent_nb: left out 2 malformed spend entries of the record in cell 1 (its turn is "
        "restored)"
    ]


def test_spend_entries_count_toward_a_restores_caps():
    from agent_nb import _records

    agent = Agent(provider="test")
    session = agent.session(session_id="main")
    response = session.run("hi")
    flood = [response.spent[0].to_dict()] * 50
    entry = _records.record("turn", session, list(response.messages), spend=flood)
    lines: list[str] = []
    replayed = _records.replay(
        [_records.Found("cell 1", entry[_records.KEY])],
        agent,
        Session,
        lines.append,
        _records.Limits(messages=20),
    )
    assert replayed.sessions == {} and "skipped 1 record" in lines[-1]


# -- found in review ---------------------------------------------------------------------------


def test_a_failed_turns_spend_reaches_the_sessions_store(store, server, agent):
    """The turn changed no history, but what it spent is saved: a reload still has it."""
    from agent_nb.stores.base import worker

    session = agent.session(session_id="failed", store=store, tools=[add])
    session.run("one")
    server.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], usage=usage(100, 20)),
        Reply(status=500, error={"error": {"message": "boom"}}),
    )
    with pytest.raises(ServerError):
        session.run("two")
    server.script(
        Reply(tool_calls=[{"name": "add", "arguments": {"x": 3, "y": 4}}], usage=usage(100, 20)),
        Reply(status=500, error={"error": {"message": "boom"}}),
    )
    with pytest.raises(ServerError):
        session.retry()  # a Retake's copy: no store of its own, it spends the session's
    worker(store).call(lambda: None)  # the saves queued so far have run
    assert len(session.ledger) == 3 and len(session.messages) == 2
    assert agent.load_session("failed", store=store).ledger == session.ledger


@pytest.mark.parametrize(
    "entry",
    [{"cost": "1e30"}, {"cost": "1e999999999"}, {"saved": "1e30"}, {"saved": "-1e999999999"}],
)
def test_an_absurd_amount_in_saved_spend_is_invalid_session_data_not_a_crash(entry):
    from agent_nb.errors import InvalidSessionData

    agent = Agent(provider="test")
    session = agent.session()
    session.run("hi")
    data = session.to_dict()
    data["spend"][0].update(entry)
    with pytest.raises(InvalidSessionData, match=r"spend[.\[\]]+0"):
        str(Session.from_dict(data, agent).cost)


def test_an_absurd_cost_in_a_messages_metadata_leaves_the_panel_footer_standing():
    from agent_nb.messages import Message
    from agent_nb.notebook.panel import cards

    usage_ = {"input_tokens": 3, "output_tokens": 4}
    for cost in ("1e30", "1e999999999"):
        messages = [
            Message.user("hi"),
            Message.assistant("a", usage=usage_, cost=cost),
            Message.assistant("b", usage=usage_, cost=cost),
        ]
        assert "last turn" in cards.footer(messages, "m", 1.0, None)


def test_a_server_naming_its_model_at_length_leaves_the_session_loadable(server):
    """The served name is the server's to choose: the ledger keeps it within what its own
    format reads back, or a saved session could never be loaded again."""
    long = "m" * 5_000
    events = [
        {"model": long, "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"model": long, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"model": long, "choices": [], "usage": usage(10, 2)},
    ]
    raw = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    server.script(Reply(raw=raw))
    agent = Agent(provider="openai-compatible", model=GPT, base_url=server.url, max_retries=0)
    session = agent.session()
    list(session.stream("hi"))
    [spend] = session.ledger
    assert spend.served.startswith("mmm")
    assert Session.from_dict(session.to_dict(), agent).ledger == session.ledger


def test_a_streamed_tool_call_cut_off_midway_is_spent(server, agent):
    """The server streamed a tool call (output, billed) and the connection dropped before
    it ended: no text was shown, but the request was answered and is in the ledger."""
    server.script(Reply(tool_calls=[{"name": "add", "arguments": {"x": 1, "y": 2}}], drop_after=2))
    session = agent.session(tools=[add])
    with pytest.raises(Exception, match="dropped"):
        list(session.stream("add 1 and 2"))
    assert len(server.requests) == 1 and session.messages == []
    [spend] = session.ledger
    assert spend.estimated and spend.usage.input_tokens > 0


def test_an_attempt_that_began_then_broke_off_and_was_retried_is_in_the_ledger(server):
    """The server began (a chunk with no text yet), the connection dropped, the transport
    asked again: both attempts are billed, so both are in the ledger (the first estimated)."""
    began = (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    )
    server.script(Reply(raw=began + began, drop_after=len(began)), Reply(text="hello"))
    agent = Agent(provider="openai-compatible", model=GPT, base_url=server.url, max_retries=1)
    session = agent.session()
    stream = session.stream("hi")
    assert "".join(e.text for e in stream if e.type == "text_delta") == "hello"
    assert len(server.requests) == 2
    first, second = session.ledger
    assert first.usage.estimated and first.why == "turn" and first.message is None
    assert not second.usage.estimated and second.message == stream.response.messages[-1].id
