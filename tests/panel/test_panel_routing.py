"""ChatPanel on a Router: its sessions are routed, and the footer of the turn after a switch
says from where and why (the footer's note is built from fixed words and escaped labels)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAI, Reply

from agent_nb import Agent, ChatPanel, Message, Router
from agent_nb.notebook import _routing

BUSY = Reply(status=503, error={"error": {"message": "busy"}})


class Recorder:
    """What the panel sends to the front end (its comm has no kernel)."""

    def __init__(self, panel: ChatPanel) -> None:
        self.sent: list[dict] = []
        panel.comm.send = self.send

    def send(self, data: dict, buffers: object = None, **kwargs: object) -> None:
        self.sent.append(json.loads(json.dumps(data)))

    def footers(self) -> list[str]:
        shown = [m["content"] for m in self.sent if m.get("method") == "custom"]
        return [m["footer"] for m in shown if m["type"] == "controls"]


@pytest.fixture
def pair() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI() as a, FakeOpenAI() as b:
        yield a, b


def router_of(a: FakeOpenAI, b: FakeOpenAI) -> Router:
    return Router(
        [
            Agent(provider="openai-compatible", model=name, base_url=s.url, max_retries=0)
            for name, s in (("model-a", a), ("model-b", b))
        ]
    )


async def test_a_panel_on_a_router_falls_back_and_its_footer_says_so(pair):
    a, b = pair
    a.script(BUSY)
    panel = ChatPanel(router_of(a, b))
    recorder = Recorder(panel)
    response = await panel.send("hello")
    assert response.text and len(a.requests) == 1 and len(b.requests) == 1
    assert panel.session.agent.label == "openai-compatible:model-b"
    footer = recorder.footers()[-1]
    assert "<code>model-b</code>" in footer
    assert "fell back from <code>openai-compatible:model-a</code> (503)" in footer
    await panel.send("again")  # sticky: on model-b; the note was the switch's turn's only
    footer = recorder.footers()[-1]
    assert len(a.requests) == 1 and len(b.requests) == 2
    assert "<code>model-b</code>" in footer and "fell back" not in footer
    # a new session from the panel is the Router's (routed), not model-b's alone
    panel._handle_custom_msg({"type": "new"}, [])
    assert _routing.route_of(panel.session) is not None
    panel.switch("elsewhere")
    assert _routing.route_of(panel.session) is not None


def test_a_panel_on_a_routed_session_keeps_it_routed(pair):
    a, b = pair
    session = router_of(a, b).session(session_id="s")
    panel = ChatPanel(session)
    assert panel.session is session and _routing.route_of(session) is not None


@pytest.mark.parametrize(
    "route",
    [
        {"from": "<img src=x onerror=alert(1)>", "to": "b", "why": "<script>"},
        {"from": "a" * 500, "to": "b", "why": "503"},
        {"from": 3, "to": "b", "why": "503"},
        {"from": "a", "to": None},
        "503",
        {"from": "a\n\x1b[31mred", "to": "b", "why": "probe_back", "at": "<b>"},
    ],
)
def test_the_note_of_a_hostile_record_is_escaped_or_left_out(route):
    message = Message.assistant("hi").model_copy(update={"metadata": {"route": route}})
    shown = "".join(_routing.facts([message]))
    assert "<img" not in shown and "<script" not in shown and "\x1b" not in shown
    assert "<b>" not in shown and len(shown) < 200
    if isinstance(route, dict) and isinstance(route.get("from"), str) and route.get("to"):
        assert shown.startswith(("fell back from <code>", "back from <code>"))
    else:
        assert shown == ""
