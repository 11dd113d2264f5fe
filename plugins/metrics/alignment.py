"""rho_align: alignment of the network's layer hierarchy with the ventral stream.

Kuzovkin et al. 2018: every site's RDM (``|r_i - r_j|``) is compared with every
layer's RDM (Euclidean distance) by Spearman correlation; significance by
permuting the stimulus labels (10,000 permutations, p <= 0.001). Every
significant (site, layer) pair with a positive correlation, among sites in the
target's ``area_order`` (Brodmann 17, 18, 19, 37, 20), contributes the point
(area rank, layer index); rho_align is the Spearman correlation over those points.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.stats

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import DataError
from framework.numerics.rsa import site_rsa
from framework.numerics.stats import bootstrap_weights, fdr_bh, table_spearman
from framework.params import PluginParams, param
from framework.types import Activations, Responses, Score, Target

log = logging.getLogger("framework.metrics.alignment")

VARIANTS: tuple[str, ...] = ("all-significant", "best-layer")


class AlignmentParams(PluginParams):
    """Parameters of the alignment metric (defaults: Kuzovkin et al. 2018)."""

    n_permutations: int = param(10_000, "stimulus-label permutations per (site, layer) cell (published: 10000)",
                                ge=1)
    alpha: float = param(0.001, "significance level of a (site, layer) pair (published: 0.001)", gt=0, lt=1)
    variant: Literal[VARIANTS] = param(  # type: ignore[valid-type]
        "all-significant", "'all-significant' (published): every significant positive pair is a point; "
        "'best-layer': one point per site")
    n_bootstrap: int = param(1000, "bootstrap samples of the CI over sites (subjects, then sites); 0 skips it",
                             ge=0)
    ci_level: float = param(0.95, "coverage of the percentile bootstrap CI", gt=0, lt=1)
    fdr: bool = param(False, "decide significance on Benjamini-Hochberg q-values (published: off)")
    early_stopping: bool = param(True, "Besag-Clifford stopping of clearly non-significant cells")


class AlignmentMetric(MetricPlugin):
    """rho_align of Kuzovkin et al. 2018.

    Parameters
    ----------
    n_permutations : int
        Permutations of the stimulus labels per (site, layer) cell (default 10,000 as published).
    alpha : float
        Significance level of a (site, layer) pair (default 0.001 as published).
    variant : {"all-significant", "best-layer"}
        ``"all-significant"`` (published): every significant positive pair is a
        point. ``"best-layer"``: each site contributes one point, its layer with the
        highest correlation among its significant positive pairs.
    n_bootstrap : int
        Bootstrap samples of the CI (default 1000; 0 skips it). Sites are
        resampled; with several subjects, subjects then their sites (hierarchical).
        Significance of each pair is kept from the full data.
    ci_level : float
        Coverage of the percentile CI (default 0.95).
    fdr : bool
        Decide significance on Benjamini-Hochberg q-values over all (site, layer)
        cells of the areas in ``area_order`` (default False, as published).
    early_stopping : bool
        Besag-Clifford sequential stopping of clearly non-significant cells (default True).
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = ("rho_align: Spearman correlation between area rank and layer index over the "
                               "significant positive (site, layer) RSA pairs (Kuzovkin et al. 2018)")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("area_layer", "sum_significant_r_per_site",
                     "sum of the significant positive RSA r per site of the area"),
    )
    plugin_version = "1"

    Params = AlignmentParams
    name = "alignment"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.n_permutations, self.alpha, self.variant = p.n_permutations, p.alpha, p.variant
        self.n_bootstrap, self.ci_level, self.fdr, self.early_stopping = (p.n_bootstrap, p.ci_level, p.fdr,
                                                                           p.early_stopping)

    def parameters(self) -> dict[str, Any]:
        """The declared parameters plus the fixed RSA settings of the published method."""
        return {**super().parameters(), "distance": "euclidean", "comparison": "spearman"}

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        if not isinstance(target, Responses):
            raise DataError(f"alignment: needs per-site Responses, got {type(target).__name__}; "
                            "rho_align is defined over recording sites.")
        order = list(target.area_order)
        site_area = np.asarray(target.sites.areas)
        in_order = np.isin(site_area, order)
        if not in_order.any():
            raise DataError(f"alignment: no site lies in the areas of area_order {order} (site areas: "
                            f"{sorted(set(target.sites.areas))[:8]}); check the site table or the area order.")
        sub = target.select_sites(in_order)
        layers = list(activations.layers)
        n_layers = len(layers)
        boot_seed = np.random.SeedSequence(seed).spawn(1)[0]     # permutations use default_rng(seed) itself
        res = site_rsa(activations, sub, distance="euclidean", comparison="spearman",
                       n_permutations=self.n_permutations, seed=seed, alpha=self.alpha,
                       alternative="greater", early_stopping=self.early_stopping, per_area=False)
        r, p = res.r, res.p
        decide = fdr_bh(p) if self.fdr else p
        sig = np.isfinite(decide) & (decide <= self.alpha) & (r > 0)        # (n_sites, n_layers)
        if self.variant == "best-layer":
            masked = np.where(sig, r, -np.inf)
            best = np.argmax(masked, axis=1)
            chosen = np.zeros_like(sig)
            chosen[np.arange(sig.shape[0]), best] = True
            sig = chosen & sig.any(axis=1, keepdims=True)
        areas = np.asarray(sub.sites.areas)
        area_rank = np.array([order.index(a) for a in areas])
        n_areas = len(order)
        # Per-site point table: (n_sites, n_areas * n_layers) indicator of its points.
        point_table = np.zeros((sig.shape[0], n_areas, n_layers))
        point_table[np.arange(sig.shape[0])[:, None], area_rank[:, None], np.arange(n_layers)[None, :]] = sig
        counts = point_table.sum(axis=0)                                        # (n_areas, n_layers)
        n_points = int(counts.sum())

        sig_r_sum = np.zeros((n_areas, n_layers))
        np.add.at(sig_r_sum, area_rank, np.where(sig, r, 0.0))
        n_sites_area = np.bincount(area_rank, minlength=n_areas)
        ai = np.repeat(np.arange(n_areas), n_layers)
        li = np.tile(np.arange(n_layers), n_areas)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_site = sig_r_sum / n_sites_area[:, None]
        area_layer = {"area": [order[i] for i in ai], "area_rank": ai.tolist(), "layer": [layers[i] for i in li],
                      "layer_index": li.tolist(), "n_significant": counts.ravel().astype(int).tolist(),
                      "sum_significant_r_per_site": [float(v) for v in per_site.ravel()]}
        area_table = {"area": order, "area_rank": list(range(n_areas)), "n_sites": n_sites_area.tolist(),
                      "n_significant_pairs": counts.sum(axis=1).astype(int).tolist(),
                      "n_significant_sites": [int(sig[area_rank == k].any(axis=1).sum()) for k in range(n_areas)]}
        si = np.repeat(np.arange(r.shape[0]), n_layers)
        lj = np.tile(np.arange(n_layers), r.shape[0])
        layer_site = {"layer": [layers[i] for i in lj], "layer_index": lj.tolist(),
                      "site": [sub.sites.names[i] for i in si], "subject": [sub.sites.subjects[i] for i in si],
                      "area": [sub.sites.areas[i] for i in si], "r": [float(v) for v in r.ravel()],
                      "p": [float(v) for v in p.ravel()], "n_permutations": res.n_used.ravel().tolist(),
                      "significant": sig.ravel().tolist()}
        if self.fdr:
            layer_site["q"] = [float(v) for v in decide.ravel()]
        details = {"area_layer": area_layer, "area": area_table, "layer_site": layer_site}
        summary: dict[str, Any] = {
            "n_sites": int(sub.n_sites), "n_sites_outside_area_order": int((~in_order).sum()),
            "n_points": n_points, "n_significant_sites": int(sig.any(axis=1).sum()), "n_layers": n_layers,
            "variant": self.variant, "alpha": self.alpha, "fdr": self.fdr, "n_permutations": self.n_permutations,
            "area_order": order, "n_subjects": int(np.unique(sub.sites.subjects).size)}

        rho = float(table_spearman(counts))
        if not np.isfinite(rho):
            why = ("no significant positive (site, layer) pair" if n_points == 0 else
                   f"the {n_points} significant pairs span a single area or a single layer")
            summary["reason"] = f"rho_align undefined: {why} at alpha={self.alpha}."
            log.info("alignment: %s", summary["reason"])
            return Score(value=float("nan"), details=details, summary=summary, higher_is_better=True)
        pts_a = np.repeat(ai, counts.ravel().astype(int))
        pts_l = np.repeat(li, counts.ravel().astype(int))
        p_rho = float(scipy.stats.spearmanr(pts_a, pts_l).pvalue)
        ci = None
        if self.n_bootstrap:
            w = bootstrap_weights(np.random.default_rng(boot_seed), np.asarray(sub.sites.subjects), self.n_bootstrap)
            boot = table_spearman((w @ point_table.reshape(sig.shape[0], -1)).reshape(-1, n_areas, n_layers))
            ok = boot[np.isfinite(boot)]
            summary["n_bootstrap_defined"] = int(ok.size)
            if ok.size:
                tail = 100.0 * (1.0 - self.ci_level) / 2.0
                lo, hi = np.percentile(ok, [tail, 100.0 - tail])
                ci = (float(lo), float(hi))
        summary["p_value_note"] = ("scipy.stats.spearmanr over the points (two-sided; points of one site are not "
                                   "independent)")
        return Score(value=rho, ci=ci, p_value=p_rho, details=details, summary=summary, higher_is_better=True)
