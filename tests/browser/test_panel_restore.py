"""ChatPanel in a real browser (headless Chromium): after a kernel restart its cell run again
shows the same conversation (JupyterLab); it opens, streams and stops in Notebook 7; its
text reads in JupyterLab's dark theme (colours from the theme, contrast measured).

Screenshots are kept under the test's tmp dir and copied to test-artifacts/ (conftest.py);
the dark and light theme test also writes docs/img/panel.png and docs/img/panel-dark.png:
the docs' pictures are the panel as it is, never older.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from fake_openai import Reply
from nbformat.sign import NotebookNotary
from test_browser import Browser, lab  # noqa: F401 - `lab` is a fixture
from test_panel_browser import WORDS, accept_kernel_dialog, choose_theme, open_notebook, run_cell

pytestmark = pytest.mark.timeout(600)

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"
PANEL = f"{VISIBLE} .agent-nb-panel"
ANSWER = """Here is how to read a CSV file:

```python
import pandas as pd

df = pd.read_csv("sales.csv")
print(df.describe())
```

- `read_csv` guesses the column types
- `describe()` gives **count, mean, std** and the quartiles
"""


def notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))


def setup(server) -> str:
    """The first cell: an agent on the loopback server; it prints the kernel's pid."""
    return (
        "import os\nfrom agent_nb import Agent, ChatPanel\n"
        f"agent = Agent(provider='openai', model='gpt-4o-mini', base_url={server.url!r},"
        " api_key='k')\n"
        "print(os.getpid())"
    )


def send(panel, text: str) -> None:
    prompt = panel.locator("textarea")
    prompt.click()
    prompt.type(text)
    prompt.press("Enter")


def wait_for_text(page, text: str, selector: str = PANEL) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s) || {innerText: ''}).innerText.includes(t)",
        arg=[selector, text],
        timeout=60_000,
    )


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel").get_by_text(top, exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def settled(page) -> None:
    """The turn has ended and its view is the one that stays (the output's transcript is
    refreshed after a turn, and JupyterLab makes the view again)."""
    page.locator(f"{PANEL} .agent-nb-panel-footer").wait_for(timeout=60_000)
    page.wait_for_timeout(1_000)
    page.locator(f"{PANEL} .agent-nb-panel-footer").wait_for(timeout=60_000)


def save(page, path: Path, until: str) -> None:
    """File > Save Notebook, and wait until the file on disk holds `until`."""
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + 60
    while until not in path.read_text() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert until in path.read_text(), "the notebook was not saved"


def emptied(transcript) -> bool:
    """Whether the transcript's output holds none of its nodes in the page."""
    return transcript.evaluate("(e) => e.childNodes.length === 0 && e.offsetParent === null")


