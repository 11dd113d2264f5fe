"""What metrics need from a layer, and how it is computed from the layer's features.

A metric rarely needs a layer's raw features (n_stimuli, n_features): RSA needs the
layer's RDM, which is a function of the Gram matrix ``X X^T``; linear CKA needs the
Gram matrix of the centred features; ridge regression in its kernel form needs one
z-scored Gram matrix per cross-validation fold. These (n_stimuli, n_stimuli)
*sufficient statistics* are what the activation cache keeps (kilobytes to megabytes),
instead of the features themselves (gigabytes for wide convolutional layers).

A metric declares its needs with :meth:`framework.contracts.MetricPlugin.needs`, a list
of :class:`Need`; the extraction stage computes every need of every metric of a run
while the features are at hand (:func:`compute`), and caches each, content-addressed
(:mod:`framework.activation_cache`). Every statistic is computed by the same numerics
the metrics would call on the features (:mod:`framework.numerics.gram`), so scores
from statistics equal scores from features.

Needs
-----
``summary``
    Always computed: per stimulus a 128-bit digest of the layer's features (to find
    layers that are constant over the scored stimuli) and whether they are finite.
``features``
    The raw features (a metric such as PLS regression needs them; also kept with
    ``--keep-activations``). Optionally only for layers at most ``max_width`` wide.
``gram``
    ``X X^T`` and the row sums ``X 1`` (correlation and cosine RDMs).
``centered_gram``
    ``Xc Xc^T`` of the features centred over stimuli (Euclidean RDMs, linear CKA).
``fold_grams``
    Per cross-validation fold, the Gram matrix of the features z-scored (or only
    centred) with that fold's training statistics, over all stimuli
    (:func:`framework.numerics.gram.fold_grams`); only for the folds whose training
    set has fewer stimuli than the layer has features (narrower layers are fitted
    from their features).
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.errors import DataError
from framework.numerics.gram import fold_grams, gram

__all__ = ["NEED_KINDS", "ColumnReader", "Need", "compute", "row_summary"]

#: Kinds of statistics a metric can need from a layer.
NEED_KINDS = ("summary", "features", "gram", "centered_gram", "fold_grams")
#: Bytes of file pages a :class:`ColumnReader` lets its reads touch before releasing them.
RELEASE_BYTES = 32 << 20
_PAGE = mmap.PAGESIZE
#: Stimuli per chunk when hashing rows.
_ROW_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class Need:
    """One statistic a metric needs from every layer (see the module docstring).

    Parameters
    ----------
    kind : {"summary", "features", "gram", "centered_gram", "fold_grams"}
    trains : tuple of tuple of int
        ``fold_grams`` only: the training stimuli of each fold, as row indices of the
        dataset's stimulus order.
    standardize : bool
        ``fold_grams`` only: divide by the training standard deviation (always centred).
    max_width : int, optional
        ``features`` only: only layers with at most this many features.
    """

    kind: str
    trains: tuple[tuple[int, ...], ...] = field(default=(), repr=False)
    standardize: bool = True
    max_width: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in NEED_KINDS:
            raise ValueError(f"Need kind must be one of {NEED_KINDS}, got {self.kind!r}.")

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def summary(cls) -> Need:
        return cls("summary")

    @classmethod
    def features(cls, max_width: int | None = None) -> Need:
        """The raw features (of layers at most ``max_width`` wide, or of every layer)."""
        return cls("features", max_width=None if max_width is None else int(max_width))

    @classmethod
    def gram(cls, centered: bool) -> Need:
        """``X X^T`` (with row sums), or ``Xc Xc^T`` of the features centred over stimuli."""
        return cls("centered_gram" if centered else "gram")

    @classmethod
    def fold_grams(cls, trains: Sequence[np.ndarray], standardize: bool = True) -> Need:
        """Per-fold z-scored Gram matrices for folds with training rows ``trains`` (dataset order)."""
        return cls("fold_grams", tuple(tuple(int(i) for i in t) for t in trains), bool(standardize))

    # -- identity ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (cache metadata, messages)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "fold_grams":
            out.update(n_folds=len(self.trains), standardize=self.standardize,
                       train_sizes=[len(t) for t in self.trains])
        if self.kind == "features" and self.max_width is not None:
            out["max_width"] = self.max_width
        return out

    @property
    def id(self) -> str:
        """16 hex characters identifying the statistic (part of its cache key)."""
        from framework.types import digest_of

        return digest_of("need-v1", self.kind, [list(t) for t in self.trains], self.standardize,
                         self.max_width)[:16]

    def applies_to(self, n_features: int) -> bool:
        """Whether a layer ``n_features`` wide has this statistic."""
        if self.kind == "features" and self.max_width is not None:
            return n_features <= self.max_width
        return True

    def wide_folds(self, n_features: int) -> list[int]:
        """``fold_grams``: the folds whose training set is smaller than ``n_features``."""
        return [f for f, t in enumerate(self.trains) if n_features > len(t)]


def fold_key(trains: Sequence[np.ndarray], standardize: bool) -> str:
    """Identity of a set of folds' Gram matrices (training rows in order, standardisation)."""
    from framework.types import digest_of

    return digest_of("folds-v1", [np.asarray(t, dtype=np.int64).tolist() for t in trains], bool(standardize))[:32]


