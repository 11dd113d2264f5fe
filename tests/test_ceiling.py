"""Split-half noise ceilings with Spearman-Brown, against direct formulas."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from framework.errors import ConfigError, DataError
from framework.numerics import ceiling
from framework.numerics.ceiling import masked_pearson, spearman_brown, split_half_reliability


def _reps(n_reps=4, n_stim=30, n_sites=5, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n_stim, n_sites))
    return (signal + noise * rng.standard_normal((n_reps, n_stim, n_sites))).astype(np.float32)


def test_spearman_brown_values():
    np.testing.assert_allclose(spearman_brown([0.0, 0.5, 1.0, -0.2]), [0.0, 2 / 3, 1.0, -0.4 / 0.8])
    np.testing.assert_allclose(spearman_brown(0.5, factor=3.0), 1.5 / 2.0)


def test_fixed_split_matches_direct_formula():
    reps = _reps()
    keys = np.tile(np.array([2.0, 0.0, 3.0, 1.0])[None, :, None], (1, 1, reps.shape[1]))  # A = reps 1, 3
    out = split_half_reliability(reps, keys=keys)
    for j in range(reps.shape[2]):
        r = stats.pearsonr(reps[[1, 3], :, j].mean(axis=0), reps[[0, 2], :, j].mean(axis=0))[0]
        assert out.r_half[0, j] == pytest.approx(r, rel=1e-6)
        assert out.ceiling[j] == pytest.approx(2 * r / (1 + r), rel=1e-6)


def test_missing_repetitions_match_brute_force():
    rng = np.random.default_rng(1)
    reps = _reps(n_reps=5, n_stim=25, n_sites=4, seed=1).astype(np.float64)
    reps[rng.random(reps.shape) < 0.3] = np.nan
    keys = rng.random((3, 5, 25))
    out = split_half_reliability(reps, keys=keys)
    for s in range(3):
        for j in range(4):
            a, b = [], []
            for i in range(25):
                present = [r for r in np.argsort(keys[s, :, i], kind="stable") if np.isfinite(reps[r, i, j])]
                h = len(present) // 2
                if h == 0:
                    continue
                a.append(np.mean([reps[r, i, j] for r in present[:h]]))
                b.append(np.mean([reps[r, i, j] for r in present[h:2 * h]]))
            assert out.r_half[s, j] == pytest.approx(stats.pearsonr(a, b)[0], rel=1e-9)
    expected = spearman_brown(out.r_half.mean(axis=0))
    np.testing.assert_allclose(out.ceiling, expected, rtol=1e-12)


def test_random_splits_seeded_and_averaged():
    reps = _reps(n_reps=6, seed=2)
    a = split_half_reliability(reps, n_splits=7, seed=3)
    b = split_half_reliability(reps, n_splits=7, seed=3)
    c = split_half_reliability(reps, n_splits=7, seed=4)
    np.testing.assert_array_equal(a.ceiling, b.ceiling)
    assert not np.array_equal(a.r_half, c.r_half)
    assert a.r_half.shape == (7, 5)
    np.testing.assert_allclose(a.ceiling, spearman_brown(a.r_half.mean(axis=0)))
    # splits are genuinely different from one another
    assert np.unique(np.round(a.r_half[:, 0], 12)).size > 1


def test_ceiling_estimates_reliability_of_the_mean():
    # signal variance 1, noise variance 4 per repetition, 8 repetitions:
    # reliability of the 8-repetition mean = 1 / (1 + 4 / 8) = 2/3
    reps = _reps(n_reps=8, n_stim=2000, n_sites=4, noise=2.0, seed=5)
    out = split_half_reliability(reps, n_splits=10, seed=0)
    np.testing.assert_allclose(out.ceiling, 2 / 3, atol=0.03)


def test_chunking_does_not_change_result(monkeypatch):
    reps = _reps(seed=6)
    whole = split_half_reliability(reps, n_splits=5, seed=1)
    monkeypatch.setattr(ceiling, "_CHUNK_ELEMENTS", 1)
    chunked = split_half_reliability(reps, n_splits=5, seed=1)
    np.testing.assert_allclose(chunked.r_half, whole.r_half, rtol=1e-12)


def test_sites_without_repeats_get_nan_and_inputs_untouched():
    reps = _reps(seed=7).astype(np.float64)
    reps[1:, :, 2] = np.nan  # site 2 seen once per stimulus
    before = reps.copy()
    out = split_half_reliability(reps, n_splits=3)
    assert np.isnan(out.ceiling[2]) and np.isfinite(np.delete(out.ceiling, 2)).all()
    np.testing.assert_array_equal(reps, before)


def test_masked_pearson_matches_scipy():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 20, 3))
    valid = rng.random((20, 3)) > 0.2
    r = masked_pearson(a, b, valid)
    for j in range(3):
        assert r[j] == pytest.approx(stats.pearsonr(a[valid[:, j], j], b[valid[:, j], j])[0], rel=1e-10)


def test_bad_inputs():
    with pytest.raises(DataError, match="n_reps, n_stimuli, n_sites"):
        split_half_reliability(np.zeros((3, 4)))
    with pytest.raises(DataError, match="at least 2 repetitions"):
        split_half_reliability(np.zeros((1, 4, 2)))
    with pytest.raises(DataError, match="inf"):
        split_half_reliability(np.full((2, 4, 2), np.inf))
    with pytest.raises(ConfigError, match="ceiling_splits"):
        split_half_reliability(np.zeros((2, 4, 2)), n_splits=0)
    with pytest.raises(DataError, match="keys"):
        split_half_reliability(np.zeros((2, 4, 2)), keys=np.zeros((1, 3, 4)))
