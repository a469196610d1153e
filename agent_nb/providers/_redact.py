"""Credentials out of every text that an error, a log line or a repr shows."""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit

REDACTED = "[redacted]"

#: Header and parameter names that say their value is a credential.
_SECRET_NAME = re.compile(
    r"auth|key|token|secret|passw|cookie|session|signature|credential", re.IGNORECASE
)
#: Shorter exact values are not searched for: replacing every "k" would garble the message,
#: and such a value is no real credential (the shapes below still catch it after a name).
_MIN_SECRET = 8

# The value classes stop at quotes and backslashes, so a redacted JSON text stays JSON.
_KEY_CHAR = r"[A-Za-z0-9._~+/=-]"
_SHAPES = re.compile(
    "|".join(
        [
            # a credential after its name: `x-api-key: ...`, `"authorization": "Bearer ..."`,
            # `api_key=...`, `password=...` (in headers, JSON, query strings, logs)
            r"(?P<named>[\"']?\b(?i:x-api-key|x-goog-api-key|api[-_]?key|apikey|"
            r"(?:proxy-)?authorization|access[-_]?token|refresh[-_]?token|auth[-_]?token|"
            r"id[-_]?token|client[-_]?secret|secret|password|passwd)[\"']?\s*[:=]\s*[\"']?)"
            r"(?>(?:(?i:bearer|basic|token)\s+)?)[^\s\"',;&<>{}\[\]\\]+",
            r"(?P<query>[?&](?i:key|token|sig|signature)=)[^\s\"'&#<>\\]+",
            r"(?P<scheme>\b(?i:bearer)\s+)" + _KEY_CHAR + r"{6,}",
            # user:password@ in a URL
            r"(?P<userinfo>://[^/\s:@\"']*:)[^/\s@\"']+(?=@)",
            # the shapes of the usual providers' keys, and JWTs
            r"\b(?:sk|rk)-[A-Za-z0-9_-]{8,}",
            r"\b(?:gsk|hf|ghp|gho|github_pat|glpat|xai|pplx|r8)[-_][A-Za-z0-9_-]{16,}",
            r"\bAIza[A-Za-z0-9_-]{30,}",
            r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*",
        ]
    )
)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match["named"] or match["query"] or match["scheme"] or match["userinfo"] or ""
    return prefix + REDACTED


def secrets_of(headers: Mapping[str, str], url: str = "") -> list[str]:
    """The credentials among `headers` (by name) and in `url` (its password, secret parameters)."""
    found = []
    for name, value in headers.items():
        if _SECRET_NAME.search(name):
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.isalpha():
                found.append(token.strip())
    parts = urlsplit(url)
    if parts.password:
        found.append(parts.password)
    found += [v for k, v in parse_qsl(parts.query) if _SECRET_NAME.search(k)]
    return found


class Redactor:
    """Replaces known credentials, and anything shaped like a key or a bearer token."""

    #: The redactors with credentials to look for, for the log filter (a lock: any thread logs).
    _live: weakref.WeakSet[Redactor] = weakref.WeakSet()
    _live_lock = threading.Lock()

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants = set()
        for secret in secrets:
            if len(secret) >= _MIN_SECRET:
                # as sent, percent-encoded, and as a JSON string would escape it
                variants |= {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
        self._exact = (
            re.compile("|".join(map(re.escape, sorted(variants, key=len, reverse=True))))
            if variants
            else None
        )
        if self._exact is not None:
            with Redactor._live_lock:
                Redactor._live.add(self)

    def __call__(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        return _SHAPES.sub(_keep_prefix, text)

    def __repr__(self) -> str:
        return "Redactor(...)"


class _LogRedaction(logging.Filter):
    """Redacts the records of httpx and httpcore: they log URLs (INFO) and raw headers (DEBUG).

    It runs only for records a logger lets through, so it costs nothing while they are off.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SHAPES.sub(_keep_prefix, message)
        with Redactor._live_lock:
            live = list(Redactor._live)
        for redact in live:
            redacted = redact(redacted)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_HTTP_LOGGERS = (
    "httpx",
    *(f"httpcore.{n}" for n in ("connection", "http11", "http2", "proxy", "socks")),
)


def redact_http_logs() -> None:
    """Install the redaction on the loggers of httpx and httpcore (once)."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LogRedaction) for f in logger.filters):
            logger.addFilter(_LogRedaction())
