"""What the user cache holds, and removing parts of it (``framework cache info`` / ``prune``).

The user cache (:func:`framework.paths.user_cache_dir`, ``$FRAMEWORK_CACHE_DIR``) is shared
by every results store and holds only files the framework can rebuild:

``activations/``
    Per model and dataset: the statistics metrics need (``<key>@<need>``) and, when kept,
    raw features (``<key>``) (:mod:`framework.activation_cache`).
``responses/``
    Computed signals, one ``.npz`` per signal and dataset (:mod:`framework.target_io`).
``datasets/``
    Generated datasets (the demo).

Every entry is listed with its size, the model and dataset it belongs to and when it was
last used (an entry's folder or file time, renewed on every use). Pruning moves an entry
aside atomically before deleting it, so a run that looks it up at the same moment sees
either the whole entry or none (and rebuilds it); a run that already has it open keeps
reading its files until it closes them.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framework.activation_cache import _ENTRY_RE
from framework.errors import ConfigError
from framework.fileio import discard_dir

__all__ = ["CacheEntry", "entries", "parse_age", "prune", "summarise"]

_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class CacheEntry:
    """One removable unit of the user cache.

    Parameters
    ----------
    path : Path
        Folder (activations, datasets) or file (responses).
    area : {"activations", "responses", "datasets", "temporary"}
    kind : str
        ``features``, a statistic (``gram``, ``centered_gram``, ``fold_grams``, ``summary``), ``signal``,
        ``dataset`` or ``in progress``.
    model : str
        Model name ("-" for signals and datasets).
    dataset : str
        Dataset name ("?" when an entry written by an older version does not record it).
    size : int
        Bytes on disk.
    last_used : float
        POSIX time of the last use.
    """

    path: Path
    area: str
    kind: str
    model: str
    dataset: str
    size: int
    last_used: float


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _activation_entry(path: Path) -> CacheEntry:
    model, dataset, kind = "?", "?", "?"
    try:
        meta = json.loads((path / "meta.json").read_text())
        info = meta.get("info", {})
        model = str(info.get("model_as_named") or info.get("model", "?"))
        dataset = str(info.get("dataset", "?"))
        kind = meta.get("need", {}).get("kind", "features")
    except (OSError, ValueError, AttributeError):
        kind = "incomplete"
    return CacheEntry(path, "activations", kind, model, dataset, _size(path), path.stat().st_mtime)


def _responses_entry(path: Path) -> CacheEntry:
    dataset = "?"
    try:
        with np.load(path) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
        dataset = str(meta.get("describe", {}).get("dataset", "?"))
    except Exception:  # a damaged file is still listed (and prunable)
        pass
    st = path.stat()
    return CacheEntry(path, "responses", "signal", "-", dataset, st.st_size, max(st.st_mtime, st.st_atime))


def entries(root: Path) -> Iterator[CacheEntry]:
    """Every entry of the cache at ``root``, activations first."""
    acts = root / "activations"
    if acts.is_dir():
        for path in sorted(acts.iterdir()):
            if path.name.startswith(_TMP_PREFIX):
                yield CacheEntry(path, "temporary", "in progress", "?", "?", _size(path), path.stat().st_mtime)
            elif path.is_dir() and _ENTRY_RE.match(path.name):
                yield _activation_entry(path)
    resp = root / "responses"
    if resp.is_dir():
        for path in sorted(resp.glob("*.npz")):
            yield _responses_entry(path)
    data = root / "datasets"
    if data.is_dir():
        for path in sorted(data.iterdir()):
            if path.is_dir():
                yield CacheEntry(path, "datasets", "dataset", "-", path.name, _size(path), path.stat().st_mtime)


def human_size(n: float) -> str:
    """Bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def summarise(items: Iterable[CacheEntry]) -> list[dict]:
    """Totals per (area, model, dataset): entries, bytes, statistics vs features, last use."""
    groups: dict[tuple[str, str, str], dict] = {}
    for e in items:
        g = groups.setdefault((e.area, e.model, e.dataset), {"area": e.area, "model": e.model, "dataset": e.dataset,
                                                           "entries": 0, "size": 0, "features": 0,
                                                           "last_used": 0.0})
        g["entries"] += 1
        g["size"] += e.size
        g["features"] += e.size if e.kind == "features" else 0
        g["last_used"] = max(g["last_used"], e.last_used)
    return sorted(groups.values(), key=lambda g: (g["area"] != "activations", -g["size"]))


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"`` or a number of days, as seconds."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t) * 86400.0
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"Option --older-than '{text}' is not an age; give e.g. 30d, 12h, 90m or a number of days.")
    return value


def prune(root: Path, *, older_than: float | None = None, model: str | None = None, dataset: str | None = None,
          everything: bool = False, dry_run: bool = False, now: float | None = None) -> list[CacheEntry]:
    """Remove the entries of the cache at ``root`` that match every given filter.

    Parameters
    ----------
    older_than : float, optional
        Seconds since last use.
    model, dataset : str, optional
        Entries of this model (activations) / dataset (any area).
    everything : bool
        Every entry (with no other filter).
    dry_run : bool
        List what would be removed, remove nothing.

    Returns
    -------
    list of CacheEntry
        The entries removed (or that would be).

    Raises
    ------
    ConfigError
        No filter given (``--all`` is explicit), or ``everything`` with another filter.
    """
    if not everything and older_than is None and model is None and dataset is None:
        raise ConfigError("framework cache prune needs a filter: --older-than AGE, --model NAME, --dataset NAME, "
                          "or --all to empty the cache.")
    if everything and (older_than is not None or model is not None or dataset is not None):
        raise ConfigError("framework cache prune: --all removes everything; give it alone, or filters without it.")
    now = time.time() if now is None else now
    chosen = []
    for e in entries(root):
        if e.area == "temporary":  # an extraction in progress (or a dead one's: removed by the next extraction)
            continue
        if older_than is not None and now - e.last_used < older_than:
            continue
        if model is not None and e.model != model:
            continue
        if dataset is not None and e.dataset != dataset:
            continue
        chosen.append(e)
    if not dry_run:
        for e in chosen:
            if e.path.is_dir():
                discard_dir(e.path, _TMP_PREFIX, "prune")
            else:
                with contextlib.suppress(FileNotFoundError):
                    e.path.unlink()
    return chosen
