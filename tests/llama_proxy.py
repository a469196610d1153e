"""A recording proxy on 127.0.0.1 in front of a real server: what agent_nb sent, and the answers.

The tests against the real llama.cpp server check what went over the wire (the history each
round carried, `tool_choice` per round, which settings were sent) without relying on
agent_nb's internals: the agent's `base_url` is the proxy's, and the proxy forwards each
request unchanged, streaming the answer back as it arrives.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from fake_openai import QuietServer


@dataclass
class Exchange:
    """One request the proxy forwarded, and the answer it passed back."""

    path: str
    body: Any
    status: int = 0
    answer: bytes = b""


class RecordingProxy:
    """`with RecordingProxy(upstream) as proxy:`; `proxy.url` is a base_url ending in /v1."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.exchanges: list[Exchange] = []
        self._server = QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the chat requests, in order."""
        return [e.body for e in self.exchanges if e.path.endswith("/chat/completions")]

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(proxy: RecordingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # the probes: /props, /v1/models
            self._forward("GET", b"")

        def do_POST(self) -> None:
            self._forward("POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _forward(self, method: str, raw: bytes) -> None:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            exchange = Exchange(self.path, body)
            proxy.exchanges.append(exchange)
            upstream = http.client.HTTPConnection(*proxy._upstream, timeout=600)
            try:
                headers = {"Content-Type": "application/json"} if raw else {}
                upstream.request(method, self.path, raw or None, headers)
                answer = upstream.getresponse()
                exchange.status = answer.status
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                while chunk := answer.read1(65536):
                    exchange.answer += chunk
                    self.wfile.write(chunk)
                    self.wfile.flush()
            finally:
                upstream.close()
                self.close_connection = True

    return Handler
