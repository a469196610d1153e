"""What a server's failure means: HTTP status and error bodies to typed errors, made redacted.

Every error about a provider's answer is made by an ErrorFactory (an HTTPClient is one), so
each one names the provider and none carries a credential.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Any, TypeVar

import httpx

from .. import errors
from ._redact import Redactor
from ._shape import Malformed, loads

E = TypeVar("E", bound=errors.ProviderError)

#: The statuses worth another attempt (409: a conflict the server resolves, 529: overloaded).
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
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
#: What a 5xx body says when the fault is the request's (a validation error).
_REQUEST_FAULT = re.compile(
    r"validation error|Input should be|Field required|Extra inputs are not permitted|"
    r"invalid_request_error|unrecognized (?:argument|field)",
    re.IGNORECASE,
)
#: The error codes (or types) that say the request does not fit the model's context window:
#: OpenAI's, Groq's, llama-cpp-python's; llama.cpp's `llama-server`.
_OVERFLOW_CODES = {"context_length_exceeded", "exceed_context_size_error"}
#: What the servers' messages say then, when no such code comes with them.
_OVERFLOW_TEXT = re.compile(
    r"maximum context length|context window of \d|prompt is too long|"
    r"(?:exceeds|larger than) the (?:available|max) context size|"
    r"(?:longer than|exceeds|greater than) the context length|"
    r"maximum number of tokens allowed|context length of only \d|maximum model length|"
    r"too long to fit into the model",
    re.IGNORECASE,
)
#: A figure in a message: whole, and not so long that int() refuses it (a hostile message).
_FIGURE = r"(?<!\d)(\d{1,15})(?!\d)"
#: Where each server's message gives the window (first match wins).
_WINDOW_SAID = [
    re.compile(pattern.replace(r"(\d+)", _FIGURE), re.IGNORECASE)
    for pattern in (
        r"maximum context length is (\d+) tokens",  # OpenAI, vLLM, llama-cpp-python, DeepSeek
        r"(\d+) maximum context length",  # Mistral
        r"tokens > (\d+) maximum",  # Anthropic
        r"context window of (\d+)",  # llama-cpp-python's own words
        r"context size \((\d+) tokens\)",  # llama.cpp's llama-server
        r"maximum number of tokens allowed \((\d+)\)",  # Gemini
        r"context length of only (\d+) tokens",  # LM Studio
        r"maximum model length of (\d+)",  # vLLM's engine
        r"\(context length (\d+)\)",  # vLLM's engine, with images
    )
]
#: Where it gives what the request needed.
_NEEDED_SAID = [
    re.compile(pattern.replace(r"(\d+)", _FIGURE), re.IGNORECASE)
    for pattern in (
        r"for a total of (?:at least )?(\d+) tokens",  # vLLM
        r"resulted in (\d+) tokens",  # OpenAI
        r"requested (?:about )?(\d+) tokens",  # OpenAI, vLLM, llama-cpp-python, OpenRouter
        r"prompt is too long: (\d+) tokens",  # Anthropic
        r"requested tokens \((\d+)\)",  # llama-cpp-python's own words
        r"(?:request|input) \((\d+) tokens\)",  # llama.cpp's llama-server
        r"input token count \((\d+)\)",  # Gemini
        r"prompt contains (\d+) tokens",  # Mistral
        r"keep the first (\d+) tokens",  # LM Studio
        r"prompt length of (\d+)",  # vLLM's engine
        r"prompt \((?:total )?length (\d+)\)",  # vLLM's engine
    )
]
#: vLLM's other wording: the output asked for, and the prompt, without their sum.
_PARTS_SAID = re.compile(
    rf"requested {_FIGURE} output tokens and your prompt contains (?:at least )?{_FIGURE} "
    "input tokens",
    re.IGNORECASE,
)
#: No context window is this large (the largest served are ~10M tokens): a figure past it is
#: not a window but a server's mistake, or a hostile answer.
MAX_WINDOW = 100_000_000


class ErrorFactory:
    """Makes the errors about one provider's answers: typed, redacted, naming the provider.

    `redact` masks this provider's credentials (and anything shaped like a key); `key_hint`
    is the environment variable a 401 tells the user to check.
    """

    def __init__(self, *, provider: str, redact: Redactor, key_hint: str | None = None) -> None:
        self.provider = provider
        self.redact = redact
        self._key_hint = key_hint

    def error(self, cls: type[E], message: str, *, excerpt: str | None = None, **fields: Any) -> E:
        """An error about this provider's answer: every one is made here, redacted.

        `message`, `code` and `request_id` lose this client's credentials and anything shaped
        like a key or a bearer token; `excerpt`, raw text from the server, is redacted, then
        shortened (so no cut leaves part of a key), then quoted after the message.
        """
        redact = self.redact
        message = snippet(redact(message), 2000)
        if excerpt:
            message = f"{message}: {snippet(redact(excerpt))!r}"
        for name in ("code", "request_id"):
            if fields.get(name) is not None:
                fields[name] = redact(str(fields[name]))
        return cls(message, provider=self.provider, **fields)

    def status_error(self, response: httpx.Response, text: str) -> errors.ProviderError:
        """The typed error for an HTTP error status and its body `text`."""
        status = response.status_code
        cls = _STATUS_ERRORS.get(status) or (
            errors.ServerError if status >= 500 else errors.ProviderError
        )
        message, code, body_request_id, said = _error_message(self.redact(text))
        if status >= 400 and (cls is errors.BadRequestError or status >= 500):
            overflow = self.context_overflow(message, code, said, status=status)
            if overflow is not None:  # never retried: the same request will not fit again
                overflow.request_id = request_id(response.headers) or body_request_id
                return overflow
        # Some servers (llama-cpp-python, other FastAPI apps) answer a malformed request with
        # a 500 carrying the validation error: a fault of the request, not worth a retry.
        misread = status >= 500 and bool(_REQUEST_FAULT.search(f"{message} {code or ''}"))
        if misread:
            cls = errors.BadRequestError
        error = self.error(
            cls,
            message,
            status=status,
            request_id=request_id(response.headers) or body_request_id,
            code=code,
            retry_after=retry_after(response.headers),
            hint="the server says 500, but what it rejects is the request: check the "
            "settings and model this call sends"
            if misread
            else _hint(status, self._key_hint),
        )
        if status in RETRY_STATUS and not misread:
            error.retryable = True
        return error

    def error_event(
        self, payload: Any, headers: httpx.Headers | None = None
    ) -> errors.ProviderError:
        """The typed error for an error object sent inside a stream (an `event: error`)."""
        message, code, body_request_id, said = _error_message(self.redact(json.dumps(payload)))
        overflow = self.context_overflow(message, code, said)
        if overflow is not None:
            overflow.request_id = (
                request_id(headers) if headers is not None else None
            ) or body_request_id
            return overflow
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
        return self.error(
            cls,
            message,
            code=code,
            request_id=(request_id(headers) if headers is not None else None) or body_request_id,
        )

    def context_overflow(
        self,
        message: str,
        code: str | None = None,
        said: dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> errors.ContextWindowError | None:
        """The ContextWindowError for a server's error that says the request does not fit the
        model's context window (None: it says something else), with the window and what the
        request needed where the server gives them (`said`: the error object, whose fields
        llama.cpp's llama-server fills)."""
        said = said or {}
        kinds = {str(value) for value in (code, said.get("code"), said.get("type")) if value}
        if not kinds & _OVERFLOW_CODES and not _OVERFLOW_TEXT.search(message):
            return None
        window = window_size(said.get("n_ctx")) or _said(_WINDOW_SAID, message)
        needed = window_size(said.get("n_prompt_tokens")) or _said(_NEEDED_SAID, message)
        if needed is None and (parts := _PARTS_SAID.search(message)):
            needed = window_size(int(parts.group(1)) + int(parts.group(2)))
        figures = (
            f" ({window:,} tokens{f'; the request needed {needed:,}' if needed else ''})"
            if window
            else ""
        )
        return self.error(
            errors.ContextWindowError,
            message,
            status=status,
            code=code,
            window=window,
            needed=needed,
            hint=f"the conversation does not fit the model's context window{figures}: send "
            "fewer or shorter turns (session.fork(), %session undo), let agent_nb make room "
            'with context="trim" or context="summarize", or use a larger window (a model with '
            "a longer context; a local server started with a larger one: llama.cpp --ctx-size, "
            "Ollama num_ctx, vLLM --max-model-len)",
        )

    def malformed(self, what: str, data: str) -> errors.StreamError:
        return self.error(errors.StreamError, what, excerpt=data)

    def unreadable(self, exc: Exception, what: str, data: str) -> errors.StreamError:
        """The StreamError for a body or event whose fields are not what the API sends."""
        if isinstance(exc, Malformed):
            detail = str(exc)
        else:  # no check named the field: say what Python found
            detail = f"of an unexpected shape, {type(exc).__name__}: {exc}"
        return self.error(errors.StreamError, f"{what} is malformed: {detail}", excerpt=data)

    def no_answer(self, missing: str) -> errors.StreamError:
        """The error for an answer that carried nothing: no content and no `missing`."""
        return self.error(
            errors.StreamError,
            f"the answer carried nothing: no content and no {missing}; the turn was not saved, "
            "try again",
        )


def _error_message(text: str) -> tuple[str, str | None, str | None, dict[str, Any]]:
    """The provider's own message, code and request id, from any of the usual error shapes,
    and the error object itself ({} if there is none) for the fields some servers add."""
    try:
        payload = loads(text)
    except ValueError:
        return (snippet(text) or "no error message in the answer"), None, None, {}
    body_request_id = payload.get("request_id") if isinstance(payload, dict) else None
    if not isinstance(body_request_id, str):
        body_request_id = None
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error, None, body_request_id, {}
    if not isinstance(error, dict):
        return snippet(text), None, body_request_id, {}
    message = error.get("message") or error.get("detail") or snippet(text)
    code = error.get("code") or error.get("type")
    if isinstance(error.get("metadata"), dict) and error["metadata"].get("raw"):
        message = f"{message}: {error['metadata']['raw']}"  # shortened once redacted
    return str(message), (str(code) if code is not None else None), body_request_id, error


def window_size(value: Any) -> int | None:
    """`value` if it is a number of tokens a context window can hold: an int (not a bool)
    from 1 to MAX_WINDOW; None for anything else a server (or a hostile one) sends."""
    if type(value) is int and 0 < value <= MAX_WINDOW:
        return value
    return None


def _said(patterns: list[re.Pattern[str]], message: str) -> int | None:
    """The figure the first of `patterns` that matches `message` captures, if it is sane."""
    for pattern in patterns:
        if found := pattern.search(message):
            return window_size(int(found.group(1)))
    return None


def _hint(status: int, key_hint: str | None) -> str | None:
    if status == 401:
        return f"check the API key ({key_hint} or api_key=...)" if key_hint else "check the API key"
    if status == 404:
        return "check the model name and base_url"
    if status == 429:
        return "slow down, or raise max_retries to wait and retry automatically"
    return None


def request_id(headers: httpx.Headers | None) -> str | None:
    """The id the server gave the request, from its headers."""
    if headers is None:
        return None
    return headers.get("x-request-id") or headers.get("request-id")


def retry_after(headers: httpx.Headers) -> float | None:
    """The wait the server asks for, in seconds; None (so: backoff) when it says none we read."""
    if (value := _seconds(headers.get("retry-after-ms"))) is not None:
        return value / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return max(0.0, when - time.time())


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def snippet(text: str, limit: int = 300) -> str:
    """`text` stripped, and cut to `limit` characters with "..." if longer."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
