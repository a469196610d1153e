"""The user's images in an exported conversation, as JupyterLab and nbconvert's HTML show
them in headless Chromium: the picture itself, decoded, at its size."""

from __future__ import annotations

import io

import nbformat
import pytest
from PIL import Image
from test_browser import Browser, lab  # noqa: F401 - the JupyterLab fixture

from agent_nb import Agent

pytestmark = pytest.mark.timeout(600)

LOADED = "(image) => image.complete && image.naturalWidth > 0"
SIZE = "(image) => [image.naturalWidth, image.naturalHeight]"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_prompts_image_shows_in_jupyterlab_and_in_nbconvert_html(lab, tmp_path):  # noqa: F811
    from nbconvert import HTMLExporter

    session = Agent(provider="test").session()
    session.run("What is this? ![not me](https://example.com/pixel.png)", images=[png(40, 30)])
    exported = session.to_notebook()
    nbformat.write(exported, str(lab.root / "pictures.ipynb"))
    page = tmp_path / "pictures.html"
    page.write_text(HTMLExporter().from_notebook_node(exported)[0], encoding="utf-8")
    with Browser() as browser:
        browser.page.goto(f"{lab.url}/lab/tree/pictures.ipynb")
        images = browser.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell img")
        images.first.wait_for(timeout=120_000)
        browser.page.wait_for_function(LOADED, arg=images.first.element_handle())
        in_lab = [image.evaluate(SIZE) for image in images.all()]
        browser.page.close()  # leaving a page with a notebook asks first: a page of its own
        browser.new_page()
        browser.page.goto(page.as_uri())
        images = browser.page.locator(".jp-Cell img")
        images.first.wait_for(timeout=30_000)
        browser.page.wait_for_function(LOADED, arg=images.first.element_handle())
        in_html = [image.evaluate(SIZE) for image in images.all()]
        assert browser.dialogs == []
    assert in_lab == [[40, 30]]  # the user's image; the URL the text names is only a link
    assert in_html == [[40, 30]]
