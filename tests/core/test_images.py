"""Images in messages: ImagePart, `images=` on a turn, each provider's wire form, the stores,
the exports, and the refusal of a model that takes no images before anything is sent."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import httpx
import nbformat
import pytest
from fake_openai import Reply
from PIL import Image

from agent_nb import Agent, Message, Session
from agent_nb._export import to_notebook
from agent_nb.errors import ConfigurationError, ImageError, InvalidSessionData, ServerError
from agent_nb.messages import MAX_IMAGE_BYTES, ImagePart, TextPart
from agent_nb.providers import AnthropicProvider, OpenAIProvider
from agent_nb.providers.testing import TestProvider


def png(width: int = 4, height: int = 3, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="JPEG")
    return buffer.getvalue()


def noise(size: int) -> bytes:
    """A PNG that does not compress: about 3 * size * size bytes."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def agent(server: Any, provider: str = "openai", model: str = "vision-model") -> Agent:
    return Agent(provider=provider, model=model, base_url=server.url, api_key="sk-test")


# -- ImagePart ---------------------------------------------------------------------------------


def test_image_part_finds_its_type_by_the_bytes_and_round_trips():
    for raw, media_type in [(png(), "image/png"), (jpeg(), "image/jpeg")]:
        part = ImagePart.from_bytes(raw)
        assert part.media_type == media_type and base64.b64decode(part.data) == raw
        assert part.data_url == f"data:{media_type};base64,{b64(raw)}"
    gif, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (2, 2)).save(gif, format="GIF")
    Image.new("RGB", (2, 2)).save(webp, format="WEBP")
    assert ImagePart.from_bytes(gif.getvalue()).media_type == "image/gif"
    assert ImagePart.from_bytes(webp.getvalue()).media_type == "image/webp"
    message = Message(role="user", parts=(ImagePart.from_bytes(png()), TextPart(text="what?")))
    data = message.to_dict()
    assert data["parts"][0] == {"type": "image", "media_type": "image/png", "data": b64(png())}
    assert Message.model_validate(json.loads(json.dumps(data))) == message
    assert message.text == "what?" and message.images == [message.parts[0]]
    assert "image" in repr(message) and b64(png())[:20] not in repr(message.parts[0])


