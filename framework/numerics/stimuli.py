"""Putting the rows of one stimulus-indexed array in the order of another.

Activations come in the order the model saw the stimuli; a target (responses,
RDMs) has its own stimulus order. :func:`stimulus_order` is the one place that
maps the first onto the second; the scheduler, the RSA helpers and the
linear-predictivity and CKA metrics all use it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from framework.errors import DataError

__all__ = ["stimulus_order", "stimulus_labels"]

log = logging.getLogger("framework.numerics.stimuli")


def stimulus_order(available: Sequence[str], wanted: Sequence[str], *, allow_extra: bool = True,
                   source: str = "activations", target: str = "target",
                   fix: str = "Extract activations for the target's stimulus set.") -> np.ndarray | None:
    """Rows of ``available`` that list the stimuli of ``wanted``, in the order of ``wanted``.

    Parameters
    ----------
    available : sequence of str, (n_available,)
        Stimulus ids of the rows to reorder (e.g. ``Activations.stimulus_ids``); unique.
    wanted : sequence of str, (n_stimuli,)
        Stimulus ids in the order wanted (e.g. ``Responses.stimulus_ids``); unique.
    allow_extra : bool
        Accept rows of ``available`` that ``wanted`` does not use (they are left out).
        When False the two must hold the same stimuli.
    source, target : str
        What ``available`` and ``wanted`` belong to, as shown in error messages.
    fix : str
        The sentence telling the user how to fix a mismatch.

    Returns
    -------
    ndarray of int64, (n_stimuli,), or None
        ``order`` with ``available[order[k]] == wanted[k]``; None when the two
        sequences are already identical (no reordering needed).

    Raises
    ------
    DataError
        When a stimulus of ``wanted`` is not in ``available`` (or, with
        ``allow_extra=False``, when ``available`` has stimuli ``wanted`` lacks);
        the message gives the counts and the first missing ids.
    """
    have = tuple(available)
    want = tuple(wanted)
    if have == want:
        return None
    pos = {s: i for i, s in enumerate(have)}
    missing = [s for s in want if s not in pos]
    if missing:
        raise DataError(f"{len(missing)} of the {target}'s {len(want)} stimuli have no {source} "
                        f"(first: {missing[:3]}); the {source} cover {len(have)} stimuli. {fix}")
    if not allow_extra and len(have) != len(want):
        wanted_set = set(want)
        extra = [s for s in have if s not in wanted_set]
        raise DataError(f"The {source} cover {len(have)} stimuli, the {target} {len(want)}; {len(extra)} "
                        f"stimuli have {source} but are not in the {target} (first: {extra[:3]}). {fix}")
    return np.array([pos[s] for s in want], dtype=np.int64)


def stimulus_labels(activations: Any, target: Any, *, metric: str) -> np.ndarray | None:
    """Category of every target stimulus, in the target's stimulus order, for stratified splits.

    Read from ``activations.info["labels"]`` (one per activation row, put in the target's
    order with :func:`stimulus_order`), else from ``target.info["labels"]`` (one per target
    stimulus).

    Parameters
    ----------
    activations : Activations
        With ``stimulus_ids`` and ``info``.
    target : Responses or BrainRDMs
        With ``stimulus_ids`` and ``info``.
    metric : str
        The metric asking, named in messages.

    Returns
    -------
    ndarray of str, (n_stimuli,), or None
        None when neither side has labels, or when some stimulus has none (then folds are
        not stratified; logged at INFO).

    Raises
    ------
    DataError
        When a label list does not have one entry per stimulus.
    """
    for owner, info, ids in (("activations", activations.info, activations.stimulus_ids),
                             ("responses", target.info, target.stimulus_ids)):
        labels = (info or {}).get("labels")
        if labels is None:
            continue
        labels = np.asarray(labels, dtype=object)
        if labels.shape != (len(ids),):
            raise DataError(f"{metric}: {owner}.info['labels'] has shape {labels.shape}; expected ({len(ids)},), "
                            f"one category per stimulus. Fix the {owner}' labels.")
        if any(label is None for label in labels):
            log.info("%s: some stimuli have no category label; folds are not stratified.", metric)
            return None
        labels = labels.astype(str)
        if owner == "activations":
            order = stimulus_order(ids, target.stimulus_ids)
            return labels if order is None else labels[order]
        return labels
    return None
