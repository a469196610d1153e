"""HTTP for every provider, once: clients, timeouts, retries, error mapping, SSE."""

from __future__ import annotations

import asyncio
import email.utils
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
from .base import Provider, ProviderBatch, Request

T = TypeVar("T")
_decode_json = json.JSONDecoder().decode  # json.loads, minus its per-call checks

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=30.0)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
_MAX_RETRY_AFTER = 60.0

_STATUS_ERRORS: dict[int, type[errors.ProviderError]] = {
    400: errors.BadRequestError,
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    408: errors.APITimeoutError,
    409: errors.ServerError,
    413: errors.BadRequestError,
    422: errors.BadRequestError,
    429: errors.RateLimitError,
}


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(float(timeout), connect=min(10.0, float(timeout)))


class HTTPClient:
    """One provider's connection to its server: a pooled AsyncClient per event loop."""

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
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self.timeout = make_timeout(timeout)
        self.max_retries = max_retries
        self._transport = transport
        self._key_hint = key_hint
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=self.timeout,
                transport=self._transport,
                follow_redirects=True,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST and return the decoded JSON answer."""
        async with self._send(path, body, stream=False) as response:
            try:
                text = (await response.aread()).decode("utf-8", errors="replace")
            except httpx.HTTPError as exc:
                raise _broken(self.provider, exc, response.headers, self.timeout) from exc
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise errors.StreamError(
                f"the answer is not JSON: {_snippet(text)!r}",
                provider=self.provider,
                status=response.status_code,
                request_id=_request_id(response.headers),
            ) from None

    async def post_sse(
        self, path: str, body: dict[str, Any], read: Callable[[ServerSentEvent, list[T]], bool]
    ) -> AsyncIterator[list[T]]:
        """POST, and yield what `read` makes of the server-sent events, a list per network read.

        `read(sse, events)` appends the events one server-sent event stands for to `events`
        and returns True after the stream's last one. Events read before a failure are
        yielded before it is raised, so a failure after output has started is never retried,
        wherever the network happened to split the stream.
        """
        async with self._send(path, body, stream=True) as response:
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                text = (await response.aread()).decode("utf-8", errors="replace")
                raise errors.StreamError(
                    f"expected an event stream, got {content_type or 'no content type'}: "
                    f"{_snippet(text)!r}",
                    provider=self.provider,
                    status=response.status_code,
                    request_id=_request_id(response.headers),
                )
            events: list[T] = []
            last = False
            try:
                # httpx errors while reading (a drop, a stall) become typed errors in `retrying`
                async for batch in _event_batches(response):
                    for sse in batch:
                        if read(sse, events):
                            last = True
                            break
                    if last:
                        break
                    if events:
                        yield events
                        events = []
            except Exception:
                if events:
                    yield events
                raise
            if events:
                yield events

    async def retrying(self, attempt: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Run `attempt` again after a retryable failure, but never once it has yielded."""
        tries = 0
        while True:
            started = False
            try:
                async with aclosing(attempt()) as events:
                    async for event in events:
                        started = True
                        yield event
                return
            except (errors.ProviderError, httpx.HTTPError) as exc:
                error = (
                    exc
                    if isinstance(exc, errors.ProviderError)
                    else _broken(self.provider, exc, None, self.timeout)
                )
                if started or not error.retryable or tries >= self.max_retries:
                    if error is exc:
                        raise
                    raise error from exc
                delay = _backoff(tries, error.retry_after)
            await asyncio.sleep(delay)
            tries += 1

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
            request = client.build_request("POST", path, json=body, timeout=timeout)
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise errors.APITimeoutError(
                f"no answer within the timeout ({type(exc).__name__}); raise timeout=... "
                "if the server is slow",
                provider=self.provider,
            ) from exc
        except httpx.HTTPError as exc:
            raise errors.APIConnectionError(
                f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})",
                provider=self.provider,
            ) from exc
        try:
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", errors="replace")
                raise self._status_error(response, text)
            yield response
        finally:
            await response.aclose()

    def _status_error(self, response: httpx.Response, text: str) -> errors.ProviderError:
        status = response.status_code
        cls = _STATUS_ERRORS.get(status) or (
            errors.ServerError if status >= 500 else errors.ProviderError
        )
        message, code, body_request_id = _error_message(text)
        error = cls(
            message,
            provider=self.provider,
            status=status,
            request_id=_request_id(response.headers) or body_request_id,
            code=code,
            retry_after=_retry_after(response.headers),
            hint=_hint(status, self._key_hint),
        )
        if status in _RETRY_STATUS:
            error.retryable = True
        return error

    def error_event(
        self, payload: Any, headers: httpx.Headers | None = None
    ) -> errors.ProviderError:
        """The typed error for an error object sent inside a stream (an `event: error`)."""
        message, code, request_id = _error_message(json.dumps(payload))
        kind = str(code or "")
        if "overloaded" in kind or "rate_limit" in kind or kind in {"429", "529", "503"}:
            cls: type[errors.ProviderError] = (
                errors.RateLimitError
                if "rate_limit" in kind or kind == "429"
                else errors.ServerError
            )
        elif "server" in kind or "internal" in kind or kind.startswith("5"):
            cls = errors.ServerError
        else:
            cls = errors.ProviderError
        return cls(
            message,
            provider=self.provider,
            code=code,
            request_id=(_request_id(headers) if headers is not None else None) or request_id,
        )

    def event_json(self, data: str, what: str = "a stream event") -> Any:
        """The JSON of one server-sent event's data; StreamError names the provider if not JSON."""
        try:
            return _decode_json(data)
        except json.JSONDecodeError:
            raise self.malformed(f"{what} is not valid JSON", data) from None

    def malformed(self, what: str, data: str) -> errors.StreamError:
        return errors.StreamError(f"{what}: {_snippet(data)!r}", provider=self.provider)

    def ended_early(self, terminator: str) -> errors.StreamError:
        """The error for a stream that stopped before `terminator`: never a short answer."""
        return errors.StreamError(
            f"the stream ended before {terminator}; the turn was not saved, try again",
            provider=self.provider,
        )

    def tool_arguments(self, name: str, raw: str) -> dict[str, Any]:
        """A tool call's arguments from the JSON text the model wrote ("" means none)."""
        try:
            arguments = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raise self.malformed(
                f"the arguments of tool call {name!r} are not valid JSON", raw
            ) from None
        if not isinstance(arguments, dict):
            raise self.malformed(f"the arguments of tool call {name!r} are not an object", raw)
        return arguments


