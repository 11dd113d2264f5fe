"""Permutation test against a plain loop over the same permutations.

The reference loops permute the *layer* RDM: permutation ``pi`` of
:func:`draw_permutations` (defined on the site RDM's stimulus labels) is applied
as ``pi^-1`` to the layer's square RDM, ``L[np.ix_(pi^-1, pi^-1)]``, and the
statistic is recomputed from scratch with SciPy (re-ranking for Spearman). This
gives exactly ``stat(site permuted by pi, layer)`` (checked below), so counts
must match the fast test exactly. The fast test computes in float32 and counts
``null >= observed - tie_tolerance(n_pairs)``; the references count with the same
rule on their float64 values (so exact ties, e.g. the identity, count in both).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from framework.errors import ConfigError, DataError
from framework.numerics import permutation, rdm
from framework.numerics.permutation import (
    draw_permutations,
    inverse_permutations,
    min_exceedances_to_stop,
    pair_gather_index,
    permutation_test,
    tie_tolerance,
)
from framework.numerics.stats import fdr_bh

N_STIM = 12


def _data(seed: int = 0, n_sites: int = 4, n_layers: int = 3, planted: bool = True):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_layers, N_STIM, 6))
    feats[:, :, 0] *= 4.0  # one dominant axis per layer
    layers = np.column_stack([rdm.rdm(f) for f in feats])
    resp = rng.normal(size=(N_STIM, n_sites))
    if planted:  # site 0 reads out layer 0 strongly
        resp[:, 0] = feats[0][:, 0] * 3 + 0.1 * rng.normal(size=N_STIM)
    return layers, resp


def _loop_counts(layers, resp, perms, stat, alternative="greater"):
    """The straightforward test: permute each layer RDM's stimuli by pi^-1, correlate with SciPy, count."""
    n = resp.shape[0]
    iu, ju = np.triu_indices(n, 1)
    tol = tie_tolerance(iu.size)
    obs = np.zeros((resp.shape[1], layers.shape[1]))
    count = np.zeros(obs.shape, dtype=int)
    inv = inverse_permutations(perms)
    for k in range(layers.shape[1]):
        square = scipy.spatial.distance.squareform(layers[:, k])
        permuted = [square[np.ix_(q, q)][iu, ju] for q in inv]
        for s in range(resp.shape[1]):
            site = np.abs(resp[:, s][:, None] - resp[:, s][None, :])[iu, ju]
            obs[s, k] = stat(site, layers[:, k])
            for lp in permuted:
                null = stat(site, lp)
                if alternative == "greater":
                    count[s, k] += null >= obs[s, k] - tol
                elif alternative == "less":
                    count[s, k] += null <= obs[s, k] + tol
                else:
                    count[s, k] += abs(null) >= abs(obs[s, k]) - tol
    return obs, count


def _spearman(x, y):
    return scipy.stats.spearmanr(x, y).statistic


def _pearson(x, y):
    return scipy.stats.pearsonr(x, y).statistic


def test_draw_permutations_reproducible() -> None:
    a = draw_permutations(5, 10, 50)
    b = draw_permutations(np.random.default_rng(5), 10, 50)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.sort(a, axis=1), np.tile(np.arange(10), (50, 1)))
    assert len({tuple(r) for r in a}) > 45


def test_pair_gather_index_is_permuted_upper_triangle() -> None:
    rng = np.random.default_rng(1)
    d = rdm.site_rdms(rng.normal(size=(N_STIM, 1)))[:, 0]
    square = scipy.spatial.distance.squareform(d)
    perms = draw_permutations(2, N_STIM, 20)
    g = pair_gather_index(perms)
    for k, p in enumerate(perms):
        np.testing.assert_array_equal(d[g[k]], rdm.upper(square[np.ix_(p, p)]))


