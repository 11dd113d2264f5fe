"""Reference models: precomputed features or RDMs from a file, scored like a network.

A *reference* turns data that already exist into a row of the leaderboard next to the
networks: a classic model RDM (a category model, a V1 model's features), or another
brain region (monkey IT as a "model" of human IT). Name one ``reference:<label>`` and
give its file, or name the file itself (``reference:refs/mit.npz``)::

    framework run --dataset datasets/kriegeskorte2008-92.toml --models alexnet,reference:monkey-it \\
        --model-param reference:monkey-it.file=Kriegeskorte_Neuron2008_supplementalData.mat \\
        --model-param reference:monkey-it.holds='rdm' --model-param reference:monkey-it.distance='correlation' \\
        --model-param "reference:monkey-it.arrays={mIT='RDMs_mIT_hIT_fig1[0].RDM'}" \\
        --model-param reference:monkey-it.stimuli='dataset-order' --metrics rsa

The file (``.npz``, ``.npy`` or ``.mat``) holds one array per "layer":

``holds = "features"``
    (n_stimuli, n_features), or (n_stimuli, ...) flattened; yielded like a network's
    activations, so every metric scores them and the activation cache keeps their statistics.
``holds = "rdm"``
    (n_stimuli, n_stimuli) square, or the condensed upper triangle (n_stimuli (n_stimuli - 1) / 2,)
    in :func:`scipy.spatial.distance.pdist` order, made with ``distance``. RDMs are not
    features: they reach the metrics as :class:`framework.types.PrecomputedRDMs`, which the
    RDM numerics use as given when the metric asks for the same distance (Euclidean and
    squared Euclidean convert exactly; a (squared) Euclidean RDM also gives the exact centred
    Gram matrix, so linear CKA scores it); a metric that needs anything else from the
    features fails on each of its cells with a message saying so.

Rows are matched to the dataset's stimuli by the ids stored in the file (``ids_key``),
or, with ``stimuli = "dataset-order"``, row i is the dataset's stimulus i. The weights of
the row are the file: source ``"reference"``, its SHA-256 as the digest, so a changed
file never reuses cached statistics or scores.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from framework.contracts import ModelPlugin, WeightsInfo
from framework.errors import ConfigError, DataError, did_you_mean
from framework.numerics.rdm import DISTANCES
from framework.params import PluginParams, param
from framework.types import Activations, PrecomputedRDMs, StimulusSet

log = logging.getLogger("framework.models.reference")

#: File suffixes a reference can be read from.
SUFFIXES = (".npz", ".npy", ".mat")
#: ``KEY``, ``KEY[i]``, ``KEY.FIELD`` or ``KEY[i].FIELD``: where a layer's array is in the file.
_LOCATION = re.compile(r"^(?P<key>[^.\[\]]+)(\[(?P<index>\d+)\])?(\.(?P<field>[^.\[\]]+))?$")
#: Relative tolerance of the symmetry and zero-diagonal checks of an RDM.
RDM_RTOL = 1e-6


class ReferenceParams(PluginParams):
    """Parameters of a reference model."""

    file: str = param("", "the .npz, .npy or .mat file (relative to the working directory); empty: the name "
                      "after 'reference:' is the file")
    holds: Literal["features", "rdm"] = param(
        "features", "what the file holds per layer: features (n_stimuli, n_features), or RDMs (n_stimuli, "
        "n_stimuli) or their condensed upper triangle (pdist order)")
    distance: Literal[DISTANCES] | None = param(  # type: ignore[valid-type]
        None, "holds='rdm' only, required there: the distance the RDMs were made with (correlation = 1 - Pearson r)")
    arrays: list[str] | dict[str, str] = param(
        [], "the layers in order: keys of the file's arrays (each a layer of that name), or a table {layer = "
        "'KEY' | 'KEY[i]' | 'KEY.FIELD' | 'KEY[i].FIELD'} (MATLAB struct arrays); empty: every array but the "
        "stimulus ids")
    stimuli: Literal["ids", "dataset-order"] = param(
        "ids", "how rows map to the dataset's stimuli: ids = by the stimulus ids stored under ids_key; "
        "dataset-order = row i is the dataset's stimulus i (the counts must match)")
    ids_key: str = param("stimulus_ids", "key (MATLAB variable) of the stimulus ids, (n_stimuli,) str")

    @model_validator(mode="after")
    def _distance_for_rdms(self) -> ReferenceParams:
        if self.holds == "rdm" and self.distance is None:
            raise ValueError("holds='rdm' needs the distance the RDMs were made with: set distance to one of "
                             + ", ".join(repr(d) for d in DISTANCES))
        if self.holds == "features" and self.distance is not None:
            raise ValueError("distance describes RDM files; drop it for holds='features' (or set holds='rdm')")
        for location in (self.arrays.values() if isinstance(self.arrays, dict) else self.arrays):
            if not _LOCATION.match(location):
                raise ValueError(f"layer location {location!r} is not KEY, KEY[i], KEY.FIELD or KEY[i].FIELD")
        return self


class ReferenceModel(ModelPlugin):
    """Precomputed features or RDMs of a file, as a model whose layers are the file's arrays.

    Built by the registry as ``factory(name="reference:<label>", weights=..., weights_file=...,
    seed=..., layers=..., **params)``. Construction only checks that the file exists; it is read
    when layers, shapes, weights or activations are first asked for.
    """

    Params = ReferenceParams
    plugin_version = "1"

    def __init__(self, *, name: str, weights: str = "auto", weights_file: Any = None, seed: int = 0,
                 layers: Sequence[str] | None = None, **params: Any) -> None:
        self.name = name
        self._init_params(params, name)
        if weights_file is not None:
            raise ConfigError(f"Model '{name}' is a reference file and has no weights; drop --weights-file "
                              f"{name}={weights_file}.")
        if weights == "random":
            log.warning("Model '%s' is a reference file: it has no random-init control and is scored from the "
                        "file as given (weights 'random' ignored).", name)
        self.path = _check_file(Path(self.params.file or name.partition(":")[2]).expanduser(), name)
        self._default = list(layers) if layers else None
        self._arrays: dict[str, np.ndarray] | None = None
        self._ids: tuple[str, ...] | None = None       # stimulus ids stored in the file (stimuli='ids')
        self._keys: list[str] = []                      # the file's keys, for messages
        self._digest: str | None = None

    # -- layers -------------------------------------------------------------------------------
    def _locations(self) -> dict[str, str]:
        """``{layer: location in the file}``, in layer order."""
        given = self.params.arrays
        if isinstance(given, dict):
            return dict(given)
        if given:
            return {key: key for key in given}
        keys = [k for k in _file_keys(self.path) if k != self.params.ids_key]
        if not keys:
            raise DataError(f"Reference file '{self.path}' holds no array besides the stimulus ids; add the layers' "
                            "arrays to it.")
        return {key: key for key in keys}

    def layers(self) -> list[str]:
        return list(self._locations())

    def default_layers(self) -> list[str]:
        return list(self._default) if self._default else self.layers()

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per layer: (n_features,) for features, (n_stimuli,) (one row of the RDM) for RDMs."""
        arrays = self._load()
        return {layer: (int(arr.shape[1]),) for layer, arr in arrays.items()}

    # -- identity -----------------------------------------------------------------------------
    def weights_info(self) -> WeightsInfo:
        """Source ``"reference"``; the label names the file and its SHA-256 (the digest)."""
        if self._digest is None:
            self._digest = _sha256(self.path)
        what = "features" if self.params.holds == "features" else f"RDMs ({self.params.distance} distance)"
        return WeightsInfo("reference", f"reference {self.path.name} (sha256 {self._digest[:12]})", self._digest,
                           None, f"{what} from '{self.path.resolve()}'")

    def preprocessing(self) -> dict[str, Any]:
        return {"reference": self.params.holds}

    # -- data -----------------------------------------------------------------------------------
    def _load(self) -> dict[str, np.ndarray]:
        """Every layer's array as stored: features (n_rows, n_features) float32, RDMs (n_rows, n_rows) float64."""
        if self._arrays is None:
            locations = self._locations()
            self._keys = _file_keys(self.path)
            wanted = {_key_of(location) for location in locations.values()} | {self.params.ids_key}
            contents = _read(self.path, [k for k in self._keys if k in wanted])
            read = _features if self.params.holds == "features" else _square_rdm
            self._arrays = {layer: read(_locate(contents, location, self.path, self._keys), self.path, layer)
                            for layer, location in locations.items()}
            self._ids = _stored_ids(contents, self.params.ids_key) if self.params.stimuli == "ids" else None
        return self._arrays

    def _rows(self, stimuli: StimulusSet, layer: str) -> np.ndarray:
        """Row of the file holding each of ``stimuli``, (n_stimuli,) int64; a DataError naming the file and the
        fix when they do not match."""
        arr = self._load()[layer]
        n_rows = arr.shape[0]
        n_ids = len(stimuli) if self._ids is None else len(self._ids)
        hint = ""
        if self.params.holds == "features" and arr.shape[1] == 1 and _n_from_pairs(n_rows) == n_ids:
            hint = f" Layer '{layer}' looks like a condensed RDM: set holds='rdm' and the distance it was made with."
        if self.params.stimuli == "dataset-order":
            if n_rows != len(stimuli):
                raise DataError(f"Reference file '{self.path}' has {n_rows} stimuli in layer '{layer}', the dataset "
                                f"{len(stimuli)}; with stimuli='dataset-order' row i must be the dataset's stimulus "
                                f"i. Use the file with the dataset it was made for, or store the stimulus ids under "
                                f"'{self.params.ids_key}' and set --model-param {self.name}.stimuli='ids'.{hint}")
            return np.arange(n_rows, dtype=np.int64)
        try:
            return _match_ids(self._ids, n_rows, stimuli.ids, where=f"Reference file '{self.path}'", layer=layer,
                              keys=self._keys, ids_key=self.params.ids_key, name=self.name)
        except DataError as exc:
            raise DataError(f"{exc}{hint}") from None

    def extract(self, stimuli: StimulusSet, layers: Sequence[str], *,
                batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Yield, per batch in stimulus order, ``{layer: (batch, n_features) float32}`` from the file."""
        if self.params.holds == "rdm":
            raise DataError(f"Reference model '{self.name}' provides RDMs only (file '{self.path}', "
                            f"{self.params.distance} distance), which are not features and cannot be extracted; "
                            "RDM metrics (rsa) read them through provided_activations(), which this caller does "
                            "not use. Give the features themselves (holds='features') to extract them.")
        arrays = self._load()
        rows = {layer: self._rows(stimuli, layer) for layer in layers}
        for start in range(0, len(stimuli), batch_size):
            yield {layer: np.ascontiguousarray(arrays[layer][rows[layer][start:start + batch_size]])
                   for layer in layers}

    def provided_activations(self, stimuli: StimulusSet, layers: Sequence[str]) -> Activations | None:
        """The layer RDMs over ``stimuli`` in their order (holds='rdm'), or None: features go through
        :meth:`extract` and the activation cache like any model's."""
        if self.params.holds != "rdm":
            return None
        arrays = self._load()
        rdms = {}
        for layer in layers:
            rows = self._rows(stimuli, layer)
            rdms[layer] = arrays[layer][np.ix_(rows, rows)]
        weights = self.weights_info()
        source = f"reference model '{self.name}' (file '{self.path.name}')"
        info = {"model": self.name, "model_version": self.version(), "weights": asdict(weights),
                "layers": list(layers), "preprocessing": self.preprocessing(),
                "reference": {"file": str(self.path), "holds": "rdm", "distance": self.params.distance}}
        return Activations({}, tuple(stimuli.ids), info,
                           rdms=PrecomputedRDMs(rdms, str(self.params.distance), source))


# ---------------------------------------------------------------------------------------------
# reading files
# ---------------------------------------------------------------------------------------------
def _check_file(path: Path, name: str) -> Path:
    """``path`` when it is a readable reference file; else a DataError naming the fix."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"Reference file '{path}' of model '{name}' {what}; name the model reference:<path of a "
                        f"file>, or give the file with --model-param {name}.file=PATH.")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"Reference file '{path}' of model '{name}' has suffix '{path.suffix}'; expected one of "
                        f"{', '.join(SUFFIXES)} (save it with numpy.savez or MATLAB save).")
    return path


def _sha256(path: Path) -> str:
    """SHA-256 hex digest of the bytes of ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_keys(path: Path) -> list[str]:
    """Names of the arrays in ``path`` without reading them (the file's stem for ``.npy``)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return [path.stem]
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return list(npz.files)
        import scipy.io

        return [entry[0] for entry in scipy.io.whosmat(str(path))]
    except Exception as exc:
        raise _unreadable(path, exc) from None


def _read(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """``{key: value}`` of the arrays ``keys`` of ``path`` (MATLAB structs as objects with attributes)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {path.stem: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in keys}
        import scipy.io

        raw = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False, variable_names=list(keys))
        return {k: v for k, v in raw.items() if not k.startswith("__")}
    except Exception as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> DataError:
    text = str(exc)
    if "v7.3" in text or "HDF" in text:
        return DataError(f"Reference file '{path}' is MATLAB v7.3 (HDF5), which scipy cannot read; re-save it in "
                         "MATLAB with save(..., '-v7') or as .npz.")
    if "allow_pickle" in text or "Object arrays" in text:
        return DataError(f"Reference file '{path}' holds object arrays (pickles), which are never read; store "
                         "numbers as numeric arrays and ids as a str array (numpy.array(ids, dtype=str)).")
    return DataError(f"Reference file '{path}' cannot be read ({type(exc).__name__}: {text}); replace it with a "
                     f"valid {path.suffix} file.")