@pytest.mark.parametrize(
    ("media_type", "data", "problem"),
    [
        ("image/png", b64(b"just some text, not a picture"), "not an image"),
        ("image/jpeg", b64(png()), "is a PNG image, not image/jpeg"),
        ("image/png", "not base64 at all!", "not base64"),
        ("image/bmp", b64(b"BM" + bytes(60)), "media_type"),
        ("image/webp", b64(b"RIFF\0\0\0\0WAVEfmt "), "not an image"),  # RIFF, but a WAV
        ("image/png", "A" * (MAX_IMAGE_BYTES // 3 * 4 + 8), f"{MAX_IMAGE_BYTES:,} bytes"),
    ],
)
def test_image_part_refuses_data_that_is_not_what_it_says(media_type, data, problem):
    with pytest.raises(ValueError, match=problem):
        ImagePart(media_type=media_type, data=data)


def test_session_data_with_a_forged_image_is_refused_whole():
    session = Agent(provider=TestProvider(), model="test").session()
    session.run("look", images=[png()])
    data = session.to_dict()
    data["messages"][0]["parts"][0]["data"] = b64(b"<script>alert(1)</script>")
    with pytest.raises(InvalidSessionData, match="not an image"):
        Session.from_dict(data, session.agent)


# -- images= on a turn -------------------------------------------------------------------------


def test_images_of_every_kind_become_image_parts(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1, 1))
    axes.plot([1, 2, 3])
    path = tmp_path / "photo.jpg"
    path.write_bytes(png())  # a PNG with the wrong extension: sent as what it is
    session = Agent(provider=TestProvider(), model="test").session()
    pil = Image.new("RGB", (3, 3), "green")
    session.run("look", images=[path, str(path), png(), ImagePart.from_bytes(jpeg()), pil, figure])
    prompt = session.messages[0]
    assert prompt.text == "look"
    kinds = [p.media_type for p in prompt.images]
    assert kinds == ["image/png", "image/png", "image/png", "image/jpeg", "image/png", "image/png"]
    assert base64.b64decode(prompt.images[0].data) == png()
    assert Image.open(io.BytesIO(base64.b64decode(prompt.images[5].data))).format == "PNG"
    session.run("one alone", images=png())
    assert len(session.messages[2].images) == 1
    plt.close(figure)


def test_bad_images_are_refused_before_sending_and_nothing_is_kept(server, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as file:  # sparse: large on paper, nothing read to refuse it
        file.write(png())
        file.truncate(MAX_IMAGE_BYTES + 1)
    session = agent(server).session()
    session.run("hello")
    before = session.to_dict()
    server.reset()
    cases = [
        ([text], "not a PNG, JPEG, GIF or WebP image"),
        ([huge], f"over the cap of {MAX_IMAGE_BYTES:,} bytes"),
        (["/dev/zero"], "over the cap"),  # endless: no more than the cap is read
        ([tmp_path / "missing.png"], "no file"),
        ([tmp_path], "is a folder"),
        ([png(), 42], "image 2 is 42, not an image"),
        ([object()], "not an image; images= takes"),
        ([b"GIF89a" + bytes(10), b"\x00" * 16], "image 2: the data is not"),
    ]
    for images, problem in cases:
        with pytest.raises(ImageError, match=problem):
            session.run("what is it?", images=images)
        assert session.to_dict() == before
    assert server.requests == []


def test_an_image_too_large_is_refused_naming_the_cap():
    raw = png() + bytes(MAX_IMAGE_BYTES)
    with pytest.raises(ImageError, match=r"3,932,160 bytes \(3.75 MiB\)"):
        Agent(provider=TestProvider(), model="test").session().run("x", images=[raw])


def test_every_entry_point_takes_images(server):
    session = agent(server).session()

    def last_content() -> list[dict[str, Any]]:
        return server.requests[-1]["messages"][-1]["content"]

    with session.stream("streamed", images=[png()]) as events:
        assert "".join(e.text for e in events if e.type == "text_delta")
    assert [p["type"] for p in last_content()] == ["image_url", "text"]
    session.json("as json", schema=dict[str, int], images=[jpeg()])
    assert last_content()[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")

    async def both() -> None:
        await session.run_async("async", images=[png()])
        async with session.stream_async("async stream", images=[png(), png()]) as events:
            async for _ in events:
                pass

    import asyncio

    asyncio.run(both())
    assert [len(m.images) for m in session.messages if m.role == "user"] == [1, 1, 1, 2]


def test_images_belong_to_user_messages_and_turns_only():
    image = ImagePart.from_bytes(png())
    with pytest.raises(ValueError, match="only user messages hold images"):
        Message(role="assistant", parts=(image, TextPart(text="I drew this")))
    with pytest.raises(ConfigurationError, match="images= goes with a prompt"):
        Agent(provider=TestProvider(), model="test", images=[png()])


def test_an_image_counts_as_about_a_thousand_tokens_when_the_server_counts_none(server):
    session = agent(server).session()
    server.script(Reply(text="a red square", no_usage=True))
    with session.stream("what?", images=[noise(128)]) as events:
        for _ in events:
            pass
    usage = events.response.usage
    assert usage.estimated and 1_000 < usage.input_tokens < 1_100


# -- each provider's wire form -----------------------------------------------------------------


def test_each_provider_sends_the_image_in_its_own_form(server):
    raw = png()
    url = f"data:image/png;base64,{b64(raw)}"
    expected = {
        "openai": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "what is this?"},
        ],
        "ollama": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "what is this?"},
        ],
        "openai-responses": [
            {"type": "input_image", "image_url": url, "detail": "auto"},
            {"type": "input_text", "text": "what is this?"},
        ],
        "anthropic": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": b64(raw)},
            },
            {"type": "text", "text": "what is this?"},
        ],
    }
    for provider, content in expected.items():
        server.reset()
        session = agent(server, provider).session()
        response = session.run("what is this?", images=[raw])
        assert response.text == "You said: “what is this?”."
        body = server.requests[0]
        sent = body["input"] if provider == "openai-responses" else body["messages"]
        assert sent == [{"role": "user", "content": content}], provider
        response = session.run("and now?")  # the image stays in the history, sent again
        sent = server.requests[1]["input" if provider == "openai-responses" else "messages"]
        assert sent[0] == {"role": "user", "content": content}, provider
        assert sent[-1]["content"] in ("and now?", [{"type": "text", "text": "and now?"}])


