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
