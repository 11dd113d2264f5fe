"""Responsive sites: Wilcoxon signed-rank test per site, Benjamini-Hochberg FDR over sites.

Kuzovkin et al. 2018 call a site responsive in a (band, window) when its power in
the window is higher than in the baseline over images (one-sided Wilcoxon
signed-rank test) after Benjamini-Hochberg correction at q = 0.05 pooled over
all sites. Both steps are vectorised over sites here.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata

from framework.errors import ConfigError
from framework.numerics.stats import fdr_bh

log = logging.getLogger("framework.signals.responsiveness")

#: Largest sample size for which the exact null distribution is used (as scipy's "auto").
EXACT_MAX_N = 50


@functools.lru_cache(maxsize=64)
def _exact_sf(n: int) -> np.ndarray:
    """P(W+ >= k) for k = 0 .. n(n+1)/2 under the null with n untied non-zero differences, (K,) float64."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):  # subsets of {1..r}: add rank r or not
        counts[r:] = counts[r:] + counts[:-r].copy()
    pmf = counts / 2.0 ** n
    return np.cumsum(pmf[::-1])[::-1]


def wilcoxon_greater(d: np.ndarray, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """One-sided Wilcoxon signed-rank test of ``d > 0``, column by column.

    Matches :func:`scipy.stats.wilcoxon` (``alternative="greater"``,
    ``zero_method="wilcox"``, ``correction=False``) applied to each column with
    NaNs omitted: zeros and NaNs are dropped, ``|d|`` ranked with ties averaged.
    With ``method="auto"`` a column with at most 50 remaining values, no ties
    and no zeros gets the exact null distribution, any other the normal
    approximation with tie correction (scipy uses a permutation test for
    n <= 13 with ties; this function uses the normal approximation there).

    Parameters
    ----------
    d : ndarray, (n_samples, n_sites) float
        Paired differences (e.g. window power - baseline power per image).
    method : {"auto", "asymptotic", "exact"}

    Returns
    -------
    statistic : ndarray, (n_sites,) float64
        W+, the sum of the ranks of the positive differences.
    pvalue : ndarray, (n_sites,) float64
        NaN for a column without non-zero values.
    """
    if method not in ("auto", "asymptotic", "exact"):
        raise ConfigError(f"Invalid Wilcoxon method {method!r}; expected 'auto', 'asymptotic' or 'exact'.")
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    had_zero = np.any(d == 0, axis=0)
    d = np.where(d == 0, np.nan, d)
    valid = ~np.isnan(d)
    n = valid.sum(axis=0).astype(np.float64)
    ranks = rankdata(np.abs(d), axis=0, nan_policy="omit")  # NaN stays NaN
    r_plus = np.nansum(np.where(d > 0, ranks, 0.0), axis=0)
    # Tie correction: sum over groups of equal |d| of t^3 - t.
    a = np.sort(np.abs(d), axis=0)  # NaN last
    tie_sum = np.zeros(d.shape[1])
    has_ties = np.zeros(d.shape[1], dtype=bool)
    if d.shape[0] > 1:
        same = (a[1:] == a[:-1])  # NaN never equal
        has_ties = same.any(axis=0)
        if has_ties.any():
            # run lengths of equal values, vectorised via group starts
            start = np.vstack([np.ones((1, d.shape[1]), bool), ~same])
            gid = np.cumsum(start, axis=0) - 1  # group id per row
            cols = np.broadcast_to(np.arange(d.shape[1]), d.shape)
            t = np.zeros(d.shape, dtype=np.float64)
            np.add.at(t, (gid[~np.isnan(a)], cols[~np.isnan(a)]), 1.0)
            tie_sum = (t ** 3 - t).sum(axis=0)
    mean = n * (n + 1) / 4.0
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt((n * (n + 1) * (2 * n + 1) - tie_sum / 2.0) / 24.0)
        p = ndtr(-(r_plus - mean) / se)  # P(Z >= z)
    if method != "asymptotic":
        exact = (n <= EXACT_MAX_N) & (n > 0)
        if method == "auto":
            exact &= ~has_ties & ~had_zero
        for k in np.unique(n[exact]).astype(int):  # one null distribution per sample size
            cols = exact & (n == k)
            sf = _exact_sf(k)
            p[cols] = sf[np.clip(np.floor(r_plus[cols]).astype(int), 0, sf.size - 1)]
    p = np.where(n > 0, p, np.nan)
    return r_plus, p


def responsive_sites(window_power: np.ndarray, baseline_power: np.ndarray, *, q: float = 0.05,
                     method: str = "auto") -> dict[str, np.ndarray]:
    """Sites whose window power exceeds baseline power over stimuli, BH-FDR over sites.

    Parameters
    ----------
    window_power, baseline_power : ndarray, (n_stimuli, n_sites) float
        Per-stimulus band power in the window and in the baseline (any unit, the
        same for both); NaN where a stimulus is missing for a site.
    q : float
        False discovery rate, 0 < q < 1.

    Returns
    -------
    result : dict
        ``statistic``, ``pvalue``, ``adjusted`` : (n_sites,) float64;
        ``responsive`` : (n_sites,) bool (``adjusted <= q``).
    """
    if not 0.0 < q < 1.0:
        raise ConfigError(f"FDR level q must be in (0, 1), got {q}; use e.g. fdr_q=0.05.")
    d = np.asarray(window_power, np.float64) - np.asarray(baseline_power, np.float64)
    stat, p = wilcoxon_greater(d, method=method)
    adj = fdr_bh(p)
    return {"statistic": stat, "pvalue": p, "adjusted": adj, "responsive": np.nan_to_num(adj, nan=1.0) <= q}