def _key_of(location: str) -> str:
    """The file key of a layer location (``KEY`` of ``KEY[i].FIELD``)."""
    return re.split(r"[.\[]", location, maxsplit=1)[0]


def _locate(contents: dict[str, Any], location: str, path: Path, keys: list[str]) -> np.ndarray:
    """The array at ``location`` (``KEY``, ``KEY[i]``, ``KEY.FIELD``, ``KEY[i].FIELD``) of a read file
    (``keys``: every key of the file, for messages)."""
    m = _LOCATION.match(location)
    assert m is not None  # checked by ReferenceParams
    key, index, field = m.group("key"), m.group("index"), m.group("field")
    if key not in contents:
        raise DataError(f"Reference file '{path}' has no array '{key}'.{did_you_mean(key, keys)} "
                        f"Its keys: {', '.join(keys[:10])}; fix the arrays parameter.")
    value = contents[key]
    if index is not None:
        arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
        if arr.ndim == 0 or int(index) >= arr.shape[0]:
            raise DataError(f"Reference file '{path}': '{key}' has {0 if arr.ndim == 0 else arr.shape[0]} entries, "
                            f"so '{location}' does not exist; fix the index in the arrays parameter.")
        value = arr[int(index)]
    if field is not None:
        if not hasattr(value, field):
            fields = list(getattr(value, "_fieldnames", []) or [])
            raise DataError(f"Reference file '{path}': '{location}' names field '{field}', which "
                            f"'{location.rsplit('.', 1)[0]}' does not have.{did_you_mean(field, fields)} "
                            f"Its fields: {', '.join(fields) or 'none (not a MATLAB struct)'}.")
        value = getattr(value, field)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"Reference file '{path}': '{location}' holds {arr.dtype} data, not numbers; point the "
                        "arrays parameter at a numeric array.")
    return arr