def test_permuting_the_layer_by_the_inverse_equals_permuting_the_site() -> None:
    layers, resp = _data(n_sites=2, n_layers=1)
    iu, ju = np.triu_indices(N_STIM, 1)
    site = np.abs(resp[:, 1][:, None] - resp[:, 1][None, :])
    layer = scipy.spatial.distance.squareform(layers[:, 0])
    perms = draw_permutations(3, N_STIM, 10)
    for p, q in zip(perms, inverse_permutations(perms)):
        np.testing.assert_array_equal(np.sort(np.argsort(p)), np.arange(N_STIM))
        np.testing.assert_array_equal(q, np.argsort(p))
        a = _spearman(site[np.ix_(p, p)][iu, ju], layer[iu, ju])
        b = _spearman(site[iu, ju], layer[np.ix_(q, q)][iu, ju])
        assert a == pytest.approx(b, abs=1e-14)


def test_tie_tolerance() -> None:
    eps = np.finfo(np.float32).eps
    assert tie_tolerance(66) == pytest.approx(4 * eps * np.sqrt(66))
    # far below the spacing of Spearman values at 12 stimuli (ranks are half-integers: 0.25 / (66^3 / 12))
    assert tie_tolerance(66) < 0.5 * 0.25 / (66 ** 3 / 12)


@pytest.mark.parametrize("comparison,stat", [("spearman", _spearman), ("pearson", _pearson)])
@pytest.mark.parametrize("alternative", ["greater", "two-sided", "less"])
def test_matches_plain_loop_exactly(comparison, stat, alternative) -> None:
    layers, resp = _data(n_sites=3, n_layers=2)
    n_perm = 120
    perms = draw_permutations(7, N_STIM, n_perm)
    perms[[5, 77]] = np.arange(N_STIM)          # the identity is a tie and counts, in both
    res = permutation_test(rdm.prepare(layers, comparison), rdm.prepare(rdm.site_rdms(resp), comparison),
                           N_STIM, perms=perms, alternative=alternative, early_stopping=False)
    obs, count = _loop_counts(layers, resp, perms, stat, alternative)
    np.testing.assert_allclose(res.observed, obs, atol=1e-12)
    np.testing.assert_array_equal(res.n_exceed, count)
    assert (count >= 2).all()
    np.testing.assert_array_equal(res.n_used, n_perm)
    np.testing.assert_array_equal(res.p, (1 + count) / (1 + n_perm))
    if alternative == "greater":
        assert res.p[0, 0] < 0.05 and (res.p > 0.05).sum() >= 3     # planted cell significant, not all cells


