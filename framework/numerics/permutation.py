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
    * a batch of ``B`` permutations is one float32 matrix product
      ``(n_active_sites, n_pairs) @ (n_pairs, n_layers * B)``;
    * sequential early stopping (Besag & Clifford 1991): a cell stops once it has
      seen ``h`` null values at least as large as the observed one, ``h`` the
      smallest count with ``h > alpha * n_permutations``; such a cell can no
      longer be significant at ``alpha`` and gets ``p = h / n_used``. Cells that
      do not stop get exactly the p-value of the full test,
      ``p = (1 + #{null >= observed}) / (1 + n_permutations)``. Every decision
      ``p <= alpha`` is therefore the one the full test makes. A site leaves the
      working set (its row is dropped from the site matrix, which is compacted in
      place once it has shrunk by 10 %) when all its cells have stopped; batches
      start small and double, so cells that stop early cost little.

Comparison rule (float32)
    Observed and null values are computed by the same float32 path (prepared
    vectors rounded to float32; single-threaded sgemm of the site rows with the
    gathered layer columns, the observed values with the identity permutation's
    columns). With OpenBLAS the identity permutation reproduces the observed
    value bit-for-bit (measured for 2 to 1,000 active sites and any position in a
    batch; a single remaining site takes the gemv path and differs by ~2e-8).
    A null value counts as at least as extreme when ``null >= observed - tol``
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
    count), each gathering and multiplying its share with a single-threaded BLAS
    (``threadpoolctl`` limits BLAS to one thread for the duration of the call,
    process-wide): multi-threaded sgemm with few rows and long vectors stalls at
    its many barriers on a busy machine (measured 0.6 s instead of 20 ms).