def test_a_kernel_restart_then_the_panels_cell_run_again_shows_the_same_conversation(
    lab,  # noqa: F811
    server,
    tmp_path,
):
    server.script(Reply(text="I will remember **Lyon**."), Reply(text="You live in Lyon."))
    path = lab.root / "restart.ipynb"
    notebook(path, setup(server), "panel = ChatPanel(agent)\npanel", "panel.close()")
    with Browser() as browser:
        page = browser.page
        open_notebook(browser, f"{lab.url}/lab/tree/restart.ipynb?reset", tmp_path)
        run_cell(browser, 0, tmp_path, tries=5)
        pid = browser.cell(0).locator(".jp-OutputArea-output").inner_text().strip()
        run_cell(browser, 1, tmp_path)
        panel = page.locator(PANEL)
        send(panel, "I live in Lyon")
        wait_for_text(page, "I will remember")
        settled(page)
        before = panel.locator(".agent-nb-panel-message").all_inner_texts()
        # its transcript, the output after it, is there but hidden and emptied while the
        # panel is live: the page holds only the panel's nodes (the file holds the text)
        fallback = browser.cell(1).locator("[data-agent-nb-fallback]")
        fallback.wait_for(state="attached")
        assert fallback.is_hidden() and panel.is_visible()
        assert emptied(fallback)
        panel.screenshot(path=str(tmp_path / "before-restart.png"))
        save(page, path, "I will remember")

        menu(page, "Kernel", "Restart Kernel…")
        page.locator(".jp-Dialog button", has_text="Restart").click()
        for _ in range(10):  # until the new kernel has run it (one connecting drops a cell)
            run_cell(browser, 0, tmp_path, tries=3)
            try:
                page.wait_for_function(
                    "([cell, pid]) => { const t = cell.innerText.trim().split('\\n').at(-1);"
                    " return /^\\d+$/.test(t) && t !== pid; }",
                    arg=[browser.cell(0).element_handle(), pid],
                    timeout=10_000,
                )
                break
            except Exception:
                accept_kernel_dialog(page)  # (a slow restart: JupyterLab asks which kernel)
                continue
        panel.evaluate("(e) => { e.dataset.old = 'yes'; }")
        run_cell(browser, 1, tmp_path)
        page.wait_for_selector(f"{PANEL}:not([data-old])", timeout=60_000)
        page.wait_for_function(  # the conversation, once its view has been sent it
            "(s) => document.querySelectorAll(s).length === 2",
            arg=f"{PANEL} .agent-nb-panel-message",
            timeout=60_000,
        )
        page.wait_for_timeout(1_000)
        after = page.locator(PANEL).locator(".agent-nb-panel-message").all_inner_texts()
        assert after == before and "Lyon" in before[1]
        page.locator(PANEL).screenshot(path=str(tmp_path / "after-restart.png"))
        # the same session, not only its picture: the next prompt carries the conversation
        send(page.locator(PANEL), "Where do I live?")
        wait_for_text(page, "You live in Lyon")
        settled(page)
        save(page, path, "You live in Lyon")  # the transcript is refreshed after each turn
        assert emptied(browser.cell(1).locator("[data-agent-nb-fallback]"))  # the new one too
        # closed, the panel's views go and its transcript shows in their place
        run_cell(browser, 2, tmp_path)
        page.locator(PANEL).wait_for(state="detached", timeout=60_000)
        shown = browser.cell(1).locator("[data-agent-nb-fallback]")
        shown.wait_for(state="visible", timeout=60_000)
        assert "You live in Lyon" in shown.inner_text()
        assert browser.dialogs == []
    history = server.requests[-1]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "I live in Lyon",
        "Where do I live?",
    ]

    # the saved notebook opened with no kernel: the transcript, where the widget cannot be
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata = {}  # no kernel named: JupyterLab asks which, and the test says "No Kernel"
    NotebookNotary(data_dir=str(lab.data)).sign(nb)  # trusted, as the user's own notebook is
    nbformat.write(nb, str(lab.root / "no-kernel.ipynb"))
    with Browser() as browser:
        page = browser.page
        page.goto(f"{lab.url}/lab/tree/no-kernel.ipynb?reset")
        page.locator(".jp-Dialog button", has_text="No Kernel").click(timeout=120_000)
        transcript = browser.cell(1).locator("[data-agent-nb-fallback]")
        transcript.wait_for(timeout=60_000)
        page.wait_for_timeout(2_000)  # the widget's output has given up or is still waiting
        assert transcript.is_visible()
        text = transcript.inner_text()
        assert "I live in Lyon" in text and "I will remember Lyon" in text
        assert "You live in Lyon" in text  # the latest turn: refreshed after every turn
        assert browser.cell(1).locator(".agent-nb-panel").count() == 0
        browser.cell(1).screenshot(path=str(tmp_path / "no-kernel.png"))


def test_notebook_7_opens_a_panel_that_streams_and_stops(lab, server, tmp_path):  # noqa: F811
    server.script(Reply(text=WORDS, chunk_delay=0.05))
    notebook(
        lab.root / "seven.ipynb",
        setup(server),
        "panel = ChatPanel(agent)\npanel",
        "kept = panel.session.messages\n"
        "print(len(kept), kept[-1].metadata.get('interrupted'), len(kept[-1].text))",
    )
    with Browser() as browser:
        page = browser.page
        open_notebook(browser, f"{lab.url}/notebooks/seven.ipynb", tmp_path)
        assert "/notebooks/" in page.url and page.locator(".jp-LabShell").count() == 0
        run_cell(browser, 0, tmp_path, tries=5)
        run_cell(browser, 1, tmp_path)
        panel = page.locator(PANEL)
        panel.wait_for(timeout=60_000)
        send(panel, "write a lot")
        wait_for_text(page, "word20", f"{PANEL} .agent-nb-panel-live")  # tokens, in place
        assert panel.locator(".agent-nb-panel-stop").is_enabled()
        panel.screenshot(path=str(tmp_path / "notebook7-streaming.png"))
        panel.locator(".agent-nb-panel-stop").click()
        panel.locator(".agent-nb-panel-live").wait_for(state="detached", timeout=60_000)
        assert panel.locator(".agent-nb-panel-error").inner_text().startswith("stopped")
        shown = panel.locator(".agent-nb-panel-assistant").last.inner_text()
        page.screenshot(path=str(tmp_path / "notebook7-stopped.png"))
        run_cell(browser, 2, tmp_path)
        printed = browser.cell(2).locator(".jp-OutputArea-output").inner_text()
        count, interrupted, length = printed.split()
        assert browser.dialogs == []
    assert (count, interrupted) == ("2", "True")
    assert 0 < int(length) < len(WORDS)
    assert shown.split()[-1] in WORDS.split()
    assert len(server.requests) == 1


