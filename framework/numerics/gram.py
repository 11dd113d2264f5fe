"""Gram matrices ``X X^T`` of stimuli, accumulated in float64 over blocks of features.

One builder, :func:`gram`, reads a layer (any float dtype, e.g. a float32 memory
map) in blocks of feature columns, converts each block to float64 once,
optionally centres each feature over stimuli, and accumulates ``X X^T`` and the
row sums ``X 1``; it serves the RDMs (:mod:`framework.numerics.rdm`) and the
linear CKA kernel (:func:`centered_gram`). The cross-validated ridge path of wide
layers needs one Gram matrix per outer fold, each z-scored with that fold's
training statistics: :func:`fold_grams` accumulates all of them in one pass
over the layer, and :func:`recentered_gram` re-centres a Gram matrix on an
inner training subset.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import scipy.linalg

from framework.errors import DataError

__all__ = ["CACHE_BLOCK_BYTES", "CENTERED_BLOCK", "DEFAULT_BLOCK_BYTES", "FOLD_BLOCK_BYTES", "THREADED_WORK",
           "centered_gram", "fold_grams", "gram", "recentered_gram", "standardized"]

#: Upper bound on the bytes of one float64 feature block of :func:`gram` (unless ``block`` is given).
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: Preferred bytes of one float64 feature block of :func:`gram`: small enough to stay in cache while it
#: is converted, checked, centred and multiplied (a block still holds at least ``n_stimuli`` columns).
CACHE_BLOCK_BYTES = 2 * 2**20
#: Gram matrices of at least this many multiply-adds (``n_stimuli^2 n_features / 2``) are accumulated by
#: Python threads, each with single-threaded BLAS; smaller ones run in the calling thread.
THREADED_WORK = 2**27
#: Partial sums ("lanes") of a blocked Gram matrix: block ``k`` is added to lane ``k % SUM_LANES`` and the
#: lanes are added in order at the end, whatever the number of threads (each thread takes whole lanes).
#: So a result has the same bits on 1 core or 64, in this process or on a Dask worker, at the cost of
#: ``SUM_LANES`` accumulators of ``n_stimuli^2`` (``x n_folds`` for :func:`fold_grams`).
SUM_LANES = 4
#: Feature columns per block of :func:`centered_gram` (the linear CKA kernel).
CENTERED_BLOCK = 4096
#: Bytes of one float64 work array of a feature block in :func:`fold_grams`; a block holds
#: ``clip(FOLD_BLOCK_BYTES // (8 * n_stimuli), 256, 4096)`` feature columns.
FOLD_BLOCK_BYTES = 1 << 20
#: A column's one-pass training variance is trusted when it keeps at least this fraction of the
#: training second moment about the full-set mean (else it is recomputed in two passes).
_VAR_TRUST = 1e-2


def gram(features: np.ndarray, *, center: bool = False, block: int | None = None,
         block_bytes: int = DEFAULT_BLOCK_BYTES, check_finite: bool = True,
         workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix and row sums of ``features``, accumulated in float64 blocks of features.

    Each block of feature columns is converted once into a reused float64 buffer, checked for
    NaN/inf through its sums, optionally centred per feature, and added to the upper triangle of
    the Gram matrix by a symmetric rank-k update (BLAS ``dsyrk``, in place). By default a block
    holds ``max(CACHE_BLOCK_BYTES, 8 n^2)`` bytes (at most ``block_bytes``): it stays in cache
    while it is converted, checked, centred and multiplied (about 1.5x faster on wide layers than
    64 MiB blocks), and the ``n x n`` matrix updated per block is no larger than the block.

    Gram matrices of at least :data:`THREADED_WORK` multiply-adds are shared round-robin, block
    by block, by ``workers`` Python threads each calling single-threaded BLAS: a multithreaded
    BLAS update of a small ``n x n`` matrix spends its time synchronising, and on a busy machine
    its spinning threads made a 100 x 800,000 RDM about 4x slower than single-threaded ``pdist``.

    Parameters
    ----------
    features : ndarray, (n_stimuli, n_features)
        Any float dtype; may be a memory map (read block by block). Not modified.
    center : bool
        Subtract each feature's mean over stimuli first (distances between rows
        are unchanged; improves the conditioning of Euclidean distances).
    block : int, optional
        Feature columns per block (overrides the default above).
    block_bytes : int
        Upper bound on the bytes of one float64 block when ``block`` is not given.
    check_finite : bool
        Raise :class:`DataError` on NaN/inf features (naming the first one); else they propagate.
    workers : int, optional
        Threads for large matrices; default the current BLAS thread limit (so
        ``threadpoolctl.threadpool_limits(1)`` makes it serial).

    Returns
    -------
    gram : ndarray, (n_stimuli, n_stimuli) float64
        ``X X^T`` (of the centred features when ``center``); exactly symmetric.
    row_sums : ndarray, (n_stimuli,) float64
        ``X 1`` (of the centred features when ``center``).

    Notes
    -----
    The summation order is fixed by the block size and :data:`SUM_LANES` only, so the same inputs
    and block give the same bits with any number of ``workers`` (and any BLAS thread count).
    """
    n, p = features.shape
    if block is not None:
        step = max(1, int(block))
    else:
        step = int(max(1, min(p, block_bytes // (8 * max(n, 1)), max(CACHE_BLOCK_BYTES // (8 * max(n, 1)), n))))
    starts = list(range(0, p, step))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):   # BLAS threads would make the bits depend on the core count
        if n * n * p / 2 < THREADED_WORK or len(starts) < 2:
            parts = [_gram_part(features, starts, step, center)]
        else:
            lanes = [starts[k::SUM_LANES] for k in range(SUM_LANES) if starts[k::SUM_LANES]]
            if workers is None:
                workers = min(_blas_threads(), os.cpu_count() or 1)
            parts = _in_threads(lambda lane: _gram_part(features, lane, step, center), lanes, workers)
    bad = min((part[2] for part in parts if part[2] is not None), default=None)
    if check_finite and bad is not None:
        raise DataError(f"Features contain NaN/inf (first at stimulus {bad[1]}, feature {bad[2]}); "
                        "fix the activations (e.g. clear the activation cache).")
    g, sums = parts[0][0], parts[0][1]
    for part in parts[1:]:
        g += part[0]
        sums += part[1]
    g = np.triu(g)
    g += np.triu(g, 1).T
    return g, sums


def _in_threads(task, lanes: list, workers: int) -> list:
    """``[task(lane) for lane in lanes]``, the lanes shared by up to ``workers`` threads; results in lane order."""
    workers = max(1, min(int(workers), len(lanes)))
    if workers == 1:
        return [task(lane) for lane in lanes]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(task, lanes))


def _gram_part(x: np.ndarray, starts: list[int], step: int,
               center: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int] | None]:
    """Upper triangle of the Gram matrix (Fortran order), row sums and first NaN/inf
    ``(block start, stimulus, feature)`` (or None) of the blocks of ``x`` (n, p) beginning at ``starts``,
    ``step`` columns each. A block holding NaN/inf is still added (NaN propagates)."""
    n, p = x.shape
    g = np.zeros((n, n), dtype=np.float64, order="F")
    sums = np.zeros(n, dtype=np.float64)
    buf = np.empty((n, min(step, p)), dtype=np.float64)
    bad = None
    for start in starts:
        b = min(step, p - start)
        chunk = buf if b == buf.shape[1] else np.empty((n, b), dtype=np.float64)
        np.copyto(chunk, x[:, start:start + b], casting="unsafe")
        col = chunk.sum(axis=0)                                   # NaN/inf propagate into the sums
        if bad is None and not np.isfinite(col).all():
            where = np.argwhere(~np.isfinite(chunk))[0]
            bad = (start, int(where[0]), start + int(where[1]))
        if center:
            chunk -= col / n
        sums += chunk.sum(axis=1)
        # chunk.T is Fortran-ordered (b, n): trans=1 gives chunk @ chunk.T, accumulated into g in place
        g = scipy.linalg.blas.dsyrk(1.0, chunk.T, beta=1.0, c=g, trans=1, overwrite_c=1)
    return g, sums, bad


