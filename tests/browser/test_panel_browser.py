"""ChatPanel in real JupyterLab (headless Chromium): type and send, tokens arrive, Stop keeps
what was read, `%%chat` on the same session shows up in the panel, and the saved notebook
shows the conversation without a kernel. Then every control, one walk through them all, the
same in JupyterLab and in Notebook 7: copy, regenerate, ↑, approve and deny, `%%chat` and the
panel on one session, undo, the keyboard, an edit and the branch switcher, the session
switcher and a new session, Escape, the dark theme. Screenshots are kept under the test's
tmp dir."""

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
        f"agent = Agent(provider='openai', model='m', base_url={server.url!r}, api_key='k',\n"
        "              context_window=100_000)\n"  # the footers' gauge: "N% of 100k"
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


def accept_kernel_dialog(page) -> bool:
    """JupyterLab's "Select Kernel" dialog, which it shows when a kernel was slow to start or
    restart (a loaded machine): keep the notebook's kernel. Whether there was one."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count() == 0:
        return False
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached", timeout=30_000)
    return True


def run_cell(browser, index: int, shots, tries: int = 1) -> None:
    """Run cell `index` from the page (click, Shift+Enter) and wait until it has run.

    With `tries`, run it again if it did not: a cell run while JupyterLab is still
    connecting to the kernel it started is dropped without a word. A "Select Kernel" dialog
    in the way is answered (the notebook's kernel) and the cell run again, once more."""
    cell = browser.cell(index)
    prompt = cell.locator(".jp-InputPrompt")
    ran = "(e) => /\\[\\d+\\]/.test(e.textContent)"
    attempt = answered = 0
    while attempt < tries:
        attempt += 1
        if answered < 3 and accept_kernel_dialog(browser.page):
            answered, tries = answered + 1, tries + 1  # a try the dialog took
        try:
            cell.locator(".jp-InputArea-editor").click()
            browser.page.keyboard.press("Shift+Enter")
            browser.page.wait_for_function(
                ran, arg=prompt.element_handle(), timeout=60_000 if attempt == tries else 10_000
            )
            return
        except Exception as exc:
            if answered < 3 and accept_kernel_dialog(browser.page):
                answered, tries = answered + 1, tries + 1
            elif attempt == tries:
                browser.page.screenshot(path=str(shots / f"cell-{index}-did-not-run.png"))
                dialogs = browser.page.locator(".jp-Dialog").all_inner_texts()
                raise AssertionError(f"cell {index} did not run; dialogs: {dialogs}") from exc


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
            f"document.querySelector('{PANEL}')?.innerText.includes('from a cell')",
            timeout=60_000,
        )
        history = server.requests[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert history[0]["content"] == "hello \npanel"
        kept = history[1]["content"]
        assert 0 < len(kept) < len(WORDS) and WORDS.startswith(kept)
        assert kept.split()[-1] in shown.split()  # what the panel showed is what was kept
        assert panel.locator("strong", has_text="answer").count() == 1  # rendered Markdown
        footer = f"{PANEL} .agent-nb-panel-footer"  # the context window's gauge, as the cell's
        page.wait_for_function(
            f"document.querySelector('{footer}')?.innerText.includes('% of 100k')",
            timeout=60_000,
        )
        assert "context " in page.locator(footer).inner_text()
        assert "% of 100k" in browser.cell(2).locator(".jp-OutputArea").inner_text()
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


#: Where each front end opens a notebook (JupyterLab: `?reset`, not the last test's tabs).
FRONT_ENDS = {"jupyterlab": "lab/tree/{}?reset", "notebook7": "notebooks/{}"}

CONTROLS = [
    "from agent_nb import Agent, Message, tool\n"
    "from agent_nb.stores import SQLiteStore\n"
    "store = SQLiteStore({db!r})\n"
    "@tool(requires_approval=True)\n"
    "def transfer(amount: int, to: str) -> str:\n"
    "    '''Send money.'''\n"
    "    print('TRANSFERRED', amount, to)\n"
    "    return f'sent {amount} to {to}'\n"
    "agent = Agent(provider='openai', model='m', base_url={url!r}, api_key='k',\n"
    "              tools=[transfer], store=store)\n"
    "older = agent.session(session_id='older')\n"
    "older.add_message(Message.user('an older chat'))\n"
    "older.add_message(Message.assistant('from before'))\n"
    "%load_ext agent_nb\n%agent agent",
    "%session panel main",  # the session `%%chat main` talks in
    "%%chat main\nand now from a cell",
]


REGENERATE = ".agent-nb-panel-regenerate"


def open_notebook(browser, url: str, shots) -> None:
    """Open `url` and wait until its notebook is shown and its kernel has started."""
    browser.page.goto(url)
    try:
        browser.cell(0).wait_for(timeout=120_000)
        browser.page.wait_for_selector(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
            "[data-status='idle']",
            state="attached",  # (Notebook 7 has it, not shown)
            timeout=120_000,
        )
    except Exception:
        browser.page.screenshot(path=str(shots / "did-not-open.png"))
        raise


def choose_theme(page, name: str) -> None:
    """Settings > Theme > `name`, and wait until it is the page's theme."""
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Settings", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Theme", exact=True).hover()
    page.locator(".lm-Menu-itemLabel").get_by_text(name, exact=True).click()
    page.wait_for_function(f"document.body.dataset.jpThemeName === {json.dumps(name)}")


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
    the conversation and is not answering: ready (a view the output re-makes starts
    empty), not busy, and the turn's messages in the log (the answer that streamed in is
    dropped when they come, a moment after `busy` goes). An element the condition reads
    that is not there yet (a TypeError on null) means not yet."""
    page.wait_for_function(
        f"(p => {{ try {{ return !!p && p.dataset.ready === '1'"
        f" && !p.classList.contains('agent-nb-panel-busy')"
        f" && !p.querySelector('.agent-nb-panel-provisional') && ({condition}); }}"
        f" catch (e) {{ if (e instanceof TypeError) return false; throw e; }} }})"
        f"(document.querySelector('{PANEL}'))",
        timeout=60_000,
    )


def has(*texts: str, gone: tuple[str, ...] = ()) -> str:
    """A condition for `until`: the panel shows each of `texts` and none of `gone`."""
    checks = [f"p.innerText.includes({json.dumps(t)})" for t in texts]
    checks += [f"!p.innerText.includes({json.dumps(t)})" for t in gone]
    return " && ".join(checks) or "true"


class Controls:
    """The controls notebook open in `front_end`, its panel shown on session main."""

    def __init__(self, browser, lab, server, front_end: str, shots) -> None:  # noqa: F811
        name = f"controls-{front_end}.ipynb"  # a kernel and a store of its own
        setup = CONTROLS[0].replace("{db!r}", repr(f"chats-{front_end}.db"))
        cells = [setup.replace("{url!r}", repr(server.url)), *CONTROLS[1:]]
        nb = panel_notebook(server)  # (its kernelspec)
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
        nbformat.write(nb, str(lab.root / name))
        self.browser, self.page, self.server, self.shots = browser, browser.page, server, shots
        self.front_end = front_end
        self.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
        open_notebook(browser, f"{lab.url}/{FRONT_ENDS[front_end].format(name)}", shots)
        in_lab = self.page.locator(".jp-LabShell").count() == 1
        assert in_lab == (front_end == "jupyterlab"), self.page.url
        run_cell(browser, 0, shots, tries=5)
        run_cell(browser, 1, shots)
        self.panel = self.page.locator(PANEL)
        self.panel.wait_for(timeout=60_000)
        self.prompt = self.panel.locator("textarea")
        self.branches = self.panel.locator(".agent-nb-panel-branches")
        self.sessions = self.panel.locator(".agent-nb-panel-sessions")

    def send(self, text: str) -> None:
        self.prompt.fill(text)
        self.prompt.press("Enter")

    def until(self, condition: str) -> None:
        until(self.page, condition)

    def shot(self, name: str) -> None:
        shot(self.page, self.shots / f"{self.front_end}-{name}.png")


#: A condition for `until`: the header names session `{}`, and Undo is {} (the controls
#: come a moment after the conversation).
SHOWS = (
    "p.querySelector('.agent-nb-panel-current').innerText === {}"
    " && p.querySelector('.agent-nb-panel-undo').disabled === {}"
)
#: The panel's header: the session's id; Undo: whether it can be pressed.
HEADER = (
    "(p => ({id: p.querySelector('.agent-nb-panel-current').innerText,"
    " undo: !p.querySelector('.agent-nb-panel-undo').disabled}))"
    f"(document.querySelector('{PANEL}'))"
)


def copy_a_code_block_and_a_message(c: Controls) -> None:
    """A code block through the Clipboard API; a message with the API refused (fallback).
    Before it, the header names the empty session and Undo has nothing to drop; code blocks
    stand out from the text around them."""
    c.until(SHOWS.format("'main'", "true"))  # an empty session: nothing to undo
    c.send("first question")
    c.until(has("first answer") + " && !!p.querySelector('.agent-nb-panel-copy-code')")
    c.until(SHOWS.format("'main'", "false"))
    colours = c.page.evaluate(
        "(p => [p.querySelector('.agent-nb-panel-code pre'),"
        " p.querySelector('.agent-nb-panel-log')].map(e => getComputedStyle(e).backgroundColor))"
        f"(document.querySelector('{PANEL}'))"
    )
    assert colours[0] not in ("rgba(0, 0, 0, 0)", "transparent", colours[1]), colours
    c.panel.locator(".agent-nb-panel-copy-code").click()
    c.page.wait_for_function("navigator.clipboard.readText().then(t => t === \"print('hi')\")")
    c.page.evaluate(
        "() => { navigator.clipboard.writeText = () => Promise.reject(new Error('no')); }"
    )
    c.panel.locator(".agent-nb-panel-assistant").last.locator("[data-action=copy]").click()
    copied = c.page.wait_for_function(  # what the message's Copy did (it says so for 2 s)
        f"document.querySelector('{PANEL} .agent-nb-panel-assistant"
        " [data-action=copy][data-copied]')?.dataset.copied"
    ).json_value()
    if copied == "copied":  # execCommand("copy") worked
        text = c.page.evaluate("navigator.clipboard.readText()")
    else:  # the text is selected for Ctrl+C
        text = c.page.evaluate("String(window.getSelection())")
    assert text.startswith("first answer, with code:") and "print('hi')" in text
    assert "Copy" not in text  # the code block's button is not part of the message
    c.shot("copy")


def regenerate_then_recall_the_prompt(c: Controls) -> None:
    """Regenerate: a new answer, the old one kept as a branch; ↑ recalls the last prompt."""
    c.panel.locator(".agent-nb-panel-assistant").last.locator("[data-action=regenerate]").click()
    branches = ".agent-nb-panel-branches"
    c.until(
        has("regenerated answer", gone=("first answer",))
        + f" && p.querySelector('{branches}').options.length === 2"
        + f" && p.querySelector('{branches}').value === 'main'",
    )
    # only the last answer offers Regenerate; ↑ in the empty input recalls the last prompt
    c.until(f"[...p.querySelectorAll('{REGENERATE}')].filter(b => b.offsetParent).length == 1")
    c.prompt.click()
    c.prompt.press("ArrowUp")
    c.until("p.querySelector('textarea').value === 'first question'")
    c.prompt.fill("")
    c.shot("regenerated")


def approve_one_call_and_deny_another(c: Controls) -> None:
    """Approved from the keyboard, the call runs and the model answers; denied, nothing
    runs and the model is told."""
    c.send("pay Bob 5")
    c.until(has("needs your approval") + " && !!p.querySelector('[data-action=approve]')")
    c.shot("approval")
    approve = c.panel.locator(".agent-nb-panel-approval button[data-action=approve]")
    approve.press("Enter")  # from the keyboard: the focused button
    c.until(has("Sent 5 to Bob.") + " && !p.querySelector('[data-action=approve]')")
    c.until("p.querySelector('.agent-nb-panel-tool-done').textContent.includes('sent 5')")

    c.send("pay Bob 7")
    c.until("!!p.querySelector('[data-action=deny]')")
    c.panel.locator(".agent-nb-panel-approval button[data-action=deny]").click()
    c.until(has("Not sent."))
    told = [m for m in c.server.requests[-1]["messages"] if m["role"] == "tool"]
    assert "did not approve" in told[-1]["content"]
    c.until("p.querySelectorAll('.agent-nb-panel-tool-error').length === 1")  # denied
    c.shot("denied")


def always_allow_runs_the_tool_without_asking_again(c: Controls) -> None:
    """Always allow: the call runs, and the tool's next call in the session is not asked
    about; the session records the choice."""
    c.send("pay Bob 9")
    c.until(has("needs your approval") + " && !!p.querySelector('[data-action=always]')")
    c.panel.locator(".agent-nb-panel-approval button[data-action=always]").click()
    c.until(has("Sent 9 to Bob.") + " && !p.querySelector('[data-action=always]')")
    asked = len(c.server.requests)
    c.send("pay Bob 3")
    c.until(has("Sent 3 to Bob."))
    assert len(c.server.requests) == asked + 2  # the call and the answer: nobody was asked
    told = [m for m in c.server.requests[-1]["messages"] if m["role"] == "tool"]
    assert "sent 3" in told[-1]["content"], told
    assert c.panel.locator("[data-action=approve]").count() == 0
    c.shot("always-allowed")


def a_chat_cell_and_the_panel_share_the_session(c: Controls) -> None:
    """`%%chat main` is sent the panel's turns, the panel shows the cell's; Undo drops
    the cell's turn, then the denied one."""
    run_cell(c.browser, 2, c.shots)
    c.until(has("answer from a cell"))
    history = c.server.requests[-1]["messages"]
    asked = [m["content"] for m in history if m["role"] == "user"]
    assert asked == ["first question", "pay Bob 5", "pay Bob 7", "and now from a cell"]
    answers = [m["content"] for m in history if m["role"] == "assistant" and m.get("content")]
    assert answers == ["regenerated answer", "Sent 5 to Bob.", "Not sent."]
    assert c.panel.locator("strong", has_text="answer").count() == 1  # rendered Markdown
    c.shot("chat-cell")
    c.panel.locator(".agent-nb-panel-undo").click()
    c.until(has("Not sent.", gone=("from a cell",)))
    c.panel.locator(".agent-nb-panel-undo").click()
    c.until(has("Sent 5 to Bob.", gone=("Not sent.",)))


