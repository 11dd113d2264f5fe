"""How fast the results store takes rows, against SQLite's own limit on this disk.

    python benchmarks/bench_store.py [--rows 2000] [--details-kb 38]

Writes ``--rows`` scored cells through :meth:`framework.store.ResultsStore.record_score` (one
transaction and fsync per row, as a run writes them), with per-layer details of about
``--details-kb`` KB of JSON each (the demo's rsa cells average 38 KB), and prints rows per second,
MB per second and the database size per row. The baseline is bare SQLite on the same disk: the
same rows (same JSON) inserted one committed transaction each, in the same WAL mode, so the ratio
is the framework's overhead. docs/scaling.md uses these figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _score(rng: np.random.Generator, kb: int):
    from framework.types import Score

    n = max(1, kb * 1024 // 60)              # ~60 bytes of JSON per (layer, site, r, p) row
    details = {"layer_site": {"layer": [f"conv{i % 9}" for i in range(n)], "site": [f"s{i}" for i in range(n)],
                              "r": rng.standard_normal(n).tolist(), "p": rng.random(n).tolist()}}
    return Score(float(rng.standard_normal()), ceiling=0.5, ci=(-0.1, 0.2), details=details,
                 summary={"best_layer": "conv3"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--details-kb", type=int, default=38)
    args = parser.parse_args()
    from framework.store import Cell, ResultsStore

    rng = np.random.default_rng(0)
    scores = [_score(rng, args.details_kb) for _ in range(min(args.rows, 50))]
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir="."))
    try:
        with ResultsStore(work / "store") as store:
            store.start_run("bench", {})
            t0 = time.perf_counter()
            for i in range(args.rows):
                store.record_score(Cell(f"key{i:08d}", "ds", f"m{i % 500}", "sig", "rsa"), scores[i % len(scores)],
                                   run_id="bench", weights_source="random", weights_label="random init",
                                   provenance={"seed": 0}, started_at=time.time(), seconds=0.05)
            ours = time.perf_counter() - t0
        db = work / "store" / "results.sqlite"
        size = db.stat().st_size
        # baseline: bare sqlite3, one committed insert per row, WAL, synchronous=FULL
        conn = sqlite3.connect(work / "bare.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE scores (cell_key TEXT PRIMARY KEY, value REAL, details TEXT)")
        blobs = [json.dumps(s.details) for s in scores]
        t0 = time.perf_counter()
        for i in range(args.rows):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO scores VALUES (?, ?, ?)", (f"key{i:08d}", 0.1, blobs[i % len(blobs)]))
            conn.execute("COMMIT")
        bare = time.perf_counter() - t0
        conn.close()
        mb = sum(len(b) for b in blobs) / len(blobs) * args.rows / 1e6
        print(f"{args.rows} rows, details {mb / args.rows * 1e3:.1f} KB JSON each, on {Path('.').resolve()}")
        print(f"ResultsStore.record_score : {args.rows / ours:8.0f} rows/s  {mb / ours:6.1f} MB/s  "
              f"({size / args.rows / 1e3:.1f} KB per row in the database)")
        print(f"bare sqlite3 insert+commit: {args.rows / bare:8.0f} rows/s  {mb / bare:6.1f} MB/s")
        print(f"ratio (framework / bare)  : {bare / ours:8.2f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
