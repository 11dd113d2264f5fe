"""Noise ceilings: split-half reliability of responses, and Nili et al. bounds for RDMs.

Split-half reliability (responses with repetitions)
    For every site the repetitions of each stimulus are split at random into two
    halves of equal size; the half means give two (n_stimuli,) response vectors
    whose Pearson correlation ``r_half`` measures how reproducible the site is.
    ``r_half`` is averaged over ``n_splits`` seeded random splits (plain mean, as
    Brain-Score's split-half consistency) and then corrected to the reliability of
    the mean over all repetitions with Spearman-Brown, ``2 r / (1 + r)``.

    Missing repetitions are NaN. Each stimulus (and site) splits only the
    repetitions it has: in random order, the first ``m // 2`` go to half A and the
    next ``m // 2`` to half B (``m`` the number present; an odd one out is left
    out so that both halves average the same number of repetitions). A stimulus
    with fewer than two repetitions at a site is left out of that site's
    correlation.

RDM noise ceilings (per-subject RDMs, Nili et al. 2014)
    :func:`noise_ceilings`: upper bound, each subject's RDM compared with the
    mean RDM of all subjects; lower bound, with the mean RDM of the others; both
    averaged over subjects, with the comparison used for the model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from framework.errors import ConfigError, DataError
from framework.numerics.rdm import paired_compare

__all__ = ["Ceiling", "masked_pearson", "noise_ceilings", "spearman_brown", "split_half_reliability"]

log = logging.getLogger("framework.numerics.ceiling")

#: Elements (splits x repetitions x stimuli x sites) handled at once; bounds memory to a few hundred MB.
_CHUNK_ELEMENTS = 1 << 23


def spearman_brown(r: np.ndarray | float, factor: float = 2.0) -> np.ndarray:
    """Spearman-Brown prophecy: reliability of a test ``factor`` times as long.

    Parameters
    ----------
    r : float or ndarray
        Reliability (correlation) of the shorter test.
    factor : float
        Length ratio; 2 turns a split-half correlation into the full-length reliability.

    Returns
    -------
    ndarray, float64, same shape as ``r``
        ``factor * r / (1 + (factor - 1) * r)``.
    """
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return factor * r / (1.0 + (factor - 1.0) * r)


def masked_pearson(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson correlation along axis -2 using only entries where ``valid`` is True.

    Parameters
    ----------
    a, b : ndarray, (..., n_stimuli, n_sites) float64
        Values at invalid entries are ignored (may be NaN).
    valid : ndarray of bool, broadcastable to ``a``

    Returns
    -------
    ndarray, (..., n_sites) float64
        NaN where fewer than 3 valid stimuli or a side has zero variance.
    """
    w = np.broadcast_to(valid, a.shape).astype(np.float64)
    a = np.where(w > 0, a, 0.0)
    b = np.where(w > 0, b, 0.0)
    n = w.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma = (a * w).sum(axis=-2) / n
        mb = (b * w).sum(axis=-2) / n
        da = (a - ma[..., None, :]) * w
        db = (b - mb[..., None, :]) * w
        cov = (da * db).sum(axis=-2)
        r = cov / np.sqrt((da * da).sum(axis=-2) * (db * db).sum(axis=-2))
    r[n < 3] = np.nan
    return r


@dataclass
class Ceiling:
    """Split-half reliability of each site.

    Attributes
    ----------
    r_half : ndarray, (n_splits, n_sites) float64
        Pearson correlation between the half means of each random split.
    ceiling : ndarray, (n_sites,) float64
        ``spearman_brown(nanmean(r_half, axis=0))``; NaN for a site without
        enough repeated stimuli.
    n_splits : int
    """

    r_half: np.ndarray
    ceiling: np.ndarray
    n_splits: int


