"""rho_align: alignment of the network's layer hierarchy with the ventral stream.

Kuzovkin et al. 2018: only responsive sites are kept (the signal's Wilcoxon test
of window vs baseline power, Benjamini-Hochberg over sites). Every site's RDM
(``|r_i - r_j|``) is compared with every layer's RDM (Euclidean distance) by
Spearman correlation; significance by permuting the stimulus labels (10,000
permutations, p <= 0.001). Every significant (site, layer) pair with a positive
correlation, among sites in the target's ``area_order`` (Brodmann 17, 18, 19, 37,
20), contributes the point (area rank, layer index); rho_align is the Spearman
correlation over those points.

Statistics follow the convention of the project's design ("uncertainty by
resampling or permuting whole sites, never by treating a site's points as
independent"): one site gives up to one point per layer, so the points are not
independent. The p-value comes from a site-level permutation test (area labels
exchanged between sites, each site's points kept together) and the CI from a
bootstrap over sites (subjects, then sites), which reports how many resamples
leave rho_align undefined. Below ``min_points`` points, ``min_sites`` distinct
sites, two areas or two layers rho_align is undefined (NaN, with the reason).
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import DataError
from framework.layer_stats import Need
from framework.numerics.rsa import site_rsa
from framework.numerics.stats import (
    SITE_ALTERNATIVES,
    bootstrap_weights,
    draw_site_permutations,
    fdr_bh,
    percentile_ci,
    site_permutation_spearman,
    table_spearman,
)
from framework.params import PluginParams, param
from framework.types import Activations, Dataset, Responses, Score, Target

log = logging.getLogger("framework.metrics.alignment")

VARIANTS: tuple[str, ...] = ("all-significant", "best-layer")
PERMUTE_WITHIN: tuple[str, ...] = ("all", "subject")


class AlignmentParams(PluginParams):
    """Parameters of the alignment metric (defaults: Kuzovkin et al. 2018, statistics over whole sites)."""

    n_permutations: int = param(10_000, "stimulus-label permutations per (site, layer) cell (published: 10000)",
                                ge=1)
    alpha: float = param(0.001, "significance level of a (site, layer) pair (published: 0.001)", gt=0, lt=1)
    variant: Literal[VARIANTS] = param(  # type: ignore[valid-type]
        "all-significant", "'all-significant' (published): every significant positive pair is a point; "
        "'best-layer': one point per site")
    responsive_only: bool = param(True, "keep only the sites the signal marked responsive (published: responsive "
                                        "sites only); all sites when the target has no responsiveness information")
    min_points: int = param(10, "fewer points leave rho_align undefined (Spearman's null SD 1/sqrt(n-1) > 1/3)",
                            ge=3)
    min_sites: int = param(10, "fewer distinct sites with points leave rho_align undefined (the site is the "
                               "independent unit; null SD > 1/3 below 10)", ge=2)
    n_site_permutations: int = param(10_000, "permutations of the area labels over sites for the p-value of "
                                             "rho_align; 0 skips the test", ge=0)
    rho_alternative: Literal[SITE_ALTERNATIVES] = param(  # type: ignore[valid-type]
        "two-sided", "alternative of the site-level test of rho_align ('greater': aligned, pre-specified)")
    permute_within: Literal[PERMUTE_WITHIN] = param(  # type: ignore[valid-type]
        "all", "exchange area labels over all sites with points ('all') or within each subject ('subject')")
    n_bootstrap: int = param(1000, "bootstrap samples of the CI over sites (subjects, then sites); 0 skips it",
                             ge=0)
    ci_level: float = param(0.95, "coverage of the percentile bootstrap CI", gt=0, lt=1)
    max_undefined_bootstrap: float = param(0.1, "no CI when rho_align is undefined in more than this fraction of "
                                                "the bootstrap samples", ge=0, le=1)
    fdr: bool = param(False, "decide significance on Benjamini-Hochberg q-values (published: off)")
    early_stopping: bool = param(True, "Besag-Clifford stopping of clearly non-significant cells")


class AlignmentMetric(MetricPlugin):
    """rho_align of Kuzovkin et al. 2018, with site-level statistics.

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
    responsive_only : bool
        Keep only the sites the signal marked responsive, ``target.info["responsive"]["mask"]``
        (default True: Kuzovkin et al. 2018 analyse responsive electrodes only). A target
        without responsiveness information is scored on all its sites, and the summary says so.
    min_points : int
        Fewer points leave rho_align undefined (default 10: Spearman's rho over ``n``
        points has a null standard deviation of about ``1 / sqrt(n - 1)``, above 1/3
        for fewer than 10 points, i.e. larger than half the published effect, 0.52-0.55).
    min_sites : int
        Fewer distinct sites with at least one point leave rho_align undefined
        (default 10, the same bound applied to the independent units: a site's
        points are not independent, so the site count, not the point count, sets
        the precision; the project's convention is to resample or permute whole
        sites). Two areas and two layers among the points are required in any case.
    n_site_permutations : int
        Permutations of the area labels over sites for ``Score.p_value`` (default
        10,000, the count of the published pair-level test; 0 skips the test). Each
        site keeps its points; p = (1 + #{at least as extreme}) / (1 + n)
        (Phipson & Smyth 2010).
    rho_alternative : {"two-sided", "greater", "less"}
        Alternative of that test. Default two-sided: it does not presuppose the
        direction and treats anti-alignment (a negative rho_align) as a finding too;
        ``"greater"`` is the directional test of alignment, for a pre-specified
        hypothesis (its p is never above the two-sided p when rho_align > 0).
    permute_within : {"all", "subject"}
        ``"all"`` (default): area labels are exchanged among all sites with points,
        pooled over subjects as the points are (Kuzovkin et al. pool electrodes over
        patients). ``"subject"``: only within each subject, which guards against
        subject-level confounds but has no power when a subject's sites lie in one area.
    n_bootstrap : int
        Bootstrap samples of the CI (default 1000; 0 skips it). Sites are
        resampled; with several subjects, subjects then their sites (hierarchical).
        Significance of each pair is kept from the full data; a resample is scored
        like data, so it is undefined under the same rules (a site drawn twice counts twice).
    ci_level : float
        Coverage of the percentile CI (default 0.95).
    max_undefined_bootstrap : float
        No CI (None, with ``summary["ci_reason"]``) when rho_align is undefined in
        more than this fraction of the bootstrap samples (default 0.1); the defined
        fraction is always in ``summary["bootstrap_defined_fraction"]``.
    fdr : bool
        Decide significance on Benjamini-Hochberg q-values over all (site, layer)
        cells of the areas in ``area_order`` (default False, as published).
    early_stopping : bool
        Besag-Clifford sequential stopping of clearly non-significant cells (default True).

    Notes
    -----
    The site-level test is conditional on which sites have points and on their
    points: only the sites with at least one point are relabelled (a site without
    points contributes nothing under any label), so its null hypothesis is "a site's
    significant layers do not depend on its area". Random streams, all from
    ``score(seed=...)``: stimulus permutations ``numpy.random.default_rng(seed)``,
    bootstrap ``default_rng(SeedSequence(seed).spawn(2)[0])``, site permutations
    (:func:`framework.numerics.stats.draw_site_permutations`)
    ``default_rng(SeedSequence(seed).spawn(2)[1])``.
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    headline: ClassVar[str] = ("rho_align: Spearman correlation between area rank and layer index over the "
                               "significant positive (site, layer) RSA pairs of responsive sites (Kuzovkin et al. "
                               "2018); p from permuting area labels over sites, CI from a bootstrap over sites")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        LayerAreaMap("area_layer", "sum_significant_r_per_site",
                     "sum of the significant positive RSA r per site of the area"),
    )
    plugin_version = "2"

    Params = AlignmentParams
    name = "alignment"

    def needs(self, dataset: Dataset, *, seed: int = 0) -> list[Need]:
        """Euclidean layer RDMs: the Gram matrix of each layer's centred features."""
        return [Need.gram(centered=True)]

    def parameters(self) -> dict[str, Any]:
        """The declared parameters plus the fixed RSA settings of the published method."""
        return {**super().parameters(), "distance": "euclidean", "comparison": "spearman"}

    def _responsive(self, target: Responses) -> tuple[np.ndarray, str]:
        """Responsive sites, (n_sites,) bool, and how they were chosen (for the summary)."""
        info = target.info.get("responsive") if isinstance(target.info, dict) else None
        mask = info.get("mask") if isinstance(info, dict) else None
        if not self.params.responsive_only:
            return np.ones(target.n_sites, bool), "off (responsive_only=false): all sites used"
        if mask is None:
            return np.ones(target.n_sites, bool), "no responsiveness information in the target: all sites used"
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (target.n_sites,):
            raise DataError(f"alignment: the target's info['responsive']['mask'] has {mask.size} entries but the "
                            f"responses have {target.n_sites} sites; the signal must give one entry per site "
                            "(or set --metric-param alignment.responsive_only=false).")
        if info.get("filter_applied"):
            return mask, "on: the signal kept responsive sites only"
        return mask, "on: unresponsive sites (the signal's test) dropped by the metric"

    def _undefined_reason(self, n_points: int, n_sites: int, n_areas: int, n_layers: int) -> str | None:
        why = []
        if n_points == 0:
            return f"no significant positive (site, layer) pair at alpha={self.params.alpha}"
        if n_points < self.params.min_points:
            why.append(f"{n_points} point(s) < min_points={self.params.min_points}")
        if n_sites < self.params.min_sites:
            why.append(f"the points come from {n_sites} distinct site(s) < min_sites={self.params.min_sites}")
        if n_areas < 2:
            why.append("the points span a single area")
        if n_layers < 2:
            why.append("the points span a single layer")
        return "; ".join(why) if why else None

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        if not isinstance(target, Responses):
            raise DataError(f"alignment: needs per-site Responses, got {type(target).__name__}; "
                            "rho_align is defined over recording sites.")
        p = self.params
        order = list(target.area_order)
        site_area = np.asarray(target.sites.areas)
        in_order = np.isin(site_area, order)
        if not in_order.any():
            raise DataError(f"alignment: no site lies in the areas of area_order {order} (site areas: "
                            f"{sorted(set(target.sites.areas))[:8]}); check the site table or the area order.")
        responsive, filter_note = self._responsive(target)
        keep = in_order & responsive
        n_sites_used = int(keep.sum())
        layers = list(activations.layers)
        n_layers = len(layers)
        n_areas = len(order)
        summary: dict[str, Any] = {
            "n_sites": n_sites_used, "n_sites_outside_area_order": int((~in_order).sum()),
            "n_sites_in_area_order": int(in_order.sum()), "n_sites_unresponsive": int((in_order & ~responsive).sum()),
            "responsive_filter": filter_note, "variant": p.variant, "alpha": p.alpha, "fdr": p.fdr,
            "n_permutations": p.n_permutations, "min_points": p.min_points, "min_sites": p.min_sites,
            "area_order": order}
        signal = target.info.get("signal") if isinstance(target.info, dict) else None
        tag = f"alignment ({signal})" if signal else "alignment"
        log.info("%s: %d of %d sites in area_order used (responsive filter %s).", tag, n_sites_used,
                 int(in_order.sum()), filter_note)
        if n_sites_used == 0:
            summary.update(n_points=0, n_significant_sites=0, n_layers=n_layers, n_subjects=0)
            summary["reason"] = "rho_align undefined: no responsive site in the areas of area_order."
            log.info("%s: %s", tag, summary["reason"])
            return Score(value=float("nan"), details={}, summary=summary, higher_is_better=True)
        sub = target.select_sites(keep)
        # stimulus permutations use default_rng(seed) itself; the bootstrap and the site permutations their own streams
        boot_seed, perm_seed = np.random.SeedSequence(seed).spawn(2)
        res = site_rsa(activations, sub, distance="euclidean", comparison="spearman",
                       n_permutations=self.params.n_permutations, seed=seed, alpha=self.params.alpha,
                       alternative="greater", early_stopping=self.params.early_stopping, per_area=False)
        r, pv = res.r, res.p
        decide = fdr_bh(pv) if self.params.fdr else pv
        sig = np.isfinite(decide) & (decide <= self.params.alpha) & (r > 0)        # (n_sites, n_layers)
        if self.params.variant == "best-layer":
            masked = np.where(sig, r, -np.inf)
            best = np.argmax(masked, axis=1)
            chosen = np.zeros_like(sig)
            chosen[np.arange(sig.shape[0]), best] = True
            sig = chosen & sig.any(axis=1, keepdims=True)
        n_sub = sig.shape[0]
        areas = np.asarray(sub.sites.areas)
        subjects = np.asarray(sub.sites.subjects)
        area_rank = np.array([order.index(a) for a in areas])
        # Per-site point table: (n_sites, n_areas, n_layers) indicator of its points.
        point_table = np.zeros((n_sub, n_areas, n_layers))
        point_table[np.arange(n_sub)[:, None], area_rank[:, None], np.arange(n_layers)[None, :]] = sig
        counts = point_table.sum(axis=0)                                        # (n_areas, n_layers)
        n_points = int(counts.sum())
        site_points = sig.sum(axis=1)                                           # (n_sites,)
        with_points = site_points > 0

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
                      "n_significant_sites": [int(with_points[area_rank == k].sum()) for k in range(n_areas)]}
        si = np.repeat(np.arange(n_sub), n_layers)
        lj = np.tile(np.arange(n_layers), n_sub)
        layer_site = {"layer": [layers[i] for i in lj], "layer_index": lj.tolist(),
                      "site": [sub.sites.names[i] for i in si], "subject": [sub.sites.subjects[i] for i in si],
                      "area": [sub.sites.areas[i] for i in si], "r": [float(v) for v in r.ravel()],
                      "p": [float(v) for v in pv.ravel()], "n_permutations": res.n_used.ravel().tolist(),
                      "significant": sig.ravel().tolist()}
        if self.params.fdr:
            layer_site["q"] = [float(v) for v in decide.ravel()]
        details = {"area_layer": area_layer, "area": area_table, "layer_site": layer_site}
        n_areas_pts = int((counts.sum(axis=1) > 0).sum())
        n_layers_pts = int((counts.sum(axis=0) > 0).sum())
        summary.update({
            "n_points": n_points, "n_significant_sites": int(with_points.sum()), "n_areas_with_points": n_areas_pts,
            "n_layers_with_points": n_layers_pts, "n_layers": n_layers,
            "n_subjects": int(np.unique(subjects).size)})

        why = self._undefined_reason(n_points, int(with_points.sum()), n_areas_pts, n_layers_pts)
        if why is not None:
            summary["reason"] = f"rho_align undefined: {why}."
            log.info("%s: %s", tag, summary["reason"])
            return Score(value=float("nan"), details=details, summary=summary, higher_is_better=True)
        rho = float(table_spearman(counts))
        log.info("%s: rho_align %.3f from %d points of %d sites (%d areas, %d layers).", tag, rho, n_points,
                 int(with_points.sum()), n_areas_pts, n_layers_pts)

        p_value = None
        if p.n_site_permutations:
            strata = subjects[with_points] if p.permute_within == "subject" else None
            perms = draw_site_permutations(np.random.default_rng(perm_seed), int(with_points.sum()),
                                           p.n_site_permutations, strata)
            test = site_permutation_spearman(sig[with_points], area_rank[with_points], n_areas, perms,
                                             alternative=p.rho_alternative)
            p_value = test.p
            summary["p_value_method"] = (
                f"site-level permutation test ({p.rho_alternative}): area labels exchanged among the "
                f"{int(with_points.sum())} sites with points ("
                f"{'within each subject' if p.permute_within == 'subject' else 'pooled over subjects'}), each "
                f"site keeping its points; {p.n_site_permutations} permutations, p = (1 + #extreme) / (1 + n)")
            summary["n_site_permutations"] = p.n_site_permutations
            summary["n_site_permutations_extreme"] = test.n_extreme
        ci = None
        if self.params.n_bootstrap:
            w = bootstrap_weights(np.random.default_rng(boot_seed), subjects, self.params.n_bootstrap)
            boot = table_spearman((w @ point_table.reshape(n_sub, -1)).reshape(-1, n_areas, n_layers))
            defined = ((w @ site_points >= p.min_points) & (w @ with_points >= p.min_sites)
                       & np.isfinite(boot))              # table_spearman: two areas and two layers
            boot = np.where(defined, boot, np.nan)
            bci = percentile_ci(boot, level=self.params.ci_level, max_undefined_fraction=p.max_undefined_bootstrap)
            ci = bci.ci
            summary["n_bootstrap"] = self.params.n_bootstrap
            summary["n_bootstrap_defined"] = bci.n_defined
            summary["bootstrap_defined_fraction"] = bci.defined_fraction
            if ci is None:
                summary["ci_reason"] = f"no CI: {bci.reason}."
                log.info("%s: %s", tag, summary["ci_reason"])
        return Score(value=rho, ci=ci, p_value=p_value, details=details, summary=summary, higher_is_better=True)
