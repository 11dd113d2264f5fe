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

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from framework.errors import ConfigError

__all__ = ["BASELINE_LAYERS", "candidate_layers", "check_constant_sides", "constant_layers", "heldout_choice"]

#: Layers that are baselines, not layer choices.
BASELINE_LAYERS: tuple[str, ...] = ("pixels",)


def candidate_layers(layers: Sequence[str], *, include_baselines: bool = False,
                     metric: str | None = None) -> np.ndarray:
    """Indices of the layers that compete for the best layer, (n_candidates,) int64.

    Parameters
    ----------
    layers : sequence of str, (n_layers,)
        Layer names in forward order.
    include_baselines : bool
        Let :data:`BASELINE_LAYERS` compete too (off by default).
    metric : str, optional
        The metric asking (its ``include_pixels`` parameter lets the baselines compete). When
        given, a layer list holding only baselines is refused: a baseline is never credited
        as the model's layer.

    Returns
    -------
    ndarray of int64
        Positions in ``layers``. Without ``metric``: every layer when excluding the baselines
        would leave none (a model whose only layer is ``pixels``).

    Raises
    ------
    ConfigError
        ``metric`` is given, ``include_baselines`` is False and every layer is a baseline.
    """
    idx = np.array([i for i, name in enumerate(layers) if include_baselines or name not in BASELINE_LAYERS],
                   dtype=np.int64)
    if idx.size:
        return idx
    if metric is not None and len(layers):
        only = ", ".join(f"'{name}'" for name in dict.fromkeys(layers))
        what = f"the only layer given is {only}, the baseline" if len(set(layers)) == 1 else (
            f"the layers given ({only}) are all baselines")
        raise ConfigError(f"{metric}: no model layer left to score: {what} (include_pixels=false); add model "
                          f"layers to --layers or set --metric-param {metric}.include_pixels=true.")
    return np.arange(len(layers), dtype=np.int64)


def constant_layers(layers: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], *,
                    rows: np.ndarray | None = None, block: int = 65536) -> list[str]:
    """Names of the layers whose features are the same for every stimulus (e.g. an all-zero network).

    A layer holding NaN is never constant here (its NaN is reported by the finiteness checks).

    Parameters
    ----------
    layers : mapping of name -> ndarray (n_stimuli, n_features), or (name, array) pairs
        E.g. :class:`framework.types.Activations` (``.items()`` is used when present).
    rows : ndarray of int64, optional
        The stimuli (rows) to look at; all by default.
    block : int
        Features compared at a time (bounds memory for wide, memory-mapped layers).

    Returns
    -------
    list of str
        The constant layers, in the order given.
    """
    if hasattr(layers, "constant_layers"):  # Activations: from cached per-stimulus digests when present
        return layers.constant_layers(rows)
    items = layers.items() if hasattr(layers, "items") else layers
    out = []
    for name, arr in items:
        if (arr.shape[0] if rows is None else len(rows)) < 2:
            continue
        flat = arr.reshape(arr.shape[0], -1)
        same = True
        for start in range(0, flat.shape[1], block):  # a layer that varies usually differs in its first block
            part = np.asarray(flat[:, start:start + block])
            part = part if rows is None else part[rows]
            if not np.array_equal(part, np.broadcast_to(part[:1], part.shape)):
                same = False
                break
        if same:
            out.append(name)
    return out


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


def check_constant_sides(metric: str, layers: Mapping[str, np.ndarray], responses: np.ndarray, *,
                         rows: np.ndarray | None = None) -> list[str]:
    """Say which side is constant over stimuli: the model's layers or the brain sites.

    Parameters
    ----------
    metric : str
        The metric, for messages.
    layers : mapping of name -> ndarray (n_stimuli_act, n_features)
        The activations (e.g. :class:`framework.types.Activations`).
    responses : ndarray, (n_stimuli, n_sites)
        The brain side, finite.
    rows : ndarray of int64, optional
        Rows of the activations in the order of ``responses`` (all by default).

    Returns
    -------
    list of str
        The layers that are constant (some, not all; they are logged as a warning).

    Raises
    ------
    DataError
        Every layer is constant (the model side: e.g. an all-zero weights file), or every
        site is constant (the brain side: the signal); one line naming the side and the fix.
    """
    from framework.errors import DataError

    names = list(layers)
    const = constant_layers(layers, rows=rows)
    shown = ", ".join(f"'{x}'" for x in const[:4]) + (f" (+{len(const) - 4} more)" if len(const) > 4 else "")
    if const and len(const) == len(names):
        raise DataError(f"{metric}: every layer of the model ({shown}) has the same features for every stimulus "
                        "(the model side is constant, not the brain signal), so nothing can be scored; check the "
                        "model's weights (e.g. an all-zero --weights-file).")
    data = np.asarray(responses, dtype=np.float64)
    if data.ndim == 2 and data.shape[0] >= 2 and data.shape[1] and bool((np.ptp(data, axis=0) == 0).all()):
        raise DataError(f"{metric}: every site has a constant response over stimuli (the brain side: the signal's "
                        "responses are the same for every stimulus), so nothing can be scored; check the signal.")
    if const:
        import logging

        logging.getLogger(f"framework.metrics.{metric}").warning(
            "%s: layer(s) %s of the model have the same features for every stimulus (the model side); their "
            "scores are undefined (NaN).", metric, shown)
    return const
