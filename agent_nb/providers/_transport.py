"""HTTP for every provider, once: the client, timeouts, redirects, retries, SSE, and the base
of the providers reached over HTTP. What a failure means is _errors.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # the decoders aiter_sse runs

from .. import errors
from ..events import Completion, Retried
from ._errors import ErrorFactory, request_id
from ._redact import Redactor, redact_http_logs, secrets_of
from ._shape import Malformed, decode_json, loads, wrong
from .base import Provider, ProviderBatch, Request

T = TypeVar("T")
redact_http_logs()

#: What reading a body of an unexpected shape can raise, when no check named the field first.
_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError)

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=30.0)
#: The default of `max_answer_size`: the most characters of text and reasoning one answer
#: may carry, and the most bytes of a whole (not streamed) answer's body or of one line of
#: a stream. What a server sends past it is never read.
MAX_ANSWER_SIZE = 32_000_000
#: A stream as a whole may carry this many times `max_answer_size` (its framing: each piece
#: of text travels in an event of JSON, often 50 times its size).
_WIRE_FACTOR = 16
#: The most of an error body read: the provider's message is near its start, and the error
#: shows 300 characters of it.
_ERROR_BODY = 65_536
_MAX_RETRY_AFTER = 60.0
_MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(float(timeout), connect=min(10.0, float(timeout)))


#: How long a probe for facts about the server (its models' capabilities) may take.
_PROBE_TIMEOUT = httpx.Timeout(5.0)
#: The most of a probe's answer read: llama.cpp's /props carries the chat template, Ollama's
#: /api/show the model's license, a few kilobytes each; a server that sends more is not asked.
_PROBE_BODY = 4_000_000
#: How long a probe may take in all (its timeout is for each step).
_PROBE_DEADLINE = 10.0


class HTTPClient(ErrorFactory):
    """One provider's connection to its server: a pooled AsyncClient per event loop.

    It is the ErrorFactory of that provider too: the errors it raises, and those its
    provider raises about an answer, are made redacted of the credentials it sends.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        key_hint: str | None = None,
        max_answer_size: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        super().__init__(
            provider=provider,
            redact=Redactor(secrets_of(self._headers, self.base_url)),
            key_hint=key_hint,
        )
        self.timeout = make_timeout(timeout)
        self.max_retries = max_retries
        self.max_answer_size = _check_size(max_answer_size)
        self._transport = transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()
        self._retired: list[httpx.AsyncClient] = []  # dropped after a stream broke off

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=self.timeout,
                transport=self._transport,
                follow_redirects=False,  # `_follow` follows them, within the origin only
            )
            self._clients[loop] = client
        return client

    def __repr__(self) -> str:
        return f"HTTPClient(provider={self.provider!r}, base_url={self.redact(self.base_url)!r})"

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        retired, self._retired = self._retired, []
        for old in [client, *retired]:
            if old is not None:
                await old.aclose()

    async def post_json(
        self, path: str, body: dict[str, Any], parse: Callable[[Any], ProviderBatch]
    ) -> ProviderBatch:
        """POST, and return what `parse` makes of the decoded JSON answer."""
        async with self._send(path, body, stream=False) as response:
            try:
                data, whole = await _read_at_most(response, self.max_answer_size)
            except httpx.HTTPError as exc:
                raise self._broken(exc, response.headers) from None
            if not whole:
                raise self.too_large(f"the answer's body passed {self.max_answer_size:,} bytes")
            text = data.decode("utf-8", errors="replace")
        try:
            payload = loads(text)
        except ValueError:
            raise self.error(
                errors.StreamError,
                "the answer is not JSON",
                excerpt=text,
                status=response.status_code,
                request_id=request_id(response.headers),
            ) from None
        try:
            events = parse(payload)
        except errors.AgentError:
            raise
        except (Malformed, *_SHAPE_ERRORS) as exc:
            raise self.unreadable(exc, "the answer", text) from None
        self._check_answered(events[-1])
        return events

    async def post_sse(
        self,
        path: str,
        body: dict[str, Any],
        read: Callable[[ServerSentEvent, ProviderBatch], bool],
        finish: Callable[[], Completion],
    ) -> AsyncIterator[ProviderBatch]:
        """POST, and yield what `read` makes of the server-sent events, a list per network read.

        `read(sse, events)` appends the events one server-sent event stands for to `events`
        and returns True after the stream's last one; `finish()` then makes the Completion,
        the last event (or raises if the stream carried no answer). Events read before a
        failure are yielded before it is raised, so a failure after output has started is
        never retried, wherever the network happened to split the stream. A read that makes
        no event yields an empty list: the caller knows the server has begun to answer (a
        request it pays for), and `retrying` does not count it as output.
        """
        async with self._send(path, body, stream=True) as response:
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                text = await _excerpt(response)
                raise self.error(
                    errors.StreamError,
                    f"expected an event stream, got {content_type or 'no content type'}",
                    excerpt=text,
                    status=response.status_code,
                    request_id=request_id(response.headers),
                )
            events: ProviderBatch = []
            limit = self.max_answer_size
            size = 0  # characters of text and reasoning so far
            try:
                # httpx errors while reading (a drop, a stall) become typed errors in `retrying`
                async for batch in _event_batches(response, self.timeout.read, limit):
                    if self._read(batch, read, events):
                        break
                    if events:
                        for event in events:
                            size += len(event.text)  # type: ignore[union-attr]
                        if size > limit:
                            raise self.too_large(
                                f"the answer passed {limit:,} characters of text and reasoning"
                            )
                    yield events  # [] too: the answer has begun (a tool call, say), it is paid
                    events = []
                try:
                    completion = finish()
                except errors.AgentError:
                    raise
                except (Malformed, *_SHAPE_ERRORS) as exc:
                    raise self.unreadable(exc, "the answer", "") from None
                self._check_answered(completion)
                events.append(completion)
            except _Oversize as exc:
                raise self.too_large(str(exc)) from None
            except Exception:
                if events:
                    yield events
                raise
            yield events

    def _check_answered(self, completion: Any) -> None:
        """StreamError for an answer finished as "stop" with nothing at all in it.

        That is how a gateway (LiteLLM's proxy, say) passes on a model behind it that broke
        off: it is not an answer to save. An empty answer finished for a stated reason
        ("length" after reasoning only, "content_filter"), or after reasoning the usage
        counts, is kept as it is.
        """
        if (
            type(completion) is Completion
            and completion.finish_reason == "stop"
            and not completion.message.parts
            and not completion.refusal
            and not completion.usage.reasoning_tokens  # reasoning the server did not show
        ):
            raise self.error(
                errors.StreamError,
                f'the server at {self.base_url} finished the answer (finish reason "stop") '
                "with nothing in it: no text, no tool call, no refusal, no reasoning. A gateway "
                "says so when the model behind it broke off; the turn was not saved, try again",
            )

    def _read(
        self,
        batch: list[ServerSentEvent],
        read: Callable[[ServerSentEvent, ProviderBatch], bool],
        events: ProviderBatch,
    ) -> bool:
        """Hand one network read's server-sent events to `read`: True at the stream's last."""
        for sse in batch:
            try:
                if read(sse, events):
                    return True
            except errors.AgentError:
                raise
            except (Malformed, *_SHAPE_ERRORS) as exc:
                named = sse.event not in ("", "message")  # httpx-sse's default
                what = f"the {sse.event} event" if named else "a stream event"
                raise self.unreadable(exc, what, sse.data) from None
        return False

    async def retrying(self, attempt: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Run `attempt` again after a retryable failure, but never once it has yielded."""
        tries = 0
        while True:
            started = begun = False
            try:
                async with aclosing(attempt()) as events:
                    async for event in events:
                        started = started or bool(event)  # not an empty batch: no output yet
                        begun = True  # the server answers: this attempt is billed
                        yield event
                return
            except (errors.ProviderError, httpx.HTTPError) as exc:
                error = exc if isinstance(exc, errors.ProviderError) else self._broken(exc, None)
                final = started or not error.retryable or tries >= self.max_retries
            if final:
                # raised here, outside the handler: no httpx exception rides along as its
                # __context__ (its .request holds the headers, the key among them)
                error.__context__ = error.__cause__ = None
                error.__suppress_context__ = True
                raise error
            if begun:  # the caller counts the attempt it paid for before this one
                yield [Retried()]  # type: ignore[misc]
            await asyncio.sleep(_backoff(tries, error.retry_after))
            tries += 1

    async def probe(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON a small request for facts about the server answers (`url`: absolute, on
        the server's origin), or None when it fails in any way: a probe only informs.

        Never sent to another origin than the server's (the client's headers carry the key);
        an answer past _PROBE_BODY bytes, or slower than _PROBE_DEADLINE, is not read; a
        shorter timeout= of the provider's holds for probes too."""
        client = self._client()
        read = self.timeout.read
        step = _PROBE_TIMEOUT if read is None or read >= 5.0 else httpx.Timeout(read)
        try:
            if _origin(httpx.URL(url)) != _origin(httpx.URL(self.base_url)):
                return None
            request = client.build_request(
                method,
                url,
                content=None if body is None else _json_body(body),
                headers=_JSON if body is not None else None,
                timeout=step,
            )
            # in all, not only for each step: a server that drips its answer
            async with asyncio.timeout(min(_PROBE_DEADLINE, 2 * step.read)):
                response = await self._follow(client, request)
                try:
                    if response.status_code != 200:
                        return None
                    data, whole = await _read_at_most(response, _PROBE_BODY)
                finally:
                    await response.aclose()
            return loads(data.decode("utf-8", errors="replace")) if whole else None
        except (httpx.HTTPError, httpx.InvalidURL, errors.AgentError, ValueError, TimeoutError):
            return None

    @asynccontextmanager
    async def _send(
        self, path: str, body: dict[str, Any], *, stream: bool
    ) -> AsyncIterator[httpx.Response]:
        client = self._client()
        timeout = self.timeout
        if not stream and timeout is DEFAULT_TIMEOUT:
            # nothing arrives until the whole answer is ready: wait for long ones by default
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=max(timeout.read or 0, 600.0),
                write=timeout.write,
                pool=timeout.pool,
            )
        try:
            request = client.build_request(
                "POST", path, content=_json_body(body), headers=_JSON, timeout=timeout
            )
            response = await self._follow(client, request)
        except httpx.TimeoutException as exc:
            raise self.error(
                errors.APITimeoutError,
                f"no answer within the timeout ({type(exc).__name__}); raise timeout=... "
                "if the server is slow",
            ) from None
        except httpx.HTTPError as exc:
            raise self.error(
                errors.APIConnectionError,
                f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})",
            ) from None
        try:
            if response.status_code >= 400:
                try:
                    text = await _excerpt(response)
                except httpx.HTTPError:
                    text = ""
                raise self.status_error(response, text)
            yield response
        finally:
            await response.aclose()

    async def _follow(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Send `request`, following redirects within its origin, refusing any to another.

        Another origin would receive the conversation (a 307 or 308 sends the body again),
        and httpx keeps every credential header but Authorization: nothing is sent there.
        """
        origin = _origin(request.url)
        for _ in range(_MAX_REDIRECTS + 1):
            response = await client.send(request, stream=True)
            target = response.next_request  # httpx's next hop: method and body as RFC 9110
            if target is None:
                return response
            await response.aclose()
            url = target.url
            if _origin(url) != origin:
                raise self.error(
                    errors.ProviderError,
                    f"the server redirected to another origin, {url.scheme}://"
                    f"{url.netloc.decode('ascii', 'replace')}{url.path}; agent_nb sends neither "
                    "the key nor the conversation there: if the service has moved and you trust "
                    "the new address, set base_url to it",
                    status=response.status_code,
                )
            request = target
        raise self.error(
            errors.ProviderError,
            f"more than {_MAX_REDIRECTS} redirects from {self.base_url}; check base_url",
            status=response.status_code,
        )

    def event_object(self, sse: ServerSentEvent, what: str = "a stream event") -> dict[str, Any]:
        """The JSON object of one server-sent event; an `event: error` raises what it carries."""
        try:
            data = decode_json(sse.data)
        except (ValueError, RecursionError):
            raise self.malformed(f"{what} is not valid JSON", sse.data) from None
        if type(data) is not dict or sse.event == "error":
            if sse.event == "error":
                raise self.error_event(data)
            raise wrong("it", "an object", data)
        return data

    def ended_early(self, terminator: str, *, nothing: bool = False) -> errors.StreamError:
        """The error for a stream that stopped before `terminator`: never a short answer.

        `nothing`: not a piece of an answer arrived, so the server failed before answering
        (a retry of the same request will not help).
        """
        self.forget_connections()  # what broke off may have left a dead keep-alive behind
        if nothing:
            return self.error(
                errors.StreamError,
                f"the server ended the stream before sending anything (no {terminator}): it "
                "failed on its side and its log says why. On a local server the usual cause "
                "is a prompt longer than the model's context window: shorten the "
                "conversation (session.fork(), %session undo) or start the server with a "
                "larger context; the turn was not saved",
            )
        return self.error(
            errors.StreamError,
            f"the stream ended before {terminator}; the turn was not saved, try again",
        )

    def too_large(self, what: str) -> errors.StreamError:
        """The error for an answer past `max_answer_size`: the rest is never read."""
        self.forget_connections()  # the connection still carries the rest: never reused
        return self.error(
            errors.StreamError,
            f"{what} (max_answer_size); the turn was not saved. If the answer is expected "
            "to be that large, raise Agent(max_answer_size=...)",
        )

    def forget_connections(self) -> None:
        """The next request on this loop opens fresh connections (a new pooled client).

        The old client is not closed here (another stream may still be reading through
        it); `aclose()` closes it with the rest.
        """
        with contextlib.suppress(RuntimeError):  # no running loop: nothing pooled
            client = self._clients.pop(asyncio.get_running_loop(), None)
            if client is not None:
                self._retired.append(client)

    def _broken(self, exc: httpx.HTTPError, headers: httpx.Headers | None) -> errors.ProviderError:
        """The error for an answer that stalled or broke off after its headers arrived."""
        if isinstance(exc, httpx.TimeoutException):
            return self.error(
                errors.APITimeoutError,
                f"the stream stalled: nothing arrived for {self.timeout.read} s "
                "(raise the read timeout with timeout=...)",
                request_id=request_id(headers),
            )
        return self.error(
            errors.APIConnectionError,
            f"the connection dropped mid-stream ({type(exc).__name__}: {exc})",
            request_id=request_id(headers),
        )


class _Oversize(Exception):
    """A stream sent more than its limit allows: a line, an event, or the stream itself."""


async def _event_batches(
    response: httpx.Response, stall: float | None = None, limit: int = MAX_ANSWER_SIZE
) -> AsyncIterator[list[ServerSentEvent]]:
    """The server-sent events of each network read, as one list.

    httpx-sse's own decoders, run in a plain loop: a provider then handles a read's events
    without an async-generator step per line and per event, which is most of the cost of
    a long stream. `stall`: the longest wait for an event; reads of keep-alive comments
    alone (`: ping`) do not count as data, so they cannot hold it off. `limit`: the longest
    line and event (_Oversize past it), and a 16th of the most the whole stream may carry.
    """
    lines, events = SSELineDecoder(), SSEDecoder()
    last = time.monotonic()
    wire = limit * _WIRE_FACTOR
    partial = 0  # characters of the line not yet ended
    held = 0  # characters of the lines of the event not yet ended
    async for text in response.aiter_text():
        wire -= len(text)
        if wire < 0:
            raise _Oversize(f"the stream passed {limit * _WIRE_FACTOR:,} characters")
        batch = []
        decoded = lines.decode(text)
        if not decoded:
            partial += len(text)
            if partial + held > limit:
                raise _Oversize(f"a line of the stream passed {limit:,} characters")
        else:
            for line in decoded:
                if line:
                    held += len(line)
                    if held > limit:
                        raise _Oversize(f"an event of the stream passed {limit:,} characters")
                else:
                    held = 0
                event = events.decode(line)
                if event is not None:
                    batch.append(event)
            partial = len(lines.buffer[0]) if lines.buffer else 0
        if batch:
            last = time.monotonic()
            yield batch
        elif stall is not None and time.monotonic() - last > stall:
            raise httpx.ReadTimeout(f"only keep-alive comments for {stall:g} s")
    batch = [e for e in map(events.decode, lines.flush()) if e is not None]
    if batch:
        yield batch


async def _read_at_most(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, or its first `limit` bytes and False if it is longer (the rest unread)."""
    parts, size = [], 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts)[:limit], False
    return b"".join(parts), True


