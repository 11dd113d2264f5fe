"""Save and load signal outputs (:class:`Responses`, :class:`BrainRDMs`) as ``.npz``.

Used by the scheduler's response cache; writes are atomic (temporary file, then
``os.replace``) so an interrupted run never leaves a half-written entry.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from framework.fileio import atomic_file
from framework.types import BrainRDMs, Responses, SiteTable, Target


def save_target(target: Target, path: Path) -> None:
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
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=json_default).encode(), dtype=np.uint8)
    with atomic_file(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_target(path: Path) -> Target:
    """Read a target written by :func:`save_target`."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        if meta["kind"] == "responses":
            reps = npz["repetitions"] if "repetitions" in npz.files else None
            return Responses(npz["data"], SiteTable.from_dict(meta["sites"]), tuple(meta["stimulus_ids"]), reps,
                             tuple(meta["area_order"]), meta["info"])
        rdms = {area: npz[f"rdm_{i}"] for i, area in enumerate(meta["areas"])}
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
