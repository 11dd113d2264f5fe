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
        Upper bound on the size of the float64 feature blocks of the Gram matrix
        (see :func:`framework.numerics.gram.gram`).

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


#: Elements ranked / prepared at a time by :func:`average_ranks`, :func:`prepare` and :func:`compare`:
#: a 2 MiB float64 block whose sort keys, ranks and scatter stay in cache (~1.4x faster than 32 MiB).
RANK_BLOCK_ELEMENTS = 1 << 18

_LOW63 = np.int64(0x7FFFFFFFFFFFFFFF)


def _sort_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted order and tie groups of every row of a NaN-free float64 block.

    Sorts one 64-bit integer key per value instead of calling ``argsort`` (about 2-3x
    faster: plain integers take NumPy's SIMD sort): the float's bits made
    order-preserving as int64 (``-0.0`` first turned into ``+0.0``), their low
    ``ceil(log2 n)`` bits replaced by the column index, so the sorted keys carry the
    permutation. Runs of keys whose high bits tie (exact ties, or values within
    ~``2^-37`` relative of each other) are re-sorted by their exact values.

    Parameters
    ----------
    rows : ndarray, (m, n) float64
        C-contiguous, no NaN (infinities are fine).

    Returns
    -------
    order : ndarray, (m, n) int64
        Column of the ``k``-th smallest value of each row (tied values in any order).
    first : ndarray, (m, n) bool
        Sorted position ``k`` holds a value different from position ``k - 1`` (True at ``k = 0``).
    """
    m, n = rows.shape
    shift = max(1, (n - 1).bit_length())
    key = np.add(rows, 0.0).view(np.int64)
    key ^= (key >> 63) & _LOW63                                   # negative floats: reverse their order
    key >>= shift
    key <<= shift
    key |= np.arange(n, dtype=np.int64)
    key.sort(axis=1)
    tied = np.zeros((m, n), dtype=bool)                           # same high bits as the key before it
    np.less(np.bitwise_xor(key[:, 1:], key[:, :-1]).view(np.uint64), np.uint64(1 << shift), out=tied[:, 1:])
    key &= (1 << shift) - 1
    first = ~tied
    if tied.any():
        in_run = tied.copy()
        in_run[:, :-1] |= tied[:, 1:]
        flat = np.flatnonzero(in_run)                             # sorted positions (row-major) inside runs
        col = key.reshape(-1)[flat]
        value = rows.reshape(-1)[flat - flat % n + col]
        start = first.reshape(-1)[flat]                           # first position of its run
        o = np.lexsort((value, np.cumsum(start)))                 # by run, then by exact value
        col, value = col[o], value[o]
        start[1:] |= value[1:] != value[:-1]
        key.reshape(-1)[flat] = col
        first.reshape(-1)[flat] = start
    return key, first


def _rank_rows(rows: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share their mean rank) along each row; a row holding NaN is all NaN.

    Parameters
    ----------
    rows : ndarray, (m, n) float64, C-contiguous

    Returns
    -------
    ndarray, (m, n) float64
    """
    m, n = rows.shape
    bad = np.isnan(rows).any(axis=1)
    order, first = _sort_rows(np.where(bad[:, None], 0.0, rows) if bad.any() else rows)
    if first.all():
        ranks = np.broadcast_to(np.arange(1.0, n + 1.0), (m, n))
    else:
        starts = np.flatnonzero(first)                            # every row start is a group start
        sizes = np.diff(starts, append=m * n)
        ranks = np.repeat(starts % n + (sizes - 1) * 0.5 + 1.0, sizes)
    out = np.empty((m, n), dtype=np.float64)
    order += (np.arange(m, dtype=np.int64) * n)[:, None]
    np.put(out, order, ranks)
    out[bad] = np.nan
    return out


def _row_blocks(v: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Columns of ``v`` (n, m) as C-contiguous row blocks ``(start, v[:, start:stop].T)``, each of at most
    :data:`RANK_BLOCK_ELEMENTS` values (a view when ``v`` is Fortran-ordered)."""
    n, m = v.shape
    step = max(1, RANK_BLOCK_ELEMENTS // max(n, 1))
    for c0 in range(0, m, step):
        yield c0, np.ascontiguousarray(v[:, c0:c0 + step].T)


def average_ranks(vectors: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share their mean rank) of each column, as
    ``scipy.stats.rankdata(vectors, axis=0, method="average")`` gives them, bit for bit.

    Ranks column blocks at a time on a contiguous transposed copy: one sort of integer
    keys per column (:func:`_sort_rows`), tie groups found on the sorted keys, the ranks
    scattered back. A column holding NaN is all NaN (SciPy's ``nan_policy="propagate"``).

    Parameters
    ----------
    vectors : ndarray, (n, m)

    Returns
    -------
    ndarray, (n, m) float64
        Fortran-ordered (each column contiguous).
    """
    v = np.asarray(vectors, dtype=np.float64)
    n, m = v.shape
    out = np.empty((m, n), dtype=np.float64)
    if n == 0 or m == 0:
        return out.T
    for c0, rows in _row_blocks(v):
        out[c0:c0 + rows.shape[0]] = _rank_rows(rows)
    return out.T


def _prepare_rows(rows: np.ndarray, comparison: str) -> np.ndarray:
    """:func:`prepare` of RDMs held as rows: ``rows`` (m, n_pairs) float64 C-contiguous -> (m, n_pairs)."""
    n = rows.shape[1]
    v = _rank_rows(rows) if comparison in ("spearman", "rho-a") else rows
    z = v - v.mean(axis=1, keepdims=True)
    if comparison == "rho-a":
        z *= np.sqrt(12.0 / (float(n) ** 3 - n))
        return z
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))
    with np.errstate(divide="ignore", invalid="ignore"):
        z /= norm[:, None]
    scale = np.maximum(v.max(axis=1), -v.min(axis=1)) if v is rows else v.max(axis=1)  # max |v|: ranks are > 0
    z[norm <= 1e-12 * np.sqrt(n) * np.maximum(scale, 1e-300)] = np.nan
    return z


