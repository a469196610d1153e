"""Real Redis and PostgreSQL servers on 127.0.0.1, started for the tests in a temporary folder.

`scripts/test` installs Debian's redis-server and postgresql; here each server gets a free
port and its own data directory, and is stopped when the tests end. When one cannot start,
`ServerUnavailable` says why, and the tests that need it are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ServerUnavailable(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(f"{what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"{what} did not listen on port {port} within {timeout} s")


class RedisServer:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = open(folder / "redis.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, self._process, "redis-server")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()


class PostgresServer:
    """A throwaway cluster: initdb, then postgres itself, both as an unprivileged user."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        binary = found[-1] if found else shutil.which("postgres")
        if binary is None:
            raise ServerUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
        bin_dir = Path(binary).parent
        self._user = _unprivileged_user()
        data = folder / "pgdata"
        folder.chmod(0o755)
        data.mkdir(mode=0o700)
        socket_dir = folder / "pgsocket"
        socket_dir.mkdir()
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid
            for path in (data, socket_dir):
                os.chown(path, uid, gid)
        user = self._user.pw_name if self._user else pwd.getpwuid(os.getuid()).pw_name
        initdb = self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        if initdb.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {initdb.stdout.decode()[-500:]}")
        self.port = free_port()
        self._log = open(folder / "postgres.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [
                binary,
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **self._as_user(),
        )
        _wait_for_port(self.port, self._process, "postgres")
        self.dsn = f"postgresql://{user}@127.0.0.1:{self.port}/postgres"
        self._wait_ready()

    def _as_user(self) -> dict:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _run(self, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **self._as_user()
        )

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"postgres refuses connections: {exc}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)  # "fast" shutdown: clients may be connected
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (or `nobody`)."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable("running as root, and there is no 'postgres' or 'nobody' user")


