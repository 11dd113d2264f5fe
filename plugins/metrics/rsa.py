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

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from framework.contracts import MetricPlugin
from framework.errors import ConfigError, DataError
from framework.types import Activations, BrainRDMs, Responses, Score, Target
from framework.validation import check_option
from plugins.metrics import _rdm
from framework.stats import fdr_bh
from plugins.metrics._permutation import ALTERNATIVES, permutation_test

log = logging.getLogger("framework.metrics.rsa")

#: Bytes of prepared float64 site RDMs held at once.
_SITE_BLOCK_BYTES = 256 * 2**20
#: Bytes of one block of prepared float64 site RDMs fed to the permutation test.
_PERMUTATION_BLOCK_BYTES = 32 * 2**20


# --------------------------------------------------------------------------- validation helpers
def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` as int if it is an integer ``>= minimum``; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"Invalid value {value!r} for {name}; expected an integer >= {minimum}.")
    return int(value)


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` as float if ``0 < value < 1``; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"Invalid value {value!r} for {name}; expected a number strictly between 0 and 1.")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"Invalid value {value!r} for {name}; expected true or false.")
    return bool(value)


# --------------------------------------------------------------------------- shared computations
def stimulus_order(activations: Activations, stimulus_ids: tuple[str, ...]) -> np.ndarray:
    """Rows of ``activations`` in the order of the target's ``stimulus_ids``, (n_stimuli,) int64."""
    pos = {s: i for i, s in enumerate(activations.stimulus_ids)}
    missing = [s for s in stimulus_ids if s not in pos]
    if missing:
        raise DataError(f"{len(missing)} of the target's {len(stimulus_ids)} stimuli have no activations "
                        f"(first: '{missing[0]}'). Extract activations for the target's stimulus set.")
    return np.array([pos[s] for s in stimulus_ids], dtype=np.int64)


def layer_rdms(activations: Activations, stimulus_ids: tuple[str, ...], distance: str) -> np.ndarray:
    """Condensed RDM of every layer over the target's stimuli.

    Parameters
    ----------
    activations : Activations
        Layers (n_stimuli_act, n_features), float32, possibly memory-mapped.
    stimulus_ids : tuple of str, (n_stimuli,)
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}

    Returns
    -------
    ndarray, (n_pairs, n_layers) float64
    """
    if len(activations) == 0:
        raise DataError("Activations have no layers; extract at least one layer.")
    order = stimulus_order(activations, stimulus_ids)
    # Cached activations carry a content key: their RDMs are computed once and reused by
    # every (signal, metric) cell of the model instead of once per cell.
    memo_key = None
    if activations.info.get("key"):
        memo_key = (activations.info["key"], activations.layers, distance, order.tobytes())
        hit = _LAYER_RDM_MEMO.get(memo_key)
        if hit is not None:
            return hit
    identity = order.size == len(activations.stimulus_ids) and np.array_equal(order, np.arange(order.size))
    cols = [_rdm.rdm(activations[name], distance, order=None if identity else order, name=f"layer '{name}'")
            for name in activations.layers]
    out = np.column_stack(cols)
    if memo_key is not None:
        out.setflags(write=False)
        _LAYER_RDM_MEMO[memo_key] = out
        while len(_LAYER_RDM_MEMO) > _LAYER_RDM_MEMO_SIZE:
            _LAYER_RDM_MEMO.pop(next(iter(_LAYER_RDM_MEMO)))
    return out


#: Recently computed layer RDMs, keyed by (activations key, layers, distance, stimulus order).
_LAYER_RDM_MEMO: dict[tuple, np.ndarray] = {}
_LAYER_RDM_MEMO_SIZE = 4


