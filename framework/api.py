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
from framework.memory_datasets import epochs_dataset, rdms_dataset, responses_dataset

__all__ = ["Results", "epochs_dataset", "open_store", "rdms_dataset", "responses_dataset", "run"]

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
        The runs of :func:`run` that gave these results; empty for every row of the store.
    cell_keys : list of str
        The cells of those runs, including cells already in the store that the runs skipped
        (so re-running a notebook cell returns the same table); empty for every row of the store.
    """

    store: Path
    run_ids: list[str] = field(default_factory=list)
    cell_keys: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """The store's rows (JSON columns decoded), oldest first: every row, or those of :attr:`cell_keys`
        and those written by :attr:`run_ids` (e.g. a model that failed before its cells were keyed)."""
        from framework.store import ResultsStore

        with ResultsStore(self.store, readonly=True) as store:
            rows = list(store.rows())
        if self.cell_keys or self.run_ids:
            keys, runs = set(self.cell_keys), set(self.run_ids)
            rows = [r for r in rows if r["cell_key"] in keys or r.get("run_id") in runs]
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
        The rows of this run's cells (every dataset or benchmark of it), whether scored now or
        found in the store: as on the command line, cells already in the store are not scored
        again, so running the same call twice returns the same table at the cost of reading it.
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
    results = Results(Path(config.store), summary.run_ids or [summary.run_id], summary.cell_keys)
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
