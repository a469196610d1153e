"""The spend ledger's pieces: a price (`Price`), one request's spend (`Spend`), a sum of
spends (`Cost`), and how spends are written in `to_dict()` data and shown as rows."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .events import Usage

#: Why a request was sent: the turn's first request, a request after a tool round, after an
#: answer that failed validation, again in the other output mode, a turn answered again
#: (retry, regenerate, a cell run again), a resumed turn after approvals, a summary of the
#: turns a context policy left out (docs/context.md), a routed turn asked of the next
#: candidate (docs/routing.md).
REASONS = (
    "turn",
    "tool_round",
    "validation_retry",
    "output_fallback",
    "retry",
    "resume",
    "summary",
    "fallback",
)
#: How a request was priced: by the provider and model, by the model's name alone (a gateway,
#: a proxy), 0 by rule (a local server's own model), by the agent's `price=`, or not at all.
MATCHES = ("provider", "name", "local", "given", "none")
#: The currency of every figure (genai-prices' table is in US dollars; so is `price=`).
CURRENCY = "USD"
#: More dollars than any request costs: saved data with an amount this large (or more) is
#: corrupt, and read as such rather than summed and shown (Decimal's arithmetic would fail).
MOST = Decimal(10) ** 9
_MILLION = Decimal(1_000_000)


def _money(value: Any, where: str, unit: str = "a number of dollars per million tokens") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError(f"{where} takes {unit}, got {value!r}")
    try:
        money = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not money.is_finite() or money < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return money


@dataclasses.dataclass(frozen=True)
class Price:
    """What a model costs, in dollars per million tokens: `Price(input=3, output=15)`.

    `cache_read` and `cache_write` default to the input price (a server without a prompt
    cache bills those tokens as input).
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                object.__setattr__(self, field.name, _money(value, f"Price({field.name}=...)"))

    @classmethod
    def of(cls, value: Price | Mapping[str, Any]) -> Price:
        """`value` as a Price: a Price, or a dict with `input`, `output` and maybe the cache
        prices."""
        if isinstance(value, Price):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                "price= takes Price(input=..., output=...) or a dict like "
                f"{{'input': 3, 'output': 15}} (dollars per million tokens), got {value!r}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        missing = sorted({"input", "output"} - set(value))
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"missing {missing}"
            raise ValueError(
                f"price=: {problem}; it takes input, output, cache_read, cache_write "
                "(dollars per million tokens)"
            )
        return cls(**value)

    def cost(self, usage: Usage) -> Decimal:
        """What `usage` costs at this price."""
        read = usage.cached_tokens
        written = usage.cache_write_tokens
        uncached = max(0, usage.input_tokens - read - written)
        total = (
            uncached * self.input
            + read * (self.input if self.cache_read is None else self.cache_read)
            + written * (self.input if self.cache_write is None else self.cache_write)
            + usage.output_tokens * self.output
        )
        return total / _MILLION


@dataclasses.dataclass(frozen=True)
class Spend:
    """One request actually sent, in the ledger: what it used and what it cost."""

    #: When it was sent (ISO 8601, UTC).
    at: str
    #: Why it was sent (one of REASONS).
    why: str
    #: The provider's name (`Agent(provider=...)`).
    provider: str
    #: The model as configured for the request.
    model: str
    #: The model as the server named it in its answer (None: it named none).
    served: str | None
    usage: Usage
    #: In dollars; None: no price is known for the model.
    cost: Decimal | None
    #: How it was priced (one of MATCHES).
    matched: str
    #: The price data used: "genai-prices 0.2.5", "price=", "local", or None.
    prices: str | None
    #: The id of the assistant message it answered with (None: none was kept).
    message: str | None = None
    #: What the prompt cache saved, in dollars: the price without it less `cost` (less than
    #: 0 for a request that wrote to the cache and read nothing: the write premium); None:
    #: no cache tokens, or no price.
    saved: Decimal | None = None

    @property
    def estimated(self) -> bool:
        """Whether the usage is an estimate (the server reported none, or was stopped)."""
        return bool(self.usage.estimated)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "at": self.at,
            "why": self.why,
            "provider": self.provider,
            "model": self.model,
            "served": self.served,
            "usage": self.usage.to_dict(),
            "cost": None if self.cost is None else str(self.cost),
            "matched": self.matched,
            "prices": self.prices,
        }
        if self.message is not None:
            data["message"] = self.message
        if self.saved is not None:
            data["saved"] = str(self.saved)
        return data

    def row(self) -> dict[str, Any]:
        """This spend as one flat row (see `Session.spend`)."""
        usage = self.usage
        return {
            "at": self.at,
            "why": self.why,
            "provider": self.provider,
            "model": self.model,
            "served": self.served,
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cost": None if self.cost is None else float(self.cost),
            "saved": None if self.saved is None else float(self.saved),
            "estimated": self.estimated,
            "matched": self.matched,
            "prices": self.prices,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True)