# -- a model that takes no images --------------------------------------------------------------


def _recorder() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    return seen, httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("cls", "model"),
    [
        (OpenAIProvider, "gpt-3.5-turbo"),
        (OpenAIProvider, "gpt-4"),
        (OpenAIProvider, "gpt-4-0613"),
        (OpenAIProvider, "o3-mini"),
        (AnthropicProvider, "claude-2.1"),
        (AnthropicProvider, "claude-instant-1.2"),
    ],
)
def test_a_text_only_model_is_refused_before_anything_is_sent(cls, model):
    seen, transport = _recorder()
    session = Agent(provider=cls(api_key="sk-test", transport=transport), model=model).session()
    with pytest.raises(ImageError, match=f"model {model!r} .* takes no images.*nothing was sent"):
        session.run("what is this?", images=[png()])
    assert seen == [] and session.messages == []


@pytest.mark.parametrize(
    ("cls", "model"),
    [(OpenAIProvider, "gpt-4o"), (OpenAIProvider, "gpt-4-turbo"), (AnthropicProvider, "claude-3")],
)
def test_a_model_that_takes_images_is_asked(cls, model):
    seen, transport = _recorder()
    provider = cls(api_key="sk-test", transport=transport, max_retries=0)
    session = Agent(provider=provider, model=model).session()
    with pytest.raises(ServerError):  # sent: the mock server fails it
        session.run("what is this?", images=[png()])
    assert len(seen) == 1


def test_llama_cpp_props_and_ollama_show_decide(server):
    server.props = {"modalities": {"vision": False, "audio": False}}
    session = agent(server, "openai-compatible", "tiny").session()
    with pytest.raises(ImageError, match="'tiny' of provider 'openai-compatible' takes no"):
        session.run("look", images=[png()])
    assert server.requests == [] and session.messages == []
    assert server.probes == [("GET", "/props", None)]
    session.run("plain text still goes")  # no image: nothing refused
    assert len(server.requests) == 1
    # /props asked once for both vision and the window (which it did not say: asked on)
    assert [p for p in server.probes if p[1] == "/props"] == [("GET", "/props", None)]

    server.reset()
    server.props = {"modalities": {"vision": True}}
    agent(server, "openai-compatible", "llava").session().run("look", images=[png()])
    assert len(server.requests) == 1

    server.reset()
    server.props = None
    server.show = {"capabilities": ["completion", "tools"]}
    session = agent(server, "ollama", "llama3.2").session()
    with pytest.raises(ImageError, match="'llama3.2' of provider 'ollama' takes no images"):
        session.run("look", images=[png()])
    assert server.probes == [("POST", "/api/show", {"model": "llama3.2"})]
    assert server.requests == []
    server.show = {"capabilities": ["completion", "vision"]}
    agent(server, "ollama", "llava").session().run("look", images=[png()])
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "answer", [["vision"], {"modalities": "vision"}, {"modalities": {"vision": "yes"}}, "x"]
)
def test_a_server_that_says_nothing_clear_is_sent_the_image(server, answer):
    server.props = answer
    agent(server, "openai-compatible", "m").session().run("look", images=[png()])
    assert len(server.requests) == 1


