"""The built-in plugins, registered through the same hooks a third party uses.

They are declared in ``registry.toml``. In an installed wheel that file ships
inside the package (``framework/registry.toml``); in a source checkout or
editable install it sits at the project root next to ``framework/``.
"""
from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from framework.errors import PluginError
from framework.hookspecs import hookimpl


def registry_file() -> Path:
    """Path of the ``registry.toml`` that declares the built-in plugins."""
    packaged = resources.files("framework") / "registry.toml"
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "registry.toml"
    if checkout.is_file():
        return checkout
    raise PluginError("The built-in plugin list 'registry.toml' is missing from the framework installation; "
                      "reinstall the framework (pip install --force-reinstall ...).")


@functools.lru_cache(maxsize=4)
def _declared(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"'{path}' is not valid TOML ({exc}); fix the file.") from None


def _register(kind: str, registry) -> None:
    for entry in _declared(registry_file()).get(kind, []):
        missing = [k for k in ("name", "factory") if k not in entry]
        if missing:
            raise PluginError(f"A [[{kind}]] table in '{registry_file()}' lacks {', '.join(missing)}; add it.")
        registry.declare(kind, entry["name"], entry["factory"], entry.get("description", ""),
                         dict(entry.get("params", {})), source="builtin")


@hookimpl
def framework_register_models(registry):
    _register("model", registry)


@hookimpl
def framework_register_signals(registry):
    _register("signal", registry)


@hookimpl
def framework_register_metrics(registry):
    _register("metric", registry)


@hookimpl
def framework_register_datasets(registry):
    _register("dataset", registry)


@hookimpl
def framework_register_benchmarks(registry):
    _register("benchmark", registry)
