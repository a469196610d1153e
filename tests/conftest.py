"""Shared fixtures: a hermetic environment, the loopback OpenAI server, agents per provider."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from agent_nb import Agent

#: A key for the loopback server; it is checked for, never for its value.
TEST_KEY = "test-key-not-secret-0123456789"

#: The browser tests' screenshots, kept after the run (pytest prunes its tmp dirs): one
#: folder per test, replaced when the test runs again.
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
_SHOTS: list[Path] = []

_ENV = [
    name
    for name in os.environ
    if name.startswith(("OPENAI_", "ANTHROPIC_", "AGENT_NB_", "OLLAMA_"))
]


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real keys or endpoints."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def builtin_providers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider a test (or a docs page) registers is gone after it."""
    from agent_nb import providers

    monkeypatch.setattr(providers, "_REGISTRY", dict(providers._REGISTRY))


@pytest.fixture(scope="session")
def _server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def server(_server: FakeOpenAI) -> FakeOpenAI:
    """The loopback OpenAI-compatible server, with an empty script and request log."""
    _server.reset()
    _server.chunk_delay = 0.0
    return _server


@pytest.fixture
def openai_env(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """OPENAI_BASE_URL and OPENAI_API_KEY point the openai provider at the loopback server."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    return server


@pytest.fixture
def all_providers_env(openai_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """Every provider's environment points at the loopback server (it speaks each protocol)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", openai_env.url.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("OLLAMA_BASE_URL", openai_env.url)
    return openai_env


@pytest.fixture(params=["test", "openai"])
def make_agent(request: pytest.FixtureRequest) -> Callable[..., Agent]:
    """Agent(...) on the offline provider, or on openai against the loopback server."""
    if request.param == "openai":
        request.getfixturevalue("openai_env")

    def make(**kwargs: Any) -> Agent:
        return Agent(provider=request.param, model=kwargs.pop("model", "gpt-4o"), **kwargs)

    make.provider = request.param  # type: ignore[attr-defined]
    return make


# -- session stores ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 for this test run."""
    from servers import RedisServer, ServerUnavailable

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except ServerUnavailable as exc:
        pytest.skip(f"no Redis server: {exc}")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for this test run."""
    import shutil
    import tempfile
    from pathlib import Path

    from servers import PostgresServer, ServerUnavailable

    # not under pytest's private temp folder: as root, the server runs as another user
    folder = Path(tempfile.mkdtemp(prefix="agent_nb-postgres-"))
    try:
        server = PostgresServer(folder)
    except ServerUnavailable as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server.dsn
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


STORE_KINDS = ["memory", "sqlite", "notebook", "redis", "postgres"]


def open_store(kind: str, where: dict[str, Any]) -> Any:
    """A store of `kind`; `where` says where its data lives, so another process can open it."""
    from agent_nb import stores

    if kind == "memory":
        return stores.MemoryStore()
    if kind == "sqlite":
        return stores.SQLiteStore(where["path"])
    if kind == "notebook":
        return stores.NotebookStore(where["path"])
    if kind == "redis":
        return stores.RedisStore(where["url"], prefix=where["prefix"])
    if kind == "postgres":
        return stores.PostgresStore(where["dsn"], table_prefix=where["prefix"])
    raise ValueError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_where(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    """(kind, where) for a fresh, empty store of each kind."""
    import uuid

    kind = request.param
    unique = f"t{uuid.uuid4().hex[:10]}_"
    if kind == "sqlite":
        return kind, {"path": str(tmp_path / "sessions.db")}
    if kind == "notebook":
        return kind, {"path": str(tmp_path / "sessions.ipynb")}
    if kind == "redis":
        return kind, {"url": request.getfixturevalue("redis_url"), "prefix": unique}
    if kind == "postgres":
        return kind, {"dsn": request.getfixturevalue("postgres_dsn"), "prefix": unique}
    return kind, {}


@pytest.fixture
def store(store_where: tuple[str, dict[str, Any]]) -> Iterator[Any]:
    kind, where = store_where
    opened = open_store(kind, where)
    yield opened
    close = getattr(opened, "close", None)
    if close is not None:
        close()


# -- a real llama.cpp server ---------------------------------------------------------------

#: Why the llama.cpp tests were skipped, printed at the end of the run (CI shows it).
_LLAMA_SKIPPED: list[str] = []


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama-cpp-python's server on 127.0.0.1, serving a tiny random model the tests write."""
    from servers import LlamaServer, llama_serving

    yield from llama_serving(tmp_path_factory, LlamaServer, _LLAMA_SKIPPED)


@pytest.fixture(scope="session")
def llama_cpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama.cpp's own llama-server on 127.0.0.1, a 512-token window, on the same tiny model."""
    from servers import LlamaCppServer, llama_serving

    yield from llama_serving(tmp_path_factory, LlamaCppServer, _LLAMA_SKIPPED, n_ctx=512)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Copy the screenshots a test saved in its tmp_path to ARTIFACTS."""
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    shots = sorted(Path(tmp).rglob("*.png")) if tmp is not None else []
    if not shots:
        return
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for shot in shots:
        name = "_".join(shot.relative_to(tmp).parts)
        shutil.copy2(shot, folder / name)
        _SHOTS.append(folder / name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SHOTS:
        terminalreporter.write_line(f"{len(_SHOTS)} screenshots in {ARTIFACTS}")
    if _LLAMA_SKIPPED:
        terminalreporter.write_line(f"llama.cpp tests skipped: {_LLAMA_SKIPPED[0]}")


# -- tiers ---------------------------------------------------------------------------------

#: Fixtures that start a real server (Redis, PostgreSQL, llama.cpp).
_SERVER_FIXTURES = {"redis_url", "postgres_dsn", "llama_server", "llama_cpp_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tiers: `browser` (tests/browser/), `server` (tests/servers/, and any test
    that starts Redis or PostgreSQL: by fixture, or as a store kind or docs page it is
    parametrized with); `kernel`, `slow` and the MCP servers' `server` are marked in the
    test files themselves."""
    for item in items:
        layer = item.path.parent.name
        if layer == "browser":
            item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        values = [str(value) for value in callspec.params.values()] if callspec else []
        if (
            layer == "servers"
            or _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
            or any(v in ("redis", "postgres") or v.endswith("stores.md") for v in values)
        ):
            item.add_marker(pytest.mark.server)
