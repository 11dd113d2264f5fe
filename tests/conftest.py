"""Shared fixtures: registries without entry points, temporary stores and caches."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = ROOT.parent / "shared"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets the user-level cache in a temporary folder (demo generation included),
    shared across the session so the demo is generated once."""
    cache = tmp_path_factory.getbasetemp() / "framework-cache"
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(cache))
    monkeypatch.delenv("FRAMEWORK_PLUGINS", raising=False)


@pytest.fixture
def fake_registry():
    """Registry with only the fake plugins (no built-ins, no entry points)."""
    import fake_plugins
    from framework.registry import get_plugin_manager, load_registry

    pm = get_plugin_manager(entry_points=False, builtins=False, extra_plugins=[fake_plugins])
    return load_registry(pm)


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED}")
    return SHARED
