"""A dataset described by a TOML file: MNE epochs, precomputed responses or RDMs.

The format is documented in ``docs/datasets.md``. Relative paths in the TOML
are resolved against the TOML file's own folder. :meth:`FileDataset.load` checks
everything a run could later trip over - file presence and formats, keys, shapes,
stimulus-id coverage, that every stimulus image decodes and that every epochs file
reads whole without NaN/inf or flat site channels - so bad input stops before any
computation, with one :class:`~framework.errors.DataError` line. The expensive
verdicts (image decoding, epochs samples) are remembered per file version in
``file-checks.json`` beside ``file-digests.json``, so an unchanged file is read once.
"""
from __future__ import annotations

import glob
import logging
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.contracts import DatasetPlugin
from framework.errors import ConfigError, DataError, did_you_mean
from framework.types import (
    DEFAULT_AREA_ORDER,
    BrainRDMs,
    Dataset,
    EpochsMeta,
    Responses,
    SiteTable,
    StimulusSet,
    digest_of,
)
from framework.validation import check_option
from plugins.datasets import _readers as rd

log = logging.getLogger("framework.datasets.files")

KINDS = ("epochs", "responses", "rdms")
_SECTIONS = {"dataset": ("name", "description", "kind", "area_order"),
             "stimuli": ("folder", "ids", "labels"),
             "recordings": ("files", "sites"),
             "responses": ("file",),
             "rdms": ("distance", "headline_areas")}
_RDM_ENTRY_KEYS = ("file", "key", "field", "index", "mean_over", "species", "kind")
_LABEL_KEYS = ("file", "id_column", "label_column")
_few = rd._few
#: Fewest stimuli a dataset may have: every metric compares stimuli pairwise (an RDM of 2
#: stimuli has one entry, whose correlation with anything is undefined).
MIN_STIMULI = 3
#: Distances that cannot be negative; a negative entry in such an RDM suggests a similarity matrix.
NONNEGATIVE_DISTANCES = ("correlation", "euclidean", "sqeuclidean", "cosine", "seuclidean", "cityblock")


