"""The live display: where answers are cut, what each output ends as, and what it costs."""

from __future__ import annotations

import random
import re

import IPython.display
import pytest

from agent_nb.notebook import live
from agent_nb.notebook.live import LiveMarkdown, _Blocks
from agent_nb.notebook.render import sanitize, tool_block


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
        self.outputs: dict[str, dict] = {}
        self.messages: list[tuple[str, dict]] = []
        self.now = 0.0
        monkeypatch.setattr(IPython.display, "display", self._display)
        monkeypatch.setattr(IPython.display, "update_display", self._update)
        monkeypatch.setattr(live.time, "monotonic", lambda: self.now)

    def _display(self, data, *, raw, display_id, metadata):
        assert display_id not in self.outputs
        self.outputs[display_id] = {"data": data, "metadata": metadata}
        self.messages.append(("display", data))

    def _update(self, data, *, raw, display_id, metadata):
        self.outputs[display_id] = {"data": data, "metadata": metadata}
        self.messages.append(("update", data))

    @property
    def markdown(self) -> str:
        parts = [o["data"]["text/markdown"] for o in self.outputs.values()]
        assert all(part.endswith(live.PART_END) for part in parts[:-1])
        return "".join(parts).replace(live.PART_END, "")

    @property
    def sent(self) -> int:
        size = sum(sum(len(v) for v in data.values()) for _, data in self.messages)
        return size + live.MESSAGE_BYTES * len(self.messages)


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


def stream(screen: Screen, text: str, *, per_token: float, size: int = 4) -> LiveMarkdown:
    shown = LiveMarkdown()
    for start in range(0, len(text), size):
        screen.now += per_token
        shown.text(text[start : start + size])
    return shown


@pytest.mark.parametrize("per_token", [0.0001, 0.01])  # a loopback burst; a model's pace
def test_the_outputs_end_as_the_whole_answer_at_a_linear_cost(monkeypatch, per_token):
    screen = Screen(monkeypatch)
    text = answer(300)
    stream(screen, text, per_token=per_token).finish("<sub>footer</sub>", {"agent_nb": {}})
    assert screen.markdown == sanitize(text) + "\n\n<sub>footer</sub>"
    finals = list(screen.outputs.values())
    assert [bool(o["metadata"]) for o in finals] == [False] * (len(finals) - 1) + [True]
    assert [o["data"].get("text/plain") for o in finals] == [None] * (len(finals) - 1) + [text]
    assert 1 < len(finals) <= live.MAX_PARTS + 1
    final = sum(len(v) for v in screen.messages[-1][1].values()) + live.MESSAGE_BYTES
    assert screen.sent - final <= live.BYTE_BUDGET * len(text) + live.BYTE_ALLOWANCE
    elapsed = screen.now
    assert len(screen.messages) <= elapsed / live.UPDATE_INTERVAL + 2 * len(finals) + 1


def test_every_update_is_sanitized(monkeypatch):
    screen = Screen(monkeypatch)
    text = "Hi <script>alert(1)</script>\n\n" * 200 + "[x](javascript:alert(1))"
    stream(screen, text, per_token=0.01, size=3).finish("", None)
    for _, data in screen.messages:  # a link still open is text, not a link
        assert "<script>" not in data["text/markdown"]
        assert not re.search(r"\]\(javascript:[^)]*\)", data["text/markdown"])
    assert "javascript:" not in screen.markdown


def test_a_code_span_cannot_hide_html_across_paragraphs():
    assert "<img" not in sanitize("`open\n\n<img src=x onerror=alert(1)>\n\nclose`")


def test_tool_calls_show_in_place_and_complete(monkeypatch):
    screen = Screen(monkeypatch)
    shown = LiveMarkdown()
    shown.text("Let me look.")
    screen.now += 1
    shown.tool_call("c1", "weather", {"city": "Lyon"})
    assert tool_block("weather", {"city": "Lyon"}, None, False) in screen.markdown
    screen.now += 1
    shown.tool_result("c1", "sunny", False)
    screen.now += 1
    shown.text("It is sunny.")
    shown.finish("", None)
    block = tool_block("weather", {"city": "Lyon"}, "sunny", False)
    assert screen.markdown == "Let me look.\n\n" + block + "It is sunny."


def test_nothing_arrived_shows_the_placeholder(monkeypatch):
    screen = Screen(monkeypatch)
    LiveMarkdown().finish("<sub>f</sub>", None, empty="*(nothing)*")
    assert screen.markdown == "*(nothing)*\n\n<sub>f</sub>"
