"""Model text rendered once, safely: the XSS corpus through every route that shows it, odd
text that must not crash, and ordinary Markdown that must still look like Markdown."""

from __future__ import annotations

import json
import random

import html5lib
import pytest
from fake_openai import Reply
from kernels import run_notebook, text_of
from markdown_it import MarkdownIt
from test_live import Screen
from xss_corpus import PAYLOADS, chat_completion, chat_stream, problems

from agent_nb import Agent, Message, Session
from agent_nb import _render as render
from agent_nb.events import Response, Usage
from agent_nb.messages import ToolCallPart, ToolResultPart
from agent_nb.notebook import live
from agent_nb.notebook.live import LiveHTML


def assert_inert(markup: str, payload: str) -> None:
    found = problems(markup)
    assert not found, f"{payload!r} -> {found} in {markup[:400]!r}"


def assert_sendable(value: object) -> None:
    """What the kernel does with display data and metadata: JSON, then UTF-8."""
    json.dumps(value, ensure_ascii=False).encode("utf-8")


def conversation(payload: str) -> list[Message]:
    """A turn in which the payload is everywhere: prompt, answer, tool call and result."""
    call = ToolCallPart(id="c1", name=payload, arguments={"q": payload, "list": [payload]})
    result = ToolResultPart(tool_call_id="c1", name=payload, content=payload, is_error=True)
    return [
        Message.user(payload),
        Message(role="assistant", parts=(*Message.assistant(payload).parts, call)),
        Message.tool([result]),
        Message.assistant(payload),
        Message.system(payload),
    ]


def hostile_response(payload: str) -> Response:
    return Response(
        text=payload,
        messages=tuple(conversation(payload)),
        usage=Usage(input_tokens=3, output_tokens=5),
        model=payload,  # what the server says the model was
        finish_reason="length",
        interrupted=True,
    )


# -- every route, every payload --------------------------------------------------------------