def test_matches_float64_reference_at_40_stimuli() -> None:
    """More pairs (780), sites and permutations; reference: re-rank every permuted layer RDM in float64."""
    n, n_perm = 40, 300
    rng = np.random.default_rng(21)
    feats = rng.normal(size=(3, n, 5))
    layers = np.column_stack([rdm.rdm(f) for f in feats])
    resp = rng.normal(size=(n, 30))
    resp[:, :6] += feats[0][:, :1] * np.linspace(0.2, 2.0, 6)      # graded signal
    iu, ju = np.triu_indices(n, 1)
    perms = draw_permutations(5, n, n_perm)
    z_s = rdm.prepare(rdm.site_rdms(resp), "spearman")
    z_l = rdm.prepare(layers, "spearman")
    res = permutation_test(z_l, z_s, n, perms=perms, early_stopping=False)
    squares = [scipy.spatial.distance.squareform(layers[:, k]) for k in range(3)]
    null = np.stack([np.column_stack([sq[np.ix_(q, q)][iu, ju] for sq in squares])
                     for q in inverse_permutations(perms)])                 # (n_perm, n_pairs, 3)
    ranks = scipy.stats.rankdata(null, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    ranks /= np.linalg.norm(ranks, axis=1, keepdims=True)
    null_r = np.einsum("kpl,ps->ksl", ranks, z_s)                        # (n_perm, n_sites, 3) float64
    obs = z_s.T @ z_l
    count = (null_r >= obs[None] - tie_tolerance(iu.size)).sum(axis=0)
    np.testing.assert_array_equal(res.n_exceed, count)
    assert (res.p[:6, 0] < 0.01).sum() >= 3 and (res.p > 0.1).sum() > 40


@pytest.mark.parametrize("workers", [1, 4])
def test_batching_does_not_change_results(workers, monkeypatch) -> None:
    monkeypatch.setattr(permutation, "_MAX_WORKERS", workers)
    layers, resp = _data(n_sites=12)
    z_l, z_s = rdm.prepare(layers, "spearman"), rdm.prepare(rdm.site_rdms(resp), "spearman")
    kw = dict(n_permutations=400, seed=3, alpha=0.05)
    one = permutation_test(z_l, z_s, N_STIM, **kw)
    # 3 permutations per batch, groups of 4 sites across input blocks of 5 and 7
    small = permutation_test(z_l, [z_s[:, :5], z_s[:, 5:]], N_STIM, gather_bytes=4 * 66 * 3 * 3,
                             site_bytes=4 * 66 * 4, **kw)
    np.testing.assert_allclose(one.observed, small.observed, rtol=0, atol=1e-15)   # float64 BLAS blocking
    for field in ("p", "n_exceed", "n_used", "stopped"):
        np.testing.assert_array_equal(getattr(one, field), getattr(small, field))
    assert one.stopped.any() and (~one.stopped).any()


def test_early_stopping_never_changes_a_decision() -> None:
    rng = np.random.default_rng(11)
    n_perm, alpha = 1000, 0.01
    layers, resp = _data(seed=4, n_sites=20)
    for s in range(1, 6):  # more planted sites of varying strength, some near the threshold
        resp[:, s] = resp[:, 0] * (0.3 * s) + rng.normal(size=N_STIM)
    z_l, z_s = rdm.prepare(layers, "spearman"), rdm.prepare(rdm.site_rdms(resp), "spearman")
    full = permutation_test(z_l, z_s, N_STIM, n_permutations=n_perm, seed=0, alpha=alpha, early_stopping=False)
    fast = permutation_test(z_l, z_s, N_STIM, n_permutations=n_perm, seed=0, alpha=alpha, early_stopping=True)
    h = min_exceedances_to_stop(alpha, n_perm)
    assert h == 11 and fast.h == 11
    np.testing.assert_array_equal(full.p <= alpha, fast.p <= alpha)
    assert (full.p <= alpha).any() and fast.stopped.any() and (fast.n_used < n_perm).any()
    # cells that did not stop have exactly the full-test p-value
    np.testing.assert_array_equal(fast.p[~fast.stopped], full.p[~fast.stopped])
    # stopped cells: Besag-Clifford p = h / n_used, above alpha, with n_used < N
    st = fast.stopped
    np.testing.assert_array_equal(fast.n_exceed[st], h)
    np.testing.assert_allclose(fast.p[st], h / fast.n_used[st])
    assert (fast.p[st] > alpha).all() and (fast.n_used[st] < n_perm).all()
    # the stopping point is the permutation of the h-th exceedance
    assert (full.n_exceed[st] >= h).all()


def test_fdr_bh_matches_scipy() -> None:
    p = np.random.default_rng(0).uniform(size=(7, 5)) ** 3
    p[2, 3] = np.nan
    q = fdr_bh(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], scipy.stats.false_discovery_control(p[ok]), rtol=1e-12)
    assert np.isnan(q[2, 3])


def test_bad_arguments() -> None:
    z = np.zeros((66, 2))
    with pytest.raises(ConfigError, match="alternative"):
        permutation_test(z, z, N_STIM, alternative="bigger")
    with pytest.raises(DataError, match="n_pairs=66"):
        permutation_test(np.zeros((65, 2)), z, N_STIM)
    with pytest.raises(ConfigError, match="alpha"):
        permutation_test(z, z, N_STIM, alpha=1.5)
    with pytest.raises(DataError, match="perms"):
        permutation_test(z, z, N_STIM, perms=np.zeros((5, 11), dtype=int))
    with pytest.raises(DataError, match="n_sites"):
        permutation_test(z, [z, np.zeros((60, 2))], N_STIM)


# ---- the engine's paths (groups, site and cell mode, pool, workers) against spearmanr on permuted RDMs ----

