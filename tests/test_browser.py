"""%%chat answers in real JupyterLab, in headless Chromium: the parts read as one answer, and
what the model writes stays inert even in a trusted notebook (where JupyterLab itself does not
sanitize)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import nbformat
import pytest
from fake_openai import Reply
from kernels import run_notebook
from nbformat.sign import NotebookNotary

pytestmark = pytest.mark.timeout(300)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# The rendered outputs of the chat cell: blocks, gaps between paragraphs, active HTML.
MEASURE = """() => {
  const cell = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')
    .querySelectorAll('.jp-Cell')[1];
  const outputs = [...cell.querySelectorAll('.jp-RenderedMarkdown')];
  const top = e => e.getBoundingClientRect().top, bottom = e => e.getBoundingClientRect().bottom;
  const gap = (a, b) => Math.round(top(b) - bottom(a));
  const within = [], seams = [];
  outputs.forEach((output, k) => {
    const blocks = [...output.children].filter(b => b.tagName !== 'DIV' || b.textContent);
    for (let i = 1; i < blocks.length; i++)
      if (blocks[i - 1].tagName === 'P' && blocks[i].tagName === 'P')
        within.push(gap(blocks[i - 1], blocks[i]));
    const next = outputs[k + 1] && outputs[k + 1].firstElementChild;
    if (next && next.tagName === 'P' && blocks.at(-1).tagName === 'P')
      seams.push(gap(blocks.at(-1), next));
  });
  return {
    outputs: outputs.length,
    within,
    seams,
    text: cell.querySelector('.jp-OutputArea').innerText,
    active: cell.querySelectorAll('img, script, iframe, [onerror], a[href^="javascript"]').length,
  };
}"""


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
    yield server
    server.stop()


def test_a_long_answer_reads_as_one_and_model_html_stays_inert(lab, server):
    paragraphs = [f"para{i} " + " ".join(f"w{j}" for j in range(50)) for i in range(40)]
    paragraphs[15] = "```python\ndef f():\n\n    return 1\n```"
    paragraphs[25] = "Look: <img src=x onerror=alert(1)> <script>alert(2)</script>"
    paragraphs[26] = "[click](javascript:alert(3)) and `<b>code</b>`"
    server.chunk_delay = 0.001
    server.script(Reply(text="\n\n".join(paragraphs)))
    nb = run_notebook(
        f"%load_ext agent_nb\n%agent provider=openai model=m base_url={server.url} api_key=k",
        "%%chat\nWrite at length",
    )
    assert len([o for o in nb.cells[1].outputs if o.output_type == "display_data"]) > 1
    NotebookNotary(data_dir=str(lab.data)).sign(nb)  # trusted, as while it runs
    nbformat.write(nb, str(lab.root / "answer.ipynb"))

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(f"{lab.url}/lab/tree/answer.ipynb")
            page.wait_for_selector(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedMarkdown", timeout=120_000
            )
            page.wait_for_timeout(500)
            shown = page.evaluate(MEASURE)
        finally:
            browser.close()
    assert shown["outputs"] > 1
    assert shown["seams"] and set(shown["seams"]) == set(shown["within"]), shown
    assert shown["active"] == 0
    assert "<img src=x onerror=alert(1)>" in shown["text"] and "<b>code</b>" in shown["text"]
