"""Readers behind :class:`plugins.datasets.files.FileDataset`.

Each reader takes a path, checks what it reads, and raises one
:class:`~framework.errors.DataError` naming the file, the item, what was
expected and the fix. Nothing here knows about the dataset TOML layout.

* :func:`read_stimulus_folder`, :func:`read_id_list`, :func:`read_labels`,
  :func:`check_stimulus_images` - stimuli;
* :func:`read_sites_tsv` - a BIDS-iEEG-like electrode table;
* :func:`read_epochs_checked`, :func:`read_epochs_header`, :class:`EpochsLoader` - MNE ``-epo.fif`` files;
* :func:`read_responses_npz` - precomputed responses;
* :func:`read_rdm_array`, :func:`to_rdm_stack`, :func:`constant_rdms` - precomputed RDMs
  (``.npz``, ``.npy``, ``.mat``);
* :class:`FileHasher` - SHA-256 of files, and :class:`FileChecks` - verdicts of the
  expensive checks (decoding images, reading epochs data), both remembered by
  (path, size, mtime_ns) so an unchanged file is read once.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framework.errors import DataError, did_you_mean
from framework.recordings import (  # noqa: F401 (SITE_CHANNEL_TYPES re-exported)
    SITE_CHANNEL_TYPES,
    SITE_COLUMNS,
    check_channels_finite,
    coordinate_columns,
    few,
    site_channels,
)
from framework.types import EpochsMeta, epochs_stimulus_ids

log = logging.getLogger("framework.datasets.files")

#: File name endings read as stimulus images (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: Suffixes stripped from an epochs file name to get the subject (first match wins).
EPOCHS_SUFFIXES: tuple[str, ...] = ("-epo.fif.gz", "_epo.fif.gz", "-epo.fif", "_epo.fif", ".fif.gz", ".fif")
#: Keys a responses ``.npz`` may hold; the first is required.
RESPONSE_KEYS: tuple[str, ...] = ("responses", "repetitions", "stimulus_ids", "site_names", "site_areas",
                                  "site_subjects", "site_coords")
_MISSING = ("n/a", "na", "nan", "")
_few = few


def _natural_key(text: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """``"ValueError: text"`` of an exception on one line (whitespace collapsed, cut at ``limit`` chars)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _path_state(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a file, or None when it is a readable file."""
    if path.is_file():
        return None if os.access(path, os.R_OK) else "cannot be read (permission denied)"
    if path.is_dir():
        return "is a folder, not a file"
    if path.is_symlink():
        return f"is a broken symbolic link (to '{os.readlink(path)}')"
    if path.exists():
        return "is not a regular file (a device, socket or pipe)"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"does not exist ('{parent}' is a file, not a folder)"
    return "does not exist"


def require_file(path: Path, what: str, *, source: Path | None = None, fix: str = "") -> Path:
    """Return ``path`` if it is a readable file, else raise a DataError naming ``what``.

    The message says what is there instead: a folder, a broken symbolic link, an
    unreadable file, or nothing.
    """
    state = _path_state(path)
    if state is None:
        return path
    where = f" (referenced by '{source}')" if source else ""
    if state.startswith("cannot be read"):
        fix = "Make it readable (chmod a+r) or fix the path."
    fix = fix or "Fix the path (relative paths are resolved against the TOML file folder)."
    raise DataError(f"{what} '{path}'{where} {state}. {fix}")


def require_folder(path: Path, what: str, *, source: Path | None = None, fix: str = "") -> Path:
    """Return ``path`` if it is an existing folder, else raise a DataError saying what is there instead."""
    if path.is_dir():
        return path
    where = f" (referenced by '{source}')" if source else ""
    state = _path_state(path)
    state = "is a file, not a folder" if state is None or state.startswith("cannot be read") else state
    fix = fix or "Fix the path (relative paths are resolved against the TOML file folder)."
    raise DataError(f"{what} '{path}'{where} {state}. {fix}")


#: First bytes of common file formats, for messages about a file that is not what its name says.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"MATLAB", "a MATLAB .mat file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"), (b"\x1f\x8b", "a gzip-compressed file"), (b"%PDF", "a PDF document"),
)


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def describe_start(path: Path) -> str:
    """What the first bytes of ``path`` look like, for messages.

    Returns e.g. ``"it is empty (0 bytes)"``, ``"its first bytes look like text: 'a,b,c'"``,
    ``"it looks like an HDF5 file"`` or ``"its first bytes are b'\\x00\\x01...'"``.
    """
    head = _head(path)
    if not head:
        return "it is empty (0 bytes)"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"it looks like {name}"
    if head.lstrip().startswith(b"<"):
        return "it looks like an HTML/XML document (a web page saved instead of the file?)"
    text = head.decode("utf-8", errors="ignore")
    if text and sum(c.isprintable() or c in "\t\r\n" for c in text) >= 0.95 * len(text):
        return f"its first bytes look like text: {' '.join(text.split())[:40]!r}"
    return f"its first bytes are {head[:12]!r}"


# -- stimuli ---------------------------------------------------------------------------------------
def read_stimulus_folder(folder: Path, ids: Sequence[str] | None = None, *,
                         source: Path | None = None) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """Find the stimulus images in ``folder``.

    Parameters
    ----------
    folder : Path
        Folder holding one image per stimulus (suffixes in :data:`IMAGE_SUFFIXES`).
    ids : sequence of str, optional
        Stimulus ids (file stems, or file names) in the wanted order. Default: the
        stems of every image, sorted by file name.
    source : Path, optional
        The file that named the folder (for messages).

    Returns
    -------
    ids : tuple of str, (n_stimuli,)
    paths : tuple of Path, (n_stimuli,)
    """
    where = f" (referenced by '{source}')" if source else ""
    require_folder(folder, "Stimulus folder", source=source,
                   fix="Fix [stimuli] folder (relative paths are resolved against the TOML file folder).")
    files = sorted(p for p in folder.iterdir()  # broken links stay in, for check_stimulus_images to report
                   if (p.is_file() or (p.is_symlink() and not p.exists())) and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise DataError(f"Stimulus folder '{folder}' has two images with id '{p.stem}' "
                            f"('{by_stem[p.stem].name}' and '{p.name}'); ids are file names without "
                            "extension, so rename or remove one.")
        by_stem[p.stem] = p
    if not by_stem:
        raise DataError(f"Stimulus folder '{folder}'{where} holds no images "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}). Put the stimulus images there.")
    if ids is None:
        stems = list(by_stem)
        if stems != sorted(stems, key=_natural_key):
            log.warning("Stimulus ids in '%s' are ordered by file name (%s, ...), which differs from numeric "
                        "order; give [stimuli] ids to fix the order if that is not intended.",
                        folder, ", ".join(stems[:3]))
        return tuple(stems), tuple(by_stem[s] for s in stems)
    by_name = {p.name: p for p in files}
    out_ids: list[str] = []
    for raw in ids:
        sid = str(raw)
        if sid not in by_stem and sid in by_name:
            sid = by_name[sid].stem
        out_ids.append(sid)
    missing = [s for s in out_ids if s not in by_stem]
    if missing:
        hint = did_you_mean(missing[0], by_stem)
        raise DataError(f"{len(missing)} stimulus id(s) of [stimuli] ids{where} have no image in '{folder}': "
                        f"{_few(missing)}.{hint} Ids are image file names without extension; fix the id "
                        "list or add the images.")
    seen: set[str] = set()
    dups = [s for s in out_ids if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
    if dups:
        raise DataError(f"[stimuli] ids{where} lists {_few(sorted(set(dups)))} more than once; "
                        "each stimulus must appear once.")
    return tuple(out_ids), tuple(by_stem[s] for s in out_ids)


#: Images with a side shorter than this (pixels) are reported with a warning. Networks take
#: about 224 px; 32 px (the CIFAR format, the smallest common natural-image stimulus) is already
#: a 7x upsampling, beyond which the network sees mostly interpolation blur - and an image that
#: small is more often a thumbnail or icon saved by mistake than an intended stimulus.
MIN_IMAGE_SIDE = 32
#: Name (and version) of the image check in :class:`FileChecks`.
IMAGE_CHECK = "image-decodes-v1"


def _decode_image(path: Path, sid: str, source: Path | None) -> list[int]:
    """Open and fully decode one image; ``[width, height, n_frames, exif_orientation]`` or a DataError."""
    from PIL import Image, UnidentifiedImageError

    what = f"Stimulus image '{path}' (id '{sid}'" + (f", referenced by '{source}')" if source else ")")
    fix = "Replace the file with a readable image (PNG or JPEG), or remove it and its id."
    state = _path_state(path)
    if state is not None:
        raise DataError(f"{what} {state}. {fix}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} is empty (0 bytes). {fix}")
    try:
        with Image.open(path) as img:
            img.load()
            orientation = int(img.getexif().get(0x0112, 1) or 1)
            return [int(img.width), int(img.height), int(getattr(img, "n_frames", 1)), orientation]
    except UnidentifiedImageError:
        raise DataError(f"{what} is not an image PIL can read ({describe_start(path)}). {fix}") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{what} is too large to decode safely ({_one_line(exc)}); save it at the size that was "
                        "shown (a few hundred pixels on a side is plenty).") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged files
        raise DataError(f"{what} cannot be decoded; it is truncated or corrupt ({_one_line(exc)}). {fix}") from None


def check_stimulus_images(ids: Sequence[str], paths: Sequence[Path], *, checks: FileChecks | None = None,
                          source: Path | None = None) -> list[tuple[int, int]]:
    """Check that every stimulus image decodes; warn about tiny, animated and EXIF-rotated images.

    Each image is opened and fully decoded with PIL (about 1-3 ms for a 500 px JPEG),
    unless ``checks`` remembers that this file, with its size and mtime, decoded before.

    Parameters
    ----------
    ids : sequence of str, (n_stimuli,)
    paths : sequence of Path, (n_stimuli,)
    checks : FileChecks, optional
        Verdict cache; default: remember nothing.
    source : Path, optional
        The file that named the images (for messages).

    Returns
    -------
    sizes : list of (int, int), (n_stimuli,)
        (width, height) of every image, in pixels.

    Raises
    ------
    DataError
        For the first image that is missing, empty, not an image, truncated or corrupt.
    """
    checks = checks if checks is not None else FileChecks()
    facts = []
    for sid, path in zip(ids, paths):
        fingerprint = file_fingerprint(path) if path.is_file() else None
        verdict = checks.get(path, IMAGE_CHECK, fingerprint) if fingerprint else None
        if verdict is None:
            verdict = _decode_image(path, str(sid), source)
            checks.put(path, IMAGE_CHECK, verdict, fingerprint)
        facts.append((str(sid), path, *verdict))
    small = sorted((min(w, h), sid, path, w, h) for sid, path, w, h, _, _ in facts if min(w, h) < MIN_IMAGE_SIDE)
    if small:
        _, sid, path, w, h = small[0]
        log.warning("%d of %d stimulus image(s) are smaller than %d px on a side (smallest: '%s', id '%s', %dx%d "
                    "px); models upsample them to their input size (about 224 px), which mostly blurs them. Use "
                    "the full-size images if these are thumbnails.", len(small), len(facts), MIN_IMAGE_SIDE,
                    path, sid, w, h)
    frames = [(sid, path, n) for sid, path, _, _, n, _ in facts if n > 1]
    if frames:
        log.warning("%d stimulus image(s) have several frames (animated or multi-page, e.g. '%s' with %d); only "
                    "the first frame is shown to the models.", len(frames), frames[0][1], frames[0][2])
    rotated = [(sid, path) for sid, path, _, _, _, o in facts if o not in (0, 1)]
    if rotated:
        log.warning("%d stimulus image(s) carry an EXIF orientation tag (e.g. '%s'): image viewers rotate or "
                    "flip them, but the models see the stored pixels. If the displayed orientation was shown "
                    "to the subjects, save the images rotated (PIL.ImageOps.exif_transpose).",
                    len(rotated), rotated[0][1])
    return [(w, h) for _, _, w, h, _, _ in facts]


def _text_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text ({exc}; {describe_start(path)}); save it as UTF-8 "
                        "text.") from None
    except OSError as exc:
        raise DataError(f"'{path}' cannot be read ({_one_line(exc)}); fix its permissions or the path.") from None
    if "\0" in text:
        raise DataError(f"'{path}' is not a text file (it holds NUL bytes; {describe_start(path)}); give a "
                        "UTF-8 text file.")
    return text.splitlines()


def read_id_list(path: Path, *, source: Path | None = None) -> list[str]:
    """Stimulus ids from a text file, one per line (blank lines and ``#`` comments skipped)."""
    require_file(path, "Stimulus id list", source=source)
    ids = [ln.strip() for ln in _text_lines(path)]
    ids = [i for i in ids if i and not i.startswith("#")]
    if not ids:
        raise DataError(f"Stimulus id list '{path}' is empty; write one stimulus id per line.")
    return ids


def read_labels(path: Path, ids: Sequence[str], *, id_column: str | None = None,
                label_column: str | None = None, source: Path | None = None,
                other_images: Collection[str] = ()) -> tuple[str, ...]:
    """Category label of every stimulus.

    Parameters
    ----------
    path : Path
        Without ``id_column``: a headerless TSV ``id<TAB>category`` (a first row
        ``id<TAB>...`` is skipped). With ``id_column``/``label_column``: a table with a
        header row, comma-separated for ``.csv`` files, tab-separated otherwise.
    ids : sequence of str, (n_stimuli,)
        Stimulus ids; ids in the file may carry an image extension (``stim_01.png``).
    other_images : collection of str, optional
        Ids (file stems) of the stimulus folder's images left out of the stimulus set
        (by ``[stimuli] ids``): their rows are ignored quietly. Rows for any other id are
        ignored with a warning naming them (a typo, or the labels of another stimulus set).

    Returns
    -------
    labels : tuple of str, (n_stimuli,)
    """
    require_file(path, "Stimulus labels file", source=source)
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    rows = [r for r in csv.reader(_text_lines(path), delimiter=delimiter)
            if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    wanted = set(ids)
    if id_column is not None:
        header = [c.strip() for c in rows[0]] if rows else []
        for col in (id_column, label_column):
            if col not in header:
                raise DataError(f"Labels file '{path}' has no column '{col}'; columns found: "
                                f"{_few(header, 20)}.{did_you_mean(str(col), header)} Fix [stimuli] labels.")
        i_id, i_lab = header.index(id_column), header.index(str(label_column))
        body = rows[1:]
    else:
        i_id, i_lab = 0, 1
        body = rows
        if body and body[0][0].strip().lower() in {"id", "stimulus", "stimulus_id", "name"} \
                and body[0][0].strip() not in wanted:
            body = body[1:]
    mapping: dict[str, str] = {}
    stray: list[str] = []
    other = set(other_images)
    for lineno, row in enumerate(body, start=1):
        if len(row) <= max(i_id, i_lab):
            raise DataError(f"Labels file '{path}', row {lineno} ({row!r}) has {len(row)} column(s); "
                            f"expected id{'<TAB>' if delimiter == chr(9) else ','}category.")
        key = row[i_id].strip()
        if key not in wanted:
            key = Path(key).stem if Path(key).stem in wanted else key
        label = row[i_lab].strip()
        if key not in wanted and key not in other and Path(key).stem not in other and key not in stray:
            stray.append(key)
        if key in wanted and not label:
            raise DataError(f"Labels file '{path}', row {lineno}: stimulus '{key}' has an empty label; give "
                            "every stimulus a category (or drop labels from [stimuli]).")
        if key in mapping and mapping[key] != label:
            raise DataError(f"Labels file '{path}' gives stimulus '{key}' two labels ('{mapping[key]}' and "
                            f"'{label}', row {lineno}); keep one row per stimulus.")
        mapping[key] = label
    missing = [s for s in ids if s not in mapping]
    if stray:
        log.warning("Labels file '%s' has rows for %d id(s) that are neither in the stimulus set nor images of the "
                    "stimulus folder: %s.%s They are ignored; a typo or the labels of another stimulus set? Fix the "
                    "ids or remove the rows.", path, len(stray), _few(stray), did_you_mean(stray[0], ids))
    if missing:
        raise DataError(f"Labels file '{path}' gives no label for {len(missing)} stimulus id(s): "
                        f"{_few(missing)}. Add a row per stimulus.")
    return tuple(mapping[s] for s in ids)


# -- sites -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteRows:
    """The rows of a sites TSV, keyed by (subject, channel name).

    ``coords`` maps to an (3,) float64 array in mm (NaN where "n/a"), or is empty
    when the file has no x, y, z columns.
    """

    areas: dict[tuple[str, str], str]
    coords: dict[tuple[str, str], np.ndarray]
    path: Path

    def subjects(self) -> set[str]:
        return {s for s, _ in self.areas}


def read_sites_tsv(path: Path, *, source: Path | None = None) -> SiteRows:
    """Read a BIDS-iEEG-like electrode table.

    Columns ``name`` (channel name as in the recording), ``subject`` and ``area``
    are required; ``x, y, z`` (mm, ``n/a`` allowed) are optional as a group;
    other columns are ignored.
    """
    require_file(path, "Sites table", source=source)
    lines = [ln for ln in _text_lines(path) if ln.strip() and not ln.startswith("#")]
    rows = list(csv.reader(lines, delimiter="\t"))
    if not rows:
        raise DataError(f"Sites table '{path}' is empty; expected a header row with columns "
                        f"{', '.join(SITE_COLUMNS)} (tab-separated).")
    header = [c.strip() for c in rows[0]]
    xyz = coordinate_columns(header, what=f"Sites table '{path}'", unknown="n/a",
                             layout="It must be tab-separated with a header row name, subject, area (and optionally "
                                    "x, y, z).")
    col = {c: header.index(c) for c in (*SITE_COLUMNS, *xyz)}
    areas: dict[tuple[str, str], str] = {}
    coords: dict[tuple[str, str], np.ndarray] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise DataError(f"Sites table '{path}', row {lineno} has {len(row)} tab-separated fields; the "
                            f"header has {len(header)}. Fill empty cells with n/a.")
        key = (row[col["subject"]].strip(), row[col["name"]].strip())
        if key in areas:
            raise DataError(f"Sites table '{path}', row {lineno}: channel '{key[1]}' of subject '{key[0]}' "
                            "appears twice; keep one row per channel.")
        area = row[col["area"]].strip()
        areas[key] = "n/a" if area.lower() in _MISSING else area
        if xyz:
            vals = []
            for c in ("x", "y", "z"):
                cell = row[col[c]].strip()
                if cell.lower() in _MISSING:
                    vals.append(np.nan)
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    value = np.nan
                if not np.isfinite(value):
                    raise DataError(f"Sites table '{path}', row {lineno}, column {c}: {cell!r} is not a finite "
                                    "number; write the coordinate in mm or n/a.")
                vals.append(value)
            coords[key] = np.array(vals, dtype=np.float64)
    return SiteRows(areas, coords, path)


# -- epochs ----------------------------------------------------------------------------------------
def subject_from_filename(path: Path) -> str:
    """``sub-01-epo.fif`` -> ``sub-01`` (strips :data:`EPOCHS_SUFFIXES`)."""
    name = path.name
    for suffix in EPOCHS_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class EpochsHeader:
    """What :func:`read_epochs_header` learns without reading the data.

    Parameters
    ----------
    path : Path
    ch_names, ch_types : tuple of str, (n_channels,)
    bads : tuple of str
        Channels marked bad in the file.
    stimulus_ids : tuple of str, (n_epochs,)
        Stimulus id of every epoch.
    ids_from : {"metadata", "events"}
        Where the ids come from: ``metadata['stimulus']``, or (the file has no metadata)
        the names of the epochs' events in ``event_id`` (:func:`framework.types.epochs_stimulus_ids`).
    sfreq : float
        Sampling rate in Hz.
    tmin, tmax : float
        Time of the first and last sample of an epoch, in s relative to stimulus onset
        (MNE's ``epochs.tmin``, ``epochs.tmax``).
    """

    path: Path
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    bads: tuple[str, ...]
    stimulus_ids: tuple[str, ...]
    sfreq: float
    tmin: float = 0.0
    tmax: float = 0.0
    ids_from: str = "metadata"

    @property
    def good_channels(self) -> tuple[str, ...]:
        """Channels that are recording sites: types in :data:`SITE_CHANNEL_TYPES`, not marked bad."""
        return tuple(site_channels(self.ch_names, self.ch_types, self.bads))

    @property
    def n_epochs(self) -> int:
        return len(self.stimulus_ids)

    def meta(self) -> EpochsMeta:
        """The plan-time facts of :class:`framework.types.EpochsMeta` (times in ms, good site channels)."""
        return EpochsMeta(sfreq=self.sfreq, tmin_ms=self.tmin * 1e3, tmax_ms=self.tmax * 1e3,
                          n_epochs=self.n_epochs, channels=self.good_channels)


_EPOCHS_FIX = "it must be an MNE Epochs FIF file written by epochs.save('...-epo.fif')"


def _read_epochs(path: Path, *, preload: bool) -> Any:
    """``mne.read_epochs(path)``, or one DataError line saying whether the header or the data is broken."""
    import mne

    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"Epochs file '{path}' is empty (0 bytes); {_EPOCHS_FIX}. Copy or save it again.")
    try:
        return mne.read_epochs(path, preload=preload, verbose="error")
    except Exception as exc:  # MNE raises ValueError/OSError/KeyError/... for corrupt or non-epochs files
        reason = _one_line(exc)
    header_ok = False
    if preload:
        try:
            mne.read_epochs(path, preload=False, verbose="error")
            header_ok = True
        except Exception:  # noqa: BLE001 - only tells which part is broken
            pass
    if header_ok:
        raise DataError(f"Epochs file '{path}' has a readable header but its data cannot be read "
                        f"({reason}); the file is truncated or corrupt (an interrupted copy or save?). "
                        "Copy or save it again.")
    raise DataError(f"Epochs file '{path}' cannot be read by mne.read_epochs ({reason}; {describe_start(path)}); "
                    f"{_EPOCHS_FIX} - if it is one, it is truncated or corrupt: copy or save it again.")


def _header_of(path: Path, epochs: Any) -> EpochsHeader:
    return EpochsHeader(path=path, ch_names=tuple(epochs.ch_names),
                        ch_types=tuple(epochs.get_channel_types()), bads=tuple(epochs.info["bads"]),
                        stimulus_ids=tuple(epochs_stimulus_ids(epochs, f"file '{path}'")),
                        sfreq=float(epochs.info["sfreq"]), tmin=float(epochs.tmin), tmax=float(epochs.tmax),
                        ids_from="events" if getattr(epochs, "metadata", None) is None else "metadata")


def read_epochs_header(path: Path, *, source: Path | None = None) -> EpochsHeader:
    """Channel names, bad channels, times and per-epoch stimulus ids, read with ``preload=False``.

    Reads no samples, so a truncated file or NaN channels pass; see :func:`read_epochs_checked`.
    """
    require_file(path, "Epochs file", source=source)
    return _header_of(path, _read_epochs(path, preload=False))


#: Name (and version) of the epochs data check in :class:`FileChecks`.
EPOCHS_CHECK = "epochs-data-v1"


def read_epochs_checked(path: Path, *, source: Path | None = None,
                        checks: FileChecks | None = None) -> EpochsHeader:
    """Read an epochs file's header and check its samples, once per file version.

    The first time, the file is read whole (``preload=True``): every sample must be
    readable (a truncated file fails here), and no good site channel may hold NaN/inf
    or be flat (:func:`check_channels_finite`). The verdict is remembered in ``checks``
    by (path, size, mtime_ns); while the file is unchanged, later calls read the
    header only (``preload=False``).

    Parameters
    ----------
    path : Path
    source : Path, optional
        The file that named it (for messages).
    checks : FileChecks, optional
        Verdict cache; default: remember nothing.

    Returns
    -------
    EpochsHeader
    """
    require_file(path, "Epochs file", source=source)
    checks = checks if checks is not None else FileChecks()
    fingerprint = file_fingerprint(path)
    remembered = checks.get(path, EPOCHS_CHECK, fingerprint)
    if remembered is not None:
        header = read_epochs_header(path)
        if list(header.good_channels) == list(remembered):
            return header
    epochs = _read_epochs(path, preload=True)
    header = _header_of(path, epochs)
    good = list(header.good_channels)
    if good and len(epochs):
        check_channels_finite(epochs.get_data(picks=good), good, path)
    del epochs
    checks.put(path, EPOCHS_CHECK, good, fingerprint)
    return header


def file_fingerprint(path: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns)."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class EpochsLoader:
    """Zero-argument callable that reads one subject's epochs and checks them.

    Picklable (plain fields), so it can travel to a distributed worker. On call
    it reads the file with ``mne.read_epochs(preload=True)``, drops the channels
    marked bad, and raises :class:`DataError` when the file changed since the
    dataset was loaded or when a site channel (types :data:`SITE_CHANNEL_TYPES`)
    holds NaN or is flat (constant). Other channels (stim, misc, ...) are kept
    as they are.

    Parameters
    ----------
    path : Path
    subject : str
    channels : tuple of str
        The good site channels expected, in file order (the site table's order).
    fingerprint : (int, int)
        (size, mtime_ns) of the file when the dataset was loaded.
    """

    path: Path
    subject: str
    channels: tuple[str, ...]
    fingerprint: tuple[int, int]

    def __call__(self) -> Any:
        if not self.path.is_file():
            raise DataError(f"Epochs file '{self.path}' (subject '{self.subject}') disappeared after the dataset "
                            "was loaded; restore it and run again.")
        if file_fingerprint(self.path) != tuple(self.fingerprint):
            raise DataError(f"Epochs file '{self.path}' (subject '{self.subject}') changed after the dataset was "
                            "loaded (size or modification time differ), so the dataset digest is stale; "
                            "load the dataset again.")
        epochs = _read_epochs(self.path, preload=True)
        if epochs.info["bads"]:
            epochs.drop_channels(list(epochs.info["bads"]))
        channels = site_channels(epochs.ch_names, epochs.get_channel_types(), ())
        if tuple(channels) != tuple(self.channels):
            raise DataError(f"Epochs file '{self.path}' now has site channels {_few(channels)}, expected "
                            f"{_few(self.channels)}; load the dataset again.")
        check_channels_finite(epochs.get_data(picks=channels), channels, self.path)
        return epochs


# -- arrays ----------------------------------------------------------------------------------------
_NUMPY_FORMATS = {".npz": ("an .npz archive (a ZIP file written by numpy.savez)", "numpy.savez(path, name=array)"),
                  ".npy": ("an .npy array (written by numpy.save)", "numpy.save(path, array)")}


def _open_npz(path: Path) -> Any:
    """``numpy.load(path)`` without pickle: an ``NpzFile`` or an ndarray, or one DataError line.

    The first bytes are checked before numpy sees the file, so a text, MATLAB or HDF5
    file named ``.npz`` is reported as such (numpy would blame pickling).
    """
    expected, save = _NUMPY_FORMATS.get(path.suffix.lower(), _NUMPY_FORMATS[".npz"])
    head = _head(path, 8)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataError(f"'{path}' is not {expected}: {describe_start(path)}. Convert it: load the data and "
                        f"save it with {save}.")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"'{path}' holds Python objects (an object array), which are never unpickled; save "
                            "strings as a fixed-width unicode array (np.asarray(values, dtype=str)) and numbers as "
                            f"a numeric array, with {save}.") from None
        reason = _one_line(exc)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = _one_line(exc)
    raise DataError(f"'{path}' is truncated or corrupt: numpy.load cannot read it ({reason}). Copy it again or "
                    f"save it again with {save}.")


def _npz_array(npz: Any, key: str, path: Path) -> np.ndarray:
    """Array ``key`` of an open ``.npz``; a DataError for object arrays and damaged members."""
    try:
        return npz[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower():  # object arrays need pickle, which we never enable
            raise DataError(f"'{path}', key '{key}' holds Python objects ({_one_line(exc, 80)}); save strings as "
                            "a fixed-width unicode array (np.asarray(values, dtype=str)) and numbers as a numeric "
                            "array.") from None
        reason = _one_line(exc)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = _one_line(exc)
    raise DataError(f"'{path}', key '{key}' cannot be read ({reason}); the archive is truncated or corrupt. Copy "
                    "it again or save it again with numpy.savez.")


def read_responses_npz(path: Path, *, source: Path | None = None) -> dict[str, np.ndarray]:
    """Read the arrays of a responses ``.npz`` (keys in :data:`RESPONSE_KEYS`).

    Only checks key names; shapes are checked by the caller, which knows the
    stimulus set.
    """
    require_file(path, "Responses file", source=source)
    if path.suffix.lower() != ".npz":
        raise DataError(f"Responses file '{path}' has suffix '{path.suffix}'; expected an .npz archive "
                        "(numpy.savez(path, responses=..., site_names=..., site_areas=...)).")
    opened = _open_npz(path)
    if isinstance(opened, np.ndarray):
        raise DataError(f"Responses file '{path}' is a single array, expected an .npz archive with keys "
                        f"{', '.join(RESPONSE_KEYS)}; save it with numpy.savez(path, responses=..., ...).")
    with opened as npz:
        keys = list(npz.files)
        unknown = [k for k in keys if k not in RESPONSE_KEYS]
        if "responses" not in keys or unknown:
            what = [] if "responses" in keys else ["no key 'responses'"]
            what += [f"unknown key '{unknown[0]}'"] if unknown else []
            hint = did_you_mean(unknown[0], RESPONSE_KEYS) if unknown else ""
            raise DataError(f"Responses file '{path}' has {' and '.join(what)}; keys found: {_few(keys, 20)}; "
                            f"allowed keys: {', '.join(RESPONSE_KEYS)} ('responses' required).{hint} "
                            "Rename the arrays when saving.")
        return {k: _npz_array(npz, k, path) for k in keys}


def _mat_value(path: Path, key: str | None, field: str | None) -> np.ndarray:
    import scipy.io

    save = "re-save it in MATLAB with save(..., '-v7') or convert it to .npz"
    head = _head(path, 128)
    if not head:
        raise DataError(f"'{path}' is empty (0 bytes); expected a MATLAB .mat file. Copy it again or {save}.")
    if head.startswith((b"\x89HDF", b"MATLAB 7.3")):
        raise DataError(f"'{path}' is a MATLAB v7.3 (HDF5) file, which scipy cannot read; {save}.")
    if not head.startswith(b"MATLAB") and describe_start(path).startswith("its first bytes look like text"):
        raise DataError(f"'{path}' is not a MATLAB .mat file: {describe_start(path)}; {save}.")
    try:
        names = [n for n, _shape, _cls in scipy.io.whosmat(path)]
    except NotImplementedError:
        raise DataError(f"'{path}' is a MATLAB v7.3 (HDF5) file, which scipy cannot read; {save}.") from None
    except Exception as exc:
        raise DataError(f"'{path}' cannot be read as a MATLAB file ({_one_line(exc)}; {describe_start(path)}); it "
                        f"is truncated, corrupt or not a .mat file: copy it again or {save}.") from None
    if key is None:
        if len(names) != 1:
            raise DataError(f"'{path}' holds {len(names)} variables ({_few(names, 20)}); say which with key = \"...\".")
        key = names[0]
    if key not in names:
        raise DataError(f"'{path}' has no variable '{key}'; variables found: {_few(names, 20)}."
                        f"{did_you_mean(key, names)} Fix the key.")
    try:
        value = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=[key])[key]
    except Exception as exc:  # scipy raises OSError, ValueError, MatReadError, ... for damaged files
        raise DataError(f"'{path}', variable '{key}' cannot be read ({_one_line(exc)}); the file is truncated or "
                        f"corrupt: copy it again or {save}.") from None
    structs = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    is_struct = structs.dtype == object and structs.size and hasattr(structs.flat[0], "_fieldnames")
    if field is None:
        if is_struct:
            fields = list(structs.flat[0]._fieldnames)
            raise DataError(f"'{path}', variable '{key}' is a MATLAB struct with fields {_few(fields, 20)}; "
                            "say which holds the RDMs with field = \"...\".")
        return np.asarray(value)
    if not is_struct:
        raise DataError(f"'{path}', variable '{key}' is a plain array, not a struct, so field = '{field}' does "
                        "not apply; remove field.")
    fields = list(structs.flat[0]._fieldnames)
    if field not in fields:
        raise DataError(f"'{path}', variable '{key}' has no field '{field}'; fields found: {_few(fields, 20)}."
                        f"{did_you_mean(field, fields)}")
    parts = [np.asarray(getattr(s, field)) for s in structs.flat]
    if len({p.shape for p in parts}) != 1:
        raise DataError(f"'{path}', field '{key}.{field}' holds arrays of different shapes "
                        f"({_few(sorted({str(p.shape) for p in parts}))}); every RDM must have the same shape.")
    return np.stack(parts).reshape(structs.shape + parts[0].shape)


def read_rdm_array(path: Path, *, key: str | None = None, field: str | None = None,
                   source: Path | None = None) -> np.ndarray:
    """Read the raw RDM array of one area from ``.npz``, ``.npy`` or ``.mat``.

    Parameters
    ----------
    path : Path
    key : str, optional
        Array name in an ``.npz`` or variable in a ``.mat``; optional when the file
        holds exactly one.
    field : str, optional
        For a MATLAB struct array: the field holding each RDM; the result stacks
        them with the struct array's shape in front.
    """
    require_file(path, "RDM file", source=source)
    suffix = path.suffix.lower()
    if suffix not in {".npz", ".npy", ".mat"}:
        raise DataError(f"RDM file '{path}' has suffix '{path.suffix}'; expected .npz, .npy or .mat "
                        "(numpy.savez, numpy.save or MATLAB save). Convert the file.")
    if suffix == ".mat":
        return _mat_value(path, key, field)
    if field is not None:
        raise DataError(f"field = '{field}' only applies to MATLAB .mat files, not '{path}'; remove it.")
    opened = _open_npz(path)
    if isinstance(opened, np.ndarray):
        if key is not None:
            raise DataError(f"'{path}' holds a single array, so key = '{key}' does not apply; remove it.")
        return opened
    with opened as npz:
        keys = list(npz.files)
        if key is None:
            if len(keys) != 1:
                raise DataError(f"'{path}' holds {len(keys)} arrays ({_few(keys, 20)}); say which with key = \"...\".")
            key = keys[0]
        if key not in keys:
            raise DataError(f"'{path}' has no key '{key}'; keys found: {_few(keys, 20)}.{did_you_mean(key, keys)} "
                            "Fix the key.")
        return _npz_array(npz, key, path)


def to_rdm_stack(array: np.ndarray, n: int, *, what: str, index: int | Sequence[int] | None = None,
                 mean_over: Sequence[int] = (), rtol: float = 1e-5) -> np.ndarray:
    """Turn a stored RDM array into a checked ``(n_subjects, n, n)`` float64 stack.

    Parameters
    ----------
    array : ndarray, (..., n, n) or (..., n * (n - 1) / 2)
        Square RDMs or condensed upper triangles (row-major, as
        ``scipy.spatial.distance.squareform``), with any leading axes.
    n : int
        Number of stimuli.
    what : str
        ``"'file.npz' key 'X' (area IT)"`` for messages.
    index : int or sequence of int, optional
        Keep only these entries of the first axis.
    mean_over : sequence of int
        Leading axes to average over (e.g. sessions), after ``index``.
    rtol : float
        Symmetry and zero-diagonal tolerance, relative to the largest |value|.

    Returns
    -------
    rdms : ndarray, (n_subjects, n, n) float64
        Exactly symmetric with an exactly zero diagonal; leading axes left after
        ``mean_over`` are flattened (row-major) into subjects.
    """
    a = np.asarray(array)
    if a.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {a.dtype}; expected numbers (float RDMs).")
    if index is not None:
        idx = np.atleast_1d(np.asarray(index))
        if a.ndim < 1 or idx.dtype.kind not in "iu" or (idx < -a.shape[0]).any() or (idx >= a.shape[0]).any():
            raise DataError(f"{what}: index {list(idx.tolist())} is out of range for its first axis of length "
                            f"{a.shape[0] if a.ndim else 0} (shape {a.shape}); fix index.")
        wrapped = (idx % a.shape[0]).tolist()
        twice = sorted({i for i in wrapped if wrapped.count(i) > 1})
        if twice:
            raise DataError(f"{what}: index {list(idx.tolist())} selects entry(ies) {twice} of the first axis "
                            "more than once, which would count those subjects twice; list each once.")
        a = a[idx] if np.ndim(index) else a[int(idx[0])]
    a = a.astype(np.float64)
    m = n * (n - 1) // 2
    if a.ndim >= 2 and a.shape[-2:] == (n, n):
        square = a
    elif a.ndim >= 1 and a.shape[-1] == m and m > 0:
        square = np.zeros(a.shape[:-1] + (n, n))
        iu = np.triu_indices(n, 1)
        square[..., iu[0], iu[1]] = a
        square += np.swapaxes(square, -1, -2)
    else:
        if a.ndim >= 2 and a.shape[-1] == a.shape[-2]:
            got = f"{a.shape[-1]}x{a.shape[-1]} RDMs"
        elif a.ndim >= 1 and _is_triangular(a.shape[-1]):
            k = _triangular_n(a.shape[-1])
            got = f"condensed upper triangles of {k}x{k} RDMs"
        else:
            raise DataError(f"{what} has shape {a.shape}, which is neither square RDMs (..., {n}, {n}) nor "
                            f"condensed upper triangles (..., {m}); fix the file or the key.")
        raise DataError(f"{what} has shape {a.shape} ({got}), but the stimulus set has {n} stimuli; the "
                        f"RDM rows must follow the [stimuli] ids one to one (expected (n_subjects, {n}, {n}), "
                        f"({n}, {n}) or condensed ({m},)). Fix [stimuli] folder/ids or the RDM file.")
    lead = square.shape[:-2]
    if not np.isfinite(square).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(square))[0])
        raise DataError(f"{what} contains NaN or infinite values (first at index {first}); RDMs must be complete.")
    flat = square.reshape((-1, n, n))
    tol = rtol * max(1.0, float(np.abs(flat).max(initial=0.0)))
    asym = np.abs(flat - np.swapaxes(flat, 1, 2)).max(axis=(1, 2), initial=0.0)
    diag = np.abs(np.diagonal(flat, axis1=1, axis2=2)).max(axis=1, initial=0.0)
    for err, label in ((asym, "not symmetric (max |d[i,j] - d[j,i]|"), (diag, "diagonal not zero (max |d[i,i]|")):
        if (err > tol).any():
            i = int(np.argmax(err > tol))
            pos = np.unravel_index(i, lead) if lead else ()
            at = f" (RDM at index {tuple(int(p) for p in pos)})" if lead else ""
            raise DataError(f"{what}{at} is {label} = {err[i]:.3g} > {tol:.3g}); expected a symmetric "
                            "dissimilarity matrix with zeros on the diagonal. Fix the file (similarity "
                            "matrices must be turned into dissimilarities first).")
    flat = (flat + np.swapaxes(flat, 1, 2)) / 2.0
    flat[:, np.arange(n), np.arange(n)] = 0.0
    square = flat.reshape(lead + (n, n))
    axes = sorted({int(x) for x in mean_over})
    if axes:
        if any(ax < 0 or ax >= len(lead) for ax in axes):
            raise DataError(f"{what}: mean_over {axes} must name leading axes 0..{len(lead) - 1} of its "
                            f"(..., {n}, {n}) stack (leading shape {lead}); fix mean_over.")
        square = square.mean(axis=tuple(axes))
    return np.ascontiguousarray(square.reshape((-1, n, n)))