class ColumnReader:
    """A read-only 2-D ``.npy`` file read in blocks without keeping its pages resident.

    ``reader[:, a:b]`` (a column block) and ``reader[a:b]`` (a row block) return in-memory
    copies read from the file with ``pread`` (one read per row for a column block, one read for
    a row block): the bytes come through the page cache into this process's buffer, so
    resident memory is the copies only. A memory map would not do: the kernel maps whole
    large folios of the page cache on a fault (up to 2 MB each), so reading a narrow column
    block of a 1,000-row layer made about 1.2 GB of a 1.8 GB file resident (measured), and
    ``madvise(MADV_DONTNEED)`` only released it between blocks. Other indexes, and arrays that
    are not a C-ordered memory map of a file, go through the array itself; for a memory map,
    its pages are released (``MADV_DONTNEED``) once such reads have touched about
    :data:`RELEASE_BYTES`. Supports what the Gram builders use: ``shape``, ``dtype``, ``ndim``,
    ``[:, a:b]`` and ``[rows]``. Thread-safe (``pread`` has no shared file position).

    Parameters
    ----------
    array : numpy.memmap or ndarray, (n_stimuli, n_features)
        A read-only memory map (``np.load(path, mmap_mode="r")``) or any array.
    """

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self._map = getattr(array, "_mmap", None)
        self._touched = 0
        self._fd: int | None = None
        filename = getattr(array, "filename", None)
        if (filename is not None and array.ndim == 2 and array.flags.c_contiguous
                and getattr(array, "base", None) is not None and hasattr(os, "pread")):
            try:
                self._fd = os.open(filename, os.O_RDONLY)
            except OSError:
                self._fd = None
            self._offset = int(getattr(array, "offset", 0))
            self._row_bytes = int(array.shape[1]) * array.dtype.itemsize

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _pread(self, buf: np.ndarray, offset: int) -> None:
        view = memoryview(buf).cast("B")
        done = 0
        while done < view.nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise DataError(f"Short read of '{self._array.filename}' at byte {offset + done}; the cached "
                                "file is truncated (clear the activation cache).")
            done += got

    def __getitem__(self, index: Any) -> np.ndarray:
        n, p = self.shape if self.ndim == 2 else (self.shape[0], 1)
        if self._fd is not None:
            if isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) \
                    and isinstance(index[1], slice) and index[1].step in (None, 1):
                a, b, _ = index[1].indices(p)
                b = max(a, b)
                out = np.empty((n, b - a), dtype=self.dtype)
                if b > a:
                    for i in range(n):
                        self._pread(out[i], self._offset + i * self._row_bytes + a * self.dtype.itemsize)
                return out
            if isinstance(index, slice) and index.step in (None, 1):
                a, b, _ = index.indices(n)
                b = max(a, b)
                out = np.empty((b - a, p), dtype=self.dtype)
                if b > a:
                    self._pread(out, self._offset + a * self._row_bytes)
                return out
        out = np.array(self._array[index])
        if self._map is None or not hasattr(self._map, "madvise"):
            return out
        if isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None):  # a column block
            width = out.shape[1] * out.itemsize if out.ndim == 2 else out.itemsize
            self._touched += self.shape[0] * (width // _PAGE + 2) * _PAGE   # pages of every row it crossed
        else:
            self._touched += out.nbytes
        if self._touched >= RELEASE_BYTES:
            self._touched = 0
            with contextlib.suppress(OSError, ValueError):  # advisory only
                self._map.madvise(mmap.MADV_DONTNEED)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)


