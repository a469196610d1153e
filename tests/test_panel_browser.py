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
    """The saved notebook's cells as JSON text ("" while the server is still writing it)."""
    try:
        return json.dumps(json.loads(path.read_text()).get("cells", []))
    except (OSError, json.JSONDecodeError):  # caught between truncating and writing
        return ""


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
            f"(p => p && !p.innerText.includes('from a cell') && p.innerText.includes('word20')"
            f" && p.querySelectorAll('.agent-nb-panel-message').length === 2)"
            f"(document.querySelector('{PANEL}'))",
            timeout=60_000,
        )
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


CONTROLS = [
    "from agent_nb import Agent, ChatPanel, Message, tool\n"
    "from agent_nb.stores import SQLiteStore\n"
    "store = SQLiteStore('chats.db')\n"
    "@tool(requires_approval=True)\n"
    "def transfer(amount: int, to: str) -> str:\n"
    "    '''Send money.'''\n"
    "    print('TRANSFERRED', amount, to)\n"
    "    return f'sent {amount} to {to}'\n"
    "agent = Agent(provider='openai', model='m', base_url={url!r}, api_key='k',\n"
    "              tools=[transfer], store=store)\n"
    "older = agent.session(session_id='older')\n"
    "older.add_message(Message.user('an older chat'))\n"
    "older.add_message(Message.assistant('from before'))",
    "panel = ChatPanel(agent.session(session_id='main'))\npanel",
]


REGENERATE = ".agent-nb-panel-regenerate"


def shot(page, path) -> None:
    """A screenshot of the panel, taken again if the output re-made the view meanwhile."""
    for attempt in range(3):
        until(page, "true")
        try:
            page.locator(PANEL).screenshot(path=str(path))
            return
        except Exception:
            if attempt == 2:
                raise


def until(page, condition: str) -> None:
    """Wait until `condition` (JavaScript on `p`, the panel) holds in a panel that shows
    the conversation and is not answering (a view the output re-makes starts empty)."""
    page.wait_for_function(
        f"(p => !!p && p.dataset.ready === '1' && !p.classList.contains('agent-nb-panel-busy')"
        f" && ({condition}))(document.querySelector('{PANEL}'))",
        timeout=60_000,
    )


def has(*texts: str, gone: tuple[str, ...] = ()) -> str:
    """A condition for `until`: the panel shows each of `texts` and none of `gone`."""
    checks = [f"p.innerText.includes({json.dumps(t)})" for t in texts]
    checks += [f"!p.innerText.includes({json.dumps(t)})" for t in gone]
    return " && ".join(checks) or "true"


