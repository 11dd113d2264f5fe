"""Linear centred kernel alignment (CKA) with the unbiased HSIC estimator.

For a layer's activations ``X`` (n_stimuli, n_features) and one area's
responses ``Y`` (n_stimuli, n_sites_in_area), with linear kernels
``K = X X^T`` and ``L = Y Y^T`` whose diagonals are set to zero (``K~``,
``L~``), the unbiased HSIC (Song et al. 2012, JMLR 13; used for CKA by
Nguyen, Raghu & Kornblith 2021) is::

    HSIC(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2))
                   - 2 / (n - 2) * 1^T K~ L~ 1 ] / (n (n - 3))

and ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. The estimator is
unbiased for the population HSIC, so CKA is not inflated for small n or wide
layers (unlike the biased estimator) and can be slightly negative. Features and
responses are centred first (the estimator is invariant to that; it only helps
rounding); Gram matrices are accumulated in float64, in blocks of features, by
:func:`framework.numerics.gram.centered_gram` (one per layer and area, over all
stimuli). The HSIC of a subset of stimuli is the estimator applied to the
subset's rows and columns of those Gram matrices (the invariance to centring
makes the full-set centring harmless).

Choosing the layer (``DESIGN.md``, "Conventions the defaults follow"; shared code in
:mod:`framework.numerics.layers`)
------------------------------------------------------------------------------------
* ``selection="heldout"`` (default): a layer is committed on data separate from
  the data it is scored on (Brain-Score; Schrimpf et al. 2018). The stimuli are
  split into ``n_splits`` seeded K folds (default 2: split-halves;
  :func:`framework.numerics.splits.kfold_splits`, seed = the run's seed),
  stratified by category when labels are known (``activations.info["labels"]``,
  else ``target.info["labels"]``). In every fold and
  area the layer with the highest CKA on the *training* stimuli is committed
  (:func:`framework.numerics.layers.heldout_choice`) and its CKA on the *held-out*
  stimuli (unbiased HSIC on each part) is read; the area's score is the mean over
  folds. With targets unrelated to the network it is ~0 on average.
* ``selection="optimistic"``: the maximum over the competing layers of the CKA
  on all stimuli (the layer is chosen on the data it is scored on: biased upward,
  most for models with many layers and for noisy areas). Always reported in the
  summary as ``value_optimistic`` (per area: ``cka_optimistic``).
* ``pixels`` is a baseline, not a layer choice (:data:`framework.numerics.layers.BASELINE_LAYERS`):
  it does not compete unless ``include_pixels=True``; its score on the same
  footing as the headline (mean over folds of its held-out CKA, or its CKA on all
  stimuli for ``"optimistic"``) is in ``summary["baseline"]``.

Headline
--------
``Score.value``: mean over the areas of ``target.area_order`` that have sites
(all areas but ``"n/a"`` when none has) of the area's score under ``selection``;
other areas are scored in the details only.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import ConfigError, DataError
from framework.layer_stats import Need
from framework.numerics.areas import area_groups
from framework.numerics.gram import centered_gram
from framework.numerics.layers import BASELINE_LAYERS, candidate_layers, check_constant_sides, heldout_choice
from framework.numerics.splits import kfold_splits
from framework.numerics.stimuli import stimulus_labels, stimulus_order
from framework.params import PluginParams, param
from framework.types import Activations, Dataset, Responses, Score, Target
from framework.validation import check_array

log = logging.getLogger("framework.metrics.cka")

#: The unbiased HSIC needs at least this many stimuli (its normaliser is n (n - 3)).
MIN_STIMULI = 4


class _HSICKernel:
    """A Gram matrix prepared for the unbiased HSIC: zero diagonal, row sums, total."""

    def __init__(self, gram: np.ndarray) -> None:
        k = np.array(gram, dtype=np.float64, copy=True)
        np.fill_diagonal(k, 0.0)
        self.k = k
        self.rows = k.sum(axis=1)  # (n,) = K~ 1
        self.total = float(self.rows.sum())  # 1^T K~ 1
        self.n = k.shape[0]


def unbiased_hsic(a: _HSICKernel, b: _HSICKernel) -> float:
    """Unbiased HSIC estimate between two prepared kernels (see module docstring); float64."""
    n = a.n
    trace = float(np.einsum("ij,ij->", a.k, b.k))  # tr(K~ L~), both symmetric
    value = trace + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.rows @ b.rows)
    return value / (n * (n - 3))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC between two representations of the same stimuli.

    Parameters
    ----------
    x : ndarray, (n_stimuli, n_features)
    y : ndarray, (n_stimuli, n_sites)
        ``n_stimuli >= 4``.

    Returns
    -------
    float
        In [-1, 1] up to estimation noise; NaN when either side has no variance.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] < MIN_STIMULI:
        raise DataError(f"Linear CKA needs the same n_stimuli >= 4 on both sides, got {x.shape} and {y.shape}.")
    kx, ky = _HSICKernel(centered_gram(x)), _HSICKernel(centered_gram(y))
    return _cka(kx, ky, unbiased_hsic(kx, kx), unbiased_hsic(ky, ky))


def _cka(kx: _HSICKernel, ky: _HSICKernel, hxx: float, hyy: float) -> float:
    denom = hxx * hyy
    if not denom > 0:
        return float("nan")
    return unbiased_hsic(kx, ky) / float(np.sqrt(denom))


class _Part:
    """A Gram matrix restricted to a subset of stimuli, prepared for the unbiased HSIC, with its self-HSIC."""

    def __init__(self, gram: np.ndarray, index: np.ndarray | None = None) -> None:
        self.kernel = _HSICKernel(gram if index is None else gram[np.ix_(index, index)])
        self.self_hsic = unbiased_hsic(self.kernel, self.kernel)

    def cka(self, other: _Part) -> float:
        return _cka(self.kernel, other.kernel, self.self_hsic, other.self_hsic)


def _none(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


class CKAParams(PluginParams):
    """Parameters of the cka metric (names shared with the rsa metric: ``selection``, ``include_pixels``)."""

    selection: Literal["heldout", "optimistic"] = param(
        "heldout", "headline layer per area: committed on training folds and scored on held-out folds "
        "(heldout; Brain-Score), or the max over layers on the same stimuli (optimistic: biased upward)")
    n_splits: int = param(2, "K folds of the stimuli for the held-out layer choice (2: split-halves; stratified "
                          "by category when labels are known); each held-out fold needs >= 4 stimuli", ge=2)
    include_pixels: bool = param(False, "let the pixels baseline compete for the best layer (default: pixels is "
                                 "a baseline, reported beside the headline)")


class CKAMetric(MetricPlugin):
    """Linear CKA (unbiased HSIC) between each layer and each brain area.

    Parameters
    ----------
    selection : {"heldout", "optimistic"}, default "heldout"
        How the layer of each area is chosen for the headline: committed on the
        training stimuli of each of ``n_splits`` folds and scored on its held-out
        stimuli, averaged over folds (Brain-Score's convention, ``DESIGN.md``); or
        the maximum over layers on all stimuli ("optimistic", labelled so).
    n_splits : int, default 2
        Folds K (seeded by the run's seed; stratified by stimulus category when
        labels are known). Each held-out fold needs at least 4 stimuli. The
        default, split-halves, keeps the held-out CKA on as many stimuli as
        possible: CKA is a ratio of HSIC estimates over stimulus *pairs*, so small
        held-out folds make it noisy and biased toward 0 (on the demo, 100
        stimuli, over 20 seeds: K = 2, 5, 10 gave 0.252 +- 0.009, 0.245 +- 0.014,
        0.236 +- 0.023 for tf_efficientnet_lite0).
    include_pixels : bool, default False
        Let ``pixels`` compete for the best layer; by default it is a baseline
        reported in ``summary["baseline"]``.

    For every layer and every area with sites, the layer's activations
    (n_stimuli, n_features) are compared with the area's responses
    (n_stimuli, n_sites_in_area); see the module docstring for the procedure.

    Details: ``"layer_area"`` (CKA on all stimuli: ``layer, layer_index, area,
    n_sites, cka``); ``"area"`` (``area, n_sites, best_layer, best_layer_index,
    best_layer_agreement, cka, cka_heldout, cka_optimistic, optimistic_layer,
    in_headline, pixels_cka``; ``cka`` is the value under ``selection``, ``pixels_cka``
    the baseline on the same footing;
    ``best_layer`` is the most frequent per-fold choice for ``"heldout"`` (its
    fraction of folds: ``agreement``; ties go to the higher CKA on all stimuli),
    the argmax for ``"optimistic"``); and
    ``"fold_area"`` (``fold, area, layer, layer_index, train_cka, test_cka``).
    Missing values (a side without variance) are None.
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = ("Mean over visual areas of the linear CKA (unbiased HSIC) with the area's sites of the "
                               "layer committed on training folds, on held-out folds (selection='optimistic': "
                               "best layer on all stimuli); pixels is a baseline")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("layer_area", "cka", "linear CKA (unbiased HSIC) of the layer with the area's sites"),
    )
    plugin_version = "2"

    Params = CKAParams
    name = "cka"

    def parameters(self) -> dict[str, Any]:
        """The declared parameters plus the fixed kernel and estimator, which identify the scores."""
        return {**super().parameters(), "kernel": "linear", "hsic": "unbiased"}

    def needs(self, dataset: Dataset, *, seed: int = 0) -> list[Need]:
        """The linear kernel of each layer: the Gram matrix of its centred features."""
        return [Need.gram(centered=True)]

    def check(self, dataset: Dataset) -> None:
        """Refuse folds the dataset's stimuli cannot give (before any computation): every held-out
        fold needs at least 4 stimuli (the unbiased HSIC), so ``n_splits <= n // 4``."""
        n = len(dataset.stimuli)
        k, top = self.params.n_splits, n // MIN_STIMULI
        if top < 2:
            raise ConfigError(f"cka: dataset '{dataset.name}' has {n} stimuli; two held-out folds of >= "
                              f"{MIN_STIMULI} stimuli (the unbiased HSIC) need at least {2 * MIN_STIMULI}; use a "
                              "dataset with more stimuli or another metric.")
        if k > top:
            raise ConfigError(f"cka: n_splits={k} does not fit dataset '{dataset.name}' ({n} stimuli): held-out "
                              f"folds of {n // k if k <= n else 0} stimuli are too small for the unbiased HSIC "
                              f"(needs >= {MIN_STIMULI}); set --metric-param cka.n_splits=K with K from 2 to {top}.")

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        """Score all layers against all areas; ``seed`` seeds the folds of the held-out layer choice."""
        if not isinstance(target, Responses):
            raise DataError(f"The cka metric scores responses (n_stimuli, n_sites), got {type(target).__name__}; "
                            "use a signal that produces responses.")
        p = self.params
        order = stimulus_order(activations.stimulus_ids, target.stimulus_ids, allow_extra=False, target="responses",
                               fix="Extract activations for the dataset the signal was computed on.")
        data = check_array(target.data, "responses", ndim=2, fix="Responses must be finite; fix the signal.")
        n = data.shape[0]
        if n < MIN_STIMULI:
            raise DataError(f"CKA needs at least {MIN_STIMULI} stimuli, got {n}.")
        if len(activations) == 0:
            raise DataError("Activations have no layers; extract at least one layer.")
        candidates = candidate_layers(activations.layers, include_baselines=p.include_pixels, metric="cka")
        check_constant_sides("cka", activations, data, rows=order)
        splits, stratified = kfold_splits(n, n_splits=p.n_splits, seed=seed,
                                          labels=stimulus_labels(activations, target, metric="cka"))
        smallest = min(te.size for _, te in splits)
        if smallest < MIN_STIMULI:
            raise DataError(f"Held-out folds of {smallest} stimuli are too small for the unbiased HSIC (needs >= "
                            f"{MIN_STIMULI}); lower --metric-param cka.n_splits (now {p.n_splits}) to at most "
                            f"{n // MIN_STIMULI} or use more stimuli.")
        groups, headline_areas = area_groups(target)
        areas = list(groups)
        area_parts = {}
        for area, idx in groups.items():
            g = centered_gram(data[:, idx])
            area_parts[area] = (_Part(g), [(_Part(g, tr), _Part(g, te)) for tr, te in splits])

        layers = activations.layers
        n_layers, n_folds, n_areas = len(layers), len(splits), len(areas)
        full = np.full((n_layers, n_areas), np.nan)              # CKA on all stimuli
        train = np.full((n_areas, n_folds, n_layers), np.nan)    # CKA on each fold's training stimuli
        test = np.full((n_areas, n_folds, n_layers), np.nan)     # ... and on its held-out stimuli
        rows: dict[str, list] = {"layer": [], "layer_index": [], "area": [], "n_sites": [], "cka": []}
        for li, layer in enumerate(activations.layers):
            # (n, n) float64 in target order: the target has exactly the activations' stimuli, so the cached
            # Gram matrix of the features centred over them is this layer's linear kernel
            g, _ = activations.gram(layer, center=True, rows=order, check_finite=False)
            whole = _Part(g)
            folds = [(_Part(g, tr), _Part(g, te)) for tr, te in splits]
            for ai, area in enumerate(areas):
                area_whole, area_folds = area_parts[area]
                full[li, ai] = whole.cka(area_whole)
                for f, ((ltr, lte), (atr, ate)) in enumerate(zip(folds, area_folds)):
                    train[ai, f, li] = ltr.cka(atr)
                    test[ai, f, li] = lte.cka(ate)
                rows["layer"].append(layer)
                rows["layer_index"].append(li)
                rows["area"].append(area)
                rows["n_sites"].append(int(groups[area].size))
                rows["cka"].append(_none(full[li, ai]))
            log.debug("cka: layer %s done", layer)

        baselines = [li for li, name in enumerate(layers) if name in BASELINE_LAYERS]
        area_rows: dict[str, list] = {k: [] for k in (
            "area", "n_sites", "best_layer", "best_layer_index", "best_layer_agreement", "cka", "cka_heldout",
            "cka_optimistic", "optimistic_layer", "in_headline")}
        for b in baselines:  # one column per baseline layer, e.g. pixels_cka
            area_rows[f"{layers[b]}_cka"] = []
        fold_rows: dict[str, list] = {k: [] for k in ("fold", "area", "layer", "layer_index", "train_cka",
                                                      "test_cka")}
        heldout_of, optimistic_of, baseline_of = {}, {}, {}
        for ai, area in enumerate(areas):
            chosen, heldout = heldout_choice(train[ai], test[ai], candidates)       # (F,), (F,)
            heldout_of[area] = _mean(list(heldout))
            col = full[candidates, ai]
            opt = int(candidates[np.nanargmax(col)]) if np.isfinite(col).any() else -1
            optimistic_of[area] = float(full[opt, ai]) if opt >= 0 else float("nan")
            # the baseline on the same footing as the headline: held-out folds, or all stimuli
            baseline_of[area] = {layers[b]: (_mean(list(test[ai, :, b])) if p.selection == "heldout"
                                             else float(full[b, ai])) for b in baselines}
            if p.selection == "heldout":
                counts = np.bincount(chosen[chosen >= 0], minlength=n_layers)
                best, agreement, value = -1, None, heldout_of[area]
                if counts.sum():
                    # the most frequent choice; a tie (e.g. two halves disagreeing) goes to the higher CKA on all
                    # stimuli (descriptive only: the headline is the per-fold held-out values)
                    tied = np.flatnonzero(counts == counts.max())
                    best = int(tied[np.argmax(np.where(np.isfinite(full[tied, ai]), full[tied, ai], -np.inf))])
                    agreement = float(counts[best] / n_folds)
            else:
                best, agreement, value = opt, None, optimistic_of[area]
            area_rows["area"].append(area)
            area_rows["n_sites"].append(int(groups[area].size))
            area_rows["best_layer"].append(layers[best] if best >= 0 else None)
            area_rows["best_layer_index"].append(best)
            area_rows["best_layer_agreement"].append(agreement)
            area_rows["cka"].append(_none(value))
            area_rows["cka_heldout"].append(_none(heldout_of[area]))
            area_rows["cka_optimistic"].append(_none(optimistic_of[area]))
            area_rows["optimistic_layer"].append(layers[opt] if opt >= 0 else None)
            for name, v in baseline_of[area].items():
                area_rows[f"{name}_cka"].append(_none(v))
            area_rows["in_headline"].append(area in headline_areas)
            for f in range(n_folds):
                c = int(chosen[f])
                fold_rows["fold"].append(f)
                fold_rows["area"].append(area)
                fold_rows["layer"].append(layers[c] if c >= 0 else None)
                fold_rows["layer_index"].append(c)
                fold_rows["train_cka"].append(_none(train[ai, f, c]) if c >= 0 else None)
                fold_rows["test_cka"].append(_none(heldout[f]))

        value_heldout = _mean([heldout_of[a] for a in headline_areas])
        value_optimistic = _mean([optimistic_of[a] for a in headline_areas])
        pos = {a: i for i, a in enumerate(areas)}
        baseline = {layers[b]: {"value": _none(_mean([baseline_of[a][layers[b]] for a in headline_areas])),
                                "per_area": {a: _none(baseline_of[a][layers[b]]) for a in areas}}
                    for b in baselines}
        summary: dict[str, Any] = {
            "selection": p.selection,
            "selection_rule": ("layer committed per area on the training stimuli of each fold, CKA on its "
                               "held-out stimuli, mean over folds" if p.selection == "heldout" else
                               "best layer per area on all stimuli (optimistic: chosen on the data it is "
                               "scored on)"),
            "value_heldout": _none(value_heldout),
            "value_optimistic": _none(value_optimistic),
            "best_layer": {a: area_rows["best_layer"][pos[a]] for a in areas},
            "best_layer_optimistic": {a: area_rows["optimistic_layer"][pos[a]] for a in areas},
            "baseline": baseline,
            "candidate_layers": [layers[i] for i in candidates],
            "include_pixels": p.include_pixels,
            "headline_areas": list(headline_areas),
            "n_splits": n_folds, "stratified": stratified,
            "n_stimuli": int(n), "n_sites": int(sum(len(v) for v in groups.values())),
        }
        return Score(value=value_heldout if p.selection == "heldout" else value_optimistic,
                     details={"layer_area": rows, "area": area_rows, "fold_area": fold_rows},
                     summary=summary, higher_is_better=True)
