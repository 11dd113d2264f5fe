"""Hook specifications: the only way plugins reach the framework.

Built-in plugins (declared in ``registry.toml``) and third-party packages (entry
point group ``framework``) implement these hooks the same way. Each hook gets the
:class:`framework.registry.Registry` and adds specs to it with ``registry.add``.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("framework")
hookimpl = pluggy.HookimplMarker("framework")


@hookspec
def framework_register_models(registry):
    """Add model specs (``registry.add(PluginSpec(kind="model", ...))``); called once per registry."""


@hookspec
def framework_register_signals(registry):
    """Add signal specs; a signal plugin may expand into several named signals."""


@hookspec
def framework_register_metrics(registry):
    """Add metric specs."""


@hookspec
def framework_register_datasets(registry):
    """Add dataset specs."""


@hookspec
def framework_register_benchmarks(registry):
    """Add benchmark specs: a dataset, a signal, a metric with its parameters and a score convention
    (:class:`framework.benchmarks.Benchmark`), e.g. ``registry.declare("benchmark", NAME,
    "framework.benchmarks:Benchmark", DESCRIPTION, params={...})``."""