def _brute_force_sequential(layers, resp, perms, alpha, early_stopping=True):
    """The test by definition: every permutation ``pi`` of the site RDM's stimuli, ``scipy.stats.spearmanr`` of
    the permuted site RDM with each layer RDM, counted with the tie tolerance, stopped (Besag-Clifford) at the
    ``h``-th exceedance. Returns observed, n_exceed, n_used, stopped, p (each (n_sites, n_layers))."""
    n, n_perm = resp.shape[0], perms.shape[0]
    iu, ju = np.triu_indices(n, 1)
    tol = tie_tolerance(iu.size)
    sites = np.column_stack([np.abs(resp[:, s][:, None] - resp[:, s][None, :])[iu, ju] for s in range(resp.shape[1])])
    n_sites = sites.shape[1]

    def corr(site_vectors):                                       # (n_pairs, n_sites) -> (n_sites, n_layers)
        return scipy.stats.spearmanr(np.column_stack([site_vectors, layers])).statistic[:n_sites, n_sites:]

    obs = corr(sites)
    squares = [scipy.spatial.distance.squareform(sites[:, s]) for s in range(n_sites)]
    null = np.stack([corr(np.column_stack([sq[np.ix_(p, p)][iu, ju] for sq in squares])) for p in perms])
    hit = null >= obs[None] - tol                                 # (n_perm, n_sites, n_layers)
    h = min_exceedances_to_stop(alpha, n_perm)
    cum = np.cumsum(hit, axis=0)
    reach = (cum >= h).any(axis=0) if early_stopping else np.zeros(obs.shape, dtype=bool)
    first = np.argmax(cum >= h, axis=0)                           # 0-based permutation of the h-th exceedance
    stopped = reach & (first < n_perm - 1)
    n_used = np.where(stopped, first + 1, n_perm)
    n_exceed = np.where(stopped, h, cum[-1])
    p = np.where(stopped, n_exceed / n_used, (1.0 + n_exceed) / (1.0 + n_perm))
    return obs, n_exceed, n_used, stopped, p


def _graded_data(n_stim: int, n_sites: int, seed: int):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(3, n_stim, 5))
    layers = np.column_stack([rdm.rdm(f) for f in feats])
    resp = rng.normal(size=(n_stim, n_sites))
    k = n_sites // 3
    resp[:, :k] += feats[np.arange(k) % 3, :, 0].T * np.linspace(0.1, 3.0, k)      # signal of graded strength
    return layers, resp


ENGINE_CONFIGS = {
    # one group, site mode then cell mode, parked in the pool
    "default": {},
    # groups of 7 sites (site_bytes), several batches of one permutation each at first, sites move to cell mode
    # one by one, many cell sets merged, matrices split between the workers (up to 4, at most the CPU count),
    # pool flushed when full
    "small": {"site_rows": 7, "pool_share": 1.0, "first_batch": 1, "migrate_min": 0.0, "max_sets": 1,
              "min_task_rows": 1, "workers": 4},
    # the pool is smaller than a group's survivors: groups run to the end themselves
    "no_pool": {"site_rows": 11, "pool_share": 0.1, "workers": 2},
    # no cell mode (nothing migrates), parked late, one worker
    "sites_only": {"site_rows": 13, "migrate_max": 0, "park_at": 0.5, "workers": 1},
    # sites move to cell mode a few at a time (fewer than the compaction threshold), one permutation per batch
    "trickle": {"migrate_max": 1, "migrate_min": 0.0, "first_batch": 1, "park_at": 0.3, "workers": 2},
    # everything migrates at once, parked right away, tiny batches
    "cells_only": {"migrate_max": 9, "park_at": 0.0, "gather_perms": 2, "workers": 2},
}


def _run_config(monkeypatch, z_l, z_s, n_stim, config, **kw):
    n_pairs = z_l.shape[0]
    for name, attr in (("pool_share", "_POOL_SHARE"), ("first_batch", "_FIRST_BATCH"), ("migrate_min", "_MIGRATE_MIN"),
                       ("migrate_max", "_MIGRATE_MAX"), ("max_sets", "_MAX_CELL_SETS"), ("park_at", "_PARK_AT"),
                       ("min_task_rows", "_MIN_TASK_ROWS"), ("workers", "_MAX_WORKERS")):
        if name in config:
            monkeypatch.setattr(permutation, attr, config[name])
    if "site_rows" in config:
        kw["site_bytes"] = 4 * n_pairs * config["site_rows"]
    if "gather_perms" in config:
        kw["gather_bytes"] = n_pairs * (8 + 4 * 3) * config["gather_perms"]
    # blocks of 5 sites, as site_rsa feeds them
    blocks = [z_s[:, s:s + 5] for s in range(0, z_s.shape[1], 5)]
    return permutation_test(z_l, blocks, n_stim, **kw)


