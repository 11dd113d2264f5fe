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

RDM noise ceilings (per-subject RDMs)
    :func:`rdm_noise_ceiling` keeps every subject's value and averages them in one
    of two conventions (:data:`CEILING_CONVENTIONS`):

    ``"nili"`` (Nili et al. 2014, PLoS Comput Biol 10:e1003553; as rsatoolbox's
    ``inference.noise_ceiling`` with ``rdm.combine.pool_rdm``)
        Upper bound: each subject's RDM compared with the pooled RDM of *all*
        subjects; lower bound: with the pooled RDM of the *other* subjects; each
        the mean over subjects of the comparison itself (e.g. Spearman r). The
        pooled RDM is the one that fits best under the comparison: the mean of the
        rank-transformed RDMs for ``spearman``, ``rho-a`` and ``kendall-tau-a``
        (for tau-a an approximation, as in the toolbox), the mean of the z-scored
        RDMs for ``pearson``.
    ``"algonauts2019"`` (Algonauts Project 2019 evaluation, ``testSub_fmri.py``
    of the challenge devkit; Cichy et al. 2019, arXiv:1905.05675)
        The pooled RDM is the plain mean of the subjects' RDMs; every subject's
        Spearman correlation with it is squared and the squares are averaged over
        subjects (upper bound; the lower bound squares the leave-one-subject-out
        correlations the same way). A model's score in this convention is the mean
        over subjects of its squared Spearman correlation, reported as a
        percentage of the upper bound. This reproduces the published ceilings of
        the 92- and 78-image fMRI sets (EVC 0.1589 / IT 0.3075; EVC 0.0640 /
        IT 0.0647) to 4 decimals.

    Fewer than two subjects give no ceiling (NaN, with the reason in
    :attr:`RDMCeiling.note`): a subject compared with itself is 1 whatever the
    noise, which says nothing about the noise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.stats

from framework.errors import ConfigError, DataError
from framework.numerics.rdm import COMPARISONS, paired_compare
from framework.validation import check_option

__all__ = ["CEILING_CONVENTIONS", "Ceiling", "RDMCeiling", "convention_scores", "masked_pearson", "noise_ceilings",
           "pooled_rdm", "rdm_noise_ceiling", "spearman_brown", "split_half_reliability"]

#: Conventions of RDM noise ceilings and of the scores they bound (see the module docstring).
CEILING_CONVENTIONS: tuple[str, ...] = ("nili", "algonauts2019")

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


def pooled_rdm(subjects: np.ndarray, comparison: str = "spearman", convention: str = "nili") -> np.ndarray:
    """The reference RDM a subject is compared with for a noise ceiling.

    Parameters
    ----------
    subjects : ndarray, (n_subjects, n_pairs)
        Condensed RDMs of the subjects to pool (at least one).
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        How RDMs are compared; with ``convention="nili"`` it decides the transform.
    convention : {"nili", "algonauts2019"}
        ``"nili"``: mean of the rank-transformed RDMs (spearman, rho-a, kendall-tau-a)
        or of the z-scored RDMs (pearson), as rsatoolbox's ``pool_rdm``;
        ``"algonauts2019"``: the plain mean.

    Returns
    -------
    ndarray, (n_pairs,) float64
    """
    return _pooling_transform(np.asarray(subjects, dtype=np.float64), comparison, convention).mean(axis=0)


