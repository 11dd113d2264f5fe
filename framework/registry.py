"""Plugin discovery on pluggy.

:func:`get_plugin_manager` builds a plugin manager with the built-in plugins
(``framework.builtins``, which reads ``registry.toml``) and, unless asked not
to, every module advertised in the entry-point group ``framework``. Both go
through the same hooks. :func:`load_registry` calls the hooks and returns a
:class:`Registry` of lazy :class:`PluginSpec` objects.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from framework import hookspecs
from framework.errors import ConfigError, FrameworkError, PluginError, unknown_name_error
from framework.params import PluginParams, validate_params

log = logging.getLogger("framework.registry")

Kind = Literal["model", "signal", "metric", "dataset", "benchmark"]
KINDS: tuple[str, ...] = ("model", "signal", "metric", "dataset", "benchmark")
ENTRY_POINT_GROUP = "framework"
#: Environment variable naming extra plugin modules to register (comma-separated).
ENV_PLUGINS = "FRAMEWORK_PLUGINS"
#: Suffix that turns any model into its seeded random-weight control.
RANDOM_SUFFIX = ":random"


@dataclass(frozen=True)
class PluginSpec:
    """A registered plugin, cheap to hold: nothing is imported until :meth:`create`.

    Parameters
    ----------
    kind : {"model", "signal", "metric", "dataset", "benchmark"}
    name : str
        Unique lower-case id within its kind. A name ending in ``":*"`` declares a
        family (``"timm:*"`` accepts ``"timm:<anything>"``; the factory validates it).
    factory : str or callable
        ``"module:object"`` or the object itself; called with keyword parameters.
    description : str
        One line.
    params : dict
        Default keyword parameters for the factory.
    source : str
        ``"builtin"`` or the distribution / module that registered it; filled in
        by :meth:`Registry.add` when left empty.
    """

    kind: str
    name: str
    factory: str | Callable[..., Any]
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PluginError(f"Plugin '{self.name}' declares kind '{self.kind}'; expected one of {', '.join(KINDS)}.")
        if not self.name or self.name != self.name.lower() or any(c.isspace() for c in self.name):
            raise PluginError(f"Plugin name '{self.name}' ({self.kind}) must be non-empty, lower-case, without spaces.")

    @property
    def is_family(self) -> bool:
        return self.name.endswith(":*")

    @property
    def prefix(self) -> str:
        return self.name[:-1] if self.is_family else self.name

    def load_factory(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        module_name, _, attr = str(self.factory).partition(":")
        if not attr:
            raise PluginError(f"Plugin '{self.name}' ({self.kind}) has factory '{self.factory}'; "
                              "expected 'module:object'. Fix its registration.")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"Plugin '{self.name}' ({self.kind}, from {self.source}) cannot be imported: "
                              f"{exc}. Install what it needs or uninstall the plugin.") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise PluginError(f"Plugin '{self.name}' ({self.kind}): module '{module_name}' has no "
                              f"'{attr}'. Fix the factory in its registration.") from None

    def parameter_class(self) -> type[PluginParams] | None:
        """The factory's parameter declaration (``factory.Params``), or None for an undeclared factory."""
        declared = getattr(self.load_factory(), "Params", None)
        return declared if isinstance(declared, type) and issubclass(declared, PluginParams) else None

    def check_params(self, params: dict[str, Any], *, name: str | None = None) -> PluginParams | None:
        """Validate ``params`` (the spec's defaults updated by them) against the declaration.

        Raises :class:`ConfigError` naming the plugin, the parameter and the fix; returns
        None for a factory without a declaration (it checks its keywords itself).
        """
        declared = self.parameter_class()
        if declared is None:
            return None
        return validate_params(declared, {**self.params, **params}, kind=self.kind, name=name or self.name)

    def create(self, *, name: str | None = None, context: dict[str, Any] | None = None, **params: Any) -> Any:
        """Instantiate the plugin.

        Parameters
        ----------
        name : str, optional
            The name the user gave (``"timm:resnet18"``), for messages; default the spec's.
        context : dict, optional
            Keywords the framework passes besides the declared parameters (a model's
            ``name``, ``weights``, ``seed``, ...; a dataset's ``cache_dir``).
        **params
            Declared parameters, over the spec's defaults; validated first.
        """
        self.check_params(params, name=name)
        merged = {**self.params, **params}
        factory = self.load_factory()
        try:
            return factory(**(context or {}), **merged)
        except TypeError as exc:
            if "keyword argument" not in str(exc):
                raise
            raise ConfigError(f"{self.kind.capitalize()} '{name or self.name}' rejected its parameters "
                              f"{sorted(merged)} ({exc}); remove the parameter or fix the plugin's declaration."
                              ) from None