def _triangular_n(k: int) -> int:
    return int(round((1 + np.sqrt(1 + 8 * k)) / 2))


def _is_triangular(k: int) -> bool:
    n = _triangular_n(k)
    return k > 0 and n * (n - 1) // 2 == k


def constant_rdms(rdms: np.ndarray, *, rtol: float = 1e-12) -> np.ndarray:
    """Which RDMs have every off-diagonal entry equal.

    The correlation of such an RDM with any other is undefined (zero variance), so a
    metric's score for it is NaN.

    Parameters
    ----------
    rdms : ndarray, (n_subjects, n, n)
    rtol : float
        Entries count as equal when their range is at most ``rtol`` times the largest
        |entry| (at least 1).

    Returns
    -------
    ndarray, (n_subjects,) bool
    """
    n = rdms.shape[-1]
    iu = np.triu_indices(n, 1)
    upper = np.asarray(rdms, dtype=np.float64)[:, iu[0], iu[1]]
    if upper.shape[1] == 0:
        return np.ones(upper.shape[0], dtype=bool)
    spread = upper.max(axis=1) - upper.min(axis=1)
    return spread <= rtol * np.maximum(1.0, np.abs(upper).max(axis=1))


# -- remembered facts about files ------------------------------------------------------------------
class _FingerprintTable:
    """A JSON table of one fact per file, trusted while the file keeps its (size, mtime_ns).

    Entries are ``{resolved path: [size, mtime_ns, value]}``; an entry whose size or
    mtime differs from the file's is ignored and replaced. Written atomically
    (temporary file + rename); without ``cache_dir`` it lives in memory only.

    Parameters
    ----------
    cache_dir : Path, optional
        Folder of the table file (:attr:`FILENAME`).
    """

    FILENAME = ""
    WHAT = "cache"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_path = None if cache_dir is None else Path(cache_dir) / self.FILENAME
        self._table: dict[str, list] = {}
        self._dirty = False
        if self.cache_path is not None and self.cache_path.is_file():
            try:
                loaded = json.loads(self.cache_path.read_text())
                self._table = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                log.warning("Ignoring unreadable %s '%s'; it will be rewritten.", self.WHAT, self.cache_path)

    def _get(self, path: Path, fingerprint: tuple[int, int]) -> Any:
        entry = self._table.get(str(Path(path).resolve()))
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == fingerprint[0] and entry[1] == fingerprint[1]:
            return entry[2]
        return None

    def _put(self, path: Path, fingerprint: tuple[int, int], value: Any) -> None:
        self._table[str(Path(path).resolve())] = [int(fingerprint[0]), int(fingerprint[1]), value]
        self._dirty = True

    def save(self) -> None:
        """Write the table atomically (temporary file + rename) if anything changed."""
        if self.cache_path is None or not self._dirty:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.FILENAME}.", dir=self.cache_path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(self._table, fh)
            os.replace(tmp, self.cache_path)
            self._dirty = False
        except OSError as exc:
            log.warning("Could not write %s '%s' (%s); it will be recomputed next time.", self.WHAT,
                        self.cache_path, exc)


