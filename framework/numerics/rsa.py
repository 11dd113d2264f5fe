"""Representational similarity of single sites and of areas with every layer.

:func:`site_rsa` is the computation shared by the ``rsa`` and ``alignment``
metrics: for a :class:`~framework.types.Responses` target, every site's RDM
``|r_i - r_j|`` (Kuzovkin et al. 2018) and, optionally, every area's RDM over
its sites together are compared with every layer's RDM
(:func:`framework.numerics.rdm.layer_rdms`), with an optional permutation test
of every (site, layer) and (area, layer) cell that shares its permutations
between sites and areas (:func:`framework.numerics.permutation.permutation_test`).

:func:`site_layer_correlations` is the same site-by-layer comparison restricted
to a subset of the stimuli (both RDMs over the pairs of that subset), the
building block of held-out layer selection over stimuli; :func:`subset_pairs`
gives the condensed positions of those pairs.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

from framework.errors import DataError
from framework.numerics import rdm
from framework.numerics.areas import ordered_areas
from framework.numerics.permutation import permutation_test
from framework.types import Activations, Responses

__all__ = ["PERMUTATION_BLOCK_BYTES", "PERMUTATION_PREFETCH", "RANK_THREADS", "SiteRSA", "check_responses",
           "site_layer_correlations", "site_rsa", "subset_pairs"]

#: Bytes of one block of prepared float64 site RDMs fed to the permutation test.
PERMUTATION_BLOCK_BYTES = 32 * 2**20
#: Threads ranking the site RDMs (:func:`framework.numerics.rdm.site_rdm_blocks`).
RANK_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Blocks of site RDMs ranked ahead of the permutation test (so ranking overlaps the test's serial parts).
PERMUTATION_PREFETCH = 4


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


def check_responses(responses: Responses) -> np.ndarray:
    """Responses data as float64, checked finite and large enough for RSA.

    Parameters
    ----------
    responses : Responses
        ``data`` (n_stimuli, n_sites).

    Returns
    -------
    ndarray, (n_stimuli, n_sites) float64

    Raises
    ------
    DataError
        Fewer than 3 stimuli, no sites, or NaN/inf values (naming the first stimulus and site).
    """
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


def site_rsa(activations: Activations, responses: Responses, *, distance: str = "euclidean",
             comparison: str = "spearman", n_permutations: int = 0, seed: int | np.random.Generator = 0,
             alpha: float = 0.001, alternative: str = "greater", early_stopping: bool = True,
             per_area: bool = True) -> SiteRSA:
    """Compare every site's (and area's) RDM with every layer's RDM.

    Parameters
    ----------
    activations : Activations
        Layers, each (n_stimuli_act, n_features) float32, covering the stimuli of ``responses``
        (in any order).
    responses : Responses
        ``data`` (n_stimuli, n_sites), finite; ``sites.areas`` and ``area_order`` define the areas.
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}
        Distance of layer and area RDMs; site RDMs are always ``|r_i - r_j|``.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        How RDMs are compared (:func:`framework.numerics.rdm.compare`).
    n_permutations : int
        0 for no test; otherwise the permutations of
        :func:`framework.numerics.permutation.permutation_test` (linear comparisons only).
    seed : int or numpy.random.Generator
        Seeds :func:`framework.numerics.permutation.draw_permutations`.
    alpha, alternative, early_stopping
        Passed to :func:`framework.numerics.permutation.permutation_test`.
    per_area : bool
        Also build one RDM per area from its sites together.

    Returns
    -------
    SiteRSA
        ``r`` (n_sites, n_layers) float64 and, with a test, ``p`` and ``n_used``; per-area values
        (n_areas, n_layers) for the areas of :func:`framework.numerics.areas.ordered_areas`.
    """
    data = check_responses(responses)
    layers = rdm.layer_rdms(activations, responses.stimulus_ids, distance)
    n_stim = data.shape[0]
    areas = ordered_areas(responses.sites.areas, responses.area_order) if per_area else []
    area_vectors = None
    if areas:
        area_idx = np.asarray(responses.sites.areas)
        area_vectors = np.column_stack([rdm.rdm(data[:, area_idx == a], distance, name=f"area '{a}' responses")
                                        for a in areas])
    if comparison not in rdm.LINEAR_COMPARISONS:
        r = np.concatenate([rdm.compare(rdm.site_rdms(data[:, s:s + 256]), layers, comparison)
                            for s in range(0, data.shape[1], 256)], axis=0)
        area_r = None if area_vectors is None else rdm.compare(area_vectors, layers, comparison)
        return SiteRSA(r, None, None, areas, area_r, None, None)

    z_layers = rdm.prepare(layers, comparison)
    if n_permutations == 0:
        r = np.concatenate([blk.T @ z_layers for blk in rdm.site_rdm_blocks(data, comparison,
                                                                             n_threads=RANK_THREADS)], axis=0)
        area_r = None if area_vectors is None else rdm.prepare(area_vectors, comparison).T @ z_layers
        return SiteRSA(rdm.clip_comparison(r, comparison), None, None, areas,
                       None if area_r is None else rdm.clip_comparison(area_r, comparison), None, None)
    # One test for sites and areas: they share the permutations, and the layers are gathered once. Small site
    # blocks keep the float64 ranking transient; the test groups them into float32 matrices itself.
    blocks = rdm.site_rdm_blocks(data, comparison, PERMUTATION_BLOCK_BYTES, n_threads=RANK_THREADS,
                                 prefetch=PERMUTATION_PREFETCH)
    if area_vectors is not None:
        blocks = itertools.chain(blocks, [rdm.prepare(area_vectors, comparison)])
    res = permutation_test(z_layers, blocks, n_stim, n_permutations=n_permutations, seed=seed,
                           alternative=alternative, alpha=alpha, early_stopping=early_stopping)
    n_sites = data.shape[1]
    r = rdm.clip_comparison(res.observed, comparison)
    if area_vectors is None:
        return SiteRSA(r, res.p, res.n_used, areas, None, None, None)
    return SiteRSA(r[:n_sites], res.p[:n_sites], res.n_used[:n_sites], areas, r[n_sites:], res.p[n_sites:],
                   res.n_used[n_sites:])


def subset_pairs(n_stimuli: int, stimuli: np.ndarray) -> np.ndarray:
    """Positions in a condensed RDM over ``n_stimuli`` of the pairs within ``stimuli``.

    Parameters
    ----------
    n_stimuli : int
        Stimuli of the full RDM.
    stimuli : ndarray of int, (n_subset,)
        Distinct stimulus indices in ``[0, n_stimuli)``, ascending.

    Returns
    -------
    ndarray of int64, (n_subset (n_subset - 1) / 2,)
        ``full[positions]`` is the condensed RDM of the subset in pdist order, the same
        as the RDM computed from the subset's rows alone (distances between two
        stimuli do not depend on the others).
    """
    idx = np.asarray(stimuli, dtype=np.int64)
    if idx.ndim != 1 or (idx.size > 1 and (np.diff(idx) <= 0).any()) or (idx.size and (
            idx[0] < 0 or idx[-1] >= n_stimuli)):
        raise DataError(f"Stimulus subset must be distinct ascending indices in [0, {n_stimuli}), got {idx[:5]}...")
    p, q = rdm.triu_indices(idx.size)
    return rdm.condensed_position(idx[p], idx[q], n_stimuli)


def site_layer_correlations(data: np.ndarray, layer_vectors: np.ndarray, comparison: str = "spearman", *,
                            stimuli: np.ndarray | None = None,
                            block_bytes: int = rdm.SITE_BLOCK_BYTES) -> np.ndarray:
    """Every site's RDM ``|r_i - r_j|`` against every layer's RDM, over a subset of the stimuli.

    Parameters
    ----------
    data : ndarray, (n_stimuli, n_sites) float64
        Responses, finite (:func:`check_responses`).
    layer_vectors : ndarray, (n_pairs, n_layers) float64
        Condensed layer RDMs over all ``n_stimuli`` (:func:`framework.numerics.rdm.layer_rdms`).
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}
        As :func:`framework.numerics.rdm.compare`.
    stimuli : ndarray of int, (n_subset,), optional
        Ascending stimulus indices; both RDMs are restricted to their pairs. All stimuli by default.
    block_bytes : int
        Bytes of one block of prepared float64 site RDMs.

    Returns
    -------
    ndarray, (n_sites, n_layers) float64
        NaN where a site is constant over the subset (or a layer RDM is constant).
    """
    x = np.asarray(data, dtype=np.float64)
    layers = np.asarray(layer_vectors, dtype=np.float64)
    if stimuli is not None:
        keep = np.asarray(stimuli, dtype=np.int64)
        layers = layers[subset_pairs(x.shape[0], keep)]
        x = x[keep]
    if x.shape[0] < 3:
        raise DataError(f"An RDM comparison needs at least 3 stimuli, got {x.shape[0]} in the subset; "
                        "use fewer folds (more stimuli per fold).")
    if layers.shape[0] != rdm.n_pairs_of(x.shape[0]):
        raise DataError(f"Layer RDMs have {layers.shape[0]} condensed entries, expected {rdm.n_pairs_of(x.shape[0])} "
                        f"for {x.shape[0]} stimuli.")
    if comparison not in rdm.LINEAR_COMPARISONS:
        return np.concatenate([rdm.compare(rdm.site_rdms(x[:, s:s + 256]), layers, comparison)
                               for s in range(0, x.shape[1], 256)], axis=0)
    z_layers = rdm.prepare(layers, comparison)
    r = np.concatenate([blk.T @ z_layers for blk in rdm.site_rdm_blocks(x, comparison, block_bytes)], axis=0)
    return rdm.clip_comparison(r, comparison)
