"""Shared fixtures: registries without entry points, temporary stores and caches."""
from __future__ import annotations

import logging
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
    """Every test gets its own user-level cache in a temporary folder (activations, signals), whose
    ``datasets`` folder is shared across the session so the demo is generated once."""
    shared = tmp_path_factory.getbasetemp() / "framework-cache-datasets"
    shared.mkdir(exist_ok=True)
    cache = tmp_path_factory.mktemp("framework-cache")
    (cache / "datasets").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(cache))
    monkeypatch.delenv("FRAMEWORK_PLUGINS", raising=False)
    from plugins.models import _torch_common

    _torch_common._FALLBACK_ANNOUNCED.clear()   # each test sees the one-line fallback warning again


@pytest.fixture
def fake_registry():
    """Registry with only the fake plugins (no built-ins, no entry points)."""
    import fake_plugins
    from framework.registry import get_plugin_manager, load_registry

    pm = get_plugin_manager(entry_points=False, builtins=False, extra_plugins=[fake_plugins])
    return load_registry(pm)


@pytest.fixture
def model_log():
    """Records of the "framework.models" logger (independent of handlers the CLI may have installed)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("framework.models")
    handler, level = Keep(level=logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED}")
    return SHARED


#: The results schema written before stores had a ``plan_key`` column (migration tests).
LEGACY_SCHEMA = """
CREATE TABLE scores (
    cell_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, dataset TEXT NOT NULL, model TEXT NOT NULL,
    signal TEXT NOT NULL, metric TEXT NOT NULL, weights_source TEXT, weights_label TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), value REAL, ceiling REAL, ci_low REAL,
    ci_high REAL, p_value REAL, higher_is_better INTEGER, summary TEXT, details TEXT, error TEXT,
    provenance TEXT, started_at REAL, finished_at REAL, seconds REAL
);
CREATE INDEX scores_by_name ON scores (dataset, metric, signal, model);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, config TEXT,
                   n_done INTEGER, n_failed INTEGER, n_skipped INTEGER);
"""


@pytest.fixture
def offline(monkeypatch):
    """No network: the offline probe and every download attempt fail at once, like a failed DNS lookup.
    Returns the URLs tried."""
    import urllib.error
    import urllib.request

    from plugins.models import _torch_common as common

    tried: list[str] = []

    def no_network(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("offline (test)")

    def unreachable(url, timeout=None):
        tried.append(url)
        return "offline (test)"

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(common, "host_unreachable", unreachable)
    return tried



def epochs_metadata(rows: list[dict]):
    """Trial metadata for ``mne.EpochsArray``: a DataFrame when pandas is installed (MNE then requires
    one), else the list of dicts MNE accepts without pandas."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)