def split_half_reliability(repetitions: np.ndarray, *, n_splits: int = 10, seed: int = 0,
                           keys: np.ndarray | None = None) -> Ceiling:
    """Spearman-Brown corrected split-half reliability per site.

    Parameters
    ----------
    repetitions : ndarray, (n_reps, n_stimuli, n_sites)
        Single-repetition responses; NaN where a stimulus was shown fewer times.
        Not modified.
    n_splits : int
        Number of seeded random splits averaged.
    seed : int
        Seed of the random splits (``numpy.random.default_rng``).
    keys : ndarray, (n_splits, n_reps, n_stimuli), optional
        Explicit sort keys defining the splits instead of random ones: for each
        split and stimulus, the present repetitions taken in increasing key order
        fill half A then half B (e.g. keys ``[0, 1, 2, 3]`` put repetitions 0, 1
        in A and 2, 3 in B). ``n_splits`` and ``seed`` are then ignored.

    Returns
    -------
    Ceiling
    """
    reps = np.asarray(repetitions)
    if reps.ndim != 3:
        raise DataError(f"Repetitions must be (n_reps, n_stimuli, n_sites), got shape {reps.shape}; "
                        "fix Responses.repetitions.")
    n_reps, n_stim, n_sites = reps.shape
    if n_reps < 2:
        raise DataError(f"A split-half ceiling needs at least 2 repetitions, got {n_reps}; "
                        "drop Responses.repetitions or record more repetitions.")
    if keys is None:
        if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
            raise ConfigError(f"Invalid value {n_splits!r} for ceiling_splits; expected an integer >= 1.")
        keys = np.random.default_rng(seed).random((n_splits, n_reps, n_stim))
    else:
        keys = np.asarray(keys, dtype=np.float64)
        if keys.ndim != 3 or keys.shape[1:] != (n_reps, n_stim):
            raise DataError(f"Split keys must be (n_splits, {n_reps}, {n_stim}), got {keys.shape}.")
        n_splits = keys.shape[0]
    valid = np.isfinite(reps)
    if np.isinf(reps).any():
        raise DataError("Repetitions contain +-inf; only NaN marks a missing repetition. Fix the responses.")
    values = np.where(valid, reps, 0.0).astype(np.float64)

    per_split = max(1, _CHUNK_ELEMENTS // max(1, reps.size))
    r_half = np.empty((n_splits, n_sites))
    for start in range(0, n_splits, per_split):  # memory-bounded chunks, each vectorised over its splits
        k = keys[start:start + per_split]  # (c, R, S)
        order = np.argsort(k, axis=1, kind="stable")[..., None]  # (c, R, S, 1)
        v_sorted = np.take_along_axis(np.broadcast_to(valid, (k.shape[0],) + valid.shape), order, axis=1)
        x_sorted = np.take_along_axis(np.broadcast_to(values, (k.shape[0],) + values.shape), order, axis=1)
        rank = np.cumsum(v_sorted, axis=1, dtype=np.int32)  # 1-based position among present repetitions
        half = (rank[:, -1] // 2)[:, None]  # (c, 1, S, J)
        in_a = v_sorted & (rank <= half)
        in_b = v_sorted & (rank > half) & (rank <= 2 * half)
        count = half[:, 0].astype(np.float64)  # (c, S, J) repetitions per half
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_a = (x_sorted * in_a).sum(axis=1) / count
            mean_b = (x_sorted * in_b).sum(axis=1) / count
        r_half[start:start + per_split] = masked_pearson(mean_a, mean_b, count > 0)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(r_half)
        mean_r = np.where(finite.any(axis=0), np.nansum(r_half, axis=0) / np.maximum(finite.sum(axis=0), 1), np.nan)
    ceiling = spearman_brown(mean_r)
    if np.isnan(ceiling).any():
        log.info("%d of %d sites have no split-half ceiling (too few repeated stimuli).",
                 int(np.isnan(ceiling).sum()), n_sites)
    return Ceiling(r_half=r_half, ceiling=ceiling, n_splits=int(n_splits))


def noise_ceilings(subjects: np.ndarray, comparison: str = "spearman") -> tuple[float, float]:
    """Lower and upper noise ceiling of a stack of subject RDMs.

    Parameters
    ----------
    subjects : ndarray, (n_subjects, n_pairs)
        Condensed RDMs.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        As :func:`framework.numerics.rdm.paired_compare`.

    Returns
    -------
    lower : float
        Mean over subjects of compare(subject, mean of the other subjects); NaN for one subject.
    upper : float
        Mean over subjects of compare(subject, mean of all subjects).
    """
    s = np.asarray(subjects, dtype=np.float64)
    n = s.shape[0]
    total = s.sum(axis=0)
    upper = float(np.mean(paired_compare(s.T, np.repeat((total / n)[:, None], n, axis=1), comparison)))
    if n < 2:
        return float("nan"), upper
    others = (total[None, :] - s) / (n - 1)
    lower = float(np.mean(paired_compare(s.T, others.T, comparison)))
    return lower, upper