async def _event_batches(response: httpx.Response) -> AsyncIterator[list[ServerSentEvent]]:
    """The server-sent events of each network read, as one list.

    httpx-sse's own decoders, run in a plain loop: a provider then handles a read's events
    without an async-generator step per line and per event, which is most of the cost of
    a long stream.
    """
    lines, events = SSELineDecoder(), SSEDecoder()
    async for text in response.aiter_text():
        batch = []
        for line in lines.decode(text):
            event = events.decode(line)
            if event is not None:
                batch.append(event)
        if batch:
            yield batch
    batch = [e for e in map(events.decode, lines.flush()) if e is not None]
    if batch:
        yield batch


def _broken(
    provider: str, exc: httpx.HTTPError, headers: httpx.Headers | None, timeout: httpx.Timeout
) -> errors.ProviderError:
    """The error for an answer that stalled or broke off after its headers arrived."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.APITimeoutError(
            f"the stream stalled: nothing arrived for {timeout.read} s "
            "(raise the read timeout with timeout=...)",
            provider=provider,
            request_id=_request_id(headers),
        )
    return errors.APIConnectionError(
        f"the connection dropped mid-stream ({type(exc).__name__}: {exc})",
        provider=provider,
        request_id=_request_id(headers),
    )


def _error_message(text: str) -> tuple[str, str | None, str | None]:
    """The provider's own message, code and request id, from any of the usual error shapes."""
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return (_snippet(text) or "no error message in the answer"), None, None
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error, None, request_id
    if not isinstance(error, dict):
        return _snippet(text), None, request_id
    message = error.get("message") or error.get("detail") or _snippet(text)
    code = error.get("code") or error.get("type")
    if isinstance(error.get("metadata"), dict) and error["metadata"].get("raw"):
        message = f"{message}: {_snippet(str(error['metadata']['raw']))}"
    return str(message), (str(code) if code is not None else None), request_id


def _hint(status: int, key_hint: str | None) -> str | None:
    if status == 401:
        return f"check the API key ({key_hint} or api_key=...)" if key_hint else "check the API key"
    if status == 404:
        return "check the model name and base_url"
    if status == 429:
        return "slow down, or raise max_retries to wait and retry automatically"
    return None


def _request_id(headers: httpx.Headers | None) -> str | None:
    if headers is None:
        return None
    return headers.get("x-request-id") or headers.get("request-id")


def _retry_after(headers: httpx.Headers) -> float | None:
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None and 0 <= retry_after <= _MAX_RETRY_AFTER:
        return retry_after
    return min(8.0, 0.5 * 2**attempt) * random.uniform(0.75, 1.0)


def _snippet(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

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
