"""Every error agent_nb raises is an AgentError; each says what went wrong and what to do."""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AgentError",
    "ApprovalPendingError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ConfigurationError",
    "ContextWindowError",
    "ImageError",
    "InvalidSessionData",
    "MissingAPIKeyError",
    "NotFoundError",
    "OutputValidationError",
    "PermissionDeniedError",
    "ProviderError",
    "RateLimitError",
    "ServerError",
    "SessionBusyError",
    "SessionChangedError",
    "SessionNotFoundError",
    "StoreConflict",
    "StoreError",
    "StoreTimeout",
    "StreamError",
    "ToolError",
    "UnknownProviderError",
]


class AgentError(Exception):
    """Base class of every error raised by agent_nb."""


class ConfigurationError(AgentError, ValueError):
    """The agent is configured in a way that cannot work."""


class UnknownProviderError(ConfigurationError):
    """A provider name that agent_nb does not know."""


class MissingAPIKeyError(ConfigurationError):
    """A provider needs an API key and none was given or found in the environment."""


class ProviderError(AgentError):
    """The provider failed to answer; carries what the provider said."""

    #: Whether a new attempt may succeed (rate limits, overloads, server errors, dropped links).
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        head = f"{self.provider}: " if self.provider else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        request = f" [request id {self.request_id}]" if self.request_id else ""
        hint = f" -- {self.hint}" if self.hint else ""
        return f"{head}{self.message}{status}{request}{hint}"


class BadRequestError(ProviderError):
    """The provider rejected the request as malformed or unsupported (HTTP 400/422)."""


class ContextWindowError(BadRequestError):
    """The request does not fit the model's context window: refused before it was sent
    (`status` None; the history is unchanged), or by the server (HTTP 400, or a server that
    truncated the prompt in silence under `context="error"`).

    `window` is the context window in tokens, `needed` what the request needed (its input and
    the output reserved for the answer), `reserved` that reserve; None where it is not known
    (a server's error that does not say).
    """

    def __init__(
        self,
        message: str,
        *,
        window: int | None = None,
        needed: int | None = None,
        reserved: int | None = None,
        **fields: Any,
    ) -> None:
        self.window = window
        self.needed = needed
        self.reserved = reserved
        super().__init__(message, **fields)


class AuthenticationError(ProviderError):
    """The API key was missing, wrong or revoked (HTTP 401)."""


class PermissionDeniedError(ProviderError):
    """The key is valid but may not use this model or feature (HTTP 403)."""


class NotFoundError(ProviderError):
    """The model or endpoint does not exist (HTTP 404)."""


class RateLimitError(ProviderError):
    """Too many requests or tokens (HTTP 429); `retry_after` holds the provider's advice."""

    retryable = True


class ServerError(ProviderError):
    """The provider failed on its side (HTTP 5xx, overloaded)."""

    retryable = True


class APIConnectionError(ProviderError):
    """The provider could not be reached, or the connection dropped."""

    retryable = True


class APITimeoutError(APIConnectionError):
    """The provider did not answer, or stopped sending, within the timeout."""


class StreamError(ProviderError):
    """The provider sent a stream or body that cannot be understood, or that ended early."""


class ToolError(AgentError):
    """A tool raised, or the model asked for tool calls beyond the allowed rounds."""

    def __init__(self, message: str, *, tool: str | None = None) -> None:
        self.tool = tool
        super().__init__(message)


class ApprovalPendingError(ToolError):
    """Tool calls wait for approval: decide with approve()/deny(), then resume()."""


class OutputValidationError(AgentError):
    """The model's structured output does not match the requested schema.

    `text` is the last answer; `attempts` every answer of the turn, retries included.
    """

    def __init__(self, message: str, *, text: str = "", attempts: tuple[str, ...] = ()) -> None:
        self.text = text
        self.attempts = attempts or (text,)
        super().__init__(message)


class BudgetExceeded(AgentError):
    """A request would pass, or a turn has passed, a `max_cost` budget: the turn stopped at
    a request boundary, its history unchanged; what was spent is in the ledger.

    `limit` is the budget, `spent` what it had counted, `bound` the least the refused request
    would have added (None: the model has no price, so the budget cannot be kept), all in
    dollars (Decimal).
    """

    def __init__(self, message: str, *, limit: Any, spent: Any, bound: Any = None) -> None:
        self.limit = limit
        self.spent = spent
        self.bound = bound
        super().__init__(message)


class SessionBusyError(AgentError):
    """A turn is already running on this session; sessions take one turn at a time."""


class SessionChangedError(AgentError):
    """A session changed while one of its turns was answered again; it was left as it is."""


class ImageError(AgentError, ValueError):
    """An image that cannot be sent: not an image, too large, not found, or for a model that
    takes no images. Nothing was sent."""


class InvalidSessionData(AgentError, ValueError):
    """Serialized session data is malformed, of a newer version, or corrupt."""


class SessionNotFoundError(AgentError, KeyError):
    """No session with that id in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class StoreError(AgentError):
    """A session store failed: it could not be reached, did not answer, or refused the data.

    Raised by the stores themselves (reading or writing) and by a session whose save failed.
    A session's save failing never undoes the change: the history in memory is intact (for a
    finished turn, the turn is in it), and `response` is the turn's Response when the save
    came after a finished turn.
    """

    def __init__(self, message: str, *, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


class StoreTimeout(StoreError):
    """The store's server (or another writer holding its lock) did not answer within the
    store's `timeout`."""


class StoreConflict(UserWarning):
    """A warning: a session's save replaced messages that another writer (another kernel or
    process using the same session id) had saved since this session last saved. The later
    save wins, as documented; the warning names the session and how many messages went. Give
    each writer its own session id (`session.fork()`) to keep both."""
