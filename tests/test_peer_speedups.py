"""The fast paths behind benchmarks/bench_peers.py, pinned against SciPy, scikit-learn and brute force.

* ranks from sorted integer keys (:func:`framework.numerics.rdm._sort_rows`): bit for bit
  ``scipy.stats.rankdata``, including values whose keys collide in their high bits;
* RDM comparisons prepared and multiplied block by block (:func:`compare`, :func:`prepare`);
* Kendall's tau-a from one sort per vector and SciPy's discordant-pair count, against the
  O(n^2) definition;
* the Gram matrix behind :func:`rdm` (:func:`framework.numerics.gram.gram`: cache-sized blocks,
  threads each with one BLAS thread);
* the kernel-path ridge from one training kernel re-centred per inner fold.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import pdist
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from framework.errors import DataError
from framework.numerics import gram as gram_module
from framework.numerics import rdm
from framework.numerics.ridge import RidgePath, fit_predict, inner_cv
from framework.numerics.splits import kfold_splits


def _hard_columns(rng: np.random.Generator, n: int) -> np.ndarray:
    """Columns that stress the integer keys: ties, +-0, infinities, negatives, near-equal values."""
    zeros = rng.integers(-1, 2, n).astype(float)
    zeros[zeros == 0] = np.where(rng.random(int((zeros == 0).sum())) < 0.5, 0.0, -0.0)   # +0.0 ties -0.0
    cols = [rng.random(n), np.round(rng.standard_normal(n), 1), rng.integers(0, 3, n).astype(float),
            1.0 + rng.integers(0, 4, n) * 2.0**-50,                       # distinct, same high key bits
            zeros, np.full(n, 7.0)]
    inf = rng.standard_normal(n)
    inf[:3] = [np.inf, -np.inf, np.inf]
    cols.append(inf)
    return np.column_stack(cols)


def _tau_a_brute(x: np.ndarray, y: np.ndarray) -> float:
    """Definition: sum over i < j of sign(x_i - x_j) sign(y_i - y_j), over n (n - 1) / 2."""
    n = x.size
    iu, ju = np.triu_indices(n, 1)
    sx = (x[iu] > x[ju]).astype(int) - (x[iu] < x[ju])                   # no inf - inf
    sy = (y[iu] > y[ju]).astype(int) - (y[iu] < y[ju])
    return float((sx * sy).sum() / (n * (n - 1) / 2))


# -- ranks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["C", "F"])
def test_average_ranks_bit_for_bit_on_hard_columns(order: str, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    v = np.array(_hard_columns(rng, 300), order=order)
    v = np.column_stack([v, rng.random(300)])
    v[17, -1] = np.nan                                                    # a NaN column is all NaN
    monkeypatch.setattr(rdm, "RANK_BLOCK_ELEMENTS", 300 * 3)              # several blocks
    got = rdm.average_ranks(v)
    np.testing.assert_array_equal(got, scipy.stats.rankdata(v, axis=0, method="average"))


def test_sort_rows_orders_and_groups_exactly() -> None:
    rng = np.random.default_rng(1)
    rows = np.ascontiguousarray(_hard_columns(rng, 200).T)
    order, first = rdm._sort_rows(rows)
    for r in range(rows.shape[0]):
        values = rows[r, order[r]]
        assert np.all(values[1:] >= values[:-1])
        np.testing.assert_array_equal(first[r][1:], values[1:] != values[:-1])
        assert first[r][0]
        np.testing.assert_array_equal(np.sort(order[r]), np.arange(200))


# -- linear comparisons --------------------------------------------------------------------
@pytest.mark.parametrize("comparison", rdm.LINEAR_COMPARISONS)
@pytest.mark.parametrize("layout", ["C", "F"])
def test_compare_blocks_match_scipy(comparison: str, layout: str, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    model = rng.random((45, 2))
    data = np.array(np.column_stack([rng.random((45, 9)), np.round(rng.random((45, 3)), 1),
                                     np.ones(45)]), order=layout)                 # ties and a constant RDM
    monkeypatch.setattr(rdm, "RANK_BLOCK_ELEMENTS", 45 * 4)
    got = rdm.compare(model, data, comparison)
    assert got.shape == (2, 13)
    np.testing.assert_array_equal(rdm.compare(data, model, comparison), got.T)
    for i in range(2):
        for j in range(13):
            if j == 12:
                if comparison == "rho-a":
                    assert got[i, j] == pytest.approx(0.0, abs=1e-12)
                else:
                    assert np.isnan(got[i, j])
                continue
            if comparison == "pearson":
                want = scipy.stats.pearsonr(model[:, i], data[:, j]).statistic
            elif comparison == "spearman":
                want = scipy.stats.spearmanr(model[:, i], data[:, j]).statistic
            else:
                n = 45
                ra = scipy.stats.rankdata(model[:, i]) - (n + 1) / 2
                rb = scipy.stats.rankdata(data[:, j]) - (n + 1) / 2
                want = 12 * (ra @ rb) / (n**3 - n)
            assert got[i, j] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("comparison", rdm.LINEAR_COMPARISONS)
def test_prepare_is_unit_columns_in_both_layouts(comparison: str, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    v = np.column_stack([rng.random((40, 5)), np.round(rng.random((40, 2)), 1)])
    monkeypatch.setattr(rdm, "RANK_BLOCK_ELEMENTS", 40 * 2)
    c, f = rdm.prepare(v, comparison), rdm.prepare(np.asfortranarray(v), comparison)
    np.testing.assert_allclose(c, f, rtol=0, atol=1e-15)
    base = scipy.stats.rankdata(v, axis=0) if comparison != "pearson" else v
    z = base - base.mean(axis=0)
    want = z * np.sqrt(12.0 / (40.0**3 - 40)) if comparison == "rho-a" else z / np.linalg.norm(z, axis=0)
    np.testing.assert_allclose(c, want, rtol=0, atol=1e-14)


# -- Kendall's tau-a ---------------------------------------------------------------------------
def test_kendall_matrix_and_paired_match_definition() -> None:
    rng = np.random.default_rng(4)
    a = _hard_columns(rng, 60)[:, [0, 1, 2, 4, 6]]
    b = np.column_stack([rng.random(60), np.round(rng.random(60), 1), rng.integers(0, 2, 60).astype(float),
                         -rng.random(60), a[:, 1]])
    got = rdm.compare(a, b, "kendall-tau-a")
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            assert got[i, j] == pytest.approx(_tau_a_brute(a[:, i], b[:, j]), abs=1e-14)
    paired = rdm.paired_compare(a, b, "kendall-tau-a")
    np.testing.assert_allclose(paired, np.diag(got), rtol=0, atol=1e-15)
    np.testing.assert_allclose(rdm.compare(b, a, "kendall-tau-a"), got.T, rtol=0, atol=1e-15)


def test_kendall_edge_cases() -> None:
    x = np.arange(6.0)
    assert rdm.kendall_tau_a(x, np.ones(6)) == 0.0                       # constant: defined as 0
    assert rdm.kendall_tau_a(x, x[::-1]) == -1.0
    assert rdm.kendall_tau_a(np.array([1.0, 2.0]), np.array([2.0, 1.0])) == -1.0
    assert rdm.kendall_tau_a(np.array([0.0, -0.0, 1.0]), np.array([5.0, 6.0, 7.0])) == pytest.approx(2 / 3)
    with_nan = np.array([1.0, np.nan, 3.0, 2.0])
    assert np.isnan(rdm.kendall_tau_a(with_nan, np.arange(4.0)))
    assert np.isnan(rdm.compare(with_nan[:, None], np.arange(8.0).reshape(4, 2), "kendall-tau-a")).all()


# -- RDMs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", rdm.DISTANCES)
def test_rdm_threaded_gram_matches_pdist(distance: str, monkeypatch) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((12, 3000)) + 2.0).astype(np.float32)
    monkeypatch.setattr(gram_module, "THREADED_WORK", 0)                     # take the threaded path
    want = pdist(x.astype(np.float64), distance)
    for threads in (1, 2):
        with threadpool_limits(threads):
            got = rdm.rdm(x, distance, block_bytes=8 * 12 * 100)           # 30 blocks shared by the threads
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_rdm_names_first_nan_with_threads(tmp_path, monkeypatch) -> None:
    x = np.lib.format.open_memmap(tmp_path / "layer.npy", mode="w+", dtype=np.float32, shape=(5, 400))
    x[:] = 1.0
    x[3, 250] = np.nan
    x[1, 390] = np.inf
    monkeypatch.setattr(gram_module, "THREADED_WORK", 0)
    with threadpool_limits(2), pytest.raises(DataError, match="stimulus 3, feature 250"):
        rdm.rdm(x, "correlation", block_bytes=8 * 5 * 16)


# -- ridge, kernel path ------------------------------------------------------------------------
def _ridge_data(n: int, p: int, seed: int, rank: int | None = None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) + rng.standard_normal(p)
    if rank is not None:                                                  # rank-deficient design
        x = (x[:, :rank] @ rng.standard_normal((rank, p))) + rng.standard_normal(p)
    y = x @ (rng.standard_normal((p, 4)) * 0.1) + rng.standard_normal((n, 4)) + 1.0
    return x, y, rng.standard_normal((7, p))


@pytest.mark.parametrize("rank", [None, 10])
def test_kernel_inner_cv_matches_brute_force(rank) -> None:
    with threadpool_limits(1):
        x, y, x_test = _ridge_data(40, 150, seed=6, rank=rank)
        alphas = np.logspace(-2, 4, 7)
        splits, _ = kfold_splits(40, n_splits=4, seed=3)
        mse, idx, heldout = inner_cv(x, y, alphas, splits, method="kernel")
        sse = np.zeros((alphas.size, 4))
        for k, alpha in enumerate(alphas):
            for train, test in splits:
                sse[k] += ((Ridge(alpha=alpha).fit(x[train], y[train]).predict(x[test]) - y[test]) ** 2).sum(axis=0)
        np.testing.assert_allclose(mse, sse / 40, rtol=1e-7)
        np.testing.assert_array_equal(idx, np.argmin(sse, axis=0))
        brute = np.empty_like(heldout)
        for train, test in splits:
            brute[test] = Ridge(alpha=alphas[idx]).fit(x[train], y[train]).predict(x[test])
        np.testing.assert_allclose(heldout, brute, rtol=1e-6, atol=1e-9)
        for selection in ("gcv", "inner-cv"):
            res = fit_predict(x, y, x_test, alphas=alphas, selection=selection, inner_splits=4, seed=3)
            want = Ridge(alpha=res.alpha).fit(x, y).predict(x_test)
            np.testing.assert_allclose(res.test_predictions, want, rtol=1e-6, atol=1e-9)
            if selection == "inner-cv":
                np.testing.assert_array_equal(res.alpha_index, idx)


def test_kernel_path_transform_and_coef_are_lazy_but_exact() -> None:
    with threadpool_limits(1):
        x, y, x_test = _ridge_data(30, 90, seed=7)
        path = RidgePath(x, y, method="kernel")
        assert path._vs is None                                           # V S not formed for predictions
        ref = Ridge(alpha=3.0).fit(x, y)
        np.testing.assert_allclose(path.predict(x_test, 3.0), ref.predict(x_test), rtol=1e-8, atol=1e-10)
        coef, intercept = path.coef(3.0)
        np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-8, atol=1e-10)


def test_from_gram_rank_tolerance_follows_n_features() -> None:
    x, y, _ = _ridge_data(30, 90, seed=8, rank=5)
    xc = x - x.mean(axis=0)
    feature = RidgePath(x, y, method="kernel")
    gram = RidgePath.from_gram(xc @ xc.T, y, n_features=90)
    assert gram.rank == feature.rank
    np.testing.assert_array_equal(gram.s2, feature.s2)


def test_gram_and_fold_grams_have_the_same_bits_for_any_number_of_threads():
    """Sums run in SUM_LANES fixed lanes: 1, 2 or 3 threads (a laptop, a Dask worker with OMP_NUM_THREADS=1)
    and any BLAS thread limit give identical bits, so every executor gives the same numbers."""
    from threadpoolctl import threadpool_limits

    from framework.numerics.gram import SUM_LANES, THREADED_WORK, fold_grams, gram

    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 30_000)).astype(np.float32)
    assert THREADED_WORK <= 100 * 100 * 30_000 / 2 and SUM_LANES > 1
    ref, ref_sums = gram(x, center=True, block=1000, workers=1)
    for workers in (2, 3):
        g, sums = gram(x, center=True, block=1000, workers=workers)
        assert np.array_equal(g, ref) and np.array_equal(sums, ref_sums)
    with threadpool_limits(1):
        g, _ = gram(x, center=True, block=1000)
    assert np.array_equal(g, ref)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(ref, xc @ xc.T, rtol=1e-9, atol=1e-7)
    splits = [(np.arange(20, 100), np.arange(20)), (np.arange(0, 80), np.arange(80, 100))]
    ref_f = fold_grams(x[:, :6000], splits, block=256, workers=1)
    for workers in (2, 3):
        assert np.array_equal(fold_grams(x[:, :6000], splits, block=256, workers=workers), ref_f)