#: The panel's text and what it is drawn on: (what, WCAG contrast ratio, its colour, ground).
CONTRASTS = """(panel) => {
  const rgba = (c) => {
    const v = c.match(/[\\d.]+/g).map(Number);
    return v.length === 3 ? [...v, 1] : v;
  };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3]));
  const ground = (e) => {
    const layers = [];
    for (let n = e; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] === 1) break;
    }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255]);
  };
  const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const lum = (c) => 0.2126 * linear(c[0]) + 0.7152 * linear(c[1]) + 0.0722 * linear(c[2]);
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const checks = {
    "user text": ".agent-nb-panel-user .agent-nb-panel-body p",
    "answer text": ".agent-nb-panel-assistant .agent-nb-panel-body p",
    "answer list": ".agent-nb-panel-assistant .agent-nb-panel-body li",
    "role": ".agent-nb-panel-role",
    "footer": ".agent-nb-panel-footer",
    "prompt": ".agent-nb-panel-prompt",
    "send button": ".agent-nb-panel-send",
  };
  const found = {};
  for (const [what, selector] of Object.entries(checks)) {
    const e = panel.querySelector(selector);
    if (!e) { found[what] = null; continue; }
    const bg = ground(e);
    const fg = over(rgba(getComputedStyle(e).color), bg);
    found[what] = [Math.round(ratio(fg, bg) * 100) / 100, fg.map(Math.round), bg.map(Math.round)];
  }
  found.panel = ground(panel).map(Math.round);
  return found;
}"""


def theme(page, name: str) -> None:
    choose_theme(page, name)
    page.wait_for_timeout(1_000)  # the theme's stylesheet applied


def test_the_panel_reads_in_the_light_and_dark_themes(lab, server, tmp_path):  # noqa: F811
    usage = {"prompt_tokens": 1_250, "completion_tokens": 320, "total_tokens": 1_570}
    server.script(Reply(text=ANSWER, usage=usage))  # the docs' picture: a footer with a cost
    notebook(  # (a session with a name: the docs' picture shows it)
        lab.root / "themes.ipynb",
        setup(server),
        "panel = ChatPanel(agent.session(session_id='pandas-help'))\npanel",
    )
    with Browser() as browser:
        page = browser.page
        open_notebook(browser, f"{lab.url}/lab/tree/themes.ipynb?reset", tmp_path)
        page.set_viewport_size({"width": 900, "height": 900})  # (narrow: the toolbar folds)
        run_cell(browser, 0, tmp_path, tries=5)
        run_cell(browser, 1, tmp_path)
        panel = page.locator(PANEL)
        send(panel, "How do I read a CSV file with pandas?")
        settled(page)
        panel.locator("textarea").fill("And an Excel file?")  # a draft in the box, unsent
        page.mouse.click(5, 5)
        footer = panel.locator(".agent-nb-panel-footer").inner_text()
        # gpt-4o-mini at $0.15 and $0.60 per million input and output tokens
        assert "$0.00038" in footer and "session spent $0.00038" in footer, footer
        light = panel.evaluate(CONTRASTS)
        shots = [(tmp_path / "panel.png", tmp_path / "panel-dark.png")]
        shots.append((DOCS_IMG / "panel.png", DOCS_IMG / "panel-dark.png"))  # the docs
        for shot, _ in shots:
            panel.screenshot(path=str(shot))
        theme(page, "JupyterLab Dark")
        dark = page.locator(PANEL).evaluate(CONTRASTS)
        for _, shot in shots:
            page.locator(PANEL).screenshot(path=str(shot))
        assert browser.dialogs == []
    (tmp_path / "contrast.json").write_text(json.dumps({"light": light, "dark": dark}, indent=1))
    assert sum(light["panel"]) > 600 and sum(dark["panel"]) < 200, (light, dark)  # it changed
    for case in (light, dark):
        for what, found in case.items():
            if what == "panel":
                continue
            assert found is not None, (what, case)
            assert found[0] >= 4.5, (what, found, case)  # WCAG AA for text