def prepare(vectors: np.ndarray, comparison: str) -> np.ndarray:
    """Transform condensed RDMs so that a comparison is a dot product.

    Ranks are computed here, once per RDM. Spearman and rho-a work through blocks of
    RDMs that stay in cache (rank, centre, scale), never holding more than the output
    and one block.

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
        Fortran-ordered for spearman / rho-a (as :func:`average_ranks`); for pearson in the
        memory order of ``vectors``.
    """
    check_option("comparison", comparison, LINEAR_COMPARISONS)
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n, m = v.shape
    if comparison == "pearson" and not (v.flags.f_contiguous and not v.flags.c_contiguous):
        z = v - v.mean(axis=0)
        norm = np.sqrt(np.einsum("ij,ij->j", z, z))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = z / norm
        z[:, norm <= 1e-12 * np.sqrt(n) * np.maximum(np.abs(v).max(axis=0), 1e-300)] = np.nan
        return z
    out = np.empty((m, n), dtype=np.float64)
    if n == 0 or m == 0:
        return out.T
    for c0, rows in _row_blocks(v):
        out[c0:c0 + rows.shape[0]] = _prepare_rows(rows, comparison)
    return out.T


try:  # Knight's O(n log n) count of discordant pairs, the kernel of scipy.stats.kendalltau (private API)
    from scipy.stats._stats import _kendall_dis