def row_summary(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stimulus: a 128-bit digest of its features and whether they are all finite.

    Parameters
    ----------
    features : ndarray, (n_stimuli, n_features) float32
        May be a memory map (read in row chunks).

    Returns
    -------
    digests : ndarray, (n_stimuli, 16) uint8
        XXH3-128 of the row's float32 bytes, with ``-0.0`` read as ``0.0`` (equal rows, by
        value, have equal digests).
    finite : ndarray, (n_stimuli,) bool
    """
    import xxhash

    n, p = features.shape
    digests = np.zeros((n, 16), dtype=np.uint8)
    finite = np.zeros(n, dtype=bool)
    step = max(1, _ROW_CHUNK_BYTES // max(1, 4 * p))
    for s in range(0, n, step):
        chunk = np.asarray(features[s:s + step], dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
        finite[s:s + chunk.shape[0]] = np.isfinite(chunk).all(axis=1)
        for i, row in enumerate(chunk):
            digests[s + i] = np.frombuffer(xxhash.xxh3_128_digest(row.tobytes()), dtype=np.uint8)
    return digests, finite


def compute(features: np.ndarray, need: Need, *, layer: str = "layer") -> dict[str, np.ndarray]:
    """The statistic ``need`` of one layer.

    Parameters
    ----------
    features : ndarray, (n_stimuli, n_features)
        float32, possibly memory-mapped (wrap it in :class:`ColumnReader` to bound memory).
    need : Need
    layer : str
        For messages.

    Returns
    -------
    dict of str -> ndarray
        ``summary``: ``digests`` (n, 16) uint8, ``finite`` (n,) bool.
        ``gram``: ``gram`` (n, n) float64 and ``row_sums`` (n,) float64.
        ``centered_gram``: ``gram`` (n, n) float64.
        ``fold_grams``: ``grams`` (n_wide, n, n) float64 for the folds ``wide`` (n_wide,) int64;
        empty arrays when no fold is wide. A layer with NaN/inf features gets NaN Gram matrices
        (its finiteness is in the summary; the metrics report it).
    """
    n, p = features.shape
    if need.kind == "summary":
        digests, finite = row_summary(features)
        return {"digests": digests, "finite": finite}
    if need.kind in ("gram", "centered_gram"):
        g, sums = gram(features, center=need.kind == "centered_gram", check_finite=False)
        return {"gram": g} if need.kind == "centered_gram" else {"gram": g, "row_sums": sums}
    if need.kind == "fold_grams":
        wide = need.wide_folds(p)
        if not wide:
            return {"grams": np.zeros((0, n, n)), "wide": np.zeros(0, dtype=np.int64)}
        splits = [(np.asarray(need.trains[f], dtype=np.int64), np.zeros(0, dtype=np.int64)) for f in wide]
        try:
            grams = fold_grams(features, splits, standardize=need.standardize, layer=layer)
        except DataError:  # NaN/inf features: reported by the metric from the summary
            grams = np.full((len(wide), n, n), np.nan)
        return {"grams": grams, "wide": np.asarray(wide, dtype=np.int64)}
    raise ValueError(f"compute() does not make {need.kind!r}; features are stored as they are.")


def describe_needs(needs: Sequence[Need]) -> str:
    """Short JSON of several needs, for logs."""
    return json.dumps([n.describe() for n in needs])
