"""Batched permutation test of RDM correlations, with sequential early stopping.

The test asks, for every cell (site RDM ``s``, layer RDM ``l``), whether the
observed comparison ``r = z_s . z_l`` of the prepared vectors
(:func:`framework.numerics.rdm.prepare`: centred, unit-norm ranks for Spearman,
values for Pearson) is larger than expected when the stimulus labels are
shuffled. Permutation ``pi`` maps an RDM ``D`` to ``D'[i, j] = D[pi[i], pi[j]]``.

Which side is permuted
    ``corr(pi(site), layer) == corr(site, pi^-1(layer))`` exactly (the dot
    product of two vectors is unchanged when both are permuted by the same pair
    permutation), so the null value of permutation ``pi`` applied to the *site*
    RDM is computed by applying ``pi^-1`` to the *layer* RDM. With 9 layers and
    thousands of sites only the layers are gathered. The result is identical to
    permuting the site RDMs with :func:`draw_permutations` (and, since ``pi`` and
    ``pi^-1`` are equally likely, in distribution to permuting the layers).

How it is made fast
    * the ranks of a permuted vector are the permuted ranks, so nothing is
      re-ranked; a permuted prepared layer vector is a gather from its square
      ``(n_stimuli, n_stimuli)`` table at ``pi^-1[i] * n_stimuli + pi^-1[j]``;
    * sequential early stopping (Besag & Clifford 1991): a cell stops once it has
      seen ``h`` null values at least as large as the observed one, ``h`` the
      smallest count with ``h > alpha * n_permutations``; such a cell can no
      longer be significant at ``alpha`` and gets ``p = h / n_used``. Cells that
      do not stop get exactly the p-value of the full test,
      ``p = (1 + #{null >= observed}) / (1 + n_permutations)``. Every decision
      ``p <= alpha`` is therefore the one the full test makes. Batches start
      small and double, so cells that stop early cost little;
    * site mode: while most cells of a site are active, the site's float32 row is
      multiplied with every layer, a batch of ``B`` permutations being one product
      ``(n_sites, n_pairs) @ (n_pairs, n_layers * B)``; a site leaves the matrix
      (compacted in place once it has shrunk by 10 %) when all its cells stopped;
    * cell mode: a site with at most ``_MIGRATE_MAX`` active cells moves (a copy of
      its row per active layer, within a budget) to per-layer matrices, which are
      multiplied with that layer only, ``(n_active_l, n_pairs) @ (n_pairs, B)``: most
      sites soon have one or two active cells, and site mode would compute the
      other layers for nothing;
    * groups and the pool: sites are tested in groups (input blocks grouped up to
      ``site_bytes``). With early stopping a group runs the first ``_PARK_AT`` of the
      permutations by itself (nearly all of its cells stop there); its surviving
      cells are then parked in a pool and run to the end together with those of
      the other groups, so that the permuted layer vectors of the remaining
      permutations are gathered once for all groups instead of once per group
      (a pool that would exceed its budget is run first; a group with more
      survivors than the pool holds runs to the end by itself).

Comparison rule (float32)
    Observed and null values are computed by the same float32 path (prepared
    vectors rounded to float32; single-threaded sgemm of the site rows with the
    gathered layer vectors, the observed values with the unpermuted ones). BLAS
    chooses its kernels by the shape of a product, so the float32 value of a
    (site, permuted layer) pair can differ in its last bit between products of
    different rows and columns (with OpenBLAS on 31,125 pairs, up to ~2e-8): the
    identity permutation need not reproduce the observed value bit for bit.
    A null value therefore counts as at least as extreme when ``null >= observed - tol``
    (``"greater"``), ``null <= observed + tol`` (``"less"``) or
    ``|null| >= |observed| - tol`` (``"two-sided"``), with
    ``tol = tie_tolerance(n_pairs) = 4 * eps_float32 * sqrt(n_pairs)``
    (3.9e-6 for 66 pairs, 8.4e-5 for 31,125 pairs): a few times the rounding of a
    float32 dot product of unit vectors, so exact ties (the identity, an
    automorphism of the RDM, equal rank sums at few stimuli) always count, as the
    ``>=`` of the test requires. Near-ties within ``tol`` count too, which makes
    the test very slightly conservative, never liberal. The reported ``observed``
    is the float64 value ``z_s . z_l``.

Threads
    Each batch is split between up to ``_MAX_WORKERS`` threads (capped at the CPU
    count) with a single-threaded BLAS (``threadpoolctl`` limits BLAS to one
    thread for the duration of the call, process-wide): multi-threaded sgemm with
    few rows and long vectors stalls at its many barriers on a busy machine
    (measured 0.6 s instead of 20 ms). The workers first compute the permuted
    positions (and in site mode the permuted vectors of every layer), split by
    permutations, then the products, split by rows and layers (largest first to
    the least loaded worker); in cell mode each worker gathers a layer's permuted
    vectors just before multiplying them, while they are in cache.

The permutations are those of :func:`draw_permutations` (so a plain loop can
reproduce them); every cell sees the same permutations in the same order, and
the counts do not depend on how sites or permutations are batched, but for the
last-bit rounding of the products above (a count could change only if a null
value fell within ~1e-8 of ``observed - tol``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from framework.errors import ConfigError, DataError
from framework.numerics.rdm import condensed_position, n_pairs_of, triu_indices
from framework.validation import check_option

__all__ = ["ALTERNATIVES", "PermutationResult", "draw_permutations", "inverse_permutations",
           "min_exceedances_to_stop", "pair_gather_index", "permutation_test", "tie_tolerance"]

log = logging.getLogger("framework.numerics.permutation")

#: Sides of the test: positive correlations (default), either sign, negative.
ALTERNATIVES: tuple[str, ...] = ("greater", "two-sided", "less")
#: Budget (bytes) of one batch of permutations: permuted positions (int64) and float32 layer vectors.
_GATHER_BYTES = 192 * 2**20
#: Budget (bytes) of the float32 site matrix tested at once (sites of several input blocks are grouped).
_SITE_BYTES = 192 * 2**20
#: First batch size with early stopping (batches then double up to the memory budget).
_FIRST_BATCH = 8
#: Worker threads (each runs single-threaded sgemm on its share of a batch); at most the CPU count.
_MAX_WORKERS = 4
#: Compact a site or cell matrix when its live rows fall below this fraction of its rows.
_COMPACT_BELOW = 0.9
#: Budgets of a group's cell-mode copies and of the pool of parked cells, as multiples of ``site_bytes``.
_CELL_SHARE = 1.0
_POOL_SHARE = 2.0
#: A site moves from site mode to cell mode once at most this many of its cells are active ...
_MIGRATE_MAX = 4
#: ... and at least this fraction of the live sites move at once (or all of them).
_MIGRATE_MIN = 0.1
#: Cell sets of a group merged into one beyond this many.
_MAX_CELL_SETS = 3
#: With early stopping, a group's surviving cells are parked in the pool after this fraction of the permutations
#: (at least ``_FIRST_BATCH``).
_PARK_AT = 0.05
#: Largest batch of permutations.
_MAX_BATCH = 256
#: Rows of the smallest task a matrix is split into between workers.
_MIN_TASK_ROWS = 64
#: Cost of one product beyond its rows (packing the permuted vectors), in rows (for balancing the workers).
_PACK_ROWS = 32


def tie_tolerance(n_pairs: int) -> float:
    """Tolerance of the comparison ``null >= observed - tol`` (see module docstring).

    Parameters
    ----------
    n_pairs : int
        Length of the condensed RDM vectors.

    Returns
    -------
    float
        ``4 * np.finfo(np.float32).eps * sqrt(n_pairs)``.
    """
    return 4.0 * float(np.finfo(np.float32).eps) * math.sqrt(max(n_pairs, 1))


def draw_permutations(seed: int | np.random.Generator, n_stimuli: int, n_permutations: int) -> np.ndarray:
    """The stimulus permutations used by :func:`permutation_test`.

    Permutation ``k`` is ``argsort`` of row ``k`` of
    ``np.random.default_rng(seed).random((n_permutations, n_stimuli))``.

    Parameters
    ----------
    seed : int or numpy.random.Generator
    n_stimuli : int
    n_permutations : int

    Returns
    -------
    ndarray, (n_permutations, n_stimuli) int32
        Row ``k`` is ``pi_k``; the permuted RDM is ``D[np.ix_(pi_k, pi_k)]``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.argsort(rng.random((n_permutations, n_stimuli)), axis=1).astype(np.int32)


