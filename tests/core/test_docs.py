"""Every code block in docs/ runs; an ```output block after one must match what it printed."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str | None, int]]:
    """(code, expected output or None, line) for each python block of a page."""
    found = [
        (m.group(1), m.group(2), path.read_text()[: m.start()].count("\n") + 1)
        for m in FENCE.finditer(path.read_text())
    ]
    result = []
    for index, (lang, body, line) in enumerate(found):
        if lang == "python":
            following = found[index + 1] if index + 1 < len(found) else None
            expected = following[1] if following and following[0] == "output" else None
            result.append((body, expected, line))
    return result


def run_page(path: Path) -> None:
    namespace: dict = {"__name__": "__docs__"}
    for code, expected, line in blocks(path):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            compiled = compile(  # dont_inherit: not this module's `from __future__` import
                code,
                f"{path.name}:{line}",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            result = eval(compiled, namespace)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        if expected is not None:
            assert out.getvalue().strip() == expected.strip(), f"{path.name}:{line}"


PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_runs(page, all_providers_env, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    if page.name == "stores.md":  # its Redis and PostgreSQL examples use real servers
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_dsn"))
    assert blocks(page) or ipython_blocks(page), f"{page.name} has no examples"
    run_page(page)


def test_readme_runs(openai_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(README)


def ipython_blocks(path: Path) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each ```ipython block of a page."""
    found = [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]
    result = []
    for index, (lang, body) in enumerate(found):
        if lang == "ipython":
            following = found[index + 1] if index + 1 < len(found) else None
            result.append((body, following[1] if following and following[0] == "output" else None))
    return result


NOTEBOOK_PAGES = [p for p in PAGES if ipython_blocks(p)]


@pytest.mark.kernel
@pytest.mark.timeout(180)
@pytest.mark.parametrize("page", NOTEBOOK_PAGES, ids=lambda p: p.name)
def test_notebook_examples_run_in_a_kernel(page, all_providers_env, monkeypatch):
    """```ipython blocks run as the cells of one notebook in a real kernel."""
    from kernels import run_notebook, text_of

    # the page's %agent lines name openai: the loopback server answers for it
    blocks = ipython_blocks(page)
    nb = run_notebook(*[code for code, _ in blocks], allow_errors=False)
    for cell, (code, expected) in zip(nb.cells, blocks, strict=True):
        if expected is not None:
            assert text_of(cell).strip() == expected.strip(), code


def test_no_page_imports_a_private_name():
    """What a reader copies works with the next release: `agent_nb._x` may change any day."""
    private = re.compile(
        r"^\s*(?:from\s+agent_nb(?:\.\w+)*\._\w+|import\s+agent_nb(?:\.\w+)*\._\w+)", re.M
    )
    found = [
        f"{page.name}:{code[: m.start()].count(chr(10)) + line + 1}: {m.group(0).strip()}"
        for page in [*PAGES, README]
        for code, _, line in blocks(page)
        for m in private.finditer(code)
    ]
    assert found == []