except ImportError:  # pragma: no cover - a SciPy without it: scipy.stats.kendalltau per pair
    _kendall_dis = None


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _kendall_tau_a_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """Tau-a from SciPy's tau-b (its tie normalisation undone); the path for NaN and a SciPy
    without ``_kendall_dis``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n0 = x.size * (x.size - 1) // 2
    n1, n2 = _tie_pairs(x), _tie_pairs(y)
    if n1 == n0 or n2 == n0:
        return 0.0
    tau_b = scipy.stats.kendalltau(x, y, variant="b", method="asymptotic").statistic
    return float(tau_b * np.sqrt(float(n0 - n1) * float(n0 - n2)) / n0)


class _TauRanks:
    """Rank structure of a block of vectors (rows) for Kendall's tau-a.

    Attributes (``m`` vectors of length ``n``)
    ----------
    order : ndarray, (m, n) int64
        Sorting permutation of each vector.
    labels : ndarray, (m, n) intp
        Dense ranks (1-based, ties equal) in sorted order: non-decreasing along each row.
    dense : ndarray, (m, n) intp
        Dense ranks at the original positions.
    ties : list of int, (m,)
        Pairs tied within each vector.
    bad : ndarray, (m,) bool
        Vectors holding NaN (left to :func:`_kendall_tau_a_scipy`).
    """

    def __init__(self, rows: np.ndarray) -> None:
        m, n = rows.shape
        self.bad = np.isnan(rows).any(axis=1)
        order, first = _sort_rows(np.where(self.bad[:, None], 0.0, rows) if self.bad.any() else rows)
        self.order = order
        self.labels = np.cumsum(first, axis=1, dtype=np.intp)
        self.dense = np.empty((m, n), dtype=np.intp)
        np.put_along_axis(self.dense, order, self.labels, axis=1)
        if first.all():
            self.ties = [0] * m
        else:
            starts = np.flatnonzero(first)
            sizes = np.diff(starts, append=m * n)
            pairs = np.bincount(starts // n, weights=sizes * (sizes - 1) / 2.0, minlength=m)  # exact: < 2^53
            self.ties = [int(t) for t in pairs]


def _tau_a(x: _TauRanks, i: int, y: _TauRanks, j: int) -> float:
    """Kendall's tau-a of vector ``i`` of ``x`` and vector ``j`` of ``y``: an exact integer count of
    concordant minus discordant pairs over ``n (n - 1) / 2``."""
    n = x.order.shape[1]
    total = n * (n - 1) // 2
    tx, ty = x.ties[i], y.ties[j]
    if total == 0 or tx == total or ty == total:
        return 0.0
    ys = y.dense[j][x.order[i]]                                   # y's dense ranks in x's sorted order
    xs = x.labels[i]
    dis = int(_kendall_dis(xs, ys))                               # pairs ordered oppositely (ties in x skipped)
    joint = 0
    if tx and ty:                                                 # pairs tied in both
        key = np.sort(xs.astype(np.int64) * (n + 1) + ys)
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        sizes = np.diff(starts, append=n)
        joint = int((sizes * (sizes - 1) // 2).sum())
    return (total - tx - ty + joint - 2 * dis) / total


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a of two vectors in O(n log n).

    ``(n_concordant - n_discordant) / (n (n - 1) / 2)``: both vectors sorted once
    (:func:`_sort_rows`), the discordant pairs counted by SciPy's merge-sort kernel,
    ties counted exactly. 0.0 when either vector is constant.

    Parameters
    ----------
    x, y : ndarray, (n,)

    Returns
    -------
    float
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return float(_kendall_matrix(x[:, None], y[:, None])[0, 0])


def _kendall_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tau-a of every column of ``a`` (n, n_a) with every column of ``b`` (n, n_b) -> (n_a, n_b).

    Each vector is sorted once; the side with fewer columns is kept whole, the other is
    ranked in blocks; each pair then costs one gather and one O(n log n) count.
    """
    if _kendall_dis is None or a.shape[0] < 2:
        return np.array([[_kendall_tau_a_scipy(a[:, i], b[:, j]) for j in range(b.shape[1])]
                         for i in range(a.shape[1])]).reshape(a.shape[1], b.shape[1])
    if a.shape[1] > b.shape[1]:
        return _kendall_matrix(b, a).T
    out = np.empty((a.shape[1], b.shape[1]), dtype=np.float64)
    x = _TauRanks(np.ascontiguousarray(a.T))
    for c0, rows in _row_blocks(b):
        y = _TauRanks(rows)
        for j in range(rows.shape[0]):
            for i in range(a.shape[1]):
                out[i, c0 + j] = (_kendall_tau_a_scipy(a[:, i], b[:, c0 + j]) if x.bad[i] or y.bad[j]
                                  else _tau_a(x, i, y, j))
    return out


