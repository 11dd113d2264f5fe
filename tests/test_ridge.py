"""Ridge with one decomposition per fold, pinned against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV
from threadpoolctl import threadpool_limits

from framework.errors import ConfigError, DataError
from framework.numerics.ridge import DEFAULT_ALPHAS, RidgePath, check_alphas, fit_predict, inner_cv
from framework.numerics.splits import kfold_splits


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # the test machine is shared; multithreaded BLAS on tiny matrices only spins
    with threadpool_limits(1):
        yield


def _data(n, p, n_sites=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 2.0, p) + rng.standard_normal(p)
    w = rng.standard_normal((p, n_sites)) * rng.uniform(0.0, 0.3, n_sites)
    y = x @ w + rng.standard_normal((n, n_sites)) * rng.uniform(0.5, 3.0, n_sites) + 2.0
    x_test = rng.standard_normal((9, p)) + 0.5
    return x, y, x_test


SHAPES = [pytest.param(60, 15, "svd", id="primal-svd"), pytest.param(40, 120, "kernel", id="kernel"),
          pytest.param(60, 15, "kernel", id="kernel-narrow"), pytest.param(40, 120, "svd", id="svd-wide")]


@pytest.mark.parametrize(("n", "p", "method"), SHAPES)
def test_predictions_match_sklearn_ridge_at_chosen_alpha(n, p, method):
    x, y, x_test = _data(n, p)
    path = RidgePath(x, y, method=method)
    assert path.method == method
    alpha = DEFAULT_ALPHAS[np.argmin(path.loo_mse(DEFAULT_ALPHAS), axis=0)]
    ref = Ridge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(path.predict(x_test, alpha), ref.predict(x_test), rtol=1e-6, atol=1e-9)
    coef, intercept = path.coef(alpha)
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("n", "p", "method"), SHAPES)
@pytest.mark.parametrize("gcv_mode", ["svd", "eigen"])
def test_gcv_choice_and_errors_match_ridgecv(n, p, method, gcv_mode):
    x, y, _ = _data(n, p, n_sites=8, seed=1)
    path = RidgePath(x, y, method=method)
    mse = path.loo_mse(DEFAULT_ALPHAS)
    ref = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True, store_cv_results=True, gcv_mode=gcv_mode).fit(x, y)
    # cv_results_: (n_samples, n_targets, n_alphas) squared LOO errors
    np.testing.assert_allclose(mse, ref.cv_results_.mean(axis=0).T, rtol=1e-7)
    np.testing.assert_array_equal(DEFAULT_ALPHAS[np.argmin(mse, axis=0)], ref.alpha_)
    # the grid must matter for this test to mean anything
    assert np.unique(ref.alpha_).size > 1


@pytest.mark.parametrize(("n", "p", "method"), SHAPES[:2])
def test_loo_predictions_match_refits(n, p, method):
    x, y, _ = _data(n, p, n_sites=3, seed=2)
    alpha = np.array([0.1, 10.0, 1000.0])
    loo = RidgePath(x, y, method=method).loo_predictions(alpha)
    brute = np.empty_like(loo)
    for i in range(n):
        keep = np.arange(n) != i
        brute[i] = Ridge(alpha=alpha).fit(x[keep], y[keep]).predict(x[i:i + 1])[0]
    np.testing.assert_allclose(loo, brute, rtol=1e-6, atol=1e-9)


def test_gram_path_equals_feature_path():
    x, y, x_test = _data(40, 120, seed=3)
    mean = x.mean(axis=0)
    xc = x - mean
    for selection in ("gcv", "inner-cv"):
        a = fit_predict(x, y, x_test, selection=selection, seed=4)
        b = fit_predict(xc @ xc.T, y, (x_test - mean) @ xc.T, selection=selection, seed=4, precomputed=True)
        np.testing.assert_array_equal(a.alpha_index, b.alpha_index)
        np.testing.assert_allclose(b.test_predictions, a.test_predictions, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b.train_predictions, a.train_predictions, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("n", "p"), [(50, 12), (36, 90)])
def test_inner_cv_matches_brute_force_loop(n, p):
    x, y, x_test = _data(n, p, n_sites=5, seed=5)
    alphas = np.logspace(-2, 4, 7)
    splits, _ = kfold_splits(n, n_splits=4, seed=7)
    mse, idx, heldout = inner_cv(x, y, alphas, splits)
    sse = np.zeros((alphas.size, y.shape[1]))
    for k, alpha in enumerate(alphas):
        for train, test in splits:
            pred = Ridge(alpha=alpha).fit(x[train], y[train]).predict(x[test])
            sse[k] += ((pred - y[test]) ** 2).sum(axis=0)
    np.testing.assert_allclose(mse, sse / n, rtol=1e-7)
    best = np.argmin(sse, axis=0)
    np.testing.assert_array_equal(idx, best)
    assert np.unique(best).size > 1
    brute = np.empty_like(heldout)
    for train, test in splits:
        brute[test] = Ridge(alpha=alphas[best]).fit(x[train], y[train]).predict(x[test])
    np.testing.assert_allclose(heldout, brute, rtol=1e-6, atol=1e-9)
    # fit_predict uses the same seeded folds and refits on everything for the test set
    res = fit_predict(x, y, x_test, alphas=alphas, selection="inner-cv", inner_splits=4, seed=7)
    np.testing.assert_array_equal(res.alpha_index, best)
    np.testing.assert_allclose(res.test_predictions, Ridge(alpha=alphas[best]).fit(x, y).predict(x_test),
                               rtol=1e-6, atol=1e-9)


def test_constant_features_and_float32_input():
    x, y, x_test = _data(30, 8, seed=6)
    x[:, 3] = 5.0
    res = fit_predict(x.astype(np.float32), y.astype(np.float32), x_test)
    ref = Ridge(alpha=res.alpha).fit(x.astype(np.float32).astype(np.float64), y.astype(np.float32))
    np.testing.assert_allclose(res.test_predictions, ref.predict(x_test), rtol=1e-6, atol=1e-8)
    assert res.test_predictions.dtype == np.float64


def test_inputs_not_modified():
    x, y, x_test = _data(30, 50, seed=8)
    copies = [a.copy() for a in (x, y, x_test)]
    fit_predict(x, y, x_test, selection="inner-cv")
    for a, c in zip((x, y, x_test), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [0.0], [np.inf], "abc"])
def test_bad_alphas(bad):
    with pytest.raises(ConfigError, match="alphas"):
        check_alphas(bad)


def test_bad_shapes_and_options():
    with pytest.raises(DataError, match="same n_train"):
        RidgePath(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ConfigError, match="method"):
        RidgePath(np.zeros((5, 2)), np.zeros((5, 1)), method="qr")
    with pytest.raises(ConfigError, match="alpha_selection"):
        fit_predict(np.eye(5), np.ones((5, 1)), np.eye(5), selection="loo")
    with pytest.raises(DataError, match="Gram matrix"):
        RidgePath.from_gram(np.eye(5), np.ones((5, 1))).coef(1.0)