def test_the_controls_regenerate_approve_deny_edit_switch_copy(lab, server, tmp_path):  # noqa: F811
    transfer = [{"name": "transfer", "arguments": {"amount": 5, "to": "Bob"}}]
    denied = [{"name": "transfer", "arguments": {"amount": 7, "to": "Bob"}}]
    server.script(
        Reply(text="first answer, with code:\n\n```python\nprint('hi')\n```"),
        Reply(text="regenerated answer"),
        Reply(tool_calls=transfer),
        Reply(text="Sent 5 to Bob."),
        Reply(tool_calls=denied),
        Reply(text="Not sent."),
        Reply(text="edited answer"),
        Reply(text=WORDS, chunk_delay=0.05),
    )
    cells = [CONTROLS[0].replace("{url!r}", repr(server.url)), CONTROLS[1]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(lab.root / "controls.ipynb"))
    with Browser() as browser:
        page = browser.page
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
        page.goto(f"{lab.url}/lab/tree/controls.ipynb?reset")  # not the last test's tabs
        browser.cell(0).wait_for(timeout=120_000)
        idle = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        page.wait_for_selector(f"{idle}[data-status='idle']", timeout=120_000)
        run_cell(browser, 0, tmp_path, tries=5)
        run_cell(browser, 1, tmp_path)
        panel = page.locator(PANEL)
        panel.wait_for(timeout=60_000)
        prompt = panel.locator("textarea")

        def send(text: str) -> None:
            prompt.fill(text)
            prompt.press("Enter")

        send("first question")
        until(page, has("first answer") + " && !!p.querySelector('.agent-nb-panel-copy-code')")

        # copy a code block (the Clipboard API), then a message (the API refused: fallback)
        panel.locator(".agent-nb-panel-copy-code").click()
        page.wait_for_function("navigator.clipboard.readText().then(t => t === \"print('hi')\")")
        page.evaluate(
            "() => { navigator.clipboard.writeText = () => Promise.reject(new Error('no')); }"
        )
        answer = panel.locator(".agent-nb-panel-assistant").last
        copy = answer.locator("[data-action=copy]")
        copy.click()
        page.wait_for_function(
            f"document.querySelector('{PANEL} .agent-nb-panel-assistant [data-copied]')"
        )
        if copy.get_attribute("data-copied") == "copied":  # execCommand("copy") worked
            text = page.evaluate("navigator.clipboard.readText()")
        else:  # the text is selected for Ctrl+C
            text = page.evaluate("String(window.getSelection())")
        assert text.startswith("first answer, with code:") and "print('hi')" in text
        assert "Copy" not in text  # the code block's button is not part of the message
        shot(page, tmp_path / "controls-copy.png")

        # regenerate: a new answer; the old one is kept as a branch
        answer.locator("[data-action=regenerate]").click()
        branches = ".agent-nb-panel-branches"
        until(
            page,
            has("regenerated answer", gone=("first answer",))
            + f" && p.querySelector('{branches}').options.length === 2"
            + f" && p.querySelector('{branches}').value === 'main'",
        )
        branches = panel.locator(branches)
        # only the last answer offers Regenerate; ↑ in the empty input recalls the last prompt
        until(
            page, f"[...p.querySelectorAll('{REGENERATE}')].filter(b => b.offsetParent).length == 1"
        )
        prompt.click()
        prompt.press("ArrowUp")
        until(page, "p.querySelector('textarea').value === 'first question'")
        prompt.fill("")
        shot(page, tmp_path / "controls-regenerated.png")

        # approve a tool call, from the keyboard: it runs, the model answers
        send("pay Bob 5")
        until(page, has("needs your approval") + " && !!p.querySelector('[data-action=approve]')")
        shot(page, tmp_path / "controls-approval.png")
        approve = panel.locator(".agent-nb-panel-approval button[data-action=approve]")
        approve.press("Enter")  # from the keyboard: the focused button
        until(page, has("Sent 5 to Bob.") + " && !p.querySelector('[data-action=approve]')")
        until(page, "p.querySelector('.agent-nb-panel-tool-done').textContent.includes('sent 5')")

        # deny one: nothing runs, the model is told
        send("pay Bob 7")
        until(page, "!!p.querySelector('[data-action=deny]')")
        panel.locator(".agent-nb-panel-approval button[data-action=deny]").click()
        until(page, has("Not sent."))
        told = [m for m in server.requests[-1]["messages"] if m["role"] == "tool"]
        assert "did not approve" in told[-1]["content"]
        until(page, "p.querySelectorAll('.agent-nb-panel-tool-error').length === 1")  # denied
        shot(page, tmp_path / "controls-denied.png")

        # undo the denied turn
        panel.locator(".agent-nb-panel-undo").click()
        until(page, has("Sent 5 to Bob.", gone=("Not sent.",)))

        # keyboard: Tab goes from the input to Send; Escape cancels an edit
        prompt.focus()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Send"
        edit = panel.locator(".agent-nb-panel-user").first.locator("[data-action=edit]")
        edit.press("Enter")
        until(page, "p.querySelector('textarea').value === 'first question'")
        assert page.evaluate("document.activeElement.tagName") == "TEXTAREA"
        page.keyboard.press("Escape")
        until(page, "p.querySelector('.agent-nb-panel-editing').hidden")
        assert prompt.input_value() == ""

        # edit the first prompt: the conversation forks there, in branch main~2
        edit.click()
        until(page, "p.querySelector('textarea').value === 'first question'")
        until(page, "!p.querySelector('.agent-nb-panel-editing').hidden")
        send("edited question")
        until(
            page,
            has("edited answer", gone=("Sent 5 to Bob.",))
            + " && p.querySelector('.agent-nb-panel-branches').value === 'main~2'"
            + " && p.querySelector('.agent-nb-panel-branches').options.length === 3",
        )
        until(page, "p.querySelector('.agent-nb-panel-editing').hidden")
        assert server.requests[-1]["messages"] == [{"role": "user", "content": "edited question"}]
        shot(page, tmp_path / "controls-edited-branch.png")

        # the branch switcher goes back to main, whole
        branches.select_option("main")
        until(page, has("Sent 5 to Bob.", "regenerated answer", gone=("edited answer",)))
        shot(page, tmp_path / "controls-branch-main.png")

        # the session switcher: the store's sessions, with their titles; a new session
        sessions = panel.locator(".agent-nb-panel-sessions")
        until(page, "p.querySelector('.agent-nb-panel-sessions').innerText.includes('older chat')")
        sessions.select_option("older")
        until(page, has("from before", gone=("regenerated answer",)))
        panel.locator(".agent-nb-panel-new").click()
        until(page, "p.querySelectorAll('.agent-nb-panel-message').length === 0")
        shot(page, tmp_path / "controls-new-session.png")

        # Escape stops the answer streaming; the footer says which model answered
        send("a long one")
        page.wait_for_function(
            f"(document.querySelector('{PANEL} .agent-nb-panel-live') || {{}}).innerText"
            "?.includes('word20')",
            timeout=60_000,
        )
        prompt.press("Escape")
        until(
            page,
            "(p.querySelector('.agent-nb-panel-error') || {}).innerText?.startsWith('stopped')"
            " && p.querySelector('.agent-nb-panel-status code').innerText === 'm'",
        )
        shot(page, tmp_path / "controls-stopped.png")

        # the colours are JupyterLab's theme: dark in JupyterLab Dark
        background = "getComputedStyle(document.querySelector('{}')).backgroundColor"
        light = page.evaluate(background.format(PANEL))
        page.locator(".lm-MenuBar-itemLabel").get_by_text("Settings", exact=True).click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Theme", exact=True).hover()
        page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
        page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Dark'")
        sessions.select_option("main")
        until(page, has("Sent 5 to Bob."))
        dark = page.evaluate(background.format(PANEL))
        channels = [int(c) for c in dark[dark.index("(") + 1 : dark.index(")")].split(",")[:3]]
        assert dark != light and sum(channels) < 3 * 80, (light, dark)
        shot(page, tmp_path / "controls-dark.png")
        assert browser.dialogs == []
