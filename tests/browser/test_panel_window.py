"""ChatPanel's log as a virtual list, in real JupyterLab (headless Chromium): a 500-message
session opens at its end with few nodes, scrolls to its first message, keeps the view still
as heights are measured, follows the answer streaming at the bottom (and stays put when the
reader has scrolled up, every time: a token can come before the scroll's event), and holds a
bounded number of nodes after many turns."""

from __future__ import annotations

import nbformat
import pytest
from fake_openai import Reply
from test_browser import TESTS, Browser, lab  # noqa: F401 - `lab` is a fixture
from test_panel_browser import panel_notebook, run_cell

pytestmark = pytest.mark.timeout(600)

VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"
PANEL = f"{VISIBLE} .agent-nb-panel"
COUNT = 500
#: Far fewer than COUNT: what is in view (the log is 480 px high) and a screen either side.
FEW = 80

#: The log as the reader sees it: the message nodes, which are in view and where.
STATE = """(panel) => {
  const log = panel.querySelector('.agent-nb-panel-log');
  const box = log.getBoundingClientRect();
  const nodes = [...log.querySelectorAll('.agent-nb-panel-message[data-id]')]
    .filter(n => !n.classList.contains('agent-nb-panel-provisional'));
  const marker = n => n.querySelector('.agent-nb-panel-body').textContent.trim().split(/\\s/)[0];
  const placed = nodes.map(n => {
    const r = n.getBoundingClientRect();
    return {id: n.dataset.id, marker: marker(n), top: r.top - box.top, bottom: r.bottom - box.top};
  });
  const gaps = placed.slice(1).map((p, i) => Math.round(p.top - placed[i].bottom));
  return {
    count: nodes.length,
    size: nodes.length ? Number(nodes[0].getAttribute('aria-setsize')) : 0,
    everywhere: document.querySelectorAll('.agent-nb-panel-message').length,
    visible: placed.filter(p => p.bottom > 0 && p.top < log.clientHeight),
    placed, gaps,
    scrollTop: log.scrollTop, scrollHeight: log.scrollHeight, clientHeight: log.clientHeight,
    fromBottom: log.scrollHeight - log.scrollTop - log.clientHeight,
    live: (log.querySelector('.agent-nb-panel-live') || {}).innerText || '',
  };
}"""

#: Scroll the log (as a reader would: the scroll event follows) and let two frames pass.
SCROLL = """(panel, to) => new Promise(done => {
  const log = panel.querySelector('.agent-nb-panel-log');
  log.scrollTop = typeof to === 'number' ? to : log.scrollTop + Number(to);
  requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(done)));
})"""


def long_notebook(server) -> nbformat.NotebookNode:
    cells = [
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from long_history import messages\n"
        "from agent_nb import Agent, ChatPanel, Session\n"
        f"agent = Agent(provider='openai', model='m', base_url={server.url!r}, api_key='k')\n"
        f"session = Session(agent, session_id='long', messages=messages({COUNT}))\n"
        "panel = ChatPanel(session)",
        "panel",
        "for i in range(30):\n    await panel.send(f'turn {i}')",
        "session.run('from a cell')",
    ]
    nb = panel_notebook(server)  # (its kernelspec)
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


