"""The plugin registry: built-ins from registry.toml, hooks, names and errors."""
from __future__ import annotations

import inspect
import tomllib

import pytest

from framework import hookspecs
from framework.builtins import registry_file
from framework.errors import PluginError
from framework.hookspecs import hookimpl
from framework.registry import PluginSpec, Registry, get_plugin_manager, load_registry


def test_builtins_match_registry_toml():
    declared = tomllib.loads(registry_file().read_text())
    registry = load_registry(get_plugin_manager(entry_points=False))
    for kind in ("model", "signal", "metric", "dataset"):
        want = sorted(e["name"] for e in declared[kind])
        assert [s.name for s in registry.specs(kind)] == want
        assert all(s.source == "builtin" for s in registry.specs(kind))


def test_every_hookspec_is_documented():
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("framework_")]
    assert len(specs) == 5
    for f in specs:
        assert f.__doc__ and f.__doc__.strip(), f.__name__


def test_all_means_concrete_names_only():
    registry = load_registry(get_plugin_manager(entry_points=False))
    names = registry.names("model")
    assert "alexnet" in names and "vgg16" in names
    assert not any(n.endswith("*") for n in names)


def test_resolve_random_suffix_and_family():
    registry = load_registry(get_plugin_manager(entry_points=False))
    spec, implied = registry.resolve("model", "alexnet:random")
    assert spec.name == "alexnet" and implied == {"weights": "random"}
    spec, implied = registry.resolve("model", "timm:resnet18")
    assert spec.name == "timm:*" and implied == {}
    spec, implied = registry.resolve("model", "timm:resnet18:random")
    assert spec.name == "timm:*" and implied == {"weights": "random"}


def test_unknown_name_suggests_closest():
    registry = load_registry(get_plugin_manager(entry_points=False))
    with pytest.raises(PluginError, match=r"Unknown model 'alexnt'.*Did you mean 'alexnet'"):
        registry.resolve("model", "alexnt")
    with pytest.raises(PluginError, match=r"Unknown metric 'rsaa'.*'rsa'"):
        registry.resolve("metric", "rsaa")


def test_duplicate_names_are_an_error():
    registry = Registry()
    registry.add(PluginSpec("metric", "m", "x:y"))
    with pytest.raises(PluginError, match="Two metric plugins are named 'm'"):
        registry.add(PluginSpec("metric", "m", "x:z"))


def test_bad_spec_fields_are_rejected():
    with pytest.raises(PluginError, match="lower-case"):
        PluginSpec("model", "AlexNet", "x:y")
    with pytest.raises(PluginError, match="kind"):
        PluginSpec("network", "a", "x:y")


def test_factory_import_errors_are_plugin_errors():
    spec = PluginSpec("metric", "ghost", "no_such_module_xyz:Thing", source="test")
    with pytest.raises(PluginError, match="cannot be imported"):
        spec.create()
    spec = PluginSpec("metric", "ghost", "framework.errors:NoSuchThing", source="test")
    with pytest.raises(PluginError, match="has no 'NoSuchThing'"):
        spec.create()


def test_temporary_plugin_is_registered_with_its_source():
    class Plugin:
        @hookimpl
        def framework_register_metrics(self, registry):
            registry.add(PluginSpec("metric", "temp-metric", "x:y", "temporary"))

    pm = get_plugin_manager(entry_points=False, extra_plugins=[Plugin()])
    try:
        registry = load_registry(pm)
        spec = {s.name: s for s in registry.specs("metric")}["temp-metric"]
        assert spec.source and spec.source != "builtin"
    finally:
        for p in list(pm.get_plugins()):
            pm.unregister(p)


def test_misspelt_hook_implementation_is_caught():
    class Bad:
        @hookimpl
        def framework_register_modles(self, registry):  # misspelt on purpose
            pass

    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError):
        get_plugin_manager(entry_points=False, extra_plugins=[Bad()])


def test_env_plugin_modules(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_PLUGINS", "fake_plugins")
    registry = load_registry(get_plugin_manager())
    assert "fake-net" in registry.names("model")
    monkeypatch.setenv("FRAMEWORK_PLUGINS", "no_such_plugin_module_xyz")
    with pytest.raises(PluginError, match="FRAMEWORK_PLUGINS"):
        get_plugin_manager()


def test_a_registration_hook_that_raises_is_a_plugin_error_naming_it():
    class Broken:
        @hookimpl
        def framework_register_metrics(self, registry):
            raise ValueError("hook boom")

    pm = get_plugin_manager(entry_points=False, builtins=False)
    pm.register(Broken(), name="broken_plugin")
    with pytest.raises(PluginError, match=r"framework_register_metrics hook of plugin 'broken_plugin'.*"
                                          r"ValueError: hook boom"):
        load_registry(pm)


def test_env_plugin_module_raising_at_import_is_a_plugin_error(tmp_path, monkeypatch):
    (tmp_path / "raising_env_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FRAMEWORK_PLUGINS", "raising_env_plugin")
    with pytest.raises(PluginError, match=r"'raising_env_plugin' named in \$FRAMEWORK_PLUGINS failed at import "
                                          r"\(RuntimeError: boom at import\)"):
        get_plugin_manager()