def test_images_in_the_history_are_refused_for_a_text_only_model(server):
    server.show = {"capabilities": ["completion"]}
    session = agent(server, "ollama", "llava").session()
    server.show = {"capabilities": ["completion", "vision"]}
    session.run("look", images=[png()])
    before = session.to_dict()
    server.show = {"capabilities": ["completion"]}
    with pytest.raises(ImageError, match="1 image in the session's history"):
        session.run("and now?", model="text-only")
    assert session.to_dict() == before and len(server.requests) == 1


# -- stores and exports ------------------------------------------------------------------------


def test_every_store_keeps_images(store):
    bot = Agent(provider=TestProvider(), model="test", store=store)
    session = bot.session(session_id="pics")
    session.run("first", images=[png(), jpeg()])
    session.run("second", images=[png(color="blue")])
    loaded = bot.load_session("pics")
    assert loaded.to_dict() == session.to_dict()
    images = [p for m in loaded.messages for p in m.images]
    assert [base64.b64decode(p.data) for p in images] == [png(), jpeg(), png(color="blue")]


def test_the_export_shows_the_users_images_and_reads_them_back(tmp_path):
    session = Agent(provider=TestProvider(), model="test").session()
    session.run("what is this? ![x](https://evil.example/pixel.png)", images=[png()])
    notebook = to_notebook(session)
    nbformat.validate(notebook)
    prompt = notebook.cells[1].source
    assert f'<img src="data:image/png;base64,{b64(png())}"' in prompt
    assert prompt.count("<img") == 1  # the URL the text names is a link, never an image
    assert 'href="https://evil.example/pixel.png"' in prompt
    path = tmp_path / "export.ipynb"
    nbformat.write(notebook, path)
    back = Session.from_notebook(path, session.agent)
    assert back.to_dict()["messages"] == session.to_dict()["messages"]


def test_a_prompt_attaches_pictures_and_leaves_math_and_text_as_text():
    from agent_nb.notebook import prompts

    class Picture:
        def _repr_png_(self) -> bytes:
            return png()

    class Formula(Picture):  # sympy's objects render as PNG too, and as LaTeX: text
        def _repr_latex_(self) -> str:
            return "$x^2$"

        def __str__(self) -> str:
            return "x**2"

    images: list[ImagePart] = []
    namespace = {"pic": Picture(), "pil": Image.new("RGB", (2, 2)), "f": Formula(), "n": 3}
    text, _ = prompts.fill("{pic} and {pil}, then {f} and {n}", namespace, images)
    assert text == "[image 1] and [image 2], then x**2 and 3"
    assert [base64.b64decode(i.data) == png() for i in images] == [True, False]
    assert prompts.fill("{pic}", namespace)[0].startswith("<")  # no list given: text only


def test_the_users_images_show_in_every_transcript_and_the_models_urls_stay_links():
    """%session show, a Session's HTML and the chat panel's saved transcript show the image
    the user sent (a data URL built from its checked bytes); a URL in any text, the user's
    or the model's, is a link and never loads."""
    from agent_nb import ChatPanel
    from agent_nb import _render as render

    session = Agent(provider=TestProvider(), model="test").session()
    session.run("what is this? ![x](https://evil.example/pixel.png)", images=[png(), jpeg()])
    shown = {
        "transcript": render.transcript_html(session.messages),
        "session": session._repr_html_(),
        "panel": ChatPanel(session)._fallback()["text/html"],
        "panel's log": "".join(i["html"] for i in ChatPanel(session)._items_of(session.messages)),
    }
    for where, html in shown.items():
        assert f'<img src="data:image/png;base64,{b64(png())}"' in html, where
        assert f'<img src="data:image/jpeg;base64,{b64(jpeg())}"' in html, where
        assert html.count("<img") == 2 and 'evil.example/pixel.png"' in html, where