class Cost:
    """What some requests cost, in dollars: `str(cost)` is "$0.0031", "~$0.0031" when some
    usage was estimated, with "+ N unpriced" when some requests had no price."""

    amount: Decimal = Decimal(0)
    #: Requests counted (priced or not).
    requests: int = 0
    #: Requests with no price: `amount` leaves them out.
    unpriced: int = 0
    #: Whether some of the usage priced was an estimate.
    estimated: bool = False
    currency: str = CURRENCY
    #: What the prompt cache saved (see Spend.saved): the price without it less `amount`.
    saved: Decimal = Decimal(0)

    @classmethod
    def of(cls, spends: Iterable[Spend]) -> Cost:
        amount, saved, requests, unpriced, estimated = Decimal(0), Decimal(0), 0, 0, False
        for spend in spends:
            requests += 1
            if spend.cost is None:
                unpriced += 1
            else:
                amount += spend.cost
                saved += spend.saved or 0
                estimated = estimated or spend.estimated
        return cls(amount, requests, unpriced, estimated, saved=saved)

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.amount + other.amount,
            self.requests + other.requests,
            self.unpriced + other.unpriced,
            self.estimated or other.estimated,
            saved=self.saved + other.saved,
        )

    def __sub__(self, other: Cost) -> Cost:
        """What was spent since `other` was taken of the same ledger."""
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.amount - other.amount,
            self.requests - other.requests,
            self.unpriced - other.unpriced,
            self.estimated,
            saved=self.saved - other.saved,
        )

    def __float__(self) -> float:
        return float(self.amount)

    @property
    def worth_saying(self) -> bool:
        """Whether there is something to show: money spent, or requests with no price (not
        a local model's $0)."""
        return bool(self.amount or self.unpriced)

    def __str__(self) -> str:
        if self.requests and self.unpriced == self.requests:
            return "no price"
        text = ("~" if self.estimated else "") + dollars(self.amount)
        if self.unpriced:
            text += f" + {self.unpriced} unpriced"
        return text

    def __repr__(self) -> str:
        return f"Cost({str(self)!r}, requests={self.requests})"


_spent_here = [Cost()]  # what this process's requests spent, since it started
_spent_here_lock = threading.Lock()


def count(spend: Spend) -> None:
    """Add `spend` to what this process (the kernel) has spent."""
    with _spent_here_lock:
        _spent_here[0] = _spent_here[0] + Cost.of((spend,))


def spent_here() -> Cost:
    """What every session's requests spent in this process (the kernel) since it started."""
    return _spent_here[0]


def budget(value: Any, where: str) -> Decimal | None:
    """A `max_cost` in dollars, checked; None for no limit."""
    if value is None:
        return None
    return _money(value, where, "a number of dollars")


def dollars(amount: Decimal) -> str:
    """`amount` as a person reads it: $0 (nothing), $0.0031 (two significant figures under a
    cent), $1.24 (cents), $1,234.50."""
    if amount == 0:
        return "$0"
    if amount < Decimal("0.01"):
        step = Decimal(1).scaleb(amount.adjusted() - 1)  # two significant figures
        return f"${amount.quantize(step, ROUND_HALF_UP).normalize():f}"
    return f"${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def spend_of(data: Mapping[str, Any]) -> Spend:
    """A Spend from its `to_dict()` data (already checked against the format)."""
    cost, saved = data.get("cost"), data.get("saved")
    return Spend(
        at=data["at"],
        why=data["why"],
        provider=data["provider"],
        model=data["model"],
        served=data.get("served"),
        usage=Usage(**data.get("usage", {})),
        cost=None if cost is None else Decimal(cost),
        matched=data.get("matched", "none"),
        prices=data.get("prices"),
        message=data.get("message"),
        saved=None if saved is None else Decimal(saved),
    )


def table(spends: Iterable[Spend]) -> Any:
    """The spends as rows: a pandas DataFrame when pandas is installed, else a list of dicts."""
    rows = [spend.row() for spend in spends]
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows, columns=COLUMNS)


#: The columns of `table()`, in order.
COLUMNS = (
    *("at", "why", "provider", "model", "served", "input_tokens", "cached_tokens"),
    *("cache_write_tokens", "output_tokens", "reasoning_tokens", "cost", "saved", "estimated"),
    *("matched", "prices", "message"),
)
