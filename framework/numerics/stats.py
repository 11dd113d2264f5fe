"""Small statistics shared by metrics and signals.

FDR adjustment, column-wise Pearson correlation, Spearman correlation of points
given as a count table, hierarchical bootstrap weights and the standard error
of the mean.
"""
from __future__ import annotations

import numpy as np
import scipy.stats

from framework.errors import DataError

__all__ = ["bootstrap_weights", "fdr_bh", "pearson_columns", "sem", "table_spearman"]


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), ignoring NaN.

    The finite entries form the family and are adjusted by
    :func:`scipy.stats.false_discovery_control` (``method="bh"``).

    Parameters
    ----------
    p : ndarray, any shape, float
        p-values in ``[0, 1]``; NaN (and +-inf) entries are ignored and stay NaN.

    Returns
    -------
    ndarray, same shape as ``p``, float64
        ``min_{j >= i} p_(j) m / j`` in sorted order, capped at 1 (``m`` the
        number of finite entries); a test is significant at level q when its
        adjusted value is ``<= q``.

    Raises
    ------
    DataError
        When a finite entry lies outside ``[0, 1]``.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.ravel()
    ok = np.flatnonzero(np.isfinite(flat))
    if ok.size == 0:
        return out
    finite = flat[ok]
    if finite.min() < 0.0 or finite.max() > 1.0:
        raise DataError(f"p-values for the FDR adjustment must lie in [0, 1], got values from {finite.min():.3g} "
                        f"to {finite.max():.3g}; pass p-values, not statistics.")
    out.ravel()[ok] = scipy.stats.false_discovery_control(finite, method="bh")
    return out


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns, in float64.

    Parameters
    ----------
    a, b : ndarray, (n_stimuli, n_sites)
        E.g. predicted and measured responses.

    Returns
    -------
    ndarray, (n_sites,) float64
        NaN where a column is constant (its standard deviation is at rounding
        level relative to its magnitude).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[0]
    tol = 1e3 * np.finfo(np.float64).eps
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    ssa = np.einsum("ij,ij->j", ac, ac)
    ssb = np.einsum("ij,ij->j", bc, bc)
    # a column is constant when its sd is at rounding level relative to its magnitude
    const = (np.sqrt(ssa / n) <= tol * np.abs(a).max(axis=0)) | (np.sqrt(ssb / n) <= tol * np.abs(b).max(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.einsum("ij,ij->j", ac, bc) / np.sqrt(ssa * ssb)
    r[const] = np.nan
    return r


def table_spearman(counts: np.ndarray) -> np.ndarray:
    """Spearman correlation of points given as a count table, vectorised over leading axes.

    The points are (row index, column index) pairs, cell ``(a, l)`` holding
    ``counts[..., a, l]`` copies. Ties get average ranks, as in
    :func:`scipy.stats.spearmanr` on the expanded points.

    Parameters
    ----------
    counts : ndarray, (..., n_rows, n_cols)
        Non-negative counts (may be float weights).

    Returns
    -------
    ndarray, (...) float64
        NaN where fewer than two distinct rows or columns are occupied.
    """
    c = np.asarray(counts, dtype=np.float64)
    rows = c.sum(axis=-1)                                # (..., n_rows)
    cols = c.sum(axis=-2)                                # (..., n_cols)
    n = rows.sum(axis=-1)                                # (...)
    mid = (n[..., None] + 1.0) / 2.0
    rx = np.cumsum(rows, axis=-1) - rows + (rows + 1.0) / 2.0 - mid     # centred midranks of the rows
    ry = np.cumsum(cols, axis=-1) - cols + (cols + 1.0) / 2.0 - mid
    cov = np.einsum("...a,...al,...l->...", rx, c, ry)
    vx = np.einsum("...a,...a->...", rows, rx * rx)
    vy = np.einsum("...l,...l->...", cols, ry * ry)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = cov / np.sqrt(vx * vy)
    return np.where((vx > 0) & (vy > 0), np.clip(rho, -1.0, 1.0), np.nan)


def bootstrap_weights(rng: np.random.Generator, subjects: np.ndarray, n_bootstrap: int) -> np.ndarray:
    """How often each site is drawn in each bootstrap sample.

    One subject: sites are resampled with replacement. Several subjects:
    hierarchical, subjects are resampled with replacement, then each drawn
    subject's sites are resampled with replacement (a subject drawn ``k`` times
    contributes ``k * n_sites_of_subject`` site draws).

    Parameters
    ----------
    rng : numpy.random.Generator
    subjects : ndarray of str, (n_sites,)
        Subject of every site.
    n_bootstrap : int
        Number of bootstrap samples.

    Returns
    -------
    ndarray, (n_bootstrap, n_sites) float64
        Draw counts; each row sums to ``n_sites``.
    """
    uniq, inverse = np.unique(subjects, return_inverse=True)
    n_sites = subjects.size
    w = np.zeros((n_bootstrap, n_sites))
    if uniq.size == 1:
        w[:] = rng.multinomial(n_sites, np.full(n_sites, 1.0 / n_sites), size=n_bootstrap)
        return w
    subj_draws = rng.multinomial(uniq.size, np.full(uniq.size, 1.0 / uniq.size), size=n_bootstrap)
    for j in range(uniq.size):                       # loop over subjects (not sites)
        idx = np.flatnonzero(inverse == j)
        w[:, idx] = rng.multinomial(subj_draws[:, j] * idx.size, np.full(idx.size, 1.0 / idx.size))
    return w


def sem(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)``, along one axis.

    Parameters
    ----------
    x : ndarray, any shape, float
    axis : int
        Axis of the ``n`` samples.

    Returns
    -------
    ndarray, ``x.shape`` without ``axis``, float64
        All NaN when ``n < 2``.
    """
    n = x.shape[axis]
    if n < 2:
        return np.full(np.delete(x.shape, axis), np.nan)
    return np.std(x, axis=axis, ddof=1) / np.sqrt(n)
