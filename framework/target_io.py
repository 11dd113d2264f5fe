"""Save and load signal outputs (:class:`Responses`, :class:`BrainRDMs`) as ``.npz``.

Used by the scheduler's response cache; writes are atomic (temporary file, then
``os.replace``) so an interrupted run never leaves a half-written entry.

Each file holds a ``checksum`` member: the :data:`framework.fileio.CHECKSUM_ALGORITHM` hash of
every other member (name, dtype, shape and bytes; the JSON ``meta`` included).
:func:`load_target` recomputes it and raises :class:`~framework.errors.DataError` on a
mismatch or when it is missing (a file of an older version). The zip CRC-32 of each member
already makes ``np.load`` fail on flipped bytes; the checksum adds what the CRC cannot see:
a file rewritten through a zip or numpy writer with edited arrays or meta (e.g. swapped
stimulus ids), whose CRCs are then valid again.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from framework.errors import DataError
from framework.fileio import CHECKSUM_ALGORITHM, atomic_file, new_hasher
from framework.types import BrainRDMs, Responses, SiteTable, Target


def save_target(target: Target, path: Path, *, describe: dict | None = None) -> None:
    """Write ``target`` to ``path`` (``.npz``) atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    if isinstance(target, Responses):
        meta = {"kind": "responses", "stimulus_ids": list(target.stimulus_ids), "sites": target.sites.to_dict(),
                "area_order": list(target.area_order), "info": target.info}
        arrays["data"] = target.data
        if target.repetitions is not None:
            arrays["repetitions"] = target.repetitions
    elif isinstance(target, BrainRDMs):
        meta = {"kind": "rdms", "stimulus_ids": list(target.stimulus_ids), "areas": list(target.rdms),
                "area_order": list(target.area_order), "distance": target.distance, "info": target.info,
                "headline_areas": None if target.headline_areas is None else list(target.headline_areas),
                "area_species": target.area_species, "area_kinds": target.area_kinds}
        for i, area in enumerate(target.rdms):
            arrays[f"rdm_{i}"] = target.rdms[area]
    else:  # pragma: no cover - programming error
        raise TypeError(f"Cannot save {type(target).__name__}")
    if describe:
        meta["describe"] = dict(describe)  # e.g. the dataset's name, for `framework cache info`
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=json_default).encode(), dtype=np.uint8)
    record = {"algorithm": CHECKSUM_ALGORITHM, "hash": _arrays_checksum(arrays)}
    arrays["checksum"] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    with atomic_file(path, "wb") as fh:
        np.savez(fh, **arrays)


def _arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """Hash of named arrays: each name, dtype, shape and C-order bytes, in name order."""
    h = new_hasher()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def load_target(path: Path) -> Target:
    """Read a target written by :func:`save_target`, verifying its checksum.

    Raises
    ------
    DataError
        When the file is unreadable (e.g. a zip CRC error from flipped bytes, a truncated
        file), has no checksum (written by an older version) or does not match it.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        record = json.loads(arrays.pop("checksum").tobytes().decode()) if "checksum" in arrays else None
        meta = json.loads(arrays["meta"].tobytes().decode())
    except Exception as exc:
        raise DataError(f"Cached target '{path}' is unreadable ({type(exc).__name__}: {exc}); delete it and it "
                        "will be recomputed.") from None
    if record is None:
        raise DataError(f"Cached target '{path}' has no checksum (written by an older version), so its content "
                        "cannot be verified; delete it and it will be recomputed.")
    if record.get("algorithm") != CHECKSUM_ALGORITHM or record.get("hash") != _arrays_checksum(arrays):
        raise DataError(f"Cached target '{path}' does not match its {record.get('algorithm')} checksum: its arrays "
                        "or meta changed after it was written; delete it and it will be recomputed.")
    if meta["kind"] == "responses":
        return Responses(arrays["data"], SiteTable.from_dict(meta["sites"]), tuple(meta["stimulus_ids"]),
                         arrays.get("repetitions"), tuple(meta["area_order"]), meta["info"])
    rdms = {area: arrays[f"rdm_{i}"] for i, area in enumerate(meta["areas"])}
    headline = meta.get("headline_areas")
    return BrainRDMs(rdms, tuple(meta["stimulus_ids"]), tuple(meta["area_order"]), meta["distance"], meta["info"],
                     headline_areas=None if headline is None else tuple(headline),
                     area_species=meta.get("area_species", {}), area_kinds=meta.get("area_kinds", {}))


def json_default(obj):
    """``json.dumps(default=...)`` for numpy scalars/arrays, paths and sets (used for all stored JSON)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
