"""What a new user meets first, in real JupyterLab: the shipped notebooks open unmodified."""

from __future__ import annotations

import platform
from pathlib import Path

import nbformat
import pytest
from test_browser import Browser, lab  # noqa: F401 - `lab` is a fixture
from test_panel_browser import open_notebook

pytestmark = pytest.mark.timeout(600)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_the_shipped_notebooks_open_unmodified(lab, tmp_path):  # noqa: F811
    """Opened and their kernel started, not yet run: nothing to save, no dialog. (The one
    thing a notebook cannot match on every machine, the Python version JupyterLab writes
    into it, is set to this one's.)"""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names, NOTEBOOKS
    with Browser() as browser:
        for name in names:
            nb = nbformat.read(NOTEBOOKS / name, as_version=4)
            nb.metadata["language_info"]["version"] = platform.python_version()
            nbformat.write(nb, str(lab.root / f"shipped-{name}"))
            browser.page.close()  # a page of its own: no "leave the page?" in between
            browser.new_page()
            open_notebook(browser, f"{lab.url}/lab/tree/shipped-{name}?reset", tmp_path)
            browser.page.wait_for_timeout(5_000)  # JupyterLab has written the kernel's info
            dirty = browser.page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count()
            dialogs = browser.page.locator(".jp-Dialog").all_inner_texts()
            assert (dirty, dialogs) == (0, []), name
        assert browser.dialogs == []