def the_keyboard_moves_and_escape_cancels_an_edit(c: Controls) -> None:
    """Tab goes from the input to Send; Edit from the keyboard, then Escape cancels it."""
    c.prompt.focus()
    c.page.keyboard.press("Tab")
    assert c.page.evaluate("document.activeElement.textContent") == "Send"
    edit = c.panel.locator(".agent-nb-panel-user").first.locator("[data-action=edit]")
    edit.press("Enter")
    c.until("p.querySelector('textarea').value === 'first question'")
    assert c.page.evaluate("document.activeElement.tagName") == "TEXTAREA"
    c.page.keyboard.press("Escape")
    c.until("p.querySelector('.agent-nb-panel-editing').hidden")
    assert c.prompt.input_value() == ""


def edit_the_first_prompt_then_switch_branches(c: Controls) -> None:
    """An edited first prompt forks the conversation there, in branch main~2; the branch
    switcher goes back to main, whole."""
    c.panel.locator(".agent-nb-panel-user").first.locator("[data-action=edit]").click()
    c.until("p.querySelector('textarea').value === 'first question'")
    c.until("!p.querySelector('.agent-nb-panel-editing').hidden")
    c.send("edited question")
    c.until(
        has("edited answer", gone=("Sent 5 to Bob.",))
        + " && p.querySelector('.agent-nb-panel-branches').value === 'main~2'"
        + " && p.querySelector('.agent-nb-panel-branches').options.length === 3",
    )
    c.until("p.querySelector('.agent-nb-panel-editing').hidden")
    assert c.server.requests[-1]["messages"] == [{"role": "user", "content": "edited question"}]
    c.shot("edited-branch")
    c.branches.select_option("main")
    c.until(has("Sent 5 to Bob.", "regenerated answer", gone=("edited answer",)))
    c.shot("branch-main")