def _pooling_transform(s: np.ndarray, comparison: str, convention: str) -> np.ndarray:
    """Each row of ``s`` (n_subjects, n_pairs) as it enters the pooled mean (:func:`pooled_rdm`)."""
    if convention == "algonauts2019":
        return s
    if comparison == "pearson":
        centred = s - s.mean(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return centred / centred.std(axis=1, keepdims=True)
    return scipy.stats.rankdata(s, axis=1, method="average")


def convention_scores(r: np.ndarray, convention: str) -> np.ndarray:
    """Per-subject comparison values in a convention's units.

    Parameters
    ----------
    r : ndarray, any shape, float64
        Comparison values (e.g. Spearman r of a model or of the pooled RDM with each subject).
    convention : {"nili", "algonauts2019"}

    Returns
    -------
    ndarray, same shape, float64
        ``r`` itself (``"nili"``) or ``r ** 2`` (``"algonauts2019"``: squared Spearman).
    """
    r = np.asarray(r, dtype=np.float64)
    return r * r if convention == "algonauts2019" else r.copy()


@dataclass
class RDMCeiling:
    """Lower and upper noise ceiling of a stack of subject RDMs, with every subject's value.

    Attributes
    ----------
    convention : str
        ``"nili"`` (values are the comparison itself, e.g. r) or ``"algonauts2019"`` (squared Spearman).
    comparison : str
    n_subjects : int
    r_upper : ndarray, (n_subjects,) float64
        Comparison of each subject's RDM with the pooled RDM of all subjects; NaN with one subject.
    r_lower : ndarray, (n_subjects,) float64
        Comparison of each subject's RDM with the pooled RDM of the others; NaN with one subject.
    upper_per_subject, lower_per_subject : ndarray, (n_subjects,) float64
        ``r_upper`` and ``r_lower`` in the convention's units (:func:`convention_scores`).
    upper, lower : float
        Means over subjects of ``upper_per_subject`` / ``lower_per_subject``; NaN with
        fewer than two subjects.
    note : str
        Why the ceiling is undefined (empty when it is defined).
    """

    convention: str
    comparison: str
    n_subjects: int
    r_upper: np.ndarray
    r_lower: np.ndarray
    upper_per_subject: np.ndarray
    lower_per_subject: np.ndarray
    upper: float
    lower: float
    note: str = ""


def rdm_noise_ceiling(subjects: np.ndarray, comparison: str = "spearman", convention: str = "nili") -> RDMCeiling:
    """Lower and upper noise ceiling of subject RDMs (Nili et al. 2014 or Algonauts 2019).

    Parameters
    ----------
    subjects : ndarray, (n_subjects, n_pairs)
        Condensed RDMs, one row per subject. Not modified.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        As :func:`framework.numerics.rdm.paired_compare`, the comparison used for the model.
    convention : {"nili", "algonauts2019"}
        See the module docstring; ``"algonauts2019"`` needs ``comparison="spearman"``.

    Returns
    -------
    RDMCeiling
        NaN bounds (and a ``note``) for fewer than two subjects.
    """
    check_option("ceiling convention", convention, CEILING_CONVENTIONS)
    check_option("comparison", comparison, COMPARISONS)
    if convention == "algonauts2019" and comparison != "spearman":
        raise ConfigError(f"The algonauts2019 ceiling convention squares Spearman correlations; got "
                          f"comparison={comparison!r}. Use comparison='spearman' or the 'nili' convention.")
    s = np.asarray(subjects, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1:
        raise DataError(f"Subject RDMs must be (n_subjects >= 1, n_pairs), got shape {s.shape}.")
    n = s.shape[0]
    if n < 2:
        nan = np.full(n, np.nan)
        return RDMCeiling(convention, comparison, n, nan, nan.copy(), nan.copy(), nan.copy(), float("nan"),
                          float("nan"), note=f"{n} subject: a noise ceiling needs at least two subjects (a subject "
                                             "compared with itself is 1 whatever the noise)")
    t = _pooling_transform(s, comparison, convention)
    total = t.sum(axis=0)
    r_upper = paired_compare(s.T, np.repeat((total / n)[:, None], n, axis=1), comparison)
    r_lower = paired_compare(s.T, ((total[None, :] - t) / (n - 1)).T, comparison)   # pooled over the others
    up = convention_scores(r_upper, convention)
    lo = convention_scores(r_lower, convention)
    return RDMCeiling(convention, comparison, n, r_upper, r_lower, up, lo, float(np.mean(up)), float(np.mean(lo)))


def noise_ceilings(subjects: np.ndarray, comparison: str = "spearman", convention: str = "nili") -> tuple[float, float]:
    """Lower and upper noise ceiling of a stack of subject RDMs (:func:`rdm_noise_ceiling`).

    Parameters
    ----------
    subjects : ndarray, (n_subjects, n_pairs)
        Condensed RDMs.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
    convention : {"nili", "algonauts2019"}

    Returns
    -------
    lower, upper : float
        NaN for fewer than two subjects.
    """
    c = rdm_noise_ceiling(subjects, comparison, convention)
    return c.lower, c.upper
