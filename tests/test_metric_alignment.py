"""AlignmentMetric (rho_align) on planted data and against SciPy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from framework.errors import ConfigError, DataError
from framework.numerics.stats import bootstrap_weights, table_spearman
from framework.types import Activations, BrainRDMs, Responses, SiteTable
from plugins.metrics.alignment import AlignmentMetric

AREAS = ("17", "18", "19", "37", "20")
N = 40


def _planted(seed: int = 0, sites_per_area: int = 6):
    """Fake layers l0..l5 of growing depth; a site in area rank k copies layer k+1's signal plus noise."""
    rng = np.random.default_rng(seed)
    sig = [rng.normal(size=N)]
    for _ in range(5):
        sig.append(0.4 * sig[-1] + rng.normal(size=N))
    ids = tuple(f"im{i}" for i in range(N))
    acts = Activations({f"l{k}": np.column_stack([s, 0.1 * rng.normal(size=(N, 2))]).astype(np.float32)
                        for k, s in enumerate(sig)}, ids)
    names, subjects, areas, cols = [], [], [], []
    for k, area in enumerate(AREAS):
        for j in range(sites_per_area):
            names.append(f"p{j % 3}/{area}-{j}")
            subjects.append(f"p{j % 3}")
            areas.append(area)
            cols.append(sig[k + 1] + 0.6 * rng.normal(size=N))
    names.append("p0/out")
    subjects.append("p0")
    areas.append("n/a")                                        # outside the ventral stream: ignored
    cols.append(rng.normal(size=N))
    resp = Responses(np.column_stack(cols).astype(np.float32), SiteTable(tuple(names), tuple(subjects),
                                                                        tuple(areas)), ids)
    return acts, resp


def test_table_spearman_matches_scipy_on_expanded_points() -> None:
    rng = np.random.default_rng(0)
    tables = rng.integers(0, 4, size=(20, 5, 9)).astype(float)
    got = table_spearman(tables)
    for t, g in zip(tables, got):
        a, lay = np.nonzero(t)
        reps = t[a, lay].astype(int)
        assert g == pytest.approx(scipy.stats.spearmanr(np.repeat(a, reps), np.repeat(lay, reps)).statistic,
                                  abs=1e-12)
    one_area = np.zeros((5, 9))
    one_area[2, [1, 4]] = 3
    assert np.isnan(table_spearman(one_area))


def test_planted_alignment_is_recovered() -> None:
    acts, resp = _planted()
    m = AlignmentMetric(n_permutations=1000, alpha=0.01, n_bootstrap=300)
    score = m.score(acts, resp, seed=0)
    assert score.value > 0.7 and score.p_value < 1e-3
    lo, hi = score.ci
    assert lo <= score.value <= hi and lo > 0.3
    s = score.summary
    assert s["n_sites"] == 30 and s["n_sites_outside_area_order"] == 1 and s["n_subjects"] == 3
    t = score.details["layer_site"]
    sig = np.array(t["significant"]).reshape(30, 6)
    r = np.array(t["r"]).reshape(30, 6)
    p = np.array(t["p"]).reshape(30, 6)
    np.testing.assert_array_equal(sig, (p <= 0.01) & (r > 0))
    area_rank = np.repeat(np.arange(5), 6)
    pa, pl = np.nonzero(sig)
    assert score.value == pytest.approx(scipy.stats.spearmanr(area_rank[pa], pl).statistic, abs=1e-12)
    al = score.details["area_layer"]
    k = al["area"].index("18") + 2
    assert al["sum_significant_r_per_site"][k] == pytest.approx(r[6:12, 2][sig[6:12, 2]].sum() / 6, abs=1e-12)
    assert al["n_significant"][k] == int(sig[6:12, 2].sum())
    json.dumps(score.details), json.dumps(score.summary)
    again = m.score(acts, resp, seed=0)
    assert again.value == score.value and again.ci == score.ci


def test_shuffled_areas_give_no_alignment() -> None:
    acts, resp = _planted(seed=1)
    perm = np.random.default_rng(5).permutation(30)
    areas = tuple(np.array(resp.sites.areas[:30])[perm]) + ("n/a",)
    shuffled = Responses(resp.data, SiteTable(resp.sites.names, resp.sites.subjects, areas), resp.stimulus_ids)
    score = AlignmentMetric(n_permutations=1000, alpha=0.01, n_bootstrap=0).score(acts, shuffled)
    assert abs(score.value) < 0.3 and score.ci is None


def test_best_layer_variant_one_point_per_site() -> None:
    acts, resp = _planted()
    score = AlignmentMetric(n_permutations=500, alpha=0.01, variant="best-layer", n_bootstrap=0).score(acts, resp)
    t = score.details["layer_site"]
    sig = np.array(t["significant"]).reshape(30, 6)
    r = np.array(t["r"]).reshape(30, 6)
    assert (sig.sum(axis=1) <= 1).all() and score.summary["n_points"] == int(sig.any(axis=1).sum())
    rows = np.flatnonzero(sig.any(axis=1))
    assert (np.argmax(sig[rows], axis=1) == np.argmax(r[rows], axis=1)).all()   # planted: best r is significant
    assert score.value > 0.7


def test_no_significant_pairs_gives_nan_with_reason() -> None:
    rng = np.random.default_rng(3)
    ids = tuple(f"im{i}" for i in range(12))
    acts = Activations({"a": rng.normal(size=(12, 4)).astype(np.float32)}, ids)
    resp = Responses(rng.normal(size=(12, 4)).astype(np.float32),
                     SiteTable(("s/1", "s/2", "s/3", "s/4"), ("s",) * 4, ("17", "18", "19", "20")), ids)
    score = AlignmentMetric(n_permutations=200, alpha=0.001).score(acts, resp)
    assert np.isnan(score.value) and "undefined" in score.summary["reason"]


def test_bootstrap_weights() -> None:
    rng = np.random.default_rng(0)
    w = bootstrap_weights(rng, np.array(["a"] * 7), 50)
    np.testing.assert_array_equal(w.sum(axis=1), 7)
    subj = np.array(["a"] * 3 + ["b"] * 5)
    w = bootstrap_weights(rng, subj, 200)
    # each sample draws 2 subjects; a subject drawn k times contributes k * its site count
    totals = w.sum(axis=1)
    assert set(np.unique(totals)) <= {6.0, 8.0, 10.0}
    assert len(np.unique(totals)) == 3


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="variant.*Did you mean 'best-layer'"):
        AlignmentMetric(variant="best_layer")
    with pytest.raises(ConfigError, match="n_permutations"):
        AlignmentMetric(n_permutations=0)
    ids = ("a", "b", "c")
    acts = Activations({"x": np.zeros((3, 2), np.float32)}, ids)
    with pytest.raises(DataError, match="Responses"):
        AlignmentMetric().score(acts, BrainRDMs({"IT": np.zeros((1, 3, 3))}, ids, ("IT",)))
    resp = Responses(np.ones((3, 1), np.float32), SiteTable(("s/1",), ("s",), ("V1",)), ids)
    with pytest.raises(DataError, match="area_order"):
        AlignmentMetric().score(acts, resp)