def switch_sessions_and_start_a_new_one(c: Controls) -> None:
    """The session switcher lists the store's sessions by id, then title; the header names
    the one shown; New session (empty: Undo is off), renamed."""
    c.until("p.querySelector('.agent-nb-panel-sessions').innerText.includes('older chat')")
    labels = c.sessions.locator("option").all_inner_texts()
    assert "older · an older chat" in labels, labels
    assert all(label.startswith(("main", "older")) for label in labels), labels
    c.sessions.select_option("older")
    c.until(has("from before", gone=("regenerated answer",)))
    c.until(SHOWS.format("'older'", "false"))
    c.panel.locator(".agent-nb-panel-new").click()
    c.until("p.querySelectorAll('.agent-nb-panel-message').length === 0")
    c.until(SHOWS.format("p.querySelector('.agent-nb-panel-sessions').value", "true"))
    shown = c.page.evaluate(HEADER)
    assert shown["id"] not in ("older", "main") and shown["undo"] is False, shown
    c.panel.locator(".agent-nb-panel-rename").click()  # a name of one's own
    naming = c.panel.locator(".agent-nb-panel-naming")
    naming.fill("my-chat")
    naming.press("Enter")
    c.until("p.querySelector('.agent-nb-panel-current').innerText === 'my-chat'")
    assert "my-chat" in c.sessions.locator("option").all_inner_texts()
    c.shot("new-session")