def pair_gather_index(perms: np.ndarray) -> np.ndarray:
    """Condensed-vector gather index of each stimulus permutation.

    Parameters
    ----------
    perms : ndarray, (n_perm, n_stimuli) int

    Returns
    -------
    ndarray, (n_perm, n_pairs) int32 (int64 above 46,340 stimuli)
        ``g`` with ``upper(D[np.ix_(pi, pi)]) == upper(D)[g]``.
    """
    return _PairIndexer(perms.shape[1])(perms)


class _PairIndexer:
    """Computes :func:`pair_gather_index` through a square lookup table of condensed positions."""

    def __init__(self, n_stimuli: int) -> None:
        self.n = n_stimuli
        self.dtype = np.int32 if n_stimuli <= 46_340 else np.int64
        iu, ju = triu_indices(n_stimuli)
        self.iu, self.ju = iu.astype(self.dtype), ju.astype(self.dtype)
        grid = np.arange(n_stimuli)
        table = condensed_position(grid[:, None], grid[None, :], n_stimuli)
        np.fill_diagonal(table, 0)
        self.table = table.astype(self.dtype).ravel()

    def __call__(self, perms: np.ndarray) -> np.ndarray:
        p = np.asarray(perms, dtype=self.dtype)
        flat = p[:, self.iu]
        flat *= self.dtype(self.n)
        flat += p[:, self.ju]
        return np.take(self.table, flat)


def inverse_permutations(perms: np.ndarray) -> np.ndarray:
    """Inverse of each row permutation.

    Parameters
    ----------
    perms : ndarray, (n_perm, n_stimuli) int
        Row ``k`` is a permutation of ``range(n_stimuli)``.

    Returns
    -------
    ndarray, (n_perm, n_stimuli), same dtype
        Row ``k`` is ``pi_k^-1``: ``inv[k, perms[k, i]] == i``.
    """
    inv = np.empty_like(perms)
    rows = np.arange(perms.shape[0])[:, None]
    inv[rows, perms] = np.arange(perms.shape[1], dtype=perms.dtype)[None, :]
    return inv


