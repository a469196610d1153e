"""The public API is what `__all__` says, exactly (as httpx checks its own)."""

from __future__ import annotations

import importlib
import types

import pytest

import agent_nb

PUBLIC = {
    "Agent",
    "AgentError",
    "AsyncJsonStream",
    "AsyncStream",
    "ChatPanel",
    "ContextReport",
    "Cost",
    "JsonStream",
    "MCP",
    "Message",
    "ModelRetry",
    "Price",
    "Response",
    "Router",
    "Session",
    "Spend",
    "Stream",
    "Summarize",
    "Tool",
    "Trim",
    "Usage",
    "tool",
}
#: Modules whose `__all__` must name every public object they define (the package: every
#: public object it holds).
MODULES = [
    "agent_nb",
    "agent_nb.errors",
    "agent_nb.events",
    "agent_nb.providers",
    "agent_nb.stores",
]


def test_the_package_exports_exactly_the_public_names():
    assert set(agent_nb.__all__) == PUBLIC
    assert agent_nb.__all__ == sorted(agent_nb.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_of_a_module_is_in_its_all_and_resolves(name):
    module = importlib.import_module(name)
    for exported in module.__all__:
        assert getattr(module, exported) is not None, f"{name}.{exported}"
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and attr not in {"annotations", "TYPE_CHECKING", "Any"}
        and (name == "agent_nb" or getattr(value, "__module__", name) == name)
        and not (callable(value) and attr in {"load_ipython_extension", "unload_ipython_extension"})
    }
    assert defined <= set(module.__all__), (
        f"{name}: public but not in __all__: {defined - set(module.__all__)}"
    )


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        agent_nb.Nope  # noqa: B018


@pytest.mark.parametrize("name", ["agent_nb", "agent_nb.stores", "agent_nb._records"])
def test_a_name_loaded_on_first_use_is_never_a_submodules_name(name):
    """Importing a submodule binds its name on the package: a lazy name that is also a
    submodule's (`_records.replay` and `_records/replay.py`) became the module."""
    import pkgutil

    package = importlib.import_module(name)
    lazy = getattr(package, "_HOMES", None) or package._MODULES
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not set(lazy) & submodules
    for home in set(lazy.values()):
        importlib.import_module(home, name)  # every submodule imported first
    for attr in lazy:
        assert not isinstance(getattr(package, attr), types.ModuleType), f"{name}.{attr}"
