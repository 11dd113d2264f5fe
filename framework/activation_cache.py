"""On-disk, content-addressed cache of layer activations.

Layout under ``root``::

    <key>/meta.json          layer order, file names, widths, stimulus ids, provenance (info)
    <key>/layer_000.npy      (n_stimuli, n_features) float32, one file per layer, in layer order
    <key>/checksums.json     size and XXH3-128 hash of meta.json and every layer file
    <key>.<rid>/...          a reduced copy (SRP or PCA) derived from entry <key>
    .tmp-<key16>-<host>-<pid>-<rand>/   an extraction in progress

An extraction streams each batch straight into its per-layer ``.npy`` files (created with
:func:`numpy.lib.format.open_memmap`, filled with positioned writes from one writer thread
that overlaps the writes with the next forward pass) inside a temporary directory, writes
``meta.json`` and the checksums (:func:`framework.fileio.write_checksums`) last, then renames
the directory to its key in one atomic step. :meth:`ActivationCache.get` only accepts a
directory whose files match their checksums (verified on the entry's first use in a process,
then only when a file's size or times change), whose ``meta.json`` is complete, whose files have
the recorded shapes and, when the caller gives them, whose stimulus ids are the expected ones.
Anything else is logged as a warning naming the entry and what differed, the entry is
discarded and ``get`` returns None, so the caller extracts again: an interrupted run, flipped
bytes, an edited ``meta.json`` or an entry of an older version without checksums never give a
score. Temporary directories of dead processes (or older than :data:`STALE_AGE_S`) are removed.
Peak memory is two batches of activations, whatever the number of stimuli and layers.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from framework.contracts import ModelPlugin, WeightsInfo
from framework.errors import ConfigError, DataError, PluginError
from framework.fileio import (
    STALE_AGE_S,
    ChecksumError,
    clean_stale_temp_dirs,
    discard_dir,
    make_temp_dir,
    verify_checksums,
    write_checksums,
)
from framework.types import Activations, StimulusSet, digest_of
from framework.validation import check_option

log = logging.getLogger("framework.activation_cache")

#: Version of the on-disk layout; part of every key.
FORMAT_VERSION = 1
#: Bytes of float64 work arrays per chunk when reducing (bounds memory).
CHUNK_BYTES = 64 << 20
REDUCTION_METHODS = ("srp", "pca")
_KEY_RE = re.compile(r"^[0-9a-f]{64}(\.[0-9a-f]{16})?$")
_TMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------------------
# reduction parameters
# ----------------------------------------------------------------------------------------
def normalise_reduction(reduction: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate a reduction request and fill its defaults.

    Parameters
    ----------
    reduction : dict or None
        ``{"method": "srp" | "pca", "n_components": int, "min_features": int, "seed": int}``;
        ``min_features`` defaults to ``n_components`` (a layer is reduced only when it has more
        features than both), ``seed`` to 0 (SRP only; PCA is deterministic).

    Returns
    -------
    dict or None
        The complete, canonical parameters (None when no reduction is asked for).
    """
    if reduction is None:
        return None
    if not isinstance(reduction, dict):
        raise ConfigError(f"reduction must be a dict like {{'method': 'srp', 'n_components': 1000}}, "
                          f"got {type(reduction).__name__}.")
    allowed = {"method", "n_components", "min_features", "seed"}
    extra = sorted(set(reduction) - allowed)
    if extra:
        raise ConfigError(f"reduction has unknown keys {extra}; expected some of {sorted(allowed)}.")
    if "method" not in reduction or "n_components" not in reduction:
        raise ConfigError(f"reduction needs 'method' and 'n_components', got {sorted(reduction)}.")
    method = check_option("reduction method", reduction["method"], REDUCTION_METHODS)
    out: dict[str, Any] = {"method": method}
    for key, default, low in (("n_components", None, 1), ("min_features", None, 0), ("seed", 0, 0)):
        value = reduction.get(key, default if key != "min_features" else reduction["n_components"])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"reduction {key} must be an integer >= {low}, got {value!r}.")
        out[key] = int(value)
    return out