def min_exceedances_to_stop(alpha: float, n_permutations: int) -> int:
    """Smallest exceedance count ``h`` with ``h > alpha * n_permutations``.

    A cell with ``h`` exceedances has full-test p ``>= (1 + h) / (1 + N) > alpha`` and
    sequential p ``h / n_used >= h / N > alpha``: it can be stopped without
    changing its decision.

    Parameters
    ----------
    alpha : float
        Significance level, ``0 < alpha < 1``.
    n_permutations : int
        Number of permutations ``N`` of the full test.

    Returns
    -------
    int
        ``floor(alpha * N) + 1``.
    """
    return int(math.floor(alpha * n_permutations)) + 1


@dataclass
class PermutationResult:
    """Outcome of :func:`permutation_test` for every (site, layer) cell.

    Attributes
    ----------
    observed : ndarray, (n_sites, n_layers) float64
        Observed statistic (the comparison).
    p : ndarray, (n_sites, n_layers) float64
        p-value (NaN where the observed value is NaN).
    n_exceed : ndarray, (n_sites, n_layers) int64
        Null values at least as extreme as the observed one among those used.
    n_used : ndarray, (n_sites, n_layers) int64
        Permutations actually used (``< n_permutations`` when stopped early).
    stopped : ndarray, (n_sites, n_layers) bool
        Stopped early (its p is ``h / n_used``).
    n_permutations : int
    alternative : str
    h : int or None
        Early-stopping exceedance count (None when early stopping is off).
    """

    observed: np.ndarray
    p: np.ndarray
    n_exceed: np.ndarray
    n_used: np.ndarray
    stopped: np.ndarray
    n_permutations: int
    alternative: str
    h: int | None


def permutation_test(layers: np.ndarray, site_blocks: Iterable[np.ndarray] | np.ndarray, n_stimuli: int, *,
                     n_permutations: int = 10_000, seed: int | np.random.Generator = 0,
                     perms: np.ndarray | None = None, alternative: str = "greater", alpha: float = 0.001,
                     early_stopping: bool = True, gather_bytes: int = _GATHER_BYTES,
                     site_bytes: int = _SITE_BYTES) -> PermutationResult:
    """Permutation test of every (site, layer) dot-product statistic.

    Parameters
    ----------
    layers : ndarray, (n_pairs, n_layers) float64
        Prepared layer RDMs (:func:`framework.numerics.rdm.prepare`).
    site_blocks : ndarray (n_pairs, n_sites) or iterable of such blocks
        Prepared site RDMs; an iterable lets the caller build sites block by block
        (results are concatenated in order). The statistic is ``site . layer``.
    n_stimuli : int
        Stimuli of the RDMs (``n_pairs == n_stimuli (n_stimuli - 1) / 2``).
    n_permutations : int
        Number of permutations ``N`` (ignored when ``perms`` is given).
    seed : int or numpy.random.Generator
        Seeds :func:`draw_permutations`.
    perms : ndarray, (N, n_stimuli) int, optional
        Explicit permutations ``pi`` of the stimulus labels of the site RDMs
        (computed as ``pi^-1`` applied to the layer RDMs, see module docstring).
    alternative : {"greater", "two-sided", "less"}
        ``"greater"`` (default) tests for positive correlations; ``"two-sided"``
        compares absolute values.
    alpha : float
        Significance level that early stopping preserves.
    early_stopping : bool
        Stop a cell once it has ``h`` exceedances (see module docstring).
    gather_bytes : int
        Memory budget (bytes) of one batch of permutations: its permuted positions
        (8 bytes per pair and permutation) and gathered float32 layer vectors.
    site_bytes : int
        Memory budget (bytes) of the float32 site matrix tested at once; input blocks
        are grouped up to it (a larger group shares the cost of gathering the layers).
        The per-layer copies of a group in cell mode take at most as much again, and
        the pool of parked cells at most twice as much (see module docstring).

    Returns
    -------
    PermutationResult
        ``observed`` in float64; exceedances counted by the float32 rule of the module docstring.
    """
    check_option("alternative", alternative, ALTERNATIVES)
    if not (0.0 < alpha < 1.0):
        raise ConfigError(f"Invalid alpha {alpha!r} for the permutation test; expected 0 < alpha < 1.")
    lay = np.asarray(layers, dtype=np.float64)
    n_pairs = n_pairs_of(n_stimuli)
    if lay.ndim != 2 or lay.shape[0] != n_pairs:
        raise DataError(f"Layer RDM vectors must be (n_pairs={n_pairs}, n_layers) for {n_stimuli} stimuli, "
                        f"got {lay.shape}.")
    if perms is None:
        if n_permutations < 1:
            raise ConfigError(f"n_permutations must be >= 1 for a permutation test, got {n_permutations}.")
        perms = draw_permutations(seed, n_stimuli, n_permutations)
    perms = np.asarray(perms)
    if perms.ndim != 2 or perms.shape[1] != n_stimuli or perms.shape[0] < 1:
        raise DataError(f"perms must be (n_permutations >= 1, {n_stimuli}), got {perms.shape}.")
    n_perm = perms.shape[0]
    h = min_exceedances_to_stop(alpha, n_perm) if early_stopping else None
    if isinstance(site_blocks, np.ndarray):
        site_blocks = [site_blocks]

    engine = _Engine(lay, inverse_permutations(perms), n_stimuli, alternative, h, gather_bytes, site_bytes)
    n_workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        engine.executor, engine.n_workers = pool, n_workers
        observed = _run_groups(engine, lay, site_blocks, n_pairs, site_bytes)
        n_exceed, n_used, stopped = engine.finish()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(stopped, n_exceed / np.maximum(n_used, 1), (1.0 + n_exceed) / (1.0 + n_used))
    p[~np.isfinite(observed) | (n_used == 0)] = np.nan
    return PermutationResult(observed, p, n_exceed, n_used, stopped, n_perm, alternative, h)