def escape_stops_the_answer(c: Controls) -> None:
    """Escape stops the answer streaming; the footer says which model answered."""
    c.send("a long one")
    c.page.wait_for_function(
        f"(document.querySelector('{PANEL} .agent-nb-panel-live') || {{}}).innerText"
        "?.includes('word20')",
        timeout=60_000,
    )
    c.prompt.press("Escape")
    c.until(
        "p.querySelector('.agent-nb-panel-error').innerText.startsWith('stopped')"
        " && p.querySelector('.agent-nb-panel-status code').innerText === 'm'",
    )
    c.shot("stopped")


def the_dark_theme_darkens_the_panel(c: Controls) -> None:
    """The colours are the front end's theme: dark in JupyterLab Dark."""
    background = "getComputedStyle(document.querySelector('{}')).backgroundColor"
    choose_theme(c.page, "JupyterLab Light")  # (the server keeps the last test's choice)
    light = c.page.evaluate(background.format(PANEL))
    c.sessions.select_option("main")
    c.until(has("Sent 5 to Bob."))
    choose_theme(c.page, "JupyterLab Dark")
    c.until(has("Sent 5 to Bob."))
    dark = c.page.evaluate(background.format(PANEL))
    channels = [int(v) for v in dark[dark.index("(") + 1 : dark.index(")")].split(",")[:3]]
    assert dark != light and sum(channels) < 3 * 80, (light, dark)
    c.shot("dark")


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_the_controls_regenerate_approve_deny_share_edit_switch_copy(
    lab,  # noqa: F811
    server,
    tmp_path,
    front_end,
):
    """Every control, the same steps and checks in JupyterLab and in Notebook 7."""
    transfer = [{"name": "transfer", "arguments": {"amount": 5, "to": "Bob"}}]
    denied = [{"name": "transfer", "arguments": {"amount": 7, "to": "Bob"}}]
    server.script(
        Reply(text="first answer, with code:\n\n```python\nprint('hi')\n```"),
        Reply(text="regenerated answer"),
        Reply(tool_calls=transfer),
        Reply(text="Sent 5 to Bob."),
        Reply(tool_calls=denied),
        Reply(text="Not sent."),
        Reply(text="**answer** from a cell"),
        Reply(text="edited answer"),
        Reply(text=WORDS, chunk_delay=0.05),
        Reply(tool_calls=[{"name": "transfer", "arguments": {"amount": 9, "to": "Bob"}}]),
        Reply(text="Sent 9 to Bob."),
        Reply(tool_calls=[{"name": "transfer", "arguments": {"amount": 3, "to": "Bob"}}]),
        Reply(text="Sent 3 to Bob."),
    )
    with Browser() as browser:
        controls = Controls(browser, lab, server, front_end, tmp_path)
        for step in (
            copy_a_code_block_and_a_message,
            regenerate_then_recall_the_prompt,
            approve_one_call_and_deny_another,
            a_chat_cell_and_the_panel_share_the_session,
            the_keyboard_moves_and_escape_cancels_an_edit,
            edit_the_first_prompt_then_switch_branches,
            switch_sessions_and_start_a_new_one,
            escape_stops_the_answer,
            the_dark_theme_darkens_the_panel,
            always_allow_runs_the_tool_without_asking_again,
        ):
            step(controls)
        assert browser.dialogs == []
