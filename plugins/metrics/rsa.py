"""Representational similarity analysis (RSA) between layer RDMs and brain RDMs.

Two kinds of target:

* :class:`~framework.types.Responses` (one number per stimulus and site): every
  site has its own RDM ``|r_i - r_j|`` (the Euclidean distance in one dimension,
  Kuzovkin et al. 2018), and every area an RDM over its sites together (with
  ``distance``). Each is compared with every layer's RDM; optionally each
  (site, layer) and (area, layer) correlation gets a permutation p-value.
* :class:`~framework.types.BrainRDMs` (per area, per subject): every subject's
  RDM is compared with every layer's RDM; mean and SEM over subjects, and noise
  ceilings (upper: each subject vs the mean RDM of all subjects; lower: each
  subject vs the mean RDM of the others), with the same comparison method.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import model_validator

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import DataError
from framework.numerics import rdm as _rdm
from framework.numerics.areas import ordered_areas
from framework.numerics.ceiling import noise_ceilings
from framework.numerics.permutation import ALTERNATIVES, permutation_test
from framework.numerics.rdm import layer_rdms
from framework.numerics.rsa import SiteRSA, site_rsa
from framework.numerics.stats import fdr_bh, sem
from framework.params import PluginParams, param
from framework.types import Activations, BrainRDMs, Responses, Score, Target

log = logging.getLogger("framework.metrics.rsa")


# --------------------------------------------------------------------------- the plugin
class RSAParams(PluginParams):
    """Parameters of the rsa metric."""

    distance: Literal[_rdm.DISTANCES] = param(  # type: ignore[valid-type]
        "euclidean", "dissimilarity of layer RDMs and of area RDMs built from responses (Kuzovkin et al. 2018: "
        "euclidean); site RDMs are always |r_i - r_j|")
    comparison: Literal[_rdm.COMPARISONS] = param(  # type: ignore[valid-type]
        "spearman", "how RDMs are compared")
    n_permutations: int = param(0, "stimulus-label permutations for p-values; 0 skips the test (published: 10000)",
                                ge=0)
    alpha: float = param(0.001, "significance level for early stopping and n_significant", gt=0, lt=1)
    fdr: bool = param(False, "count significance on Benjamini-Hochberg q-values over all (site, layer) cells")
    per_area: bool = param(True, "also compare one RDM per area (its sites together) with each layer")
    alternative: Literal[ALTERNATIVES] = param(  # type: ignore[valid-type]
        "greater", "side of the permutation test")
    early_stopping: bool = param(True, "Besag-Clifford stopping of clearly non-significant cells "
                                 "(never changes a decision at alpha)")

    @model_validator(mode="after")
    def _permutable(self) -> RSAParams:
        if self.n_permutations > 0 and self.comparison not in _rdm.LINEAR_COMPARISONS:
            raise ValueError(f"comparison={self.comparison!r} has no fast permutation test; use one of "
                             f"{', '.join(repr(c) for c in _rdm.LINEAR_COMPARISONS)} or set n_permutations=0")
        return self


class RSAMetric(MetricPlugin):
    """RSA between every layer's RDM and brain RDMs (per site, per area, or per subject).

    Parameters
    ----------
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}
        Dissimilarity of layer RDMs and of area RDMs built from responses
        (default Euclidean, Kuzovkin et al. 2018). Site RDMs are always ``|r_i - r_j|``.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        How RDMs are compared (default Spearman).
    n_permutations : int
        Permutations of the stimulus labels for p-values of every (site, layer)
        and (area, layer) correlation; 0 (default) skips the test. Not available
        with kendall-tau-a. 10,000 as published when enabled.
    alpha : float
        Significance level (default 0.001) used for early stopping and for
        ``n_significant`` in the summary.
    fdr : bool
        Count significance on Benjamini-Hochberg adjusted p-values over all
        (site, layer) cells (default False).
    per_area : bool
        Also compare one RDM per area (its sites together) with each layer (default True).
    alternative : {"greater", "two-sided", "less"}
        Side of the permutation test (default "greater": positive correlations).
    early_stopping : bool
        Besag-Clifford sequential stopping of clearly non-significant cells (default True);
        decisions at ``alpha`` are never changed.
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses", "rdms"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = (
        "Responses: correlation between layer and site RDMs, mean over sites, at the layer where this mean is "
        "highest; RDMs: per area the highest mean-over-subjects correlation over layers, averaged over areas "
        "(ceiling: the matching mean upper noise ceiling)")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("layer_area", "r", "RDM correlation: the area's RDM (its sites together) vs the layer's RDM"),
        LayerAreaMap("layer_area", "r_mean", "RDM correlation, mean over subjects: area RDM vs layer RDM"),
    )
    plugin_version = "1"

    Params = RSAParams
    name = "rsa"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.distance, self.comparison, self.n_permutations = p.distance, p.comparison, p.n_permutations
        self.alpha, self.fdr, self.per_area = p.alpha, p.fdr, p.per_area
        self.alternative, self.early_stopping = p.alternative, p.early_stopping

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        if isinstance(target, Responses):
            return self._score_responses(activations, target, seed)
        if isinstance(target, BrainRDMs):
            return self._score_rdms(activations, target, seed)
        raise DataError(f"rsa: cannot score a target of type {type(target).__name__}; expected Responses or "
                        "BrainRDMs.")

    # -- responses ------------------------------------------------------------------------
    def _score_responses(self, activations: Activations, target: Responses, seed: int) -> Score:
        res = site_rsa(activations, target, distance=self.distance, comparison=self.comparison,
                       n_permutations=self.n_permutations, seed=seed, alpha=self.alpha,
                       alternative=self.alternative, early_stopping=self.early_stopping, per_area=self.per_area)
        layers = list(activations.layers)
        n_sites, n_layers = res.r.shape
        valid = np.isfinite(res.r).all(axis=1)
        if not valid.any():
            raise DataError("rsa: every site has a constant response over stimuli, so no site RDM can be compared; "
                            "check the signal.")
        if not valid.all():
            log.warning("rsa: %d of %d sites have constant responses; they are left out of the means.",
                        int((~valid).sum()), n_sites)
        mean_r = res.r[valid].mean(axis=0)
        best = int(np.argmax(mean_r))
        li = np.tile(np.arange(n_layers), n_sites)
        si = np.repeat(np.arange(n_sites), n_layers)
        table: dict[str, list] = {
            "layer": [layers[i] for i in li], "layer_index": li.tolist(),
            "site": [target.sites.names[i] for i in si], "subject": [target.sites.subjects[i] for i in si],
            "area": [target.sites.areas[i] for i in si], "r": _floats(res.r.ravel()),
        }
        summary: dict[str, Any] = {"best_layer": layers[best], "best_layer_index": best, "n_sites": n_sites,
                                   "n_sites_used": int(valid.sum()), "n_layers": n_layers,
                                   "n_stimuli": target.n_stimuli, "distance": self.distance,
                                   "comparison": self.comparison, "selection": "best layer by mean over sites",
                                   "mean_r_per_layer": _floats(mean_r)}
        if res.p is not None:
            sig_p = fdr_bh(res.p) if self.fdr else res.p
            sig = (sig_p <= self.alpha) & np.isfinite(sig_p)
            table["p"] = _floats(res.p.ravel())
            if self.fdr:
                table["q"] = _floats(sig_p.ravel())
            table["n_permutations"] = res.n_used.ravel().tolist()
            table["significant"] = sig.ravel().tolist()
            summary.update(n_significant=int(sig.sum()), n_significant_sites=int(sig.any(axis=1).sum()),
                           alpha=self.alpha, fdr=self.fdr, n_permutations=self.n_permutations)
        details = {"layer_site": table}
        curve = {"layer": layers, "layer_index": list(range(n_layers)), "mean_r": _floats(mean_r),
                 "sem_r": _floats(sem(res.r[valid], axis=0))}
        details["layer"] = curve
        if res.area_r is not None and res.areas:
            details["layer_area"] = self._area_table(res, target, layers)
        return Score(value=float(mean_r[best]), details=details, summary=summary, higher_is_better=True)

    def _area_table(self, res: SiteRSA, target: Responses, layers: list[str]) -> dict[str, list]:
        areas = np.asarray(target.sites.areas)
        n_areas, n_layers = res.area_r.shape
        site_mean = np.stack([np.nanmean(res.r[areas == a], axis=0) if (areas == a).any() else
                              np.full(n_layers, np.nan) for a in res.areas])
        ai = np.repeat(np.arange(n_areas), n_layers)
        li = np.tile(np.arange(n_layers), n_areas)
        table: dict[str, list] = {
            "layer": [layers[i] for i in li], "layer_index": li.tolist(), "area": [res.areas[i] for i in ai],
            "n_sites": [int((areas == res.areas[i]).sum()) for i in ai], "r": _floats(res.area_r.ravel()),
            "site_mean_r": _floats(site_mean.ravel()),
        }
        if res.area_p is not None:
            table["p"] = _floats(res.area_p.ravel())
            table["n_permutations"] = res.area_n_used.ravel().tolist()
        return table

    # -- RDMs ------------------------------------------------------------------------------
    def _score_rdms(self, activations: Activations, target: BrainRDMs, seed: int) -> Score:
        if not target.rdms:
            raise DataError("rsa: the BrainRDMs target has no areas.")
        layer_vecs = layer_rdms(activations, target.stimulus_ids, self.distance)
        layers = list(activations.layers)
        n_layers = len(layers)
        n_stim = len(target.stimulus_ids)
        areas = ordered_areas(list(target.rdms), target.area_order)
        la: dict[str, list] = {k: [] for k in ("layer", "layer_index", "area", "n_subjects", "r_mean", "r_sem")}
        las: dict[str, list] = {k: [] for k in ("layer", "layer_index", "area", "subject", "r")}
        at: dict[str, list] = {k: [] for k in ("area", "n_subjects", "best_layer", "best_layer_index", "r",
                                               "r_sem", "noise_ceiling_lower", "noise_ceiling_upper")}
        if self.n_permutations:
            la["p"], la["n_permutations"] = [], []
            at["p"] = []
        best_values, uppers = [], []
        for area in areas:
            subj = _rdm.upper(_check_rdm_stack(target.rdms[area], area, n_stim))     # (n_subjects, n_pairs)
            n_subj = subj.shape[0]
            r = _rdm.compare(subj.T, layer_vecs, self.comparison)                   # (n_subjects, n_layers)
            mean_r = r.mean(axis=0)
            sem_r = sem(r, axis=0)
            lower, upper = noise_ceilings(subj, self.comparison)
            best = int(np.nanargmax(mean_r)) if np.isfinite(mean_r).any() else 0
            p = None
            if self.n_permutations:
                group = np.mean(_rdm.prepare(subj.T, self.comparison), axis=1, keepdims=True)   # mean over subjects
                pr = permutation_test(_rdm.prepare(layer_vecs, self.comparison), group, n_stim,
                                      n_permutations=self.n_permutations, seed=seed, alternative=self.alternative,
                                      alpha=self.alpha, early_stopping=self.early_stopping)
                p = pr.p[0]
                la["p"] += _floats(p)
                la["n_permutations"] += pr.n_used[0].tolist()
                at["p"].append(float(p[best]))
            la["layer"] += layers
            la["layer_index"] += list(range(n_layers))
            la["area"] += [area] * n_layers
            la["n_subjects"] += [n_subj] * n_layers
            la["r_mean"] += _floats(mean_r)
            la["r_sem"] += _floats(sem_r)
            li = np.tile(np.arange(n_layers), n_subj)
            las["layer"] += [layers[i] for i in li]
            las["layer_index"] += li.tolist()
            las["area"] += [area] * li.size
            las["subject"] += np.repeat(np.arange(n_subj), n_layers).tolist()
            las["r"] += _floats(r.ravel())
            for k, v in (("area", area), ("n_subjects", n_subj), ("best_layer", layers[best]),
                         ("best_layer_index", best), ("r", float(mean_r[best])), ("r_sem", float(sem_r[best])),
                         ("noise_ceiling_lower", lower), ("noise_ceiling_upper", upper)):
                at[k].append(_float(v) if isinstance(v, float) else v)
            best_values.append(float(mean_r[best]))
            uppers.append(upper)
        summary = {"areas": areas, "n_layers": n_layers, "n_stimuli": n_stim, "distance": self.distance,
                   "comparison": self.comparison, "brain_distance": target.distance,
                   "selection": "per area, best layer by mean over subjects; headline = mean over areas",
                   "best_layer": dict(zip(areas, at["best_layer"])),
                   "noise_ceiling_lower": dict(zip(areas, at["noise_ceiling_lower"])),
                   "noise_ceiling_upper": dict(zip(areas, at["noise_ceiling_upper"]))}
        return Score(value=float(np.mean(best_values)), ceiling=_float(float(np.mean(uppers))),
                     details={"layer_area": la, "layer_area_subject": las, "area": at},
                     summary=summary, higher_is_better=True)


def _check_rdm_stack(stack: np.ndarray, area: str, n_stim: int) -> np.ndarray:
    s = np.asarray(stack, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (n_stim, n_stim) or s.shape[0] < 1:
        raise DataError(f"RDMs of area '{area}' must be (n_subjects >= 1, {n_stim}, {n_stim}), got {s.shape}.")
    iu, ju = _rdm.triu_indices(n_stim)
    if not np.isfinite(s[:, iu, ju]).all():
        raise DataError(f"RDMs of area '{area}' contain NaN/inf above the diagonal; fix or drop those subjects.")
    asym = np.abs(s - s.transpose(0, 2, 1)).max()
    if asym > 1e-6 * max(1.0, float(np.abs(s).max())):
        raise DataError(f"RDMs of area '{area}' are not symmetric (max |D - D^T| = {asym:.3g}); "
                        "symmetrise them before loading.")
    return s


def _float(v: float) -> float | None:
    """JSON-friendly float: NaN stays NaN (the store writes it as null)."""
    return float(v)


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