def centered_gram(features: np.ndarray, *, block: int = CENTERED_BLOCK) -> np.ndarray:
    """Gram matrix of column-centred features, ``Xc Xc^T``, accumulated in float64 (linear kernel).

    :func:`gram` with ``center=True`` and a fixed block of feature columns;
    NaN features give a NaN Gram matrix (no error).

    Parameters
    ----------
    features : ndarray, (n_stimuli, n_features)
        Any float dtype (e.g. a float32 memory map); not modified.
    block : int
        Number of feature columns converted to float64 at a time.

    Returns
    -------
    ndarray, (n_stimuli, n_stimuli) float64
    """
    return gram(features, center=True, block=block, check_finite=False)[0]


def standardized(x: np.ndarray, train: np.ndarray, *, standardize: bool = True) -> np.ndarray:
    """Float64 copy of ``x`` centred (and scaled) by the statistics of its training rows.

    Parameters
    ----------
    x : ndarray, (n_stimuli, n_features)
        Any float dtype.
    train : ndarray of int, (n_train,)
        Rows whose mean (and population standard deviation) are used.
    standardize : bool
        Also divide by the training standard deviation (1 where it is at rounding level,
        so constant features stay ~0); else only centre.

    Returns
    -------
    ndarray, (n_stimuli, n_features) float64
        z-scores of every row (training and test) with the training statistics.
    """
    xb = np.asarray(x, dtype=np.float64)
    mean = xb[train].mean(axis=0)
    xb = xb - mean
    if standardize:
        sd = xb[train].std(axis=0)
        sd[sd <= np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
        xb /= sd
    return xb


def fold_grams(x: np.ndarray, splits: list, *, standardize: bool = True, order: np.ndarray | None = None,
               layer: str = "layer", block: int | None = None, workers: int | None = None) -> np.ndarray:
    """Gram matrices of a wide layer z-scored with each fold's training statistics, in one pass.

    For fold ``f`` with training rows ``train_f`` the features are
    ``Z_f = (X - mu_f) / sd_f`` (``mu_f``, ``sd_f``: mean and population
    standard deviation of the training rows; ``sd_f = 1`` where it is at
    rounding level, so constant features stay ~0) and the result holds
    ``G_f = Z_f Z_f^T`` over *all* stimuli: ``G_f[train, train]`` is the
    training kernel and ``G_f[test, train]`` the test-train cross kernel.

    The layer is read once, in blocks of feature columns, each converted to
    float64 once and centred once by its full-set mean ``m``; every fold then
    costs one scaling pass and one symmetric rank-``block`` update:
    with ``Y = X - m``, ``delta_f = mu_f - m`` and ``s_f = 1 / sd_f``,
    ``G_f = (Y s_f)(Y s_f)^T - r_f 1^T - 1 r_f^T + c_f`` where
    ``r_f = Y (s_f^2 delta_f)`` and ``c_f = sum(s_f^2 delta_f^2)``. The
    training sums of all folds come from products with the fold masks. A
    column's training variance is taken about ``m`` (one pass) when that
    keeps at least :data:`_VAR_TRUST` of the second moment, i.e.
    ``delta_f^2 <= 99 var_f`` (so the correction loses < 2 digits); otherwise
    (e.g. columns constant on the training rows) its mean and standard
    deviation are recomputed from the training rows in two passes and the
    column is centred exactly. The z-scores therefore equal those of
    :func:`standardized` to rounding.

    Parameters
    ----------
    x : ndarray, (n_stimuli, n_features)
        Activations (any float dtype, memory-mapped is fine).
    splits : list of (train, test) int index arrays
    standardize : bool
        Scale by the training standard deviation (always centred).
    order : ndarray of int, (n_stimuli,), optional
        Row order applied to ``x`` block by block (``x[order]`` without copying the layer).
    layer : str
        Layer name for error messages.
    block : int, optional
        Feature columns per block (default from :data:`FOLD_BLOCK_BYTES`).
    workers : int, optional
        Threads sharing the blocks (each with single-threaded BLAS); default the
        current BLAS thread limit, so ``threadpoolctl.threadpool_limits(1)`` makes
        it serial. The blocks are summed in :data:`SUM_LANES` lanes, so the result
        has the same bits for any number of workers.

    Returns
    -------
    ndarray, (n_folds, n_stimuli, n_stimuli) float64

    Notes
    -----
    Memory: ``SUM_LANES * n_folds * n^2 + workers * ~4 * n * block`` float64 values;
    time: ``n_folds * n^2 * n_features / 2`` multiply-adds (BLAS syrk); without
    ``standardize`` the folds share one ``Y Y^T`` (``n^2 * n_features / 2``).
    """
    n, p = x.shape
    if block is None:
        block = int(np.clip(FOLD_BLOCK_BYTES // (8 * n), 256, 4096))
    starts = list(range(0, p, block))
    if workers is None:
        workers = min(_blas_threads(), os.cpu_count() or 1)
    mask = np.zeros((len(splits), n))
    for f, (train, _) in enumerate(splits):
        mask[f, train] = 1.0
    task = functools.partial(_gram_blocks, x, splits, mask, standardize=standardize, order=order, layer=layer,
                             block=block)
    from threadpoolctl import threadpool_limits

    lanes = [starts[k::SUM_LANES] for k in range(SUM_LANES) if starts[k::SUM_LANES]]
    with threadpool_limits(1, user_api="blas"):
        parts = _in_threads(task, lanes, workers)
    grams, r, c = parts[0]
    for part in parts[1:]:          # lanes added in order: the same bits for any number of workers
        grams += part[0]
        r += part[1]
        c += part[2]
    for f in range(len(splits)):  # centre every fold at its training mean: (Y - delta_f) s_f
        grams[f] -= r[:, f][:, None] + r[:, f][None, :] - c[f]
    return grams


def _gram_blocks(x: np.ndarray, splits: list, mask: np.ndarray, starts: list[int], *, standardize: bool,
                 order: np.ndarray | None, layer: str,
                 block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums over the feature blocks at ``starts`` of ``(Y s_f)(Y s_f)^T``, ``Y (s_f^2 delta_f)`` and
    ``sum(s_f^2 delta_f^2)``; shapes (F, n, n), (n, F), (F,). See :func:`fold_grams`."""
    n_folds, n = mask.shape
    n_train = mask.sum(axis=1)[:, None]  # (F, 1)
    eps = np.finfo(np.float64).eps
    grams = np.zeros((n_folds, n, n))
    r = np.zeros((n, n_folds))
    c = np.zeros(n_folds)
    shared = np.zeros((n, n))  # standardize=False: Y Y^T, common to every fold
    zbuf = np.empty(n * min(block, x.shape[1]))
    for start in starts:  # feature blocks outer: each read and converted once
        xb = np.asarray(x[:, start:start + block], dtype=np.float64)
        if order is not None:
            xb = xb[order]
        b = xb.shape[1]
        m = xb.sum(axis=0) / n
        if not np.isfinite(m).all():
            raise DataError(f"Layer '{layer}' has NaN/inf activations; re-extract it (clear the cache).")
        y = xb - m
        delta = (mask @ y) / n_train  # (F, b): training mean minus full-set mean
        second = (mask @ (y * y)) / n_train  # (F, b): training second moment about m
        var = second - delta * delta
        # cancellation (e.g. a column constant on the training rows): centre exactly; columns equal to m
        # on every training row (second == 0, e.g. all-zero columns) are already exact
        unsure = ~(var > _VAR_TRUST * second) & (second > 0.0)
        mu = m + delta
        sd = np.sqrt(np.maximum(var, 0.0))
        exact = {}
        for f in np.flatnonzero(unsure.any(axis=1)):  # a few folds; columns vectorised
            cols = np.flatnonzero(unsure[f])
            xs = xb[np.ix_(splits[f][0], cols)]
            mean = xs.mean(axis=0)
            mu[f, cols] = mean
            sd[f, cols] = (xs - mean).std(axis=0)
            delta[f, cols] = 0.0  # centred exactly below: no correction
            exact[f] = cols
        if standardize:
            sd[sd <= eps * np.maximum(np.abs(mu), 1.0)] = 1.0
            scale = 1.0 / sd
        else:
            scale = np.ones_like(sd)
        weighted = scale * scale * delta  # (F, b)
        r += y @ weighted.T
        c += np.einsum("fj,fj->f", weighted, delta)
        if not standardize:  # every fold shares Y Y^T; only the exactly centred columns differ
            shared += y @ y.T
            for f, cols in exact.items():
                zc, yc = xb[:, cols] - mu[f, cols], y[:, cols]
                grams[f] += zc @ zc.T - yc @ yc.T
            continue
        z = zbuf[:n * b].reshape(n, b)
        for f in range(n_folds):  # K folds, each one pass over the block and one rank-b update
            np.multiply(y, scale[f], out=z)
            cols = exact.get(f)
            if cols is not None:
                z[:, cols] = (xb[:, cols] - mu[f, cols]) * scale[f, cols]
            grams[f] += z @ z.T  # symmetric rank-b update (BLAS syrk)
    grams += shared
    return grams, r, c


def _blas_threads() -> int:
    """Threads the BLAS libraries may use now (the least of their threadpoolctl limits), at least 1.

    The least, because a library loaded after ``threadpool_limits(1)`` was entered keeps its default.
    """
    from threadpoolctl import threadpool_info

    counts = [int(info.get("num_threads") or 1) for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(1, min(counts, default=1))


def recentered_gram(gram: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-centre a Gram matrix on a training subset of its stimuli.

    Parameters
    ----------
    gram : ndarray, (n, n) float64
        ``X X^T`` for features ``X`` with any centring.
    train : ndarray of int, (n_train,)
    test : ndarray of int, (n_test,)

    Returns
    -------
    train_gram : ndarray, (n_train, n_train) float64
        Gram matrix of ``X[train]`` centred by its own mean.
    cross_gram : ndarray, (n_test, n_train) float64
        ``(X[test] - mean) (X[train] - mean)^T``.
    """
    k = gram[np.ix_(train, train)]
    c = gram[np.ix_(test, train)]
    row = k.mean(axis=1)
    total = row.mean()
    k = k - row[:, None] - row[None, :] + total
    c = c - c.mean(axis=1)[:, None] - row[None, :] + total
    return k, c
