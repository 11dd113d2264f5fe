"""The results store: one SQLite file per store directory.

One row per cell (dataset, model, signal, metric and everything that changes the
number, hashed into ``cell_key``). Each row is written in its own transaction
the moment its cell finishes, so an interrupted run loses nothing already
scored and a re-run skips what is done. Rows are never duplicated: the cell key
is the primary key.

A cell's identity is settled in two steps. Planning hashes what was *asked for*
(names, parameters, the requested weights mode, ...) into the ``plan_key``;
execution adds the weights *actually used* (source and digest, see
:func:`final_cell_key`), which gives the ``cell_key``. So a model asked for with
``weights=auto`` that fell back to random init and later loads its pretrained
weights makes new cells instead of being skipped.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from framework.errors import DataError
from framework.target_io import json_default
from framework.types import Score, digest_of

DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    cell_key TEXT PRIMARY KEY,
    plan_key TEXT,
    run_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    signal TEXT NOT NULL,
    metric TEXT NOT NULL,
    weights_source TEXT,
    weights_label TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    value REAL,
    ceiling REAL,
    ci_low REAL,
    ci_high REAL,
    p_value REAL,
    higher_is_better INTEGER,
    summary TEXT,
    details TEXT,
    error TEXT,
    provenance TEXT,
    started_at REAL,
    finished_at REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS scores_by_name ON scores (dataset, metric, signal, model);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    config TEXT,
    n_done INTEGER,
    n_failed INTEGER,
    n_skipped INTEGER
);
"""


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, allow_nan=True)


def final_cell_key(plan_key: str, weights_source: str, weights_digest: str) -> str:
    """The key of a cell once the weights actually used are known.

    ``plan_key`` hashes everything the run asked for; the weights source
    (``pretrained`` / ``random`` / ``file``) and digest make the cell of a
    random-init fallback differ from the cell scored with pretrained weights.
    """
    return digest_of("cell-weights-v1", plan_key, str(weights_source), str(weights_digest))


@dataclass(frozen=True)
class Cell:
    """Identity of one score: names plus the key hashing everything that changes it.

    ``plan_key`` is the key planned before the weights were known (``None``: same as
    ``key``, i.e. not finalised yet); :meth:`with_weights` gives the final cell.
    """

    key: str
    dataset: str
    model: str
    signal: str
    metric: str
    plan_key: str | None = None

    def with_weights(self, weights_source: str, weights_digest: str) -> Cell:
        """This cell keyed by the weights actually used (see :func:`final_cell_key`)."""
        plan_key = self.plan_key or self.key
        return replace(self, key=final_cell_key(plan_key, weights_source, weights_digest), plan_key=plan_key)