@pytest.mark.parametrize("config", sorted(ENGINE_CONFIGS))
def test_engine_paths_match_spearmanr_on_permuted_rdms(config, monkeypatch) -> None:
    n_stim, n_sites, n_perm, alpha = 20, 36, 300, 0.02
    layers, resp = _graded_data(n_stim, n_sites, seed=5)
    perms = draw_permutations(9, n_stim, n_perm)
    perms[[0, 150]] = np.arange(n_stim)                       # the identity: an exact tie that must count
    z_l = rdm.prepare(layers, "spearman")
    z_s = np.concatenate(list(rdm.site_rdm_blocks(resp, "spearman", 8 * 190 * 4)), axis=1)
    res = _run_config(monkeypatch, z_l, z_s, n_stim, ENGINE_CONFIGS[config], perms=perms, alpha=alpha)
    obs, n_exceed, n_used, stopped, p = _brute_force_sequential(layers, resp, perms, alpha)
    np.testing.assert_allclose(res.observed, obs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.n_exceed, n_exceed)
    np.testing.assert_array_equal(res.n_used, n_used)
    np.testing.assert_array_equal(res.stopped, stopped)
    np.testing.assert_array_equal(res.p, p)
    # the data exercise both outcomes: cells stopped early at different points, and cells run to the end
    assert stopped.sum() > 30 and (~stopped).sum() > 5 and len(np.unique(n_used)) > 20
    assert (p <= alpha).sum() >= 3


@pytest.mark.parametrize("config", sorted(ENGINE_CONFIGS))
def test_engine_paths_give_the_same_results(config, monkeypatch) -> None:
    """Larger than the brute force allows: every path gives bit for bit the result of the default one,
    also without early stopping and for the other alternatives."""
    n_stim, n_sites = 30, 150
    layers, resp = _graded_data(n_stim, n_sites, seed=8)
    resp[:, 7] = 2.0                                           # a constant site: NaN, never tested
    z_l = rdm.prepare(layers, "spearman")
    z_s = rdm.prepare(rdm.site_rdms(resp), "spearman")
    for kw in ({"alpha": 0.01}, {"alpha": 0.05, "alternative": "two-sided"}, {"early_stopping": False},
               {"alpha": 0.05, "alternative": "less"}):
        kw.update(n_permutations=500, seed=2)
        ref = permutation_test(z_l, z_s, n_stim, **kw)
        with monkeypatch.context() as m:
            got = _run_config(m, z_l, z_s, n_stim, ENGINE_CONFIGS[config], **kw)
        np.testing.assert_array_equal(got.observed, ref.observed)
        for field in ("p", "n_exceed", "n_used", "stopped"):
            np.testing.assert_array_equal(getattr(got, field), getattr(ref, field), err_msg=f"{field} {kw}")
        assert np.isnan(ref.p[7]).all() and (ref.n_used[7] == 0).all()
        assert np.isfinite(ref.p[np.arange(n_sites) != 7]).all()


def test_single_site_and_three_stimuli() -> None:
    """One site (the plugin's group RDM) and the smallest RDM: single rows and columns go through sgemm."""
    layers, resp = _data(n_sites=1, n_layers=2)
    perms = draw_permutations(4, N_STIM, 200)
    res = permutation_test(rdm.prepare(layers, "spearman"), rdm.prepare(rdm.site_rdms(resp), "spearman"), N_STIM,
                           perms=perms, alpha=0.05)
    obs, n_exceed, n_used, stopped, p = _brute_force_sequential(layers, resp, perms, 0.05)
    np.testing.assert_array_equal(res.n_used, n_used)
    np.testing.assert_array_equal(res.p, p)
    z = np.array([[1.0], [0.0], [-1.0]]) / np.sqrt(2)        # 3 stimuli, 3 pairs
    three = permutation_test(z, z, 3, n_permutations=50, seed=1, early_stopping=False)
    assert three.observed[0, 0] == pytest.approx(1.0) and three.n_used[0, 0] == 50
    assert 0 < three.p[0, 0] <= 1


