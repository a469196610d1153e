"""ChatPanel on a long session, in real JupyterLab (headless Chromium), beside the alternatives.

One JupyterLab, one browser; each candidate is a notebook whose first cell builds the same
500 messages (tests/long_history.py: lines, paragraphs, lists and code) and whose second
cell shows them:

  agent_nb           ChatPanel(session): the virtual list (this tree)
  agent_nb before    ChatPanel(session) from git ref --before (default 09d12b1, the commit
                     before the virtual list: one node per message), run from a copy of
                     that ref's package
  Panel              panel's ChatInterface(objects=[ChatMessage(...)]) (pip install panel,
                     or agent-nb[bench]; skipped if it is not installed). Panel loads BokehJS
                     and its own files from its CDN: the browser is served them from the
                     installed packages (anything else off the machine gets a 404, its icon
                     font too). Its inline mode is no way round: it sets each model's
                     stylesheets one at a time, each re-walking the whole document (over
                     three minutes for 50 messages, 25 s for 20).

For each: seconds from running the second cell until the last message is in view in its
scroll box (every scroll box around it, shadow roots searched too) and that box stays the
same for a second (09d12b1's first view is replaced right after it shows; timed is the one
that stays); how many messages are rendered then (the virtual list and Panel's lazy feed
render only some); the page's DOM nodes and JS heap after a garbage collection (Chromium's
Performance metrics); then the box scrolled through the whole history: first to its top
until the first message is rendered (untimed: Panel's feed loads the earlier messages as its
top is reached), then down a half screen per frame until the last is rendered at the bottom:
the intervals of the frames that scrolled (median, 95th percentile, worst), how many took
over 50 ms, and the px scrolled. Each candidate's figures are printed as it ends, then the
table; a candidate without figures says why (what it had rendered at the timeout, its
cell's error).

Then the comm: a 50,000-token answer streamed into a ChatPanel (no browser: the comm is
replaced by a recorder, as in tests/panel/test_panel.py), the bytes it sends against a naive
re-send of the whole message on every token (its Markdown: its HTML would be longer), at
the panel's update rate and updating on every token.

    .venv/bin/python benchmarks/panel.py [--messages 500] [--tokens 50000] [--before 09d12b1]
                                         [--no-browser] [--no-comm] [--only NAME ...]

Each candidate opens in a JupyterLab workspace of its own (in the default one JupyterLab
reopens the earlier candidates' notebooks, and their cells ran in the wrong notebook).

A run on this machine (2 shared cores, idle otherwise; 2 Dec 2026, main after the fixes
below):

  candidate                 open s  rendered  DOM nodes  heap MB  frames  median  p95 ms  worst
  agent_nb                    0.41         7      9,321     32.0     407    16.8    19.8   26.3
  agent_nb before (09d12b1)   0.96       500     30,599     29.3     408    16.7    18.0   22.7
  Panel ChatInterface         8.06        53     53,082     64.5     814    35.8   595.4 2230.3
  (frames: ms between frames while scrolling; Panel's: 316 of 814 over 50 ms)

  comm, 50,000 tokens (279,680 bytes of Markdown): 0.7 MB (2.4x) at 20 updates/s, 2.1 MB
  (7.6x) on every token; a naive re-send per token 7,036 MB (10,451x / 3,323x more).

What the figures showed on the way there: on 1 Dec the merged panel opened in 1.7-2.0 s with
19,101 DOM nodes. The nodes were the saved transcript's (a second output, hidden while the
panel is live but its 500 messages still in the page): a live view now empties it. The time
was nbformat's first import in the kernel (~1 s: jsonschema's format checkers), made to
read the notebook's earlier panel records: they are read as plain JSON now. Rendering each
message's Markdown once for the items and the transcript took the Python side from 0.65 s to
0.37 s. Panel's ChatInterface had never shown (180 s timeouts): `import panel` in this file
imported the file itself, so the check that Panel is installed was always true, and offline
Panel's CDN files were missing (now served from the installed package).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# the shared helpers, and the browser and panel tests' own (Browser, run_cell, Recorder)
sys.path[:0] = [str(TESTS), str(TESTS / "browser"), str(TESTS / "panel")]

from _server import ServerProcess  # noqa: E402
from fake_openai import Reply  # noqa: E402
from notebook_display import answer  # noqa: E402

#: Where the page is at: every element whose text starts with a marker (m<index>), in the
#: page and its open shadow roots (Panel renders in them); the last message's marker `last`
#: in view (every scroll box around it shows it) and its innermost scroll box (which must
#: scroll); and how many messages are rendered (a marker with a height).
FIND = r"""(last) => {
  const walk = function* (root) {
    for (const e of root.querySelectorAll('*')) {
      yield e;
      if (e.shadowRoot) yield* walk(e.shadowRoot);
    }
  };
  const inView = (found) => {
    const r = found.getBoundingClientRect();
    if (!r.height) return null;
    let box = null;
    for (let e = found; e; e = e.parentElement || (e.getRootNode() || {}).host) {
      if (e === document.documentElement) break;
      const s = getComputedStyle(e);
      if (/(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 1) {
        const b = e.getBoundingClientRect();
        if (r.bottom <= b.top + 1 || r.top >= b.bottom - 1) return null;
        box = box || e;
      }
    }
    return box;
  };
  const rendered = new Set();
  let box = null, lastRendered = false;
  for (const e of walk(document)) {
    if (e.children.length) continue;
    const word = (e.textContent || '').trim().split(/\s/)[0];
    if (!/^m\d+$/.test(word) || !e.getBoundingClientRect().height) continue;
    rendered.add(word);
    if (word === last) { lastRendered = true; box = box || inView(e); }
  }
  const highest = Math.max(-1, ...[...rendered].map((w) => Number(w.slice(1))));
  return {box, lastRendered, rendered: rendered.size, highest};
}"""

#: Done: the last message in view in its scroll box, that box the same (still in the page)
#: for `settle` ms, so a view that is replaced right after it shows is not the one timed
#: (09d12b1's panel shows, then is rendered again). window.__watch keeps the time its box
#: first showed it and how often it (re)appeared; true too if the cell shows an error.
SETTLED = """({last, settle, cell}) => {
  const w = window.__watch;
  if (cell.querySelector('[data-mime-type="application/vnd.jupyter.stderr"]')) return true;
  const {box} = (__FIND__)(last);
  const now = performance.now();
  if (!box) { w.box = null; return false; }
  if (box !== w.box) { w.box = box; w.since = now; w.shows++; }
  return now - w.since >= settle;
}""".replace("__FIND__", FIND)

#: Scroll the done box through the whole history, `step` px a frame: first (untimed) to its
#: top until the first message `first` is rendered (a lazy feed, Panel's, loads the earlier
#: ones as its top is reached), then down until the last one `last` is rendered at the
#: bottom. The intervals of the frames that scrolled (ms), the px scrolled, the lowest
#: message rendered at the top.
FRAMES = r"""async ({step, first, last}) => {
  const box = window.__watch.box;
  const frame = () => new Promise(requestAnimationFrame);
  const walk = function* (root) {
    if (root.shadowRoot) yield* walk(root.shadowRoot);  // Panel's feed: its messages in its own
    for (const e of root.querySelectorAll('*')) {
      yield e;
      if (e.shadowRoot) yield* walk(e.shadowRoot);
    }
  };
  const markers = () => {
    const out = new Set();
    for (const e of walk(box)) {
      if (e.children.length) continue;
      const word = (e.textContent || '').trim().split(/\s/)[0];
      if (/^m\d+$/.test(word) && e.getBoundingClientRect().height) out.add(word);
    }
    return out;
  };
  const lowest = () => Math.min(...[...markers()].map((w) => Number(w.slice(1))));
  const ends = (ms) => { const t = performance.now() + ms; return () => performance.now() > t; };
  for (let over = ends(120000); !over(); ) {
    box.scrollTop = 0;
    await frame();
    if (box.scrollTop === 0 && markers().has(first)) break;
  }
  await frame();
  const top = lowest();
  const times = [];
  let scrolled = 0, previous = performance.now();
  for (let over = ends(120000), idle = ends(10000); !over() && box.isConnected; ) {
    const end = box.scrollHeight - box.clientHeight;
    if (box.scrollTop >= end - 1) {
      if (markers().has(last) || idle()) break;
      await frame();  // at the bottom of what is loaded: wait for the rest
      previous = performance.now();
      continue;
    }
    idle = ends(10000);
    const before = box.scrollTop;
    box.scrollTop = Math.min(end, box.scrollTop + step);
    await frame();
    scrolled += Math.max(0, box.scrollTop - before);
    const now = performance.now();
    times.push(now - previous);
    previous = now;
  }
  return {times, scrolled, top, connected: box.isConnected, height: box.scrollHeight};
}"""

SESSION = (  # agent_nb from `package` (this tree or the copy), long_history from tests/
    "import sys\nsys.path[:0] = [{package!r}, {tests!r}]\n"
    "from long_history import messages\n"
    "history = messages({count})\n"
    "from agent_nb import Message\n"  # the last one short: its marker in view at the end
    "history[-1] = Message.assistant('m{last} the end')\n"
)
CANDIDATES = {
    "agent_nb": (
        "from agent_nb import Agent, ChatPanel, Session\n"
        "session = Session(Agent(provider='test'), messages=history)",
        "ChatPanel(session)",
    ),
    "Panel ChatInterface": (
        "import panel as pn\npn.extension()\n"
        "feed = [pn.chat.ChatMessage(m.text, user='you' if m.role == 'user' else 'assistant')"
        " for m in history]",
        "pn.chat.ChatInterface(objects=feed, height=480)",
    ),
}


def notebook(setup: str, show: str):
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(show)]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def package_at(ref: str, folder: Path) -> Path:
    """agent_nb as it is at git `ref`, unpacked in `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "agent_nb"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


SETTLE_MS = 1_000  # the done box unchanged this long
OPEN_TIMEOUT_MS = 180_000
COLUMNS = (  # (heading, width, format)
    ("candidate", 28, "<"),
    ("open s", 8, ".2f"),
    ("rendered", 10, ","),
    ("DOM nodes", 11, ",.0f"),
    ("heap MB", 9, ".1f"),
    ("frames", 8, ""),
    ("px", 9, ",.0f"),
    ("median ms", 11, ".1f"),
    ("p95 ms", 8, ".1f"),
    ("worst ms", 10, ".1f"),
    (">50 ms", 8, ""),
)
KEYS = ("name", "open", "rendered", "nodes", "heap", "frames", "px", "median", "p95", "worst")


def heading() -> str:
    """The figures table's heading line."""
    return "".join(f"{h:<{w}}" if f == "<" else f"{h:>{w}}" for h, w, f in COLUMNS)


def row(r: dict) -> str:
    """One candidate's figures as a table line."""
    values = [r[k] for k in KEYS] + [r["slow"]]
    return "".join(
        f"{v:{f}}".ljust(w) if f == "<" else f"{v:>{w}{f}}"
        for v, (_, w, f) in zip(values, COLUMNS, strict=True)
    )


def open_notebook(browser, lab, name: str) -> None:
    """Notebook `name` open in a workspace of its own, its kernel idle, its setup cell run."""
    page = browser.page
    # A workspace of its own: JupyterLab's default one would also reopen (and run in) the
    # notebooks of the candidates before it.
    page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}")
    browser.cell(0).wait_for(timeout=120_000)
    idle = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
    page.wait_for_selector(f"{idle}[data-status='idle']", timeout=120_000)
    from test_panel_browser import run_cell

    try:
        run_cell(browser, 0, Path(tempfile.gettempdir()), tries=5)
    except Exception:  # a slow setup (Panel's 500 ChatMessages on a busy machine): wait on
        page.wait_for_function(
            "(e) => /\\[\\d+\\]/.test(e.textContent)",
            arg=browser.cell(0).locator(".jp-InputPrompt").element_handle(),
            timeout=600_000,
        )
    cell_error(browser, 0)


def cell_error(browser, index: int) -> None:
    """Raise with its text if cell `index` shows an error (a traceback, or stderr)."""
    error = browser.cell(index).locator("[data-mime-type='application/vnd.jupyter.stderr']")
    if error.count():
        text = " | ".join(error.all_inner_texts()).strip().splitlines()
        raise RuntimeError(f"cell {index}: {' / '.join(text[-3:])[:400]}")


def wait_until_shown(browser, last: str, console: list[str]) -> float:
    """Run the second cell; seconds until the box that stays shows `last` (or raise)."""
    page = browser.page
    browser.cell(1).locator(".jp-InputArea-editor").click()
    page.evaluate("() => { window.__watch = {box: null, since: 0, shows: 0}; }")
    page.evaluate("() => { window.__watch.start = performance.now(); }")
    page.keyboard.press("Shift+Enter")
    cell = browser.cell(1).element_handle()
    args = {"last": last, "settle": SETTLE_MS, "cell": cell}
    try:
        page.wait_for_function(SETTLED, arg=args, polling=50, timeout=OPEN_TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-panel-timeout.png"))
        at = page.evaluate(f"() => {{ const r = ({FIND})({last!r}); delete r.box; return r; }}")
        errors = [m for m in console if m.startswith(("error", "warning"))][-3:]
        raise TimeoutError(
            f"{last} not in view in its scroll box within {OPEN_TIMEOUT_MS / 1000:.0f} s: "
            f"{at['rendered']} messages rendered (the highest m{at['highest']}), the last "
            f"{'rendered, not in view' if at['lastRendered'] else 'not rendered'}"
            + (f"; the console: {' | '.join(errors)}" if errors else "")
        ) from None
    cell_error(browser, 1)
    watch = page.evaluate("() => ({since: window.__watch.since, start: window.__watch.start})")
    return (watch["since"] - watch["start"]) / 1000


def offline_cdn(page) -> None:
    """Panel's and Bokeh's CDN files (Panel loads them from there) served from their
    installed packages, everything else off the machine answered 404: no network, and
    Panel as its users get it (its inline mode sets each model's stylesheets one by one,
    re-walking the whole document each time: minutes for 50 messages)."""
    from importlib.metadata import distribution
    from urllib.parse import unquote, urlparse

    panel_dist = Path(distribution("panel").locate_file("panel/dist"))
    bokeh_js = Path(distribution("bokeh").locate_file("bokeh/server/static/js"))

    def serve(route) -> None:
        url = urlparse(route.request.url)
        path = unquote(url.path)
        if url.hostname == "cdn.holoviz.org" and "/dist/" in path:
            local = panel_dist / path.split("/dist/", 1)[1]
        elif url.hostname == "cdn.bokeh.org":  # bokeh-widgets-3.9.2.min.js: bokeh-widgets.min.js
            local = bokeh_js / re.sub(r"-\d+\.\d+\.\d+[^.]*(?=\.)", "", Path(path).name)
        else:
            local = None
        if local is not None and local.is_file():
            route.fulfill(path=str(local))
        else:
            route.fulfill(status=404, body="")

    page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), serve)


def open_in_browser(browser, lab, name: str, last: str) -> dict:
    """Open notebook `name`, run its setup, then time its second cell until `last` shows;
    then the page's weight and the box's scroll frames."""
    page = browser.page
    offline_cdn(page)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:300]))
    open_notebook(browser, lab, name)
    opened = wait_until_shown(browser, last, console)
    shows = page.evaluate("() => window.__watch.shows")
    rendered = page.evaluate(f"() => ({FIND})({last!r}).rendered")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    first = "m0"
    scrolled = page.evaluate(FRAMES, {"step": 240, "first": first, "last": last})
    if not scrolled["times"]:
        raise RuntimeError(
            f"no scroll frames (its box {'in' if scrolled['connected'] else 'gone from'} the "
            f"page, {scrolled['height']} px high)"
        )
    times = sorted(scrolled["times"])
    return {
        "open": opened,
        "shows": shows,
        "rendered": rendered,
        "nodes": metrics.get("Nodes", 0),
        "heap": metrics.get("JSHeapUsedSize", 0) / 1e6,
        "frames": len(times),
        "px": scrolled["scrolled"],
        "top": scrolled["top"],
        "median": statistics.median(times),
        "p95": times[int(0.95 * (len(times) - 1))],
        "worst": times[-1],
        "slow": sum(t > 50 for t in times),
    }


def have_panel() -> bool:
    """Whether the `panel` package is installed (by its metadata: `import panel` here would
    find this file, benchmarks/panel.py)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("panel")
    except PackageNotFoundError:
        return False
    return True


def candidate_runs(before: str, old: Path, only: list[str]) -> dict[str, tuple[str, Path]]:
    """The candidates to measure: name -> (kind in CANDIDATES, agent_nb package folder)."""
    runs = {"agent_nb": ("agent_nb", ROOT), f"agent_nb before ({before})": ("agent_nb", old)}
    if have_panel():
        runs["Panel ChatInterface"] = ("Panel ChatInterface", ROOT)
    else:
        print("Panel is not installed (pip install panel, or agent-nb[bench]): left out")
    if only:
        runs = {k: v for k, v in runs.items() if any(o.lower() in k.lower() for o in only)}
    return runs


def browser_rounds(count: int, before: str, only: list[str]) -> dict[str, dict]:
    """Each candidate in the browser; its figures (or why it has none) printed as it ends."""
    import nbformat
    from servers import JupyterLabServer
    from test_browser import Browser

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "before").mkdir()
        old = package_at(before, folder / "before")
        lab = JupyterLabServer(folder)
        try:
            runs = candidate_runs(before, old, only)
            for index, (name, (kind, package)) in enumerate(runs.items()):
                setup, show = CANDIDATES[kind]
                code = SESSION.format(
                    package=str(package), tests=str(TESTS), count=count, last=count - 1
                )
                code += setup
                nbformat.write(notebook(code, show), str(lab.root / f"c{index}.ipynb"))
                print(f"{name} ...", flush=True)
                with Browser() as browser:
                    try:
                        r = open_in_browser(browser, lab, f"c{index}.ipynb", f"m{count - 1}")
                    except Exception as error:  # the others are still measured
                        print(f"  {name}: {type(error).__name__}: {error}", flush=True)
                        continue
                results[name] = {"name": name, **r}
                print(heading() + "\n" + row(results[name]), flush=True)
                if r["top"] != 0:
                    print(f"  (scrolled from m{r['top']}: m0 not rendered at its top in 120 s)")
                if r["shows"] > 1:
                    print(
                        f"  (its box showed the last message {r['shows']} times: timed is "
                        "the last, which stayed)",
                        flush=True,
                    )
        finally:
            lab.stop()
    return results


def print_browser_table(count: int, results: dict[str, dict]) -> None:
    """All the candidates' figures, and each against agent_nb's."""
    print(f"\n{count} messages in real JupyterLab, headless Chromium")
    print(heading())
    for r in results.values():
        print(row(r))
    ours = results.get("agent_nb")
    for name, r in results.items():
        if ours and name != "agent_nb":
            print(
                f"{name} / agent_nb: open {r['open'] / ours['open']:.1f}x, DOM nodes "
                f"{r['nodes'] / ours['nodes']:.1f}x, heap {r['heap'] / ours['heap']:.1f}x"
            )


def comm_bytes(tokens: int) -> dict[str, dict]:
    """Bytes over the comm for one answer of `tokens` tokens, ours and naive."""
    from test_panel import Recorder

    from agent_nb import Agent, ChatPanel
    from agent_nb.notebook import panel as panel_module
    from agent_nb.notebook.live import MESSAGE_BYTES

    text = answer(tokens)
    naive = {"bytes": 0, "received": 0, "messages": 0}
    text_of = panel_module._LiveTail.text

    def counted(self, delta: str) -> None:  # naive: the whole message again, every token
        naive["received"] += len(delta.encode())
        naive["bytes"] += MESSAGE_BYTES + naive["received"]
        naive["messages"] += 1
        text_of(self, delta)

    results = {}
    interval = panel_module.UPDATE_INTERVAL
    with ServerProcess(Reply(text=text), runs=2) as url:
        agent = Agent(provider="openai", model="bench", base_url=url, api_key="bench")
        for name, every in (("agent_nb (20 updates/s)", interval), ("agent_nb (every token)", 0)):
            panel = ChatPanel(agent.session())
            recorder = Recorder(panel)
            panel_module.UPDATE_INTERVAL = every
            panel_module._LiveTail.text = counted
            naive.update(bytes=0, received=0, messages=0)
            try:
                started = time.perf_counter()
                response = asyncio.run(panel._turn("write at length"))
                seconds = time.perf_counter() - started
            finally:
                panel_module.UPDATE_INTERVAL = interval
                panel_module._LiveTail.text = text_of
            assert response is not None and response.text == text
            results[name] = {
                "bytes": recorder.bytes(),
                "messages": len(recorder.sent),
                "seconds": seconds,
            }
    results["naive re-send per token"] = {
        "bytes": naive["bytes"],
        "messages": naive["messages"],
        "seconds": float("nan"),
    }
    return results, len(text.encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--before", default="09d12b1", help="git ref of the non-virtual panel")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--no-comm", action="store_true")
    parser.add_argument(
        "--only", action="append", default=[], help="candidates whose name contains this"
    )
    args = parser.parse_args()
    if not args.no_browser:
        if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
            sys.exit("no Chromium (apt-get install chromium)")
        results = browser_rounds(args.messages, args.before, args.only)
        print_browser_table(args.messages, results)
    if not args.no_comm:
        results, final = comm_bytes(args.tokens)
        print(f"\n{args.tokens:,}-token answer ({final:,} bytes of Markdown) over the comm")
        print(f"{'candidate':<28}{'messages':>10}{'MB sent':>9}{'x answer':>10}{'wall s':>8}")
        for name, r in results.items():
            print(
                f"{name:<28}{r['messages']:>10,}{r['bytes'] / 1e6:>9.1f}"
                f"{r['bytes'] / final:>10.1f}{r['seconds']:>8.1f}"
            )
        naive = results["naive re-send per token"]["bytes"]
        print(
            "naive / agent_nb: "
            + ", ".join(
                f"{naive / r['bytes']:,.0f}x ({name})"
                for name, r in results.items()
                if name.startswith("agent_nb")
            )
        )


if __name__ == "__main__":
    main()