def _features(arr: np.ndarray, path: Path, layer: str) -> np.ndarray:
    """(n_rows, n_features) float32 from an array (n_rows,) (one feature, e.g. a MATLAB column squeezed) or
    (n_rows, ...) (flattened after the first axis)."""
    if arr.ndim < 1:
        raise DataError(f"Layer '{layer}' of reference file '{path}' is a single number; features are "
                        "(n_stimuli, n_features).")
    x = np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float32)
    if x.shape[0] == x.shape[1] and x.shape[0] > 2 and np.allclose(np.diag(x), 0) and np.allclose(x, x.T):
        raise DataError(f"Layer '{layer}' of reference file '{path}' is square, symmetric with a zero diagonal, so "
                        "it looks like an RDM, not features; set holds='rdm' and the distance it was made with.")
    if not np.isfinite(x).all():
        raise DataError(f"Layer '{layer}' of reference file '{path}' has NaN/inf features; fix the file.")
    return x


def _n_from_pairs(n_pairs: int) -> int | None:
    """n with n (n - 1) / 2 == n_pairs, or None."""
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    return n if n * (n - 1) // 2 == n_pairs and n >= 2 else None


def _square_rdm(arr: np.ndarray, path: Path, layer: str) -> np.ndarray:
    """(n, n) float64 RDM, symmetric with a zero diagonal, from a square or condensed array."""
    d = np.asarray(arr, dtype=np.float64)
    where = f"Layer '{layer}' of reference file '{path}'"
    if d.ndim == 1:
        n = _n_from_pairs(d.shape[0])
        if n is None:
            raise DataError(f"{where} has {d.shape[0]} values, which is no condensed RDM (n (n - 1) / 2 values for n "
                            "stimuli); store the RDM square or in pdist order.")
        square = np.zeros((n, n))
        iu, ju = np.triu_indices(n, k=1)
        square[iu, ju] = d
        square[ju, iu] = d
        d = square
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise DataError(f"{where} has shape {d.shape}; an RDM is (n_stimuli, n_stimuli) or its condensed upper "
                        "triangle (n_stimuli (n_stimuli - 1) / 2,).")
    if not np.isfinite(d).all():
        raise DataError(f"{where} has NaN/inf dissimilarities; fix the file.")
    scale = max(float(np.abs(d).max()), 1e-300)
    if np.abs(d - d.T).max() > RDM_RTOL * scale or np.abs(np.diag(d)).max() > RDM_RTOL * scale:
        raise DataError(f"{where} is not an RDM: it must be symmetric with a zero diagonal (largest asymmetry "
                        f"{np.abs(d - d.T).max():.3g}, largest diagonal value {np.abs(np.diag(d)).max():.3g}).")
    if (d < 0).any():
        log.warning("%s has negative dissimilarities (min %.3g).", where, float(d.min()))
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return d


