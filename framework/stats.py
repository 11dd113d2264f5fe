"""Statistics shared by several plugins."""
from __future__ import annotations

import numpy as np


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (as :func:`scipy.stats.false_discovery_control`).

    Parameters
    ----------
    p : ndarray, any shape, float
        p-values; NaN entries are ignored (and stay NaN), the family is the finite rest.

    Returns
    -------
    ndarray, same shape, float64
        ``min_{j >= i} p_(j) m / j`` in sorted order, capped at 1; a test is significant
        at level q when its adjusted value is ``<= q``.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.ravel()
    ok = np.flatnonzero(np.isfinite(flat))
    m = ok.size
    if m == 0:
        return out
    order = np.argsort(flat[ok], kind="stable")
    ranked = flat[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out.ravel()[ok] = res
    return out
