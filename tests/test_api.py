"""The Python API: framework.run and framework.open_store give pandas tables of exactly the store's rows."""
from __future__ import annotations

import json

import numpy as np
import pytest

import framework
from framework.errors import ConfigError
from framework.store import ResultsStore


@pytest.fixture
def fake_plugins_env(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_PLUGINS", "fake_plugins")


def test_run_returns_the_cells_as_a_dataframe(fake_plugins_env, tmp_path):
    res = framework.run(dataset="fake-responses", models="fake-net,fake-net2", signals="all",
                        metrics=["fake-corr"], store=tmp_path / "store")
    df = res.to_pandas()
    with ResultsStore(tmp_path / "store") as store:
        rows = {r["cell_key"]: r for r in store.rows()}
    assert len(df) == len(rows) == 6 and set(df["status"]) == {"ok"}        # 2 models x 3 signals
    for rec in df.to_dict("records"):
        row = rows[rec["cell_key"]]
        assert (rec["model"], rec["signal"], rec["metric"], rec["value"]) == (
            row["model"], row["signal"], row["metric"], row["value"])
        assert rec["best_layer"] == row["summary"]["best_layer"] and rec["weights"] == "random init (fallback)"
    # per-layer table: the fake metric's ("layer": name, "r": value) rows of every cell
    layers = res.layers()
    assert len(layers) == 6 * 3 and set(layers["table"]) == {"layer"}     # 3 layers per cell
    for rec in layers.to_dict("records"):
        detail = rows[rec["cell_key"]]["details"]["layer"]
        assert rec["r"] == detail["r"][detail["layer"].index(rec["layer"])]
    assert {p.name for p in res.write_leaderboard()} >= {"leaderboard.csv", "leaderboard.md", "leaderboard.html"}
    # a second run skips every cell (nothing is scored again) and returns the same table
    again = framework.run(dataset="fake-responses", models="fake-net,fake-net2", signals="all",
                          metrics="fake-corr", store=tmp_path / "store")
    with ResultsStore(tmp_path / "store") as store:
        assert len(list(store.rows())) == 6
    assert again.to_pandas().equals(df)
    opened = framework.open_store(tmp_path / "store").to_pandas()
    assert sorted(opened["cell_key"]) == sorted(df["cell_key"])
    np.testing.assert_array_equal(opened.sort_values("cell_key")["value"].to_numpy(),
                                  df.sort_values("cell_key")["value"].to_numpy())


def test_best_layer_per_area_is_json(tmp_path):
    from framework.api import Results

    store = tmp_path / "s"
    with ResultsStore(store) as st:
        from framework.store import Cell
        from framework.types import Score

        st.start_run("r1", {})
        score = Score(0.5, summary={"best_layer": {"IT": "fc6", "V4": "c3"}})
        st.record_score(Cell("k1", "ds", "m", "sig", "rsa"), score,
                        run_id="r1", weights_source="pretrained", weights_label="ImageNet", provenance={},
                        started_at=0.0, seconds=0.0)
    (value,) = Results(store).to_pandas()["best_layer"]
    assert json.loads(value) == {"IT": "fc6", "V4": "c3"}


def test_bad_fields_and_missing_store_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown field 'modles'"):
        framework.run(modles=["alexnet"], store=tmp_path / "x")
    with pytest.raises(ConfigError, match="No results store"):
        framework.open_store(tmp_path / "nothing")


def test_leaderboard_csv_writes_per_area_best_layers_as_json(tmp_path):
    import csv

    from framework.leaderboard import write_leaderboard
    from framework.store import Cell
    from framework.types import Score

    with ResultsStore(tmp_path) as st:
        st.start_run("r1", {})
        st.record_score(Cell("k1", "ds", "m", "sig", "rsa"), Score(0.5, summary={"best_layer": {"IT": "fc6"}}),
                        run_id="r1", weights_source="pretrained", weights_label="ImageNet", provenance={},
                        started_at=0.0, seconds=0.0)
        write_leaderboard(st)
    (row,) = list(csv.DictReader((tmp_path / "leaderboard.csv").read_text().splitlines()))
    assert json.loads(row["best_layer"]) == {"IT": "fc6"}


def test_in_memory_rdm_dataset_scores_like_scipy(tmp_path):
    """An RDM dataset built from arrays is scored through framework.run; the rsa per-subject correlations
    equal SciPy's Spearman between the model's layer RDM (computed independently) and each subject RDM."""
    from scipy import stats
    from scipy.spatial.distance import pdist, squareform

    rng = np.random.default_rng(3)
    n = 12
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    base = squareform(pdist(rng.standard_normal((n, 5)), "correlation"))
    subj = np.stack([base + 0.01 * squareform(pdist(rng.standard_normal((n, 5)))) for _ in range(3)])
    ds = framework.rdms_dataset("arrays-rdm", images, {"IT": subj}, distance="correlation")
    res = framework.run(dataset=ds, models="pixels", metrics="rsa", store=tmp_path / "s",
                        metric_params={"rsa": {"selection": "optimistic", "include_pixels": True}})
    (row,) = res.rows()
    assert row["dataset"] == "arrays-rdm" and row["status"] == "ok"
    # independent: the pixels model's layer is the preprocessed image (ImageNet-normalised 224 px crop)
    from framework.registry import load_registry

    model = load_registry().create("model", "pixels", seed=0)
    x = np.concatenate([b["image"] for b in model.extract(ds.stimuli, ["image"])]).astype(np.float64)
    layer = pdist(x, "correlation")
    iu = np.triu_indices(n, 1)
    want = [stats.spearmanr(layer, s[iu]).statistic for s in subj]
    las = row["details"]["layer_area_subject"]
    np.testing.assert_allclose(las["r"], want, atol=1e-10)
    # a registered name is refused; a bad name too
    with pytest.raises(ConfigError, match="already a registered dataset"):
        framework.run(dataset=framework.rdms_dataset("demo", images, {"IT": subj}, distance="correlation"),
                      models="pixels", store=tmp_path / "t")


def test_in_memory_responses_dataset_runs(fake_plugins_env, tmp_path):
    rng = np.random.default_rng(0)
    n, k = 12, 4
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    data = rng.standard_normal((n, k))
    ds = framework.responses_dataset("arrays-resp", images, data, subjects=["s1"] * k, areas=["17", "18", "19", "37"])
    res = framework.run(dataset=ds, models="fake-net", metrics="fake-corr", signals="all", store=tmp_path / "s")
    df = res.to_pandas()
    assert set(df["dataset"]) == {"arrays-resp"} and set(df["status"]) == {"ok"} and len(df) >= 1
    assert ds.digest != framework.responses_dataset("arrays-resp", images, data + 1e-3, subjects=["s1"] * k,
                                                    areas=["17", "18", "19", "37"]).digest
