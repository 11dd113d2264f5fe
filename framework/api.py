"""The Python entry points: run a comparison from a notebook and read results as pandas tables.

>>> import framework
>>> results = framework.run(models=["alexnet:random"], metrics=["rsa"], signals=["lowgamma"],
...                         store="results")                          # doctest: +SKIP
>>> results.to_pandas()                                                # one row per cell    # doctest: +SKIP
>>> results.layers()                                                   # one row per layer   # doctest: +SKIP
>>> framework.open_store("results").to_pandas()                        # an existing store   # doctest: +SKIP

:func:`run` takes the fields of ``framework run`` (:class:`framework.config.RunConfig`) as
keyword arguments, runs exactly what the command line runs (same cells, keys, cache, resume and
provenance) and writes the leaderboard files; bad input raises the same one-line
:class:`framework.errors.FrameworkError`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import ConfigError

__all__ = ["Results", "open_store", "rdms_dataset", "responses_dataset", "run"]

#: Columns of :meth:`Results.to_pandas`, in order.
CELL_COLUMNS = ("dataset", "model", "weights", "signal", "metric", "value", "ceiling", "ci_low", "ci_high", "p_value",
                "best_layer", "higher_is_better", "status", "error", "weights_source", "weights_digest", "run_id",
                "seconds", "cell_key")


@dataclass
class Results:
    """The rows of a results store (all of them, or those of some runs).

    Attributes
    ----------
    store : Path
        The store directory.
    run_ids : list of str
        The runs these results were written by; empty for every row of the store.
    """

    store: Path
    run_ids: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """The store's rows (JSON columns decoded), oldest first, limited to :attr:`run_ids` when given."""
        from framework.store import ResultsStore

        with ResultsStore(self.store, readonly=True) as store:
            rows = list(store.rows())
        if self.run_ids:
            wanted = set(self.run_ids)
            rows = [r for r in rows if r.get("run_id") in wanted]
        return rows

    def to_pandas(self):
        """One row per cell (long format), the columns of :data:`CELL_COLUMNS`.

        ``weights`` is the leaderboard's label (``random init (fallback)`` for a fallback);
        ``best_layer`` is the metric's best layer as text (a JSON object when it is per area).
        """
        import pandas as pd

        from framework.leaderboard import is_fallback, weights_text

        out = []
        for r in self.rows():
            prov = r.get("provenance") or {}
            label = r.get("weights_label")
            if is_fallback(r):
                label = (label or "random init") + " (fallback)"
            best = (r.get("summary") or {}).get("best_layer")
            out.append({
                "dataset": r["dataset"], "model": r["model"], "weights": weights_text(r.get("weights_source"), label),
                "signal": r["signal"], "metric": r["metric"], "value": r.get("value"), "ceiling": r.get("ceiling"),
                "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"), "p_value": r.get("p_value"),
                "best_layer": best if isinstance(best, str) or best is None else json.dumps(best, sort_keys=True),
                "higher_is_better": None if r.get("higher_is_better") is None else bool(r["higher_is_better"]),
                "status": r["status"], "error": r.get("error"), "weights_source": r.get("weights_source"),
                "weights_digest": (prov.get("model") or {}).get("weights_digest"), "run_id": r.get("run_id"),
                "seconds": r.get("seconds"), "cell_key": r["cell_key"],
            })
        return pd.DataFrame(out, columns=list(CELL_COLUMNS))

    def layers(self, table: str | None = None):
        """Per-layer numbers of every cell, long format: the cell's identity columns plus the rows of each
        details table that has a ``layer`` column (e.g. rsa's ``layer_area``: one row per layer and area).

        Parameters
        ----------
        table : str, optional
            Only this details table (its name is in the ``table`` column otherwise).
        """
        import pandas as pd

        frames = []
        for r in self.rows():
            for name, columns in (r.get("details") or {}).items():
                if (table is not None and name != table) or "layer" not in columns:
                    continue
                n = len(columns["layer"])
                if not all(isinstance(v, list) and len(v) == n for v in columns.values()):
                    continue
                frame = pd.DataFrame(columns)
                for key, value in (("cell_key", r["cell_key"]), ("table", name), ("metric", r["metric"]),
                                   ("signal", r["signal"]), ("model", r["model"]), ("dataset", r["dataset"])):
                    frame.insert(0, key, value)
                frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["dataset", "model", "signal", "metric", "table", "cell_key", "layer"])
        return pd.concat(frames, ignore_index=True)

    def write_leaderboard(self) -> list[Path]:
        """Write the leaderboard files of the whole store (as ``framework leaderboard``); returns their paths."""
        from framework.publish import store_leaderboard

        return store_leaderboard(self.store)[2]


def run(dataset: Any = None, **fields: Any) -> Results:
    """Run a comparison in this process, as ``framework run`` does, and write the leaderboard.

    Parameters
    ----------
    dataset : str or Dataset, optional
        A registered name, a TOML path or a comma list (as ``--dataset``), or a
        :class:`framework.types.Dataset` built in Python (:func:`responses_dataset`,
        :func:`rdms_dataset`): it is scored like a registered one, keyed by its name and digest.
    **fields
        The fields of :class:`framework.config.RunConfig` (``models``, ``signals``, ``metrics``,
        ``dataset``, ``benchmarks``, ``store``, ``weights``, ``metric_params``, ...). Lists may be
        given as lists or comma-separated strings. ``progress`` defaults to off.

    Returns
    -------
    Results
        The rows written by this run (every dataset or benchmark of it); cells already in the
        store are skipped as on the command line and are in :func:`open_store`'s results.
    """
    from framework.config import build_config
    from framework.registry import load_registry
    from framework.scheduler import run as run_plans
    from framework.types import Dataset

    fields.setdefault("progress", False)
    registry = None
    if isinstance(dataset, Dataset):
        registry = load_registry()
        _register_given(registry, dataset)
        fields["dataset"] = dataset.name
    elif dataset is not None:
        fields["dataset"] = dataset
    config = build_config({}, fields, source="framework.run() arguments")
    summary = run_plans(config, registry=registry)
    results = Results(Path(config.store), summary.run_ids or [summary.run_id])
    results.write_leaderboard()
    return results


def open_store(path: str | Path) -> Results:
    """Every row of an existing results store.

    Raises :class:`ConfigError` when ``path`` holds no results store.
    """
    from framework.store import DB_NAME

    path = Path(path).expanduser()
    if not (path / DB_NAME).is_file():
        raise ConfigError(f"No results store at '{path}' (no {DB_NAME}); run framework.run(store='{path}', ...) "
                          "first or give the right path.")
    return Results(path)


def _register_given(registry: Any, dataset: Any) -> None:
    """Declare an in-memory :class:`Dataset` in ``registry`` under its own name (refusing a registered name)."""
    from framework.contracts import DatasetPlugin

    name = dataset.name
    if not name or name != name.lower() or any(c.isspace() for c in name) or "," in name:
        raise ConfigError(f"Dataset name {name!r} must be lower case, without spaces or commas (it keys the "
                          "results); give the dataset another name.")
    if name in registry.names("dataset"):
        raise ConfigError(f"Dataset name '{name}' is already a registered dataset; give the in-memory dataset "
                          "another name.")

    class GivenDataset(DatasetPlugin):
        """An in-memory dataset handed to :func:`run`."""

        def __init__(self, *, cache_dir: Any = None, path: Any = None) -> None:
            self._init_params({}, name)

        def load(self) -> Any:
            return dataset

    registry.declare("dataset", name, GivenDataset, f"in-memory dataset '{name}'", source="framework.run()")


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