class JupyterLabServer:
    """JupyterLab serving `folder` on a free port, without a token, with its own state."""

    def __init__(self, folder: Path) -> None:
        import importlib.util
        import sys

        if importlib.util.find_spec("jupyterlab") is None:
            raise ServerUnavailable("jupyterlab is not installed (pip install jupyterlab)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = folder / "notebooks"
        self.data = folder / "data"  # where the notary keeps the secret that trusts notebooks
        self.root.mkdir()
        env = {
            **os.environ,
            "JUPYTER_DATA_DIR": str(self.data),
            "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
        }
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}"]
        command += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={self.root}"]
        command += ["--IdentityProvider.token=", "--ServerApp.password="]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self._log = open(folder / "lab.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        _wait_for_port(self.port, self._process, "jupyter lab", timeout=60)

    def stop(self) -> None:
        _stop(self._process, self._log)


def _stop(process: subprocess.Popen, log: Any, grace: float = 10) -> None:
    """Terminate `process` (kill it if it lingers past `grace` seconds) and close its log."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a model.

    `scripts/test` builds llama-cpp-python from source; where that failed, or the server does
    not come up, ServerUnavailable says why (with the end of the server's log).
    """

    #: The name the server knows the model by (it answers any name with its one model).
    model = "tiny"

    def __init__(self, folder: Path, model_path: Path, *, n_ctx: int = 2048) -> None:
        import importlib.util
        import sys
        import urllib.request

        if importlib.util.find_spec("llama_cpp") is None:
            raise ServerUnavailable(_llama_missing())
        for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
            if importlib.util.find_spec(module) is None:
                raise ServerUnavailable(
                    f"llama-cpp-python's server extra is missing ({module}): "
                    "pip install 'llama-cpp-python[server]'"
                )
        self.n_ctx = n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = folder / "llama-server.log"
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
        command += ["--model_alias", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(self.port, self._process, "the llama.cpp server", timeout=120)
            with urllib.request.urlopen(f"{self.url}/models", timeout=30) as answer:
                answer.read()
        except (ServerUnavailable, OSError) as exc:
            self.stop()
            raise ServerUnavailable(f"{exc}; its log ends: {self.log()[-800:]!r}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        _stop(self._process, self._log, grace=20)


class LlamaCppServer(LlamaServer):
    """llama.cpp's own server, `llama-server`, on a model, with a context window of `n_ctx`.

    `scripts/test` builds it from the llama.cpp that llama-cpp-python's sources vendor, and
    keeps it beside the wheels (`llama-server-VERSION`); AGENT_NB_LLAMA_SERVER names another.
    Where there is none, or it does not come up, ServerUnavailable says why.
    """

    def __init__(
        self, folder: Path, model_path: Path, *, n_ctx: int = 512, options: tuple[str, ...] = ()
    ) -> None:
        """`options`: more of llama-server's command-line options (`--context-shift`)."""
        import urllib.error
        import urllib.request

        binary = llama_server_binary()
        self.n_ctx = n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = folder / "llama-cpp-server.log"
        command = [str(binary), "--model", str(model_path), "--alias", self.model]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--ctx-size", str(n_ctx)]
        command += ["--parallel", "1", "--threads", "1", "--threads-batch", "1", "--no-warmup"]
        command += options
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(self.port, self._process, "llama-server", timeout=60)
            deadline = time.monotonic() + 60
            while True:  # 503 while the model loads
                try:
                    with urllib.request.urlopen(f"{self.url[:-3]}/health", timeout=5) as answer:
                        answer.read()
                    break
                except urllib.error.HTTPError:
                    if time.monotonic() > deadline:
                        raise ServerUnavailable("llama-server did not load the model") from None
                    time.sleep(0.1)
        except (ServerUnavailable, OSError) as exc:
            self.stop()
            raise ServerUnavailable(f"{exc}; its log ends: {self.log()[-800:]!r}") from None


def llama_serving(
    factory: Any, cls: type[LlamaServer], skipped: list[str] | None = None, **options: Any
) -> Iterator[Any]:
    """A fixture's body: `cls` serving the tests' tiny model (written in a new folder of
    `factory`, a TempPathFactory) until the fixture ends; the test skips, saying why (and
    adding it to `skipped`), if the server cannot start."""
    import pytest
    from llama_model import write_model

    folder = factory.mktemp(cls.__name__)
    try:
        server = cls(folder, write_model(folder / "tiny.gguf"), **options)
    except ServerUnavailable as exc:
        if skipped is not None:
            skipped.append(str(exc))
        pytest.skip(f"no llama.cpp server: {exc}")
    yield server
    server.stop()


def llama_server_binary() -> Path:
    """The llama-server `scripts/test` built, or the one AGENT_NB_LLAMA_SERVER names."""
    import re
    import tomllib

    if named := os.environ.get("AGENT_NB_LLAMA_SERVER"):
        binary = Path(named)
    else:
        root = Path(__file__).resolve().parent.parent
        extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        version = re.search(r"==\s*([\w.]+)", extras["optional-dependencies"]["llama"][0])
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        wheels = Path(os.environ.get("AGENT_NB_WHEELS") or cache / "agent_nb" / "wheels")
        binary = wheels / f"llama-server-{version.group(1) if version else 'unknown'}"
    if not os.access(binary, os.X_OK):
        status = Path(__file__).resolve().parent.parent / ".venv" / "llama-server.status"
        said = status.read_text().strip() if status.exists() else ""
        raise ServerUnavailable(
            f"no llama-server at {binary}"
            + (f" ({said})" if said else "")
            + "; ./scripts/test builds it (or set AGENT_NB_LLAMA_SERVER to one)"
        )
    return binary


def _llama_missing() -> str:
    """Why llama_cpp is not importable: the reason scripts/test wrote down, if it did."""
    reason = Path(__file__).resolve().parent.parent / ".venv" / "llama-cpp.status"
    said = reason.read_text().strip() if reason.exists() else ""
    return (
        "llama-cpp-python is not installed"
        + (f" ({said})" if said else "")
        + ("; ./scripts/test builds it (pip install 'agent-nb[llama]')")
    )


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of a server, that can be made to misbehave.

    `hang()`: from then on it accepts connections and takes what is sent, and never answers
    (a server that is hung, or a network that eats packets without resetting). `cut()`:
    drops every open connection, as a server restart or a network cut does, and then serves
    new ones again. `stop()`: closes everything and stops listening (a server that is down).
    With no target, the proxy is hung from the start.
    """

    def __init__(self, target_port: int | None = None) -> None:
        import threading

        self.target_port = target_port
        self.hung = target_port is None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        _accepting(self._listener, self._connect)

    def _connect(self, client: socket.socket) -> None:
        import threading

        upstream = None
        if not self.hung:
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                return
        with self._lock:
            self._open += [client] + ([upstream] if upstream else [])
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        if upstream is not None:
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if sink is not None and not self.hung:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                if end is not None and not self.hung:
                    _close(end)

    def hang(self) -> None:
        self.hung = True

    def cut(self) -> None:
        with self._lock:
            dropped, self._open = self._open, []
        for end in dropped:
            _close(end)
        self.hung = False

    def stop(self) -> None:
        _stop_listening(self._listener)
        self.hung = False
        self.cut()


def _accepting(listener: socket.socket, connected: Any) -> None:
    """Hand each connection `listener` accepts to `connected`, until it is closed."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        connected(client)


def _stop_listening(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):  # wakes the thread waiting in accept()
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def _close(end: socket.socket) -> None:
    with contextlib.suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()


class EndlessServer:
    """An HTTP server on 127.0.0.1 whose every answer is `head` then `piece` again and again,
    until the client hangs up (or `total` bytes of pieces are sent): a server that never
    stops talking. `sent` counts the bytes of pieces the client's socket took."""

    def __init__(
        self, head: bytes, piece: bytes, *, total: int | None = None, pause: float = 0.0
    ) -> None:
        import threading

        self.head, self.piece, self.total, self.pause = head, piece, total, pause
        self.sent = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        _accepting(
            self._listener,
            lambda client: threading.Thread(
                target=self._serve, args=(client,), daemon=True
            ).start(),
        )

    def _serve(self, client: socket.socket) -> None:
        try:
            _read_request(client)
            client.sendall(self.head)
            while self.total is None or self.sent < self.total:
                client.sendall(self.piece)
                self.sent += len(self.piece)
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            pass
        finally:
            _close(client)

    def stop(self) -> None:
        _stop_listening(self._listener)

    def __enter__(self) -> EndlessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_request(client: socket.socket) -> None:
    """Read one HTTP request (headers, then a body of its content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = client.recv(65536)
        if not more:
            raise OSError("closed before the request ended")
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        more = client.recv(65536)
        if not more:
            raise OSError("closed before the request ended")
        body += more
