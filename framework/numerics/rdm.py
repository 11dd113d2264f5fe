"""Representational dissimilarity matrices (RDMs) and their comparison.

RDMs are handled as *condensed* upper triangles, in the order of
:func:`scipy.spatial.distance.pdist` (row-major, ``i < j``), so an RDM over
``n`` stimuli is a vector of ``n_pairs = n (n - 1) / 2`` float64 values.

Layer RDMs are computed from the Gram matrix ``X X^T`` accumulated over blocks of
features in float64 (:func:`framework.numerics.gram.gram`), so a layer of
~300,000 features never needs a float64 copy of the whole array;
:func:`layer_rdms` builds every layer's RDM over a target's stimuli and memoises
the result for cached activations. Single-site RDMs are ``|r_i - r_j|``
(:func:`site_rdms`, :func:`site_rdm_blocks`).

Comparisons are dot products of *prepared* vectors (:func:`prepare`): ranks (or
values) are computed once per RDM, centred and scaled so that the comparison of
every pair of RDMs is one matrix product.

Comparison methods (rsatoolbox conventions):

``"spearman"``
    Pearson correlation of average ranks (ties share their mean rank); equals
    :func:`scipy.stats.spearmanr`.
``"pearson"``
    Pearson correlation of the dissimilarities.
``"rho-a"``
    Spearman's rho without tie correction,
    ``12 * sum(c_x * c_y) / (n^3 - n)`` with ``c`` the average ranks minus their
    mean and ``n = n_pairs``.
``"kendall-tau-a"``
    ``(n_concordant - n_discordant) / (n (n - 1) / 2)``; pairs tied in either
    vector count as neither.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import scipy.stats

from framework.errors import ConfigError, DataError
from framework.numerics.gram import DEFAULT_BLOCK_BYTES, gram
from framework.numerics.stimuli import stimulus_order
from framework.types import Activations
from framework.validation import check_option

__all__ = ["COMPARISONS", "DISTANCES", "LINEAR_COMPARISONS", "RANK_BLOCK_ELEMENTS", "SITE_BLOCK_BYTES",
           "average_ranks", "check_comparison_for_permutations", "clip_comparison", "compare", "condensed_position",
           "kendall_tau_a", "layer_rdms", "n_pairs_of", "paired_compare", "prepare", "rdm", "rdm_from_gram",
           "site_rdm_blocks", "site_rdms", "triu_indices", "upper"]

log = logging.getLogger("framework.numerics.rdm")

#: Distances of :func:`rdm` (as :func:`scipy.spatial.distance.pdist`).
DISTANCES: tuple[str, ...] = ("euclidean", "sqeuclidean", "correlation", "cosine")
#: Comparisons of :func:`compare` (see the module docstring).
COMPARISONS: tuple[str, ...] = ("spearman", "pearson", "kendall-tau-a", "rho-a")
#: Comparisons that are one matrix product of prepared vectors (and so can be permuted fast).
LINEAR_COMPARISONS: tuple[str, ...] = ("spearman", "pearson", "rho-a")

#: Bytes of prepared float64 site RDMs held at once by :func:`site_rdm_blocks`.
SITE_BLOCK_BYTES = 256 * 2**20


def n_pairs_of(n_stimuli: int) -> int:
    """Length of the condensed upper triangle of an ``(n_stimuli, n_stimuli)`` RDM.

    Parameters
    ----------
    n_stimuli : int

    Returns
    -------
    int
        ``n_stimuli * (n_stimuli - 1) // 2``.
    """
    return n_stimuli * (n_stimuli - 1) // 2


def triu_indices(n_stimuli: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every condensed entry, in pdist order.

    Parameters
    ----------
    n_stimuli : int

    Returns
    -------
    rows, cols : ndarray, each (n_pairs,) int64
        ``rows[k] < cols[k]``: the stimulus pair of condensed entry ``k``.
    """
    iu, ju = np.triu_indices(n_stimuli, k=1)
    return iu.astype(np.int64), ju.astype(np.int64)


