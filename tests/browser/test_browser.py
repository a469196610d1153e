"""What the model writes, in real JupyterLab and in nbconvert's HTML, in headless Chromium:
the XSS corpus through every route stays inert even in a trusted notebook (where JupyterLab
itself does not sanitize), and answers still read as Markdown: one answer across parts, code
highlighted, math typeset, in light and dark themes and in an untrusted notebook."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from fake_openai import Reply
from kernels import run_notebook, text_of
from nbformat.sign import NotebookNotary
from xss_corpus import PAYLOADS, chat_completion, chat_stream

pytestmark = pytest.mark.timeout(600)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TESTS = Path(__file__).resolve().parents[1]

#: Everything in `root` that could run script or load a URL by itself, and the dialogs seen.
INERT = """(root) => {
  const found = [];
  const outputs = root.matches('.jp-Notebook')
    ? [...root.querySelectorAll('.jp-OutputArea-output, .jp-MarkdownOutput')] : [root];
  const url = /^(javascript|vbscript|data):/;
  const squeeze = v => v.replace(/[\\u0000-\\u0020\\u007f]+/g, '').toLowerCase();
  const run = 'script, iframe, frame, object, embed, applet, form, base, meta, link, portal';
  for (const e of root.querySelectorAll(run)) found.push(`<${e.localName}>`);
  for (const output of outputs) {
    for (const e of output.querySelectorAll('img, svg, style, video, audio, input, button'))
      found.push(`<${e.localName}> in an output`);
    for (const e of output.querySelectorAll('*'))
      for (const a of e.attributes)
        if (a.name === 'style' && /expression\\(|url\\(|javascript:/i.test(a.value))
          found.push(`<${e.localName} style=${a.value}>`);
  }
  for (const e of [root, ...root.querySelectorAll('*')])
    for (const a of e.attributes) {
      if (a.name.startsWith('on') || a.name === 'srcdoc') found.push(`<${e.localName} ${a.name}>`);
      if (/^(href|src|action|formaction|data|xlink:href|poster|background)$/.test(a.name)
          && url.test(squeeze(a.value)))
        found.push(`<${e.localName} ${a.name}=${a.value}>`);
    }
  return found;
}"""

#: The rendered outputs of the long answer's cell: blocks, gaps between paragraphs.
SEAMS = """(cell) => {
  const outputs = [...cell.querySelectorAll('.jp-RenderedHTML')];
  const top = e => e.getBoundingClientRect().top, bottom = e => e.getBoundingClientRect().bottom;
  const gap = (a, b) => Math.round(top(b) - bottom(a));
  const blocks = o => [...o.firstElementChild.children].filter(b => b.tagName !== 'DIV');
  const within = [], seams = [];
  outputs.forEach((output, k) => {
    const mine = blocks(output);
    for (let i = 1; i < mine.length; i++)
      if (mine[i - 1].tagName === 'P' && mine[i].tagName === 'P')
        within.push(gap(mine[i - 1], mine[i]));
    const next = outputs[k + 1] && blocks(outputs[k + 1])[0];
    if (next && next.tagName === 'P' && mine.at(-1).tagName === 'P')
      seams.push(gap(mine.at(-1), next));
  });
  return {outputs: outputs.length, within, seams, text: cell.innerText};
}"""

#: How an ordinary answer looks: highlighted code, typeset math, a link, a table.
LOOKS = """(cell) => {
  const output = cell.querySelector('.jp-RenderedHTML');
  const colour = s => getComputedStyle(s).color;
  const keyword = [...output.querySelectorAll('pre span')].find(s => s.textContent === 'def');
  return {
    typeset: output.querySelectorAll('mjx-container').length,
    keyword: keyword ? colour(keyword) : null,
    text: colour(output.querySelector('p')),
    links: [...output.querySelectorAll('a')].map(a => a.href),
    cells: output.querySelectorAll('td').length,
    items: output.querySelectorAll('li').length,
  };
}"""

ORDINARY = """## A short answer

- one
- two

| a | b |
|---|---|
| 1 | 2 |

```python
def area(r):
    return 3.14 * r ** 2  # square
```

Inline $x^2$, and displayed:

$$\\int_0^1 f(x)\\,dx$$

See [the docs](https://example.com/docs); it costs $5, not $10.
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not shutil.which(CHROMIUM):
        pytest.skip("no Chromium (apt-get install chromium)")
    from servers import JupyterLabServer, ServerUnavailable

    try:
        server = JupyterLabServer(tmp_path_factory.mktemp("lab"))
    except ServerUnavailable as exc:
        pytest.skip(f"no JupyterLab: {exc}")
    # every cell rendered (not only those scrolled into view), every output shown
    settings(server, "notebook-extension/tracker", {"windowingMode": "none"})
    yield server
    server.stop()


def settings(lab, plugin: str, values: dict) -> None:
    folder = lab.root.parent / "settings" / "@jupyterlab" / plugin.split("/")[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{plugin.split('/')[1]}.jupyterlab-settings").write_text(json.dumps(values))


class Browser:
    """Headless Chromium; every alert, confirm or prompt is recorded (and fails the test)."""

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM)
        self.dialogs: list[str] = []
        self.new_page()
        return self

    def __exit__(self, *exc: object) -> None:
        self._browser.close()
        self._playwright.stop()

    def new_page(self) -> None:
        self.page = self._browser.new_page(viewport={"width": 1200, "height": 1600})
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open_notebook(self, lab, name: str, cells: int) -> None:
        """`name` in a page of its own (leaving a page with a notebook asks before it goes)."""
        self.page.close()
        self.new_page()
        self.page.goto(f"{lab.url}/lab/tree/{name}")
        panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
        self.page.wait_for_function(
            f"document.querySelectorAll('{panel} .jp-Cell').length >= {cells}",
            timeout=120_000,
        )
        self.page.wait_for_selector(f"{panel} .jp-Cell:last-child .jp-OutputArea-output")
        self.page.wait_for_function(  # MathJax has typeset the formulas
            f"document.querySelectorAll('{panel} mjx-container').length >= 2", timeout=60_000
        )
        self.page.wait_for_timeout(1_000)

    def dark_theme(self) -> None:
        """Settings > Theme > JupyterLab Dark, in place (the notebook is not loaded again)."""
        no_kernel = self.page.locator(".jp-Dialog button", has_text="No Kernel")
        no_kernel.wait_for(timeout=30_000)  # the notebook has no kernelspec: JupyterLab asks
        no_kernel.click()
        self.page.locator(".lm-MenuBar-itemLabel").get_by_text("Settings", exact=True).click()
        self.page.locator(".lm-Menu-itemLabel").get_by_text("Theme", exact=True).hover()
        self.page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
        self.page.wait_for_function(
            "document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000
        )
        self.page.wait_for_timeout(1_000)

    def notebook(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")

    def cell(self, index: int):
        return self.notebook().locator(".jp-Cell").nth(index)


def corpus_notebook(server) -> nbformat.NotebookNode:
    """Run every route on every payload in a real kernel, and the two Markdown checks."""
    rng = random.Random(10)
    long_answer = [f"para{i} " + " ".join(f"w{j}" for j in range(50)) for i in range(40)]
    long_answer[15] = "```python\ndef f():\n\n    return 1\n```"
    replies = [Reply(text="\n\n".join(long_answer), chunk_delay=0.001), Reply(text=ORDINARY)]
    cells = [
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from xss_corpus import PAYLOADS\n"
        "from agent_nb import Agent, Message, Session, tool\n"
        "from agent_nb.messages import ToolCallPart, ToolResultPart\n"
        "@tool\ndef echo(text: str) -> str:\n    '''Say it back.'''\n    return text\n"
        f"agent = Agent(provider='openai', model='m', base_url={server.url!r}, api_key='k',"
        " tools=[echo])",
        "%load_ext agent_nb\n%agent agent",
        "%%chat --new long\nWrite at length",
        "%%chat --new ordinary\nShow me some Markdown",
    ]
    for index, payload in enumerate(PAYLOADS):  # streamed, split somewhere, hostile model name
        at = rng.randrange(len(payload) + 1)
        replies.append(Reply(raw=chat_stream([payload[:at], payload[at:]], model=payload)))
        cells.append(f"%%chat --new s{index}\ngo")  # a session each: no history sent back
    for index, payload in enumerate(PAYLOADS):  # --no-stream
        replies.append(
            Reply(raw=chat_completion(payload, model=payload), content_type="application/json")
        )
        cells.append(f"%%chat --new n{index} --no-stream\ngo")
    for payload in PAYLOADS:  # a cell ending in session.run(...)
        replies.append(
            Reply(raw=chat_completion(payload, model=payload), content_type="application/json")
        )
        cells.append("agent.session().run('go')")
    # the results go back to the server: the core cannot yet send a lone surrogate (it fails
    # encoding the request), so those payloads stay out of this turn
    sendable = [p for p in PAYLOADS if not any("\ud800" <= c <= "\udfff" for c in p)]
    calls = [{"name": p, "arguments": {"text": p}} for p in sendable]  # unknown tools
    calls += [{"name": "echo", "arguments": {"text": p}} for p in sendable]
    replies.append(Reply(tool_calls=calls))  # the answer after it: the results, unscripted
    cells.append("%%chat --new tools\nUse the tools")
    cells += [
        "calls = [ToolCallPart(id=f'c{i}', name=p, arguments={'text': p})"
        " for i, p in enumerate(PAYLOADS)]\n"
        "results = [ToolResultPart(tool_call_id=f'c{i}', name=p, content=p, is_error=i % 2 == 0)"
        " for i, p in enumerate(PAYLOADS)]\n"
        "history = [m for p in PAYLOADS for m in (Message.user(p), Message.assistant(p))]\n"
        "history += [Message(role='assistant', parts=tuple(calls)), Message.tool(results)]\n"
        "hostile = Session(agent, session_id='hostile', system=PAYLOADS[0], messages=history)\n"
        "from agent_nb.stores import SQLiteStore\n"
        "SQLiteStore('hostile.db').save('hostile', hostile.to_dict())\n"
        "hostile",
        "%session load hostile hostile.db",
        "%session show",
        "%session history -n 1000",
    ]
    server.script(*replies)
    return run_notebook(*cells, allow_errors=False)


def test_the_corpus_is_inert_in_jupyterlab_and_answers_read_as_markdown(lab, server):
    nb = corpus_notebook(server)
    outputs = [o for cell in nb.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert all("text/markdown" not in o.get("data", {}) for o in outputs)
    untrusted = nbformat.v4.new_notebook(cells=nb.cells[:4])  # not signed: JupyterLab sanitizes
    nbformat.write(untrusted, str(lab.root / "untrusted.ipynb"))
    NotebookNotary(data_dir=str(lab.data)).sign(nb)  # trusted, as outputs are while they run
    nbformat.write(nb, str(lab.root / "corpus.ipynb"))

    with Browser() as browser:
        browser.open_notebook(lab, "untrusted.ipynb", len(untrusted.cells))
        found = browser.notebook().evaluate(INERT)
        sanitized = browser.cell(3).evaluate(LOOKS)
        browser.open_notebook(lab, "corpus.ipynb", len(nb.cells))
        found += browser.notebook().evaluate(INERT)
        shown = browser.notebook().inner_text()
        seams = browser.cell(2).evaluate(SEAMS)
        light = browser.cell(3).evaluate(LOOKS)
        browser.cell(3).screenshot(path=str(lab.root / "light.png"))
        browser.dark_theme()
        dark = browser.cell(3).evaluate(LOOKS)
        browser.cell(3).screenshot(path=str(lab.root / "dark.png"))
        dialogs = browser.dialogs

    assert dialogs == [] and found == [], (dialogs, found[:20])
    for payload in ("<img src=x onerror=alert(26)>", "[x](javascript:alert(8))", "<svg"):
        assert payload in shown  # shown as the text it is
    # a long answer in several outputs reads as one: the gap at a seam is a paragraph's
    assert seams["outputs"] > 1 and seams["seams"], seams
    assert set(seams["seams"]) == set(seams["within"]), seams
    # an ordinary answer: math typeset, code coloured, links, lists and tables, in every case
    for case in (light, sanitized, dark):
        assert case["typeset"] == 2 and case["cells"] == 2 and case["items"] == 2, case
        assert case["links"] == ["https://example.com/docs"], case
        assert case["keyword"] not in (None, case["text"]), case  # highlighted, not plain
    assert light["text"] != dark["text"]  # the theme changed, the code colours still read


def test_the_corpus_is_inert_in_an_nbconvert_html_export(tmp_path):
    from nbconvert import HTMLExporter

    from agent_nb import Agent, Message, Session
    from agent_nb.messages import ToolCallPart, ToolResultPart

    history = []
    for index, payload in enumerate(PAYLOADS):
        call = ToolCallPart(id=f"c{index}", name=payload, arguments={"text": payload})
        result = ToolResultPart(tool_call_id=f"c{index}", name=payload, content=payload)
        history += [
            Message.user(payload),
            Message(role="assistant", parts=(*Message.assistant(payload).parts, call)),
            Message.tool([result]),
            Message.assistant(payload),
        ]
    session = Session(Agent(provider="test"), system=PAYLOADS[1], messages=history)
    with Browser() as browser:
        for code_cells in (False, True):
            exported = session.to_notebook(code_cells=code_cells)
            page = tmp_path / f"export-{code_cells}.html"
            page.write_text(HTMLExporter().from_notebook_node(exported)[0], encoding="utf-8")
            browser.page.goto(page.as_uri())
            browser.page.wait_for_timeout(500)
            cells = browser.page.locator(".jp-Cell")
            assert cells.count() == len(exported.cells)
            found = [problem for cell in cells.all() for problem in cell.evaluate(INERT)]
            assert found == [], found[:20]
            assert "<img src=x onerror=alert(26)>" in browser.page.locator("main").inner_text()
        browser.page.screenshot(path=str(tmp_path / "export.png"))
        assert browser.dialogs == []


#: The notebook's kernel is idle (started, and not running a cell).
IDLE = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']"


def test_restart_kernel_and_run_all_in_jupyterlab_gives_the_same_conversations(lab):
    """JupyterLab sends each cell's id: Run All, run a middle cell again by hand (its later
    turns kept as main~1), save, then Restart Kernel and Run All three times: each time the
    fresh run's sessions, no main~1, in the kernel and in the saved records."""
    from kernels import DUMP, TRIP
    from test_panel_browser import accept_kernel_dialog

    from agent_nb import Agent, _records
    from agent_nb.session import Session

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in TRIP])
    nb.cells.append(nbformat.v4.new_code_cell(DUMP + "\nimport os\nprint(os.getpid())"))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = lab.root / "rerun.ipynb"
    nbformat.write(nb, str(path))

    def last_run(browser, other_than: str) -> tuple[str, str]:
        """The sessions and the kernel pid the last cell printed, once a new kernel has.

        On a loaded machine JupyterLab may ask which kernel (answered: the notebook's), or
        drop the cells it sent while still connecting to the new kernel: then Run All again,
        once the kernel is idle (a run from the top gives the same conversations)."""
        last = browser.cell(len(nb.cells) - 1).locator(".jp-OutputArea-output")
        for attempt in range(4):
            try:
                browser.page.wait_for_function(
                    "([cell, pid]) => { const t = cell.innerText.trim().split('\\n');"
                    " return t.length >= 3 && /^\\d+$/.test(t.at(-1)) && t.at(-1) !== pid; }",
                    arg=[browser.cell(len(nb.cells) - 1).element_handle(), other_than],
                    timeout=120_000 if attempt == 3 else 60_000,
                )
                break
            except Exception:
                if attempt == 3:
                    browser.page.screenshot(path=str(lab.root.parent / "last-run.png"))
                    raise
                accept_kernel_dialog(browser.page)
                browser.page.wait_for_selector(IDLE, timeout=120_000)
                menu(browser, "Run", "Run All Cells")
        *_, sessions, current, pid = last.first.inner_text().strip().splitlines()
        return f"{sessions}\n{current}", pid

    def menu(browser, top: str, item: str) -> None:
        browser.page.locator(".lm-MenuBar-itemLabel").get_by_text(top, exact=True).click()
        browser.page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()

    def save(browser, pid: str, third: str = "") -> None:
        """Save, and wait until the file on disk ends with the run of kernel `pid` (and its
        third cell's output holds `third`)."""
        browser.page.keyboard.press("Control+s")
        for _ in range(600):
            saved = nbformat.read(str(path), as_version=4)
            if pid in text_of(saved.cells[-1]) and third in text_of(saved.cells[2]):
                return
            browser.page.wait_for_timeout(100)
        raise AssertionError("the notebook was not saved")

    with Browser() as browser:
        browser.page.goto(f"{lab.url}/lab/tree/rerun.ipynb?reset")  # no other notebook open
        browser.notebook().locator(".jp-Cell").nth(len(nb.cells) - 1).wait_for(timeout=120_000)
        browser.page.wait_for_selector(IDLE, timeout=120_000)  # its kernel has started
        menu(browser, "Run", "Run All Cells")
        first, pid = last_run(browser, "")
        browser.cell(2).locator(".jp-InputArea-editor").click()  # "I live in Lyon", by hand
        browser.page.keyboard.press("Control+Enter")
        browser.cell(2).get_by_text("kept in session 'main~1'").wait_for(timeout=60_000)
        save(browser, pid, "kept in session 'main~1'")
        for run in range(3):  # a kept session in the kernel, then Restart and Run All, 3 times
            if run:
                save(browser, pid)
            menu(browser, "Kernel", "Restart Kernel and Run All Cells…")
            browser.page.locator(".jp-Dialog button", has_text="Restart").click()
            again, pid = last_run(browser, pid)
            assert json.loads(again.splitlines()[0]) == json.loads(first.splitlines()[0]), (
                first,
                again,
            )
            assert again.splitlines()[1] == first.splitlines()[1] == "main"
            assert "restored 6 turns in 2 sessions" in browser.cell(0).inner_text()
        save(browser, pid)
    assert sorted(json.loads(first.splitlines()[0])) == ["main", "side"]
    replayed = _records.replay(
        _records.records(nbformat.read(str(path), as_version=4)),
        Agent(provider="test"),
        Session,
    )
    assert sorted(replayed.sessions) == ["main", "side"]  # nor in the saved records
