"""Permutation test against a plain loop over the same permutations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from framework.errors import ConfigError, DataError
from plugins.metrics import _rdm
from plugins.metrics._permutation import (
    draw_permutations,
    fdr_bh,
    min_exceedances_to_stop,
    pair_gather_index,
    permutation_test,
)

N_STIM = 12


def _data(seed: int = 0, n_sites: int = 4, n_layers: int = 3, planted: bool = True):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_layers, N_STIM, 6))
    feats[:, :, 0] *= 4.0  # one dominant axis per layer
    layers = np.column_stack([_rdm.rdm(f) for f in feats])
    resp = rng.normal(size=(N_STIM, n_sites))
    if planted:  # site 0 reads out layer 0 strongly
        resp[:, 0] = feats[0][:, 0] * 3 + 0.1 * rng.normal(size=N_STIM)
    return layers, resp


def _loop_counts(layers, resp, perms, stat, alternative="greater"):
    """The straightforward test: permute each site RDM's stimuli, correlate, count."""
    iu, ju = np.triu_indices(N_STIM, 1)
    obs = np.zeros((resp.shape[1], layers.shape[1]))
    count = np.zeros(obs.shape, dtype=int)
    for s in range(resp.shape[1]):
        d = np.abs(resp[:, s][:, None] - resp[:, s][None, :])
        for l in range(layers.shape[1]):
            obs[s, l] = stat(d[iu, ju], layers[:, l])
            for p in perms:
                dp = d[np.ix_(p, p)]
                null = stat(dp[iu, ju], layers[:, l])
                if alternative == "greater":
                    count[s, l] += null >= obs[s, l]
                else:
                    count[s, l] += abs(null) >= abs(obs[s, l])
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
    d = _rdm.site_rdms(rng.normal(size=(N_STIM, 1)))[:, 0]
    square = scipy.spatial.distance.squareform(d)
    perms = draw_permutations(2, N_STIM, 20)
    g = pair_gather_index(perms)
    for k, p in enumerate(perms):
        np.testing.assert_array_equal(d[g[k]], _rdm.upper(square[np.ix_(p, p)]))


@pytest.mark.parametrize("comparison,stat", [("spearman", _spearman), ("pearson", _pearson)])
@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_matches_plain_loop_exactly(comparison, stat, alternative) -> None:
    layers, resp = _data(n_sites=3, n_layers=2)
    n_perm = 120
    res = permutation_test(_rdm.prepare(layers, comparison), _rdm.prepare(_rdm.site_rdms(resp), comparison),
                           N_STIM, n_permutations=n_perm, seed=7, alternative=alternative, early_stopping=False)
    obs, count = _loop_counts(layers, resp, draw_permutations(7, N_STIM, n_perm), stat, alternative)
    np.testing.assert_allclose(res.observed, obs, atol=1e-12)
    np.testing.assert_array_equal(res.n_exceed, count)
    np.testing.assert_array_equal(res.n_used, n_perm)
    np.testing.assert_array_equal(res.p, (1 + count) / (1 + n_perm))


def test_batching_does_not_change_results() -> None:
    layers, resp = _data(n_sites=12)
    z_l, z_s = _rdm.prepare(layers, "spearman"), _rdm.prepare(_rdm.site_rdms(resp), "spearman")
    kw = dict(n_permutations=400, seed=3, alpha=0.05)
    one = permutation_test(z_l, z_s, N_STIM, **kw)
    small = permutation_test(z_l, [z_s[:, :5], z_s[:, 5:]], N_STIM, gather_bytes=8 * 66 * 9 * 3, **kw)
    np.testing.assert_allclose(one.observed, small.observed, rtol=0, atol=1e-15)   # BLAS blocking
    for field in ("p", "n_exceed", "n_used", "stopped"):
        np.testing.assert_array_equal(getattr(one, field), getattr(small, field))


def test_early_stopping_never_changes_a_decision() -> None:
    rng = np.random.default_rng(11)
    n_perm, alpha = 1000, 0.01
    layers, resp = _data(seed=4, n_sites=20)
    for s in range(1, 6):  # more planted sites of varying strength, some near the threshold
        resp[:, s] = resp[:, 0] * (0.3 * s) + rng.normal(size=N_STIM)
    z_l, z_s = _rdm.prepare(layers, "spearman"), _rdm.prepare(_rdm.site_rdms(resp), "spearman")
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
