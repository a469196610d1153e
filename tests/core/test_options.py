"""A misspelled option fails before anything is sent (issue 25, item 11)."""

from __future__ import annotations

import pytest

from agent_nb import Agent
from agent_nb.errors import ConfigurationError
from agent_nb.providers.testing import TestProvider


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("toolz", "tools"), ("max_retry", "max_retries"), ("max_tool_round", "max_tool_rounds")],
)
def test_agent_refuses_a_setting_a_letter_or_two_from_its_own_options(typo, meant):
    with pytest.raises(ConfigurationError, match=f"got {typo}=.*did you mean {meant}="):
        Agent(provider="test", **{typo: 1})


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("max_retry", "max_retries"),
        ("toolz", "tools"),
        ("output_retry", "output_retries"),
        ("deadlines", "deadline"),
        ("image", "images"),
    ],
)
def test_a_call_refuses_a_misspelled_option_before_sending(server, typo, meant):
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k")
    session = agent.session()
    for call in (session.run, lambda *a, **k: list(session.stream(*a, **k))):
        with pytest.raises(ConfigurationError, match=f"did you mean {meant}=.*nothing was sent"):
            call("hi", **{typo: 1})
    assert server.requests == [] and session.messages == []


def test_settings_agent_nb_does_not_know_still_go_to_the_server(server):
    agent = Agent(provider="openai", model="m", base_url=server.url, api_key="k", seed=7)
    agent.session().run("hi", temperature=0.5, top_p=0.9, stop=["x"], store=False, models=["a"])
    sent = server.requests[-1]
    assert (sent["seed"], sent["temperature"], sent["top_p"]) == (7, 0.5, 0.9)
    assert (sent["stop"], sent["store"], sent["models"]) == (["x"], False, ["a"])


def test_a_new_option_of_agent_is_covered_without_a_list_to_keep():
    """The names come from Agent's signature and the turn's Settings: an option added there
    (the cost ledger's `max_cost`, say) is known at once."""

    class Budgeted(Agent):
        def __init__(self, *args, max_cost: float | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.max_cost = max_cost

    with pytest.raises(ConfigurationError, match="max_cots=.*did you mean max_cost="):
        Budgeted(provider="test", max_cots=1.0)
    provider = TestProvider(["fine"])
    session = Budgeted(provider=provider, max_cost=1.0).session()
    with pytest.raises(ConfigurationError, match="did you mean max_cost="):
        session.run("hi", max_cots=1.0)
    assert provider.requests == []