def _stored_ids(contents: dict[str, Any], ids_key: str) -> tuple[str, ...] | None:
    """The stimulus ids stored under ``ids_key``, (n_rows,) str, or None when the file has none."""
    if ids_key not in contents:
        return None
    ids = np.atleast_1d(np.asarray(contents[ids_key]))
    return tuple(str(v).strip() for v in ids.ravel())


def _match_ids(ids: tuple[str, ...] | None, n_rows: int, wanted: Sequence[str], *, where: str, layer: str,
               keys: list[str], ids_key: str, name: str) -> np.ndarray:
    """Row of ``ids`` holding each id of ``wanted``, (n_wanted,) int64; a DataError naming the fix."""
    if ids is None:
        raise DataError(f"{where} has no stimulus ids under '{ids_key}' (its keys: {', '.join(keys[:10])}); store "
                        f"them there (numpy.savez(..., {ids_key}=numpy.array(ids))), name their key with "
                        f"--model-param {name}.ids_key=KEY, or, if its rows follow the dataset's stimuli in order, "
                        f"set --model-param {name}.stimuli='dataset-order'.")
    if len(ids) != n_rows:
        raise DataError(f"{where} has {len(ids)} stimulus ids under '{ids_key}' but {n_rows} stimuli in layer "
                        f"'{layer}'; store one id per row.")
    position = {s: i for i, s in enumerate(ids)}
    if len(position) != len(ids):
        dup = next(s for i, s in enumerate(ids) if position[s] != i)
        raise DataError(f"{where} lists stimulus id '{dup}' more than once under '{ids_key}'; ids must be unique.")
    missing = [s for s in wanted if s not in position]
    if missing:
        raise DataError(f"{where} lacks {len(missing)} of the dataset's {len(wanted)} stimuli (first: "
                        f"{', '.join(repr(s) for s in missing[:3])}).{did_you_mean(missing[0], list(ids))} Its ids "
                        f"(under '{ids_key}') must include every stimulus of the dataset: use the dataset the file "
                        "was made for, or fix the ids.")
    if len(ids) > len(wanted):
        log.info("%s: %d stimuli not in the dataset are left out.", where, len(ids) - len(wanted))
    return np.array([position[s] for s in wanted], dtype=np.int64)
