"""Providers by name: `register(name, factory)` adds one, and the built-ins are registered the
same way, each module imported only when its provider is first made."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, UnknownProviderError
from .base import OutputSchema, Provider, Request

if TYPE_CHECKING:
    from .anthropic import AnthropicProvider
    from .openai import OllamaProvider, OpenAICompatibleProvider, OpenAIProvider
    from .openai_responses import OpenAIResponsesProvider
    from .testing import TestProvider

__all__ = [
    "AnthropicProvider",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "OpenAIProvider",
    "OpenAIResponsesProvider",
    "OutputSchema",
    "Provider",
    "Request",
    "TestProvider",
    "known_providers",
    "register",
    "resolve",
]

#: What `register` takes: a Provider subclass, or a function returning a Provider, called
#: with the connection options Agent was given (api_key, base_url, timeout, max_retries;
#: only those given, as keywords).
Factory = Callable[..., Provider]

_REGISTRY: dict[str, Factory] = {}
#: The built-in provider classes, each in the module imported when it is first asked for.
_MODULES = {
    "OpenAIProvider": ".openai",
    "OllamaProvider": ".openai",
    "OpenAICompatibleProvider": ".openai",
    "OpenAIResponsesProvider": ".openai_responses",
    "AnthropicProvider": ".anthropic",
    "TestProvider": ".testing",
}
#: A name `provider:model` can carry: no colon, no space.
_NAME = re.compile(r"[^\s:]+")


def register(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Make `Agent(provider=name, ...)` use what `factory(**options)` returns.

    `factory` is a Provider subclass or a function returning a Provider instance. A name
    already registered is refused unless `replace=True`, or unless `factory` is the same
    definition made again (same module and qualified name: a notebook cell run twice).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"a provider name is a non-empty string without spaces or ':' "
            f"(Agent(model='name:model') splits there), got {name!r}"
        )
    if not callable(factory):
        hint = (
            ": to use an instance, pass it as Agent(provider=instance)"
            if isinstance(factory, Provider)
            else ""
        )
        raise ConfigurationError(
            f"register({name!r}, ...) needs a Provider subclass or a function that returns a "
            f"Provider, got {type(factory).__name__}{hint}"
        )
    old = _REGISTRY.get(name)
    if old is not None and not replace and not _same_definition(old, factory):
        raise ConfigurationError(
            f"provider {name!r} is already registered (to {_describe(old)}); pass "
            "replace=True to replace it, or register under another name"
        )
    _REGISTRY[name] = factory


def known_providers() -> list[str]:
    return sorted(_REGISTRY)


def resolve(
    provider: str | Provider | None,
    model: str | None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> tuple[Provider, str]:
    """The provider instance and model for Agent's arguments, `"provider:model"` included."""
    if provider is None and model and ":" in model:
        head, _, rest = model.partition(":")
        if head in _REGISTRY:
            provider, model = head, rest
    if provider is None:
        raise ConfigurationError(
            f"name a provider: Agent(provider=..., model=...) or model='provider:model'; "
            f"known providers: {', '.join(known_providers())}"
        )
    if isinstance(provider, Provider):
        if api_key is not None or base_url is not None or options:
            raise ConfigurationError(
                "api_key, base_url and connection options belong to the provider instance "
                "when you pass one"
            )
        instance = provider
    elif isinstance(provider, str):
        if api_key is not None:
            options["api_key"] = api_key
        if base_url is not None:
            options["base_url"] = base_url
        instance = _make(provider, options)
    else:
        raise ConfigurationError(
            f"provider must be a name or a Provider instance, got {type(provider).__name__}"
        )
    model = model or instance.default_model
    if not model:
        raise ConfigurationError(f"provider {instance.name!r} needs a model: Agent(model=...)")
    return instance, model


def _make(name: str, options: dict[str, Any]) -> Provider:
    """The instance the factory registered as `name` makes with `options`."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(
            f"unknown provider {name!r}; known providers: {', '.join(known_providers())} "
            "(or pass a Provider instance, or register one: agent_nb.providers.register)"
        ) from None
    try:
        instance = factory(**options)
    except TypeError as exc:
        raise ConfigurationError(f"provider {name!r} does not take these options: {exc}") from None
    if not isinstance(instance, Provider):
        raise ConfigurationError(
            f"the factory registered as provider {name!r} ({_describe(factory)}) returned "
            f"{type(instance).__name__}, not a Provider: register a Provider subclass or a "
            "function that returns an instance of one"
        )
    return instance


class _Builtin:
    """The factory of a built-in provider: its class, imported when first called."""

    def __init__(self, cls: str) -> None:
        self.cls = cls

    def __call__(self, **options: Any) -> Provider:
        return _builtin_class(self.cls)(**options)

    def __repr__(self) -> str:
        return f"agent_nb.providers.{self.cls}"


def _builtin_class(name: str) -> type[Provider]:
    return getattr(importlib.import_module(_MODULES[name], __name__), name)


def _same_definition(old: Factory, new: Factory) -> bool:
    """Whether `new` is `old` defined again (its module and qualified name are old's)."""
    return _defined_at(new)[1] is not None and _defined_at(old) == _defined_at(new)


def _defined_at(factory: Factory) -> tuple[str | None, str | None]:
    """Where `factory` was defined: its module and qualified name (None for an instance)."""
    return getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)


def _describe(factory: Factory) -> str:
    if isinstance(factory, _Builtin):
        return f"the built-in {factory!r}"
    module, qualname = _defined_at(factory)
    return f"{module}.{qualname}" if module and qualname else repr(factory)


for _name, _cls in [
    ("openai", "OpenAIProvider"),
    ("ollama", "OllamaProvider"),
    ("openai-compatible", "OpenAICompatibleProvider"),
    ("openai-responses", "OpenAIResponsesProvider"),
    ("anthropic", "AnthropicProvider"),
    ("test", "TestProvider"),
]:
    register(_name, _Builtin(_cls))
del _name, _cls


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _builtin_class(name)
