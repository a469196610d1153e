"""The live display: where answers are cut, what each output ends as, and what it costs."""

from __future__ import annotations

import random

import html5lib
import IPython.display
import pytest
from xss_corpus import problems

from agent_nb._render import CLOSE, OPEN, html, tool_block
from agent_nb.notebook import live
from agent_nb.notebook.live import LiveHTML, _Blocks


def cuts(text: str) -> list[str]:
    """`text` fed to _Blocks line by line, split wherever it allowed a cut."""
    blocks, pieces, rest = _Blocks(), [], ""
    for line in text.splitlines(keepends=True):
        rest += line
        cut = blocks.last_cut(rest)
        if cut:
            pieces.append(rest[:cut])
            rest = rest[cut:]
            blocks.shift(cut)
    return [*pieces, rest]


def test_paragraphs_are_cut_where_a_new_block_begins():
    assert cuts("One.\n\nTwo.\nstill two.\n\n# Three\n") == [
        "One.\n\n",
        "Two.\nstill two.\n\n",
        "# Three\n",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "```python\nx = 1\n\ny = 2\n```\n",
        "~~~\na\n\nb\n~~~\n",
        "$$\na\n\nb\n$$\n",
        "- item\n\n  more of the item\n",  # indented: the list item goes on
        "para\n\n    indented code\n",
        "````md\n```\n\n```\n````\n",  # a shorter fence inside a longer one
    ],
)
def test_no_cut_inside_a_block(text):
    assert cuts(text) == [text]


def test_a_fence_closes_and_cutting_resumes():
    text = "```\na\n\nb\n```\n\nafter\n"
    assert cuts(text) == ["```\na\n\nb\n```\n\n", "after\n"]


def test_inline_triple_backticks_open_no_fence():
    assert cuts("```x``` inline\n\nnext\n") == ["```x``` inline\n\n", "next\n"]


def test_the_next_block_may_be_cut_before_its_line_ends():
    blocks = _Blocks()
    assert blocks.last_cut("One.\n\n") == 0  # the next block may be indented: wait
    assert blocks.last_cut("One.\n\n  ") == 0
    assert blocks.last_cut("One.\n\nT") == len("One.\n\n")


class Screen:
    """What a front end holds: outputs by display id, and every message that came."""

    def __init__(self, monkeypatch):
        self.reset()
        self.now = 0.0
        monkeypatch.setattr(IPython.display, "display", self._display)
        monkeypatch.setattr(IPython.display, "update_display", self._update)
        monkeypatch.setattr(live.time, "monotonic", lambda: self.now)

    def reset(self) -> None:
        self.outputs: dict[str, dict] = {}
        self.messages: list[tuple[str, dict, dict]] = []  # (kind, data, metadata)

    def _display(self, data, *, raw, display_id, metadata):
        assert display_id not in self.outputs
        self.outputs[display_id] = {"data": data, "metadata": metadata}
        self.messages.append(("display", data, metadata))

    def _update(self, data, *, raw, display_id, metadata):
        self.outputs[display_id] = {"data": data, "metadata": metadata}
        self.messages.append(("update", data, metadata))

    @property
    def shown(self) -> str:
        """The HTML of all outputs, unwrapped and joined."""
        parts = [o["data"]["text/html"] for o in self.outputs.values()]
        assert all(p.startswith(OPEN) and p.endswith(CLOSE) for p in parts)
        parts = [p.removeprefix(OPEN).removesuffix(CLOSE) for p in parts]
        assert all(part.endswith(live.PART_END) for part in parts[:-1])
        return "".join(parts).replace(live.PART_END, "")

    @property
    def sent(self) -> int:
        size = sum(sum(len(v) for v in data.values()) for _, data, _ in self.messages)
        return size + live.MESSAGE_BYTES * len(self.messages)


def words(markup: str) -> list[str]:
    """The text a reader sees in `markup`, word by word."""
    tree = html5lib.parseFragment(markup, treebuilder="etree", namespaceHTMLElements=False)
    return "".join(tree.itertext()).split()