def condensed_position(i: np.ndarray, j: np.ndarray, n_stimuli: int) -> np.ndarray:
    """Position in the condensed vector of the unordered pair ``{i, j}`` (``i != j``).

    Parameters
    ----------
    i, j : ndarray of int, any (same) shape
        Stimulus indices in ``[0, n_stimuli)``.
    n_stimuli : int

    Returns
    -------
    ndarray of int64, same shape as ``i``
    """
    a = np.minimum(i, j).astype(np.int64)
    b = np.maximum(i, j).astype(np.int64)
    return n_stimuli * a - a * (a + 1) // 2 + (b - a - 1)


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n_stimuli, n_features), got shape {arr.shape}. "
                        "Flatten every axis but the stimulus axis.")
    if arr.shape[0] < 3:
        raise DataError(f"{name} has {arr.shape[0]} stimuli; an RDM comparison needs at least 3.")
    if arr.shape[1] < 1:
        raise DataError(f"{name} has no features (shape {arr.shape}).")
    return arr


def rdm_from_gram(g: np.ndarray, row_sums: np.ndarray, n_features: int, distance: str) -> np.ndarray:
    """Square RDM from a Gram matrix.

    Parameters
    ----------
    g : ndarray, (n_stimuli, n_stimuli) float64
    row_sums : ndarray, (n_stimuli,) float64
    n_features : int
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}

    Returns
    -------
    ndarray, (n_stimuli, n_stimuli) float64, symmetric with a zero diagonal.
    Correlation / cosine distances involving a constant / all-zero row are NaN.
    """
    check_option("distance", distance, DISTANCES)
    if distance in ("euclidean", "sqeuclidean"):
        d = np.diag(g)
        out = d[:, None] + d[None, :] - 2.0 * g
        np.maximum(out, 0.0, out=out)
        if distance == "euclidean":
            np.sqrt(out, out=out)
    else:
        if distance == "correlation":
            mean = row_sums / n_features
            g = g - n_features * np.outer(mean, mean)
        norm = np.sqrt(np.clip(np.diag(g), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = g / np.outer(norm, norm)
        out = 1.0 - np.clip(sim, -1.0, 1.0)
    np.fill_diagonal(out, 0.0)
    return 0.5 * (out + out.T)


def rdm(features: np.ndarray, distance: str = "euclidean", *, order: np.ndarray | None = None,
        name: str = "features", block_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """Condensed RDM of the rows of ``features``.

    Parameters
    ----------
    features : ndarray, (n_stimuli, n_features)
        One activation / response vector per stimulus (float32 or float64; may be memory-mapped).
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}
        As :func:`scipy.spatial.distance.pdist`.
    order : ndarray of int, (n_selected,), optional
        Rows of ``features`` (in this order) that the RDM is over; all rows by default.
        Lets a memory-mapped layer be reordered without copying it.
    name : str
        Shown in error messages.
    block_bytes : int
        Size of the float64 feature blocks of the Gram matrix.

    Returns
    -------
    ndarray, (n_pairs,) float64
        Upper triangle in pdist order, ``n_pairs`` from ``n_selected``.
    """
    check_option("distance", distance, DISTANCES)
    x = _check_features(features, name)
    g, sums = gram(x, center=distance in ("euclidean", "sqeuclidean"), block_bytes=block_bytes)
    square = rdm_from_gram(g, sums, x.shape[1], distance)
    if order is not None:
        square = square[np.ix_(order, order)]
    iu, ju = triu_indices(square.shape[0])
    return square[iu, ju]


def site_rdms(responses: np.ndarray, *, squared: bool = False) -> np.ndarray:
    """Condensed RDMs of single sites: ``|r_i - r_j|`` over stimulus pairs.

    The Euclidean distance between 1-D responses (Kuzovkin et al. 2018).

    Parameters
    ----------
    responses : ndarray, (n_stimuli, n_sites)
    squared : bool
        Return ``(r_i - r_j)^2`` instead.

    Returns
    -------
    ndarray, (n_pairs, n_sites) float64
    """
    r = np.asarray(responses, dtype=np.float64)
    iu, ju = triu_indices(r.shape[0])
    d = r[iu] - r[ju]
    return d * d if squared else np.abs(d, out=d)


def upper(square: np.ndarray) -> np.ndarray:
    """Condensed upper triangles of a stack of square RDMs.

    Parameters
    ----------
    square : ndarray, (..., n_stimuli, n_stimuli)

    Returns
    -------
    ndarray, (..., n_pairs) float64
    """
    sq = np.asarray(square, dtype=np.float64)
    if sq.ndim < 2 or sq.shape[-1] != sq.shape[-2]:
        raise DataError(f"RDMs must be square in their last two axes, got shape {sq.shape}.")
    iu, ju = triu_indices(sq.shape[-1])
    return sq[..., iu, ju]


#: Elements ranked at a time by :func:`average_ranks` (bounds its transient memory to ~0.3 GB).
RANK_BLOCK_ELEMENTS = 1 << 22


def average_ranks(vectors: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share their mean rank) of each column, as
    ``scipy.stats.rankdata(vectors, axis=0, method="average")`` gives them, bit for bit.

    Ranks column blocks at a time on a contiguous transposed copy: one argsort per column,
    tie groups found on the sorted values, the ranks scattered back. A column holding NaN
    is all NaN (SciPy's ``nan_policy="propagate"``).

    Parameters
    ----------
    vectors : ndarray, (n, m)

    Returns
    -------
    ndarray, (n, m) float64
    """
    v = np.asarray(vectors, dtype=np.float64)
    n, m = v.shape
    out = np.empty((m, n), dtype=np.float64)
    if n == 0 or m == 0:
        return out.T
    step = max(1, RANK_BLOCK_ELEMENTS // n)
    idx = np.arange(n)
    for c0 in range(0, m, step):
        x = np.ascontiguousarray(v[:, c0:c0 + step].T)                  # (block, n)
        order = np.argsort(x, axis=1)
        xs = np.take_along_axis(x, order, axis=1)
        first = np.empty(xs.shape, dtype=bool)                            # first of its tie group
        first[:, 0] = True
        np.not_equal(xs[:, 1:], xs[:, :-1], out=first[:, 1:])
        last = np.empty_like(first)                                       # last of its tie group
        last[:, -1] = True
        last[:, :-1] = first[:, 1:]
        start = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
        ranks = (start + end) * 0.5 + 1.0
        block = out[c0:c0 + step]
        np.put_along_axis(block, order, ranks, axis=1)
        block[np.isnan(xs[:, -1])] = np.nan                               # NaN sorts last
    return out.T


def prepare(vectors: np.ndarray, comparison: str) -> np.ndarray:
    """Transform condensed RDMs so that a comparison is a dot product.

    Ranks are computed here, once per RDM.

    Parameters
    ----------
    vectors : ndarray, (n_pairs, n_rdms)
        Condensed RDMs as columns.
    comparison : {"spearman", "pearson", "rho-a"}

    Returns
    -------
    ndarray, (n_pairs, n_rdms) float64
        Columns ``z`` with ``compare(a, b) = z_a . z_b``; all-NaN for an RDM
        whose comparison is undefined (constant, for spearman / pearson).
    """
    check_option("comparison", comparison, LINEAR_COMPARISONS)
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n = v.shape[0]
    if comparison in ("spearman", "rho-a"):
        v = average_ranks(v)
    z = v - v.mean(axis=0)
    if comparison == "rho-a":
        return z * np.sqrt(12.0 / (float(n) ** 3 - n))
    norm = np.sqrt(np.einsum("ij,ij->j", z, z))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = z / norm
    z[:, norm <= 1e-12 * np.sqrt(n) * np.maximum(np.abs(v).max(axis=0), 1e-300)] = np.nan
    return z


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a of two vectors in O(n log n).

    ``(n_concordant - n_discordant) / (n (n - 1) / 2)``, obtained from SciPy's
    tau-b by undoing its tie normalisation.

    Parameters
    ----------
    x, y : ndarray, (n,)

    Returns
    -------
    float
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n0 = x.size * (x.size - 1) // 2
    n1, n2 = _tie_pairs(x), _tie_pairs(y)
    if n1 == n0 or n2 == n0:
        return 0.0
    tau_b = scipy.stats.kendalltau(x, y, variant="b", method="asymptotic").statistic
    return float(tau_b * np.sqrt(float(n0 - n1) * float(n0 - n2)) / n0)


def compare(a: np.ndarray, b: np.ndarray, comparison: str = "spearman") -> np.ndarray:
    """Compare every RDM of ``a`` with every RDM of ``b``.

    Parameters
    ----------
    a : ndarray, (n_pairs, n_a)
        Condensed RDMs as columns (raw dissimilarities, not prepared).
    b : ndarray, (n_pairs, n_b)
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}

    Returns
    -------
    ndarray, (n_a, n_b) float64
        NaN where the comparison is undefined (a constant RDM, for spearman / pearson).
    """
    check_option("comparison", comparison, COMPARISONS)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.shape[0] != b.shape[0]:
        raise DataError(f"RDMs to compare have {a.shape[0]} and {b.shape[0]} condensed entries; "
                        "they must be over the same stimuli.")
    if comparison == "kendall-tau-a":
        out = np.empty((a.shape[1], b.shape[1]), dtype=np.float64)
        for i in range(a.shape[1]):  # O(n log n) per pair; no dot-product form exists
            for j in range(b.shape[1]):
                out[i, j] = kendall_tau_a(a[:, i], b[:, j])
        return out
    out = prepare(a, comparison).T @ prepare(b, comparison)
    if comparison != "rho-a":
        np.clip(out, -1.0, 1.0, out=out)
    return out


def check_comparison_for_permutations(comparison: str, n_permutations: int, where: str) -> None:
    """Raise :class:`ConfigError` when a permutation test is asked for a non-linear comparison.

    Parameters
    ----------
    comparison : str
        One of :data:`COMPARISONS`; only :data:`LINEAR_COMPARISONS` have a fast test.
    n_permutations : int
        0 means no test (always accepted).
    where : str
        Name of the caller shown in the message (e.g. ``"rsa"``).
    """
    if n_permutations > 0 and comparison not in LINEAR_COMPARISONS:
        raise ConfigError(f"{where}: comparison={comparison!r} has no fast permutation test; expected one of "
                          f"{', '.join(repr(c) for c in LINEAR_COMPARISONS)} when n_permutations > 0 "
                          f"(got {n_permutations}). Use comparison='spearman' or set n_permutations=0.")


def clip_comparison(r: np.ndarray, comparison: str) -> np.ndarray:
    """Clip correlation-type comparison values to ``[-1, 1]`` (rounding); rho-a is left as is.

    Parameters
    ----------
    r : ndarray, any shape, float64
        Comparison values.
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}

    Returns
    -------
    ndarray, same shape, float64
        ``r`` itself for ``"rho-a"`` (not bounded by 1 with ties), else a clipped copy.
    """
    return r if comparison == "rho-a" else np.clip(r, -1.0, 1.0)


def paired_compare(a: np.ndarray, b: np.ndarray, comparison: str) -> np.ndarray:
    """Compare column ``k`` of ``a`` with column ``k`` of ``b``.

    Parameters
    ----------
    a, b : ndarray, (n_pairs, k)
        Condensed RDMs as columns (raw dissimilarities, not prepared).
    comparison : {"spearman", "pearson", "kendall-tau-a", "rho-a"}

    Returns
    -------
    ndarray, (k,) float64
        NaN where the comparison is undefined (a constant RDM, for spearman / pearson).
    """
    if comparison not in LINEAR_COMPARISONS:
        return np.array([kendall_tau_a(a[:, k], b[:, k]) for k in range(a.shape[1])])
    out = np.einsum("pk,pk->k", prepare(a, comparison), prepare(b, comparison))
    return clip_comparison(out, comparison)


def site_rdm_blocks(data: np.ndarray, comparison: str, block_bytes: int = SITE_BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Prepared single-site RDMs, block of sites by block of sites.

    Parameters
    ----------
    data : ndarray, (n_stimuli, n_sites) float64
        Responses; site ``j``'s RDM is ``|r_i - r_j|`` (:func:`site_rdms`).
    comparison : {"spearman", "pearson", "rho-a"}
        Passed to :func:`prepare`.
    block_bytes : int
        Bytes of one float64 block, ``n_pairs * n_block * 8``.

    Yields
    ------
    ndarray, (n_pairs, n_block) float64
        Prepared RDMs of the next ``n_block`` sites (at least one), in site order.
    """
    n_pairs = n_pairs_of(data.shape[0])
    step = max(1, block_bytes // (8 * max(n_pairs, 1)))
    for start in range(0, data.shape[1], step):
        yield prepare(site_rdms(data[:, start:start + step]), comparison)


#: Recently computed layer RDMs, keyed by (activations key, layers, distance, stimulus order).
_LAYER_RDM_MEMO: dict[tuple, np.ndarray] = {}
_LAYER_RDM_MEMO_SIZE = 4


def _layer_rdm(activations: Activations, layer: str, distance: str, order: np.ndarray | None) -> np.ndarray:
    """Condensed RDM of one layer from its Gram matrix (cached statistic or built from the features).

    The same numbers as :func:`rdm` on the layer's features: the Gram matrix is centred over
    all stored stimuli for Euclidean distances, the rows are selected afterwards.
    """
    n = len(activations.stimulus_ids) if order is None else len(order)
    width = activations.n_features(layer)
    if n < 3:
        raise DataError(f"layer '{layer}' has {n} stimuli; an RDM comparison needs at least 3.")
    if width < 1:
        raise DataError(f"layer '{layer}' has no features.")
    g, sums = activations.gram(layer, center=distance in ("euclidean", "sqeuclidean"))
    square = rdm_from_gram(g, np.zeros(g.shape[0]) if sums is None else sums, width, distance)
    if order is not None:
        square = square[np.ix_(order, order)]
    iu, ju = triu_indices(square.shape[0])
    return square[iu, ju]


def layer_rdms(activations: Activations, stimulus_ids: tuple[str, ...], distance: str) -> np.ndarray:
    """Condensed RDM of every layer over the target's stimuli, in the target's order.

    Activations that carry a content key (``activations.info["key"]``, set by the
    activation cache) have their RDMs memoised: the last few results are reused
    by every (signal, metric) cell of the model instead of being recomputed.

    Parameters
    ----------
    activations : Activations
        Layers, each (n_stimuli_act, n_features) float32, possibly memory-mapped;
        their stimuli must include ``stimulus_ids``.
    stimulus_ids : tuple of str, (n_stimuli,)
    distance : {"euclidean", "sqeuclidean", "correlation", "cosine"}

    Returns
    -------
    ndarray, (n_pairs, n_layers) float64
        Column ``l`` is layer ``l``'s RDM (:func:`rdm`); read-only when memoised.
    """
    if len(activations) == 0:
        raise DataError("Activations have no layers; extract at least one layer.")
    order = stimulus_order(activations.stimulus_ids, stimulus_ids)
    identity = order is None
    if order is None:
        order = np.arange(len(stimulus_ids), dtype=np.int64)
    # Cached activations carry a content key: their RDMs are computed once and reused by
    # every (signal, metric) cell of the model instead of once per cell.
    memo_key = None
    if activations.info.get("key"):
        memo_key = (activations.info["key"], activations.layers, distance, order.tobytes())
        hit = _LAYER_RDM_MEMO.get(memo_key)
        if hit is not None:
            return hit
    cols = [_layer_rdm(activations, name, distance, None if identity else order) for name in activations.layers]
    out = np.column_stack(cols)
    if memo_key is not None:
        out.setflags(write=False)
        _LAYER_RDM_MEMO[memo_key] = out
        while len(_LAYER_RDM_MEMO) > _LAYER_RDM_MEMO_SIZE:
            _LAYER_RDM_MEMO.pop(next(iter(_LAYER_RDM_MEMO)))
    return out
