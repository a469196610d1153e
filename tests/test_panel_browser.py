"""ChatPanel in real JupyterLab (headless Chromium): type and send, tokens arrive, Stop keeps
what was read, `%%chat` on the same session shows up in the panel, and the saved notebook
shows the conversation without a kernel. Screenshots are kept under the test's tmp dir."""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from fake_openai import Reply
from test_browser import INERT, Browser, lab  # noqa: F401 - `lab` is a fixture

pytestmark = pytest.mark.timeout(600)

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) .agent-nb-panel"
WORDS = " ".join(f"word{i}" for i in range(2000))


def panel_notebook(server) -> nbformat.NotebookNode:
    cells = [
        "from agent_nb import Agent\n"
        f"agent = Agent(provider='openai', model='m', base_url={server.url!r}, api_key='k')\n"
        "%load_ext agent_nb\n%agent agent",
        "%session panel main",
        "%%chat main\nand now from a cell",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def run_cell(browser, index: int, shots, tries: int = 1) -> None:
    """Run cell `index` from the page (click, Shift+Enter) and wait until it has run.

    With `tries`, run it again if it did not: a cell run while JupyterLab is still
    connecting to the kernel it started is dropped without a word."""
    cell = browser.cell(index)
    prompt = cell.locator(".jp-InputPrompt")
    ran = "(e) => /\\[\\d+\\]/.test(e.textContent)"
    for attempt in range(tries):
        cell.locator(".jp-InputArea-editor").click()
        browser.page.keyboard.press("Shift+Enter")
        try:
            browser.page.wait_for_function(
                ran, arg=prompt.element_handle(), timeout=60_000 if attempt == tries - 1 else 10_000
            )
            return
        except Exception:
            if attempt == tries - 1:
                browser.page.screenshot(path=str(shots / f"cell-{index}-did-not-run.png"))
                raise


def saved(path) -> str:
    return json.dumps(json.loads(path.read_text()).get("cells", []))


def test_the_panel_streams_stops_and_shares_its_session_with_chat(lab, server, tmp_path):  # noqa: F811
    server.script(Reply(text=WORDS, chunk_delay=0.05), Reply(text="**answer** from a cell"))
    path = lab.root / "panel.ipynb"
    nbformat.write(panel_notebook(server), str(path))
    with Browser() as browser:
        page = browser.page
        page.goto(f"{lab.url}/lab/tree/panel.ipynb")
        first = browser.cell(0)
        first.wait_for(timeout=120_000)
        idle = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        page.wait_for_selector(f"{idle}[data-status='idle']", timeout=120_000)
        run_cell(browser, 0, tmp_path, tries=5)  # idempotent
        run_cell(browser, 1, tmp_path)
        panel = page.locator(PANEL)
        panel.wait_for(timeout=60_000)
        prompt = panel.locator("textarea")
        prompt.click()
        prompt.type("hello ")
        prompt.press("Shift+Enter")  # a new line, not a send
        prompt.type("panel")
        assert prompt.input_value() == "hello \npanel"
        prompt.press("Enter")
        live = panel.locator(".agent-nb-panel-live")
        page.wait_for_function(  # tokens arrive, in place
            f"(document.querySelector('{PANEL} .agent-nb-panel-live') || {{}}).innerText"
            "?.includes('word20')",
            timeout=60_000,
        )
        assert prompt.input_value() == ""
        assert panel.locator(".agent-nb-panel-stop").is_enabled()
        panel.screenshot(path=str(tmp_path / "panel-streaming.png"))
        panel.locator(".agent-nb-panel-stop").click()
        live.wait_for(state="detached", timeout=60_000)
        shown = panel.locator(".agent-nb-panel-assistant").last.inner_text()
        assert panel.locator(".agent-nb-panel-error").inner_text().startswith("stopped")
        assert not panel.locator(".agent-nb-panel-stop").is_enabled()
        panel.screenshot(path=str(tmp_path / "panel-stopped.png"))

        # %%chat on the same session: the request carries what the panel kept; the panel
        # shows the cell's turn when the cell ends
        run_cell(browser, 2, tmp_path)
        page.wait_for_function(
            f"document.querySelector('{PANEL}').innerText.includes('from a cell')",
            timeout=60_000,
        )
        history = server.requests[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert history[0]["content"] == "hello \npanel"
        kept = history[1]["content"]
        assert 0 < len(kept) < len(WORDS) and WORDS.startswith(kept)
        assert kept.split()[-1] in shown.split()  # what the panel showed is what was kept
        assert panel.locator("strong", has_text="answer").count() == 1  # rendered Markdown
        panel.screenshot(path=str(tmp_path / "panel-light.png"))

        # saved: the output bundle carries the transcript next to the widget view
        page.locator(".lm-MenuBar-itemLabel").get_by_text("File", exact=True).click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Save Notebook", exact=True).click()
        deadline = time.monotonic() + 60
        while "answer</strong> from a cell" not in saved(path) and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert "answer</strong> from a cell" in saved(path)

        # Undo drops the cell's turn from the session, and so from the panel
        panel.locator(".agent-nb-panel-undo").click()
        page.wait_for_function(  # (the view is re-made as the output's transcript changes)
            f"(p => p && !p.innerText.includes('from a cell')"
            f" && p.querySelectorAll('.agent-nb-panel-message').length === 2)"
            f"(document.querySelector('{PANEL}'))",
            timeout=60_000,
        )
        assert "word20" in panel.inner_text()
        assert browser.dialogs == []

    from nbconvert import HTMLExporter

    nb = nbformat.read(str(path), as_version=4)
    view, output = nb.cells[1].outputs  # the widget, then its transcript
    assert "application/vnd.jupyter.widget-view+json" in view.data
    transcript = output.data["text/html"]
    assert "from a cell" in transcript and " ".join(kept.split()) in transcript
    page_html = tmp_path / "saved.html"
    page_html.write_text(HTMLExporter().from_notebook_node(nb)[0], encoding="utf-8")
    with Browser() as browser:
        browser.page.goto(page_html.as_uri())
        browser.page.wait_for_timeout(500)
        text = browser.page.locator("main").inner_text()
        assert "hello" in text and "answer from a cell" in text and kept.split()[-1] in text
        assert browser.page.locator("main").evaluate(INERT) == []
        browser.page.screenshot(path=str(tmp_path / "saved-without-kernel.png"))
