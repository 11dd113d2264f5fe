"""Noise ceilings against direct formulas: split-half reliability with Spearman-Brown, and RDM
lower/upper ceilings (Nili et al. 2014; Algonauts 2019), including the published Algonauts 2019
ceilings of the 92- and 78-image fMRI sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist

from framework.errors import ConfigError, DataError
from framework.numerics import ceiling
from framework.numerics.ceiling import (
    masked_pearson,
    noise_ceilings,
    rdm_noise_ceiling,
    spearman_brown,
    split_half_reliability,
)

ALGONAUTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "algonauts2019"


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


# -- RDM noise ceilings --------------------------------------------------------------------------
def _subject_rdms(n_subjects=6, n_stim=12, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n_stim, 5))
    return np.stack([pdist(shared + rng.standard_normal((n_stim, 5)), "correlation") for _ in range(n_subjects)])


def _compare(x, y, comparison):
    if comparison == "spearman":
        return stats.spearmanr(x, y).statistic
    if comparison == "pearson":
        return stats.pearsonr(x, y).statistic
    # Kendall tau-a by brute force over all pairs of entries (the pooled RDM has ties, so not SciPy's tau-b)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    n = x.size
    return np.triu(sx * sy, 1).sum() / (n * (n - 1) / 2)


def _pool_nili(v, comparison):
    """rsatoolbox's pool_rdm: mean of ranks (spearman, kendall tau-a), of z-scores (pearson)."""
    if comparison == "pearson":
        return np.mean([(x - x.mean()) / x.std() for x in v], axis=0)
    return np.mean([stats.rankdata(x) for x in v], axis=0)


@pytest.mark.parametrize("comparison", ["spearman", "pearson", "kendall-tau-a"])
def test_nili_ceilings_match_brute_force(comparison):
    v = _subject_rdms()
    before = v.copy()
    c = rdm_noise_ceiling(v, comparison, "nili")
    n = v.shape[0]
    up = [_compare(v[s], _pool_nili(v, comparison), comparison) for s in range(n)]
    lo = [_compare(v[s], _pool_nili(np.delete(v, s, axis=0), comparison), comparison) for s in range(n)]
    np.testing.assert_allclose(c.upper_per_subject, up, atol=1e-12)
    np.testing.assert_allclose(c.lower_per_subject, lo, atol=1e-12)
    assert c.upper == pytest.approx(np.mean(up), abs=1e-12) and c.lower == pytest.approx(np.mean(lo), abs=1e-12)
    assert c.lower < c.upper and c.note == "" and c.convention == "nili"
    assert noise_ceilings(v, comparison) == (c.lower, c.upper)
    np.testing.assert_array_equal(v, before)


def test_algonauts2019_ceilings_match_brute_force():
    v = _subject_rdms(seed=1)
    c = rdm_noise_ceiling(v, "spearman", "algonauts2019")
    n = v.shape[0]
    r_up = [stats.spearmanr(v[s], v.mean(axis=0)).statistic for s in range(n)]
    r_lo = [stats.spearmanr(v[s], np.delete(v, s, axis=0).mean(axis=0)).statistic for s in range(n)]
    np.testing.assert_allclose(c.r_upper, r_up, atol=1e-12)
    np.testing.assert_allclose(c.upper_per_subject, np.square(r_up), atol=1e-12)
    assert c.upper == pytest.approx(np.mean(np.square(r_up)), abs=1e-12)
    assert c.lower == pytest.approx(np.mean(np.square(r_lo)), abs=1e-12)
    with pytest.raises(ConfigError, match="squares Spearman"):
        rdm_noise_ceiling(v, "pearson", "algonauts2019")
    with pytest.raises(ConfigError, match="ceiling convention"):
        rdm_noise_ceiling(v, "spearman", "nilli")


@pytest.mark.parametrize("convention", ["nili", "algonauts2019"])
def test_one_subject_has_no_ceiling(convention):
    c = rdm_noise_ceiling(_subject_rdms(n_subjects=1), "spearman", convention)
    assert np.isnan(c.upper) and np.isnan(c.lower) and np.isnan(c.upper_per_subject).all()
    assert "at least two subjects" in c.note and c.n_subjects == 1
    lower, upper = noise_ceilings(_subject_rdms(n_subjects=1))
    assert np.isnan(lower) and np.isnan(upper)          # not 1.0: a subject compared with itself


#: Published noise ceilings (squared Spearman) of the Algonauts 2019 fMRI sets: ``nc92_EVC_R2`` ...
#: in ``testSub_fmri.py`` of the challenge's evaluation scripts (copied e.g. in
#: github.com/dnn-hvs/Algonauts-Challange, Evaluation_Scripts/testSub_fmri.py).
OFFICIAL = {("92images", "Net_RDM", "EVC"): 0.1589, ("92images", "Net_RDM", "IT"): 0.3075,
            ("78images", "arr_0", "EVC"): 0.0640, ("78images", "arr_0", "IT"): 0.0647}


@pytest.mark.parametrize(("folder", "key", "area"), list(OFFICIAL))
def test_official_algonauts2019_ceilings_are_reproduced(folder, key, area):
    path = ALGONAUTS / folder / f"fmri_{area}_RDMs.npz"
    if not path.is_file():
        pytest.skip(f"Algonauts 2019 RDMs not found at {path}")
    rdms = np.load(path)[key].astype(np.float64)
    iu, ju = np.triu_indices(rdms.shape[1], 1)
    c = rdm_noise_ceiling(rdms[:, iu, ju], "spearman", "algonauts2019")
    assert c.n_subjects == 15
    assert round(c.upper, 4) == OFFICIAL[(folder, key, area)]
