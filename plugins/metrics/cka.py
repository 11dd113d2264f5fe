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
rounding); Gram matrices are accumulated in float64, in blocks of features.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import DataError
from framework.numerics.areas import area_groups
from framework.numerics.gram import centered_gram
from framework.numerics.stimuli import stimulus_order
from framework.types import Activations, Responses, Score, Target
from framework.validation import check_array

log = logging.getLogger("framework.metrics.cka")


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
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise DataError(f"Linear CKA needs the same n_stimuli >= 4 on both sides, got {x.shape} and {y.shape}.")
    kx, ky = _HSICKernel(centered_gram(x)), _HSICKernel(centered_gram(y))
    return _cka(kx, ky, unbiased_hsic(kx, kx), unbiased_hsic(ky, ky))


def _cka(kx: _HSICKernel, ky: _HSICKernel, hxx: float, hyy: float) -> float:
    denom = hxx * hyy
    if not denom > 0:
        return float("nan")
    return unbiased_hsic(kx, ky) / float(np.sqrt(denom))


class CKAMetric(MetricPlugin):
    """Linear CKA (unbiased HSIC) between each layer and each brain area.

    No parameters. For every layer and every area with sites, the layer's
    activations (n_stimuli, n_features) are compared with the area's responses
    (n_stimuli, n_sites_in_area).

    The headline is the mean, over the areas of ``target.area_order`` that have
    sites (all areas but ``"n/a"`` when none of them has), of the best layer's
    CKA in that area. Choosing the maximum over layers is descriptive (no
    fitting, no held-out data) and slightly favours models with many layers.

    Details: ``"layer_area"`` table with columns ``layer, layer_index, area,
    n_sites, cka``; ``"area"`` table with ``area, best_layer,
    best_layer_index, cka, n_sites, in_headline``. Missing values (a side
    without variance) are None.
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = ("Mean over visual areas of the best layer's linear CKA (unbiased HSIC) "
                               "with the area's sites")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("layer_area", "cka", "linear CKA (unbiased HSIC) of the layer with the area's sites"),
    )
    plugin_version = "1"

    name = "cka"

    def parameters(self) -> dict[str, Any]:
        """No declared parameters; the fixed kernel and estimator identify the scores."""
        return {**super().parameters(), "kernel": "linear", "hsic": "unbiased"}

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        """Score all layers against all areas (``seed`` is unused: CKA is deterministic)."""
        if not isinstance(target, Responses):
            raise DataError(f"The cka metric scores responses (n_stimuli, n_sites), got {type(target).__name__}; "
                            "use a signal that produces responses.")
        order = stimulus_order(activations.stimulus_ids, target.stimulus_ids, allow_extra=False, target="responses",
                               fix="Extract activations for the dataset the signal was computed on.")
        data = check_array(target.data, "responses", ndim=2, fix="Responses must be finite; fix the signal.")
        n = data.shape[0]
        if n < 4:
            raise DataError(f"CKA needs at least 4 stimuli, got {n}.")
        if len(activations) == 0:
            raise DataError("Activations have no layers; extract at least one layer.")
        areas, headline_areas = area_groups(target)
        area_kernels = {}
        for area, idx in areas.items():
            k = _HSICKernel(centered_gram(data[:, idx]))
            area_kernels[area] = (k, unbiased_hsic(k, k))

        rows: dict[str, list] = {"layer": [], "layer_index": [], "area": [], "n_sites": [], "cka": []}
        table = np.full((len(activations), len(areas)), np.nan)
        for li, (layer, arr) in enumerate(activations.items()):
            x = arr if order is None else arr[order]
            kx = _HSICKernel(centered_gram(x))
            hxx = unbiased_hsic(kx, kx)
            for ai, (area, (ky, hyy)) in enumerate(area_kernels.items()):
                value = _cka(kx, ky, hxx, hyy)
                table[li, ai] = value
                rows["layer"].append(layer)
                rows["layer_index"].append(li)
                rows["area"].append(area)
                rows["n_sites"].append(int(areas[area].size))
                rows["cka"].append(float(value) if np.isfinite(value) else None)
            log.debug("cka: layer %s done", layer)

        layers = activations.layers
        area_rows: dict[str, list] = {"area": [], "best_layer": [], "best_layer_index": [], "cka": [],
                                      "n_sites": [], "in_headline": []}
        best_values = []
        for ai, area in enumerate(areas):
            col = table[:, ai]
            if np.isfinite(col).any():
                best = int(np.nanargmax(col))
                best_layer, value = layers[best], float(col[best])
            else:
                best, best_layer, value = -1, None, float("nan")
            area_rows["area"].append(area)
            area_rows["best_layer"].append(best_layer)
            area_rows["best_layer_index"].append(best)
            area_rows["cka"].append(value if np.isfinite(value) else None)
            area_rows["n_sites"].append(int(areas[area].size))
            area_rows["in_headline"].append(area in headline_areas)
            if area in headline_areas:
                best_values.append(value)
        finite = [v for v in best_values if np.isfinite(v)]
        headline = float(np.mean(finite)) if finite else float("nan")
        return Score(
            value=headline,
            details={"layer_area": rows, "area": area_rows},
            summary={"headline_areas": list(headline_areas),
                     "best_layer": {a: b for a, b in zip(area_rows["area"], area_rows["best_layer"])},
                     "n_stimuli": int(n), "n_sites": int(sum(len(v) for v in areas.values()))},
            higher_is_better=True,
        )
