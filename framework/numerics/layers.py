"""Which layers compete for a model's "best layer", and held-out layer commitment.

Conventions (``DESIGN.md``, "Conventions the defaults follow"):

* ``pixels`` (the normalised input image every model plugin offers first) is a
  *baseline*, reported beside each model, never a layer choice: a network must beat
  its own input to be credited with a layer.
* A layer is committed on data separate from the data it is scored on (Brain-Score
  commits layers on separate data; Schrimpf et al. 2018). The maximum over layers of
  scores computed on the same data is *optimistic* (it peeks) and is labelled so.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BASELINE_LAYERS", "candidate_layers", "heldout_choice"]

#: Layers that are baselines, not layer choices.
BASELINE_LAYERS: tuple[str, ...] = ("pixels",)


def candidate_layers(layers: Sequence[str], *, include_baselines: bool = False) -> np.ndarray:
    """Indices of the layers that compete for the best layer, (n_candidates,) int64.

    Parameters
    ----------
    layers : sequence of str, (n_layers,)
        Layer names in forward order.
    include_baselines : bool
        Let :data:`BASELINE_LAYERS` compete too (off by default).

    Returns
    -------
    ndarray of int64
        Positions in ``layers``; every layer when excluding the baselines would leave none
        (a model whose only layer is ``pixels``).
    """
    idx = np.array([i for i, name in enumerate(layers) if include_baselines or name not in BASELINE_LAYERS],
                   dtype=np.int64)
    return idx if idx.size else np.arange(len(layers), dtype=np.int64)


def heldout_choice(train_scores: np.ndarray, test_scores: np.ndarray, candidates: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Commit a layer on training scores and read its score on the held-out part, per split.

    Parameters
    ----------
    train_scores, test_scores : ndarray, (n_splits, n_layers) float64
        Scores of every layer on each split's training part and held-out part. NaN
        training scores never win.
    candidates : ndarray of int64, (n_candidates,)
        Layers allowed to win (:func:`candidate_layers`).

    Returns
    -------
    chosen : ndarray of int64, (n_splits,)
        The layer committed in each split (an index into the layer axis); -1 where no
        candidate has a finite training score.
    heldout : ndarray of float64, (n_splits,)
        ``test_scores[split, chosen]``; NaN where ``chosen`` is -1.
    """
    train = np.asarray(train_scores, dtype=np.float64)[:, candidates]
    test = np.asarray(test_scores, dtype=np.float64)
    ok = np.isfinite(train).any(axis=1)
    best = np.argmax(np.where(np.isfinite(train), train, -np.inf), axis=1)
    chosen = np.where(ok, candidates[best], -1)
    heldout = np.where(ok, test[np.arange(test.shape[0]), np.maximum(chosen, 0)], np.nan)
    return chosen.astype(np.int64), heldout
