"""Images from the notebook in a real kernel: `{fig}`, `%%chat --image PATH`, `--plot`, checked
on the loopback server's request bodies; kept in the notebook's records through a restore."""

from __future__ import annotations

import base64
import io
import json
import os

import nbformat
import pytest
from kernels import Kernel, chat_kernel, run_notebook, text_of
from nbclient import NotebookClient
from PIL import Image

pytest.importorskip("matplotlib")
pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

DRAW = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2))\nax.plot([1, 3, 2])"


def png(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(size: int) -> bytes:
    """A PNG that does not compress: about 3 * size * size bytes."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def content(server) -> list[dict]:
    return server.requests[-1]["messages"][-1]["content"]


def image_bytes(part: dict) -> bytes:
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.removeprefix("data:image/png;base64,"))


def test_fig_image_and_plot_are_sent_as_images(server, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    with chat_kernel(server) as kernel:
        assert kernel.execute(DRAW).error is None  # the inline backend shows it, then closes it
        ran = kernel.execute(f"%%chat --image {photo}\nCompare it with {{fig}}: same {{ax.lines}}?")
        assert ran.error is None, ran.error
        sent = content(server)
        assert [p["type"] for p in sent] == ["image_url", "image_url", "text"]
        assert image_bytes(sent[0]) == png()
        figure = Image.open(io.BytesIO(image_bytes(sent[1])))
        assert figure.format == "PNG" and figure.width > 50
        assert sent[2]["text"].startswith(
            "Compare it with [image 2]: same <Axes.ArtistList of 1 lines>?"
        )

        assert kernel.execute("plt.figure(); plt.bar([1, 2], [3, 4]); None").error is None
        ran = kernel.execute("%%chat --plot\nExplain the plot")
        assert ran.error is None, ran.error
        sent = content(server)
        assert [p["type"] for p in sent] == ["image_url", "text"]
        bar = image_bytes(sent[0])  # the bar chart drawn last, not the first figure
        first = server.requests[0]["messages"][-1]["content"][1]
        assert bar[:8] == b"\x89PNG\r\n\x1a\n" and bar != image_bytes(first)
        assert sent[1] == {"type": "text", "text": "Explain the plot"}

        assert kernel.execute("%session retry").error is None  # a retry sends the image again
        assert image_bytes(content(server)[0]) == bar and content(server)[1] == sent[1]

        again = kernel.execute("%%chat\nthe same as before?")  # images stay in the history
        history = server.requests[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"] * 2 + ["user"]
        assert image_bytes(history[2]["content"][0]) == bar and again.error is None


def test_bad_images_in_a_cell_are_refused_and_nothing_is_sent(server, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("meeting notes, not a picture")
    with chat_kernel(server) as kernel:
        nothing = kernel.execute("%%chat --plot\nwhat is this?")
        assert "no matplotlib figure to send" in nothing.error["evalue"]
        kernel.execute(
            "class Fake:\n    def _repr_png_(self):\n        return b'GIF? no, text'\n"
            "fake = Fake()\nword = 'plain text'"
        )
        cases = {
            f"%%chat --image {tmp_path / 'missing.png'}\nhi": "no file",
            f"%%chat --image {notes}\nhi": "not a PNG, JPEG, GIF or WebP image",
            "%%chat\nwhat is {fake}?": "{fake}: the data is not a PNG, JPEG, GIF or WebP",
        }
        for cell, problem in cases.items():
            ran = kernel.execute(cell)
            assert ran.error is not None and problem in ran.error["evalue"], (cell, ran.error)
            assert "nothing was sent" in ran.error["evalue"]
        assert server.requests == []
        ran = kernel.execute("%%chat\nsay {word}")  # a value that is no picture stays text
        assert ran.error is None and content(server) == "say plain text"


def test_a_model_without_vision_is_refused_before_sending(server, tmp_path):
    server.show = {"capabilities": ["completion", "tools"]}
    with chat_kernel(server) as kernel:
        kernel.execute(f"%agent provider=ollama model=llama3.2 base_url={server.url}")
        kernel.execute("%%chat\nhello")
        kernel.execute(DRAW)
        ran = kernel.execute("%%chat\nwhat is {fig}?")
        assert "'llama3.2' of provider 'ollama' takes no images" in ran.error["evalue"]
        assert "unchanged" in ran.error["evalue"]
        assert len(server.requests) == 1  # only the first, text-only turn
        shown = kernel.execute("%session info")
        assert "messages: 2\n" in shown.shown, shown.shown


def test_images_survive_the_records_and_cost_their_base64_once(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(noise_png(256))  # about 200 kB
    size = big.stat().st_size
    assert 190_000 < size < 210_000
    cells = ["%load_ext agent_nb", f"%%chat --image {big}\nwhat is in it?", "%%chat\nthanks"]
    dump = (
        "from agent_nb.notebook.workspace import Workspace\n_m = Workspace.of(get_ipython())\n"
        "print([len(m.images) for m in _m.sessions['main'].messages])\n"
        "print(len(_m.sessions['main'].messages[0].images[0].data))"
    )
    nb = run_notebook(*cells, dump)
    encoded = len(base64.b64encode(big.read_bytes()))
    assert text_of(nb.cells[-1]).split() == ["[1,", "0,", "0,", "0]", str(encoded)]
    plain = run_notebook("%load_ext agent_nb", "%%chat\nwhat is in it?", "%%chat\nthanks")
    cost = len(json.dumps(nb)) - len(json.dumps(plain))
    assert encoded < cost < encoded + 2_000, cost  # once, as base64: no second copy
    print(f"a {size:,}-byte PNG adds {cost:,} bytes to the saved notebook")

    path = tmp_path / "pictures.ipynb"
    nbformat.write(nb, str(path))
    restored = run_notebook("%load_ext agent_nb", f"%session restore {path}", dump)
    assert text_of(restored.cells[-1]) == text_of(nb.cells[-1])
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # Restart Kernel and Run All
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=False).execute()
    assert "restored 2 turns in 1 session" in text_of(nb.cells[0])
    assert text_of(nb.cells[-1]).split()[:4] == ["[1,", "0,", "0,", "0]"]


def test_plot_finds_the_figure_when_pyplot_was_loaded_before_agent_nb(server):
    with Kernel() as kernel:
        # the inline backend's hooks first: it closes figures after a cell, in post_execute
        kernel.execute("%matplotlib inline\nimport matplotlib.pyplot as plt")
        kernel.execute(
            f"%load_ext agent_nb\n%agent provider=openai model=m base_url={server.url} api_key=k"
        )
        assert kernel.execute("plt.plot([1, 2]); None").error is None
        ran = kernel.execute("%%chat --plot\nwhat is it?")
        assert ran.error is None, ran.error
        assert content(server)[0]["type"] == "image_url"


def test_a_picture_whose_rendering_raises_is_refused_and_nothing_is_sent(server):
    with chat_kernel(server) as kernel:
        kernel.execute(
            "class Hostile:\n    def _repr_png_(self):\n        raise RuntimeError('boom')\n"
            "class Bad:\n    def _repr_png_(self):\n        return 42\n"
            "hostile, bad = Hostile(), Bad()"
        )
        for name in ("hostile", "bad"):
            ran = kernel.execute(f"%%chat\nwhat is {{{name}}}?")
            assert ran.error["ename"] == "ChatError", ran.error
            refused = ran.error["evalue"]
            assert f"{{{name}}}" in refused and "nothing was sent" in refused
        assert server.requests == []
        assert "messages: 0\n" in kernel.execute("%session info").shown