def _run_groups(engine: _Engine, lay: np.ndarray, site_blocks: Iterable[np.ndarray], n_pairs: int,
                site_bytes: int) -> np.ndarray:
    """Float64 observed values (n_sites, n_layers) of the sites of ``site_blocks``, handing them to ``engine``
    grouped into float32 matrices of at most ``site_bytes``."""
    # Float32 site rows of the current group; np.empty only commits the pages that get filled.
    buf = np.empty((max(1, int(site_bytes // (4 * n_pairs))), n_pairs), dtype=np.float32)
    filled = 0
    observed_parts: list[np.ndarray] = []
    for block in site_blocks:
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2 or block.shape[0] != n_pairs:
            raise DataError(f"Site RDM vectors must be (n_pairs={n_pairs}, n_sites), got {block.shape}.")
        observed_parts.append(block.T @ lay)                                 # (n_block, n_layers) float64
        start = 0
        while start < block.shape[1]:
            take = min(buf.shape[0] - filled, block.shape[1] - start)
            buf[filled:filled + take] = block[:, start:start + take].T
            filled += take
            start += take
            if filled == buf.shape[0]:
                engine.add_group(buf[:filled])
                filled = 0
    if filled:
        engine.add_group(buf[:filled])
    del buf
    if not observed_parts:
        return np.zeros((0, lay.shape[1]))
    return np.concatenate(observed_parts, axis=0)


def _splits(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)``, as equal as possible."""
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


class _RowStore:
    """Recycles the float32 row arrays of cell sets (n_rows, n_pairs): fresh arrays of this size have their
    pages faulted in on first use, which costs more than the copy into them. Keeps at most ``max_rows``
    free rows; an array is reused for a request of at least half its rows."""

    def __init__(self, n_pairs: int, max_rows: int) -> None:
        self.n_pairs, self.max_rows = n_pairs, max_rows
        self.free: list[np.ndarray] = []

    def get(self, n_rows: int) -> np.ndarray:
        """A (n_rows, n_pairs) float32 array (uninitialised)."""
        fits = [i for i, a in enumerate(self.free) if n_rows <= a.shape[0] <= 2 * n_rows]
        if fits:
            return self.free.pop(min(fits, key=lambda i: self.free[i].shape[0]))[:n_rows]
        return np.empty((n_rows, self.n_pairs), dtype=np.float32)

    def put(self, arr: np.ndarray) -> None:
        """Give back an array from :meth:`get` (or a view of one) that nothing uses any more."""
        self.free.append(arr if arr.base is None else arr.base)
        self.free.sort(key=lambda a: -a.shape[0])
        while sum(a.shape[0] for a in self.free) > self.max_rows:
            self.free.pop()                                    # the smallest


class _CellSet:
    """Active cells of some sites in cell mode, all at the same permutation.

    For every layer ``l``: the float32 rows ``mats[l]`` (n_l, n_pairs) of the sites whose cell with ``l``
    is active (None when there is none), and the ids ``cids[l]`` (n_l,) int64 of those cells
    (``site * n_layers + l``). A site active for several layers has a row for each.
    """

    def __init__(self, mats: list[np.ndarray | None], cids: list[np.ndarray | None]) -> None:
        self.mats, self.cids = mats, cids

    @classmethod
    def from_sites(cls, sites: np.ndarray, rows: np.ndarray, cells: np.ndarray, store: _RowStore) -> _CellSet:
        """Copies (into arrays of ``store``) of the rows of ``sites`` (n, n_pairs) float32 (site indices
        ``rows`` (n,)) for the cells marked in ``cells`` (n, n_layers) bool."""
        n_layers = cells.shape[1]
        mats: list[np.ndarray | None] = []
        cids: list[np.ndarray | None] = []
        for layer in range(n_layers):
            sel = np.flatnonzero(cells[:, layer])
            mats.append(np.take(sites, sel, axis=0, out=store.get(sel.size), mode="clip") if sel.size else None)
            cids.append(rows[sel] * n_layers + layer if sel.size else None)
        return cls(mats, cids)

    @property
    def n_rows(self) -> int:
        return sum(c.size for c in self.cids if c is not None)

    def entries(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(layer, rows, cell ids) of every layer with active cells."""
        return [(layer, m, c) for layer, (m, c) in enumerate(zip(self.mats, self.cids)) if c is not None]

    def compact(self, active: np.ndarray, store: _RowStore) -> None:
        """Drop the rows of stopped cells (``active`` flat over all cells), in place once a layer has shrunk
        below ``_COMPACT_BELOW`` of its rows (a layer left without rows goes back to ``store``)."""
        for layer, cid in enumerate(self.cids):
            if cid is None:
                continue
            keep = np.flatnonzero(active[cid])
            if keep.size == 0:
                store.put(self.mats[layer])
                self.mats[layer] = self.cids[layer] = None
            elif keep.size < _COMPACT_BELOW * cid.size:
                self.mats[layer], self.cids[layer] = _compact(self.mats[layer], keep), cid[keep]

    @classmethod
    def merge(cls, sets: list[_CellSet], active: np.ndarray, store: _RowStore) -> _CellSet:
        """One set with the active cells of ``sets`` in arrays of ``store`` (the sets are emptied layer by
        layer, their arrays given back, so that at most one layer is held twice)."""
        n_layers = len(sets[0].mats)
        mats: list[np.ndarray | None] = []
        cids: list[np.ndarray | None] = []
        for layer in range(n_layers):
            parts, old = [], []
            for s in sets:
                cid = s.cids[layer]
                if cid is not None:
                    old.append(s.mats[layer])
                    keep = np.flatnonzero(active[cid])
                    if keep.size:
                        parts.append((s.mats[layer], keep, cid[keep]))
                s.mats[layer] = s.cids[layer] = None
            if parts:
                mat = store.get(sum(k.size for _, k, _ in parts))
                at = 0
                for m, keep, _ in parts:
                    np.take(m, keep, axis=0, out=mat[at:at + keep.size], mode="clip")   # "clip": unbuffered
                    at += keep.size
                mats.append(mat)
                cids.append(np.concatenate([c for _, _, c in parts]))
            else:
                mats.append(None)
                cids.append(None)
            del parts
            for m in old:
                store.put(m)
        return cls(mats, cids)


@dataclass
class _Work:
    """Cells tested together, all at the same permutation: ``sites`` (n, n_pairs) float32 rows tested
    against every layer (site mode; site indices ``rows`` (n,) int64) and cell sets (cell mode)."""

    sites: np.ndarray
    rows: np.ndarray
    cells: list[_CellSet]

    def __bool__(self) -> bool:
        return bool(self.rows.size) or any(s.n_rows for s in self.cells)


class _Engine:
    """Runs the test of groups of float32 site rows and keeps the counts of every cell.

    Holds what every group shares: the float32 square tables of the layers, the inverse
    permutations, the comparison rule, the pool of parked cells, and the counts of all cells
    so far (flat, cell ``site * n_layers + layer``).
    """

    def __init__(self, lay: np.ndarray, inv: np.ndarray, n_stimuli: int, alternative: str, h: int | None,
                 gather_bytes: int, site_bytes: int) -> None:
        n_pairs, self.n_layers = lay.shape
        self.n_pairs, self.n = n_pairs, n_stimuli
        self.inv = inv.astype(np.int32 if n_stimuli <= 46_340 else np.int64)      # n^2 fits the dtype
        self.n_perm = inv.shape[0]
        self.alternative, self.h = alternative, h
        self.tol = np.float32(tie_tolerance(n_pairs))
        iu, ju = triu_indices(n_stimuli)
        self.iu, self.ju = iu.astype(np.intp), ju.astype(np.intp)
        self.lay32 = lay.astype(np.float32)
        # table[l, i * n + j] = z_l at pair {i, j} (float32, symmetric, zero diagonal): a permuted vector is a
        # gather from it, with no re-ranking.
        self.table = np.zeros((self.n_layers, n_stimuli * n_stimuli), dtype=np.float32)
        self.table[:, self.iu * n_stimuli + self.ju] = self.lay32.T
        self.table[:, self.ju * n_stimuli + self.iu] = self.lay32.T
        self.gather_bytes = gather_bytes
        self.cell_rows = max(1, int(_CELL_SHARE * site_bytes // (4 * n_pairs)))
        self.pool_rows = max(1, int(_POOL_SHARE * site_bytes // (4 * n_pairs)))
        self.park_at = self.n_perm if h is None else min(self.n_perm, max(_FIRST_BATCH,
                                                                           int(_PARK_AT * self.n_perm)))
        self.obs = np.zeros(0, dtype=np.float32)
        self.ex = np.zeros(0, dtype=np.int64)
        self.used = np.zeros(0, dtype=np.int64)
        self.stopped = np.zeros(0, dtype=bool)
        self.active = np.zeros(0, dtype=bool)
        self.pool: list[_CellSet] = []
        self.pool_n = 0
        self.executor: ThreadPoolExecutor | None = None
        self.n_workers = 1
        self.n_gathered = 0          # permutations gathered (all layers counted as one), for the log
        self._scratch: dict[object, np.ndarray] = {}
        self.store = _RowStore(n_pairs, self.cell_rows)

    # ---- permuted layer vectors -------------------------------------------------------------------------
    def _positions(self, inv: np.ndarray, lo: int, hi: int, idx: np.ndarray, g: np.ndarray | None,
                   tmp: np.ndarray) -> None:
        """Square-table positions ``idx[lo:hi]`` (hi - lo, n_pairs) intp of the pairs permuted by
        ``inv[lo:hi]`` (``inv`` (b, n_stimuli)) and, when ``g`` (n_layers, b, n_pairs) float32 is given, the
        permuted vectors ``g[l, lo:hi]`` of every layer ``l``; ``tmp`` (2, >= hi - lo, n_pairs) is scratch in
        the dtype of ``inv`` (cheaper arithmetic than intp)."""
        part = inv[lo:hi]
        row, col = tmp[0, :hi - lo], tmp[1, :hi - lo]
        np.take(part, self.iu, axis=1, out=row, mode="wrap")
        np.take(part, self.ju, axis=1, out=col, mode="wrap")
        row *= self.n
        np.add(row, col, out=idx[lo:hi])
        if g is not None:
            for layer in range(self.n_layers):                 # indices are in range: "wrap" skips a check
                np.take(self.table[layer], idx[lo:hi], out=g[layer, lo:hi], mode="wrap")

    # ---- counting -------------------------------------------------------------------------------------
    def extreme(self, null: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``null`` at least as extreme as ``obs`` (broadcast against it), with the tie tolerance."""
        if self.alternative == "greater":
            return null >= obs - self.tol
        if self.alternative == "less":
            return null <= obs + self.tol
        return np.abs(null) >= np.abs(obs) - self.tol

    def _count(self, hit: np.ndarray, cid: np.ndarray, start: int, bsz: int) -> None:
        """Add the exceedances ``hit`` (m, bsz) bool of the cells ``cid`` (m,) (distinct) under the
        permutations [start, start + bsz), stopping cells that reach ``h``."""
        act = self.active[cid]
        n_hit = np.count_nonzero(hit, axis=1)
        if self.h is None:
            self.ex[cid] += np.where(act, n_hit, 0)
            self.used[cid] += np.where(act, bsz, 0)
            return
        ex = self.ex[cid]
        total = ex + n_hit
        used = np.where(act, bsz, 0)
        ex_new = np.where(act, total, ex)
        reach = np.flatnonzero(act & (total >= self.h))
        if reach.size:
            # 1-based position of the h-th exceedance within this batch
            cum = np.cumsum(hit[reach], axis=1, dtype=np.int64)               # (n_reach, bsz)
            pos = np.argmax(cum >= (self.h - ex[reach])[:, None], axis=1) + 1
            used[reach] = pos
            ex_new[reach] = self.h
            # a cell reaching h only on the very last permutation ran the full test
            stop = start + pos < self.n_perm
            cells = cid[reach]
            self.stopped[cells] |= stop
            self.active[cells[stop]] = False
        self.ex[cid] = ex_new
        self.used[cid] += used

    # ---- groups and the pool ---------------------------------------------------------------------------
    def add_group(self, sites: np.ndarray) -> None:
        """Test the group ``sites`` (n_group, n_pairs) float32 (overwritten: compacted in place): up to
        ``park_at`` permutations here, the rest in the pool (or here, when its cells do not fit the pool)."""
        n_sites, n_layers = sites.shape[0], self.n_layers
        first = self.active.size // n_layers
        grow = n_sites * n_layers
        # Observed values through the same float32 path as the null values (sgemm with the layer vectors).
        obs = sites @ self.lay32                                              # (n_group, n_layers) float32
        self.obs = np.concatenate([self.obs, obs.ravel()])
        self.active = np.concatenate([self.active, np.isfinite(obs).ravel()])
        self.ex = np.concatenate([self.ex, np.zeros(grow, dtype=np.int64)])
        self.used = np.concatenate([self.used, np.zeros(grow, dtype=np.int64)])
        self.stopped = np.concatenate([self.stopped, np.zeros(grow, dtype=bool)])
        local = np.flatnonzero(np.isfinite(obs).any(axis=1))
        work = _Work(_compact(sites, local), local + first, [])
        t0, gathered = time.perf_counter(), self.n_gathered
        b = self.n_perm if self.h is None else _FIRST_BATCH
        start, b = self._run(work, 0, self.park_at, b)
        log.debug("permutation test, group of %d sites: %d permutations gathered, %.2f s", n_sites,
                  self.n_gathered - gathered, time.perf_counter() - t0)
        if start >= self.n_perm or not work:
            return
        n_cells = sum(s.n_rows for s in work.cells) + int(self.active[self._site_cells(work.rows)].sum())
        if n_cells > self.pool_rows:                  # too many to park: run this group to the end
            self._run(work, start, self.n_perm, b)
            return
        if self.pool_n + n_cells > self.pool_rows:    # make room first: the pool is full already
            self.flush()
        if work.rows.size:
            work.cells.append(_CellSet.from_sites(work.sites, work.rows, self.active[self._site_cells(work.rows)],
                                                  self.store))
        self.pool.append(_CellSet.merge(work.cells, self.active, self.store))
        self.pool_n += n_cells

    def flush(self) -> None:
        """Run the parked cells from ``park_at`` to the end, sharing every gather between them."""
        if not self.pool:
            return
        t0, gathered, n_cells = time.perf_counter(), self.n_gathered, self.pool_n
        merged = _CellSet.merge(self.pool, self.active, self.store)
        self.pool, self.pool_n = [], 0
        self._run(_Work(np.zeros((0, self.n_pairs), dtype=np.float32), np.zeros(0, dtype=np.int64), [merged]),
                  self.park_at, self.n_perm, self.n_perm)
        for mat in merged.mats:                                # left by cells that ran to the end
            if mat is not None:
                self.store.put(mat)
        log.debug("permutation test, pool of %d cells: %d permutations gathered, %.2f s", n_cells,
                  self.n_gathered - gathered, time.perf_counter() - t0)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flush the pool; counts ``n_exceed``, ``n_used`` (n_sites, n_layers) int64, ``stopped`` bool."""
        self.flush()
        shape = (self.active.size // self.n_layers, self.n_layers)
        return self.ex.reshape(shape), self.used.reshape(shape), self.stopped.reshape(shape)

    # ---- batches ---------------------------------------------------------------------------------------
    def _site_cells(self, rows: np.ndarray) -> np.ndarray:
        """Cell ids (n, n_layers) of the sites ``rows`` (n,)."""
        return rows[:, None] * self.n_layers + np.arange(self.n_layers)

    def _buffer(self, key: object, shape: tuple[int, ...], dtype: type, capacity: int = 0) -> np.ndarray:
        """A reused array of ``shape`` (allocated with room for ``capacity`` elements, so that it does not
        grow batch after batch): large arrays allocated afresh for every batch would have their pages
        faulted in (and zeroed) every time, which costs as much as filling them."""
        size = math.prod(shape)
        flat = self._scratch.get(key)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._scratch[key] = np.empty(max(size, capacity), dtype=dtype)
        return flat[:size].reshape(shape)

    def b_cap(self, site_mode: bool) -> int:
        """Largest batch whose positions and permuted vectors fit ``gather_bytes``: every layer's in site
        mode, one layer per worker in cell mode."""
        per_pair = 8 + 4 * (self.n_layers if site_mode else self.n_workers)
        return max(1, min(_MAX_BATCH, int(self.gather_bytes // (self.n_pairs * per_pair))))

    def _plan(self, n_sites: int, entries: list[tuple[int, np.ndarray, np.ndarray]]) -> list[list[tuple]]:
        """Split a batch into tasks ``(kind, entry, lo, hi)`` (kind 0: site rows [lo, hi); kind 1: rows
        [lo, hi) of cell entry ``entry``) and give them to the workers, largest first to the least loaded
        (load: rows x layers multiplied, plus the packing of the permuted vectors per product)."""
        tasks = []
        if n_sites:
            for lo, hi in _splits(n_sites, max(1, min(self.n_workers, n_sites // _MIN_TASK_ROWS))):
                tasks.append(((hi - lo + _PACK_ROWS) * self.n_layers, 0, -1, lo, hi))
        for e, (_, mat, _) in enumerate(entries):
            n = mat.shape[0]
            for lo, hi in _splits(n, max(1, min(self.n_workers, n // _MIN_TASK_ROWS))):
                tasks.append((hi - lo + _PACK_ROWS, 1, e, lo, hi))
        if self.n_workers == 1 or len(tasks) == 1:
            return [[t[1:] for t in tasks]]
        loads = [0] * self.n_workers
        plan: list[list[tuple]] = [[] for _ in range(self.n_workers)]
        for t in sorted(tasks, key=lambda t: -t[0]):
            w = loads.index(min(loads))
            plan[w].append(t[1:])
            loads[w] += t[0]
        return [p for p in plan if p]

    def _job(self, tasks: list[tuple], work: _Work, entries: list, idx: np.ndarray, g: np.ndarray | None,
             buf: np.ndarray | None) -> list[np.ndarray]:
        """Null values of one worker's ``tasks``, one single-threaded sgemm each: site rows (rows,
        n_layers * b), column ``l * b + k``, with the permuted vectors ``g`` (n_layers, b, n_pairs); cells
        (rows, b), each layer's permuted vectors gathered here (from the positions ``idx`` (b, n_pairs)) just
        before its products, while they are in cache, into ``buf`` (b, n_pairs) float32, when ``g`` is None."""
        out: list[np.ndarray | None] = [None] * len(tasks)
        by_layer: dict[int, list[int]] = {}
        for t, (kind, e, lo, hi) in enumerate(tasks):
            if kind == 0:
                out[t] = work.sites[lo:hi] @ g.reshape(-1, self.n_pairs).T
            else:
                by_layer.setdefault(entries[e][0], []).append(t)
        for layer, ts in by_layer.items():
            if g is None:
                np.take(self.table[layer], idx, out=buf, mode="wrap")
            vectors = (buf if g is None else g[layer]).T                     # (n_pairs, b)
            for t in ts:
                _, e, lo, hi = tasks[t]
                out[t] = entries[e][1][lo:hi] @ vectors
        return out

    def _map(self, fn, *args: list) -> list:
        """``[fn(*a) for a in zip(*args)]``, on the workers when there is more than one call."""
        if len(args[0]) == 1:
            return [fn(*(a[0] for a in args))]
        return list(self.executor.map(fn, *args))

    def _run(self, work: _Work, start: int, stop: int, b: int) -> tuple[int, int]:
        """Test ``work`` on the permutations [start, stop) in batches (of ``b``, doubling with early stopping,
        at most :meth:`b_cap`), until ``stop`` or no active cell; returns the next permutation and batch."""
        n_layers = self.n_layers
        while start < stop and work:
            entries = [e for s in work.cells for e in s.entries()]
            site_mode = bool(work.rows.size)
            bsz = min(b, self.b_cap(site_mode), stop - start)
            inv = self.inv[start:start + bsz]
            # Coarse-grained parallelism with single-threaded sgemm (multi-threaded BLAS stalls at its many
            # barriers on a busy machine): the workers compute the permuted positions (and in site mode the
            # permuted vectors of every layer), split by permutations, then the products, split by rows and
            # layers.
            most = max(self.b_cap(True), self.b_cap(False))
            idx = self._buffer("idx", (bsz, self.n_pairs), np.intp, most * self.n_pairs)
            g = None
            if site_mode:
                g = self._buffer("g", (n_layers, bsz, self.n_pairs), np.float32,
                                 n_layers * self.b_cap(True) * self.n_pairs)
            chunks = _splits(bsz, min(self.n_workers, bsz))
            k = len(chunks)
            tmps = [self._buffer(("tmp", w), (2, hi - lo, self.n_pairs), self.inv.dtype,
                                 2 * -(-most // k) * self.n_pairs) for w, (lo, hi) in enumerate(chunks)]
            self._map(self._positions, [inv] * k, [lo for lo, _ in chunks], [hi for _, hi in chunks], [idx] * k,
                      [g] * k, tmps)
            plan = self._plan(work.rows.size, entries)
            k = len(plan)
            bufs = [None if site_mode else self._buffer(("buf", w), (bsz, self.n_pairs), np.float32,
                                                        self.b_cap(False) * self.n_pairs) for w in range(k)]
            results = self._map(self._job, plan, [work] * k, [entries] * k, [idx] * k, [g] * k, bufs)
            del idx, g, bufs
            parts: dict[int, list[tuple[int, np.ndarray]]] = {}
            for tasks, res in zip(plan, results):
                for (_, e, lo, _), null in zip(tasks, res):
                    parts.setdefault(e, []).append((lo, null))
            del results
            self.n_gathered += bsz
            for e, pieces in parts.items():
                pieces.sort(key=lambda p: p[0])
                null = pieces[0][1] if len(pieces) == 1 else np.concatenate([p for _, p in pieces], axis=0)
                if e < 0:                                                     # site rows: all layers
                    cid = self._site_cells(work.rows)                         # (n, n_layers)
                    hit = self.extreme(null.reshape(cid.shape[0], n_layers, bsz), self.obs[cid][:, :, None])
                    self._count(hit.reshape(cid.size, bsz), cid.ravel(), start, bsz)
                else:
                    cid = entries[e][2]
                    self._count(self.extreme(null, self.obs[cid][:, None]), cid, start, bsz)
            del parts, entries                     # views of cell arrays that may go back to the store now
            start += bsz
            b = min(2 * b, self.n_perm) if self.h is not None else b
            for s in work.cells:
                s.compact(self.active, self.store)
            work.cells = [s for s in work.cells if s.n_rows]
            if work.rows.size:
                self._update_sites(work, migrate=self.h is not None and start < stop)
        return start, b

    def _update_sites(self, work: _Work, migrate: bool) -> None:
        """Drop dead site rows and (``migrate``) move sites with few active layers to cell mode."""
        act = self.active[self._site_cells(work.rows)]                       # (n, n_layers)
        n_act = act.sum(axis=1)
        live = n_act > 0
        move = np.zeros_like(live)
        if migrate:
            room = self.cell_rows - sum(s.n_rows for s in work.cells)
            cand = np.flatnonzero(live & (n_act <= _MIGRATE_MAX))
            if cand.size and room > 0:
                cand = cand[np.argsort(n_act[cand], kind="stable")]          # fewest active layers first
                fit = cand[np.cumsum(n_act[cand]) <= room]
                if fit.size >= _MIGRATE_MIN * live.sum() or fit.size == live.sum():
                    move[fit] = True
        if move.any():
            work.cells.append(_CellSet.from_sites(work.sites, work.rows, act & move[:, None], self.store))
            if len(work.cells) > _MAX_CELL_SETS:
                work.cells = [_CellSet.merge(work.cells, self.active, self.store)]
        keep = live & ~move
        if move.any() or keep.sum() < _COMPACT_BELOW * work.rows.size:     # moved sites must leave at once
            idx = np.flatnonzero(keep)
            work.sites, work.rows = _compact(work.sites, idx), work.rows[idx]


def _compact(mat: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``mat[keep]`` written in place into the first rows of ``mat`` (``keep`` increasing); returns that view.

    Row ``keep[i] >= i`` only moves up: each run of consecutive kept rows is copied in slices no longer
    than its shift, so that no slice overlaps its source and no temporary copy is made.
    """
    if keep.size == mat.shape[0] or keep.size == 0:
        return mat[:keep.size]
    breaks = np.flatnonzero(np.diff(keep) != 1) + 1
    for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [keep.size]])):
        src, dst, n = int(keep[lo]), int(lo), int(hi - lo)
        if src == dst:
            continue
        for off in range(0, n, src - dst):
            k = min(src - dst, n - off)
            mat[dst + off:dst + off + k] = mat[src + off:src + off + k]
    return mat[:keep.size]