class ResultsStore:
    """SQLite results database at ``<directory>/results.sqlite``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"Store directory '{self.directory}' cannot be created ({exc.strerror}); "
                            "choose another --store.") from None
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._migrate()
            self._conn.execute("CREATE INDEX IF NOT EXISTS scores_by_plan ON scores (plan_key)")
        except sqlite3.DatabaseError as exc:
            raise DataError(f"Results database '{self.path}' is not a usable SQLite file ({exc}); "
                            "move it away or choose another --store.") from None
        self._conn.row_factory = sqlite3.Row

    def _columns(self) -> set[str]:
        return {row[1] for row in self._conn.execute("PRAGMA table_info(scores)")}

    def _migrate(self) -> None:
        """Bring a store written by an older version up to date (one transaction, idempotent).

        Stores without ``plan_key`` keyed their cells by the plan alone: that key becomes the
        row's ``plan_key`` and the row is re-keyed by the weights its provenance records, so
        cells scored with the same weights are still found (and skipped) by a re-run.
        """
        if "plan_key" in self._columns():
            return
        with self._transaction():
            if "plan_key" not in self._columns():  # another process may have migrated meanwhile
                self._conn.execute("ALTER TABLE scores ADD COLUMN plan_key TEXT")
                rows = self._conn.execute("SELECT cell_key, weights_source, provenance FROM scores").fetchall()
                for key, source, prov in rows:
                    try:
                        model = (json.loads(prov) if prov else {}).get("model") or {}
                    except ValueError:
                        model = {}
                    source = model.get("weights_source") or source
                    digest = model.get("weights_digest")
                    new_key = final_cell_key(key, source, digest) if source and digest else key
                    self._conn.execute("UPDATE scores SET plan_key=?, cell_key=? WHERE cell_key=?",
                                       (key, new_key, key))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, run_id: str, config: dict[str, Any]) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO runs (run_id, started_at, config) VALUES (?, ?, ?)",
                               (run_id, time.time(), _dumps(config)))

    def finish_run(self, run_id: str, *, n_done: int, n_failed: int, n_skipped: int) -> None:
        with self._conn:
            self._conn.execute("UPDATE runs SET finished_at=?, n_done=?, n_failed=?, n_skipped=? WHERE run_id=?",
                               (time.time(), n_done, n_failed, n_skipped, run_id))

    # -- cells --------------------------------------------------------------------------
    def status(self, cell_key: str) -> str | None:
        row = self._conn.execute("SELECT status FROM scores WHERE cell_key=?", (cell_key,)).fetchone()
        return None if row is None else row["status"]

    def done_keys(self) -> set[str]:
        """Keys of the finished cells (status ``ok``)."""
        return {r[0] for r in self._conn.execute("SELECT cell_key FROM scores WHERE status='ok'")}

    def done_plan_keys(self) -> set[str]:
        """Plan keys with at least one finished cell, whatever weights it was scored with."""
        return {r[0] for r in self._conn.execute(
            "SELECT DISTINCT plan_key FROM scores WHERE status='ok' AND plan_key IS NOT NULL")}

    def record_score(self, cell: Cell, score: Score, *, run_id: str, weights_source: str, weights_label: str,
                     provenance: dict[str, Any], started_at: float, seconds: float) -> None:
        """Write one finished cell (one transaction)."""
        ci = score.ci or (None, None)
        self._write(cell, run_id=run_id, weights_source=weights_source, weights_label=weights_label, status="ok",
                    value=_finite_or_none(score.value), ceiling=_finite_or_none(score.ceiling),
                    ci_low=_finite_or_none(ci[0]), ci_high=_finite_or_none(ci[1]),
                    p_value=_finite_or_none(score.p_value), higher_is_better=int(score.higher_is_better),
                    summary=_dumps(score.summary), details=_dumps(score.details), error=None,
                    provenance=_dumps(provenance), started_at=started_at, seconds=seconds)

    def record_error(self, cell: Cell, error: str, *, run_id: str, weights_source: str = "", weights_label: str = "",
                     provenance: dict[str, Any] | None = None, started_at: float | None = None,
                     seconds: float = 0.0) -> None:
        """Write one failed cell; a later successful run replaces it."""
        self._write(cell, run_id=run_id, weights_source=weights_source, weights_label=weights_label, status="error",
                    value=None, ceiling=None, ci_low=None, ci_high=None, p_value=None, higher_is_better=None,
                    summary=None, details=None, error=error, provenance=_dumps(provenance or {}),
                    started_at=started_at or time.time(), seconds=seconds)

    def _write(self, cell: Cell, **fields: Any) -> None:
        plan_key = cell.plan_key or cell.key
        fields = {"cell_key": cell.key, "plan_key": plan_key, "dataset": cell.dataset, "model": cell.model,
                  "signal": cell.signal, "metric": cell.metric, "finished_at": time.time(), **fields}
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._transaction():
            self._conn.execute(f"INSERT OR REPLACE INTO scores ({cols}) VALUES ({marks})", tuple(fields.values()))
            if fields["status"] == "ok":  # errors of the same planned cell (e.g. weights unresolved) are superseded
                self._conn.execute("DELETE FROM scores WHERE plan_key=? AND status='error' AND cell_key<>?",
                                   (plan_key, cell.key))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the connection is in autocommit mode otherwise)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- reading ------------------------------------------------------------------------
    def rows(self, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Every row as a dict (JSON columns decoded), oldest first."""
        query = "SELECT * FROM scores"
        args: tuple[Any, ...] = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        for row in self._conn.execute(query + " ORDER BY finished_at", args):
            out = dict(row)
            for col in ("summary", "details", "provenance"):
                out[col] = json.loads(out[col]) if out[col] else {}
            yield out

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
