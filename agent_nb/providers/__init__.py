"""Providers by name; each module is imported only when its provider is first used."""

from __future__ import annotations

import importlib
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
    "resolve",
]

_REGISTRY: dict[str, tuple[str, str]] = {
    "openai": (".openai", "OpenAIProvider"),
    "ollama": (".openai", "OllamaProvider"),
    "openai-compatible": (".openai", "OpenAICompatibleProvider"),
    "openai-responses": (".openai_responses", "OpenAIResponsesProvider"),
    "anthropic": (".anthropic", "AnthropicProvider"),
    "test": (".testing", "TestProvider"),
}
_CLASSES = {cls: module for module, cls in _REGISTRY.values()}


def known_providers() -> list[str]:
    return sorted(_REGISTRY)


def _provider_class(name: str) -> type[Provider]:
    try:
        module, cls = _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(
            f"unknown provider {name!r}; known providers: {', '.join(known_providers())} "
            "(or pass a Provider instance)"
        ) from None
    return getattr(importlib.import_module(module, __name__), cls)


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
        cls = _provider_class(provider)
        kwargs = dict(options)
        if api_key is not None:
            kwargs["api_key"] = api_key
        if base_url is not None:
            kwargs["base_url"] = base_url
        try:
            instance = cls(**kwargs)
        except TypeError as exc:
            raise ConfigurationError(
                f"provider {provider!r} does not take these options: {exc}"
            ) from None
    else:
        raise ConfigurationError(
            f"provider must be a name or a Provider instance, got {type(provider).__name__}"
        )
    model = model or instance.default_model
    if not model:
        raise ConfigurationError(f"provider {instance.name!r} needs a model: Agent(model=...)")
    return instance, model


def __getattr__(name: str) -> Any:
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