def answer(paragraphs: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(paragraphs):
        kind = rng.random()
        if kind < 0.15:
            out.append(f"```python\ndef f{i}():\n\n    return {i}\n```")
        elif kind < 0.3:
            out.append("\n".join(f"{n}. item <b>{n}</b> `<i>`" for n in range(1, 4)))
        else:
            out.append(" ".join(f"word{i}_{j}" for j in range(rng.randint(20, 120))))
    return "\n\n".join(out)


def stream(screen: Screen, text: str, *, per_token: float, size: int = 4) -> LiveHTML:
    shown = LiveHTML()
    for start in range(0, len(text), size):
        screen.now += per_token
        shown.text(text[start : start + size])
    return shown


@pytest.mark.parametrize("per_token", [0.0001, 0.01])  # a loopback burst; a model's pace
def test_the_outputs_end_as_the_whole_answer_at_a_linear_cost(monkeypatch, per_token):
    screen = Screen(monkeypatch)
    text = answer(300)
    footer = "<p><sub>footer</sub></p>"
    stream(screen, text, per_token=per_token).finish(footer, {"agent_nb": {}})
    assert screen.shown.endswith(footer)
    assert words(screen.shown) == words(html(text) + footer)
    finals = list(screen.outputs.values())
    assert [bool(o["metadata"]) for o in finals] == [False] * (len(finals) - 1) + [True]
    assert [o["data"].get("text/plain") for o in finals] == [None] * (len(finals) - 1) + [text]
    assert all("text/markdown" not in o["data"] for o in finals)
    assert 1 < len(finals) <= live.MAX_PARTS + 1
    final = sum(len(v) for v in screen.messages[-1][1].values()) + live.MESSAGE_BYTES
    assert screen.sent - final <= live.BYTE_BUDGET * len(text) + live.BYTE_ALLOWANCE
    elapsed = screen.now
    assert len(screen.messages) <= elapsed / live.UPDATE_INTERVAL + 2 * len(finals) + 1


def test_finished_blocks_are_rendered_once_and_only_the_tail_again(monkeypatch):
    screen = Screen(monkeypatch)
    rendered = []
    monkeypatch.setattr(live, "html", lambda text: rendered.append(text) or html(text))
    text = answer(300)
    stream(screen, text, per_token=0.01).finish("", None)
    longest = max(map(len, text.split("\n\n"))) + 2
    assert sum(map(len, rendered)) <= len(text) + len(rendered) * longest
    assert len(rendered) <= len(screen.messages) + text.count("\n\n") + 1


def test_every_update_is_inert_html(monkeypatch):
    screen = Screen(monkeypatch)
    text = "Hi <script>alert(1)</script>\n\n" * 200 + "[x](javascript:alert(1))"
    stream(screen, text, per_token=0.01, size=3).finish("", None)
    for _, data, _ in screen.messages:  # a link still open is text, not a link
        assert not problems(data["text/html"]) and "<script" not in data["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in screen.shown
    assert "javascript:" not in screen.shown.replace("[x](javascript:alert(1))", "")


def test_tool_calls_show_in_place_and_complete(monkeypatch):
    screen = Screen(monkeypatch)
    shown = LiveHTML()
    shown.text("Let me look.")
    screen.now += 1
    shown.tool_call("c1", "weather", {"city": "Lyon"})
    assert tool_block("weather", {"city": "Lyon"}, None, False) in screen.shown
    screen.now += 1
    shown.tool_result("c1", "sunny", False)
    screen.now += 1
    shown.text("It is sunny.")
    shown.finish("", None)
    block = tool_block("weather", {"city": "Lyon"}, "sunny", False)
    assert screen.shown == html("Let me look.") + block + html("It is sunny.")


def test_nothing_arrived_shows_the_placeholder(monkeypatch):
    screen = Screen(monkeypatch)
    LiveHTML().finish("<p><sub>f</sub></p>", None, empty="*(nothing)*")
    assert screen.shown == "<p><em>(nothing)</em></p>\n<p><sub>f</sub></p>"


def test_a_streaming_mark_shows_while_the_answer_arrives_and_goes_at_the_end(monkeypatch):
    screen = Screen(monkeypatch)
    shown = stream(screen, answer(40), per_token=0.01)
    assert screen.shown.endswith(live.STREAMING)  # the live tail carries the mark
    assert screen.shown.count(live.STREAMING) == 1  # frozen parts never do
    shown.finish("<p><sub>f</sub></p>", None)
    assert live.STREAMING not in screen.shown and screen.shown.endswith("<p><sub>f</sub></p>")
