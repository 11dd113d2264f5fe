"""RDMs and RDM comparisons against SciPy and brute-force loops."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import pdist, squareform

from framework.errors import ConfigError, DataError
from framework.numerics import rdm


@pytest.fixture
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(14, 300)) + 3.0).astype(np.float32)


@pytest.mark.parametrize("distance", rdm.DISTANCES)
def test_rdm_matches_pdist(features: np.ndarray, distance: str) -> None:
    want = pdist(features.astype(np.float64), distance)
    got = rdm.rdm(features, distance)
    assert got.dtype == np.float64 and got.shape == (14 * 13 // 2,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("distance", rdm.DISTANCES)
def test_rdm_blocks_and_order(features: np.ndarray, distance: str) -> None:
    """Tiny feature blocks (many Gram updates) and a row order give the reordered pdist."""
    order = np.random.default_rng(1).permutation(14)[:10]
    got = rdm.rdm(features, distance, order=order, block_bytes=8 * 14 * 7)
    np.testing.assert_allclose(got, pdist(features[order].astype(np.float64), distance), rtol=1e-10, atol=1e-10)


def test_site_rdms_and_upper() -> None:
    r = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    got = rdm.site_rdms(r)
    for s in range(4):
        np.testing.assert_allclose(got[:, s], pdist(r[:, s:s + 1].astype(np.float64)), rtol=1e-12)
        np.testing.assert_allclose(rdm.site_rdms(r, squared=True)[:, s],
                                   pdist(r[:, s:s + 1].astype(np.float64), "sqeuclidean"), rtol=1e-12)
    stack = np.stack([squareform(got[:, s]) for s in range(4)])
    np.testing.assert_array_equal(rdm.upper(stack), got.T)


def _with_ties(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(0, 6, size=(n, k)).astype(np.float64)  # many ties


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_pearson_match_scipy(ties: bool) -> None:
    rng = np.random.default_rng(3)
    a = _with_ties(rng, 45, 3) if ties else rng.normal(size=(45, 3))
    b = _with_ties(rng, 45, 2) if ties else rng.normal(size=(45, 2))
    sp = rdm.compare(a, b, "spearman")
    pe = rdm.compare(a, b, "pearson")
    for i in range(3):
        for j in range(2):
            assert sp[i, j] == pytest.approx(scipy.stats.spearmanr(a[:, i], b[:, j]).statistic, abs=1e-12)
            assert pe[i, j] == pytest.approx(scipy.stats.pearsonr(a[:, i], b[:, j]).statistic, abs=1e-12)


def _brute_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / (n * (n - 1) / 2)


def _brute_avg_ranks(x: np.ndarray) -> np.ndarray:
    n = len(x)
    out = np.empty(n)
    for i in range(n):
        less = sum(1 for j in range(n) if x[j] < x[i])
        equal = sum(1 for j in range(n) if x[j] == x[i])
        out[i] = less + (equal + 1) / 2
    return out


def _brute_rho_a(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    rx, ry = _brute_avg_ranks(x), _brute_avg_ranks(y)
    mx, my = rx.mean(), ry.mean()
    return 12 * sum((rx[i] - mx) * (ry[i] - my) for i in range(n)) / (n ** 3 - n)


@pytest.mark.parametrize("ties", [False, True])
def test_tau_a_and_rho_a_match_brute_force(ties: bool) -> None:
    rng = np.random.default_rng(4)
    a = _with_ties(rng, 28, 2) if ties else rng.normal(size=(28, 2))
    b = _with_ties(rng, 28, 2) if ties else rng.normal(size=(28, 2))
    tau = rdm.compare(a, b, "kendall-tau-a")
    rho = rdm.compare(a, b, "rho-a")
    for i in range(2):
        for j in range(2):
            assert tau[i, j] == pytest.approx(_brute_tau_a(a[:, i], b[:, j]), abs=1e-12)
            assert rho[i, j] == pytest.approx(_brute_rho_a(a[:, i], b[:, j]), abs=1e-12)
            if not ties:  # the textbook formula 1 - 6 sum d^2 / (n^3 - n)
                d = _brute_avg_ranks(a[:, i]) - _brute_avg_ranks(b[:, j])
                assert rho[i, j] == pytest.approx(1 - 6 * (d ** 2).sum() / (28 ** 3 - 28), abs=1e-12)
    if ties:  # tau-a differs from SciPy's tau-b under ties, and rho-a from Spearman
        assert abs(tau[0, 0] - scipy.stats.kendalltau(a[:, 0], b[:, 0]).statistic) > 1e-3
        assert abs(rho[0, 0] - scipy.stats.spearmanr(a[:, 0], b[:, 0]).statistic) > 1e-4


def test_constant_rdm_gives_nan_and_tau_a_zero() -> None:
    a = np.ones((10, 1))
    b = np.arange(10.0)[:, None]
    assert np.isnan(rdm.compare(a, b, "spearman")[0, 0])
    assert np.isnan(rdm.compare(a, b, "pearson")[0, 0])
    assert rdm.compare(a, b, "kendall-tau-a")[0, 0] == 0.0


def test_bad_input_is_reported() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'euclidean'"):
        rdm.rdm(np.zeros((4, 2)), "euclidian")
    with pytest.raises(ConfigError, match="comparison"):
        rdm.compare(np.zeros((3, 1)), np.zeros((3, 1)), "kendall")
    with pytest.raises(DataError, match="2-D"):
        rdm.rdm(np.zeros((4, 2, 2)))
    with pytest.raises(DataError, match="NaN"):
        rdm.rdm(np.full((4, 2), np.nan))
    with pytest.raises(DataError, match="same stimuli"):
        rdm.compare(np.zeros((3, 1)), np.zeros((6, 1)))
    with pytest.raises(ConfigError, match="n_permutations"):
        rdm.check_comparison_for_permutations("kendall-tau-a", 10, "rsa")


@pytest.mark.parametrize("ties", [False, True])
def test_average_ranks_equal_scipy_bit_for_bit(ties: bool, monkeypatch) -> None:
    import scipy.stats

    from framework.numerics import rdm as rdm_module

    rng = np.random.default_rng(3)
    v = rng.standard_normal((57, 23))
    if ties:
        v = np.round(v, 1)
        v[:, 4] = 1.0                    # a constant column: one tie group
    v[5, 7] = np.nan                     # a column with NaN is all NaN, as SciPy propagates it
    monkeypatch.setattr(rdm_module, "RANK_BLOCK_ELEMENTS", 57 * 5)   # several column blocks
    got = rdm_module.average_ranks(v)
    want = scipy.stats.rankdata(v, axis=0, method="average")
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[:, 7]).all() and not np.isnan(np.delete(got, 7, axis=1)).any()