class LongPanel:
    """The notebook open in JupyterLab, its panel shown on the 500-message session."""

    def __init__(self, browser, lab, server, shots) -> None:  # noqa: F811
        nbformat.write(long_notebook(server), str(lab.root / "long.ipynb"))
        self.browser, self.page, self.shots = browser, browser.page, shots
        self.page.goto(f"{lab.url}/lab/tree/long.ipynb")
        browser.cell(0).wait_for(timeout=120_000)
        idle = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        self.page.wait_for_selector(f"{idle}[data-status='idle']", timeout=120_000)
        run_cell(browser, 0, shots, tries=5)
        run_cell(browser, 1, shots)
        self.page.locator(PANEL).wait_for(timeout=60_000)
        self.settled_at_the_end()

    def settled_at_the_end(self) -> None:
        """Until the last message is in view at the bottom (its heights measured: a first
        layout from estimates may not reach it, and the next frame's measuring fixes it)."""
        self.wait_for(f"s => s.visible.some(v => v.marker === 'm{COUNT - 1}') && s.fromBottom < 2")

    def state(self) -> dict:
        return self.page.locator(PANEL).evaluate(STATE)

    def scroll(self, to: int | str) -> dict:
        """To `to` px from the top, or by "+N"/"-N"; the state after it."""
        self.page.locator(PANEL).evaluate(SCROLL, to)
        return self.state()

    def wait_for(self, condition: str, timeout: float = 60_000) -> None:
        """Until `condition` (a JS function of the state) holds."""
        self.page.wait_for_function(
            f"() => {{ const p = document.querySelector('{PANEL}'); return p && ({condition})"
            f"(({STATE})(p)); }}",
            timeout=timeout,
        )

    def run(self, index: int) -> None:
        run_cell(self.browser, index, self.shots)


def consistent(state: dict) -> None:
    """The rendered messages stand one after the other, as the layout has them."""
    assert state["gaps"] and set(state["gaps"]) == {6}, state["gaps"]