The permutations are those of :func:`draw_permutations` (so a plain loop can
reproduce them); every cell sees the same permutations in the same order, and
the result does not depend on how sites or permutations are batched.
"""
from __future__ import annotations

import functools
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
#: Budget (bytes) of the gathered float32 layer vectors of one batch of permutations.
_GATHER_BYTES = 96 * 2**20
#: Budget (bytes) of the float32 site matrix tested at once (sites of several input blocks are grouped).
_SITE_BYTES = 192 * 2**20
#: First batch size with early stopping (batches then double up to the memory budget).
_FIRST_BATCH = 8
#: Worker threads (each runs single-threaded sgemm on its share of a batch); at most the CPU count.
_MAX_WORKERS = 4
#: Compact the site matrix when the live sites fall below this fraction of its rows.
_COMPACT_BELOW = 0.9


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
        Memory budget (bytes) of the gathered float32 layer vectors of one batch of permutations.
    site_bytes : int
        Memory budget (bytes) of the float32 site matrix tested at once; input blocks
        are grouped up to it (a larger group shares the cost of gathering the layers).

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

    tester = _GroupTester(lay, inverse_permutations(perms), n_stimuli, alternative, h, gather_bytes)
    n_workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        tester.pool, tester.n_workers = pool, n_workers
        observed, n_exceed, n_used, stopped = _run_groups(tester, lay, site_blocks, n_pairs, site_bytes)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(stopped, n_exceed / np.maximum(n_used, 1), (1.0 + n_exceed) / (1.0 + n_used))
    p[~np.isfinite(observed) | (n_used == 0)] = np.nan
    return PermutationResult(observed, p, n_exceed, n_used, stopped, n_perm, alternative, h)


def _run_groups(tester: _GroupTester, lay: np.ndarray, site_blocks: Iterable[np.ndarray], n_pairs: int,
                site_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 observed values, and counts of the sites of ``site_blocks`` grouped into float32 matrices."""
    # Float32 site rows of the current group; np.empty only commits the pages that get filled.
    buf = np.empty((max(1, int(site_bytes // (4 * n_pairs))), n_pairs), dtype=np.float32)
    filled = 0
    observed_parts: list[np.ndarray] = []
    count_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
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
                count_parts.append(tester(buf[:filled]))
                filled = 0
    if filled:
        count_parts.append(tester(buf[:filled]))
    del buf
    n_layers = lay.shape[1]
    if not observed_parts:
        observed = np.zeros((0, n_layers))
        n_exceed = n_used = np.zeros((0, n_layers), dtype=np.int64)
        stopped = np.zeros((0, n_layers), dtype=bool)
    else:
        observed = np.concatenate(observed_parts, axis=0)
        n_exceed, n_used, stopped = (np.concatenate(x, axis=0) for x in zip(*count_parts))
    return observed, n_exceed, n_used, stopped


class _GroupTester:
    """Runs the permutation test of one group of float32 site rows against all layers.

    Holds what every group shares: the float32 square tables of the layers, the
    inverse permutations and the comparison rule.
    """

    def __init__(self, lay: np.ndarray, inv: np.ndarray, n_stimuli: int, alternative: str, h: int | None,
                 gather_bytes: int) -> None:
        n_pairs, self.n_layers = lay.shape
        self.n_pairs, self.n = n_pairs, n_stimuli
        self.inv = inv.astype(np.int32)
        self.n_perm = inv.shape[0]
        self.alternative, self.h = alternative, h
        self.tol = np.float32(tie_tolerance(n_pairs))
        iu, ju = triu_indices(n_stimuli)
        self.iu, self.ju = iu.astype(np.intp), ju.astype(np.intp)
        # table[i * n + j, l] = z_l at pair {i, j} (float32, symmetric, zero diagonal): the permuted vectors of
        # all layers are one row gather from it, with no re-ranking. Layers are interleaved so that one
        # index fetches the values of every layer at once (one cache line for 9 layers).
        lay32 = lay.astype(np.float32)
        self.table = np.zeros((n_stimuli * n_stimuli, self.n_layers), dtype=np.float32)
        self.table[self.iu * n_stimuli + self.ju] = lay32
        self.table[self.ju * n_stimuli + self.iu] = lay32
        self.b_max = max(1, int(gather_bytes // (4 * self.n_layers * n_pairs)))
        self.pool: ThreadPoolExecutor | None = None
        self.n_workers = 1

    def gather(self, inv: np.ndarray) -> np.ndarray:
        """Permuted float32 layer vectors, (n_pairs, b * n_layers); column ``k * n_layers + l`` is layer ``l``
        permuted by ``inv[k]`` (``inv`` is (b, n_stimuli))."""
        b = inv.shape[0]
        inv_t = np.ascontiguousarray(inv.T)                                   # (n_stimuli, b)
        idx = np.empty((self.n_pairs, b), dtype=np.intp)
        np.multiply(np.take(inv_t, self.iu, axis=0), self.n, out=idx)
        idx += np.take(inv_t, self.ju, axis=0)
        out = np.empty((self.n_pairs, b, self.n_layers), dtype=np.float32)
        np.take(self.table, idx, axis=0, out=out, mode="wrap")        # indices are in range; "wrap" skips a check
        return out.reshape(self.n_pairs, b * self.n_layers)

    def null(self, work: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """Null values of the sites ``work`` (n_act, n_pairs) float32 under ``inv`` (b, n_stimuli): one
        single-threaded sgemm, (n_act, b, n_layers) float32."""
        return (work @ self.gather(inv)).reshape(work.shape[0], inv.shape[0], self.n_layers)

    def extreme(self, null: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``null`` (n, b, n_layers) at least as extreme as ``obs`` (n, n_layers), with the tie tolerance."""
        if self.alternative == "greater":
            return null >= (obs - self.tol)[:, None, :]
        if self.alternative == "less":
            return null <= (obs + self.tol)[:, None, :]
        return np.abs(null) >= (np.abs(obs) - self.tol)[:, None, :]

    def __call__(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Counts of one group.

        Parameters
        ----------
        sites : ndarray, (n_group, n_pairs) float32
            Prepared site vectors as rows; overwritten (compacted in place).

        Returns
        -------
        n_exceed, n_used : ndarray, (n_group, n_layers) int64
        stopped : ndarray, (n_group, n_layers) bool
        """
        n_sites, n_layers, n_perm, h = sites.shape[0], self.n_layers, self.n_perm, self.h
        identity = np.arange(self.n, dtype=np.int32)[None, :]
        # Observed values through the same float32 path as the null values (identity permutation).
        obs = sites @ self.gather(identity)                                    # (n_sites, n_layers) float32
        n_exceed = np.zeros((n_sites, n_layers), dtype=np.int64)
        n_used = np.zeros((n_sites, n_layers), dtype=np.int64)
        stopped = np.zeros((n_sites, n_layers), dtype=bool)
        active = np.isfinite(obs)
        rows = np.flatnonzero(active.any(axis=1))         # original index of each row of the working set
        work = _compact(sites, rows)
        start = 0
        b = self.b_max if h is None else min(_FIRST_BATCH, self.b_max)
        t_start, site_perms, n_batches = time.perf_counter(), 0, 0
        while start < n_perm and rows.size:
            bsz = min(b, n_perm - start)
            # Coarse-grained parallelism: each worker gathers and multiplies its share of the batch with a
            # single-threaded sgemm (multi-threaded BLAS stalls at its many barriers on a busy machine).
            bounds = np.linspace(start, start + bsz, min(self.n_workers, bsz) + 1).astype(int)
            chunks = [self.inv[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
            parts = list(self.pool.map(functools.partial(self.null, work), chunks)) if len(chunks) > 1 \
                else [self.null(work, chunks[0])]
            null = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)   # (n_act, bsz, n_layers)
            del parts
            site_perms += rows.size * bsz
            hit = self.extreme(null, obs[rows]).transpose(0, 2, 1)            # (n_act, n_layers, bsz) view
            del null
            act = active[rows]                                                # (n_act, n_layers)
            n_hit = hit.sum(axis=2, dtype=np.int64)
            if h is None:
                n_exceed[rows] += np.where(act, n_hit, 0)
                n_used[rows] += np.where(act, bsz, 0)
            else:
                ex = n_exceed[rows]
                used = np.where(act, bsz, 0)
                ex_new = np.where(act, ex + n_hit, ex)
                ri, li = np.nonzero(act & (ex + n_hit >= h))
                if ri.size:
                    # 1-based position of the h-th exceedance within this batch
                    cum = np.cumsum(hit[ri, li], axis=1, dtype=np.int64)      # (n_reach, bsz)
                    pos = np.argmax(cum >= (h - ex[ri, li])[:, None], axis=1) + 1
                    used[ri, li] = pos
                    ex_new[ri, li] = h
                    # a cell reaching h only on the very last permutation ran the full test
                    stop = np.zeros_like(act)
                    stop[ri, li] = start + pos < n_perm
                    stopped[rows] |= stop
                    active[rows] = act & ~stop
                n_exceed[rows] = ex_new
                n_used[rows] += used
                b = min(2 * b, self.b_max)
            start += bsz
            n_batches += 1
            live = active[rows].any(axis=1)
            if live.sum() < _COMPACT_BELOW * rows.size:
                keep = np.flatnonzero(live)
                work = _compact(work, keep)
                rows = rows[keep]
        log.debug("permutation test of %d sites: %d batches, %.3g site-permutations, %.2f s", n_sites, n_batches,
                  site_perms, time.perf_counter() - t_start)
        return n_exceed, n_used, stopped


def _compact(mat: np.ndarray, keep: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``mat[keep]`` written in place into the first rows of ``mat`` (``keep`` increasing); returns that view.

    Row ``keep[i] >= i`` only moves up, so a chunk's sources are never overwritten by an earlier chunk.
    """
    if keep.size == mat.shape[0]:
        return mat
    for i in range(0, keep.size, chunk):
        sel = keep[i:i + chunk]
        if sel[0] != i or sel[-1] != i + sel.size - 1:
            mat[i:i + sel.size] = mat[sel]
    return mat[:keep.size]
