"""Representational similarity analysis (RSA) between layer RDMs and brain RDMs.

Two kinds of target:

* :class:`~framework.types.Responses` (one number per stimulus and site): every
  site has its own RDM ``|r_i - r_j|`` (the Euclidean distance in one dimension,
  Kuzovkin et al. 2018), and every area an RDM over its sites together (with
  ``distance``). Each is compared with every layer's RDM; optionally each
  (site, layer) and (area, layer) correlation gets a permutation p-value. The
  headline averages the sites of the dataset's ordered areas (``area_order``,
  the ventral-stream areas); other sites are reported beside it.
* :class:`~framework.types.BrainRDMs` (per area, per subject): every subject's
  RDM is compared with every layer's RDM, and each area gets lower and upper
  noise ceilings (:func:`framework.numerics.ceiling.rdm_noise_ceiling`) with
  every subject's value kept.

Conventions (``DESIGN.md``, "Conventions the defaults follow"):

* **Distance.** Model RDMs use the distance the brain RDMs were made with
  (``BrainRDMs.distance``, declared by the dataset; e.g. 1 - Pearson for the
  Algonauts 2019 and Kriegeskorte et al. 2008 fMRI RDMs) unless ``distance`` is
  set; on responses the default is Euclidean (Kuzovkin et al. 2018).
* **Ceilings and units** (``ceiling``): ``"nili"`` reports correlations (r) with
  the Nili et al. 2014 lower/upper bounds; ``"algonauts2019"`` reports the mean
  over subjects of the squared Spearman correlation and the score as a
  percentage of the upper bound, as the Algonauts Project 2019 evaluation
  (``testSub_fmri.py`` of its devkit). Fewer than two subjects: no ceiling.
  Layers are chosen on the signed correlation in both conventions (a square
  would let an anti-correlated layer win); the convention sets the unit of the
  reported scores and ceilings.
* **Layer selection** (``selection``): a layer is committed on data separate
  from the data it is scored on (Brain-Score; Schrimpf et al. 2018). RDMs: leave
  one subject out, commit on the mean score of the other subjects, score on the
  held-out subject, average over folds. Responses: K folds of stimuli (seeded,
  stratified by category when labels are known), commit on the site-RDM
  correlations over the training stimuli, score over the held-out stimuli,
  average over folds. The maximum over layers on all data is reported as
  "optimistic" (it peeks), and is the headline only with
  ``selection="optimistic"``.
* **Baseline.** ``pixels`` is a baseline reported beside the model
  (``pixels_baseline``), not a layer choice (:mod:`framework.numerics.layers`).
* **Areas.** Areas of different species or kinds of recording are never
  averaged silently: the headline is over the dataset's ``headline_areas``;
  without them, every area, which must then all be of one species and kind.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import model_validator

from framework.contracts import LayerAreaMap, MetricPlugin
from framework.errors import ConfigError, DataError
from framework.layer_stats import Need
from framework.numerics import rdm as _rdm
from framework.numerics.areas import area_groups, ordered_areas
from framework.numerics.ceiling import CEILING_CONVENTIONS, RDMCeiling, convention_scores, rdm_noise_ceiling
from framework.numerics.layers import BASELINE_LAYERS, candidate_layers, constant_layers, heldout_choice
from framework.numerics.permutation import ALTERNATIVES, permutation_test
from framework.numerics.rdm import layer_rdms
from framework.numerics.rsa import SiteRSA, check_responses, site_layer_correlations, site_rsa
from framework.numerics.splits import kfold_splits
from framework.numerics.stats import fdr_bh, sem
from framework.numerics.stimuli import stimulus_labels, stimulus_order
from framework.params import PluginParams, param
from framework.types import Activations, BrainRDMs, Dataset, Responses, Score, Target

log = logging.getLogger("framework.metrics.rsa")

SELECTIONS: tuple[str, ...] = ("heldout", "optimistic")
#: What each ceiling convention's scores are, for summaries.
UNITS: dict[str, str] = {"nili": "r (the comparison itself)",
                         "algonauts2019": "R^2: mean over subjects of squared Spearman r"}
_PIXELS = BASELINE_LAYERS[0]
#: Stimuli a held-out fold needs at least (3 pairs for an RDM correlation).
MIN_FOLD_STIMULI = 3


# --------------------------------------------------------------------------- the plugin
class RSAParams(PluginParams):
    """Parameters of the rsa metric."""

    distance: Literal[("auto",) + _rdm.DISTANCES] = param(  # type: ignore[valid-type]
        "auto", "dissimilarity of layer RDMs (and of area RDMs built from responses): auto = the distance the "
        "dataset's RDMs were made with (BrainRDMs.distance), euclidean on responses (Kuzovkin et al. 2018); "
        "site RDMs are always |r_i - r_j|")
    comparison: Literal[_rdm.COMPARISONS] = param(  # type: ignore[valid-type]
        "spearman", "how RDMs are compared")
    ceiling: Literal[CEILING_CONVENTIONS] = param(  # type: ignore[valid-type]
        "nili", "RDM noise-ceiling convention and score unit: nili = r with lower/upper bounds (Nili et al. 2014); "
        "algonauts2019 = mean over subjects of squared Spearman r, score as % of the upper bound (Algonauts 2019)")
    selection: Literal[SELECTIONS] = param(  # type: ignore[valid-type]
        "heldout", "headline layer: heldout = committed on other subjects (RDMs, leave-one-subject-out) or other "
        "stimuli (responses, n_splits folds) and scored on the held-out part; optimistic = max over layers on all "
        "data (peeks)")
    include_pixels: bool = param(False, "let the baseline layers (pixels) compete for the best layer; they are "
                                    "reported as a baseline either way")
    n_splits: int = param(2, "stimulus folds for held-out layer selection on responses (2 = split halves), "
                         "stratified by category when labels are known", ge=2)
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
    def _consistent(self) -> RSAParams:
        if self.n_permutations > 0 and self.comparison not in _rdm.LINEAR_COMPARISONS:
            raise ValueError(f"comparison={self.comparison!r} has no fast permutation test; use one of "
                             f"{', '.join(repr(c) for c in _rdm.LINEAR_COMPARISONS)} or set n_permutations=0")
        if self.ceiling == "algonauts2019" and self.comparison != "spearman":
            raise ValueError(f"ceiling='algonauts2019' squares Spearman correlations; set comparison='spearman' "
                             f"(got {self.comparison!r}) or use ceiling='nili'")
        return self


class RSAMetric(MetricPlugin):
    """RSA between every layer's RDM and brain RDMs (per site, per area, or per subject).

    Parameters
    ----------
    distance : {"auto", "euclidean", "sqeuclidean", "correlation", "cosine"}
        Dissimilarity of layer RDMs and of area RDMs built from responses. ``"auto"``
        (default): the distance the dataset's RDMs were made with (``BrainRDMs.distance``;
        an RDM made with another distance, e.g. 1 - Pearson against Euclidean model RDMs,
        can reverse model rankings), Euclidean on responses (Kuzovkin et al. 2018).
        Site RDMs are always ``|r_i - r_j|``.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        How RDMs are compared (default Spearman).
    ceiling : {"nili", "algonauts2019"}
        Convention of RDM noise ceilings and of the scores they bound (default ``"nili"``:
        r, with the lower/upper bounds of Nili et al. 2014; ``"algonauts2019"``: mean over
        subjects of squared Spearman r, score as % of the upper bound, as the Algonauts
        Project 2019 evaluation). Both conventions' ceilings are always reported.
    selection : {"heldout", "optimistic"}
        Which layer score is the headline (default ``"heldout"``: committed on held-out
        subjects or stimuli, Brain-Score's practice). The max over layers on all data is
        always reported as ``optimistic``.
    include_pixels : bool
        Let ``pixels`` compete for the best layer (default False: it is a baseline).
    n_splits : int
        Folds of stimuli for held-out selection on responses (default 2, split halves).
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
        "RDM correlation (Spearman by default) at a layer committed on held-out data (selection=heldout): "
        "responses, mean over the sites of the ordered areas; RDMs, per headline area the held-out-subject score "
        "(r, or mean squared Spearman with ceiling=algonauts2019), averaged over headline areas, with the upper "
        "noise ceiling; pixels is a baseline, not a layer choice")
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = (
        # the headline's own quantities: responses, the site-RDM correlation averaged over the area's sites (not
        # the area RDM of all its sites together, column "r", a different and larger number); RDMs, the
        # per-subject score in the ceiling convention's unit, averaged over subjects
        LayerAreaMap("layer_area", "site_mean_r", "RDM correlation of each site's RDM with the layer RDM, mean over "
                     "the area's sites", per_unit=("layer_site", "r")),
        LayerAreaMap("layer_area", "score_mean", "RDM score of each subject's RDM with the layer RDM (r, or r² with "
                     "ceiling=algonauts2019), mean over subjects", sem="score_sem",
                     per_unit=("layer_area_subject", "score")),
    )
    plugin_version = "2"

    Params = RSAParams
    name = "rsa"

    def needs(self, dataset: Dataset, *, seed: int = 0) -> list[Need]:
        """The Gram matrix each layer RDM is made from: centred for (squared) Euclidean distances."""
        distance = self.params.distance
        if distance == "auto":
            made_with = getattr(dataset.rdms, "distance", None) if dataset.kind == "rdms" else "euclidean"
            distance = made_with if made_with in _rdm.DISTANCES else "euclidean"
        return [Need.gram(centered=distance in ("euclidean", "sqeuclidean"))]

    def check(self, dataset: Dataset) -> None:
        """Refuse stimulus folds the dataset cannot give (responses; before any computation).

        Responses are split into ``n_splits`` stimulus folds (held-out selection; the folds are
        made with ``selection="optimistic"`` too), each of which must hold at least 3 stimuli
        (3 pairs) for an RDM correlation. RDM datasets leave one subject out instead (one
        subject: no held-out score, reported as such, not an error).
        """
        if dataset.kind == "rdms":
            self._check_rdms(dataset.rdms)
            return
        n = len(dataset.stimuli)
        k = self.params.n_splits
        top = n // MIN_FOLD_STIMULI   # the folds are made (and reported) with either selection
        if top < 2:
            raise ConfigError(f"rsa: dataset '{dataset.name}' has {n} stimuli; the stimulus folds of the held-out "
                              f"layer selection need two folds of >= {MIN_FOLD_STIMULI} stimuli, i.e. at least "
                              f"{2 * MIN_FOLD_STIMULI}; use a dataset with more stimuli or another metric.")
        if k > top:
            why = (f"{k} folds need at least {k} stimuli" if k > n else
                   f"held-out folds of {n // k} stimuli have fewer than {MIN_FOLD_STIMULI} (3 pairs) for an RDM "
                   "correlation")
            raise ConfigError(f"rsa: n_splits={k} does not fit dataset '{dataset.name}' ({n} stimuli): {why}; set "
                              f"--metric-param rsa.n_splits=K with K from 2 to {top}.")

    def _check_rdms(self, rdms: BrainRDMs) -> None:
        """Refuse, before any computation, what :meth:`_score_rdms` would refuse from the RDMs' header:
        a distance layer RDMs cannot be made with, a held-out headline over an area of one subject."""
        if self.params.distance == "auto":
            self._distance_for(rdms)
        headline, _ = self._headline_rdm_areas(rdms, list(rdms.rdms))
        single = [a for a in headline if np.asarray(rdms.rdms[a]).shape[0] < 2]
        if single and self.params.selection == "heldout":
            raise ConfigError(f"rsa: headline area(s) {', '.join(single)} have one subject, so no held-out subject "
                              "can score the chosen layer; use --metric-param rsa.selection='optimistic' (labelled "
                              "optimistic), or declare headline_areas without them in the dataset's [rdms] table.")

    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        if isinstance(target, Responses):
            return self._score_responses(activations, target, seed)
        if isinstance(target, BrainRDMs):
            return self._score_rdms(activations, target, seed)
        raise DataError(f"rsa: cannot score a target of type {type(target).__name__}; expected Responses or "
                        "BrainRDMs.")

    def _distance_for(self, target: Target) -> tuple[str, str]:
        """The distance of the model RDMs and where it came from."""
        if self.params.distance != "auto":
            return self.params.distance, "parameter rsa.distance"
        if isinstance(target, Responses):
            return "euclidean", "auto: euclidean on responses (Kuzovkin et al. 2018)"
        if target.distance not in _rdm.DISTANCES:
            raise DataError(f"rsa: the dataset's RDMs were made with distance {target.distance!r}, which layer RDMs "
                            f"cannot be made with (one of {', '.join(_rdm.DISTANCES)}); set the closest one with "
                            "--metric-param rsa.distance='<distance>'.")
        return target.distance, "auto: the distance the dataset's RDMs were made with"

    def _common_summary(self, layers: list[str], candidates: np.ndarray, distance: str, source: str) -> dict:
        return {"distance": distance, "distance_source": source, "comparison": self.params.comparison,
                "selection": self.params.selection, "include_pixels": self.params.include_pixels,
                "layers_scored": layers, "candidate_layers": [layers[i] for i in candidates],
                "baseline_layers": [x for x in layers if x in BASELINE_LAYERS], "n_layers": len(layers)}

    # -- responses ------------------------------------------------------------------------
    def _score_responses(self, activations: Activations, target: Responses, seed: int) -> Score:
        distance, source = self._distance_for(target)
        p = self.params
        layers = list(activations.layers)
        candidates = candidate_layers(layers, include_baselines=p.include_pixels, metric="rsa")
        const = _check_model_side(activations, target.stimulus_ids, layers)
        res = site_rsa(activations, target, distance=distance, comparison=p.comparison,
                       n_permutations=p.n_permutations, seed=seed, alpha=p.alpha,
                       alternative=p.alternative, early_stopping=p.early_stopping, per_area=p.per_area)
        n_sites, n_layers = res.r.shape
        pix = layers.index(_PIXELS) if _PIXELS in layers else None
        # a site is usable when its correlation with every non-constant layer is defined (constant layers,
        # reported above, are NaN for every site and must not disqualify the sites)
        varying = [i for i, name in enumerate(layers) if name not in const]
        valid = np.isfinite(res.r[:, varying]).all(axis=1)
        flat = np.ptp(np.asarray(target.data, dtype=np.float64), axis=0) == 0       # (n_sites,) constant sites
        if not valid.any():
            if flat.all():
                raise DataError("rsa: every site has a constant response over stimuli (the brain side: the "
                                "signal's responses are the same for every stimulus), so no site RDM can be "
                                "compared; check the signal.")
            raise DataError(f"rsa: no site RDM has a defined correlation with every layer RDM ({int(flat.sum())} of "
                            f"{n_sites} sites are constant over stimuli; the others are undefined against some "
                            f"layer, e.g. a layer RDM with NaN from distance '{distance}'); try --metric-param "
                            "rsa.distance='euclidean' or check the signal.")
        if not valid.all():
            log.warning("rsa: %d of %d sites have constant responses (the brain side) or undefined correlations "
                        "(sites %s); they are left out of the means.", int((~valid).sum()), n_sites,
                        _names([str(x) for x in np.asarray(target.sites.names)[~valid]]))
        _, headline_areas = area_groups(target)
        site_areas = np.asarray(target.sites.areas)
        in_headline = np.isin(site_areas, headline_areas)
        use, other = valid & in_headline, valid & ~in_headline
        if not use.any():
            raise DataError(f"rsa: no site of the headline areas {list(headline_areas)} has a usable RDM (constant "
                            "responses); check the signal.")
        mean_r = res.r[use].mean(axis=0)                                   # (n_layers,) all stimuli
        best = _best(mean_r, candidates)
        # held-out stimuli: commit on the training folds, score on the held-out fold
        data = check_responses(target)
        layer_vecs = layer_rdms(activations, target.stimulus_ids, distance)    # memoised: the RDMs site_rsa used
        labels = stimulus_labels(activations, target, metric="rsa")
        splits, stratified = kfold_splits(target.n_stimuli, n_splits=self.params.n_splits, seed=seed, labels=labels,
                                          name="rsa.n_splits")
        n_folds = len(splits)
        train = np.empty((n_folds, n_layers))
        test = np.empty((n_folds, n_layers))
        test_sites = np.empty((n_folds, n_sites, n_layers))
        with np.errstate(invalid="ignore"):
            for k, (tr, te) in enumerate(splits):
                train[k] = _nanmean(site_layer_correlations(data[:, use], layer_vecs, p.comparison, stimuli=tr))
                test_sites[k] = site_layer_correlations(data, layer_vecs, p.comparison, stimuli=te)
                test[k] = _nanmean(test_sites[k][use])
        chosen, heldout = heldout_choice(train, test, candidates)
        heldout_value = float(np.nanmean(heldout)) if np.isfinite(heldout).any() else float("nan")
        fold_layers = [layers[c] if c >= 0 else None for c in chosen]
        modal = _mode([x for x in fold_layers if x is not None])
        optimistic = float(mean_r[best]) if best >= 0 else float("nan")
        value = heldout_value if self.params.selection == "heldout" else optimistic

        li = np.tile(np.arange(n_layers), n_sites)
        si = np.repeat(np.arange(n_sites), n_layers)
        table: dict[str, list] = {
            "layer": [layers[i] for i in li], "layer_index": li.tolist(),
            "site": [target.sites.names[i] for i in si], "subject": [target.sites.subjects[i] for i in si],
            "area": [target.sites.areas[i] for i in si], "headline": in_headline[si].tolist(),
            "r": _floats(res.r.ravel()),
        }
        strat = "stratified by category" if stratified else "unstratified"
        summary: dict[str, Any] = self._common_summary(layers, candidates, distance, source)
        summary.update({
            "best_layer": modal if self.params.selection == "heldout" else (layers[best] if best >= 0 else None),
            "n_sites": n_sites, "n_sites_used": int(use.sum()), "n_stimuli": target.n_stimuli,
            "headline_areas": list(headline_areas),
            "headline_rule": "sites of the dataset's ordered areas (area_order); other sites reported apart",
            "selection_rule": (f"layer committed on {n_folds} folds of stimuli ({strat}, seed {seed}): site-RDM "
                               "correlations over the training stimuli choose, the held-out stimuli score; mean "
                               "over folds") if self.params.selection == "heldout" else
                              "optimistic: the max over candidate layers of the mean over sites on all stimuli",
            "heldout": _float(heldout_value), "heldout_layers": fold_layers, "n_folds": n_folds,
            "stratified": stratified,
            "optimistic": _float(optimistic), "optimistic_layer": layers[best] if best >= 0 else None,
            "optimistic_note": "max over layers on all stimuli: the layer is chosen and scored on the same data",
            "ceiling_convention": None,
            "ceiling_note": "responses have no subject RDMs; the ceiling parameter applies to RDM datasets",
            "mean_r_per_layer": _floats(mean_r),
        })
        if pix is not None:
            summary["pixels_baseline"] = _float(float(np.nanmean(test[:, pix])) if self.params.selection == "heldout"
                                                else float(mean_r[pix]))
            summary["pixels_baseline_note"] = ("pixels layer, scored like the headline (" + (
                "mean over the held-out folds" if self.params.selection == "heldout" else "all stimuli") + ")")
        else:
            summary["pixels_baseline"] = None
            summary["pixels_baseline_note"] = "the model has no 'pixels' layer among the scored layers"
        if other.any():
            other_mean = res.r[other].mean(axis=0)
            other_best = _best(other_mean, candidates)
            if self.params.selection == "heldout":
                at_layer = [_nanmean(test_sites[k][other][:, [c]])[0] for k, c in enumerate(chosen) if c >= 0]
                at_value = float(np.nanmean(at_layer)) if np.isfinite(at_layer).any() else float("nan")
            else:
                at_value = float(other_mean[best]) if best >= 0 else float("nan")
            summary["other_sites"] = {
                "areas": sorted(set(site_areas[other].tolist())), "n_sites": int(other.sum()),
                "at_headline_layer": _float(at_value),
                "optimistic": _float(float(other_mean[other_best])) if other_best >= 0 else None,
                "optimistic_layer": layers[other_best] if other_best >= 0 else None}
        if res.p is not None:
            sig_p = fdr_bh(res.p) if self.params.fdr else res.p
            sig = (sig_p <= self.params.alpha) & np.isfinite(sig_p)
            table["p"] = _floats(res.p.ravel())
            if self.params.fdr:
                table["q"] = _floats(sig_p.ravel())
            table["n_permutations"] = res.n_used.ravel().tolist()
            table["significant"] = sig.ravel().tolist()
            summary.update(n_significant=int(sig.sum()), n_significant_sites=int(sig.any(axis=1).sum()),
                           alpha=self.params.alpha, fdr=self.params.fdr, n_permutations=self.params.n_permutations)
        is_candidate = np.isin(np.arange(n_layers), candidates)
        details = {"layer_site": table,
                   "layer": {"layer": layers, "layer_index": list(range(n_layers)), "candidate": is_candidate.tolist(),
                             "mean_r": _floats(mean_r), "sem_r": _floats(sem(res.r[use], axis=0)),
                             "heldout_train_mean": _floats(train.mean(axis=0)),
                             "heldout_test_mean": _floats(test.mean(axis=0))},
                   "heldout_folds": {"fold": list(range(n_folds)), "n_train": [int(tr.size) for tr, _ in splits],
                                     "n_test": [int(te.size) for _, te in splits], "chosen_layer": fold_layers,
                                     "chosen_layer_index": chosen.tolist(),
                                     "train_score": _floats(train[np.arange(n_folds), np.maximum(chosen, 0)]),
                                     "test_score": _floats(heldout)}}
        if res.area_r is not None and res.areas:
            details["layer_area"] = self._area_table(res, target, layers)
        return Score(value=value, details=details, summary=summary, higher_is_better=True)

    def _area_table(self, res: SiteRSA, target: Responses, layers: list[str]) -> dict[str, list]:
        areas = np.asarray(target.sites.areas)
        n_areas, n_layers = res.area_r.shape
        site_mean = np.stack([_nanmean(res.r[areas == a]) if (areas == a).any() else
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
    def _headline_rdm_areas(self, target: BrainRDMs, areas: list[str]) -> tuple[list[str], str]:
        groups = target.area_groups()
        if target.headline_areas is not None:
            headline = [a for a in areas if a in target.headline_areas]
            mixed = {target.area_group(a) for a in headline}
            if len(mixed) > 1:
                log.warning("rsa: the declared headline areas %s mix species/kinds (%s).", headline, sorted(mixed))
            return headline, "declared by the dataset (headline_areas)"
        if len(groups) > 1:
            listing = "; ".join(f"{g}: {', '.join(a)}" for g, a in groups.items())
            raise DataError(f"rsa: the RDM areas are of different species or kinds ({listing}) and the dataset "
                            "declares no headline_areas; they are never averaged into one headline silently. "
                            "Declare headline_areas = [...] in the [rdms] table of the dataset TOML "
                            "(BrainRDMs.headline_areas).")
        return areas, "every area (all of one species and kind)"

    def _score_rdms(self, activations: Activations, target: BrainRDMs, seed: int) -> Score:
        if not target.rdms:
            raise DataError("rsa: the BrainRDMs target has no areas.")
        distance, source = self._distance_for(target)
        layers = list(activations.layers)
        candidates = candidate_layers(layers, include_baselines=self.params.include_pixels, metric="rsa")
        layer_vecs = layer_rdms(activations, target.stimulus_ids, distance)
        n_layers = len(layers)
        n_stim = len(target.stimulus_ids)
        _check_model_side(activations, target.stimulus_ids, layers)
        pix = layers.index(_PIXELS) if _PIXELS in layers else None
        areas = ordered_areas(list(target.rdms), target.area_order)
        headline, headline_rule = self._headline_rdm_areas(target, areas)
        conv = self.params.ceiling
        la: dict[str, list] = {k: [] for k in ("layer", "layer_index", "area", "candidate", "n_subjects", "r_mean",
                                               "r_sem", "score_mean", "score_sem")}
        las: dict[str, list] = {k: [] for k in ("layer", "layer_index", "area", "subject", "r", "score")}
        cs: dict[str, list] = {k: [] for k in ("area", "subject", "nili_upper", "nili_lower", "algonauts2019_r_upper",
                                               "algonauts2019_r_lower", "algonauts2019_upper", "algonauts2019_lower")}
        folds: dict[str, list] = {k: [] for k in ("area", "fold", "heldout_subject", "chosen_layer",
                                                  "chosen_layer_index", "train_score", "test_score")}
        at: dict[str, list] = {k: [] for k in (
            "area", "species", "kind", "group", "headline", "n_subjects", "best_layer", "best_layer_index", "score",
            "heldout", "heldout_sem", "heldout_layer", "heldout_layer_agreement", "heldout_note", "optimistic",
            "optimistic_sem", "optimistic_layer", "optimistic_layer_index", "pixels_baseline",
            "noise_ceiling_lower", "noise_ceiling_upper", "percent_of_ceiling", "ceiling_note", "nili_lower",
            "nili_upper", "algonauts2019_lower", "algonauts2019_upper")}
        if self.params.n_permutations:
            la["p"], la["n_permutations"] = [], []
            at["p"] = []
        per_area: dict[str, dict[str, Any]] = {}
        for area in areas:
            subj = _rdm.upper(_check_rdm_stack(target.rdms[area], area, n_stim))     # (n_subjects, n_pairs)
            n_subj = subj.shape[0]
            r = _rdm.compare(subj.T, layer_vecs, self.params.comparison)                   # (n_subjects, n_layers)
            s = convention_scores(r, conv)                                          # r or r^2 per subject
            mean_s, sem_s = s.mean(axis=0), sem(s, axis=0)
            # layers are chosen on the signed comparison in both conventions: squaring (algonauts2019) would
            # let an anti-correlated layer win; the convention sets the unit of the reported score only
            best = _best(r.mean(axis=0), candidates)
            optimistic = float(mean_s[best]) if best >= 0 else float("nan")
            # leave one subject out: commit on the mean score of the others, score on the held-out subject
            heldout, heldout_sem, heldout_layer, agreement, note = float("nan"), float("nan"), None, None, ""
            if n_subj >= 2:
                train = (r.sum(axis=0)[None, :] - r) / (n_subj - 1)
                chosen, held = heldout_choice(train, s, candidates)
                heldout = float(np.nanmean(held)) if np.isfinite(held).any() else float("nan")
                heldout_sem = float(sem(held[:, None], axis=0)[0])
                names = [layers[c] if c >= 0 else None for c in chosen]
                heldout_layer = _mode([x for x in names if x is not None])
                agreement = float(np.mean([x == heldout_layer for x in names])) if heldout_layer else None
                folds["area"] += [area] * n_subj
                folds["fold"] += list(range(n_subj))
                folds["heldout_subject"] += list(range(n_subj))
                folds["chosen_layer"] += names
                folds["chosen_layer_index"] += chosen.tolist()
                folds["train_score"] += _floats(train[np.arange(n_subj), np.maximum(chosen, 0)])
                folds["test_score"] += _floats(held)
            else:
                note = (f"{n_subj} subject: no held-out subject to score a committed layer on; only the optimistic "
                        "score exists")
            ceilings = {"nili": rdm_noise_ceiling(subj, self.params.comparison, "nili")}
            if self.params.comparison == "spearman":
                ceilings["algonauts2019"] = rdm_noise_ceiling(subj, "spearman", "algonauts2019")
            sel = ceilings[conv]
            score = heldout if self.params.selection == "heldout" else optimistic
            percent = 100.0 * score / sel.upper if np.isfinite(sel.upper) and sel.upper != 0 else float("nan")
            pixels = float(mean_s[pix]) if pix is not None else float("nan")
            p = None
            if self.params.n_permutations:
                prm = self.params
                group = np.mean(_rdm.prepare(subj.T, prm.comparison), axis=1, keepdims=True)   # mean over subjects
                pr = permutation_test(_rdm.prepare(layer_vecs, prm.comparison), group, n_stim,
                                      n_permutations=prm.n_permutations, seed=seed, alternative=prm.alternative,
                                      alpha=prm.alpha, early_stopping=prm.early_stopping)
                p = pr.p[0]
                la["p"] += _floats(p)
                la["n_permutations"] += pr.n_used[0].tolist()
                at["p"].append(float(p[best]) if best >= 0 else float("nan"))
            la["layer"] += layers
            la["layer_index"] += list(range(n_layers))
            la["area"] += [area] * n_layers
            la["candidate"] += np.isin(np.arange(n_layers), candidates).tolist()
            la["n_subjects"] += [n_subj] * n_layers
            la["r_mean"] += _floats(r.mean(axis=0))
            la["r_sem"] += _floats(sem(r, axis=0))
            la["score_mean"] += _floats(mean_s)
            la["score_sem"] += _floats(sem_s)
            li = np.tile(np.arange(n_layers), n_subj)
            las["layer"] += [layers[i] for i in li]
            las["layer_index"] += li.tolist()
            las["area"] += [area] * li.size
            las["subject"] += np.repeat(np.arange(n_subj), n_layers).tolist()
            las["r"] += _floats(r.ravel())
            las["score"] += _floats(s.ravel())
            _ceiling_rows(cs, area, ceilings)
            reported = heldout_layer if self.params.selection == "heldout" else (layers[best] if best >= 0 else None)
            row = {"area": area, "species": target.area_species.get(area), "kind": target.area_kinds.get(area),
                   "group": target.area_group(area), "headline": area in headline, "n_subjects": n_subj,
                   "best_layer": reported, "best_layer_index": layers.index(reported) if reported else -1,
                   "score": score, "heldout": heldout, "heldout_sem": heldout_sem, "heldout_layer": heldout_layer,
                   "heldout_layer_agreement": agreement, "heldout_note": note, "optimistic": optimistic,
                   "optimistic_sem": float(sem_s[best]) if best >= 0 else float("nan"),
                   "optimistic_layer": layers[best] if best >= 0 else None, "optimistic_layer_index": int(best),
                   "pixels_baseline": pixels, "noise_ceiling_lower": sel.lower, "noise_ceiling_upper": sel.upper,
                   "percent_of_ceiling": percent, "ceiling_note": sel.note,
                   "nili_lower": ceilings["nili"].lower, "nili_upper": ceilings["nili"].upper,
                   "algonauts2019_lower": ceilings["algonauts2019"].lower if "algonauts2019" in ceilings else None,
                   "algonauts2019_upper": ceilings["algonauts2019"].upper if "algonauts2019" in ceilings else None}
            for k, v in row.items():
                at[k].append(_float(v) if isinstance(v, float) else v)
            per_area[area] = row

        missing = [a for a in headline if not np.isfinite(per_area[a]["score"])]
        if missing and self.params.selection == "heldout":
            notes = "; ".join(f"{a}: {per_area[a]['heldout_note'] or 'no finite held-out score'}" for a in missing)
            raise DataError(f"rsa: no held-out score for headline area(s) {', '.join(missing)} ({notes}). Use "
                            "--metric-param rsa.selection='optimistic' (labelled optimistic), or declare "
                            "headline_areas without them in the dataset's [rdms] table.")
        value = float(np.mean([per_area[a]["score"] for a in headline]))
        uppers = [per_area[a]["noise_ceiling_upper"] for a in headline]
        ceiling = float(np.mean(uppers)) if all(np.isfinite(u) for u in uppers) else None
        summary = self._rdm_summary(layers, candidates, distance, source, target, areas, headline, headline_rule,
                                    per_area, value, ceiling)
        return Score(value=value, ceiling=ceiling,
                     details={"layer_area": la, "layer_area_subject": las, "area": at, "ceiling_subject": cs,
                              "heldout_folds": folds},
                     summary=summary, higher_is_better=True)

    def _rdm_summary(self, layers: list[str], candidates: np.ndarray, distance: str, source: str,
                     target: BrainRDMs, areas: list[str], headline: list[str], headline_rule: str,
                     per_area: dict[str, dict[str, Any]], value: float, ceiling: float | None) -> dict[str, Any]:
        def by_area(key: str) -> dict[str, Any]:
            return {a: (_float(per_area[a][key]) if isinstance(per_area[a][key], float) else per_area[a][key])
                    for a in areas}

        def mean_over(areas_: list[str], key: str) -> float | None:
            vals = [per_area[a][key] for a in areas_]
            return float(np.mean(vals)) if vals and all(v is not None and np.isfinite(v) for v in vals) else None

        conv = self.params.ceiling
        summary = self._common_summary(layers, candidates, distance, source)
        summary.update({
            "brain_distance": target.distance, "n_stimuli": len(target.stimulus_ids), "areas": areas,
            "ceiling_convention": conv, "score_unit": UNITS[conv],
            "ceiling_reference": ("Nili et al. 2014: per subject vs the pooled RDM of all (upper) / the other "
                                  "(lower) subjects, pooled as rsatoolbox pool_rdm; mean over subjects"
                                  if conv == "nili" else
                                  "Algonauts 2019 (testSub_fmri.py): mean over subjects of squared Spearman r "
                                  "with the mean RDM of all (upper) / the other (lower) subjects; score as % of "
                                  "the upper bound"),
            "selection_rule": ("leave one subject out: per fold the layer with the highest mean correlation over "
                               "the other subjects (signed, in both conventions) is scored on the held-out subject; "
                               "mean over folds" if self.params.selection == "heldout" else
                               "optimistic: per area the layer with the highest mean correlation over all subjects"),
            "headline_areas": headline, "headline_rule": headline_rule, "area_groups": target.area_groups(),
            "group_scores": {g: mean_over(a, "score") for g, a in target.area_groups().items()},
            "best_layer": by_area("best_layer"),
            "heldout": by_area("heldout"), "heldout_layer": by_area("heldout_layer"),
            "heldout_note": {a: per_area[a]["heldout_note"] for a in areas if per_area[a]["heldout_note"]},
            "optimistic": by_area("optimistic"), "optimistic_layer": by_area("optimistic_layer"),
            "optimistic_note": "max over layers of the mean over all subjects: chosen and scored on the same data",
            "headline_heldout": mean_over(headline, "heldout"),
            "headline_optimistic": mean_over(headline, "optimistic"),
            "pixels_baseline": by_area("pixels_baseline") if _PIXELS in layers else None,
            "headline_pixels_baseline": mean_over(headline, "pixels_baseline") if _PIXELS in layers else None,
            "noise_ceiling_lower": by_area("noise_ceiling_lower"),
            "noise_ceiling_upper": by_area("noise_ceiling_upper"),
            "ceiling_note": {a: per_area[a]["ceiling_note"] for a in areas if per_area[a]["ceiling_note"]},
            "noise_ceilings": {c: {a: {"lower": _opt(per_area[a][f"{c}_lower"]),
                                       "upper": _opt(per_area[a][f"{c}_upper"])} for a in areas}
                               for c in CEILING_CONVENTIONS if c == "nili" or self.params.comparison == "spearman"},
            "percent_of_ceiling": by_area("percent_of_ceiling"),
            "headline_percent_of_ceiling": (100.0 * value / ceiling if ceiling else None),
            "headline_ceiling": ceiling,
        })
        return summary


def _check_model_side(activations: Activations, stimulus_ids: tuple[str, ...], layers: list[str]) -> list[str]:
    """The layers constant over the scored stimuli; a DataError when every layer is (the model side is empty)."""
    order = stimulus_order(activations.stimulus_ids, stimulus_ids)
    const = constant_layers(activations, rows=order)
    if const and len(const) == len(layers):
        raise DataError(f"rsa: every layer of the model ({_names(const)}) has the same features for every "
                        "stimulus (the model side is constant, not the brain signal), so its RDMs are constant and "
                        "cannot be compared; check the model's weights (e.g. an all-zero --weights-file).")
    if const:
        log.warning("rsa: layer(s) %s of the model have the same features for every stimulus (constant RDM, the "
                    "model side); their scores are undefined (NaN).", _names(const))
    return const


def _names(names: list[str], n: int = 4) -> str:
    shown = ", ".join(f"'{x}'" for x in names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _ceiling_rows(cs: dict[str, list], area: str, ceilings: dict[str, RDMCeiling]) -> None:
    nili = ceilings["nili"]
    alg = ceilings.get("algonauts2019")
    n = nili.n_subjects
    cs["area"] += [area] * n
    cs["subject"] += list(range(n))
    cs["nili_upper"] += _floats(nili.upper_per_subject)
    cs["nili_lower"] += _floats(nili.lower_per_subject)
    for col, attr in (("algonauts2019_r_upper", "r_upper"), ("algonauts2019_r_lower", "r_lower"),
                      ("algonauts2019_upper", "upper_per_subject"), ("algonauts2019_lower", "lower_per_subject")):
        cs[col] += _floats(getattr(alg, attr)) if alg is not None else [None] * n


def _best(scores: np.ndarray, candidates: np.ndarray) -> int:
    """Index of the candidate layer with the highest finite score; -1 if none is finite."""
    vals = np.asarray(scores, dtype=np.float64)[candidates]
    if not np.isfinite(vals).any():
        return -1
    return int(candidates[int(np.argmax(np.where(np.isfinite(vals), vals, -np.inf)))])


def _mode(names: list[str]) -> str | None:
    """Most frequent name; ties go to the one seen first."""
    if not names:
        return None
    counts = Counter(names)
    top = max(counts.values())
    return next(x for x in names if counts[x] == top)


def _nanmean(r: np.ndarray) -> np.ndarray:
    """Mean over sites (axis 0) ignoring NaN sites; NaN where no site is finite. (n_layers,) float64."""
    finite = np.isfinite(r)
    count = finite.sum(axis=0)
    total = np.where(finite, r, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


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


def _opt(v: float | None) -> float | None:
    return None if v is None else float(v)


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