class Registry:
    """All plugin specs by kind, filled by the ``framework_register_*`` hooks."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, PluginSpec]] = {k: {} for k in KINDS}
        self._source = ""  # the plugin whose hooks are running (set by load_registry)

    # -- registration -------------------------------------------------------------------
    def add(self, spec: PluginSpec) -> None:
        """Register ``spec``; a second plugin of the same kind and name is an error."""
        if not spec.source:
            spec = dataclasses.replace(spec, source=self._source or "plugin")
        table = self._specs[spec.kind]
        if spec.name in table:
            other = table[spec.name]
            raise PluginError(f"Two {spec.kind} plugins are named '{spec.name}' (from {other.source} and "
                              f"{spec.source}). Rename one of them or uninstall one package.")
        table[spec.name] = spec

    def declare(self, kind: str, name: str, factory: str | Callable[..., Any], description: str = "",
                params: dict[str, Any] | None = None, source: str = "") -> None:
        """Register a plugin of ``kind`` from plain values (what hook implementations call)."""
        self.add(PluginSpec(kind, name, factory, description, dict(params or {}), source))

    def add_model(self, name: str, factory: str | Callable[..., Any], description: str = "",
                  params: dict[str, Any] | None = None, source: str = "") -> None:
        """Shorthand for third-party packages: register a model."""
        self.declare("model", name, factory, description, params, source)

    # -- queries ------------------------------------------------------------------------
    def specs(self, kind: str) -> list[PluginSpec]:
        """Every spec of ``kind`` (families included), sorted by name."""
        return sorted(self._specs[kind].values(), key=lambda s: s.name)

    def names(self, kind: str) -> list[str]:
        """Concrete names of ``kind`` (families excluded): what ``all`` means."""
        return [s.name for s in self.specs(kind) if not s.is_family]

    def resolve(self, kind: str, name: str, *, option: str | None = None) -> tuple[PluginSpec, dict[str, Any]]:
        """Find the spec for ``name`` and the parameters the name itself implies.

        A model name ending in ``:random`` resolves to its base model with
        ``weights="random"``; ``timm:<net>`` resolves to the ``timm:*`` family.
        """
        implied: dict[str, Any] = {}
        table = self._specs[kind]
        base = name
        if kind == "model" and name.endswith(RANDOM_SUFFIX) and name not in table:
            base = name[: -len(RANDOM_SUFFIX)]
            implied["weights"] = "random"
        if base in table and not table[base].is_family:
            return table[base], implied
        for spec in table.values():
            if spec.is_family and base.startswith(spec.prefix) and len(base) > len(spec.prefix):
                return spec, implied
        choices = [s.name for s in table.values() if not s.is_family]
        choices += [s.prefix + "<name>" for s in table.values() if s.is_family]
        raise unknown_name_error(kind, name, choices, option=option)

    def create(self, kind: str, name: str, **overrides: Any) -> Any:
        """Instantiate plugin ``name`` of ``kind``.

        ``overrides`` mixes declared parameters with the framework's context keywords
        (:data:`framework.contracts.MODEL_CONTEXT` for models, ``DATASET_CONTEXT`` for
        datasets), which are passed through unvalidated. Models get ``name=`` too.
        """
        from framework.contracts import DATASET_CONTEXT, MODEL_CONTEXT

        spec, implied = self.resolve(kind, name)
        merged = {**implied, **overrides}
        if kind == "model" and "weights" in implied and merged.get("weights_file") is not None:
            raise ConfigError(f"Model '{name}' is the random-init control and takes no weights file; give the "
                              f"file to '{name[:-len(RANDOM_SUFFIX)]}' instead.")
        context_keys = MODEL_CONTEXT if kind == "model" else DATASET_CONTEXT if kind == "dataset" else ()
        context = {k: merged.pop(k) for k in list(merged) if k in context_keys}
        if kind == "model":
            context["name"] = name[: -len(RANDOM_SUFFIX)] if "weights" in implied else name
        if kind == "benchmark":
            context["name"] = name
        return spec.create(name=context.get("name", name), context=context, **merged)


def _env_plugin_names() -> list[str]:
    return [m for m in (m.strip() for m in os.environ.get(ENV_PLUGINS, "").split(",")) if m]


def get_plugin_manager(*, entry_points: bool = True, builtins: bool = True,
                       extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build a plugin manager with the built-ins and, optionally, installed entry points.

    Parameters
    ----------
    entry_points : bool
        Load modules from the entry-point group ``framework`` (third-party plugins)
        and the modules named in ``$FRAMEWORK_PLUGINS`` (comma-separated import
        paths; handy for a plugin that is not packaged yet).
    builtins : bool
        Register the built-in plugins of ``registry.toml``.
    extra_plugins : iterable
        Objects or modules with ``@hookimpl`` functions to register too (tests).
    """
    pm = pluggy.PluginManager("framework")
    pm.add_hookspecs(hookspecs)
    if builtins:
        from framework import builtins as builtin_plugins

        pm.register(builtin_plugins, name="framework.builtins")
    if entry_points:
        for module_name in _env_plugin_names():
            try:
                pm.register(importlib.import_module(module_name), name=module_name)
            except ImportError as exc:
                raise PluginError(f"Plugin module '{module_name}' named in ${ENV_PLUGINS} cannot be imported "
                                  f"({exc}); fix the variable or the module path.") from None
            except Exception as exc:  # any error at import, as for entry points: one line, not a crash
                raise PluginError(f"Plugin module '{module_name}' named in ${ENV_PLUGINS} failed at import "
                                  f"({type(exc).__name__}: {exc}); fix the module or remove it from "
                                  f"${ENV_PLUGINS}.") from None
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # a broken third-party package must not hide the built-ins
            raise PluginError(f"A package in entry-point group '{ENTRY_POINT_GROUP}' failed to load: "
                              f"{type(exc).__name__}: {exc}. Fix or uninstall it (pip uninstall ...).") from None
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def load_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every registration hook and return the filled :class:`Registry`."""
    pm = pm or get_plugin_manager()
    registry = Registry()
    dists = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    plugins = sorted(pm.get_plugins(), key=lambda p: (pm.get_name(p) != "framework.builtins", pm.get_name(p) or ""))
    for plugin in plugins:
        name = pm.get_name(plugin) or ""
        registry._source = "builtin" if name == "framework.builtins" else dists.get(id(plugin), name)
        others = [p for p in plugins if p is not plugin]
        for hook in ("framework_register_models", "framework_register_signals", "framework_register_metrics",
                     "framework_register_datasets", "framework_register_benchmarks"):
            try:
                pm.subset_hook_caller(hook, remove_plugins=others)(registry=registry)
            except FrameworkError:  # already one line naming the plugin (e.g. two plugins of one name)
                raise
            except Exception as exc:
                if name in _env_plugin_names():
                    where, fix = f"plugin module '{name}' (named in ${ENV_PLUGINS})", (
                        f"fix the module or remove it from ${ENV_PLUGINS}")
                else:
                    where, fix = f"plugin '{name}' ({registry._source})", "fix or uninstall it (pip uninstall ...)"
                raise PluginError(f"The {hook} hook of {where} failed: {type(exc).__name__}: {exc}; "
                                  f"{fix}.") from None
    registry._source = ""
    return registry
