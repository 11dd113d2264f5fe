"""Scheduler on fake plugins with known answers: cross product, caching, failures, resume."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import fake_plugins
from framework.config import RunConfig
from framework.errors import DataError, PluginError
from framework.scheduler import run
from framework.store import ResultsStore


def _config(tmp_path, **kw) -> RunConfig:
    fields = dict(dataset="fake-responses", models=["fake-net", "fake-net2"], signals=["all"],
                  metrics=["fake-corr"], store=tmp_path / "store", progress=False)
    fields.update(kw)
    return RunConfig(**fields)


def _rows(tmp_path):
    with ResultsStore(tmp_path / "store") as store:
        return list(store.rows())


def _expected_value(sign: float) -> float:
    """Independent computation of FakeMetric on FakeModel (seed 0) with scipy.stats.pearsonr."""
    ds = fake_plugins.FakeDataset().load()
    imgs = ds.stimuli.images.astype(np.float32) / 255
    flat = imgs.reshape(len(imgs), -1)
    proj = np.random.default_rng(0).standard_normal((flat.shape[1], 5)).astype(np.float32)
    layers = {"pixels": flat, "means": imgs.mean(axis=(1, 2)), "proj": flat @ proj}
    data = sign * ds.responses.data
    per_layer = [np.mean([stats.pearsonr(f.astype(np.float64).mean(1), data[:, j])[0]
                          for j in range(data.shape[1])]) for f in layers.values()]
    return max(per_layer)


def test_cross_product_is_scored_with_known_values(fake_registry, tmp_path):
    summary = run(_config(tmp_path), registry=fake_registry)
    assert (summary.n_cells, summary.n_done, summary.n_failed) == (4, 4, 0)
    rows = {(r["model"], r["signal"]): r for r in _rows(tmp_path)}
    assert set(rows) == {(m, s) for m in ("fake-net", "fake-net2") for s in ("resp", "resp-neg")}
    assert rows["fake-net", "resp"]["value"] == pytest.approx(_expected_value(1.0), abs=1e-6)
    assert rows["fake-net", "resp-neg"]["value"] == pytest.approx(_expected_value(-1.0), abs=1e-6)
    prov = rows["fake-net", "resp"]["provenance"]
    assert prov["dataset"]["digest"] and prov["model"]["weights_digest"] and prov["seed"] == 0
    assert prov["model"]["weights_source"] == "random" and rows["fake-net", "resp"]["weights_label"].startswith(
        "random init")
    assert {"numpy", "torch", "mne", "python", "framework"} <= set(prov["packages"])
    assert prov["signal"]["params"] == {"name": "resp"} and prov["metric"]["params"]["sleep"] == 0.0


def test_rerun_skips_finished_cells_and_reuses_activations(fake_registry, tmp_path, monkeypatch):
    calls = []
    original = fake_plugins.FakeModel.extract

    def counting(self, *a, **k):
        calls.append(self.name)
        return original(self, *a, **k)

    monkeypatch.setattr(fake_plugins.FakeModel, "extract", counting)
    run(_config(tmp_path), registry=fake_registry)
    assert sorted(calls) == ["fake-net", "fake-net2"]          # once per model, not per cell
    first = {r["cell_key"]: r["finished_at"] for r in _rows(tmp_path)}

    summary = run(_config(tmp_path), registry=fake_registry)
    assert (summary.n_skipped, summary.n_done) == (4, 0)
    assert {r["cell_key"]: r["finished_at"] for r in _rows(tmp_path)} == first

    # a new metric parameter makes new cells, but activations come from the cache
    calls.clear()
    summary = run(_config(tmp_path, metric_params={"fake-corr": {"sleep": 0.001}}), registry=fake_registry)
    assert summary.n_done == 4 and calls == []
    assert len(_rows(tmp_path)) == 8


def test_failing_model_is_recorded_and_run_goes_on(fake_registry, tmp_path):
    summary = run(_config(tmp_path, models=["fake-broken", "fake-net"]), registry=fake_registry)
    assert summary.n_done == 2 and summary.n_failed == 2
    rows = _rows(tmp_path)
    broken = [r for r in rows if r["model"] == "fake-broken"]
    assert all(r["status"] == "error" and "simulated failure" in r["error"] for r in broken)
    assert all(r["status"] == "ok" for r in rows if r["model"] == "fake-net")

    # the failed cells are retried (and fail again) on a re-run; finished ones are not
    summary = run(_config(tmp_path, models=["fake-broken", "fake-net"]), registry=fake_registry)
    assert summary.n_skipped == 2 and summary.n_failed == 2
    assert len(_rows(tmp_path)) == 4


def test_metric_failure_affects_only_its_cells(fake_registry, tmp_path):
    cfg = _config(tmp_path, metric_params={"fake-corr": {"fail_on_signal_sign": "resp-neg"}})
    summary = run(cfg, registry=fake_registry)
    assert summary.n_done == 2 and summary.n_failed == 2
    assert {c.signal for c, _ in summary.failures} == {"resp-neg"}
    assert all("simulated metric failure" in e for _, e in summary.failures)


def test_signal_failure_is_recorded_per_cell(fake_registry, tmp_path):
    summary = run(_config(tmp_path, signal_params={"fake-signal": {"fail": True}}), registry=fake_registry)
    assert summary.n_done == 0 and summary.n_failed == 4
    assert all("simulated signal failure" in e for _, e in summary.failures)


def test_unavailable_pretrained_weights_stop_the_run_before_any_work(fake_registry, tmp_path):
    with pytest.raises(DataError, match="not available offline"):
        run(_config(tmp_path, weights="pretrained"), registry=fake_registry)
    assert _rows(tmp_path) == []
    assert not (tmp_path / "store" / "cache").exists()   # no signal computed, nothing extracted


def test_random_suffix_forces_random_weights(fake_registry, tmp_path):
    cfg = _config(tmp_path, models=["fake-net:random"], weights="pretrained")
    summary = run(cfg, registry=fake_registry)
    assert summary.n_done == 2
    assert {r["weights_source"] for r in _rows(tmp_path)} == {"random"}


@pytest.mark.parametrize("field, value, match", [
    ("models", ["fake-nett"], r"Unknown model 'fake-nett'.*Did you mean 'fake-net'"),
    ("signals", ["rsp"], r"Unknown signal 'rsp'.*'resp'"),
    ("metrics", ["fake-cor"], r"Unknown metric 'fake-cor'.*'fake-corr'"),
    ("dataset", "fake-respones", r"Unknown dataset 'fake-respones'.*'fake-responses'"),
])
def test_unknown_names_fail_before_any_work(fake_registry, tmp_path, field, value, match):
    with pytest.raises(PluginError, match=match):
        run(_config(tmp_path, **{field: value}), registry=fake_registry)
    assert not (tmp_path / "store" / "results.sqlite").exists()


def test_missing_dataset_path(fake_registry, tmp_path):
    from framework.errors import DataError

    with pytest.raises(DataError, match=r"Dataset file '.*nope\.toml' does not exist"):
        run(_config(tmp_path, dataset=str(tmp_path / "nope.toml")), registry=fake_registry)


def test_bad_model_parameters_fail_before_any_work(tmp_path):
    from framework.errors import FrameworkError
    from framework.registry import get_plugin_manager, load_registry

    registry = load_registry(get_plugin_manager(entry_points=False))
    with pytest.raises(FrameworkError, match=r"Unknown model 'timm:resnt18'.*'timm:resnet18'"):
        run(RunConfig(models=["timm:resnt18"], store=tmp_path / "s", progress=False), registry=registry)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_first_extraction_keeps_the_statistics_of_every_builtin_metric(tmp_path, caplog, monkeypatch):
    """After an rsa run, a linear-predictivity run reads its per-fold Gram matrices from the cache (no second
    forward pass) and scores exactly as a run that extracted for it."""
    import logging

    from framework.registry import get_plugin_manager, load_registry

    registry = load_registry(get_plugin_manager(entry_points=False))
    small = {"demo": {"n_images_per_category": 6, "n_subjects": 1, "n_sites": 10}}
    common = dict(dataset="demo", models=["alexnet:random"], signals=["lowgamma@150-350"], dataset_params=small,
                  progress=False)
    run(RunConfig(metrics=["rsa"], store=tmp_path / "a", **common), registry=registry)
    with caplog.at_level(logging.INFO, logger="framework"):
        caplog.clear()
        run(RunConfig(metrics=["linear-predictivity"], store=tmp_path / "a", **common), registry=registry)
    assert "Extracted" not in caplog.text
    with ResultsStore(tmp_path / "a") as store:
        after = next(r for r in store.rows(status="ok") if r["metric"] == "linear-predictivity")
    # a fresh cache: extracted for linear-predictivity alone
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path / "fresh-cache"))
    with caplog.at_level(logging.INFO, logger="framework"):
        caplog.clear()
        run(RunConfig(metrics=["linear-predictivity"], store=tmp_path / "b", **common), registry=registry)
    assert "Extracted 9 layers" in caplog.text
    with ResultsStore(tmp_path / "b") as store:
        fresh = next(r for r in store.rows(status="ok"))
    assert np.isfinite(fresh["value"])
    assert after["value"] == pytest.approx(fresh["value"], abs=1e-9)
    for name, table in fresh["details"].items():      # every per-layer / per-site number
        for column, values in table.items():
            got = after["details"][name][column]
            if values and isinstance(values[0], float):
                np.testing.assert_allclose(np.array(got, dtype=float), np.array(values, dtype=float), atol=1e-9)
            else:
                assert got == values, (name, column)