def test_one_panel_in_two_cells_hides_both_transcripts_and_close_shows_both(
    lab,  # noqa: F811
    server,
    tmp_path,
):
    server.script(Reply(text="I will remember **Lyon**."))
    path = lab.root / "two-views.ipynb"
    cells = [setup(server), "panel = ChatPanel(agent)\npanel", "panel", "panel.close()", "panel"]
    notebook(path, *cells)
    with Browser() as browser:
        page = browser.page
        open_notebook(browser, f"{lab.url}/lab/tree/two-views.ipynb?reset", tmp_path)
        run_cell(browser, 0, tmp_path, tries=5)
        run_cell(browser, 1, tmp_path)
        run_cell(browser, 2, tmp_path)
        page.wait_for_function("(s) => document.querySelectorAll(s).length === 2", arg=PANEL)
        transcripts = page.locator(f"{VISIBLE} [data-agent-nb-fallback]")
        page.wait_for_function(  # both views' transcripts, emptied and hidden
            "(s) => { const t = [...document.querySelectorAll(s)];"
            " return t.length === 2 && t.every((e) => !e.childNodes.length && !e.offsetParent); }",
            arg=f"{VISIBLE} [data-agent-nb-fallback]",
            timeout=60_000,
        )
        transcripts.evaluate_all("(t) => t.forEach((e) => { e.dataset.old = 'yes'; })")
        send(page.locator(PANEL).first, "I live in Lyon")
        wait_for_text(page, "I will remember")
        page.wait_for_function(  # refreshed after the turn (new nodes), emptied again
            "(s) => { const t = [...document.querySelectorAll(s)];"
            " return t.length === 2 && t.every((e) => !e.childNodes.length && !e.offsetParent); }",
            arg=f"{VISIBLE} [data-agent-nb-fallback]:not([data-old])",
            timeout=60_000,
        )
        run_cell(browser, 3, tmp_path)  # closed: both transcripts show, with the turn
        page.locator(PANEL).first.wait_for(state="detached", timeout=60_000)
        for index in (1, 2):
            shown = browser.cell(index).locator("[data-agent-nb-fallback]")
            shown.wait_for(state="visible", timeout=60_000)
            page.wait_for_function(
                "(e) => e.innerText.includes('I will remember Lyon')",
                arg=shown.element_handle(),
                timeout=60_000,
            )
        run_cell(browser, 4, tmp_path)  # displayed again once closed: its transcript
        again = browser.cell(4).locator(".jp-OutputArea")
        page.wait_for_function(
            "(e) => e.innerText.includes('I will remember Lyon')",
            arg=again.element_handle(),
            timeout=60_000,
        )
        assert "Error" not in again.inner_text()
        save(page, path, "I will remember")
        assert browser.dialogs == []
    nb = nbformat.read(str(path), as_version=4)
    for index in (1, 2):  # the saved file keeps each whole transcript
        html = "".join(o.get("data", {}).get("text/html", "") for o in nb.cells[index].outputs)
        assert "I live in Lyon" in html and "Lyon</strong>" in html


def test_the_transcript_stands_in_while_the_kernel_cannot_answer_the_panel(
    lab,  # noqa: F811
    server,
    tmp_path,
):
    # The cell goes on running after the panel shows: its view's hello waits till the cell
    # ends, so the view has nothing to show; after STAND_IN_MS (panel.js) the transcript does.
    path = lab.root / "busy.ipynb"
    cells = [
        setup(server),
        "session = agent.session()\nsession.run('hello')\npanel = ChatPanel(session)\n"
        "display(panel)\nimport time\ntime.sleep(12)",
    ]
    server.script(Reply(text="the answer before the panel"))
    notebook(path, *cells)
    with Browser() as browser:
        page = browser.page
        open_notebook(browser, f"{lab.url}/lab/tree/busy.ipynb?reset", tmp_path)
        run_cell(browser, 0, tmp_path, tries=5)
        browser.cell(1).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        page.locator(PANEL).wait_for(timeout=60_000)  # the view, with nothing from the kernel
        transcript = browser.cell(1).locator("[data-agent-nb-fallback]")
        assert browser.cell(1).locator(".agent-nb-panel-message").count() == 0
        transcript.wait_for(state="visible", timeout=20_000)  # it stands in
        assert "the answer before the panel" in transcript.inner_text()
        assert browser.cell(1).locator(".agent-nb-panel-message").count() == 0
        browser.cell(1).screenshot(path=str(tmp_path / "stand-in.png"))
        # the cell ends, the kernel answers: the panel shows it and the transcript goes
        wait_for_text(page, "the answer before the panel")
        page.wait_for_function(  # (by selector: a refresh would replace the node)
            "(cell) => { const t = cell.querySelector('[data-agent-nb-fallback]');"
            " return t && !t.childNodes.length && !t.offsetParent; }",
            arg=browser.cell(1).element_handle(),
            timeout=60_000,
        )
        browser.cell(1).screenshot(path=str(tmp_path / "answered.png"))
        assert browser.dialogs == []