def _kendall_paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tau-a of column ``k`` of ``a`` with column ``k`` of ``b``, both (n, k) -> (k,)."""
    if _kendall_dis is None or a.shape[0] < 2:
        return np.array([_kendall_tau_a_scipy(a[:, k], b[:, k]) for k in range(a.shape[1])])
    out = np.empty(a.shape[1], dtype=np.float64)
    for (c0, ra), (_, rb) in zip(_row_blocks(a), _row_blocks(b)):
        x, y = _TauRanks(ra), _TauRanks(rb)
        for k in range(ra.shape[0]):
            out[c0 + k] = (_kendall_tau_a_scipy(a[:, c0 + k], b[:, c0 + k]) if x.bad[k] or y.bad[k]
                           else _tau_a(x, k, y, k))
    return out


def _compare_linear(a: np.ndarray, b: np.ndarray, comparison: str) -> np.ndarray:
    """``prepare(a).T @ prepare(b)`` without holding the larger side prepared: it is prepared and
    multiplied block by block of RDMs; returns (n_a, n_b) float64."""
    if a.shape[1] > b.shape[1]:
        return _compare_linear(b, a, comparison).T
    za = prepare(a, comparison)                                   # (n_pairs, n_a), the smaller side
    out = np.empty((a.shape[1], b.shape[1]), dtype=np.float64)
    for c0, rows in _row_blocks(b):
        out[:, c0:c0 + rows.shape[0]] = (_prepare_rows(rows, comparison) @ za).T
    return out


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
    if comparison == "kendall-tau-a":  # O(n log n) per pair; no dot-product form exists
        return _kendall_matrix(a, b)
    out = _compare_linear(a, b, comparison)
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
        a = np.asarray(a, dtype=np.float64)
        return _kendall_paired(a, np.asarray(b, dtype=np.float64))
    out = np.einsum("pk,pk->k", prepare(a, comparison), prepare(b, comparison))
    return clip_comparison(out, comparison)


def site_rdm_blocks(data: np.ndarray, comparison: str, block_bytes: int = SITE_BLOCK_BYTES, *,
                    n_threads: int = 1, prefetch: int = 1) -> Iterator[np.ndarray]:
    """Prepared single-site RDMs, block of sites by block of sites.

    Equal to ``prepare(site_rdms(block), comparison)``. For ``"spearman"`` and ``"rho-a"`` the
    ranks of one site's ``|r_i - r_j|`` come from a single sort of int64 keys (about three
    times faster than :func:`average_ranks`): the value's float64 bits (order-preserving
    for values >= 0) with their low ``ceil(log2(n_pairs))`` bits replaced by the pair
    index. The sorted keys give the order of the pairs; only runs of keys with equal high
    bits (exact ties, or values differing in those low bits alone, e.g. relative
    differences below 2^-37 for 250 stimuli) are re-sorted by their exact values, ties
    sharing their mean rank. The prepared vector is then the arithmetic of :func:`prepare`
    on the same ranks: ranks, their mean and (below ~3e5 pairs, where the sum of squares
    of half-integers is exact) their norm are bit-identical, so the output is too.

    Parameters
    ----------
    data : ndarray, (n_stimuli, n_sites) float64
        Responses; site ``j``'s RDM is ``|r_i - r_j|`` (:func:`site_rdms`).
    comparison : {"spearman", "pearson", "rho-a"}
        Passed to :func:`prepare`.
    block_bytes : int
        Bytes of one float64 block, ``n_pairs * n_block * 8``.
    n_threads : int
        Threads ranking each block (numpy releases the GIL while sorting); with more than
        one, the next blocks are ranked while the caller works on the current one.
    prefetch : int
        Blocks ranked ahead of the caller with ``n_threads > 1`` (each holds
        ``block_bytes``).

    Yields
    ------
    ndarray, (n_pairs, n_block) float64
        Prepared RDMs of the next ``n_block`` sites (at least one), in site order (for
        ranks, the transpose of a C-contiguous ``(n_block, n_pairs)`` array).
    """
    n_stimuli, n_sites = data.shape
    n_pairs = n_pairs_of(n_stimuli)
    step = max(1, block_bytes // (8 * max(n_pairs, 1)))
    if comparison not in ("spearman", "rho-a") or n_pairs < 2:
        for start in range(0, n_sites, step):
            yield prepare(site_rdms(data[:, start:start + step]), comparison)
        return
    iu, ju = triu_indices(n_stimuli)
    shift = (n_pairs - 1).bit_length()                  # low key bits holding the pair index
    positions = np.arange(n_pairs, dtype=np.int64)
    ranks_sorted = np.arange(1, n_pairs + 1, dtype=np.float64)
    mean = float(ranks_sorted.sum()) / n_pairs            # as prepare's mean: an exact sum, one division
    centred = ranks_sorted - mean
    chunk = 8                                             # sites sorted at once (their temporaries stay in cache)

    def rank_chunk(rt: np.ndarray, out: np.ndarray, scratch: tuple[np.ndarray, ...]) -> None:
        """Prepared RDMs ``out`` (m, n_pairs) float64 of the sites ``rt`` (m, n_stimuli) float64, finite;
        ``scratch`` holds reused buffers of at least ``m`` rows (fresh ones would page-fault every chunk)."""
        m = rt.shape[0]
        key, z, xor, tied = (s[:m] for s in scratch)
        value = key.view(np.float64)
        np.take(rt, iu, axis=1, out=value, mode="wrap")
        np.take(rt, ju, axis=1, out=z, mode="wrap")
        value -= z
        np.abs(value, out=value)                          # |r_i - r_j| >= 0: its bits sort as int64
        key &= ~((1 << shift) - 1)
        key |= positions
        key.sort(axis=1)
        np.bitwise_xor(key[:, 1:], key[:, :-1], out=xor)
        np.less(xor, 1 << shift, out=tied[:, 1:])         # same high bits as the key before it
        key &= (1 << shift) - 1                           # pair at each sorted position
        z[:] = centred                                    # rank - mean at each sorted position
        if tied.any():
            # Runs of equal high bits: order by exact value, average ranks over exact ties.
            in_run = tied.copy()
            in_run[:, :-1] |= tied[:, 1:]
            flat = np.flatnonzero(in_run)                 # sorted positions (row-major) inside runs
            row = flat // n_pairs
            first = ~tied.reshape(-1)[flat]               # first position of its run
            pair = key.reshape(-1)[flat]
            exact = np.abs(rt[row, iu[pair]] - rt[row, ju[pair]])
            order = np.lexsort((exact, np.cumsum(first)))
            pair, exact = pair[order], exact[order]
            first[1:] |= exact[1:] != exact[:-1]          # first of a group of equal values
            last = np.empty_like(first)
            last[:-1], last[-1] = first[1:], True
            lo = np.maximum.accumulate(np.where(first, flat, 0)) - row * n_pairs
            hi = np.minimum.accumulate(np.where(last, flat, flat[-1])[::-1])[::-1] - row * n_pairs
            z.reshape(-1)[flat] = (lo + hi) * 0.5 + 1.0 - mean
            key.reshape(-1)[flat] = pair
        max_rank = z[:, -1] + mean
        if comparison == "rho-a":
            z *= np.sqrt(12.0 / (float(n_pairs) ** 3 - n_pairs))
        else:
            norm = np.sqrt(np.einsum("ij,ij->i", z, z))
            with np.errstate(divide="ignore", invalid="ignore"):
                z /= norm[:, None]
            z[norm <= 1e-12 * np.sqrt(n_pairs) * np.maximum(max_rank, 1e-300)] = np.nan
        key += (np.arange(m, dtype=np.int64) * n_pairs)[:, None]
        out.reshape(-1)[key.reshape(-1)] = z.reshape(-1)  # back to pair order

    def fill(lo: int, hi: int, out: np.ndarray) -> None:
        """Prepared RDMs of sites [lo, hi) into ``out`` (hi - lo, n_pairs)."""
        rows = min(chunk, hi - lo)
        scratch = (np.empty((rows, n_pairs), dtype=np.int64), np.empty((rows, n_pairs)),
                   np.empty((rows, n_pairs - 1), dtype=np.int64), np.zeros((rows, n_pairs), dtype=bool))
        for a in range(lo, hi, chunk):
            b = min(a + chunk, hi)
            rt = np.ascontiguousarray(data[:, a:b].T, dtype=np.float64)
            if np.isfinite(rt).all():
                rank_chunk(rt, out[a - lo:b - lo], scratch)
            else:                                         # NaN propagates as in prepare
                out[a - lo:b - lo] = prepare(site_rdms(rt.T), comparison).T

    if n_threads <= 1:
        for start in range(0, n_sites, step):
            stop = min(start + step, n_sites)
            rows = np.empty((stop - start, n_pairs))
            fill(start, stop, rows)
            yield rows.T
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        def submit(start: int) -> tuple[np.ndarray, list]:
            stop = min(start + step, n_sites)
            rows = np.empty((stop - start, n_pairs))
            bounds = np.linspace(start, stop, min(n_threads, stop - start) + 1).astype(int)
            return rows, [pool.submit(fill, lo, hi, rows[lo - start:hi - start])
                          for lo, hi in zip(bounds[:-1], bounds[1:])]

        starts = iter(range(0, n_sites, step))
        pending = [submit(start) for _, start in zip(range(max(1, prefetch + 1)), starts)]
        while pending:
            rows, futures = pending.pop(0)
            nxt = next(starts, None)
            if nxt is not None:                           # ranked while the caller uses this block
                pending.append(submit(nxt))
            for f in futures:
                f.result()
            yield rows.T


#: Recently computed layer RDMs, keyed by (activations key, layers, distance, stimulus order).
_LAYER_RDM_MEMO: dict[tuple, np.ndarray] = {}
_LAYER_RDM_MEMO_SIZE = 4


def _layer_rdm(activations: Activations, layer: str, distance: str, order: np.ndarray | None) -> np.ndarray:
    """Condensed RDM of one layer from its Gram matrix (cached statistic or built from the features).

    The same numbers as :func:`rdm` on the layer's features: the Gram matrix is centred over
    all stored stimuli for Euclidean distances, the rows are selected afterwards. A layer given
    as an RDM (a reference model, :meth:`Activations.precomputed_rdm`) is served as given, or
    refused when it was made with another distance.
    """
    n = len(activations.stimulus_ids) if order is None else len(order)
    if n < 3:
        raise DataError(f"layer '{layer}' has {n} stimuli; an RDM comparison needs at least 3.")
    given = activations.precomputed_rdm(layer, distance, rows=order)
    if given is not None:
        iu, ju = triu_indices(n)
        return given[iu, ju]
    width = activations.n_features(layer)
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
