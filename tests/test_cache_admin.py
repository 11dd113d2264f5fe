"""One user-wide cache shared by every store; ``framework cache info`` and ``framework cache prune``.

* two stores reuse one extraction and one signal computation;
* ``cache info`` lists size by model and dataset, separating kept features from statistics;
* ``cache prune`` by model, dataset, age and ``--all`` removes exactly the matching entries (``--dry-run``
  removes nothing), refuses to run without a filter, and a pruned entry is rebuilt by the next run;
* two processes racing on one key both finish, with one entry and the same scores.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fake_plugins
from framework.cache_admin import entries, parse_age, prune
from framework.cli import main
from framework.config import RunConfig
from framework.errors import ConfigError
from framework.scheduler import run
from framework.store import ResultsStore
from test_cache_integrity import _counting


def _cache() -> Path:
    return Path(os.environ["FRAMEWORK_CACHE_DIR"])


def _config(store: Path, **kw) -> RunConfig:
    fields = dict(dataset="fake-responses", models=["fake-net"], signals=["resp"], metrics=["fake-corr"],
                  store=store, progress=False)
    fields.update(kw)
    return RunConfig(**fields)


def _values(store: Path) -> dict[str, float]:
    with ResultsStore(store) as s:
        return {r["model"]: r["value"] for r in s.rows() if r["status"] == "ok"}


def test_two_stores_share_one_cache(fake_registry, tmp_path, monkeypatch):
    extracts = _counting(monkeypatch, fake_plugins.FakeModel, "extract")
    computes = _counting(monkeypatch, fake_plugins.FakeSignal, "compute")
    run(_config(tmp_path / "a"), registry=fake_registry)
    run(_config(tmp_path / "b"), registry=fake_registry)
    assert extracts == ["extract"] and computes == ["compute"]
    assert _values(tmp_path / "a") == _values(tmp_path / "b")
    assert not (tmp_path / "a" / "cache").exists()      # nothing cached inside a store


def test_cache_info_and_prune_through_the_cli(fake_registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("framework.registry.load_registry", lambda *a, **k: fake_registry)
    run(_config(tmp_path / "a", models=["fake-net", "fake-net2"]), registry=fake_registry)
    run(_config(tmp_path / "a", keep_activations=True, models=["fake-net"],  # new cells: the model runs again
                metric_params={"fake-corr": {"sleep": 0.001}}), registry=fake_registry)
    capsys.readouterr()
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("activations")}
    assert set(lines) == {"fake-net", "fake-net2"}
    assert "fake-responses" in lines["fake-net"]
    assert lines["fake-net2"].split()[-3] == "-"          # statistics only: no kept features
    assert lines["fake-net"].split()[-3] != "-"            # --keep-activations kept the features
    assert any(line.startswith("responses") and "fake-responses" in line for line in out.splitlines())

    before = list(entries(_cache()))
    assert main(["cache", "prune", "--model", "fake-net2", "--dry-run"]) == 0
    assert "Would remove" in capsys.readouterr().out and list(entries(_cache())) == before
    assert main(["cache", "prune", "--model", "fake-net2"]) == 0
    left = list(entries(_cache()))
    assert {e.model for e in left if e.area == "activations"} == {"fake-net"}
    assert len(left) == len(before) - sum(e.model == "fake-net2" for e in before)

    assert main(["cache", "prune"]) == 2                   # no filter: refused, nothing removed
    assert "needs a filter" in capsys.readouterr().err and list(entries(_cache())) == left
    assert main(["cache", "prune", "--older-than", "soon"]) == 2
    assert "--older-than 'soon' is not an age" in capsys.readouterr().err
    assert main(["cache", "prune", "--older-than", "1d"]) == 0 and list(entries(_cache())) == left  # all fresh

    # a pruned entry is rebuilt by the next run, with the same scores
    values = _values(tmp_path / "a")
    assert main(["cache", "prune", "--all"]) == 0
    assert [e for e in entries(_cache()) if e.area != "temporary"] == []
    extracts = _counting(monkeypatch, fake_plugins.FakeModel, "extract")
    run(_config(tmp_path / "b", models=["fake-net", "fake-net2"]), registry=fake_registry)
    assert len(extracts) == 2 and _values(tmp_path / "b") == values


def test_prune_by_age_and_dataset(fake_registry, tmp_path):
    run(_config(tmp_path / "a"), registry=fake_registry)
    items = list(entries(_cache()))
    old = [e for e in items if e.area == "activations"]
    for e in old:  # not used for 40 days
        os.utime(e.path, (time.time() - 40 * 86400,) * 2)
    gone = prune(_cache(), older_than=parse_age("30d"))
    assert sorted(e.path for e in gone) == sorted(e.path for e in old)
    assert all(not e.path.exists() for e in old)
    gone = prune(_cache(), dataset="fake-responses")
    assert {e.area for e in gone} == {"responses"}
    with pytest.raises(ConfigError, match="--all removes everything"):
        prune(_cache(), everything=True, model="x")
    assert parse_age("12h") == 43200 and parse_age("2") == 172800 and parse_age("90m") == 5400


RACE = r"""
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from framework.activation_cache import ActivationCache
from framework.types import StimulusSet
from framework.layer_stats import Need
from test_layer_stats import ArrayModel, _layers

layers = _layers()
ids = tuple(f"s{{i:02d}}" for i in range(40))
stimuli = StimulusSet(ids, images=np.zeros((40, 4, 4, 3), dtype=np.uint8))
cache = ActivationCache({root!r})
model = ArrayModel(layers)
key = cache.key("arrays", {{}}, model.weights_info(), list(layers), {{}}, "race", None)
acts, _ = cache.load(model, stimuli, list(layers), key=key, needs=[Need.gram(centered=True)], batch_size=3)
g, _ = acts.gram("conv", center=True)
np.save({out!r}, g)
"""


def test_two_processes_racing_on_one_key_both_finish_with_one_entry(tmp_path):
    root = tmp_path / "acts"
    procs = []
    for i in range(2):
        code = RACE.format(tests=str(Path(__file__).parent), root=str(root), out=str(tmp_path / f"g{i}.npy"))
        procs.append(subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "g0.npy"), np.load(tmp_path / "g1.npy"))
    names = sorted(p.name for p in root.iterdir())
    assert len(names) == 2 and not any(n.startswith(".tmp-") for n in names)   # summary + centred Gram
