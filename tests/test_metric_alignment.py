"""AlignmentMetric (rho_align) on planted data and against SciPy."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import scipy.stats

from framework.errors import ConfigError, DataError
from framework.numerics.stats import (
    bootstrap_weights,
    draw_site_permutations,
    percentile_ci,
    site_permutation_spearman,
    table_spearman,
)
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


# -- site-level statistics ------------------------------------------------------------------
def _expanded_rho(site_counts: np.ndarray, site_rows: np.ndarray) -> float:
    """Spearman rho by SciPy over the points written out one by one."""
    s, lay = np.nonzero(site_counts)
    reps = site_counts[s, lay].astype(int)
    return float(scipy.stats.spearmanr(np.repeat(site_rows[s], reps), np.repeat(lay, reps)).statistic)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("stratified", [False, True])
def test_site_permutation_p_equals_brute_force_loop(alternative: str, stratified: bool) -> None:
    rng = np.random.default_rng(11)
    n_sites, n_layers, n_rows = 18, 7, 5
    counts = (rng.random((n_sites, n_layers)) < 0.35).astype(float)
    counts[counts.sum(axis=1) == 0, 3] = 1.0                       # every site has a point
    counts[2, 1] = 2.0                                              # weights count as repeated points
    rows = rng.integers(0, n_rows, n_sites)
    rows[:5] = np.arange(5)
    subjects = np.array(["a", "b", "c"])[rng.integers(0, 3, n_sites)]
    perms = draw_site_permutations(np.random.default_rng(3), n_sites, 400, subjects if stratified else None)
    assert perms.shape == (400, n_sites)
    assert (np.sort(perms, axis=1) == np.arange(n_sites)).all()    # every row is a permutation
    if stratified:
        assert (subjects[perms] == subjects).all()                 # labels move within a subject only
    got = site_permutation_spearman(counts, rows, n_rows, perms, alternative=alternative)
    observed = _expanded_rho(counts, rows)
    null = np.array([_expanded_rho(counts, rows[pi]) for pi in perms])          # one permutation at a time
    if alternative == "greater":
        extreme = null >= observed - 1e-9
    elif alternative == "less":
        extreme = null <= observed + 1e-9
    else:
        extreme = np.abs(null) >= abs(observed) - 1e-9
    assert got.observed == pytest.approx(observed, abs=1e-12)
    np.testing.assert_allclose(got.null, null, atol=1e-12, rtol=0)
    assert got.n_extreme == int(extreme.sum())
    assert got.p == (1 + extreme.sum()) / (1 + len(perms))


def test_metric_p_value_is_the_site_level_permutation_p() -> None:
    acts, resp = _planted(seed=2, sites_per_area=3)
    seed, n = 4, 2000
    score = AlignmentMetric(n_permutations=500, alpha=0.01, n_bootstrap=0, n_site_permutations=n,
                            min_sites=5).score(acts, resp, seed=seed)
    t = score.details["layer_site"]
    n_sites = len(set(t["site"]))
    sig = np.array(t["significant"]).reshape(n_sites, -1).astype(float)
    area_rank = np.array([AREAS.index(a) for a in t["area"][::sig.shape[1]]])
    rows_with = sig.sum(axis=1) > 0
    assert score.value == pytest.approx(_expanded_rho(sig, area_rank), abs=1e-12)
    # the permutations the metric documents: the second child of SeedSequence(seed), over the sites with points
    perms = draw_site_permutations(np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1]),
                                   int(rows_with.sum()), n)
    c, a = sig[rows_with], area_rank[rows_with]
    null = np.array([_expanded_rho(c, a[pi]) for pi in perms])
    p = (1 + (np.abs(null) >= abs(score.value) - 1e-9).sum()) / (1 + n)
    assert score.p_value == p
    assert "site-level permutation" in score.summary["p_value_method"]


def test_rho_align_undefined_below_min_points_sites_areas() -> None:
    acts, resp = _planted(sites_per_area=1)                           # 5 sites in 5 areas
    score = AlignmentMetric(n_permutations=300, alpha=0.01).score(acts, resp)
    assert np.isnan(score.value) and score.p_value is None and score.ci is None
    assert "min_sites=10" in score.summary["reason"] and "undefined" in score.summary["reason"]
    n_sig = score.summary["n_significant_sites"]
    assert 2 <= n_sig < 10
    # the same data are defined once the thresholds allow it
    ok = AlignmentMetric(n_permutations=300, alpha=0.01, min_sites=2, min_points=3, n_bootstrap=0).score(acts, resp)
    assert np.isfinite(ok.value) and ok.summary["n_points"] >= 3
    many = AlignmentMetric(n_permutations=300, alpha=0.01, min_sites=2, min_points=500).score(acts, resp)
    assert np.isnan(many.value) and "min_points=500" in many.summary["reason"]
    # a single area among the points: undefined whatever the thresholds
    acts, resp = _planted()
    one = Responses(resp.data, SiteTable(resp.sites.names, resp.sites.subjects, ("19",) * 30 + ("n/a",)),
                    resp.stimulus_ids)
    s1 = AlignmentMetric(n_permutations=300, alpha=0.01).score(acts, one)
    assert np.isnan(s1.value) and "single area" in s1.summary["reason"]


def test_two_points_are_not_a_rho_align() -> None:
    """The case that motivated min_points / min_sites: two points give rho = -1 exactly."""
    acts, resp = _planted(seed=5, sites_per_area=6)
    keep = np.zeros(31, bool)
    keep[[0, 29]] = True                                               # one site of area 17, one of area 20
    score = AlignmentMetric(n_permutations=300, alpha=0.01, variant="best-layer").score(acts, resp.select_sites(keep))
    assert np.isnan(score.value) and score.summary["n_points"] <= 2 and "min_points" in score.summary["reason"]


def test_bootstrap_counts_undefined_resamples_and_withholds_the_ci() -> None:
    acts, resp = _planted(seed=6, sites_per_area=4)
    seed, n_boot = 1, 400
    first = AlignmentMetric(n_permutations=500, alpha=0.01, n_bootstrap=0, n_site_permutations=0, min_sites=2)
    n_with = first.score(acts, resp, seed=seed).summary["n_significant_sites"]
    min_sites = n_with - 1                         # just below the data: some resamples fall under it
    kw = dict(n_permutations=500, alpha=0.01, n_site_permutations=0, n_bootstrap=n_boot, min_sites=min_sites,
              min_points=10)
    score = AlignmentMetric(**kw, max_undefined_bootstrap=1.0).score(acts, resp, seed=seed)
    assert np.isfinite(score.value) and score.p_value is None
    t = score.details["layer_site"]
    n_sites = len(set(t["site"]))
    sig = np.array(t["significant"]).reshape(n_sites, -1).astype(float)
    rank = np.array([AREAS.index(a) for a in t["area"][::sig.shape[1]]])
    subjects = np.array(t["subject"][::sig.shape[1]])
    w = bootstrap_weights(np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0]), subjects, n_boot)
    boot = []
    for weights in w.astype(int):                                      # one resample at a time, as data
        idx = np.repeat(np.arange(n_sites), weights)                   # a site drawn twice is two sites
        c, a = sig[idx], rank[idx]
        n_pts, n_with = int(c.sum()), int((c.sum(axis=1) > 0).sum())
        s, lay = np.nonzero(c)
        ok = n_pts >= 10 and n_with >= min_sites and np.unique(a[s]).size >= 2 and np.unique(lay).size >= 2
        boot.append(_expanded_rho(c, a) if ok else np.nan)
    boot = np.array(boot)
    defined = np.isfinite(boot)
    frac = defined.mean()
    assert 0.0 < frac < 1.0, frac                                      # the case exercises both branches
    assert score.summary["bootstrap_defined_fraction"] == pytest.approx(frac)
    assert score.summary["n_bootstrap_defined"] == int(defined.sum())
    np.testing.assert_allclose(score.ci, np.percentile(boot[defined], [2.5, 97.5]), atol=1e-12)
    # more undefined resamples than allowed: no CI, and the reason says how many
    strict = AlignmentMetric(**kw, max_undefined_bootstrap=(1 - frac) / 2).score(acts, resp, seed=seed)
    assert strict.ci is None and strict.value == score.value
    assert f"{n_boot - int(defined.sum())} of {n_boot}" in strict.summary["ci_reason"]
    assert strict.summary["bootstrap_defined_fraction"] == pytest.approx(frac)


def test_percentile_ci_rule() -> None:
    x = np.r_[np.linspace(-1, 1, 95), [np.nan] * 5]
    got = percentile_ci(x, level=0.9, max_undefined_fraction=0.05)
    assert got.n_defined == 95 and got.defined_fraction == 0.95
    np.testing.assert_allclose(got.ci, np.percentile(x[:95], [5, 95]))
    none = percentile_ci(x, max_undefined_fraction=0.04)
    assert none.ci is None and "5 of 100" in none.reason


def _with_responsive(resp: Responses, mask: np.ndarray, applied: bool = False) -> Responses:
    info = {"signal": "lowgamma@150-350", "responsive": {"n_sites": int(mask.size), "n_responsive": int(mask.sum()),
                                                         "filter_applied": applied, "mask": [bool(m) for m in mask]}}
    return Responses(resp.data, resp.sites, resp.stimulus_ids, area_order=resp.area_order, info=info)


def test_responsive_only_keeps_the_sites_the_signal_marked(caplog) -> None:
    acts, resp = _planted(seed=7, sites_per_area=4)
    mask = np.random.default_rng(0).random(21) < 0.75
    mask[-1] = True                                                    # the site outside area_order stays out anyway
    marked = _with_responsive(resp, mask)
    m = AlignmentMetric(n_permutations=300, alpha=0.01, n_bootstrap=50, n_site_permutations=200, min_sites=5)
    with caplog.at_level(logging.INFO, logger="framework.metrics.alignment"):
        score = m.score(acts, marked, seed=3)
    used = mask[:20]
    s = score.summary
    assert s["n_sites"] == int(used.sum()) and s["n_sites_unresponsive"] == int((~used).sum())
    assert s["n_sites_in_area_order"] == 20 and "dropped by the metric" in s["responsive_filter"]
    assert set(score.details["layer_site"]["site"]) == {resp.sites.names[i] for i in np.flatnonzero(used)}
    assert f"{int(used.sum())} of 20 sites in area_order used" in caplog.text and "lowgamma@150-350" in caplog.text
    # identical to scoring the responsive sites alone
    alone = m.score(acts, resp.select_sites(np.r_[used, True]), seed=3)
    assert alone.value == score.value and alone.p_value == score.p_value and alone.ci == score.ci
    assert "no responsiveness information" in alone.summary["responsive_filter"]
    # the signal already dropped them (band-power responsive_only=true): the same sites, said so
    pre = _with_responsive(resp.select_sites(np.r_[used, True]), np.ones(int(used.sum()) + 1, bool), applied=True)
    kept = m.score(acts, pre, seed=3)
    assert kept.value == score.value and "the signal kept" in kept.summary["responsive_filter"]
    # off: every site in area_order
    off = AlignmentMetric(n_permutations=300, alpha=0.01, n_bootstrap=0, responsive_only=False,
                          min_sites=5).score(acts, marked)
    assert off.summary["n_sites"] == 20 and off.summary["responsive_filter"].startswith("off")
    # a mask of the wrong length is an error, not a silent misalignment
    bad = Responses(resp.data, resp.sites, resp.stimulus_ids, info={"responsive": {"mask": [True] * 5}})
    with pytest.raises(DataError, match="5 entries but the responses have 21 sites"):
        m.score(acts, bad)


def test_no_responsive_site_is_undefined_not_an_error() -> None:
    acts, resp = _planted(sites_per_area=2)
    none = _with_responsive(resp, np.zeros(11, bool))
    score = AlignmentMetric(n_permutations=100).score(acts, none)
    assert np.isnan(score.value) and "no responsive site" in score.summary["reason"]
    assert score.summary["n_sites"] == 0