class FileDataset(DatasetPlugin):
    """Dataset read from a TOML description and the files it points at.

    Parameters
    ----------
    path : str or Path
        The dataset TOML file.
    cache_dir : str or Path, optional
        Folder for ``file-digests.json`` and ``file-checks.json``, which remember each
        referenced file's SHA-256 and the verdicts of the expensive checks (images
        decode, epochs samples are finite and not flat) by (path, size, mtime_ns), so
        an unchanged file is read once. Without it, nothing is remembered between loads.

    Examples
    --------
    >>> ds = FileDataset(path="datasets/algonauts2019-92.toml").load()  # doctest: +SKIP
    >>> ds.kind, ds.rdms.rdms["IT"].shape  # doctest: +SKIP
    ('rdms', (15, 92, 92))
    """

    plugin_version = "1"

    def __init__(self, *, path: str | Path, cache_dir: str | Path | None = None, **params: Any) -> None:
        self._init_params(params, "file")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError(f"Dataset 'file' needs path = a dataset TOML file, got {path!r}; "
                              "pass --dataset PATH/TO/dataset.toml.")
        self.path = Path(path)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    # -- public ---------------------------------------------------------------------------------
    def load(self) -> Dataset:
        """Read and check the TOML and every file it references.

        Returns
        -------
        Dataset
            ``epochs`` (with ``sites`` and ``epochs_meta``), ``responses`` or ``rdms`` set
            according to ``[dataset] kind``; ``digest`` covers the TOML text and the bytes
            of every referenced file.

        Raises
        ------
        ConfigError
            The TOML is malformed or has unknown or ill-typed keys.
        DataError
            A referenced file is missing or unreadable, or its content is not what the
            TOML says (every message is one line naming the file and the fix).
        """
        self._checks = rd.FileChecks(self.cache_dir)
        try:
            return self._load()
        finally:
            self._checks.save()  # verdicts of the files that passed, even when a later one failed

    def _load(self) -> Dataset:
        raw, spec = self._read_toml()
        self._files: list[tuple[str, Path]] = []  # (role, path) for the digest, in a fixed order
        meta = self._table(spec, "dataset", required=True)
        kind = meta.get("kind")
        if kind is None:
            raise ConfigError(f"'{self.path}': [dataset] lacks kind; set kind = \"epochs\", \"responses\" or \"rdms\".")
        check_option(f"'{self.path}': [dataset] kind", kind, KINDS)
        for section in spec:
            if section in {"recordings", "responses", "rdms"} and section != {"epochs": "recordings"}.get(kind, kind):
                raise ConfigError(f"'{self.path}': section [{section}] does not belong to a dataset of kind "
                                  f"'{kind}'; remove it or change [dataset] kind.")
        name = self._get(meta, "dataset", "name", str, default=self.path.stem)
        if not name.strip():
            raise ConfigError(f"'{self.path}': [dataset] name is empty; give the name shown on the leaderboard "
                              "or remove the key (the file name is used).")
        description = self._get(meta, "dataset", "description", str, default="")
        area_order_given = "area_order" in meta
        area_order = tuple(self._get_str_list(meta, "dataset", "area_order", default=list(DEFAULT_AREA_ORDER)))
        twice = sorted({a for a in area_order if area_order.count(a) > 1})
        if twice:
            raise ConfigError(f"'{self.path}': [dataset] area_order lists {', '.join(map(repr, twice))} more than "
                              "once; list each area once, early to late.")

        stimuli = self._stimuli(self._table(spec, "stimuli", required=True))
        common: dict[str, Any] = {"name": name, "stimuli": stimuli, "description": description}
        if kind == "epochs":
            epochs, sites, epochs_meta = self._epochs(self._table(spec, "recordings", required=True), stimuli)
            self._check_area_order(sites.areas, area_order, area_order_given, self._files_of("sites"), sites.names)
            common.update(epochs=epochs, sites=sites, area_order=area_order, epochs_meta=epochs_meta)
        elif kind == "responses":
            responses = self._responses(self._table(spec, "responses", required=True), stimuli, area_order)
            self._check_area_order(responses.sites.areas, area_order, area_order_given, self._files_of("responses"),
                                   responses.sites.names)
            common.update(responses=responses, area_order=area_order)
        else:
            rdms = self._rdms(self._table(spec, "rdms", required=True), stimuli,
                              area_order if area_order_given else None)
            common.update(rdms=rdms, area_order=rdms.area_order)
        common["digest"] = self._digest(raw)
        dataset = Dataset(**common)
        log.info("Loaded dataset '%s' (%s, %d stimuli) from '%s'.", name, kind, len(stimuli), self.path)
        return dataset

    # -- TOML helpers ---------------------------------------------------------------------------
    def _read_toml(self) -> tuple[bytes, dict[str, Any]]:
        if not self.path.is_file():
            state = "is a folder" if self.path.is_dir() else "does not exist"
            raise DataError(f"Dataset file '{self.path}' {state}; pass the path of a dataset TOML file "
                            "(see docs/datasets.md).")
        raw = self.path.read_bytes()
        try:
            spec = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"Dataset file '{self.path}' is not UTF-8 text ({exc}); save it as UTF-8.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Dataset file '{self.path}' is not valid TOML: {exc}. Fix that line.") from None
        self._check_keys(spec, tuple(_SECTIONS), "the top level (sections)")
        return raw, spec

    def _check_keys(self, table: dict[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise ConfigError(f"'{self.path}': unknown key '{key}' in {where}.{did_you_mean(key, allowed)} "
                                  f"Allowed: {', '.join(allowed)}.")

    def _table(self, spec: dict[str, Any], section: str, *, required: bool) -> dict[str, Any]:
        table = spec.get(section)
        if table is None:
            if required:
                raise ConfigError(f"'{self.path}' lacks the [{section}] section; add it (see docs/datasets.md).")
            return {}
        if not isinstance(table, dict):
            raise ConfigError(f"'{self.path}': '{section}' must be a [{section}] table, got {table!r}.")
        if section != "rdms":
            self._check_keys(table, _SECTIONS[section], f"[{section}]")
        return table

    def _get(self, table: dict[str, Any], section: str, key: str, types: type | tuple[type, ...],
             *, default: Any = None, required: bool = False) -> Any:
        if key not in table:
            if required:
                raise ConfigError(f"'{self.path}': [{section}] lacks '{key}'; add it (see docs/datasets.md).")
            return default
        value = table[key]
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join({"str": "string", "dict": "table", "list": "list", "int": "integer"}.get(
                t.__name__, t.__name__) for t in allowed)
            raise ConfigError(f"'{self.path}': [{section}] {key} must be a {names}, got {value!r}.")
        return value

    def _get_str_list(self, table: dict[str, Any], section: str, key: str, *, default: list[str]) -> list[str]:
        value = table.get(key, default)
        if not isinstance(value, list) or not value or not all(isinstance(v, (str, int)) for v in value):
            raise ConfigError(f"'{self.path}': [{section}] {key} must be a non-empty list of strings, got {value!r}.")
        return [str(v) for v in value]

    def _resolve(self, value: str) -> Path:
        return Path(os.path.normpath(self.path.parent / value))

    def _files_of(self, role: str) -> Path:
        """The file read for ``role`` (``"sites"``, ``"responses"``); the TOML file if none."""
        return next((p for r, p in self._files if r == role), self.path)

    def _check_area_order(self, site_areas: Sequence[str], area_order: tuple[str, ...], given: bool,
                          source: Path, site_names: Sequence[str] = ()) -> None:
        """Warn when the sites' areas and ``area_order`` do not meet (metric headlines average area_order areas).

        ``source`` is the file the site areas come from (sites table or responses file), named in the warnings.
        """
        present = sorted({a for a in site_areas if a != "n/a"})
        if not present:
            return
        order_text = f"{', '.join(area_order)}{'' if given else ', the default'}"
        if not any(a in area_order for a in present):
            hint = did_you_mean(present[0], area_order) if given else ""
            log.warning("'%s': no site area (%s) is in [dataset] area_order (%s).%s Metric headlines then fall "
                        "back to every area and the alignment metric has no areas to order; set area_order = "
                        "[...] in [dataset], early to late.", self.path, _few(present, 8), order_text, hint)
            return
        outside = [a for a in present if a not in area_order]
        if outside:
            n_sites = sum(1 for a in site_areas if a in outside)
            first = [n for n, a in zip(site_names, site_areas) if a == outside[0]][:1]
            example = f", e.g. '{first[0]}'" if first else ""
            log.warning("'%s': %d site(s) in '%s' have area(s) %s, which [dataset] area_order (%s) does not "
                        "list%s; they are left out of the area-ordered metric headlines and the alignment "
                        "metric.%s Write the area as area_order spells it, or add it to area_order if the "
                        "sites should count.", self.path, n_sites, source, _few(outside, 8), order_text, example,
                        did_you_mean(outside[0], area_order))
        if given:
            absent = [a for a in area_order if a not in present]
            if absent:
                log.warning("'%s': [dataset] area_order names %s, which no site has (site areas: %s).%s Fix "
                            "area_order if that is a typo.", self.path, _few(absent), _few(present, 8),
                            did_you_mean(absent[0], present))

    # -- stimuli --------------------------------------------------------------------------------
    def _stimuli(self, table: dict[str, Any]) -> StimulusSet:
        folder = self._resolve(self._get(table, "stimuli", "folder", str, required=True))
        ids_value = self._get(table, "stimuli", "ids", (str, list))
        ids: list[str] | None = None
        if isinstance(ids_value, str):
            ids_file = self._resolve(ids_value)
            ids = rd.read_id_list(ids_file, source=self.path)
            self._files.append(("stimulus-ids", ids_file))
        elif ids_value is not None:
            ids = self._get_str_list(table, "stimuli", "ids", default=[])
        stim_ids, paths = rd.read_stimulus_folder(folder, ids, source=self.path)
        if len(stim_ids) < MIN_STIMULI:
            raise DataError(f"'{self.path}': the stimulus set has {len(stim_ids)} stimulus/stimuli "
                            f"({_few(stim_ids)}); at least {MIN_STIMULI} are needed, since every metric compares "
                            "stimuli pairwise. Add the other stimulus images (or fix [stimuli] ids).")
        rd.check_stimulus_images(stim_ids, paths, checks=self._checks, source=self.path)
        self._files.extend(("stimulus", p) for p in paths)
        labels = None
        lab = self._get(table, "stimuli", "labels", (str, dict))
        # images of the folder left out by [stimuli] ids: label rows for them are expected, not stray
        left_out = ({p.stem for p in folder.iterdir() if p.suffix.lower() in rd.IMAGE_SUFFIXES} - set(stim_ids)
                    if lab is not None and ids is not None else set())
        if isinstance(lab, str):
            lab_file = self._resolve(lab)
            labels = rd.read_labels(lab_file, stim_ids, source=self.path, other_images=left_out)
            self._files.append(("labels", lab_file))
        elif isinstance(lab, dict):
            self._check_keys(lab, _LABEL_KEYS, "[stimuli] labels")
            lab_file = self._resolve(self._get(lab, "stimuli.labels", "file", str, required=True))
            id_col = self._get(lab, "stimuli.labels", "id_column", str, required=True)
            label_col = self._get(lab, "stimuli.labels", "label_column", str, required=True)
            labels = rd.read_labels(lab_file, stim_ids, id_column=id_col, label_column=label_col, source=self.path,
                                    other_images=left_out)
            self._files.append(("labels", lab_file))
        return StimulusSet(ids=stim_ids, paths=paths, labels=labels)

    # -- epochs ---------------------------------------------------------------------------------
    def _recording_files(self, table: dict[str, Any]) -> dict[str, Path]:
        files = self._get(table, "recordings", "files", (str, dict), required=True)
        if isinstance(files, dict):
            out = {}
            for subject, rel in files.items():
                if not isinstance(rel, str):
                    raise ConfigError(f"'{self.path}': [recordings] files.{subject} must be a file name, got {rel!r}.")
                if not str(subject).strip() or "/" in str(subject):
                    raise ConfigError(f"'{self.path}': [recordings] files has subject {str(subject)!r}; a subject "
                                      "must be a non-empty name without '/' (site names are '<subject>/<channel>').")
                out[str(subject)] = rd.require_file(self._resolve(rel), f"Epochs file of subject '{subject}'",
                                                    source=self.path)
            if not out:
                raise ConfigError(f"'{self.path}': [recordings] files is empty; map each subject to its -epo.fif file.")
            by_file: dict[Path, str] = {}
            for subject, path in out.items():
                first = by_file.setdefault(path.resolve(), subject)
                if first != subject:
                    raise DataError(f"'{self.path}': [recordings] files gives the same file '{path}' to subjects "
                                    f"'{first}' and '{subject}', which would count its channels twice; give each "
                                    "subject its own file.")
            return out
        if not files.strip():
            raise ConfigError(f"'{self.path}': [recordings] files is an empty pattern; give a glob such as "
                              "\"*-epo.fif\" or a table subject -> file.")
        found = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(self.path.parent)), files), recursive=True)]
        matches = sorted(p for p in found if p.is_file())
        if not matches:
            folders = [p for p in found if p.is_dir()]
            what = f"only folders ({_few([p.name for p in folders])})" if folders else "no file"
            raise DataError(f"'{self.path}': [recordings] files = '{files}' matches {what} in "
                            f"'{self.path.parent}'; fix the pattern (relative to the TOML file folder) so it "
                            "matches the -epo.fif files.")
        out = {}
        for p in matches:
            subject = rd.subject_from_filename(p)
            if subject in out:
                raise DataError(f"'{self.path}': [recordings] files = '{files}' gives subject '{subject}' twice "
                                f"('{out[subject].name}', '{p.name}'); map subjects to files explicitly.")
            out[subject] = Path(os.path.normpath(p))
        return out

    def _epochs(self, table: dict[str, Any], stimuli: StimulusSet
                ) -> tuple[dict[str, rd.EpochsLoader], SiteTable, dict[str, EpochsMeta]]:
        files = self._recording_files(table)
        sites_path = self._resolve(self._get(table, "recordings", "sites", str, required=True))
        site_rows = rd.read_sites_tsv(sites_path, source=self.path)
        known = set(stimuli.ids)
        shown: set[str] = set()
        loaders: dict[str, rd.EpochsLoader] = {}
        metas: dict[str, EpochsMeta] = {}
        names: list[str] = []
        subjects: list[str] = []
        areas: list[str] = []
        coords: list[np.ndarray] = []
        for subject, path in files.items():
            fingerprint = rd.file_fingerprint(path)
            header = rd.read_epochs_checked(path, source=self.path, checks=self._checks)
            good = header.good_channels
            missing = [c for c in good if (subject, c) not in site_rows.areas]
            if missing:
                hint = "" if subject in site_rows.subjects() else (
                    f" The sites table has no rows for subject '{subject}' at all (subjects there: "
                    f"{_few(sorted(site_rows.subjects()))}).")
                raise DataError(f"Epochs file '{path}' (subject '{subject}') has {len(missing)} channel(s) missing "
                                f"from the sites table '{sites_path}': {_few(missing)}.{hint} Add a row "
                                "(name, subject, area) per channel, or mark the channels bad in the file.")
            unknown = sorted({s for s in header.stimulus_ids if s not in known}, key=rd._natural_key)
            if unknown and header.ids_from == "events":
                raise DataError(f"Epochs file '{path}' (subject '{subject}') has no metadata['stimulus'] column "
                                "(no metadata at all), so the stimulus ids were taken from its event names, and "
                                f"{len(unknown)} of them are not stimulus ids: {_few(unknown)}. Fix: set "
                                "epochs.metadata = pandas.DataFrame({'stimulus': [...]}) with the [stimuli] id "
                                "of every epoch and save again (or name the events by stimulus id in event_id).")
            if unknown:
                raise DataError(f"Epochs file '{path}' (subject '{subject}') names {len(unknown)} stimulus id(s) "
                                f"not in the stimulus set: {_few(unknown)}.{did_you_mean(unknown[0], known)} "
                                "metadata['stimulus'] must hold ids of [stimuli] (image file names without "
                                "extension); fix the metadata or add the images.")
            if not header.stimulus_ids:
                raise DataError(f"Epochs file '{path}' (subject '{subject}') holds no epochs; remove it.")
            if not good:
                raise DataError(f"Epochs file '{path}' (subject '{subject}') has no good site channels (types "
                                f"{', '.join(rd.SITE_CHANNEL_TYPES)}, not marked bad); set the channel types "
                                "(epochs.set_channel_types) or remove the file from [recordings] files.")
            shown.update(header.stimulus_ids)
            loaders[subject] = rd.EpochsLoader(path=path, subject=subject, channels=good, fingerprint=fingerprint)
            metas[subject] = header.meta()
            for ch in good:
                names.append(f"{subject}/{ch}")
                subjects.append(subject)
                areas.append(site_rows.areas[(subject, ch)])
                if site_rows.coords:
                    coords.append(site_rows.coords[(subject, ch)])
            self._files.append((f"epochs:{subject}", path))
        never = [s for s in stimuli.ids if s not in shown]
        if never:
            raise DataError(f"{len(never)} stimulus id(s) of the stimulus set are never shown in any recording of "
                            f"'{self.path}': {_few(never)}. Every stimulus needs at least one epoch: list only the "
                            "shown stimuli in [stimuli] ids (or remove their images), or add the recordings.")
        self._files.append(("sites", sites_path))
        sites = SiteTable(tuple(names), tuple(subjects), tuple(areas),
                          np.vstack(coords) if coords else None)
        return loaders, sites, metas

    # -- responses ------------------------------------------------------------------------------
    def _match_stimuli(self, file_ids: np.ndarray | None, n_rows: int, stimuli: StimulusSet,
                       path: Path, what: str) -> np.ndarray:
        """Row index putting the file's rows in stimulus-set order, (n_stimuli,) int64."""
        n = len(stimuli)
        if file_ids is None:
            if n_rows != n:
                raise DataError(f"{what} in '{path}' has {n_rows} stimulus rows but the stimulus set has {n} "
                                "stimuli; store 'stimulus_ids' with the rows, or fix [stimuli] folder/ids.")
            return np.arange(n)
        ids = [str(s) for s in np.asarray(file_ids).reshape(-1)]
        if len(ids) != n_rows:
            raise DataError(f"'{path}': stimulus_ids has {len(ids)} entries but {what} has {n_rows} rows; "
                            "give one id per row.")
        if len(set(ids)) != len(ids):
            raise DataError(f"'{path}': stimulus_ids has duplicates; give each row a unique stimulus id.")
        pos = {s: i for i, s in enumerate(ids)}
        known = set(stimuli.ids)
        extra = [s for s in ids if s not in known]
        if extra:
            raise DataError(f"'{path}': {len(extra)} stimulus id(s) are not in the stimulus set: {_few(extra)}."
                            f"{did_you_mean(extra[0], stimuli.ids)} Fix stimulus_ids or [stimuli].")
        absent = [s for s in stimuli.ids if s not in pos]
        if absent:
            raise DataError(f"'{path}': {len(absent)} stimulus id(s) of the stimulus set have no row in {what}: "
                            f"{_few(absent)}. List only these stimuli in [stimuli] ids, or add their rows.")
        return np.array([pos[s] for s in stimuli.ids], dtype=np.int64)

    def _responses(self, table: dict[str, Any], stimuli: StimulusSet, area_order: tuple[str, ...]) -> Responses:
        path = self._resolve(self._get(table, "responses", "file", str, required=True))
        arrays = rd.read_responses_npz(path, source=self.path)
        self._files.append(("responses", path))
        data = arrays["responses"]
        if data.ndim != 2 or data.dtype.kind not in "fiu":
            raise DataError(f"'{path}': 'responses' must be a numeric (n_stimuli, n_sites) array, got shape "
                            f"{data.shape} dtype {data.dtype}.")
        if not np.isfinite(data).all():
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
            raise DataError(f"'{path}': 'responses' has NaN/inf values (first at (stimulus, site) = {first}); "
                            "average over available repetitions or drop the site.")
        n_rows, n_sites = data.shape
        if n_sites == 0:
            raise DataError(f"'{path}': 'responses' has shape {data.shape}, no site; expected (n_stimuli, n_sites) "
                            "with at least one site. Save the responses with one column per site.")
        order = self._match_stimuli(arrays.get("stimulus_ids"), n_rows, stimuli, path, "'responses'")
        data32 = self._as_float32(data, path, "responses")
        site_cols = {}
        for key in ("site_names", "site_areas", "site_subjects"):
            if key not in arrays:
                if key == "site_subjects":
                    site_cols[key] = ("n/a",) * n_sites
                    continue
                raise DataError(f"Responses file '{path}' lacks key '{key}' (one entry per site, {n_sites}); "
                                f"keys found: {_few(list(arrays), 20)}. Save it with numpy.savez.")
            col = np.asarray(arrays[key]).reshape(-1)
            if col.shape != (n_sites,):
                raise DataError(f"'{path}': '{key}' has {col.size} entries, expected {n_sites} (one per site, the "
                                "columns of 'responses').")
            site_cols[key] = tuple(str(v).strip() for v in col)
            if key != "site_names":  # missing areas/subjects read as in the sites TSV
                site_cols[key] = tuple("n/a" if v.lower() in rd._MISSING else v for v in site_cols[key])
            elif any(not v for v in site_cols[key]):
                raise DataError(f"'{path}': 'site_names' has {sum(not v for v in site_cols[key])} empty name(s); "
                                "give every site a name.")
        if len(set(site_cols["site_names"])) != n_sites:
            raise DataError(f"'{path}': 'site_names' has duplicates; site names must be unique.")
        coords = None
        if "site_coords" in arrays:
            coords = np.asarray(arrays["site_coords"])
            if coords.dtype.kind not in "fiu":
                raise DataError(f"'{path}': 'site_coords' has dtype {coords.dtype}; expected numbers in mm, (n_sites, "
                                "3), NaN where unknown. Save np.asarray(coords, dtype=float), or leave the key out.")
            coords = coords.astype(np.float64)
            if np.isinf(coords).any():
                raise DataError(f"'{path}': 'site_coords' has infinite values; give coordinates in mm, NaN where "
                                "unknown.")
            if coords.shape != (n_sites, 3):
                raise DataError(f"'{path}': 'site_coords' must be (n_sites, 3) = ({n_sites}, 3) in mm, got "
                                f"{coords.shape}.")
        reps = None
        if "repetitions" in arrays:
            reps = np.asarray(arrays["repetitions"])
            if reps.ndim != 3 or reps.shape[1:] != data.shape or reps.dtype.kind not in "fiu":
                raise DataError(f"'{path}': 'repetitions' must be numeric (n_repetitions, {n_rows}, {n_sites}), "
                                f"got shape {reps.shape} dtype {reps.dtype}.")
            if np.isinf(reps).any():
                raise DataError(f"'{path}': 'repetitions' has infinite values; use NaN for missing repetitions.")
            reps = np.ascontiguousarray(self._as_float32(reps, path, "repetitions")[:, order])
        names = site_cols["site_names"]
        spread = data32.max(axis=0) - data32.min(axis=0)
        constant = np.flatnonzero(spread == 0)
        if constant.size == n_sites:
            raise DataError(f"'{path}': every site of 'responses' is constant over the stimuli (e.g. site "
                            f"'{names[0]}' = {data32[0, 0]:g} for all {n_rows}), so no metric can relate it to a "
                            "model; check that the right array was saved (one row per stimulus, one column per site).")
        if constant.size:
            log.warning("'%s': %d of %d site(s) of 'responses' are constant over the stimuli (%s); their correlation "
                        "with any model is undefined, so metrics leave them out. Drop them from the file to "
                        "silence this.", path, constant.size, n_sites, _few([names[i] for i in constant]))
        sites = SiteTable(names, site_cols["site_subjects"], site_cols["site_areas"], coords)
        return Responses(data=np.ascontiguousarray(data32[order]), sites=sites,
                         stimulus_ids=stimuli.ids, repetitions=reps, area_order=area_order,
                         info={"source": str(path)})

    @staticmethod
    def _as_float32(values: np.ndarray, path: Path, key: str) -> np.ndarray:
        """``values`` as float32, refusing finite values beyond the float32 range (they would become inf)."""
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.asarray(values, dtype=np.float32)
        overflow = np.isfinite(values) & ~np.isfinite(out)
        if overflow.any():
            first = tuple(int(i) for i in np.argwhere(overflow)[0])
            raise DataError(f"'{path}': '{key}' has values beyond the float32 range (|x| > 3.4e38, first "
                            f"{float(np.asarray(values)[first]):.3g} at index {first}), which responses are stored "
                            "as; rescale the values (e.g. to standard units) and save again.")
        return out

    # -- rdms -----------------------------------------------------------------------------------
    def _rdms(self, table: dict[str, Any], stimuli: StimulusSet, area_order: tuple[str, ...] | None) -> BrainRDMs:
        distance = self._get(table, "rdms", "distance", str, default="correlation").strip()
        if not distance:
            raise ConfigError(f"'{self.path}': [rdms] distance is empty; name how the RDMs were made, e.g. "
                              "distance = \"correlation\" (1 - Pearson), or remove it for that default.")
        from framework.numerics.rdm import DISTANCES  # the distances model RDMs can be made with

        hint = did_you_mean(distance, DISTANCES) if distance not in DISTANCES else ""
        if hint:
            log.warning("'%s': [rdms] distance = '%s' is not a distance model RDMs can be made with (%s).%s The rsa "
                        "metric will refuse it unless --metric-param rsa.distance=... is given; fix the spelling if "
                        "it is a typo.", self.path, distance, ", ".join(DISTANCES), hint)
        settings = _SECTIONS["rdms"]
        entries = {k: v for k, v in table.items() if k not in settings}
        if not entries:
            raise ConfigError(f"'{self.path}': [rdms] names no area; add e.g. "
                              'IT = {file = "it.npz", key = "rdms"}.')
        n = len(stimuli)
        rdms: dict[str, np.ndarray] = {}
        dropped: dict[str, list[int]] = {}
        species: dict[str, str] = {}
        kinds: dict[str, str] = {}
        for area, entry in entries.items():
            sec = f"rdms.{area}"
            if not isinstance(entry, dict):
                raise ConfigError(f"'{self.path}': [rdms] {area} must be a table like {{file = \"x.npz\", key = "
                                  f"\"rdms\"}}, got {entry!r}.{did_you_mean(area, settings)}")
            self._check_keys(entry, _RDM_ENTRY_KEYS, f"[rdms] {area}")
            path = self._resolve(self._get(entry, sec, "file", str, required=True))
            key = self._get(entry, sec, "key", str)
            field = self._get(entry, sec, "field", str)
            for attr, store in (("species", species), ("kind", kinds)):
                value = self._get(entry, sec, attr, str)
                if value is not None:
                    if not value.strip():
                        example = '"human"' if attr == "species" else '"fMRI"'
                        raise ConfigError(f"'{self.path}': [{sec}] {attr} is empty; name it (e.g. {example}) "
                                          "or remove it.")
                    store[area] = value.strip()
            index = entry.get("index")
            if index is not None and not (isinstance(index, int) and not isinstance(index, bool) or (
                    isinstance(index, list) and index and all(isinstance(i, int) for i in index))):
                raise ConfigError(f"'{self.path}': [{sec}] index must be an integer or a list of integers, "
                                  f"got {index!r}.")
            mean_over = entry.get("mean_over", [])
            mean_over = [mean_over] if isinstance(mean_over, int) and not isinstance(mean_over, bool) else mean_over
            if not isinstance(mean_over, list) or not all(isinstance(i, int) for i in mean_over):
                raise ConfigError(f"'{self.path}': [{sec}] mean_over must be an integer or a list of integers "
                                  f"(leading axes to average), got {entry.get('mean_over')!r}.")
            array = rd.read_rdm_array(path, key=key, field=field, source=self.path)
            what = (f"RDMs of area '{area}' ('{path}'" + (f", key {key!r}" if key else "")
                    + (f", field {field!r}" if field else "") + ")")
            rdms[area] = self._usable_rdms(rd.to_rdm_stack(array, n, what=what, index=index, mean_over=mean_over),
                                           area, what, distance, dropped)
            self._files.append((f"rdms:{area}", path))
        areas = list(rdms)
        for i, first in enumerate(areas):
            same = [b for b in areas[i + 1:] if np.array_equal(rdms[first], rdms[b])]
            if same:
                log.warning("'%s': [rdms] areas '%s' and %s have identical RDMs; if that is not intended, fix the "
                            "file/key/index of one of them.", self.path, first, _few(same))
                break
        if area_order is None:
            order = tuple(rdms)
        else:
            missing = [a for a in rdms if a not in area_order]
            if missing:
                raise ConfigError(f"'{self.path}': [dataset] area_order {list(area_order)} lacks area(s) "
                                  f"{', '.join(missing)} of [rdms].{did_you_mean(missing[0], area_order)} "
                                  "List every [rdms] area in area_order (or drop area_order to use the [rdms] order).")
            order = tuple(a for a in area_order if a in rdms)
        headline = self._headline_areas(table, order)
        info: dict[str, Any] = {"source": str(self.path), "n_subjects": {a: int(rdms[a].shape[0]) for a in order}}
        if dropped:
            info["dropped_constant_subjects"] = {a: dropped[a] for a in order if a in dropped}
        out = BrainRDMs(rdms={a: rdms[a] for a in order}, stimulus_ids=stimuli.ids, area_order=order,
                        distance=distance, info=info,
                        headline_areas=headline, area_species={a: species[a] for a in order if a in species},
                        area_kinds={a: kinds[a] for a in order if a in kinds})
        groups = out.area_groups()
        if headline is None and len(groups) > 1:
            listing = "; ".join(f"{g}: {', '.join(areas)}" for g, areas in groups.items())
            raise ConfigError(f"'{self.path}': the [rdms] areas are of different species or kinds ({listing}), so "
                              "they are never averaged into one headline silently; declare which areas form the "
                              f"headline, e.g. headline_areas = [\"{order[0]}\"] in [rdms] (the other areas are "
                              "still scored and reported), or declare the same species and kind for every area.")
        return out

    def _usable_rdms(self, stack: np.ndarray, area: str, what: str, distance: str,
                     dropped: dict[str, list[int]]) -> np.ndarray:
        """Drop constant RDMs from ``stack`` (n_subjects, n, n) with a warning; refuse when none is left.

        A constant RDM (every off-diagonal entry equal) has no defined correlation with
        any model RDM, and the ``rsa`` metric averages over subjects, so keeping it would
        make every score of the area NaN; the other subjects are still usable.
        """
        constant = rd.constant_rdms(stack)
        subjects = np.flatnonzero(constant).tolist()
        if len(subjects) == stack.shape[0]:
            value = stack[0, 0, 1] if stack.shape[-1] > 1 else 0.0
            raise DataError(f"{what}: every RDM ({stack.shape[0]}) is constant (all off-diagonal entries equal, e.g. "
                            f"{value:g}), so its correlation with any model is undefined and the area cannot be "
                            f"scored; check the key/field and index, or remove area '{area}' from [rdms].")
        if subjects:
            keep = [i for i in range(stack.shape[0]) if i not in subjects]
            log.warning("%s: %d of %d subject RDM(s) are constant (all off-diagonal entries equal; subject index(es) "
                        "%s after index/mean_over), so their correlation with any model is undefined; they are left "
                        "out and the remaining %d subject(s) are renumbered 0..%d. Fix the file, or keep the others "
                        "explicitly with index = [...] to silence this.", what, len(subjects), stack.shape[0],
                        subjects, len(keep), len(keep) - 1)
            dropped[area] = subjects
            stack = np.ascontiguousarray(stack[keep])
        if distance.lower() in NONNEGATIVE_DISTANCES:
            low = float(stack.min())
            if low < -1e-9 * max(1.0, float(np.abs(stack).max())):
                log.warning("%s has negative dissimilarities (min %.3g), which a '%s' distance cannot give; if it "
                            "holds similarities (e.g. correlations with a zeroed diagonal), convert them "
                            "(1 - r) and save again, or set [rdms] distance to what made them.", what, low,
                            distance)
        return stack

    def _headline_areas(self, table: dict[str, Any], order: tuple[str, ...]) -> tuple[str, ...] | None:
        if "headline_areas" not in table:
            return None
        value = table["headline_areas"]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"'{self.path}': [rdms] headline_areas must be a non-empty list of area names, got "
                              f"{value!r}; e.g. headline_areas = [\"{order[0]}\"].")
        unknown = [a for a in value if a not in order]
        if unknown:
            raise ConfigError(f"'{self.path}': [rdms] headline_areas names {', '.join(repr(a) for a in unknown)}, "
                              f"which is not an [rdms] area (areas: {', '.join(order)})."
                              f"{did_you_mean(unknown[0], order)} Fix headline_areas.")
        if len(set(value)) != len(value):
            raise ConfigError(f"'{self.path}': [rdms] headline_areas lists an area twice ({value}); list each once.")
        return tuple(a for a in order if a in value)

    # -- digest ---------------------------------------------------------------------------------
    def _warn_identical_images(self, entries: list[list[str]]) -> None:
        """Warn when stimulus images have identical bytes: the network cannot tell them apart, so
        their dissimilarity is 0 in every model RDM (a copy error, or a duplicate meant as a repeat)."""
        by_digest: dict[str, list[str]] = {}
        for role, rel, digest in entries:
            if role == "stimulus":
                by_digest.setdefault(digest, []).append(rel)
        same = [names for names in by_digest.values() if len(names) > 1]
        if same:
            log.warning("'%s': %d group(s) of stimulus images have identical bytes (e.g. %s); the network sees "
                        "them as one image. Remove the copies, or show a repeated image as several epochs of "
                        "one stimulus id.", self.path, len(same), " = ".join(f"'{n}'" for n in same[0][:3]))

    def _digest(self, raw: bytes) -> str:
        hasher = rd.FileHasher(self.cache_dir)
        base = self.path.parent
        entries = [[role, Path(os.path.relpath(p, base)).as_posix(), hasher.digest(p)] for role, p in self._files]
        hasher.save()
        self._warn_identical_images(entries)
        return digest_of("file-dataset", self.plugin_version, raw, entries)