async def _excerpt(response: httpx.Response) -> str:
    """The start of a body that is not the answer: a huge one is never read whole."""
    return (await _read_at_most(response, _ERROR_BODY))[0].decode("utf-8", "replace")


def _check_size(size: int | None) -> int:
    if size is None:
        return MAX_ANSWER_SIZE
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise errors.ConfigurationError(f"max_answer_size must be an int >= 1, got {size!r}")
    return size


_JSON = {"content-type": "application/json"}


def _json_body(body: dict[str, Any]) -> bytes:
    """The request as UTF-8 JSON, as httpx's json= makes it, but never failing on text.

    Text with a surrogate pair split in two (as a stream delivers it) is joined, and a lone
    surrogate, which UTF-8 cannot hold, is sent as U+FFFD: the history keeps it as it came.
    """
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return joined.encode("utf-8")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None and 0 <= retry_after <= _MAX_RETRY_AFTER:
        return retry_after
    return min(8.0, 0.5 * 2**attempt) * random.uniform(0.75, 1.0)


class HTTPProvider(Provider):
    """A provider reached over HTTP: where it is, its key, and one HTTPClient.

    The address comes from `base_url`, else the environment variable `base_url_env`, else
    `default_base_url`; the key from `api_key`, else `key_env`. Subclasses say how the key
    travels (`auth_headers`), build the body, and parse one attempt (`_attempt`).
    """

    key_env: str = ""
    base_url_env: str = ""
    default_base_url: str | None = None
    #: The address that needs a key; a server elsewhere needs one only if it says so.
    keyed_base_url: str | None = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_answer_size: int | None = None,
    ) -> None:
        address = base_url or os.environ.get(self.base_url_env) or self.default_base_url
        if not address:
            raise errors.ConfigurationError(
                f"the {self.name} provider needs base_url=... (for example "
                f"http://localhost:8000/v1), or {self.base_url_env} in the environment"
            )
        self.base_url = address.rstrip("/")
        self._api_key = api_key or os.environ.get(self.key_env) or None
        self._http = HTTPClient(
            provider=self.name,
            base_url=self.base_url,
            headers={**self.auth_headers(self._api_key), **(headers or {})},
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            key_hint=self.key_env,
            max_answer_size=max_answer_size,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.redacted(self.base_url)!r})"

    def redacted(self, text: str) -> str:
        """`text` with this provider's credentials, and anything shaped like a key, masked."""
        return self._http.redact(text)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The headers that carry the key (and any the API always wants)."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def complete(self, request: Request) -> AsyncIterator[ProviderBatch]:
        if not self._api_key and self.base_url == self.keyed_base_url:
            raise errors.MissingAPIKeyError(
                f"no API key for {self.name}: set the {self.key_env} environment variable or "
                "pass api_key=... to Agent"
            )
        body = self.build_body(request)
        return self._http.retrying(lambda: self._attempt(body, request.stream))

    def build_body(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[ProviderBatch]:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._http.aclose()
