"""Ridge over a penalty grid: one decomposition per fold vs refitting scikit-learn per penalty.

Brain-Score-like scale: 640 stimuli x 4096 features x 200 sites, 19 penalties,
10 folds. Compared, per fold:

* ours: ``framework.numerics.ridge.fit_predict`` (kernel path: one eigendecomposition
  of the 576 x 576 training kernel serves all 19 penalties and the exact LOO choice
  of a penalty per site), then test predictions;
* baseline A: ``sklearn.linear_model.Ridge`` refitted for each of the 19 penalties
  (all sites at once), the usual loop;
* baseline B: ``sklearn.linear_model.RidgeCV(alpha_per_target=True)`` (efficient
  LOO as well), to show that the gain over A is the decomposition reuse.

BLAS is limited to one thread for every contender (the machine is shared).
Run: ``python benchmarks/bench_ridge.py [--folds 10]``.

``--wide N`` instead times the kernels of a wide layer (100 stimuli x N float32
features, memory-mapped, 10 folds, z-scored per training fold):
``framework.numerics.gram.fold_grams`` (feature blocks outer, one read, one syrk per
fold and block) against the per-fold loop it replaced (baseline: every fold
re-reads and re-standardises every block, ``standardized`` + two products), and
reports the largest relative difference of the kernels.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV
from threadpoolctl import threadpool_limits

from framework.numerics.ridge import DEFAULT_ALPHAS, fit_predict
from framework.numerics.splits import kfold_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stimuli", type=int, default=640)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--baseline-folds", type=int, default=None,
                        help="folds timed for the Ridge loop (extrapolated to --folds); default all")
    parser.add_argument("--wide", type=int, default=0, help="time wide-layer fold kernels with this many features")
    parser.add_argument("--workers", type=int, default=1, help="threads of fold_grams in --wide mode")
    args = parser.parse_args()
    if args.wide:
        bench_wide(args.wide, args.folds, args.workers)
        return

    rng = np.random.default_rng(0)
    n, p, j = args.stimuli, args.features, args.sites
    x = rng.standard_normal((n, p)).astype(np.float32)
    w = rng.standard_normal((p, j)).astype(np.float32) * rng.uniform(0, 0.05, j).astype(np.float32)
    y = (x @ w + rng.standard_normal((n, j)).astype(np.float32)).astype(np.float32)
    alphas = DEFAULT_ALPHAS
    splits, _ = kfold_splits(n, n_splits=args.folds, seed=0)
    print(f"data: {n} stimuli x {p} features x {j} sites, {alphas.size} penalties, {args.folds} folds; "
          "1 BLAS thread; shared 2-core machine, times are indicative")

    with threadpool_limits(1):
        t0 = time.perf_counter()
        ours = []
        for train, test in splits:
            xtr = x[train].astype(np.float64)
            mean = xtr.mean(axis=0)
            xc = xtr - mean
            res = fit_predict(xc @ xc.T, y[train], (x[test] - mean) @ xc.T, alphas=alphas, precomputed=True)
            ours.append(res)
        t_ours = time.perf_counter() - t0

        t0 = time.perf_counter()
        gcv = [RidgeCV(alphas=alphas, alpha_per_target=True).fit(x[tr].astype(np.float64), y[tr])
               for tr, _ in splits]
        t_cv = time.perf_counter() - t0

        from framework.types import Activations, Responses, SiteTable
        from plugins.metrics.linear_predictivity import LinearPredictivityMetric

        ids = tuple(f"s{i}" for i in range(n))
        sites = SiteTable(tuple(f"e{i}" for i in range(j)), ("p",) * j, ("17",) * j)
        t0 = time.perf_counter()
        LinearPredictivityMetric(n_splits=args.folds).score(Activations({"layer": x}, ids), Responses(y, sites, ids))
        t_metric = time.perf_counter() - t0

        n_base = args.baseline_folds or args.folds
        t0 = time.perf_counter()
        loop_pred = []
        for train, test in splits[:n_base]:
            preds = np.stack([Ridge(alpha=a).fit(x[train].astype(np.float64), y[train]).predict(x[test])
                              for a in alphas])  # (n_alphas, n_test, n_sites)
            loop_pred.append(preds)
        t_loop = (time.perf_counter() - t0) * args.folds / n_base

    same_alpha = np.mean([np.array_equal(r.alpha, g.alpha_) for r, g in zip(ours, gcv)])
    err = max(np.abs(r.test_predictions - lp[r.alpha_index, np.arange(test.size)[:, None], np.arange(j)]).max()
              / np.abs(lp).max() for r, lp, (_, test) in zip(ours, loop_pred, splits))
    print(f"ours (1 eigendecomposition per fold, all penalties, LOO choice): {t_ours:8.2f} s")
    print(f"whole linear-predictivity metric, 1 layer (z-scoring, LOO, r):   {t_metric:8.2f} s")
    print(f"sklearn RidgeCV(alpha_per_target=True) per fold:                 {t_cv:8.2f} s  "
          f"(ratio {t_cv / t_ours:5.1f}x)")
    print(f"sklearn Ridge refit per penalty per fold ({alphas.size * args.folds} fits"
          f"{'' if n_base == args.folds else f', {n_base} folds timed'}): {t_loop:8.2f} s  "
          f"(ratio {t_loop / t_ours:5.1f}x)")
    print(f"penalty choices identical to RidgeCV in {same_alpha:.0%} of folds; "
          f"max relative prediction difference vs Ridge at the chosen penalty: {err:.1e}")


def bench_wide(p: int, folds: int, workers: int) -> None:
    import tempfile
    from pathlib import Path

    from framework.numerics.gram import fold_grams, standardized

    n, block = 100, 4096
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        x = np.lib.format.open_memmap(Path(tmp) / "layer.npy", mode="w+", dtype=np.float32, shape=(n, p))
        for start in range(0, p, 8192):  # ReLU-like: half zeros, some dead units
            chunk = np.maximum(rng.standard_normal((n, min(8192, p - start))), 0.0)
            chunk[:, ::10] = 0.0
            x[:, start:start + chunk.shape[1]] = chunk
        x.flush()
        splits, _ = kfold_splits(n, n_splits=folds, seed=0)
        print(f"wide layer: {n} stimuli x {p} float32 features (memmap), {folds} folds; BLAS 1 thread, "
              f"fold_grams workers={workers}; shared 2-core machine, times are indicative")
        with threadpool_limits(1):
            t0 = time.perf_counter()
            grams = fold_grams(x, splits, workers=workers)
            t_new = time.perf_counter() - t0
            t0 = time.perf_counter()
            err = 0.0
            for f, (train, test) in enumerate(splits):  # baseline: the former per-fold loop
                k_train = np.zeros((train.size, train.size))
                k_test = np.zeros((test.size, train.size))
                for start in range(0, p, block):
                    xb = standardized(x[:, start:start + block], train, standardize=True)
                    xt = xb[train]
                    k_train += xt @ xt.T
                    k_test += xb[test] @ xt.T
                scale = np.abs(k_train).max()
                err = max(err, np.abs(grams[f][np.ix_(train, train)] - k_train).max() / scale,
                          np.abs(grams[f][np.ix_(test, train)] - k_test).max() / scale)
            t_old = time.perf_counter() - t0
    gfma = folds * n * n * p / 2 / 1e9
    print(f"fold_grams (blocks outer, folds inner):      {t_new:8.2f} s  ({gfma / t_new:5.1f} G multiply-adds/s)")
    print(f"baseline per-fold loop (re-read, re-z-score): {t_old:8.2f} s  (ratio {t_old / t_new:5.1f}x)")
    print(f"max |difference| of the kernels / max |kernel|: {err:.1e}")


if __name__ == "__main__":
    main()
