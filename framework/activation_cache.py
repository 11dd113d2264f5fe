"""On-disk, content-addressed cache of what metrics need from layer activations.

Layout under ``root`` (the user cache's ``activations`` folder, shared by every store)::

    <key>@<need>/meta.json      statistic, layer order, widths, stimulus ids, provenance (info)
    <key>@<need>/L000_gram.npy  one file per (layer, array) of the statistic
    <key>/meta.json, layer_000.npy   raw features (n_stimuli, n_features) float32, only when kept
    <entry>/checksums.json      size and XXH3-128 hash of meta.json and every file
    .tmp-<key16>-<host>-<pid>-<rand>/   an extraction in progress (scratch features, entries)

``key`` identifies the features (model, weights, layers, preprocessing, dataset, reduction:
:meth:`ActivationCache.key`); ``<need>`` the statistic (:attr:`framework.layer_stats.Need.id`).
:meth:`ActivationCache.load` serves the statistics a run's metrics declared
(:mod:`framework.layer_stats`); on a miss it runs the model once, streaming each batch
into scratch files (no durability barrier: they are deleted afterwards), computes every
missing statistic from them in column blocks (bounded memory), and publishes each entry
by writing ``meta.json`` and the checksums (:func:`framework.fileio.write_checksums`) last
and renaming its directory in one atomic step. Raw features become an entry only when a
metric needs them or the caller keeps them (``keep_features``), reduced first when a
reduction is set. Reading only accepts a directory whose files match their checksums
(verified on the entry's first use in a process, then only when a file's size or times
change), whose ``meta.json`` is complete and whose stimulus ids are the expected ones;
anything else is logged as a warning naming the entry, discarded, and rebuilt. Two
processes racing on one key both compute it; the first rename wins. Temporary
directories of dead processes (or older than :data:`STALE_AGE_S`) are removed.
"""
from __future__ import annotations

import contextlib
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

from framework.contracts import ModelPlugin, WeightsInfo, takes_device_options
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
from framework.layer_stats import ColumnReader, Need, compute, fold_key
from framework.types import Activations, LayerStatistics, StimulusSet, digest_of
from framework.validation import check_option

log = logging.getLogger("framework.activation_cache")