def test_products_of_any_shape_agree_far_within_the_tolerance() -> None:
    """Why the comparison has a tolerance: BLAS picks its kernels by the shape of a product, so the float32
    value of one (site, permuted layer) pair differs in its last bits between products of different rows
    and columns (as sites stop and batches change). The differences are far below ``tie_tolerance``, so the
    identity permutation (and any exact tie) always counts."""
    n = 250
    rng = np.random.default_rng(0)
    z_s = rdm.prepare(rdm.site_rdms(rng.normal(size=(n, 40))), "spearman").T.astype(np.float32)   # (40, n_pairs)
    z_l = rdm.prepare(rdm.rdm(rng.normal(size=(n, 30))), "spearman").astype(np.float32)           # (n_pairs, 1)
    observed = (z_s @ np.repeat(z_l, 9, axis=1))[:, 0]
    worst = 0.0
    for rows in (slice(0, 1), slice(3, 5), slice(7, 20), slice(0, 40)):
        for cols in (1, 2, 5, 64):
            null = z_s[rows] @ np.repeat(z_l, cols, axis=1)
            worst = max(worst, float(np.abs(null - observed[rows, None]).max()))
    assert worst < tie_tolerance(z_l.shape[0]) / 100


def test_compact_moves_rows_in_place() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        mat = rng.normal(size=(int(rng.integers(1, 40)), 3))
        keep = np.flatnonzero(rng.random(mat.shape[0]) < rng.random())
        want = mat[keep].copy()
        got = permutation._compact(mat, keep)
        np.testing.assert_array_equal(got, want)
        assert got.base is mat or got is mat or keep.size == 0


# ---- the prepared site RDMs of site_rdm_blocks (one sort of packed keys per site) ----

def _responses_with_ties(n_stim: int, n_sites: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    resp = rng.normal(size=(n_stim, n_sites)).astype(np.float32).astype(np.float64)   # float32 data: tied differences
    resp[:, 1] = rng.integers(0, 4, n_stim)                   # many ties
    resp[:, 2] = 3.0                                           # constant: NaN
    resp[:, 3] = np.arange(n_stim)                             # equally spaced: ties at every lag
    resp[:2, 4] = [1e300, -1e300]                              # huge differences
    resp[:, 5] = 1.0 + np.arange(n_stim) * 2.0 ** -45           # differences too close for the packed key
    resp[:, 6] *= 1e-300
    return resp


@pytest.mark.parametrize("comparison", ["spearman", "rho-a", "pearson"])
@pytest.mark.parametrize("n_stim", [3, 4, 12, 40, 250])
def test_site_rdm_blocks_equal_prepare_bit_for_bit(comparison, n_stim) -> None:
    resp = _responses_with_ties(n_stim, 40, seed=n_stim)
    want = rdm.prepare(rdm.site_rdms(resp), comparison)
    n_pairs = n_stim * (n_stim - 1) // 2
    for n_threads, prefetch, block_sites in ((1, 1, 40), (1, 1, 7), (2, 1, 9), (3, 3, 4)):
        blocks = list(rdm.site_rdm_blocks(resp, comparison, 8 * n_pairs * block_sites, n_threads=n_threads,
                                          prefetch=prefetch))
        assert all(b.shape[0] == n_pairs for b in blocks) and sum(b.shape[1] for b in blocks) == 40
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), want)


def test_site_rdm_blocks_spearman_equals_scipy_and_nan_propagates() -> None:
    resp = _responses_with_ties(25, 12, seed=1)
    resp[4, 7] = np.nan
    z = np.concatenate(list(rdm.site_rdm_blocks(resp, "spearman", n_threads=2)), axis=1)
    layer = rdm.rdm(np.random.default_rng(2).normal(size=(25, 4)))
    r = z.T @ rdm.prepare(layer, "spearman")[:, 0]
    iu, ju = np.triu_indices(25, 1)
    for s in range(12):
        site = np.abs(resp[:, s][:, None] - resp[:, s][None, :])[iu, ju]
        if s in (2, 7):                                        # constant, NaN
            assert np.isnan(r[s])
        else:
            assert r[s] == pytest.approx(scipy.stats.spearmanr(site, layer).statistic, abs=1e-12)
