"""What one request cost: genai-prices' bundled table (loaded once, off the hot path), an
agent's `price=`, and the rule for a local server's own models.

The table is the package's bundled snapshot: nothing is fetched at run time. A user who wants
newer prices opts in with genai-prices' own `UpdatePrices`; the snapshot it installs is used
from then on, and each spend names the data it was priced with.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._format import TEXT_MOST
from ._ledger import Price, Spend
from .events import Usage

#: Providers whose models run on the user's machine or network ("test": in the process).
LOCAL_PROVIDERS = ("ollama", "test")
#: agent_nb provider name -> genai-prices provider id, where the base_url is the vendor's.
_VENDORS = {"openai": "openai", "openai-responses": "openai", "anthropic": "anthropic"}
_log = logging.getLogger("agent_nb")
_loaded = threading.Event()
_loading = threading.Lock()
_version: str | None = None


def preload() -> None:
    """Start loading the table on a thread of its own (at most once): the first turn's price
    is then ready when it is needed."""
    if _loaded.is_set() or _loading.locked():
        return
    threading.Thread(target=_load, name="agent_nb prices", daemon=True).start()


def _load() -> Any:
    global _version
    with _loading:
        from genai_prices import __version__
        from genai_prices.data_snapshot import get_snapshot

        snapshot = get_snapshot()
        if not _loaded.is_set():
            _version = f"genai-prices {__version__}"
            _loaded.set()
        return snapshot


def _snapshot() -> tuple[Any, str]:
    """The table in use and the words that name it (a snapshot UpdatePrices installed says
    when it was fetched)."""
    snapshot = _load()
    version = _version or "genai-prices"
    if snapshot.from_auto_update:
        version += f", updated {snapshot.timestamp:%Y-%m-%d}"
    return snapshot, version


def is_local(provider: Any) -> bool:
    """Whether `provider` talks to a server on this machine or a private network."""
    if getattr(provider, "name", None) in LOCAL_PROVIDERS:
        return True
    base_url = getattr(provider, "base_url", None)
    if not isinstance(base_url, str):
        return False
    from httpx import URL

    try:
        host = URL(base_url).host
    except Exception:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def priced(
    provider: Any,
    model: str,
    served: str | None,
    usage: Usage,
    *,
    why: str,
    at: datetime | None = None,
    price: Price | None = None,
    message: str | None = None,
) -> Spend:
    """The ledger's entry for one request to `provider` for `model`, which the server
    answered as `served`, with `usage`."""
    at = at or datetime.now(UTC)
    name = getattr(provider, "name", type(provider).__name__)
    cost = saved = None
    try:
        cost_of, matched, prices = _pricer(provider, name, model, served, at, price)
        if cost_of is not None:
            cost = cost_of(usage)
            if usage.cached_tokens or usage.cache_write_tokens:  # the cache, against none
                saved = cost_of(dataclasses.replace(usage, cached_tokens=0, cache_write_tokens=0))
                saved -= cost
    except Exception as exc:  # a price table that fails never loses the spend
        _log.warning("agent_nb: could not price a request to %s: %r", model, exc)
        cost, saved, matched, prices = None, None, "none", None
    return Spend(
        at=at.isoformat(timespec="milliseconds"),
        why=why,
        provider=name[:TEXT_MOST],  # what the format reads back (a name past it: clipped)
        model=model[:TEXT_MOST],
        served=None if served is None else served[:TEXT_MOST],
        usage=usage,
        cost=cost,
        matched=matched,
        prices=prices,
        message=message,
        saved=saved or None,
    )


_Pricer = Callable[[Usage], Decimal]


def _pricer(
    provider: Any,
    name: str,
    model: str,
    served: str | None,
    at: datetime,
    price: Price | None,
) -> tuple[_Pricer | None, str, str | None]:
    """What prices a request's usage (None: nothing does), how it was found, and the data."""
    if price is not None:
        return price.cost, "given", "price="
    snapshot, version = _snapshot()
    local = is_local(provider)
    names = [n for n in dict.fromkeys((served, model)) if n]
    vendor = None if local else _vendor(provider, name)
    for ref in names:
        found = _find(snapshot, ref, vendor, local)
        if found is not None:
            (their_provider, info), matched = found

            def cost_of(usage: Usage, info: Any = info, their: Any = their_provider) -> Decimal:
                their_usage = _their_usage(usage)
                return info.calc_price(their_usage, their, genai_request_timestamp=at).total_price

            return cost_of, matched, version
    if local:
        return (lambda usage: Decimal(0)), "local", "local"
    return None, "none", None


def _vendor(provider: Any, name: str) -> Mapping[str, str]:
    """How to name the provider to genai-prices: by id for a vendor's own API, else by the
    base_url (genai-prices knows Groq's, OpenRouter's, ... by their address)."""
    base_url = getattr(provider, "base_url", None)
    if name in _VENDORS and getattr(provider, "official", True):
        return {"provider_id": _VENDORS[name]}
    if isinstance(base_url, str):
        return {"provider_api_url": base_url}
    return {}


def _find(
    snapshot: Any, ref: str, vendor: Mapping[str, str] | None, local: bool
) -> tuple[tuple[Any, Any], str] | None:
    """(provider, model) of the table for `ref`, and how it matched; None if it knows none.

    On a local server only a model the table names exactly counts (a gateway in front of
    OpenAI serving "gpt-4o"), not a family match ("deepseek-r1:8b" is a local distill, not
    DeepSeek's API).
    """
    if vendor:
        try:
            return snapshot.find_provider_model(
                ref, None, vendor.get("provider_id"), vendor.get("provider_api_url")
            ), "provider"
        except LookupError:
            pass
    try:
        found = snapshot.find_provider_model(ref, None, None, None)
    except LookupError:
        return None
    if local and found[1].id.lower() != ref.lower():
        return None
    return found, "name"


def _their_usage(usage: Usage) -> Any:
    from genai_prices import Usage as TheirUsage

    return TheirUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def would_cost(provider: Any, model: str, usage: Usage, price: Price | None) -> Decimal | None:
    """What `usage` would cost on `model` (a budget's bound); None: no price is known."""
    name = getattr(provider, "name", type(provider).__name__)
    cost_of = _pricer(provider, name, model, None, datetime.now(UTC), price)[0]
    return None if cost_of is None else cost_of(usage)


def context_window(provider: Any, model: str) -> int | None:
    """`model`'s context window in genai-prices' table (None: not there). As for prices, a
    local server's model counts only if the table names it exactly."""
    name = getattr(provider, "name", type(provider).__name__)
    snapshot = _snapshot()[0]
    local = is_local(provider)
    found = _find(snapshot, model, None if local else _vendor(provider, name), local)
    window = found[0][1].context_window if found is not None else None
    return window if type(window) is int and window > 0 else None
