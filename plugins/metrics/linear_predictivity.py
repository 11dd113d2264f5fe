"""Neural predictivity: cross-validated linear regression from a layer to every site.

Procedure (one score per model and signal)
-------------------------------------------
1. Outer folds: ``n_splits`` seeded K folds of the stimuli (default 10, i.e.
   90/10 splits where every stimulus is held out exactly once), stratified by
   category when labels are known (``activations.info["labels"]``, else
   ``target.info["labels"]``; ``stratify=False`` turns it off).
2. For every layer and fold: features are z-scored with the training fold's
   mean and standard deviation (``standardize=True``; constant features stay
   0), then

   * ``regression="ridge"``: ridge with an unpenalised intercept and one
     penalty per site chosen from ``alphas`` on the training fold only, by
     exact leave-one-out (``alpha_selection="gcv"``) or ``inner_splits``-fold
     CV (``"inner-cv"``); one decomposition per fold serves the whole grid,
     and layers wider than the training fold use the stimulus x stimulus
     kernel: the layer is read once in blocks of features and every fold's
     z-scored kernel is accumulated from each block (:func:`framework.numerics.gram.fold_grams`;
     cost O(K n^2 p + K n^3), memory O(K n^2) plus one block);
   * ``regression="pls"``: ``sklearn.cross_decomposition.PLSRegression(
     n_components=pls_components, scale=False)`` fitted on all sites jointly
     (Brain-Score's regression; set ``standardize=False`` for strict parity).

3. Pearson r per site between the held-out predictions and responses of each
   fold; a site's r is the mean over folds (as Brain-Score: per-split r, then
   mean). A layer's curve value in an area is the median over the area's sites.
4. Best layer, chosen without peeking (``DESIGN.md``, "Conventions the defaults
   follow": a layer is committed on data separate from the data it is scored on,
   as Brain-Score does; :func:`framework.numerics.layers.heldout_choice`): in every
   outer fold the layer of each area is the one whose *training-fold*
   out-of-sample predictions (LOO or inner-CV predictions at the chosen
   penalties; inner CV for PLS) have the highest median r over the area's sites.
   The area's score is the median over its sites of the mean over folds of the
   held-out r of the layer chosen in each fold. With pure-noise targets it is
   therefore ~0, not the maximum of noisy curve values. ``pixels`` is a baseline,
   not a layer choice (:data:`framework.numerics.layers.BASELINE_LAYERS`): it does
   not compete unless ``include_pixels=True``, and its held-out score (the
   ``layer_area`` curve value: median over sites of the mean over folds of r) is
   reported per area (``pixels_r``) and as a headline (``summary["baseline"]``).
5. Noise ceiling, when ``target.repetitions`` exists: split-half reliability
   per site, ``ceiling_splits`` seeded random splits, Spearman-Brown corrected
   (see :mod:`framework.numerics.ceiling`); an area's ceiling is the median over
   its sites; ``ceiled = raw / area ceiling`` (Brain-Score's convention; the
   attainable r of a perfect model is sqrt(ceiling), so ceiled values may
   exceed 1).

Headline
--------
``Score.value`` is the mean, over the areas of ``target.area_order`` that have
sites (all areas but ``"n/a"`` when none has), of the area's best-layer score
(raw r, so it means the same with and without repetitions). ``Score.ceiling``
is the mean of those areas' ceilings; ``summary["value_ceiled"]`` the mean of
their ceiled scores. Areas outside ``area_order`` are scored in the details but
not in the headline.

Details tables: ``layer_area`` (the per-layer curve: ``layer, layer_index,
area, n_sites, r, ceiling, r_ceiled``), ``layer_site`` (``layer, layer_index,
site, area, r, alpha, ceiling``; ``alpha`` is the geometric mean over folds),
``area`` (``area, n_sites, best_layer, best_layer_index, best_layer_agreement,
r, ceiling, r_ceiled, in_headline``; ``best_layer`` is the most frequent
per-fold choice and ``agreement`` its fraction of folds) and ``fold_area``
(``fold, area, layer, layer_index, train_r, test_r``). ``area`` also has one column per
baseline layer (``pixels_r``). Missing values are None.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import field_validator

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import ConfigError, DataError
from framework.layer_stats import Need
from framework.numerics.areas import area_groups
from framework.numerics.ceiling import split_half_reliability
from framework.numerics.gram import standardized
from framework.numerics.layers import BASELINE_LAYERS, candidate_layers, check_constant_sides, heldout_choice
from framework.numerics.ridge import DEFAULT_ALPHAS, fit_predict
from framework.numerics.splits import kfold_splits
from framework.numerics.stats import pearson_columns
from framework.numerics.stimuli import stimulus_labels, stimulus_order
from framework.params import PluginParams, param
from framework.types import Activations, Dataset, Responses, Score, Target
from framework.validation import check_array

log = logging.getLogger("framework.metrics.linear_predictivity")


def _nan_stat(fn, x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(x, axis=axis)


def _none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _check_finite(x: np.ndarray, layer: str) -> None:
    if not np.isfinite(np.asarray(x).sum(axis=0, dtype=np.float64)).all():
        raise DataError(f"Layer '{layer}' has NaN/inf activations; re-extract it (clear the cache).")


#: Stimuli a training fold needs at least.
MIN_TRAIN = 4
#: Stimuli a held-out fold needs at least (a correlation over its stimuli).
MIN_TEST = 3


def _min_train(n: int, k: int) -> int:
    """Stimuli in the smallest training fold of ``k`` folds of ``n`` (the largest fold, ceil(n/k), held out)."""
    return n - -(-n // k)


def _edge_layers(at_edge: np.ndarray, layers: list[str], n: int = 3) -> str:
    """The layers that chose a penalty at the grid's edge most often, with their share of (fold, site) choices.

    ``at_edge`` (n_layers, n_folds, n_sites) bool; gives e.g. ``'conv1' 95%, 'conv2' 80% (+3 more)``.
    """
    share = at_edge.reshape(len(layers), -1).mean(axis=1)                        # (n_layers,)
    order = [int(i) for i in np.argsort(-share, kind="stable") if share[i] > 0]
    shown = ", ".join(f"'{layers[i]}' {100 * share[i]:.0f}%" for i in order[:n])
    return shown + (f" (+{len(order) - n} more)" if len(order) > n else "")


@contextlib.contextmanager
def _quiet_splits():
    """Silence the fold-drawing messages at plan time (they are logged when the cell is scored)."""
    logger = logging.getLogger("framework.numerics.splits")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class LinearPredictivityParams(PluginParams):
    """Parameters of the linear-predictivity metric (defaults: Brain-Score's 10 stratified folds)."""

    n_splits: int = param(10, "outer K folds of the stimuli (10: 90/10 splits, each stimulus held out once)",
                          ge=2)
    regression: Literal["ridge", "pls"] = param("ridge", "ridge (one penalty per site) or PLS (Brain-Score)")
    alphas: list[float] = param([float(a) for a in DEFAULT_ALPHAS],
                                "ridge penalty grid on z-scored features (default 19 values, 1e-3 ... 1e6)",
                                min_length=1)
    alpha_selection: Literal["gcv", "inner-cv"] = param(
        "gcv", "penalty per site on the training fold: exact leave-one-out (gcv) or inner K-fold CV")
    inner_splits: int = param(5, "inner folds for alpha_selection='inner-cv' and for PLS layer choice", ge=2)
    pls_components: int = param(25, "PLS components (Brain-Score: 25)", ge=1)
    standardize: bool = param(True, "z-score features with the training fold's mean and SD")
    stratify: bool = param(True, "stratify folds by stimulus category when labels are known")
    ceiling_splits: int = param(10, "random split-halves averaged for the noise ceiling", ge=1)
    include_pixels: bool = param(False, "let the pixels baseline compete for the best layer (default: pixels is "
                                 "a baseline, reported beside the headline)")

    @field_validator("alphas")
    @classmethod
    def _positive(cls, alphas: list[float]) -> list[float]:
        if any(not a > 0 for a in alphas):
            raise ValueError(f"every penalty must be > 0, got {alphas}")
        return alphas


class LinearPredictivityMetric(MetricPlugin):
    """Cross-validated linear predictivity of every site from every layer (Brain-Score style).

    Parameters
    ----------
    n_splits : int, default 10
        Outer K-fold folds (each held-out fold ~1/K of the stimuli).
    regression : {"ridge", "pls"}, default "ridge"
    alphas : sequence of float, default ``np.logspace(-3, 6, 19)``
        Ridge penalty grid (features are z-scored, so penalties are in units of
        one unit-variance feature). ``summary["alpha_at_lower_edge_fraction"]``
        and ``["alpha_at_upper_edge_fraction"]`` tell how often the grid's ends
        were chosen (upper end: sites the layer cannot predict, or a layer so wide
        that it needs a larger penalty; then extend the grid).
    alpha_selection : {"gcv", "inner-cv"}, default "gcv"
        Exact leave-one-out, or ``inner_splits``-fold CV on the training fold.
    inner_splits : int, default 5
        Inner folds for ``"inner-cv"`` and for ranking layers with PLS.
    pls_components : int, default 25
        PLS components (capped at n_train - 1 and the number of non-constant features).
    standardize : bool, default True
        z-score features with training-fold statistics (always centred).
    stratify : bool, default True
        Stratify folds by stimulus category when labels are known.
    ceiling_splits : int, default 10
        Random split-halves averaged for the noise ceiling.
    include_pixels : bool, default False
        Let ``pixels`` compete for the best layer; by default it is a baseline whose
        held-out score is reported in ``summary["baseline"]`` (``DESIGN.md``).

    See the module docstring for the exact procedure and the headline.
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = ("Mean over visual areas of the median held-out Pearson r over sites of the best layer "
                               "(chosen on training folds; pixels is a baseline); raw r, ceiling reported alongside")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("layer_area", "r", "median over the area's sites of the held-out Pearson r"),
    )
    plugin_version = "2"

    Params = LinearPredictivityParams
    name = "linear-predictivity"

    @property
    def alphas(self) -> np.ndarray:
        """The ridge penalty grid, (n_alphas,) float64."""
        return np.asarray(self.params.alphas, dtype=np.float64)

    # -- one layer ---------------------------------------------------------------------------
    def _layer(self, activations: Activations, layer: str, y: np.ndarray, splits: list,
               labels: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Held-out and training-fold r per fold and site, and the chosen penalties.

        ``activations`` are in target order. Wide folds (more features than training stimuli)
        are fitted from the layer's per-fold z-scored Gram matrices, narrow ones from its
        features. Returns r_test, r_train, alpha, each (n_folds, n_sites) float64 (alpha NaN for PLS).
        """
        n_folds, n_sites = len(splits), y.shape[1]
        r_test = np.empty((n_folds, n_sites))
        r_train = np.empty((n_folds, n_sites))
        alpha = np.full((n_folds, n_sites), np.nan)
        p = activations.n_features(layer)
        wide = [self.params.regression == "ridge" and p > train.size for train, _ in splits]
        xf = None
        if any(wide):  # wide layer: kernels of every fold from one blockwise pass over the layer (or the cache)
            grams = activations.fold_grams(layer, [s[0] for s, w in zip(splits, wide) if w],
                                           standardize=self.params.standardize)
            gram_of = {f: g for f, g in zip(np.flatnonzero(wide), grams)}
        if not all(wide):
            xf = np.asarray(activations[layer], dtype=np.float64)  # converted once for all folds
            _check_finite(xf, layer)
        for f, (train, test) in enumerate(splits):  # K folds; each vectorised over sites
            inner_seed = seed + 1 + f
            fold_labels = None if labels is None else labels[train]
            if wide[f]:
                g = gram_of[f]
                res = fit_predict(g[np.ix_(train, train)], y[train], g[np.ix_(test, train)], alphas=self.alphas,
                                  selection=self.params.alpha_selection, inner_splits=self.params.inner_splits,
                                  seed=inner_seed, labels=fold_labels, precomputed=True)
            else:
                xs = standardized(xf, train, standardize=self.params.standardize)
                if self.params.regression == "ridge":
                    res = fit_predict(xs[train], y[train], xs[test], alphas=self.alphas,
                                      selection=self.params.alpha_selection, inner_splits=self.params.inner_splits,
                                      seed=inner_seed, labels=fold_labels, method="svd")
                else:
                    pred_test = self._pls(xs[train], y[train], xs[test])
                    inner, _ = kfold_splits(train.size, n_splits=self.params.inner_splits, seed=inner_seed,
                                            labels=fold_labels, name="inner_splits")
                    pred_train = np.empty((train.size, n_sites))
                    xtr, ytr = xs[train], y[train]
                    for itr, ite in inner:
                        pred_train[ite] = self._pls(xtr[itr], ytr[itr], xtr[ite])
                    r_test[f] = pearson_columns(pred_test, y[test])
                    r_train[f] = pearson_columns(pred_train, y[train])
                    continue
            r_test[f] = pearson_columns(res.test_predictions, y[test])
            r_train[f] = pearson_columns(res.train_predictions, y[train])
            alpha[f] = res.alpha
        return r_test, r_train, alpha

    def _pls(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        from sklearn.cross_decomposition import PLSRegression

        # components beyond the rank are degenerate: cap at n_train - 1 and the non-constant features
        spread = x_train.max(axis=0) - x_train.min(axis=0)
        n_varying = int((spread > 1e3 * np.finfo(np.float64).eps * np.abs(x_train).max(axis=0)).sum())
        n_comp = max(1, min(self.params.pls_components, x_train.shape[0] - 1, n_varying))
        model = PLSRegression(n_components=n_comp, scale=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant targets / exhausted components warn
            model.fit(x_train, y_train)
            return np.asarray(model.predict(x_test), dtype=np.float64).reshape(x_test.shape[0], -1)

    # -- plan-time check ------------------------------------------------------------------------
    def needs(self, dataset: Dataset, *, seed: int = 0) -> list[Need]:
        """Per-fold z-scored Gram matrices (wide layers) and features (layers narrower than a training fold).

        The folds are those :meth:`score` draws for a target over the dataset's stimuli in the
        dataset's order (same seed and category labels); PLS regression needs the features.
        """
        if self.params.regression == "pls":
            return [Need.features()]
        labels = dataset.stimuli.labels if self.params.stratify else None
        if labels is not None and any(label is None for label in labels):
            labels = None
        with _quiet_splits():
            splits, _ = kfold_splits(len(dataset.stimuli), n_splits=self.params.n_splits, seed=seed,
                                     labels=None if labels is None else np.asarray(labels).astype(str))
        trains = [train for train, _ in splits]
        return [Need.fold_grams(trains, standardize=self.params.standardize),
                Need.features(max_width=max(t.size for t in trains))]

    def check(self, dataset: Dataset) -> None:
        """Refuse folds the dataset's stimuli cannot give (before any computation).

        Every outer training fold needs at least 4 stimuli (``n - ceil(n / n_splits) >= 4``) and
        every held-out fold at least 3 (``n // n_splits >= 3``: the held-out correlation of a site
        is over its stimuli), so ``n_splits`` is bounded on both sides by the number of stimuli;
        the inner folds (``alpha_selection="inner-cv"`` or PLS) must fit in the smallest training fold.
        """
        n = len(dataset.stimuli)
        k = self.params.n_splits
        ok = [j for j in range(2, n + 1) if _min_train(n, j) >= MIN_TRAIN and n // j >= MIN_TEST]
        name = self.name
        if not ok:
            raise ConfigError(f"{name}: dataset '{dataset.name}' has {n} stimuli, too few for cross-validated "
                              f"regression (training folds need >= {MIN_TRAIN} stimuli and held-out folds >= "
                              f"{MIN_TEST}, i.e. at least {MIN_TRAIN + MIN_TEST + 1} stimuli); use a dataset with more "
                              "stimuli or another metric.")
        if k not in ok:
            if k > n:
                why = f"{k} folds need at least {k} stimuli"
            elif n // k < MIN_TEST:
                why = f"held-out folds of {n // k} stimuli are too few for a correlation (needs >= {MIN_TEST})"
            else:
                why = f"{k} folds leave training folds of {_min_train(n, k)} stimuli (needs >= {MIN_TRAIN})"
            raise ConfigError(f"{name}: n_splits={k} does not fit dataset '{dataset.name}' ({n} stimuli): {why}; "
                              f"set --metric-param {name}.n_splits=K with K from {ok[0]} to {ok[-1]}.")
        inner = self.params.inner_splits
        uses_inner = self.params.regression == "pls" or self.params.alpha_selection == "inner-cv"
        if uses_inner and inner > _min_train(n, k):
            raise ConfigError(f"{name}: inner_splits={inner} folds do not fit the smallest training fold "
                              f"({_min_train(n, k)} of the {n} stimuli of dataset '{dataset.name}' with "
                              f"n_splits={k}); set --metric-param {name}.inner_splits=K with K from 2 to "
                              f"{_min_train(n, k)}.")

    # -- the score ----------------------------------------------------------------------------
    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        """Score every layer against every site; see the module docstring."""
        if not isinstance(target, Responses):
            raise DataError(f"The linear-predictivity metric scores responses (n_stimuli, n_sites), got "
                            f"{type(target).__name__}; use a signal that produces responses.")
        if len(activations) == 0:
            raise DataError("Activations have no layers; extract at least one layer.")
        order = stimulus_order(activations.stimulus_ids, target.stimulus_ids, allow_extra=False, target="responses",
                               fix="Extract activations for the dataset the signal was computed on.")
        y = check_array(target.data, "responses", ndim=2, dtype=np.float64,
                        fix="Responses must be finite; fix the signal or drop the sites.")
        n, n_sites = y.shape
        candidate_layers(activations.layers, include_baselines=self.params.include_pixels,
                         metric="linear-predictivity")
        const = check_constant_sides("linear-predictivity", activations, y, rows=order)
        labels = stimulus_labels(activations, target, metric="linear-predictivity") if self.params.stratify else None
        splits, stratified = kfold_splits(n, n_splits=self.params.n_splits, seed=seed, labels=labels)
        if min(tr.size for tr, _ in splits) < MIN_TRAIN:
            raise DataError(f"Training folds of {min(tr.size for tr, _ in splits)} stimuli are too small; "
                            f"use more stimuli or fewer folds (n_splits={self.params.n_splits}).")
        groups, headline_areas = area_groups(target)
        ceiling = None
        if target.repetitions is not None:
            ceiling = split_half_reliability(target.repetitions, n_splits=self.params.ceiling_splits, seed=seed).ceiling

        layers = activations.layers
        n_layers, n_folds = len(layers), len(splits)
        r_test = np.empty((n_layers, n_folds, n_sites))
        r_train = np.empty((n_layers, n_folds, n_sites))
        alphas = np.empty((n_layers, n_folds, n_sites))
        acts = activations if order is None else activations.select(order, target.stimulus_ids, activations.info)
        for li, layer in enumerate(layers):  # finiteness is checked while reading
            if layer in const:  # no prediction from features equal for every stimulus: undefined (warned above)
                r_test[li] = r_train[li] = alphas[li] = np.nan
                continue
            r_test[li], r_train[li], alphas[li] = self._layer(acts, layer, y, splits, labels, seed)
            log.debug("linear-predictivity: layer %s done", layer)
        return self._assemble(layers, target, groups, headline_areas, r_test, r_train, alphas, ceiling,
                              stratified, n)

    def _assemble(self, layers: tuple[str, ...], target: Responses, groups: dict[str, np.ndarray],
                  headline_areas: tuple[str, ...], r_test: np.ndarray, r_train: np.ndarray,
                  alphas: np.ndarray, ceiling: np.ndarray | None, stratified: bool, n: int) -> Score:
        n_layers, n_folds, n_sites = r_test.shape
        site_r = _nan_stat(np.nanmean, r_test, 1)  # (L, J)
        area_names = list(groups)
        area_ceiling = {a: (float(_nan_stat(np.nanmedian, ceiling[idx], 0)) if ceiling is not None else np.nan)
                        for a, idx in groups.items()}

        def ceiled(value: float, area: str) -> float:
            c = area_ceiling[area]
            return value / c if np.isfinite(c) and c > 0 else np.nan

        curve: dict[str, list] = {k: [] for k in ("layer", "layer_index", "area", "n_sites", "r", "ceiling",
                                                  "r_ceiled")}
        for li, layer in enumerate(layers):
            for a, idx in groups.items():
                value = float(_nan_stat(np.nanmedian, site_r[li, idx], 0))
                curve["layer"].append(layer)
                curve["layer_index"].append(li)
                curve["area"].append(a)
                curve["n_sites"].append(int(idx.size))
                curve["r"].append(_none(value))
                curve["ceiling"].append(_none(area_ceiling[a]))
                curve["r_ceiled"].append(_none(ceiled(value, a)))

        site_table: dict[str, list] = {k: [] for k in ("layer", "layer_index", "site", "area", "r", "alpha",
                                                       "ceiling")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            geo_alpha = np.exp(np.nanmean(np.log(alphas), axis=1))  # (L, J); NaN for PLS
        for li, layer in enumerate(layers):
            site_table["layer"].extend([layer] * n_sites)
            site_table["layer_index"].extend([li] * n_sites)
            site_table["site"].extend(target.sites.names)
            site_table["area"].extend(target.sites.areas)
            site_table["r"].extend(_none(v) for v in site_r[li])
            site_table["alpha"].extend(_none(v) for v in geo_alpha[li])
            site_table["ceiling"].extend([None] * n_sites if ceiling is None else [_none(v) for v in ceiling])

        area_table: dict[str, list] = {k: [] for k in ("area", "n_sites", "best_layer", "best_layer_index",
                                                       "best_layer_agreement", "r", "ceiling", "r_ceiled",
                                                       "in_headline")}
        candidates = candidate_layers(layers, include_baselines=self.params.include_pixels)
        baselines = [li for li, name in enumerate(layers) if name in BASELINE_LAYERS]
        for b in baselines:  # one column per baseline layer, e.g. pixels_r
            area_table[f"{layers[b]}_r"] = []
        fold_table: dict[str, list] = {k: [] for k in ("fold", "area", "layer", "layer_index", "train_r",
                                                       "test_r")}
        folds = np.arange(n_folds)
        baseline_of: dict[str, dict[str, float]] = {}
        for a, idx in groups.items():
            train_med = _nan_stat(np.nanmedian, r_train[:, :, idx], 2)  # (L, F)
            test_med = _nan_stat(np.nanmedian, r_test[:, :, idx], 2)  # (L, F)
            # (F,) committed on the training folds among the candidates (first on ties); -1: none finite
            best, _ = heldout_choice(train_med.T, test_med.T, candidates)
            if (best >= 0).any():
                chosen = np.where((best >= 0)[:, None], r_test[np.maximum(best, 0), folds][:, idx], np.nan)
                value = float(_nan_stat(np.nanmedian, _nan_stat(np.nanmean, chosen, 0), 0))
            else:
                value = np.nan
            counts = np.bincount(best[best >= 0], minlength=n_layers)
            mode = int(np.argmax(counts)) if counts.sum() else -1
            area_table["area"].append(a)
            area_table["n_sites"].append(int(idx.size))
            area_table["best_layer"].append(layers[mode] if mode >= 0 else None)
            area_table["best_layer_index"].append(mode)
            area_table["best_layer_agreement"].append(float(counts[mode] / n_folds) if mode >= 0 else None)
            area_table["r"].append(_none(value))
            area_table["ceiling"].append(_none(area_ceiling[a]))
            area_table["r_ceiled"].append(_none(ceiled(value, a)))
            area_table["in_headline"].append(a in headline_areas)
            for b in baselines:  # the baseline's held-out score: its curve value
                baseline_of.setdefault(layers[b], {})[a] = float(_nan_stat(np.nanmedian, site_r[b, idx], 0))
                area_table[f"{layers[b]}_r"].append(_none(baseline_of[layers[b]][a]))
            for f in folds:
                c = int(best[f])
                fold_table["fold"].append(int(f))
                fold_table["area"].append(a)
                fold_table["layer"].append(layers[c] if c >= 0 else None)
                fold_table["layer_index"].append(c)
                fold_table["train_r"].append(_none(train_med[c, f]) if c >= 0 else None)
                fold_table["test_r"].append(_none(test_med[c, f]) if c >= 0 else None)

        pos = {a: i for i, a in enumerate(area_table["area"])}
        raw = np.array([np.nan if area_table["r"][pos[a]] is None else area_table["r"][pos[a]]
                        for a in headline_areas])
        value = float(np.nanmean(raw)) if np.isfinite(raw).any() else float("nan")
        summary: dict[str, Any] = {
            "regression": self.params.regression, "n_splits": n_folds, "stratified": stratified,
            "n_stimuli": int(n), "n_sites": int(n_sites), "headline_areas": list(headline_areas),
            "best_layer": {a: area_table["best_layer"][pos[a]] for a in area_names},
            "selection": "layer committed per area on the training folds, scored on the held-out folds",
            "candidate_layers": [layers[i] for i in candidates], "include_pixels": self.params.include_pixels,
            "baseline": {name: {"value": _none(_mean_finite([per_area[a] for a in headline_areas])),
                                "per_area": {a: _none(v) for a, v in per_area.items()}}
                         for name, per_area in baseline_of.items()},
            "ceiling_available": ceiling is not None,
        }
        score_ceiling = None
        if ceiling is not None:
            ceils = np.array([area_ceiling[a] for a in headline_areas])
            score_ceiling = _none(float(np.nanmean(ceils)) if np.isfinite(ceils).any() else np.nan)
            ratios = np.array([ceiled(r, a) for r, a in zip(raw, headline_areas)])
            summary["value_ceiled"] = _none(float(np.nanmean(ratios)) if np.isfinite(ratios).any() else np.nan)
        if self.params.regression == "ridge":
            low = float((alphas <= self.alphas.min()).mean())
            high = float((alphas >= self.alphas.max()).mean())
            summary["alpha_selection"] = self.params.alpha_selection
            summary["alpha_at_lower_edge_fraction"] = low
            summary["alpha_at_upper_edge_fraction"] = high
            if low > 0.25:
                log.warning("linear-predictivity: %.0f%% of chosen penalties are the smallest of the grid (%g); "
                            "most often in layer(s) %s; extend `alphas` downwards.", 100 * low, self.alphas.min(),
                            _edge_layers(alphas <= self.alphas.min(), layers))
            if high > 0.5:  # expected for unpredictable sites (a constant prediction is best)
                log.info("linear-predictivity: %.0f%% of chosen penalties are the largest of the grid (%g); most "
                         "often in layer(s) %s.", 100 * high, self.alphas.max(),
                         _edge_layers(alphas >= self.alphas.max(), layers))
        return Score(value=value, ceiling=score_ceiling,
                     details={"layer_area": curve, "layer_site": site_table, "area": area_table,
                              "fold_area": fold_table},
                     summary=summary, higher_is_better=True)
