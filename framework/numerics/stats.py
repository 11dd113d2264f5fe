"""Small statistics shared by metrics and signals.

FDR adjustment, column-wise Pearson correlation, Spearman correlation of points
given as a count table, hierarchical bootstrap weights, the standard error of
the mean, a site-level permutation test of that Spearman correlation (points of
one site kept together) and a percentile bootstrap CI that accounts for
resamples where the statistic is undefined.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from framework.errors import DataError
from framework.validation import check_option

__all__ = ["RHO_TIE_TOLERANCE", "SITE_ALTERNATIVES", "BootstrapCI", "SitePermutationResult", "bootstrap_weights",
           "draw_site_permutations", "fdr_bh", "pearson_columns", "percentile_ci", "sem",
           "site_permutation_spearman", "table_spearman"]


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


#: Alternatives of :func:`site_permutation_spearman`.
SITE_ALTERNATIVES: tuple[str, ...] = ("two-sided", "greater", "less")

#: Absolute tolerance under which a permuted Spearman rho of a count table counts as tied with the observed
#: one: float64 rounding of :func:`table_spearman` is ~1e-15, while two distinct rank correlations of at most
#: 10^5 points differ by far more.
RHO_TIE_TOLERANCE = 1e-9


def draw_site_permutations(rng: np.random.Generator, n_sites: int, n_permutations: int,
                           strata: np.ndarray | None = None) -> np.ndarray:
    """Random permutations of sites, optionally within strata (e.g. subjects).

    Row ``k`` is a permutation ``pi_k``: under it, site ``i`` takes the label of site
    ``pi_k[i]``. With ``strata``, ``pi_k[i]`` always lies in the stratum of ``i``
    (labels are shuffled within each stratum only). Drawn as ``argsort`` of
    ``stratum + U(0, 1)`` keys, one row of ``rng.random((n_permutations, n_sites))``
    per permutation, so no loop over permutations or strata.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_sites : int
    n_permutations : int
    strata : ndarray, (n_sites,), optional
        Stratum of every site (any sortable labels); None: one stratum.

    Returns
    -------
    ndarray, (n_permutations, n_sites) int64
    """
    keys = rng.random((n_permutations, n_sites))
    if strata is None:
        return np.argsort(keys, axis=1)
    strata = np.asarray(strata)
    if strata.shape != (n_sites,):
        raise DataError(f"strata must give one stratum per site, shape ({n_sites},), got {strata.shape}.")
    _, code = np.unique(strata, return_inverse=True)
    base = np.argsort(code, kind="stable")               # sites sorted by stratum (fixed)
    order = np.argsort(code[None, :] + keys, axis=1)     # sites sorted by stratum, random within each
    perms = np.empty_like(order)
    perms[:, base] = order                               # the j-th site of a stratum takes a random site of it
    return perms


@dataclass
class SitePermutationResult:
    """Result of :func:`site_permutation_spearman`.

    Attributes
    ----------
    observed : float
        Spearman rho of all points with the sites' own rows (NaN when undefined).
    null : ndarray, (n_permutations,) float64
        Rho under each permutation of the rows over sites.
    p : float
        ``(1 + #{null at least as extreme}) / (1 + n_permutations)``; NaN when ``observed`` is.
    n_extreme : int
        Number of permutations at least as extreme (undefined ones included).
    alternative : str
    """

    observed: float
    null: np.ndarray
    p: float
    n_extreme: int
    alternative: str


def site_permutation_spearman(site_counts: np.ndarray, site_rows: np.ndarray, n_rows: int, perms: np.ndarray, *,
                              alternative: str = "two-sided", block_bytes: int = 32 * 2**20) -> SitePermutationResult:
    """Permutation test of a Spearman correlation over points that come in groups (sites).

    Every site ``i`` contributes ``site_counts[i, l]`` points ``(site_rows[i], l)``; the
    statistic is the Spearman rho of all points (:func:`table_spearman`). The null
    keeps each site's points together and exchanges the sites' row labels: under
    permutation ``k`` site ``i`` has row ``site_rows[perms[k, i]]``. This is the
    unit-level permutation a reviewer asks for when one unit gives several
    non-independent points (e.g. a recording site significant at several layers);
    treating the points as independent (scipy's t-approximation) understates p.
    Vectorised over permutations (blocks of ``block_bytes``).

    A permuted value counts as at least as extreme when ``null >= observed - tol``
    (``"greater"``), ``null <= observed + tol`` (``"less"``) or
    ``|null| >= |observed| - tol`` (``"two-sided"``), ``tol`` =
    :data:`RHO_TIE_TOLERANCE`; an undefined permuted value (NaN) counts as extreme
    (conservative; it cannot occur when every site has at least one point).
    ``p = (1 + n_extreme) / (1 + n_permutations)`` (Phipson & Smyth 2010), the
    convention of :func:`framework.numerics.permutation.permutation_test`.

    Parameters
    ----------
    site_counts : ndarray, (n_sites, n_cols) float or int
        Points of every site per column (e.g. its significant layers).
    site_rows : ndarray, (n_sites,) int
        Row of every site (e.g. its area rank), in ``[0, n_rows)``.
    n_rows : int
    perms : ndarray, (n_permutations, n_sites) int
        E.g. :func:`draw_site_permutations`.
    alternative : {"two-sided", "greater", "less"}
    block_bytes : int
        Memory of one block of one-hot row labels.

    Returns
    -------
    SitePermutationResult
    """
    check_option("alternative", alternative, SITE_ALTERNATIVES)
    counts = np.asarray(site_counts, dtype=np.float64)
    rows = np.asarray(site_rows, dtype=np.int64)
    perms = np.asarray(perms)
    n_sites = counts.shape[0]
    if rows.shape != (n_sites,) or (rows.size and (rows.min() < 0 or rows.max() >= n_rows)):
        raise DataError(f"site_rows must be ({n_sites},) integers in [0, {n_rows}), got shape {rows.shape}.")
    if perms.ndim != 2 or perms.shape[1] != n_sites:
        raise DataError(f"perms must be (n_permutations, {n_sites}), got {perms.shape}.")
    levels = np.arange(n_rows)
    observed = float(table_spearman((rows[:, None] == levels).astype(np.float64).T @ counts))
    n_perm = perms.shape[0]
    null = np.empty(n_perm)
    step = max(1, int(block_bytes // max(1, 8 * n_sites * n_rows)))
    for start in range(0, n_perm, step):                 # blocks of permutations, not single permutations
        labels = rows[perms[start:start + step]]                                # (b, n_sites)
        onehot = (labels[..., None] == levels).astype(np.float64)               # (b, n_sites, n_rows)
        null[start:start + step] = table_spearman(np.matmul(onehot.transpose(0, 2, 1), counts))
    if not np.isfinite(observed):
        return SitePermutationResult(observed, null, float("nan"), 0, alternative)
    tol = RHO_TIE_TOLERANCE
    with np.errstate(invalid="ignore"):
        if alternative == "greater":
            extreme = null >= observed - tol
        elif alternative == "less":
            extreme = null <= observed + tol
        else:
            extreme = np.abs(null) >= abs(observed) - tol
    n_extreme = int((extreme | np.isnan(null)).sum())
    return SitePermutationResult(observed, null, (1.0 + n_extreme) / (1.0 + n_perm), n_extreme, alternative)


@dataclass
class BootstrapCI:
    """Result of :func:`percentile_ci`.

    Attributes
    ----------
    ci : tuple of float or None
        ``(low, high)``; None when too many resamples are undefined (see ``reason``).
    n_samples : int
        Bootstrap resamples drawn.
    n_defined : int
        Resamples where the statistic is defined (finite).
    reason : str or None
        Why there is no CI.
    """

    ci: tuple[float, float] | None
    n_samples: int
    n_defined: int
    reason: str | None = None

    @property
    def defined_fraction(self) -> float:
        """``n_defined / n_samples`` (NaN without samples)."""
        return self.n_defined / self.n_samples if self.n_samples else float("nan")


def percentile_ci(samples: np.ndarray, *, level: float = 0.95, max_undefined_fraction: float = 0.1) -> BootstrapCI:
    """Percentile bootstrap CI (Efron & Tibshirani 1993) that counts undefined resamples.

    A resample where the statistic is undefined (NaN) is not dropped silently: the
    fraction of defined resamples is returned, and when more than
    ``max_undefined_fraction`` of them are undefined there is no CI (the defined
    resamples are a selected subset and their percentiles would describe the
    statistic only where it happens to exist). Otherwise the CI is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the defined resamples.

    Parameters
    ----------
    samples : ndarray, (n_samples,) float
        The statistic on every resample, NaN where undefined.
    level : float
        Coverage, in (0, 1).
    max_undefined_fraction : float
        Largest tolerated fraction of undefined resamples, in [0, 1].

    Returns
    -------
    BootstrapCI
    """
    samples = np.asarray(samples, dtype=np.float64).ravel()
    ok = samples[np.isfinite(samples)]
    n, n_ok = samples.size, ok.size
    if n == 0:
        return BootstrapCI(None, 0, 0, "no bootstrap resamples")
    allowed = int(np.floor(max_undefined_fraction * n + 1e-9))      # undefined resamples tolerated
    if n_ok == 0 or n - n_ok > allowed:
        return BootstrapCI(None, n, n_ok, f"the statistic is undefined in {n - n_ok} of {n} bootstrap resamples "
                                          f"({100 * (n - n_ok) / n:.1f} % > {100 * max_undefined_fraction:g} % "
                                          "allowed)")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(ok, [tail, 100.0 - tail])
    return BootstrapCI((float(lo), float(hi)), n, n_ok)