#: Version of the on-disk layout; part of every key.
FORMAT_VERSION = 1
#: Bytes of float64 work arrays per chunk when reducing (bounds memory).
CHUNK_BYTES = 64 << 20
REDUCTION_METHODS = ("srp", "pca")
_KEY_RE = re.compile(r"^[0-9a-f]{64}(\.[0-9a-f]{16})?$")
_ENTRY_RE = re.compile(r"^[0-9a-f]{64}(\.[0-9a-f]{16})?(@[0-9a-f]{16})?$")
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
            preprocessing: dict, dataset_digest: str, reduction: dict | None, *,
            device: str | None = None, precision: str | None = None) -> str:
        """Content-addressed key of an entry.

        The SHA-256 (64 hex) of the model name and parameters, the weights (source, digest,
        seed), the layer list in order, the preprocessing, the dataset digest and the format
        version, and where the network ran: the device type (``"cpu"``, ``"cuda"``, ``"mps"``;
        ``"cuda:1"`` counts as ``"cuda"``) and the precision (``"fp32"``, ``"fp16"``, ``"bf16"``),
        because a GPU's or a half-precision forward pass gives other features than the CPU's
        float32 one. ``cpu`` with ``fp32`` (and None, a model that takes no device) adds nothing,
        so entries cached before the device options keep their keys. With a reduction, the full
        entry's key followed by ``"."`` and 16 hex characters of the reduction parameters, so the
        reduced entry names what it derives from.
        """
        device_type = None if device is None else str(device).partition(":")[0]
        if precision is not None:
            from framework.devices import PRECISIONS

            check_option("precision", precision, PRECISIONS)
        where = ([] if device_type in (None, "cpu") and precision in (None, "fp32")
                 else [{"device": device_type or "cpu", "precision": precision or "fp32"}])
        full = digest_of("activations", FORMAT_VERSION, model_name, model_params,
                         {"source": weights.source, "digest": weights.digest, "seed": weights.seed},
                         list(layers), preprocessing, dataset_digest, *where)
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
            meta = _read_meta(directory, key, stimulus_ids)
            ids = tuple(meta["stimulus_ids"])
            arrays: dict[str, np.ndarray] = {}
            for layer, fname, width in zip(meta["layers"], meta["files"], meta["n_features"], strict=True):
                arr = np.load(directory / fname, mmap_mode="r")
                if arr.shape != (len(ids), width) or arr.dtype != np.float32:
                    raise ValueError(f"{fname} is {arr.shape} {arr.dtype}, expected ({len(ids)}, {width}) float32")
                arrays[layer] = arr
        except Exception as exc:  # damaged entry: never served, discarded and rebuilt
            _discard_damaged(directory, exc, "re-extracted")
            return None
        return Activations(arrays, ids, meta["info"])

    # -- housekeeping -----------------------------------------------------------------------
    def clean_stale(self) -> list[Path]:
        """Remove temporary directories of dead local processes or older than :data:`STALE_AGE_S`."""
        return clean_stale_temp_dirs(self.root, _TMP_PREFIX, max_age_s=STALE_AGE_S)

    def _new_tmp(self, key: str) -> Path:
        return make_temp_dir(self.root, _TMP_PREFIX, key[:16])

    def _publish(self, tmp: Path, name: str, meta: dict[str, Any], *, verify: bool = True) -> Activations | None:
        """Write meta.json and the checksums last, then rename ``tmp`` to entry ``name`` (atomic).

        A concurrent winner (a complete entry of the same name, matching its checksums) is kept.
        With ``verify``, the features entry is read back through :meth:`get`, which verifies the
        checksums against the files on disk.
        """
        meta_path = tmp / "meta.json"
        with open(meta_path, "w") as fh:
            json.dump(meta, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        write_checksums(tmp)
        final = self.root / name
        if final.exists() and not _complete(final):  # an incomplete or damaged entry: move it away first
            discard_dir(final, _TMP_PREFIX, name[:16])
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):
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
        if not verify:
            return None
        out = self.get(name, stimulus_ids=meta["stimulus_ids"])
        if out is None:  # pragma: no cover - only if the folder vanished or was changed under us
            raise DataError(f"Activation cache entry '{final}' disappeared or changed right after it was written "
                            "(see the warning above); check that nothing else writes to the cache folder.")
        return out

    # -- extraction -------------------------------------------------------------------------
    def extract(self, model: ModelPlugin, stimuli: StimulusSet, layers: Sequence[str], *, key: str,
                batch_size: int = 32, progress: Callable[[int], Any] | None = None,
                reduction: dict | None = None, device: Any = None, precision: str | None = None) -> Activations:
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
            See :func:`normalise_reduction`. The features are reduced before they are kept (the
            full features only ever exist as scratch files of the extraction).
        device, precision : torch.device and str, optional
            Passed to ``model.extract`` (see :meth:`load`); give the key the same ones.

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
        acts, _ = self.load(model, stimuli, layers, key=key, needs=[], keep_features=True, reduction=red,
                            batch_size=batch_size, progress=progress, device=device, precision=precision)
        return acts

    def _stream(self, tmp: Path, model: ModelPlugin, stimuli: StimulusSet, layers: list[str], key: str,
                batch_size: int, progress: Callable[[int], Any] | None, device: Any = None,
                precision: str | None = None) -> dict[str, Any]:
        """Run the model over ``stimuli`` and write layer ``i`` to ``tmp/layer_<i:03d>.npy``; returns its meta.

        The files are written with positioned writes from one writer thread that overlaps
        them with the next forward pass, without a durability barrier (the caller fsyncs
        what it keeps). At most two batches of activations are in memory.
        """
        n = len(stimuli)
        if n == 0:
            raise DataError(f"Cannot extract activations of model '{model.name}' for an empty stimulus set.")
        options: dict[str, Any] = {}
        if device is not None or precision is not None:
            if not takes_device_options(model):
                raise ConfigError(f"Model '{model.name}' ({type(model).__name__}) takes no device or precision (its "
                                  "class does not set supports_devices = True, or its extract() has no 'device' and "
                                  "'precision' keywords); extract it without them.")
            from framework.devices import device_info, resolve_device

            device = resolve_device("cpu" if device is None else device) if not hasattr(device, "type") else device
            options = {"device": device, "precision": precision or "fp32"}
        weights = model.weights_info()
        shapes = model.layer_shapes()
        files = [f"layer_{i:03d}.npy" for i in range(len(layers))]
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
            return stop

        def wait_for_write() -> None:
            nonlocal pending
            if pending is not None:
                written = pending.result()  # re-raises a failed write (disk full, ...)
                pending = None
                if progress is not None:
                    progress(written)

        try:
            batches = iter(model.extract(stimuli, layers, batch_size=batch_size, **options))
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
        finally:
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
        if options:
            info.update(device=device_info(options["device"]), precision=options["precision"])
        return {"format": FORMAT_VERSION, "key": key, "layers": layers, "files": files,
                "n_features": [widths[layer] for layer in layers], "stimulus_ids": list(stimuli.ids), "info": info}

    # -- statistics ---------------------------------------------------------------------------
    @staticmethod
    def stats_key(key: str, need: Need) -> str:
        """Entry name of statistic ``need`` of the features ``key`` (the features entry itself for
        ``Need.features()``)."""
        return key if need.kind == "features" and need.max_width is None else f"{key}@{need.id}"

    def _get_stats(self, key: str, need: Need, stimulus_ids: Sequence[str]) -> dict[str, Any] | None:
        """Meta and arrays (memory-mapped) of a statistics entry, or None (absent, or damaged: discarded)."""
        name = self.stats_key(key, need)
        directory = self.root / name
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            return None
        n = len(stimulus_ids)
        try:
            meta = _read_meta(directory, name, stimulus_ids)
            arrays: dict[str, dict[str, np.ndarray]] = {}
            for layer, files in meta["arrays"].items():
                arrays[layer] = {}
                for what, fname in files.items():
                    arr = np.load(directory / fname, mmap_mode="r", allow_pickle=False)
                    ok = {"grams": arr.ndim == 3 and arr.shape[1:] == (n, n), "wide": arr.ndim == 1}
                    if not ok.get(what, arr.shape[:1] == (n,)):
                        raise ValueError(f"{fname} has shape {arr.shape}, which does not fit {n} stimuli")
                    arrays[layer][what] = arr
        except Exception as exc:  # damaged entry: never served, discarded and rebuilt
            _discard_damaged(directory, exc, "rebuilt")
            return None
        _touch(directory)
        return {"meta": meta, "arrays": arrays}

    def lookup(self, key: str, needs: Sequence[Need], stimulus_ids: Sequence[str]) -> Activations | None:
        """The cached statistics ``needs`` (and always the per-stimulus summary) of features ``key``,
        as :class:`Activations`, or None when any is missing (nothing is computed).

        Parameters
        ----------
        key : str
            From :meth:`key`.
        needs : sequence of Need
            From the metrics' :meth:`~framework.contracts.MetricPlugin.needs`.
        stimulus_ids : sequence of str, (n_stimuli,)
            The dataset's stimuli, in order.
        """
        self._check_key(key)
        needs = _all_needs(needs)
        features: dict[str, np.ndarray] = {}
        found: dict[Need, dict[str, Any]] = {}
        full = None
        for need in needs:
            if need.kind == "features" and need.max_width is None:
                full = self.get(key, stimulus_ids=stimulus_ids)
                if full is None:
                    return None
                _touch(self.root / key)
                continue
            hit = self._get_stats(key, need, stimulus_ids)
            if hit is None:
                return None
            found[need] = hit
        summary = found[Need.summary()]
        meta = summary["meta"]
        layers = tuple(meta["layers"])
        stats = LayerStatistics(layers, dict(zip(layers, (int(w) for w in meta["n_features"]))))
        for need, hit in found.items():
            for layer, arrays in hit["arrays"].items():
                if need.kind == "summary":
                    stats.summary[layer] = arrays
                elif need.kind in ("gram", "centered_gram"):
                    stats.grams[(layer, need.kind)] = arrays
                elif need.kind == "fold_grams":
                    for f, g in zip(arrays["wide"], arrays["grams"]):
                        stats.folds[(layer, fold_key([np.asarray(need.trains[int(f)])], need.standardize))] = g
                elif need.kind == "features":
                    features[layer] = arrays["features"]
        if full is not None:
            features.update(full.items())
        return Activations(features, tuple(stimulus_ids), meta["info"], stats=stats)

    def load(self, model: ModelPlugin, stimuli: StimulusSet, layers: Sequence[str], *, key: str,
             needs: Sequence[Need], keep_features: bool = False, reduction: dict | None = None,
             batch_size: int = 32, progress: Callable[[int], Any] | None = None,
             describe: dict[str, Any] | None = None, device: Any = None,
             precision: str | None = None) -> tuple[Activations, bool]:
        """The statistics ``needs`` of ``model``'s ``layers`` over ``stimuli``, computing what is missing.

        Parameters
        ----------
        model : ModelPlugin
        stimuli : StimulusSet, (n_stimuli,)
        layers : sequence of str
            Layer names of ``model``, in order.
        key : str
            From :meth:`key` with the same ``reduction``.
        needs : sequence of Need
            What the run's metrics read (:meth:`~framework.contracts.MetricPlugin.needs`).
        keep_features : bool
            Also keep the raw features (reduced when ``reduction`` is set).
        reduction : dict, optional
            See :func:`normalise_reduction`: statistics are of the reduced features.
        batch_size : int
            Stimuli per forward pass.
        progress : callable, optional
            Called with the number of stimuli done so far after every batch.
        describe : dict, optional
            Added to the entries' provenance (e.g. ``{"dataset": name}``, shown by ``framework cache info``).
        device : torch.device or str, optional
            Where the model runs (a name is resolved by :func:`framework.devices.resolve_device`).
        precision : {"fp32", "fp16", "bf16"}, optional
            Arithmetic of the forward pass. When either is given, the model must take them
            (:func:`framework.contracts.takes_device_options`, else :class:`ConfigError`); they are
            passed to ``model.extract`` and recorded in the entries' provenance (``device``, ``precision``).
            Build ``key`` with the same device type and precision.

        Returns
        -------
        activations : Activations
            Statistics (and features where needed), memory-mapped read-only.
        extracted : bool
            Whether the model was run (False: everything came from the cache).
        """
        self._check_key(key)
        red = normalise_reduction(reduction)
        full_key, _, rid = key.partition(".")
        if (red is None) != (not rid) or (red is not None and rid != reduction_id(red)):
            raise ConfigError(f"Activation cache key '{key}' was not made with reduction {red}; build the key with "
                              "ActivationCache.key(..., reduction=<the same dict>).")
        wanted = _all_needs(list(needs) + ([Need.features()] if keep_features else []))
        hit = self.lookup(key, wanted, stimuli.ids)
        if hit is not None:
            return hit, False
        self.clean_stale()
        kept = self.get(key, stimulus_ids=stimuli.ids)  # features kept by an earlier run: no forward pass
        tmp = self._new_tmp(key)
        try:
            if kept is not None:
                arrays, info, files = dict(kept.items()), dict(kept.info), None
            else:
                meta = self._stream(tmp, model, stimuli, list(layers), full_key, batch_size, progress,
                                    device=device, precision=precision)
                meta["info"].update(describe or {})
                if red is not None:
                    meta = self._reduce_files(tmp, meta, key, red)
                files = meta
                info = meta["info"]
                arrays = {layer: np.load(tmp / fname, mmap_mode="r")
                          for layer, fname in zip(meta["layers"], meta["files"])}
            widths = {layer: int(arr.shape[1]) for layer, arr in arrays.items()}
            for need in wanted:
                if need.kind == "features" and need.max_width is None:
                    continue
                if self._get_stats(key, need, stimuli.ids) is None:
                    self._publish_stats(key, need, arrays, list(layers), widths, list(stimuli.ids), info)
            if files is not None and Need.features() in wanted:
                del arrays
                _fsync_files(tmp, files["files"])
                staged = tmp / "features"
                staged.mkdir()
                for fname in files["files"]:
                    os.rename(tmp / fname, staged / fname)
                self._publish(staged, key, files)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out = self.lookup(key, wanted, stimuli.ids)
        if out is None:  # pragma: no cover - only if entries vanished or changed under us
            raise DataError(f"Activation cache entries of '{key[:16]}...' in '{self.root}' disappeared or changed "
                            "right after they were written (see the warnings above); check that nothing else writes "
                            "to the cache folder.")
        return out, kept is None

    def _publish_stats(self, key: str, need: Need, arrays: dict[str, np.ndarray], layers: list[str],
                       widths: dict[str, int], stimulus_ids: list[str], info: dict[str, Any]) -> None:
        """Compute statistic ``need`` of every layer (column blocks, bounded memory) and publish its entry."""
        name = self.stats_key(key, need)
        tmp = self._new_tmp(name)
        try:
            files: dict[str, dict[str, str]] = {}
            for i, layer in enumerate(layers):
                if not need.applies_to(widths[layer]):
                    continue
                if need.kind == "features":
                    out = {"features": np.asarray(arrays[layer], dtype=np.float32)}
                else:
                    out = compute(ColumnReader(arrays[layer]), need, layer=layer)
                files[layer] = {}
                for what, arr in out.items():
                    fname = f"L{i:03d}_{what}.npy"
                    np.save(tmp / fname, np.ascontiguousarray(arr), allow_pickle=False)
                    files[layer][what] = fname
                del out
            _fsync_files(tmp, [f for per in files.values() for f in per.values()])
            meta = {"format": FORMAT_VERSION, "key": name, "need": need.describe(), "layers": layers,
                    "n_features": [widths[layer] for layer in layers], "stimulus_ids": stimulus_ids,
                    "arrays": files, "info": info}
            self._publish(tmp, name, meta, verify=False)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- reduction --------------------------------------------------------------------------
    def _reduce_files(self, tmp: Path, meta: dict[str, Any], key: str, red: dict[str, Any]) -> dict[str, Any]:
        """Replace the scratch features in ``tmp`` by their reduction ``red``; returns the reduced meta.

        The full features are read in blocks (:class:`framework.layer_stats.ColumnReader`) and
        deleted once reduced; the reduced ones are what statistics and a kept entry are made of.
        """
        n = len(meta["stimulus_ids"])
        per_layer: dict[str, dict[str, Any]] = {}
        widths = []
        files = []
        for i, (layer, fname) in enumerate(zip(meta["layers"], meta["files"])):
            x = ColumnReader(np.load(tmp / fname, mmap_mode="r"))
            d = x.shape[1]
            if d > max(red["min_features"], red["n_components"]):
                y, detail = (_srp(x, red["n_components"], red["seed"]) if red["method"] == "srp"
                             else _pca(x, red["n_components"]))
                per_layer[layer] = {"n_features_in": d, **detail}
            else:
                y = np.asarray(x[:, :], dtype=np.float32)
                per_layer[layer] = {"n_features_in": d, "reduced": False}
            del x
            out_name = f"reduced_{i:03d}.npy"
            np.save(tmp / out_name, np.ascontiguousarray(y, dtype=np.float32), allow_pickle=False)
            os.unlink(tmp / fname)
            os.rename(tmp / out_name, tmp / fname)
            files.append(fname)
            widths.append(int(y.shape[1]))
            del y
        info = dict(meta["info"])
        info["reduction"] = {**red, "derived_from": info.get("key"), "layers": per_layer}
        info["key"] = key
        assert n == len(meta["stimulus_ids"])
        return {**meta, "key": key, "files": files, "n_features": widths, "info": info}