class FileHasher(_FingerprintTable):
    """SHA-256 of files, remembered by (absolute path, size, mtime_ns).

    Parameters
    ----------
    cache_dir : Path, optional
        Where ``file-digests.json`` lives; without it nothing is stored on disk.
    """

    FILENAME = "file-digests.json"
    WHAT = "digest cache"
    CHUNK = 1 << 20

    def __init__(self, cache_dir: Path | None = None) -> None:
        super().__init__(cache_dir)
        self.hashed = 0  # files actually read (for tests and logs)

    def digest(self, path: Path) -> str:
        """Hex SHA-256 of the bytes of ``path``."""
        path = Path(path).resolve()
        size, mtime = file_fingerprint(path)
        known = self._get(path, (size, mtime))
        if known is not None:
            return str(known)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(self.CHUNK), b""):
                    h.update(chunk)
        except OSError as exc:
            raise DataError(f"'{path}' cannot be read ({_one_line(exc)}); fix its permissions or the path.") from None
        self.hashed += 1
        self._put(path, (size, mtime), h.hexdigest())
        return h.hexdigest()


class FileChecks(_FingerprintTable):
    """Verdicts of expensive file checks, remembered by (absolute path, size, mtime_ns).

    Only passed checks are stored (a failing file raises, and is read again next time);
    the stored value is what the check learnt (e.g. an image's size). A check's name
    carries a version (``"image-decodes-v1"``): changing what a check does means a new
    name, so old verdicts are not trusted.

    Parameters
    ----------
    cache_dir : Path, optional
        Where ``file-checks.json`` lives; without it verdicts last as long as this object.
    """

    FILENAME = "file-checks.json"
    WHAT = "file-check cache"

    def get(self, path: Path, check: str, fingerprint: tuple[int, int]) -> Any:
        """The remembered verdict of ``check`` for ``path`` at ``fingerprint`` (size, mtime_ns), or None."""
        verdicts = self._get(path, fingerprint)
        return verdicts.get(check) if isinstance(verdicts, dict) else None

    def put(self, path: Path, check: str, verdict: Any, fingerprint: tuple[int, int]) -> None:
        """Remember that ``path`` passed ``check`` (JSON-serialisable ``verdict``) at ``fingerprint``.

        Give the fingerprint taken *before* the file was read, so a file changed during
        the check is checked again next time.
        """
        verdicts = self._get(path, fingerprint)
        verdicts = dict(verdicts) if isinstance(verdicts, dict) else {}
        verdicts[check] = verdict
        self._put(path, fingerprint, verdicts)
