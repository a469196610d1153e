"""Keys never leak: not into an error, a repr or a log, and never to another origin.

A hostile loopback server echoes every request header and the body back inside its answers
(error bodies of each status, error events mid-stream, unreadable events, response headers,
redirect targets); whatever agent_nb then shows must hold neither the key nor any other
credential. A second server on another port (another origin) stands for the redirect target.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import traceback
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from fake_openai import QuietServer, Reply

from agent_nb import Agent
from agent_nb.errors import AgentError, ProviderError
from agent_nb.providers import resolve
from agent_nb.providers._redact import REDACTED, Redactor, secrets_of

#: A key of the usual shape, one of no known shape (only its exact value can be found), and
#: a secret in a header the user added.
SHAPED_KEY = "sk-ant-" + "api03-Q7fZ2kLm9XpR4vT8wY1bN6cD3eH5jK0sU"  # built: no key in the source
PLAIN_KEY = "correct-horse-battery-staple-0451"
PROXY_SECRET = "proxy-pass-5d41402abc4b2a76b9719d911017c592"
SECRETS = [SHAPED_KEY, PLAIN_KEY, PROXY_SECRET]
PROVIDERS = ["openai", "openai-compatible", "ollama", "openai-responses", "anthropic"]
PATHS = {"chat": "/chat/completions", "messages": "/messages", "responses": "/responses"}


class EchoServer:
    """Answers each request by the next scripted mode, echoing what it was sent."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.script: deque[tuple] = deque()
        self._server = QuietServer(("127.0.0.1", 0), _echo_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        self.seen.clear()
        self.script.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _echo_handler(server: EchoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _any(self) -> None:
            if not self.path.endswith(tuple(PATHS.values())):  # a window or vision probe
                self._send(404, "{}", "application/json")  # (/props, /api/show): none here
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            headers = dict(self.headers.items())
            server.seen.append(
                {"method": self.command, "path": self.path, "headers": headers, "body": body}
            )
            mode = server.script.popleft() if server.script else ("status", 500, "message")
            echo = json.dumps({"headers": headers, "body": body})
            values = " ".join(headers.values())  # the bare values, no names to go by
            protocol = next((p for p, end in PATHS.items() if self.path.endswith(end)), "chat")
            getattr(self, f"_{mode[0].replace('-', '_')}")(mode, echo, values, protocol)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        def _send(self, status: int, body: str, content_type: str, **headers: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(data)

        def _status(self, mode: tuple, echo: str, values: str, protocol: str) -> None:
            status, place = mode[1], mode[2]
            auth = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
            error: dict[str, Any] = {"type": "invalid_request_error", "message": "refused"}
            payload: dict[str, Any] = {"error": error}
            content_type = "application/json"
            if place == "message":
                error["message"] = f"you sent {echo}"
            elif place == "values":
                error["message"] = f"you sent {values}"
            elif place == "code":
                error["code"] = auth
                error["type"] = values
            elif place == "request-id":
                payload["request_id"] = values
            elif place == "metadata":  # OpenRouter's shape, the key across the 300-char cut
                error["metadata"] = {"raw": "x" * 1976 + auth.removeprefix("Bearer ")}
            body = json.dumps(payload)
            if place == "escaped":  # JSON escapes only decoding reveals, across the cut
                escaped = "".join(f"\\u{ord(c):04x}" for c in auth.removeprefix("Bearer "))
                raw = "x" * 1976 + escaped
                body = '{"error": {"message": "refused", "metadata": {"raw": "' + raw + '"}}}'
            if place == "html":
                body, content_type = f"<html><pre>{echo}</pre></html>", "text/html"
            elif place == "cut":  # not JSON, and the key where the excerpt is cut
                body, content_type = "y" * 285 + auth.removeprefix("Bearer "), "text/plain"
            self._send(
                status,
                body,
                content_type,
                x_request_id=auth or "none",
                x_echo=values,
                retry_after=auth or "1",
            )

        def _midstream(self, mode: tuple, echo: str, values: str, protocol: str) -> None:
            """Some text, then an error event (or an unreadable event) carrying the echo."""
            unreadable = mode[1] == "unreadable"
            if protocol == "chat":
                events = ['{"choices": [{"index": 0, "delta": {"content": "Hi"}}]}']
                error = json.dumps({"error": {"message": f"you sent {echo}", "code": values}})
            elif protocol == "messages":
                events = [
                    json.dumps({"type": "message_start", "message": {"model": "c"}}),
                    json.dumps(
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        }
                    ),
                    json.dumps(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": "Hi"},
                        }
                    ),
                ]
                error = json.dumps(
                    {"type": "error", "error": {"type": "api_error", "message": echo}}
                )
            else:
                events = ['{"type": "response.output_text.delta", "delta": "Hi"}']
                error = json.dumps({"type": "error", "code": values, "message": echo})
            last = (
                f"data: {{not json {values}\n\n"
                if unreadable
                else f"event: error\ndata: {error}\n\n"
            )
            body = "".join(f"data: {e}\n\n" for e in events) + last
            self._send(200, body, "text/event-stream", x_echo=values)

        def _not_events(self, mode: tuple, echo: str, values: str, protocol: str) -> None:
            """A 200 answer that is neither the JSON nor the event stream asked for."""
            self._send(200, f"<pre>{echo}</pre> {{", "text/html")

        def _bad_shape(self, mode: tuple, echo: str, values: str, protocol: str) -> None:
            """JSON whose fields have the wrong types, the echo inside."""
            payload = {"choices": [values], "content": values, "output": values, "echo": echo}
            self._send(200, json.dumps(payload), "application/json")

        def _redirect(self, mode: tuple, echo: str, values: str, protocol: str) -> None:
            self._send(mode[1], echo, "application/json", location=mode[2])

    return Handler


@pytest.fixture(scope="module")
def _echo_servers():
    servers = EchoServer(), EchoServer()
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def echo(_echo_servers):
    server = _echo_servers[0]
    server.reset()
    return server


@pytest.fixture
def elsewhere(_echo_servers):
    """Another origin: the same host, another port."""
    server = _echo_servers[1]
    server.reset()
    return server


def make_agent(provider: str, origin: str, key: str = SHAPED_KEY) -> Agent:
    base = origin if provider == "anthropic" else f"{origin}/v1"
    instance, _ = resolve(
        provider,
        "m",
        api_key=key,
        base_url=base,
        max_retries=0,
        headers={"X-Proxy-Token": PROXY_SECRET},
    )
    return Agent(provider=instance, model="m")


BEARER = re.compile(r"bearer\s+(?!\[redacted\])[A-Za-z0-9]", re.IGNORECASE)


def shown(exc: BaseException, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything of an error a person or a log could see."""
    texts = [str(exc), repr(exc), *map(str, exc.args), "".join(traceback.format_exception(exc))]
    texts += [repr(value) for value in vars(exc).values()]
    texts.append(caplog.text)
    return texts


def assert_clean(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            for piece in (secret, secret[:10], secret[8:20], secret[-10:]):  # no part either
                assert piece not in text, f"{piece!r} leaked in: {text[:3000]}"
        assert not BEARER.search(text), text[:3000]


def failing_turn(provider: str, origin: str, stream: bool, key: str, caplog) -> AgentError:
    caplog.set_level(logging.DEBUG, logger="agent_nb")
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log URLs and raw headers
    session = make_agent(provider, origin, key).session()
    with pytest.raises(AgentError) as caught:
        if stream:
            list(session.stream("my private question"))
        else:
            session.run("my private question")
    assert session.messages == []
    return caught.value


STATUSES = [400, 401, 403, 404, 429, 500]
PLACES = ["message", "values", "code", "request-id", "metadata", "escaped", "html", "cut"]


def echoed_error(echo, caplog, provider: str, status: int, place: str) -> ProviderError:
    """The error of a turn whose answer echoes the request; the key has no known shape."""
    echo.script.append(("status", status, place))
    error = failing_turn(provider, echo.origin, status % 2 == 0, PLAIN_KEY, caplog)
    assert isinstance(error, ProviderError) and error.status == status
    assert PLAIN_KEY in json.dumps(echo.seen[0]["headers"])  # the server did have it to echo
    assert_clean(shown(error, caplog))
    return error


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_bodies_that_echo_the_request_show_no_credential(echo, caplog, provider, status):
    error = echoed_error(echo, caplog, provider, status, "message")
    assert REDACTED in error.message  # the rest of what the server said is kept
    assert "my private question" in error.message


@pytest.mark.parametrize("place", PLACES[1:])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_credentials_echoed_anywhere_in_an_error_are_redacted(echo, caplog, provider, place):
    """In the code, the request id, OpenRouter's metadata, JSON escapes, HTML, a cut excerpt."""
    echoed_error(echo, caplog, provider, STATUSES[PLACES.index(place) % len(STATUSES)], place)


@pytest.mark.parametrize("mode", ["error-event", "unreadable"])
@pytest.mark.parametrize("key", [SHAPED_KEY, PLAIN_KEY], ids=["shaped-key", "plain-key"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_errors_mid_stream_show_no_credential(echo, caplog, provider, key, mode):
    echo.script.append(("midstream", mode))
    error = failing_turn(provider, echo.origin, True, key, caplog)
    assert isinstance(error, ProviderError)
    assert_clean(shown(error, caplog))


@pytest.mark.parametrize("mode", ["not-events", "bad-shape"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreadable_answers_show_no_credential(echo, caplog, provider, stream, mode):
    echo.script.append((mode,))
    error = failing_turn(provider, echo.origin, stream, PLAIN_KEY, caplog)
    assert isinstance(error, ProviderError)
    assert_clean(shown(error, caplog))


def test_an_unreachable_base_url_with_credentials_in_it_shows_none(caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://user:{PLAIN_KEY}@127.0.0.1:{port}/v1?api_key={PROXY_SECRET}"
    session = Agent(
        provider="openai", model="m", base_url=base, api_key=SHAPED_KEY, max_retries=0
    ).session()
    with pytest.raises(AgentError) as caught:
        session.run("hi")
    assert "cannot reach" in str(caught.value)
    assert_clean(shown(caught.value, caplog))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_reprs_show_no_credential(provider):
    base = f"https://user:{PLAIN_KEY}@example.test/v1?api_key={PROXY_SECRET}"
    instance, _ = resolve(
        provider, "m", api_key=SHAPED_KEY, base_url=base, headers={"X-Proxy-Token": PROXY_SECRET}
    )
    agent = Agent(provider=instance, model="m")
    session = agent.session()
    texts = [repr(x) for x in (instance, instance._http, agent, session)]
    texts += [str(x) for x in (instance, agent, session)]
    assert_clean(texts)
    assert "example.test" in repr(instance)


# -- redirects ---------------------------------------------------------------------------------

REDIRECTS = [301, 302, 303, 307, 308]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_to_another_origin_is_refused(echo, elsewhere, caplog, provider, status, stream):
    target = f"{elsewhere.origin}/v1/chat/completions?api_key={PLAIN_KEY}"
    echo.script.append(("redirect", status, target))
    error = failing_turn(provider, echo.origin, stream, SHAPED_KEY, caplog)
    assert elsewhere.seen == []  # not the key, not the conversation, nothing at all
    assert isinstance(error, ProviderError) and not error.retryable
    message = str(error)
    assert "another origin" in message and elsewhere.origin in message and "base_url" in message
    assert_clean(shown(error, caplog))
    assert len(echo.seen) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_to_https_on_the_same_host_is_refused_too(echo, caplog, provider):
    echo.script.append(("redirect", 307, "https://" + echo.origin.removeprefix("http://")))
    error = failing_turn(provider, echo.origin, True, SHAPED_KEY, caplog)
    assert "another origin" in str(error) and len(echo.seen) == 1


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_within_the_origin_is_followed_with_the_body(server, provider, status):
    path = {"anthropic": "/v1/messages", "openai-responses": "/v1/responses"}.get(
        provider, "/v1/chat/completions"
    )
    server.script(Reply(status=status, headers={"location": f"/v1/moved{path}"}))
    base = server.url.removesuffix("/v1") if provider == "anthropic" else server.url
    instance, _ = resolve(provider, "m", api_key=SHAPED_KEY, base_url=base, max_retries=0)
    session = Agent(provider=instance, model="m").session()
    assert session.run("Hello there").text
    first, second = server.requests
    assert first == second and "Hello there" in json.dumps(second)
    sent = {k.lower(): v for k, v in server.request_headers[1].items()}
    assert SHAPED_KEY in (sent.get("authorization", "") + sent.get("x-api-key", ""))


def test_a_redirect_loop_is_an_error(server):
    server.script(*[Reply(status=307, headers={"location": "/v1/chat/completions"})] * 10)
    session = Agent(
        provider="openai", model="m", base_url=server.url, api_key="k", max_retries=0
    ).session()
    with pytest.raises(ProviderError, match="redirects"):
        session.run("hi")
    assert len(server.requests) == 6


# -- the redactor itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('{"Authorization": "Bearer abcdefghijkl"}', '{"Authorization": "[redacted]"}'),
        ("authorization: Bearer abcdefghijkl", "authorization: [redacted]"),
        ('"authorization": "bearer abcdefghijkl"', '"authorization": "[redacted]"'),
        ("proxy-authorization: Basic dXNlcjpwYXNz", "proxy-authorization: [redacted]"),
        ("BEARER abcdefghijkl", "BEARER [redacted]"),
        ("x-api-key: abc, next", "x-api-key: [redacted], next"),
        (
            "https://h/v1?key=abc&api_key=def&x=1",
            "https://h/v1?key=[redacted]&api_key=[redacted]&x=1",
        ),
        ("https://me:hunter2@h/", "https://me:[redacted]@h/"),
        ("the key sk-proj-abcdefghijklmnop is wrong", "the key [redacted] is wrong"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here", "jwt [redacted] here"),
        ("Google AIzaSyA1234567890abcdefghijklmnopqrstu", "Google [redacted]"),
        # what providers say must survive
        ("invalid x-api-key", "invalid x-api-key"),
        (
            "Incorrect API key provided: invalid-*****2345.",
            "Incorrect API key provided: invalid-*****2345.",
        ),
        ("Bearer token required", "Bearer token required"),
        ("max_tokens: 4096 exceeds the token limit", "max_tokens: 4096 exceeds the token limit"),
    ],
)
def test_redaction_shapes(text, kept):
    redact = Redactor()
    assert redact(text) == kept
    assert redact(redact(text)) == redact(text)  # redacting twice changes nothing more


def test_the_exact_credentials_are_redacted_whatever_their_shape():
    headers = {"Authorization": f"Bearer {PLAIN_KEY}", "X-Proxy-Token": PROXY_SECRET, "A": "short"}
    redact = Redactor(secrets_of(headers, "https://u:pw-9f8e7d6c5b@h/?token=tok-0123456789"))
    text = f"{PLAIN_KEY} {PROXY_SECRET} pw-9f8e7d6c5b tok-0123456789 short"
    assert redact(text) == " ".join([REDACTED] * 4) + " short"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_no_key_rides_along_in_the_exception_chain(provider):
    """A refused connection: neither the error nor anything chained to it holds the key."""
    import socket

    from agent_nb import Agent
    from agent_nb.errors import APIConnectionError

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = "sk-" + "chainsecret0123456789abcdefghij"
    agent = Agent(
        provider=provider,
        model="m",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=key,
        max_retries=0,
    )
    with pytest.raises(APIConnectionError) as caught:
        agent.session().run("hi")
    seen, link = [], caught.value
    while link is not None:
        seen.append(link)
        link = link.__cause__ or link.__context__
    for error in seen:
        dump = repr(error) + str(error) + repr(vars(error))
        request = getattr(error, "request", None)
        if request is not None:
            dump += repr(request.headers.raw)
        assert key not in dump, type(error)
    assert len(seen) == 1  # nothing chained


URL_KEY, OWN_KEY = "sk-" + "inurl0123456789abcdef", "sk-" + "own0123456789abcdefgh"


@pytest.mark.parametrize(
    "base_url",
    [
        "https://me:" + URL_KEY + "@proxy.example/v1",
        "https://proxy.example/v1?key=" + URL_KEY,
    ],
)
def test_percent_agent_never_prints_a_key(base_url):
    from agent_nb import Agent
    from agent_nb.notebook.magics import ChatMagics

    agent = Agent(
        provider="openai",
        model="m",
        base_url=base_url,
        api_key=OWN_KEY,
        extra_body={"api_key": OWN_KEY},
    )
    shown = ChatMagics._describe(agent)
    assert URL_KEY not in shown and OWN_KEY not in shown
    assert "proxy.example" in shown