def test_a_long_session_opens_at_its_end_and_scrolls_to_its_start(lab, server, tmp_path):  # noqa: F811
    with Browser() as browser:
        panel = LongPanel(browser, lab, server, tmp_path)
        opened = panel.state()
        assert 0 < opened["count"] < FEW, opened["count"]  # far fewer nodes than messages
        assert opened["placed"][-1]["marker"] == f"m{COUNT - 1}"
        assert opened["fromBottom"] < 2  # opened at the end ...
        assert opened["scrollHeight"] > 20 * opened["clientHeight"]  # ... and scrolls far up
        consistent(opened)
        browser.page.locator(PANEL).screenshot(path=str(tmp_path / "window-opened.png"))

        # the middle: the nodes there, the view still as the ones above are measured
        middle = panel.scroll(opened["scrollHeight"] // 2)
        assert middle["visible"] and middle["count"] < FEW
        assert not {p["marker"] for p in middle["placed"]} & {
            p["marker"] for p in opened["placed"]
        }  # the end's nodes are gone
        consistent(middle)
        for _ in range(8):  # up a screen and a half at a time, past what was rendered
            seen = panel.state()["visible"][0]
            after = panel.scroll("-700")
            (same,) = [p for p in after["placed"] if p["id"] == seen["id"]]
            assert abs(same["top"] - (seen["top"] + 700)) <= 1, (seen, same)
            consistent(after)

        # the top: the first message, at the top
        for _ in range(20):  # each jump measures what it shows; the view holds still
            top = panel.scroll(0)
            if top["scrollTop"] == 0:
                break
        assert top["scrollTop"] == 0 and top["visible"][0]["marker"] == "m0"
        assert abs(top["visible"][0]["top"]) <= 1 and top["count"] < FEW
        consistent(top)
        browser.page.locator(PANEL).screenshot(path=str(tmp_path / "window-top.png"))

        # and back to the end: the last message just above the bottom, nothing blank below
        for _ in range(20):
            end = panel.scroll(10**9)
            if end["fromBottom"] < 1:
                break
        last = end["placed"][-1]
        assert last["marker"] == f"m{COUNT - 1}" and end["fromBottom"] < 1
        assert end["clientHeight"] - 30 < last["bottom"] <= end["clientHeight"] + 1
        consistent(end)
        assert browser.dialogs == []


def test_the_answer_streams_in_view_and_turns_keep_the_nodes_bounded(lab, server, tmp_path):  # noqa: F811
    words = " ".join(f"word{i}" for i in range(1500))
    # short paragraphs, fast: the tail is sent every 50 ms, so a token often comes between
    # a scroll and its event (a frame later)
    lines = "\n\n".join(" ".join(f"line{i}-{j}" for j in range(4)) for i in range(3000))
    turns = [Reply(text=f"answer {i}\n\n" + " ".join(["short"] * (i * 5))) for i in range(30)]
    server.script(
        Reply(text=lines, chunk_delay=0.005),
        Reply(text=words, chunk_delay=0.02),
        *turns,
        Reply(text="from a cell"),
    )
    with Browser() as browser:
        panel = LongPanel(browser, lab, server, tmp_path)
        page = browser.page
        prompt = page.locator(PANEL).locator("textarea")

        # each time the reader scrolls up from the bottom while tokens arrive, they stay up
        prompt.fill("many short lines")
        prompt.press("Enter")
        panel.wait_for("s => s.live.includes('line50-')")
        for _ in range(40):
            panel.scroll(10**9)
            up = panel.scroll("-600")
            assert up["fromBottom"] > 500, up["fromBottom"]  # not put back at the bottom
        page.locator(PANEL).locator(".agent-nb-panel-stop").click()
        panel.wait_for("s => !s.live")

        prompt.fill("write at length")
        prompt.press("Enter")
        panel.wait_for("s => s.live.includes('word50')")
        for _ in range(5):  # at the bottom it stays at the bottom, the answer's end in view
            state = panel.state()
            assert state["fromBottom"] < 2, state["fromBottom"]
            page.wait_for_timeout(150)
        # scrolled up, the reader stays where they are while tokens arrive
        up = panel.scroll("-600")
        seen = up["visible"][0]
        panel.wait_for(f"s => s.live.length > {len(up['live']) + 500}")  # more tokens came
        still = panel.state()
        assert still["scrollTop"] == up["scrollTop"]
        (same,) = [p for p in still["placed"] if p["id"] == seen["id"]]
        assert abs(same["top"] - seen["top"]) <= 1
        page.locator(PANEL).locator(".agent-nb-panel-stop").click()
        panel.wait_for("s => !s.live")

        # many turns: the nodes stay few, the end in view (the cell's prompt says it has
        # run, which can come before the last turns' messages to the panel: their count)
        panel.run(2)
        panel.wait_for(
            f"s => s.size === {COUNT + 4 + 60} && s.fromBottom < 2"
            " && s.placed.at(-1).marker === 'answer'",
        )
        after = panel.state()
        assert after["everywhere"] < FEW, after["everywhere"]  # no view left anything behind
        consistent(after)
        last = page.locator(PANEL).locator(".agent-nb-panel-message").last.inner_text()
        assert "answer 29" in last and last.endswith("short " * 28 + "short"), last[:80]

        # a turn from a cell while the reader is up in the history: they stay there
        for _ in range(5):
            middle = panel.scroll(after["scrollHeight"] // 2)
        seen = middle["visible"][0]
        transcript = f"{VISIBLE} [data-agent-nb-fallback]"
        page.eval_on_selector_all(transcript, "(all) => all.forEach((e) => { e.dataset.old = 1; })")
        panel.run(3)
        panel.wait_for(f"s => s.size === {COUNT + 4 + 60 + 2}")  # the cell's turn is listed
        # and then the output's transcript refreshed (a new one, emptied by the live view:
        # the page holds none of its ~600 messages): all is done
        page.wait_for_function(
            f"[...document.querySelectorAll('{transcript}')].some("
            "(e) => e.dataset.old === undefined && e.dataset.agentNbEmptied === ''"
            " && e.childNodes.length === 0)",
            timeout=60_000,
        )
        back = panel.state()
        (same,) = [p for p in back["placed"] if p["id"] == seen["id"]]
        assert abs(same["top"] - seen["top"]) <= 1, (seen, same)
        assert back["fromBottom"] > 1000
        assert browser.dialogs == []
