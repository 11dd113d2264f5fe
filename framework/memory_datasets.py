"""Datasets built in Python, for :func:`framework.run`: from arrays of responses, from RDM arrays,
or from a dict of ``mne.Epochs`` plus a sites table.

Each is a :class:`framework.types.Dataset` like a registered one. Its digest is computed from
every number it holds (with its name), so results are keyed by content and a rerun on the same
data resumes. The checks are those of the ``file`` dataset (stimulus coverage, site table,
NaN and flat channels), with messages that name the subject or argument to fix.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from framework.errors import ConfigError, DataError, did_you_mean

__all__ = ["epochs_dataset", "rdms_dataset", "responses_dataset"]

def _stimuli(ids: Any, images: Any, labels: Any, n: int):
    import numpy as np

    from framework.types import StimulusSet

    ids = tuple(str(i) for i in ids) if ids is not None else tuple(f"stim{i:04d}" for i in range(n))
    if len(ids) != n:
        raise ConfigError(f"stimulus_ids has {len(ids)} entries for {n} stimuli; give one id per stimulus.")
    arr = np.asarray(images)
    if arr.ndim not in (3, 4) or arr.shape[0] != n:
        raise ConfigError(f"images must be an array (n_stimuli={n}, height, width[, 3]), got shape {arr.shape}.")
    return StimulusSet(ids, images=arr, labels=None if labels is None else tuple(str(x) for x in labels))


def responses_dataset(name: str, images: Any, data: Any, *, subjects: Any, areas: Any, sites: Any = None,
                      stimulus_ids: Any = None, labels: Any = None, repetitions: Any = None,
                      area_order: Any = None):
    """A responses dataset from arrays, for :func:`run`.

    Parameters
    ----------
    name : str
        Lower case, no spaces; keys the results with the arrays' digest.
    images : ndarray, (n_stimuli, height, width[, 3]) uint8
    data : ndarray, (n_stimuli, n_sites)
        One response per stimulus and site (e.g. band power, spike rate).
    subjects, areas : sequence of str, (n_sites,)
        Subject and brain area of every site (areas as in ``area_order``, e.g. Brodmann ``"17"``).
    sites : sequence of str, (n_sites,), optional
        Site names; default ``"<subject>/site<j>"``.
    stimulus_ids, labels : sequence of str, (n_stimuli,), optional
    repetitions : ndarray, (n_repetitions, n_stimuli, n_sites), optional
        Single presentations, for split-half noise ceilings.
    area_order : sequence of str, optional
        The areas along the hierarchy (default the ventral-stream Brodmann order).
    """
    import numpy as np

    from framework.types import DEFAULT_AREA_ORDER, Dataset, Responses, SiteTable, digest_of

    x = np.asarray(data, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"data must be (n_stimuli, n_sites), got shape {x.shape}.")
    n, k = x.shape
    subjects, areas = tuple(str(s) for s in subjects), tuple(str(a) for a in areas)
    if len(subjects) != k or len(areas) != k:
        raise ConfigError(f"subjects and areas need one entry per site ({k}); got {len(subjects)} and {len(areas)}.")
    names = tuple(str(s) for s in sites) if sites is not None else tuple(f"{s}/site{j}" for j, s in
                                                                        enumerate(subjects))
    stim = _stimuli(stimulus_ids, images, labels, n)
    reps = None if repetitions is None else np.asarray(repetitions, dtype=np.float32)
    responses = Responses(x, SiteTable(names, subjects, areas), stim.ids, repetitions=reps)
    order = tuple(area_order) if area_order is not None else DEFAULT_AREA_ORDER
    digest = digest_of("responses-v1", name, x, names, subjects, areas, list(stim.ids), stim.images,
                       list(stim.labels or ()), reps if reps is not None else "", list(order))
    return Dataset(name, stim, digest, responses=responses, area_order=order)


def rdms_dataset(name: str, images: Any, rdms: Any, *, distance: str, stimulus_ids: Any = None, labels: Any = None,
                 area_order: Any = None, headline_areas: Any = None):
    """An RDM dataset from arrays, for :func:`run`.

    Parameters
    ----------
    name : str
    images : ndarray, (n_stimuli, height, width[, 3]) uint8
    rdms : dict of area -> ndarray, (n_subjects, n_stimuli, n_stimuli)
        Symmetric dissimilarities with a zero diagonal, rows in stimulus order.
    distance : str
        How they were made (``"correlation"`` for 1 - Pearson, ...); model RDMs use the same.
    stimulus_ids, labels : sequence of str, optional
    area_order, headline_areas : sequence of str, optional
        Default: the areas in the order given, all of them in the headline.
    """
    import numpy as np

    from framework.types import BrainRDMs, Dataset, digest_of

    stacks = {}
    for area, value in dict(rdms).items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise ConfigError(f"RDMs of area '{area}' must be (n_subjects, n, n) or (n, n), got {arr.shape}.")
        stacks[str(area)] = arr
    if not stacks:
        raise ConfigError("rdms is empty; give at least one area.")
    n = next(iter(stacks.values())).shape[1]
    stim = _stimuli(stimulus_ids, images, labels, n)
    order = tuple(area_order) if area_order is not None else tuple(stacks)
    brain = BrainRDMs(stacks, stim.ids, order, distance=distance,
                      headline_areas=None if headline_areas is None else tuple(headline_areas))
    digest = digest_of("rdms-v1", name, list(stacks), *stacks.values(), list(stim.ids), stim.images, distance,
                       list(order), list(headline_areas or ()))
    return Dataset(name, stim, digest, rdms=brain, area_order=order)


@dataclass
class HeldEpochs:
    """Zero-argument callable returning a copy of one subject's epochs (the ``Dataset.epochs``
    contract): a private copy is taken when the dataset is built, so later changes to the caller's
    object cannot make the digest stale, and each call hands out a fresh copy a signal may change."""

    epochs: Any
    subject: str

    def __call__(self) -> Any:
        return self.epochs.copy()


def _site_rows(sites: Any) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], Any]]:
    """(subject, channel) -> area, and -> (3,) coordinates in mm when the table has x, y, z."""
    import numpy as np

    from framework.recordings import SITE_COLUMNS, coordinate_columns

    if hasattr(sites, "to_dict") and hasattr(sites, "columns"):     # a pandas DataFrame
        columns = {str(c): list(sites[c]) for c in sites.columns}
    elif isinstance(sites, Mapping):
        columns = {str(k): list(v) for k, v in sites.items()}
    else:
        rows = list(sites)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise ConfigError("sites must be a pandas DataFrame, a dict of columns or a list of dicts with "
                              f"columns {', '.join(SITE_COLUMNS)} (and optionally x, y, z in mm).")
        columns = {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}
    xyz = coordinate_columns(list(columns), what="sites", unknown="NaN", error=ConfigError,
                             layout="Give one row per recording channel with name (the channel name in the "
                                    "epochs), subject and area.")
    areas: dict[tuple[str, str], str] = {}
    coords: dict[tuple[str, str], Any] = {}
    for j, (name, subject, area) in enumerate(zip(columns["name"], columns["subject"], columns["area"])):
        key = (str(subject), str(name))
        if key in areas:
            raise ConfigError(f"sites has channel '{name}' of subject '{subject}' twice (rows {j} and earlier); "
                              "give each channel one row.")
        areas[key] = str(area)
        if xyz:
            coords[key] = np.array([float(columns[c][j]) for c in ("x", "y", "z")], dtype=np.float64)
    return areas, coords


def epochs_dataset(name: str, images: Any, epochs: Mapping[str, Any], sites: Any, *, stimulus_ids: Any = None,
                   labels: Any = None, area_order: Any = None):
    """An epochs dataset from ``mne.Epochs`` held in Python, for :func:`framework.run`.

    Scored like a file dataset of kind ``epochs``: the signals (band power, ...) run on the
    epochs; the digest covers every sample, so results are keyed by content and reruns resume.

    Parameters
    ----------
    name : str
        Lower case, no spaces; keys the results with the digest.
    images : ndarray, (n_stimuli, height, width[, 3]) uint8
    epochs : dict of subject -> mne.BaseEpochs
        One subject's recordings each (any sampling rate; times in s relative to stimulus onset).
        The stimulus of every epoch is ``epochs.metadata["stimulus"]`` (a stimulus id), or the
        name of its event in ``event_id``. Site channels are those of type seeg, ecog, eeg or
        dbs not marked bad; other channels are ignored.
    sites : pandas.DataFrame, dict of columns or list of dicts
        One row per site channel: ``name`` (channel name in the epochs), ``subject``, ``area``
        (e.g. Brodmann ``"17"``); optionally ``x, y, z`` in mm. As the ``file`` dataset's sites table.
    stimulus_ids, labels : sequence of str, (n_stimuli,), optional
        Default ids ``stim0000``, ``stim0001``, ... in image order.
    area_order : sequence of str, optional
        The areas along the hierarchy (default the ventral-stream Brodmann order).

    Raises
    ------
    ConfigError
        Wrong argument types or shapes, a malformed sites table.
    DataError
        A channel missing from the sites table, epochs naming an unknown stimulus, a stimulus
        never shown, no site channel, NaN/inf or flat channels.
    """
    import mne
    import numpy as np

    from framework.recordings import SITE_CHANNEL_TYPES, check_channels_finite, few, site_channels
    from framework.types import DEFAULT_AREA_ORDER, Dataset, EpochsMeta, SiteTable, digest_of, epochs_stimulus_ids

    if not isinstance(epochs, Mapping) or not epochs:
        raise ConfigError("epochs must be a non-empty dict of subject -> mne.Epochs.")
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ConfigError(f"images must be an array (n_stimuli, height, width[, 3]), got shape {images.shape}.")
    stim = _stimuli(stimulus_ids, images, labels, images.shape[0])
    known = set(stim.ids)
    areas, coords = _site_rows(sites)
    held: dict[str, HeldEpochs] = {}
    metas: dict[str, EpochsMeta] = {}
    names: list[str] = []
    subjects: list[str] = []
    site_areas: list[str] = []
    site_coords: list[Any] = []
    parts: list[Any] = []
    shown: set[str] = set()
    for subject, ep in epochs.items():
        subject = str(subject)
        where = f"The epochs of subject '{subject}'"
        if not isinstance(ep, mne.BaseEpochs):
            raise ConfigError(f"epochs['{subject}'] is a {type(ep).__name__}, not mne.Epochs; give an mne.Epochs "
                              "(e.g. mne.EpochsArray(data, info, metadata=...)) per subject.")
        good = site_channels(ep.ch_names, ep.get_channel_types(), ep.info["bads"])
        if not good:
            raise DataError(f"{where} have no good site channels (types {', '.join(SITE_CHANNEL_TYPES)}, not "
                            "marked bad); set the channel types (epochs.set_channel_types) or leave the subject out.")
        missing = [c for c in good if (subject, c) not in areas]
        if missing:
            raise DataError(f"{where} have {len(missing)} channel(s) missing from sites: {few(missing)}. Add a row "
                            "(name, subject, area) per channel, or mark the channels bad (epochs.info['bads']).")
        ids = epochs_stimulus_ids(ep, f"subject '{subject}'")
        if not ids:
            raise DataError(f"{where} hold no epochs; leave the subject out.")
        unknown = sorted({s for s in ids if s not in known})
        if unknown:
            raise DataError(f"{where} name {len(unknown)} stimulus id(s) not among stimulus_ids: {few(unknown)}."
                            f"{did_you_mean(unknown[0], stim.ids)} Fix metadata['stimulus'] or stimulus_ids.")
        copy = ep.copy().load_data().pick(good)
        data = copy.get_data()
        check_channels_finite(data, good, subject, where=where, save_hint="")
        held[subject] = HeldEpochs(copy, subject)
        metas[subject] = EpochsMeta(sfreq=float(copy.info["sfreq"]), tmin_ms=float(copy.tmin) * 1e3,
                                    tmax_ms=float(copy.tmax) * 1e3, n_epochs=len(ids), channels=tuple(good))
        shown.update(ids)
        for ch in good:
            names.append(f"{subject}/{ch}")
            subjects.append(subject)
            site_areas.append(areas[(subject, ch)])
            if coords:
                site_coords.append(coords[(subject, ch)])
        parts += [subject, list(good), float(copy.info["sfreq"]), float(copy.tmin), ids, data]
    never = [s for s in stim.ids if s not in shown]
    if never:
        raise DataError(f"{len(never)} stimulus id(s) are never shown in any epochs: {few(never)}. Every stimulus "
                        "needs at least one epoch: give only the shown stimuli's images, or add the epochs.")
    site_table = SiteTable(tuple(names), tuple(subjects), tuple(site_areas),
                           np.vstack(site_coords) if site_coords else None)
    order = tuple(area_order) if area_order is not None else DEFAULT_AREA_ORDER
    digest = digest_of("epochs-v1", name, *parts, names, site_areas, site_table.coords if coords else "",
                       list(stim.ids), stim.images, list(stim.labels or ()), list(order))
    return Dataset(name, stim, digest, epochs=held, sites=site_table, area_order=order, epochs_meta=metas,
                   description=f"In-memory MNE epochs of {len(held)} subject(s), {len(names)} sites")