def _read_meta(directory: Path, name: str, stimulus_ids: Sequence[str] | None) -> dict[str, Any]:
    """``meta.json`` of entry ``name`` once its files match their checksums, its format and name are
    this version's and (when given) its stimulus ids are ``stimulus_ids``; else ValueError/ChecksumError."""
    verify_checksums(directory)
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("format") != FORMAT_VERSION or meta.get("key") != name:
        raise ValueError(f"meta.json has format {meta.get('format')} and key {meta.get('key')}, "
                         f"expected {FORMAT_VERSION} and this entry's name")
    ids = tuple(meta["stimulus_ids"])
    if stimulus_ids is not None and ids != tuple(stimulus_ids):
        raise ValueError(f"meta.json {_ids_difference(ids, tuple(stimulus_ids))}")
    return meta


def _discard_damaged(directory: Path, exc: BaseException, then: str) -> None:
    """Warn that entry ``directory`` is damaged (what ``exc`` found) and discard it."""
    detail = "; ".join(exc.problems) if isinstance(exc, ChecksumError) else f"{type(exc).__name__}: {exc}"
    log.warning("Activation cache entry '%s' is damaged (%s); it is discarded and will be %s.", directory, detail,
                then)
    discard_dir(directory, _TMP_PREFIX, directory.name[:16])


def _all_needs(needs: Sequence[Need]) -> list[Need]:
    """``needs`` without repeats, the per-stimulus summary first."""
    out = [Need.summary()]
    for need in needs:
        if need not in out:
            out.append(need)
    return out


def _fsync_files(directory: Path, names: Sequence[str]) -> None:
    for fname in names:
        fd = os.open(directory / fname, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _complete(directory: Path) -> bool:
    """Whether an entry folder is complete and matches its checksums."""
    if not (directory / "meta.json").is_file():
        return False
    try:
        verify_checksums(directory)
    except Exception:
        return False
    return True


def _touch(directory: Path) -> None:
    """Record that an entry was used now (its folder's times; ``framework cache prune --older-than``)."""
    with contextlib.suppress(OSError):
        os.utime(directory)


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