def reduction_id(reduction: dict[str, Any]) -> str:
    """16 hex characters identifying canonical reduction parameters (the key suffix)."""
    return digest_of("reduction", normalise_reduction(reduction))[:16]


def _ids_difference(got: tuple[str, ...], expected: tuple[str, ...]) -> str:
    """One phrase saying how stimulus ids ``got`` differ from ``expected``."""
    if len(got) != len(expected):
        return f"has {len(got)} stimulus ids, expected {len(expected)}"
    i = next(k for k, (a, b) in enumerate(zip(got, expected)) if a != b)
    return f"has stimulus id '{got[i]}' at position {i}, expected '{expected[i]}'"


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class ActivationCache:
    """Content-addressed activation cache (one ``.npy`` per layer, memory-mapped on read).

    Parameters
    ----------
    root : Path
        Cache folder, created when missing. Safe to share between processes: entries appear
        by atomic rename, and concurrent extractions of one key keep the first finished.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"Activation cache folder '{self.root}' cannot be created ({exc}); "
                            "choose a writable folder.") from None

    # -- keys -------------------------------------------------------------------------------
    def key(self, model_name: str, model_params: dict, weights: WeightsInfo, layers: list[str],
            preprocessing: dict, dataset_digest: str, reduction: dict | None) -> str:
        """Content-addressed key of an entry.

        The SHA-256 (64 hex) of the model name and parameters, the weights (source, digest,
        seed), the layer list in order, the preprocessing, the dataset digest and the format
        version. With a reduction, the full entry's key followed by ``"."`` and 16 hex
        characters of the reduction parameters, so the reduced entry names what it derives from.
        """
        full = digest_of("activations", FORMAT_VERSION, model_name, model_params,
                         {"source": weights.source, "digest": weights.digest, "seed": weights.seed},
                         list(layers), preprocessing, dataset_digest)
        red = normalise_reduction(reduction)
        return full if red is None else f"{full}.{reduction_id(red)}"

    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ConfigError(f"Activation cache key {key!r} is not a key made by ActivationCache.key() "
                              "(64 hex characters, optionally '.' and 16 more); build it with key().")

    def path(self, key: str) -> Path:
        """Directory of entry ``key``."""
        self._check_key(key)
        return self.root / key

    # -- reading ----------------------------------------------------------------------------
    def get(self, key: str, *, stimulus_ids: Sequence[str] | None = None) -> Activations | None:
        """The cached activations of ``key``, memory-mapped read-only, or None on a miss.

        Parameters
        ----------
        key : str
            From :meth:`key`.
        stimulus_ids : sequence of str, (n_stimuli,), optional
            The ids the caller expects, in order; an entry recorded with other ids is damaged.

        Returns
        -------
        Activations or None
            None when the entry is absent or incomplete (no ``meta.json``: silently), or damaged:
            a file differs from its checksums (verified on the entry's first use in this process,
            see :func:`framework.fileio.verify_checksums`), it has no checksums (an older
            version's entry, which cannot be verified), ``meta.json`` or a layer file does not
            match, or the stimulus ids differ. A damaged entry is logged as a warning naming it
            and what differed, and discarded, so the caller extracts it again.
        """
        directory = self.path(key)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            verify_checksums(directory)
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                raise ValueError(f"meta.json has format {meta.get('format')} and key {meta.get('key')}, "
                                 f"expected {FORMAT_VERSION} and this key")
            ids = tuple(meta["stimulus_ids"])
            if stimulus_ids is not None and ids != tuple(stimulus_ids):
                raise ValueError(f"meta.json {_ids_difference(ids, tuple(stimulus_ids))}")
            arrays: dict[str, np.ndarray] = {}
            for layer, fname, width in zip(meta["layers"], meta["files"], meta["n_features"], strict=True):
                arr = np.load(directory / fname, mmap_mode="r")
                if arr.shape != (len(ids), width) or arr.dtype != np.float32:
                    raise ValueError(f"{fname} is {arr.shape} {arr.dtype}, expected ({len(ids)}, {width}) float32")
                arrays[layer] = arr
        except Exception as exc:  # damaged entry: never served, discarded and rebuilt
            detail = "; ".join(exc.problems) if isinstance(exc, ChecksumError) else f"{type(exc).__name__}: {exc}"
            log.warning("Activation cache entry '%s' is damaged (%s); it is discarded and will be re-extracted.",
                        directory, detail)
            discard_dir(directory, _TMP_PREFIX, key[:16])
            return None
        return Activations(arrays, ids, meta["info"])

    # -- housekeeping -----------------------------------------------------------------------
    def clean_stale(self) -> list[Path]:
        """Remove temporary directories of dead local processes or older than :data:`STALE_AGE_S`."""
        return clean_stale_temp_dirs(self.root, _TMP_PREFIX, max_age_s=STALE_AGE_S)

    def _new_tmp(self, key: str) -> Path:
        return make_temp_dir(self.root, _TMP_PREFIX, key[:16])

    def _publish(self, tmp: Path, key: str, meta: dict[str, Any]) -> Activations:
        """Write meta.json and the checksums last, then rename ``tmp`` to the entry (atomic).

        A concurrent winner is kept. The entry is read back through :meth:`get`, which verifies
        the checksums against the files on disk.
        """
        meta_path = tmp / "meta.json"
        with open(meta_path, "w") as fh:
            json.dump(meta, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        write_checksums(tmp)
        final = self.root / key
        if final.exists() and self.get(key) is None:  # an incomplete entry: move it away first
            discard_dir(final, _TMP_PREFIX, key[:16])
        try:
            os.rename(tmp, final)
        except OSError:
            if self.get(key) is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
        try:
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - directories cannot be fsynced on some systems
            pass
        out = self.get(key, stimulus_ids=meta["stimulus_ids"])
        if out is None:  # pragma: no cover - only if the folder vanished or was changed under us
            raise DataError(f"Activation cache entry '{final}' disappeared or changed right after it was written "
                            "(see the warning above); check that nothing else writes to the cache folder.")
        return out

    # -- extraction -------------------------------------------------------------------------
    def extract(self, model: ModelPlugin, stimuli: StimulusSet, layers: Sequence[str], *, key: str,
                batch_size: int = 32, progress: Callable[[int], Any] | None = None,
                reduction: dict | None = None) -> Activations:
        """Return the activations of ``key``, extracting and caching them on a miss.

        Parameters
        ----------
        model : ModelPlugin
        stimuli : StimulusSet, (n_stimuli,)
        layers : sequence of str
            Layer names of ``model``, in the order the entry keeps.
        key : str
            From :meth:`key` with the same ``reduction``.
        batch_size : int
            Stimuli per forward pass.
        progress : callable, optional
            Called with the number of stimuli done so far after every batch.
        reduction : dict, optional
            See :func:`normalise_reduction`. The full entry is extracted (or reused) first and
            the reduced one derived from it.

        Returns
        -------
        Activations
            Each layer (n_stimuli, n_features) float32, memory-mapped read-only; ``info`` has
            the model name, weights, layer order and shapes, preprocessing and reduction.
        """
        self._check_key(key)
        red = normalise_reduction(reduction)
        full_key, _, rid = key.partition(".")
        if red is None and rid:
            raise ConfigError(f"Activation cache key '{key}' belongs to a reduced entry but no reduction was "
                              "given; pass the same reduction to extract() as to key().")
        if red is not None and rid != reduction_id(red):
            raise ConfigError(f"Activation cache key '{key}' was not made with reduction {red}; "
                              "build the key with ActivationCache.key(..., reduction=<the same dict>).")
        hit = self.get(key, stimulus_ids=stimuli.ids)
        if hit is not None:
            log.debug("Activation cache hit %s", key)
            return hit
        self.clean_stale()
        if red is not None:
            full = self.extract(model, stimuli, layers, key=full_key, batch_size=batch_size, progress=progress)
            return self._reduce(full, key, red)
        return self._extract_full(model, stimuli, list(layers), key, batch_size, progress)

    def _extract_full(self, model: ModelPlugin, stimuli: StimulusSet, layers: list[str], key: str,
                      batch_size: int, progress: Callable[[int], Any] | None) -> Activations:
        n = len(stimuli)
        if n == 0:
            raise DataError(f"Cannot extract activations of model '{model.name}' for an empty stimulus set.")
        weights = model.weights_info()
        shapes = model.layer_shapes()
        files = [f"layer_{i:03d}.npy" for i in range(len(layers))]
        tmp = self._new_tmp(key)
        fds: dict[str, int] = {}
        offsets: dict[str, int] = {}
        widths: dict[str, int] = {}
        done = 0
        # One writer thread: batch k is written while the model computes batch k + 1. The queue is
        # one batch deep, so at most two batches of activations are alive at any time.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="framework-cache-writer")
        pending: Future | None = None

        def write(arrays: list[np.ndarray], start: int, stop: int) -> int:
            for layer, arr in zip(layers, arrays):
                _pwrite_all(fds[layer], memoryview(arr).cast("B"), offsets[layer] + start * widths[layer] * 4)
            # Flush this batch now, in the writer thread, while the model computes the next one:
            # the durability barrier before the final rename then has (almost) nothing left to do.
            for layer in layers:
                os.fdatasync(fds[layer])
            return stop

        def wait_for_write() -> None:
            nonlocal pending
            if pending is not None:
                written = pending.result()  # re-raises a failed write (disk full, ...)
                pending = None
                if progress is not None:
                    progress(written)

        try:
            batches = iter(model.extract(stimuli, layers, batch_size=batch_size))
            try:
                for batch in batches:
                    if list(batch) != layers:
                        raise PluginError(f"Model '{model.name}' yielded layers {list(batch)}, expected {layers}.")
                    rows = {int(np.shape(a)[0]) for a in batch.values()}
                    if len(rows) != 1:
                        raise PluginError(f"Model '{model.name}' yielded layers with different batch sizes {rows}.")
                    b = rows.pop()
                    if done + b > n:
                        raise PluginError(f"Model '{model.name}' yielded more than the {n} stimuli it was given.")
                    arrays = []
                    for i, layer in enumerate(layers):
                        arr = np.ascontiguousarray(batch[layer], dtype=np.float32)
                        if arr.ndim != 2:
                            raise PluginError(f"Model '{model.name}' yielded layer '{layer}' with shape {arr.shape}; "
                                              "expected (batch, n_features).")
                        if layer not in fds:  # create the .npy (header + full size) on the first batch
                            widths[layer] = arr.shape[1]
                            mm = np.lib.format.open_memmap(tmp / files[i], mode="w+", dtype=np.float32,
                                                           shape=(n, arr.shape[1]))
                            offsets[layer] = int(mm.offset)
                            del mm
                            fds[layer] = os.open(tmp / files[i], os.O_WRONLY)
                        if arr.shape[1] != widths[layer]:
                            raise PluginError(f"Model '{model.name}' layer '{layer}' changed width from "
                                              f"{widths[layer]} to {arr.shape[1]} between batches.")
                        arrays.append(arr)
                    del batch
                    wait_for_write()
                    pending = writer.submit(write, arrays, done, done + b)
                    done += b
                    del arrays
                wait_for_write()
            finally:  # a generator abandoned early runs its own cleanup (hooks, threads)
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
                writer.shutdown(wait=True)
            if done != n:
                raise PluginError(f"Model '{model.name}' yielded {done} stimuli, expected {n}.")
            for fd in fds.values():
                os.fsync(fd)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for fd in fds.values():
            os.close(fd)
        info = {
            "model": model.name,
            "model_version": model.version(),
            "weights": asdict(weights),
            "layers": list(layers),
            "layer_shapes": {layer: list(shapes[layer]) for layer in layers if layer in shapes},
            "preprocessing": model.preprocessing(),
            "reduction": None,
            "key": key,
        }
        meta = {"format": FORMAT_VERSION, "key": key, "layers": layers, "files": files,
                "n_features": [widths[layer] for layer in layers], "stimulus_ids": list(stimuli.ids), "info": info}
        try:
            return self._publish(tmp, key, meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- reduction --------------------------------------------------------------------------
    def _reduce(self, full: Activations, key: str, red: dict[str, Any]) -> Activations:
        n = len(full.stimulus_ids)
        layers = list(full.layers)
        files = [f"layer_{i:03d}.npy" for i in range(len(layers))]
        per_layer: dict[str, dict[str, Any]] = {}
        widths = []
        tmp = self._new_tmp(key)
        try:
            for layer, fname in zip(layers, files):
                x = full[layer]
                d = x.shape[1]
                if d > max(red["min_features"], red["n_components"]):
                    y, detail = (_srp(x, red["n_components"], red["seed"]) if red["method"] == "srp"
                                 else _pca(x, red["n_components"]))
                    per_layer[layer] = {"n_features_in": d, **detail}
                else:
                    y = x
                    per_layer[layer] = {"n_features_in": d, "reduced": False}
                out = np.lib.format.open_memmap(tmp / fname, mode="w+", dtype=np.float32, shape=(n, y.shape[1]))
                step = max(1, CHUNK_BYTES // max(1, 8 * y.shape[1]))
                for s in range(0, n, step):
                    out[s:s + step] = y[s:s + step]
                out.flush()
                widths.append(int(y.shape[1]))
                del out, y
            info = dict(full.info)
            info["reduction"] = {**red, "derived_from": full.info.get("key"), "layers": per_layer}
            info["key"] = key
            meta = {"format": FORMAT_VERSION, "key": key, "layers": layers, "files": files, "n_features": widths,
                    "stimulus_ids": list(full.stimulus_ids), "info": info}
            return self._publish(tmp, key, meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _srp(x: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Sparse random projection of ``x`` (n_stimuli, n_features) to (n_stimuli, n_components) float32.

    The projection matrix is scikit-learn's ``SparseRandomProjection`` (Li et al. 2006,
    density 1 / sqrt(n_features)) with ``random_state=seed``; products in float64, streamed
    over row chunks of at most :data:`CHUNK_BYTES`.
    """
    from sklearn.random_projection import SparseRandomProjection

    n, d = x.shape
    srp = SparseRandomProjection(n_components=n_components, density="auto", random_state=seed)
    srp.fit(np.zeros((1, d), dtype=np.float32))
    components = srp.components_.astype(np.float64).tocsr()  # (n_components, n_features)
    y = np.empty((n, n_components), dtype=np.float32)
    step = max(1, CHUNK_BYTES // (8 * d))
    for s in range(0, n, step):
        y[s:s + step] = (components @ np.asarray(x[s:s + step], dtype=np.float64).T).T
    return y, {"n_components": n_components, "density": float(srp.density_), "seed": seed}


def _pca(x: np.ndarray, n_components: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Exact PCA scores of ``x`` (n_stimuli, n_features) via the (n_stimuli, n_stimuli) Gram matrix.

    Centres the columns, accumulates ``Xc @ Xc.T`` in float64 over column chunks, and returns
    ``U_k * sqrt(lambda_k)`` for the ``k = min(n_components, n_stimuli)`` largest eigenvalues,
    i.e. the principal-component scores (equal to ``sklearn.decomposition.PCA`` up to the sign
    of each component; here the largest-magnitude score of each component is positive).
    """
    n, d = x.shape
    step_rows = max(1, CHUNK_BYTES // (8 * d))
    total = np.zeros(d, dtype=np.float64)
    for s in range(0, n, step_rows):
        total += np.asarray(x[s:s + step_rows], dtype=np.float64).sum(axis=0)
    mean = total / n
    gram = np.zeros((n, n), dtype=np.float64)
    step_cols = max(1, CHUNK_BYTES // (8 * n))
    for c in range(0, d, step_cols):
        block = np.asarray(x[:, c:c + step_cols], dtype=np.float64) - mean[c:c + step_cols]
        gram += block @ block.T
    evals, evecs = np.linalg.eigh(gram)
    k = min(n_components, n)
    evals, evecs = evals[::-1][:k], evecs[:, ::-1][:, :k]
    scores = evecs * np.sqrt(np.clip(evals, 0.0, None))
    flip = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(k)])
    scores *= np.where(flip == 0, 1.0, flip)
    total_var = float(np.trace(gram))
    ratio = (evals / total_var).tolist() if total_var > 0 else [0.0] * k
    return scores.astype(np.float32), {"n_components": k,
                                       "explained_variance_ratio": float(np.sum(np.clip(ratio, 0, None)))}
