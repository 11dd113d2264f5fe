"""Seeded K-fold splits of stimuli, stratified by category when labels are given.

Used by the linear-predictivity metric for its outer folds and for the inner
folds that choose a ridge penalty (:mod:`framework.numerics.ridge`) or a best
layer on training data only.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from framework.errors import ConfigError, DataError

__all__ = ["kfold_splits"]

log = logging.getLogger("framework.numerics.splits")

#: One fold: (train, test) stimulus indices, each int64 and sorted.
Split = tuple[np.ndarray, np.ndarray]


def kfold_splits(n_stimuli: int, *, n_splits: int = 10, seed: int = 0,
                 labels: Sequence[str] | np.ndarray | None = None,
                 name: str = "n_splits") -> tuple[list[Split], bool]:
    """Seeded K-fold partition of ``range(n_stimuli)``; every stimulus is held out once.

    Parameters
    ----------
    n_stimuli : int
        Number of stimuli to split.
    n_splits : int
        Number of folds K, ``2 <= K <= n_stimuli``; each test fold holds about
        ``n_stimuli / K`` stimuli.
    seed : int
        Seed of the shuffle; the same seed gives the same folds.
    labels : sequence of str, (n_stimuli,), optional
        Category of each stimulus. When given (and every category has at least
        ``n_splits`` members) the folds are stratified: each keeps the category
        proportions (``sklearn.model_selection.StratifiedKFold``). When some
        category is smaller than ``n_splits`` the folds fall back to plain
        shuffled K-fold and a warning is logged.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    splits : list of (train, test), each an int64 index array, sorted ascending
        ``n_splits`` pairs; the test folds partition ``range(n_stimuli)``.
    stratified : bool
        Whether the folds were stratified by ``labels``.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise ConfigError(f"Invalid value {n_splits!r} for {name}; expected an integer >= 2 (number of folds).")
    if n_splits > n_stimuli:
        raise DataError(f"Cannot make {n_splits} folds ({name}) from {n_stimuli} stimuli; "
                        f"lower {name} to at most {n_stimuli} or use more stimuli.")
    index = np.zeros((n_stimuli, 1))
    stratified = False
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n_stimuli,):
            raise DataError(f"Stimulus labels have shape {labels.shape}; expected ({n_stimuli},), one per stimulus. "
                            "Fix the labels of the stimulus set.")
        _, counts = np.unique(labels, return_counts=True)
        if counts.size < 2:
            log.info("All %d stimuli share one label; using unstratified K-fold.", n_stimuli)
        elif counts.min() < n_splits:
            log.warning("Smallest category has %d stimuli, fewer than %d folds; using unstratified K-fold.",
                        int(counts.min()), n_splits)
        else:
            stratified = True
    if stratified:
        splitter = StratifiedKFold(n_splits=int(n_splits), shuffle=True, random_state=int(seed))
        folds = splitter.split(index, labels)
    else:
        splitter = KFold(n_splits=int(n_splits), shuffle=True, random_state=int(seed))
        folds = splitter.split(index)
    out = [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in folds]
    return out, stratified