def shown_by_chat(payload: str, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """%%chat --no-stream: the whole answer and footer in one output, with its record."""
    screen = Screen(monkeypatch)
    response = hostile_response(payload)
    LiveHTML().finish(
        render.footer(response, 1.0),
        {"agent_nb": {"messages": [m.to_dict() for m in response.messages]}},
        shown=render.turn_html(response.messages),
        plain=response.text,
    )
    return screen.messages


ROUTES = {
    "markdown": lambda p: [render.wrap(render.html(p))],
    "footer": lambda p: [render.footer(hostile_response(p), 0.5)],
    "tool blocks": lambda p: (
        [
            render.tool_block(text, {"q": text}, text, is_error)
            for is_error in (False, True)
            for text in (p, p + "\n```\n" + p)
        ]
        + [render.tool_block(p, {p: p}, None, False)]
    ),
    "turn": lambda p: [render.turn_html(conversation(p))],
    "%session show": lambda p: [render.transcript_html(conversation(p), system=p)],
    "Response repr": lambda p: [
        hostile_response(p)._repr_html_(),
        Response(text="", messages=(), refusal=p)._repr_html_(),
    ],
    "Session repr": lambda p: [
        Session(
            Agent(provider="test"), session_id=p, system=p, messages=conversation(p)
        )._repr_html_()
    ],
}


@pytest.mark.parametrize("route", ROUTES)
def test_every_payload_is_inert_through_every_route(route):
    for payload in PAYLOADS:
        for markup in ROUTES[route](payload):
            assert_inert(markup, payload)
            assert_sendable(markup)


def test_the_no_stream_output_is_inert_and_sendable(monkeypatch):
    for payload in PAYLOADS:
        for _, data, metadata in shown_by_chat(payload, monkeypatch):
            assert set(data) == {"text/html", "text/plain"}  # never text/markdown
            assert_inert(data["text/html"], payload)
            assert_sendable([data, metadata])


def splits(payload: str, rng: random.Random) -> list[int]:
    """Where to cut the payload across two stream chunks: everywhere, or a sample of it."""
    positions = range(1, len(payload))
    return list(positions) if len(payload) <= 30 else sorted(rng.sample(positions, 30))


@pytest.mark.slow
def test_payloads_split_across_stream_chunks_stay_inert_in_every_update(monkeypatch):
    rng = random.Random(10)
    screen = Screen(monkeypatch)
    updates = 0
    for payload in PAYLOADS:
        for at in splits(payload, rng):
            screen.reset()
            shown = LiveHTML()
            for chunk in ("Some text first.\n\n", payload[:at], payload[at:]):
                screen.now += live.UPDATE_INTERVAL  # every chunk refreshes the display
                shown.text(chunk)
            shown.finish(render.footer(hostile_response(payload), 1.0), {"agent_nb": payload})
            for _, data, metadata in screen.messages:
                assert "text/markdown" not in data
                assert_inert(data["text/html"], payload)
                assert_sendable([data, metadata])
                updates += 1
    assert updates > 3 * len(PAYLOADS)


def test_tool_calls_streamed_with_hostile_names_arguments_and_results(monkeypatch):
    screen = Screen(monkeypatch)
    shown = LiveHTML()
    for index, payload in enumerate(PAYLOADS):
        screen.now += live.UPDATE_INTERVAL
        shown.tool_call(f"c{index}", payload, {"q": payload})
        screen.now += live.UPDATE_INTERVAL
        shown.tool_result(f"c{index}", payload, index % 2 == 0)
        shown.text(payload + "\n\n")
    shown.finish("", None)
    for _, data, _ in screen.messages:
        assert_inert(data["text/html"], "a tool payload")


def test_exported_cells_are_inert_in_every_markdown_renderer():
    """to_notebook() cells pass through CommonMark (JupyterLab, GitHub) and mistune (nbconvert)
    as the HTML they hold, with nothing read as Markdown or math."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    commonmark = MarkdownIt("commonmark", {"html": True})
    for payload in PAYLOADS:
        session = Session(Agent(provider="test"), system=payload, messages=conversation(payload))
        for code_cells in (False, True):
            for cell in session.to_notebook(code_cells=code_cells).cells:
                assert_sendable(cell)
                if cell.cell_type != "markdown":
                    continue
                assert commonmark.render(cell.source + "\n") == cell.source + "\n"  # as is
                assert "$" not in cell.source and "\\" not in cell.source  # no math to extract
                assert_inert(cell.source, payload)
                assert_inert(markdown2html_mistune(cell.source), payload)


def test_history_lines_carry_no_control_characters():
    for payload in PAYLOADS:
        line = render.one_line(payload)
        assert "\n" not in line and "\x1b" not in line and "\x00" not in line
        assert_sendable(line)


# -- odd text ------------------------------------------------------------------------------

ODD = {
    "NUL": "\x000\x00",
    "lone surrogates": "\ud800 a \udfff b \ud83d",
    "a split pair": "\ud83d\ude00",
    "controls": "".join(map(chr, range(32))) + "\x7f\x85\u2028",
    "deep quotes": "> " * 100_000,
    "deep lists": "- " * 50_000,
    "deep indented lists": "\n".join("  " * i + "- x" for i in range(2_000)),
    "deep brackets": "[" * 50_000 + "]" * 50_000,
    "many emphasis marks": "*a _b " * 30_000,
    "many backticks": "`" * 100_000,
    "many fences": "```\n" * 20_000,
    "many entities": "&#" * 50_000 + "&#x110000; &#0; &#xD800;",
    "a huge answer": ("word " * 200 + "\n\n") * 1_000,
    "a huge table": "|a|b|\n|-|-|\n" + "|x|y|\n" * 20_000,
}


#: The odd texts that take seconds to render (the slow tier).
BIG = {"deep brackets", "a huge table"}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(text, id=name, marks=[pytest.mark.slow] * (name in BIG))
        for name, text in ODD.items()
    ],
)
def test_odd_text_never_raises_and_can_be_sent(text, monkeypatch):
    markup = render.html(text)
    assert_sendable(markup)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in markup)
    for route in ("footer", "tool blocks", "%session show"):
        for shown in ROUTES[route](text[:5_000]):
            assert_sendable(shown)
    for _, data, metadata in shown_by_chat(text[:5_000], monkeypatch):
        assert_sendable([data, metadata])
    assert_sendable(render.one_line(text))


def test_a_surrogate_pair_split_across_chunks_is_joined():
    assert render.clean("\ud83d" + "\ude00") == "😀"
    assert render.clean("a\ud83db") == "a\ufffdb"
    assert render.publishable({"k\udfff": ["\ud800", 1, None]}) == {"k\ufffd": ["\ufffd", 1, None]}


# -- what it still looks like ------------------------------------------------------------

ORDINARY = """# Title

Some *emphasis*, **strong**, ~~struck~~ and `code <b>`; it costs $5, not $10.

| name | value |
|------|------:|
| a    | 1     |

- one
- two

3. three
4. four

```python
def area(r):
    return 3.14 * r ** 2  # a comment
```

See [the docs](https://example.com/a?b=1&c=2), <https://example.org>, $x^2$ and

$$
\\int_0^1 f(x)\\,dx
$$
"""


def test_ordinary_markdown_still_renders():
    tree = html5lib.parseFragment(
        render.wrap(render.html(ORDINARY)), treebuilder="etree", namespaceHTMLElements=False
    )
    tags = [e.tag for e in tree.iter()]
    assert {"h1", "em", "strong", "s", "code", "table", "th", "td", "ul", "ol", "pre"} <= set(tags)
    assert [e.get("start") for e in tree.iter("ol")] == ["3"]
    assert [e.get("style") for e in tree.iter("td")] == [None, "text-align:right"]
    code = next(tree.iter("pre"))
    coloured = {s.text: s.get("style") for s in code.iter("span")}
    assert coloured["def"].startswith("color:#") and "italic" in coloured["# a comment"]
    links = {a.get("href"): "".join(a.itertext()) for a in tree.iter("a")}
    assert links["https://example.com/a?b=1&c=2"] == "the docs"
    assert links["https://example.org"] == "https://example.org"
    formulas = [
        "".join(e.itertext()) for e in tree.iter() if "mathjax_process" in (e.get("class") or "")
    ]
    assert formulas == ["$x^2$", "$$\\int_0^1 f(x)\\,dx$$"]  # currency stays text
    assert "mathjax_ignore" in next(tree.iter("div")).get("class")


def test_images_become_links_and_unsafe_math_is_shown_as_code():
    tree = html5lib.parseFragment(
        render.html("![a chart](https://example.com/c.png) $\\href{https://x}{y}$"),
        treebuilder="etree",
        namespaceHTMLElements=False,
    )
    assert not list(tree.iter("img"))
    assert [a.get("href") for a in tree.iter("a")] == ["https://example.com/c.png"]
    assert ["".join(c.itertext()) for c in tree.iter("code")] == ["$\\href{https://x}{y}$"]


# -- in a real kernel ------------------------------------------------------------------------


@pytest.mark.kernel
def test_split_surrogate_pairs_and_nul_reach_the_notebook_without_an_error(server):
    """Item 10: a lone surrogate used to fail the kernel's message send, and spill errors into
    later cells; NUL made the old sanitizer raise."""
    pieces = ["Hi \ud83d", "\ude00, a lone \ud800", " and \x000\x00 too"]
    server.script(
        Reply(raw=chat_completion("whole \udfff", "m"), content_type="application/json"),
        Reply(raw=chat_stream(pieces, model="m\udfff")),
    )
    nb = run_notebook(
        f"%load_ext agent_nb\n%agent provider=openai model=m base_url={server.url} api_key=k",
        "%%chat --no-stream\nfirst",
        # a session of its own: history with a lone surrogate is not resent
        "%%chat --new side\ngo",
        "%session show",
        "%session history",
        "print('the next cell is fine')",
    )
    errors = [o for cell in nb.cells for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    whole = [o for o in nb.cells[1].outputs if o.output_type == "display_data"][-1]
    assert whole.data["text/plain"] == "whole \ufffd"
    streamed = [o for o in nb.cells[2].outputs if o.output_type == "display_data"][-1]
    assert streamed.data["text/plain"] == "Hi 😀, a lone \ufffd and \ufffd0\ufffd too"
    assert "<code>m\ufffd</code>" in streamed.data["text/html"]  # the model name, in the footer
    assert streamed.metadata["agent_nb"]["messages"][1]["parts"][0]["text"].startswith("Hi 😀")
    assert "a lone \ufffd" in nb.cells[3].outputs[0].data["text/html"]
    (history,) = nb.cells[4].outputs
    assert "[assistant] Hi 😀, a lone \ufffd and \ufffd0\ufffd too" in history.data["text/plain"]
    assert text_of(nb.cells[5]) == "the next cell is fine\n"


def test_a_transcript_shows_each_tool_call_with_its_result():
    shown = render.transcript_html(conversation("the result"))
    assert '["the result"]})</code></summary><pre><code>the result</code></pre>' in shown


def test_a_call_to_an_mcp_tool_names_its_server_live_and_in_the_transcript(monkeypatch):
    call = ToolCallPart(id="c1", name="echo", arguments={"text": "hi"})
    own = ToolCallPart(id="c2", name="mine", arguments={})
    sources = {"c1": {"server": "lab", "tool": "echo"}}
    history = [
        Message.user("go"),
        Message(role="assistant", parts=(call, own), metadata={"tool_sources": sources}),
        Message.tool(
            [
                ToolResultPart(tool_call_id="c1", name="echo", content="hi"),
                ToolResultPart(tool_call_id="c2", name="mine", content="ok"),
            ]
        ),
    ]
    shown = render.transcript_html(history)
    assert '<code>echo({"text": "hi"})</code> · MCP server <code>lab</code></summary>' in shown
    assert "<code>mine({})</code></summary>" in shown  # a tool of one's own: as before
    screen = Screen(monkeypatch)  # %%chat's live output, from the tool_call events
    streamed = LiveHTML()
    streamed.tool_call("c1", "echo", {"text": "hi"}, "lab")
    streamed.tool_call("c2", "mine", {}, None)
    streamed.tool_result("c1", "hi", False)
    streamed.tool_result("c2", "ok", False)
    streamed.finish("", None)
    assert screen.shown == render.turn_html(history[1:])


def test_hostile_mcp_server_names_are_inert_wherever_a_call_is_shown(monkeypatch):
    """tool_sources comes back from a notebook or a store someone else wrote."""
    screen = Screen(monkeypatch)
    streamed = LiveHTML()
    for index, payload in enumerate(PAYLOADS):
        call = ToolCallPart(id="c1", name="echo", arguments={})
        sources = {"c1": {"server": payload, "tool": payload}}
        answer = Message(role="assistant", parts=(call,), metadata={"tool_sources": sources})
        assert_inert(render.transcript_html([Message.user("go"), answer]), payload)
        screen.now += live.UPDATE_INTERVAL
        streamed.tool_call(f"c{index}", "echo", {}, payload)
        streamed.tool_result(f"c{index}", "ok", False)
    streamed.finish("", None)
    for _, data, _ in screen.messages:
        assert_inert(data["text/html"], "a server's name")