def _site_blocks(data: np.ndarray, comparison: str, block_bytes: int = _SITE_BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Prepared site RDMs, (n_pairs, n_block) float64, block by block (``block_bytes`` per block)."""
    n_pairs = _rdm.n_pairs_of(data.shape[0])
    step = max(1, block_bytes // (8 * max(n_pairs, 1)))
    for start in range(0, data.shape[1], step):
        yield _rdm.prepare(_rdm.site_rdms(data[:, start:start + step]), comparison)


@dataclass
class SiteRSA:
    """Per-site and per-area RSA of a :class:`Responses` target.

    Attributes
    ----------
    r : ndarray, (n_sites, n_layers) float64
    p : ndarray, (n_sites, n_layers) float64 or None
    n_used : ndarray, (n_sites, n_layers) int64 or None
        Permutations used per cell (early stopping).
    areas : list of str
    area_r : ndarray, (n_areas, n_layers) float64 or None
    area_p : ndarray, (n_areas, n_layers) float64 or None
    area_n_used : ndarray, (n_areas, n_layers) int64 or None
    """

    r: np.ndarray
    p: np.ndarray | None
    n_used: np.ndarray | None
    areas: list[str]
    area_r: np.ndarray | None
    area_p: np.ndarray | None
    area_n_used: np.ndarray | None


def ordered_areas(present: tuple[str, ...] | list[str], area_order: tuple[str, ...]) -> list[str]:
    """Areas in ``present``: those of ``area_order`` first in that order, then the rest sorted."""
    uniq = set(present)
    return [a for a in area_order if a in uniq] + sorted(uniq - set(area_order))


def site_rsa(activations: Activations, responses: Responses, *, distance: str = "euclidean",
             comparison: str = "spearman", n_permutations: int = 0, seed: int | np.random.Generator = 0, alpha: float = 0.001,
             alternative: str = "greater", early_stopping: bool = True, per_area: bool = True) -> SiteRSA:
    """Compare every site's (and area's) RDM with every layer's RDM.

    Parameters
    ----------
    activations : Activations
    responses : Responses
        ``data`` (n_stimuli, n_sites).
    distance : str
        Distance of layer and area RDMs; site RDMs are always ``|r_i - r_j|``.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
    n_permutations : int
        0 for no test; otherwise the permutations of :func:`permutation_test`.
    seed : int or numpy.random.Generator
        Seeds :func:`plugins.metrics._permutation.draw_permutations`.
    alpha, alternative, early_stopping
        Passed to :func:`plugins.metrics._permutation.permutation_test`.
    per_area : bool
        Also build one RDM per area from its sites together.

    Returns
    -------
    SiteRSA
    """
    data = check_array_responses(responses)
    layers = layer_rdms(activations, responses.stimulus_ids, distance)
    n_stim = data.shape[0]
    areas = ordered_areas(responses.sites.areas, responses.area_order) if per_area else []
    area_vectors = None
    if areas:
        area_idx = np.asarray(responses.sites.areas)
        area_vectors = np.column_stack([_rdm.rdm(data[:, area_idx == a], distance, name=f"area '{a}' responses")
                                        for a in areas])
    if comparison not in _rdm.LINEAR_COMPARISONS:
        r = np.concatenate([_rdm.compare(_rdm.site_rdms(data[:, s:s + 256]), layers, comparison)
                            for s in range(0, data.shape[1], 256)], axis=0)
        area_r = None if area_vectors is None else _rdm.compare(area_vectors, layers, comparison)
        return SiteRSA(r, None, None, areas, area_r, None, None)

    z_layers = _rdm.prepare(layers, comparison)
    if n_permutations == 0:
        r = np.concatenate([blk.T @ z_layers for blk in _site_blocks(data, comparison)], axis=0)
        area_r = None if area_vectors is None else _rdm.prepare(area_vectors, comparison).T @ z_layers
        return SiteRSA(_clip(r, comparison), None, None, areas,
                       None if area_r is None else _clip(area_r, comparison), None, None)
    # One test for sites and areas: they share the permutations, and the layers are gathered once. Small site
    # blocks keep the float64 ranking transient; the test groups them into float32 matrices itself.
    blocks = _site_blocks(data, comparison, _PERMUTATION_BLOCK_BYTES)
    if area_vectors is not None:
        blocks = itertools.chain(blocks, [_rdm.prepare(area_vectors, comparison)])
    res = permutation_test(z_layers, blocks, n_stim, n_permutations=n_permutations, seed=seed,
                           alternative=alternative, alpha=alpha, early_stopping=early_stopping)
    n_sites = data.shape[1]
    r = _clip(res.observed, comparison)
    if area_vectors is None:
        return SiteRSA(r, res.p, res.n_used, areas, None, None, None)
    return SiteRSA(r[:n_sites], res.p[:n_sites], res.n_used[:n_sites], areas, r[n_sites:], res.p[n_sites:],
                   res.n_used[n_sites:])


def _clip(r: np.ndarray, comparison: str) -> np.ndarray:
    return r if comparison == "rho-a" else np.clip(r, -1.0, 1.0)


def check_array_responses(responses: Responses) -> np.ndarray:
    """Responses data as float64 (n_stimuli, n_sites), checked finite and large enough."""
    data = np.asarray(responses.data, dtype=np.float64)
    if data.shape[0] < 3:
        raise DataError(f"Responses have {data.shape[0]} stimuli; RSA needs at least 3.")
    if data.shape[1] == 0:
        raise DataError("Responses have no sites; check the signal's site selection.")
    if not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(data))[0]
        raise DataError(f"Responses contain {int((~np.isfinite(data)).sum())} NaN/inf values (first at stimulus "
                        f"'{responses.stimulus_ids[bad[0]]}', site '{responses.sites.names[bad[1]]}'); "
                        "drop the site or fix the signal.")
    return data


def paired_compare(a: np.ndarray, b: np.ndarray, comparison: str) -> np.ndarray:
    """Compare column ``k`` of ``a`` with column ``k`` of ``b``.

    Parameters
    ----------
    a, b : ndarray, (n_pairs, k)
        Condensed RDMs.
    comparison : str

    Returns
    -------
    ndarray, (k,) float64
    """
    if comparison not in _rdm.LINEAR_COMPARISONS:
        return np.array([_rdm.kendall_tau_a(a[:, k], b[:, k]) for k in range(a.shape[1])])
    out = np.einsum("pk,pk->k", _rdm.prepare(a, comparison), _rdm.prepare(b, comparison))
    return _clip(out, comparison)


def noise_ceilings(subjects: np.ndarray, comparison: str = "spearman") -> tuple[float, float]:
    """Lower and upper noise ceiling of a stack of subject RDMs.

    Parameters
    ----------
    subjects : ndarray, (n_subjects, n_pairs)
        Condensed RDMs.
    comparison : str

    Returns
    -------
    lower : float
        Mean over subjects of compare(subject, mean of the other subjects); NaN for one subject.
    upper : float
        Mean over subjects of compare(subject, mean of all subjects).
    """
    s = np.asarray(subjects, dtype=np.float64)
    n = s.shape[0]
    total = s.sum(axis=0)
    upper = float(np.mean(paired_compare(s.T, np.repeat((total / n)[:, None], n, axis=1), comparison)))
    if n < 2:
        return float("nan"), upper
    others = (total[None, :] - s) / (n - 1)
    lower = float(np.mean(paired_compare(s.T, others.T, comparison)))
    return lower, upper


# --------------------------------------------------------------------------- the plugin
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
    plugin_version = "1"

    def __init__(self, *, distance: str = "euclidean", comparison: str = "spearman", n_permutations: int = 0,
                 alpha: float = 0.001, fdr: bool = False, per_area: bool = True, alternative: str = "greater",
                 early_stopping: bool = True) -> None:
        self.distance = check_option("rsa: distance", distance, _rdm.DISTANCES)
        self.comparison = check_option("rsa: comparison", comparison, _rdm.COMPARISONS)
        self.n_permutations = check_int("rsa: n_permutations", n_permutations, minimum=0)
        self.alpha = check_fraction("rsa: alpha", alpha)
        self.fdr = check_bool("rsa: fdr", fdr)
        self.per_area = check_bool("rsa: per_area", per_area)
        self.alternative = check_option("rsa: alternative", alternative, ALTERNATIVES)
        self.early_stopping = check_bool("rsa: early_stopping", early_stopping)
        _rdm.check_comparison_for_permutations(self.comparison, self.n_permutations, "rsa")

    def parameters(self) -> dict[str, Any]:
        return {"distance": self.distance, "comparison": self.comparison, "n_permutations": self.n_permutations,
                "alpha": self.alpha, "fdr": self.fdr, "per_area": self.per_area, "alternative": self.alternative,
                "early_stopping": self.early_stopping}

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
                 "sem_r": _floats(_sem(res.r[valid], axis=0))}
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
            sem_r = _sem(r, axis=0)
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


def _sem(x: np.ndarray, axis: int = 0) -> np.ndarray:
    n = x.shape[axis]
    if n < 2:
        return np.full(np.delete(x.shape, axis), np.nan)
    return np.std(x, axis=axis, ddof=1) / np.sqrt(n)


def _float(v: float) -> float | None:
    """JSON-friendly float: NaN stays NaN (the store writes it as null)."""
    return float(v)


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
