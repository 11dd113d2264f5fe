"""Core data types passed between datasets, signals, models and metrics.

Plain numpy arrays plus small frozen dataclasses. Conventions:

* stimuli are ordered; every array's first axis follows ``StimulusSet.ids``;
* activations and responses are float32, RDMs and correlations float64;
* times in ms, frequencies in Hz, coordinates in mm.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import mne
    from PIL import Image

#: The ventral-stream order of Kuzovkin et al. 2018 (Brodmann areas, early to late).
DEFAULT_AREA_ORDER: tuple[str, ...] = ("17", "18", "19", "37", "20")

DataKind = Literal["epochs", "responses", "rdms"]


def digest_of(*parts: Any) -> str:
    """SHA-256 hex digest of JSON-serialisable parts and raw byte strings / arrays."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, np.ndarray):
            h.update(str(part.dtype).encode())
            h.update(str(part.shape).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass(frozen=True)
class StimulusSet:
    """Ordered stimuli.

    Parameters
    ----------
    ids : tuple of str, (n_stimuli,)
        Unique stimulus ids; the order of every stimulus axis.
    paths : tuple of Path, (n_stimuli,), optional
        Image files, one per id.
    images : ndarray, (n_stimuli, height, width, 3) uint8, optional
        In-memory RGB images, used when ``paths`` is None.
    labels : tuple of str, (n_stimuli,), optional
        Category of each stimulus (used for stratified splits).
    """

    ids: tuple[str, ...]
    paths: tuple[Path, ...] | None = None
    images: np.ndarray | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"Stimulus ids must be unique; '{dup}' appears more than once.")
        for name, value in (("paths", self.paths), ("images", self.images), ("labels", self.labels)):
            if value is not None and len(value) != len(self.ids):
                raise ValueError(f"StimulusSet.{name} has {len(value)} entries for {len(self.ids)} ids.")

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> Image.Image:
        """Return stimulus ``index`` as a PIL image in its stored mode (L, RGB, RGBA, ...)."""
        from PIL import Image

        if self.images is not None:
            return Image.fromarray(np.asarray(self.images[index]))
        if self.paths is None:
            raise ValueError("StimulusSet has neither paths nor images.")
        from framework.errors import DataError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except FileNotFoundError:
            raise DataError(f"Stimulus image '{path}' (id '{self.ids[index]}') does not exist; "
                            "fix the stimulus folder or the id list.") from None
        except Exception as exc:  # PIL raises many kinds for corrupt files
            raise DataError(f"Stimulus image '{path}' (id '{self.ids[index]}') cannot be read "
                            f"({type(exc).__name__}: {exc}); replace the file.") from None

    def digest(self) -> str:
        """Content digest: ids, labels and image bytes (files or pixels)."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.ids), list(self.labels or ())]).encode())
        if self.images is not None:
            h.update(np.ascontiguousarray(self.images).tobytes())
        elif self.paths is not None:
            for p in self.paths:
                h.update(Path(p).read_bytes())
        return h.hexdigest()


@dataclass(frozen=True)
class SiteTable:
    """One row per recording site (electrode contact, voxel set, neuron).

    Parameters
    ----------
    names : tuple of str, (n_sites,)
        Unique site ids, ``"<subject>/<channel>"`` for intracranial data.
    subjects : tuple of str, (n_sites,)
    areas : tuple of str, (n_sites,)
        Brain area, e.g. Brodmann area ``"17"``; ``"n/a"`` when unknown.
    coords : ndarray, (n_sites, 3) float64, optional
        Coordinates in mm.
    """

    names: tuple[str, ...]
    subjects: tuple[str, ...]
    areas: tuple[str, ...]
    coords: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.subjects) != n or len(self.areas) != n:
            raise ValueError("SiteTable columns must all have n_sites entries.")
        if self.coords is not None and np.shape(self.coords) != (n, 3):
            raise ValueError(f"SiteTable.coords must be (n_sites, 3) = ({n}, 3), got {np.shape(self.coords)}.")

    def __len__(self) -> int:
        return len(self.names)

    def select(self, mask_or_index: np.ndarray) -> SiteTable:
        """Rows picked by a boolean mask or an integer index array."""
        idx = np.arange(len(self))[np.asarray(mask_or_index)]
        return SiteTable(
            names=tuple(self.names[i] for i in idx),
            subjects=tuple(self.subjects[i] for i in idx),
            areas=tuple(self.areas[i] for i in idx),
            coords=None if self.coords is None else np.asarray(self.coords)[idx],
        )

    def concat(self, other: SiteTable) -> SiteTable:
        coords = None
        if self.coords is not None and other.coords is not None:
            coords = np.concatenate([self.coords, other.coords])
        return SiteTable(self.names + other.names, self.subjects + other.subjects,
                         self.areas + other.areas, coords)

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {"name": list(self.names), "subject": list(self.subjects), "area": list(self.areas)}
        if self.coords is not None:
            out.update(x=self.coords[:, 0].tolist(), y=self.coords[:, 1].tolist(), z=self.coords[:, 2].tolist())
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> SiteTable:
        coords = None
        if "x" in d:
            coords = np.column_stack([d["x"], d["y"], d["z"]]).astype(np.float64)
        return cls(tuple(d["name"]), tuple(d["subject"]), tuple(d["area"]), coords)


@dataclass(frozen=True)
class Responses:
    """Stimulus-evoked responses, what a signal produces from recordings.

    Parameters
    ----------
    data : ndarray, (n_stimuli, n_sites) float32
        One number per stimulus and site (e.g. window / baseline power ratio),
        averaged over repetitions.
    sites : SiteTable, (n_sites,)
    stimulus_ids : tuple of str, (n_stimuli,)
    repetitions : ndarray, (n_repetitions, n_stimuli, n_sites) float32, optional
        Single-repetition responses for noise ceilings; NaN where a stimulus was
        shown fewer times.
    area_order : tuple of str
        Ventral-stream order of areas used by the alignment metric.
    info : dict
        Provenance and bookkeeping from the signal (e.g. responsive-site counts).
    """

    data: np.ndarray
    sites: SiteTable
    stimulus_ids: tuple[str, ...]
    repetitions: np.ndarray | None = None
    area_order: tuple[str, ...] = DEFAULT_AREA_ORDER
    info: dict[str, Any] = field(default_factory=dict)

    kind: DataKind = field(default="responses", init=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 2 or self.data.shape != (len(self.stimulus_ids), len(self.sites)):
            raise ValueError(f"Responses.data must be (n_stimuli, n_sites) = "
                             f"({len(self.stimulus_ids)}, {len(self.sites)}), got {self.data.shape}.")
        if self.repetitions is not None and self.repetitions.shape[1:] != self.data.shape:
            raise ValueError(f"Responses.repetitions must be (n_repetitions, {self.data.shape[0]}, "
                             f"{self.data.shape[1]}), got {self.repetitions.shape}.")

    @property
    def n_stimuli(self) -> int:
        return self.data.shape[0]

    @property
    def n_sites(self) -> int:
        return self.data.shape[1]

    def select_sites(self, mask_or_index: np.ndarray) -> Responses:
        idx = np.arange(self.n_sites)[np.asarray(mask_or_index)]
        reps = None if self.repetitions is None else self.repetitions[:, :, idx]
        return Responses(self.data[:, idx], self.sites.select(idx), self.stimulus_ids, reps,
                         self.area_order, dict(self.info))


@dataclass(frozen=True)
class BrainRDMs:
    """Precomputed representational dissimilarity matrices, per area and subject.

    Parameters
    ----------
    rdms : dict of str to ndarray, each (n_subjects, n_stimuli, n_stimuli) float64
        Symmetric, zero diagonal; key is the area name (e.g. ``"EVC"``, ``"IT"``).
    stimulus_ids : tuple of str, (n_stimuli,)
    area_order : tuple of str
        Order of the areas along the processing hierarchy.
    distance : str
        How the RDMs were made (e.g. ``"correlation"`` for 1 − Pearson). Metrics make
        model RDMs with the same distance unless told otherwise.
    info : dict
        Provenance and bookkeeping (JSON-serialisable).
    headline_areas : tuple of str, optional
        Areas whose scores form a metric's headline (e.g. ``("IT",)``). None: every area,
        allowed only when all areas are of one species and kind (:meth:`area_groups`).
    area_species : dict of str to str
        Species of each area (``"human"``, ``"monkey"``); areas not listed are unspecified.
    area_kinds : dict of str to str
        Kind of recording of each area (``"fMRI"``, ``"electrophysiology"``); areas not
        listed are unspecified.
    """

    rdms: dict[str, np.ndarray]
    stimulus_ids: tuple[str, ...]
    area_order: tuple[str, ...]
    distance: str = "correlation"
    info: dict[str, Any] = field(default_factory=dict)
    headline_areas: tuple[str, ...] | None = None
    area_species: dict[str, str] = field(default_factory=dict)
    area_kinds: dict[str, str] = field(default_factory=dict)

    kind: DataKind = field(default="rdms", init=False)

    def __post_init__(self) -> None:
        n = len(self.stimulus_ids)
        for area, r in self.rdms.items():
            if r.ndim != 3 or r.shape[1:] != (n, n):
                raise ValueError(f"RDMs of area '{area}' must be (n_subjects, {n}, {n}), got {r.shape}.")
        if self.headline_areas is not None:
            if not self.headline_areas:
                raise ValueError("BrainRDMs.headline_areas is empty; give at least one area or None.")
            unknown = [a for a in self.headline_areas if a not in self.rdms]
            if unknown:
                raise ValueError(f"BrainRDMs.headline_areas names {unknown}, which have no RDMs "
                                 f"(areas: {list(self.rdms)}).")
        for name, mapping in (("area_species", self.area_species), ("area_kinds", self.area_kinds)):
            unknown = [a for a in mapping if a not in self.rdms]
            if unknown:
                raise ValueError(f"BrainRDMs.{name} names {unknown}, which have no RDMs (areas: {list(self.rdms)}).")

    def area_group(self, area: str) -> str:
        """``"<species> <kind>"`` of ``area``, with ``"unspecified"`` for what is not declared."""
        return f"{self.area_species.get(area, 'unspecified')} {self.area_kinds.get(area, 'unspecified')}"

    def area_groups(self) -> dict[str, list[str]]:
        """Areas grouped by species and kind, ``{"human fMRI": ["EVC", "IT"], ...}``, in ``rdms`` order.

        More than one group means the areas must not be averaged into one number
        unless ``headline_areas`` says which areas form the headline.
        """
        groups: dict[str, list[str]] = {}
        for area in self.rdms:
            groups.setdefault(self.area_group(area), []).append(area)
        return groups


#: What a signal produces and a metric consumes.
Target = Responses | BrainRDMs


@dataclass(frozen=True)
class EpochsMeta:
    """What is known of one subject's epochs before any computation on them.

    Filled by the dataset plugin when it loads (from the file headers), so signal
    plugins can check their settings against the recordings at plan time
    (:meth:`framework.contracts.SignalPlugin.check`).

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    tmin_ms, tmax_ms : float
        Time of the first and last sample of an epoch, in ms relative to stimulus onset.
    n_epochs : int
        Number of epochs (trials).
    channels : tuple of str
        The good site channels, in file order (as in the site table).
    """

    sfreq: float
    tmin_ms: float
    tmax_ms: float
    n_epochs: int
    channels: tuple[str, ...] = ()

    @property
    def nyquist(self) -> float:
        """Half the sampling rate, in Hz."""
        return self.sfreq / 2.0


@dataclass
class Dataset:
    """A stimulus set plus one kind of brain data.

    Exactly one of ``epochs``, ``responses`` or ``rdms`` is set.

    Parameters
    ----------
    name : str
    stimuli : StimulusSet
    digest : str
        Content digest of everything that defines the data (cache key part).
    epochs : mapping of subject -> zero-argument callable returning ``mne.BaseEpochs``
        Raw recordings, loaded one subject at a time. Each epochs object has
        ``metadata["stimulus"]`` naming the stimulus id of every trial (read it
        with :func:`epochs_stimulus_ids`); its
        channels are named as in the site table (``sites.names`` is
        ``"<subject>/<channel>"``).
    sites : SiteTable, optional
        Every channel of every subject (required with ``epochs``).
    responses : Responses, optional
    rdms : BrainRDMs, optional
    area_order : tuple of str
    truth : dict, optional
        Planted ground truth (the demo dataset), keyed by name.
    epochs_meta : mapping of subject -> EpochsMeta, optional
        Sampling rate, time span and channels of each subject's epochs, known without
        reading the data (plan-time checks of signal settings). Set with ``epochs``.
    """

    name: str
    stimuli: StimulusSet
    digest: str
    epochs: Mapping[str, Callable[[], mne.BaseEpochs]] | None = None
    sites: SiteTable | None = None
    responses: Responses | None = None
    rdms: BrainRDMs | None = None
    area_order: tuple[str, ...] = DEFAULT_AREA_ORDER
    truth: dict[str, Any] | None = None
    description: str = ""
    epochs_meta: Mapping[str, EpochsMeta] | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("epochs", "responses", "rdms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"Dataset '{self.name}' needs exactly one of epochs, responses, rdms; got {given}.")
        if self.epochs is not None and self.sites is None:
            raise ValueError(f"Dataset '{self.name}' has epochs but no site table.")

    @property
    def kind(self) -> DataKind:
        if self.epochs is not None:
            return "epochs"
        if self.responses is not None:
            return "responses"
        return "rdms"


#: Distances a precomputed RDM can be converted to exactly: ``(given, requested) -> how``.
_RDM_CONVERSIONS: dict[tuple[str, str], str] = {("euclidean", "sqeuclidean"): "square",
                                                ("sqeuclidean", "euclidean"): "sqrt"}


@dataclass(frozen=True)
class PrecomputedRDMs:
    """Layer RDMs given as data (a reference model's RDM file), not computed from features.

    They cannot become features: an :class:`Activations` holding them serves the RDMs
    (:meth:`Activations.precomputed_rdm`) and, for (squared) Euclidean RDMs only, the
    exact centred Gram matrix ``-1/2 J D^2 J``; any other request is a
    :class:`framework.errors.DataError` saying that the model provides RDMs only.

    Parameters
    ----------
    rdms : dict of str to ndarray, each (n_stimuli, n_stimuli) float64
        Symmetric with a zero diagonal, rows in the order of the activations' stimuli.
    distance : str
        The distance the RDMs were made with (``"correlation"``, ``"euclidean"``, ...).
    source : str
        Who provides them, for messages, e.g. ``"reference model 'reference:mit' (file 'mit.mat')"``.
    """

    rdms: dict[str, np.ndarray]
    distance: str
    source: str = "precomputed RDMs"

    def error(self, layer: str, what: str):
        """The :class:`DataError` for a request of ``what`` that an RDM cannot answer."""
        from framework.errors import DataError

        return DataError(f"This metric needs features ({what} of layer '{layer}'), but {self.source} provides "
                         f"RDMs only ({self.distance} distance), which are not features; score it with a metric "
                         f"built on RDMs (rsa, with distance '{self.distance}'), or give the features themselves.")


class Activations:
    """Layer activations of one model for one stimulus set: features, statistics, or both.

    Layers are ordered (their position is the layer index the alignment metric uses).
    Each layer has its raw features, an (n_stimuli, n_features) float32 array (usually
    memory-mapped from the cache), and/or the sufficient statistics metrics compute
    their scores from (:mod:`framework.layer_stats`): the (n_stimuli, n_stimuli) float64
    Gram matrices, per-fold Gram matrices, and per-stimulus digests. The cache keeps the
    statistics the run's metrics declared, and the features only when a metric needs
    them or ``--keep-activations`` is set. Every accessor below serves a statistic from
    the cache when present and computes it from the features otherwise, with the same
    numerics; asking for something that is neither cached nor derivable is a
    :class:`framework.errors.DataError` naming the layer and the fix.

    Parameters
    ----------
    layers : mapping of str -> ndarray, (n_stimuli, n_features)
        Raw features of some or all layers (may be empty when ``stats`` has the layers).
    stimulus_ids : tuple of str, (n_stimuli,)
    info : dict, optional
        Provenance (model, weights, layers, preprocessing, reduction, cache key, labels).
    stats : LayerStatistics, optional
        Cached statistics (:class:`LayerStatistics`), over the same stimuli in the same order.
    rdms : PrecomputedRDMs, optional
        Layer RDMs given as data instead of features (a reference model): the layers are its
        layers, served by :meth:`precomputed_rdm`; asking them for features is a ``DataError``.
    """

    def __init__(self, layers: Mapping[str, np.ndarray], stimulus_ids: tuple[str, ...],
                 info: dict[str, Any] | None = None, *, stats: LayerStatistics | None = None,
                 rows: np.ndarray | None = None, rdms: PrecomputedRDMs | None = None) -> None:
        self._features = dict(layers)
        self._stats = stats
        self._rdms = rdms
        self.stimulus_ids = tuple(stimulus_ids)
        self.info = dict(info or {})
        # rows: this view's stimuli as rows of the stored features/statistics (None: all, in order)
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n_base = len(self.stimulus_ids) if self._rows is None else None
        for name, arr in self._features.items():
            if arr.ndim != 2 or (n_base is not None and arr.shape[0] != n_base):
                raise ValueError(f"Layer '{name}' must be (n_stimuli={len(self.stimulus_ids)}, n_features), "
                                 f"got {arr.shape}.")
        if rdms is not None:
            for name, square in rdms.rdms.items():
                if n_base is not None and square.shape != (n_base, n_base):
                    raise ValueError(f"Precomputed RDM of layer '{name}' must be ({n_base}, {n_base}), "
                                     f"got {square.shape}.")
        if stats is not None:
            self._names = tuple(stats.layers)
        elif rdms is not None and not self._features:
            self._names = tuple(rdms.rdms)
        else:
            self._names = tuple(self._features)

    # -- the mapping of layer names (features) ------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        return self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, layer: object) -> bool:
        return layer in self._names

    def has_features(self, layer: str) -> bool:
        """Whether the raw features of ``layer`` are available."""
        return layer in self._features

    def __getitem__(self, layer: str) -> np.ndarray:
        """Raw features of ``layer``, (n_stimuli, n_features) float32, in this object's stimulus order."""
        if layer not in self._names:
            raise KeyError(layer)
        if self._rdm_only(layer):
            raise self._rdms.error(layer, "its raw features")  # type: ignore[union-attr]
        if layer not in self._features:
            from framework.errors import DataError

            raise DataError(f"The raw features of layer '{layer}' were not kept (the cache holds the statistics "
                            "the run's metrics declared); re-run with --keep-activations, or declare "
                            "Need.features() in the metric's needs().")
        arr = self._features[layer]
        return arr if self._rows is None else np.asarray(arr)[self._rows]

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(layer, raw features) pairs; every layer's features must be available."""
        return ((name, self[name]) for name in self._names)

    # -- statistics ------------------------------------------------------------------------------
    def n_features(self, layer: str) -> int:
        """Number of features of ``layer``."""
        if layer in self._features:
            return int(self._features[layer].shape[1])
        if self._rdm_only(layer):
            raise self._rdms.error(layer, "the number of features")  # type: ignore[union-attr]
        return int(self._require_stats(layer).widths[layer])

    def _rdm_only(self, layer: str) -> bool:
        """Whether ``layer`` is a precomputed RDM without features or statistics."""
        return (self._rdms is not None and layer in self._rdms.rdms and layer not in self._features
                and (self._stats is None or layer not in self._stats.widths))

    def precomputed_rdm(self, layer: str, distance: str, *, rows: np.ndarray | None = None) -> np.ndarray | None:
        """The given RDM of ``layer`` over this object's stimuli (or ``rows`` of them), or None.

        Parameters
        ----------
        layer : str
        distance : str
            The distance asked for. The RDM is served when it was made with it; Euclidean
            and squared Euclidean RDMs convert into each other exactly; any other distance
            is a :class:`framework.errors.DataError` (an RDM cannot be re-made with another one).
        rows : ndarray of int, optional

        Returns
        -------
        ndarray, (n, n) float64, or None
            A new array; None when ``layer`` has features (compute its RDM from them).
        """
        if not self._rdm_only(layer):
            return None
        given = self._rdms  # type: ignore[union-attr]
        how = "as is" if distance == given.distance else _RDM_CONVERSIONS.get((given.distance, distance))
        if how is None:
            from framework.errors import DataError

            raise DataError(f"{given.source[:1].upper()}{given.source[1:]} provides layer '{layer}' as an RDM of "
                            f"{given.distance} distance; this metric asks for {distance} distance, which that RDM "
                            f"cannot be converted to; set the metric's distance to '{given.distance}' (e.g. "
                            f"--metric-param rsa.distance='{given.distance}').")
        idx = self._compose(rows)
        square = np.asarray(given.rdms[layer], dtype=np.float64)
        square = square.copy() if idx is None else square[np.ix_(idx, idx)]
        if how == "square":
            square *= square
        elif how == "sqrt":
            np.sqrt(np.clip(square, 0.0, None), out=square)
        return square

    def _require_stats(self, layer: str) -> LayerStatistics:
        if self._stats is None or layer not in self._stats.widths:
            raise KeyError(layer)
        return self._stats

    def _missing(self, layer: str, what: str):
        from framework.errors import DataError

        return DataError(f"Layer '{layer}': {what} is not in the activation cache and the raw features were not "
                         "kept; the metric asked for a statistic it did not declare in needs() (declare it), or "
                         "its stimuli differ from the dataset's; re-run with --keep-activations to score from "
                         "the features.")

    def _view_rows(self) -> np.ndarray | None:
        return self._rows

    def finite(self, layer: str) -> bool:
        """Whether every feature of ``layer`` is finite over this object's stimuli."""
        if self._stats is not None and layer in self._stats.summary:
            fin = self._stats.summary[layer]["finite"]
            return bool(np.all(fin if self._rows is None else fin[self._rows]))
        if self._rdm_only(layer):
            square = self._rdms.rdms[layer]  # type: ignore[union-attr]
            return bool(np.isfinite(square if self._rows is None else square[np.ix_(self._rows, self._rows)]).all())
        return bool(np.isfinite(np.asarray(self[layer])).all())

    def constant_layers(self, rows: np.ndarray | None = None) -> list[str]:
        """Layers whose features are the same for every stimulus (of ``rows``, rows of this object).

        From the per-stimulus digests when cached (a layer holding NaN is never constant),
        else from the features (:func:`framework.numerics.layers.constant_layers`).
        """
        from framework.numerics.layers import constant_layers

        out = []
        for name in self._names:
            if self._stats is not None and name in self._stats.summary:
                s = self._stats.summary[name]
                idx = self._compose(rows)
                dig = s["digests"] if idx is None else s["digests"][idx]
                fin = s["finite"] if idx is None else s["finite"][idx]
                if dig.shape[0] >= 2 and fin.all() and (dig == dig[:1]).all():
                    out.append(name)
            elif self._rdm_only(name):  # every stimulus the same: every dissimilarity zero
                idx = self._compose(rows)
                square = self._rdms.rdms[name]  # type: ignore[union-attr]
                square = square if idx is None else square[np.ix_(idx, idx)]
                if square.shape[0] >= 2 and not np.any(square):
                    out.append(name)
            elif constant_layers([(name, self[name])], rows=rows):
                out.append(name)
        return out

    def _compose(self, rows: np.ndarray | None) -> np.ndarray | None:
        """``rows`` of this object as rows of the stored arrays."""
        if rows is None:
            return self._rows
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self._rows is None else self._rows[rows]

    def gram(self, layer: str, *, center: bool, rows: np.ndarray | None = None,
             check_finite: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Gram matrix of ``layer`` over this object's stimuli (or ``rows`` of them, in that order).

        Parameters
        ----------
        layer : str
        center : bool
            Of the features centred over the stimuli they were stored with
            (:func:`framework.numerics.gram.gram` with ``center=True``): distances between rows
            are those of the features; re-centre with :func:`framework.numerics.gram.recentered_gram`
            or double centring for the centred Gram matrix of a subset.
        rows : ndarray of int, optional
        check_finite : bool
            Raise :class:`DataError` when the layer has NaN/inf features.

        Returns
        -------
        gram : ndarray, (n, n) float64
        row_sums : ndarray, (n,) float64, or None
            ``X 1`` when ``center`` is false; None for the centred matrix.
        """
        from framework.errors import DataError
        from framework.numerics.gram import gram as build

        if self._rdm_only(layer):
            return self._gram_from_rdm(layer, center=center, rows=rows), None
        if check_finite and not self.finite(layer):
            raise DataError(f"Features of layer '{layer}' contain NaN/inf; fix the activations (e.g. clear "
                            "the activation cache with 'framework cache prune').")
        idx = self._compose(rows)
        kind = "centered_gram" if center else "gram"
        stats = self._stats.grams.get((layer, kind)) if self._stats is not None else None
        if stats is None:
            if layer not in self._features:
                raise self._missing(layer, f"its {kind.replace('_', ' ')}")
            g, sums = build(self._features[layer], center=center, check_finite=False)
            stats = {"gram": g, "row_sums": sums}
            if self._stats is not None:
                self._stats.grams[(layer, kind)] = stats
            elif self._rows is None:
                self._stats_cache().grams[(layer, kind)] = stats
        g = stats["gram"]
        sums = stats.get("row_sums") if not center else None
        if idx is not None:
            g = g[np.ix_(idx, idx)]
            sums = None if sums is None else sums[idx]
        return g, sums

    def _gram_from_rdm(self, layer: str, *, center: bool, rows: np.ndarray | None) -> np.ndarray:
        """The centred Gram matrix of a (squared) Euclidean precomputed RDM, ``-1/2 J D^2 J`` over the
        stored stimuli (rows selected afterwards, as for features); (n, n) float64. Other RDMs and the
        uncentred Gram matrix are not determined by an RDM: a ``DataError``."""
        given = self._rdms  # type: ignore[union-attr]
        if not center or given.distance not in ("euclidean", "sqeuclidean"):
            raise given.error(layer, "the centred Gram matrix" if center else "the Gram matrix X X^T")
        d2 = np.asarray(given.rdms[layer], dtype=np.float64)
        d2 = d2 * d2 if given.distance == "euclidean" else d2.copy()
        d2 -= d2.mean(axis=0, keepdims=True)
        d2 -= d2.mean(axis=1, keepdims=True)
        g = -0.5 * d2
        idx = self._compose(rows)
        return g if idx is None else g[np.ix_(idx, idx)]

    def _stats_cache(self) -> LayerStatistics:
        """Statistics computed from features, kept with this object (features-only activations)."""
        if self._stats is None:
            self._stats = LayerStatistics(self._names, {k: int(v.shape[1]) for k, v in self._features.items()})
        return self._stats

    def fold_grams(self, layer: str, trains: list[np.ndarray], *, standardize: bool) -> np.ndarray:
        """Per-fold z-scored Gram matrices of ``layer`` (:func:`framework.numerics.gram.fold_grams`).

        Parameters
        ----------
        layer : str
        trains : list of ndarray of int
            Training rows (of this object) of each fold.
        standardize : bool

        Returns
        -------
        ndarray, (n_folds, n_stimuli, n_stimuli) float64
            Over this object's stimuli, in its order.
        """
        from framework.errors import DataError
        from framework.layer_stats import fold_key
        from framework.numerics.gram import fold_grams

        if self._rdm_only(layer):
            raise self._rdms.error(layer, f"the Gram matrices of {len(trains)} cross-validation fold(s)")  # type: ignore[union-attr]
        if not self.finite(layer):
            raise DataError(f"Layer '{layer}' has NaN/inf activations; re-extract it (clear the cache).")
        base = [np.asarray(t, dtype=np.int64) if self._rows is None else self._rows[np.asarray(t, dtype=np.int64)]
                for t in trains]
        found = [] if self._stats is None else [self._stats.folds.get((layer, fold_key([t], standardize)))
                                                for t in base]
        if found and all(f is not None for f in found):
            grams = np.stack(found)
        elif layer in self._features:
            splits = [(t, np.zeros(0, dtype=np.int64)) for t in base]
            grams = fold_grams(self._features[layer], splits, standardize=standardize, layer=layer)
        else:
            raise self._missing(layer, f"the Gram matrices of {len(trains)} cross-validation fold(s)")
        if self._rows is not None:
            grams = grams[:, self._rows][:, :, self._rows]
        return grams

    def select(self, rows: np.ndarray | None, stimulus_ids: tuple[str, ...], info: dict[str, Any]) -> Activations:
        """The same layers over ``rows`` of this object's stimuli (in that order), without copying."""
        idx = self._compose(rows)
        return Activations(self._features, stimulus_ids, info, stats=self._stats, rows=idx, rdms=self._rdms)


@dataclass
class LayerStatistics:
    """Statistics of a model's layers from the activation cache (see :class:`Activations`).

    Parameters
    ----------
    layers : tuple of str
        Layer order.
    widths : dict of str -> int
        Number of features of each layer.
    summary : dict of str -> dict
        Per layer ``digests`` (n_stimuli, 16) uint8 and ``finite`` (n_stimuli,) bool.
    grams : dict of (str, str) -> dict
        ``(layer, "gram" | "centered_gram")`` -> ``{"gram": (n, n) float64[, "row_sums": (n,)]}``.
    folds : dict of (str, str) -> ndarray
        ``(layer, fold key)`` -> that fold's (n, n) float64 Gram matrix
        (:func:`framework.layer_stats.fold_key` of the fold's training rows and standardisation).
    """

    layers: tuple[str, ...]
    widths: dict[str, int]
    summary: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    grams: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    folds: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


@dataclass
class Score:
    """What a metric returns for one (model, signal) pair.

    Parameters
    ----------
    value : float
        Headline value shown on the leaderboard (each metric documents it).
    ceiling : float, optional
        Noise ceiling of ``value`` when the data allow one.
    ci : (float, float), optional
        Confidence interval of ``value``.
    p_value : float, optional
    details : dict of str to table
        Named column-oriented tables (``{column: list}``), e.g. ``"layer_site"``
        with columns ``layer, layer_index, site, area, r, p``; JSON-serialisable.
    summary : dict
        Small scalars (best layer, n_sites used, ...), JSON-serialisable.
    higher_is_better : bool
    """

    value: float
    ceiling: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    details: dict[str, dict[str, list]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True


def epochs_stimulus_ids(epochs: Any, where: str = "<epochs>") -> list[str]:
    """Stimulus id of every epoch, (n_epochs,) str — the ``Dataset.epochs`` contract.

    Read from ``epochs.metadata["stimulus"]``: a pandas DataFrame, or the list of
    per-epoch dicts MNE keeps when pandas is not installed. Without metadata, from
    the events: the name in ``event_id`` of each epoch's event code.

    Parameters
    ----------
    epochs : mne.BaseEpochs
    where : str
        The file or subject named in error messages.
    """
    from framework.errors import DataError, did_you_mean

    md = getattr(epochs, "metadata", None)
    if md is not None:
        if hasattr(md, "columns"):
            columns = [str(c) for c in md.columns]
            values = list(md["stimulus"]) if "stimulus" in columns else None
        else:
            columns = sorted({str(k) for row in md for k in row})
            values = [row["stimulus"] for row in md] if all("stimulus" in row for row in md) else None
        if values is None:
            raise DataError(f"Epochs of {where} have metadata without a 'stimulus' column (columns: "
                            f"{columns[:10]}).{did_you_mean('stimulus', columns)} Add a 'stimulus' column naming "
                            "the stimulus id of every epoch.")
        return [str(v) for v in values]
    inverse = {int(code): name for name, code in epochs.event_id.items()}
    codes = epochs.events[:, 2]
    missing = sorted({int(c) for c in codes} - set(inverse))
    if missing:
        raise DataError(f"Epochs of {where} have no metadata['stimulus'] and event codes {missing[:5]} have no "
                        "name in event_id; set epochs.metadata to a table with a 'stimulus' column and save again.")
    return [inverse[int(c)] for c in codes]
