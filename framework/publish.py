"""A store's leaderboard with the registry's declarations: metric headlines, layer × area maps, benchmarks.

Used by ``framework run`` / ``framework leaderboard`` and by :meth:`framework.api.Results.write_leaderboard`.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from framework.errors import FrameworkError

__all__ = ["benchmark_board_of", "metric_declarations", "natural_key", "store_leaderboard"]

log = logging.getLogger("framework.publish")


def metric_declarations(names: set[str]) -> tuple[dict[str, str], dict[str, tuple]]:
    """Headline text and layer x area maps declared by each metric class (unknown metrics: none)."""
    from framework.registry import load_registry

    registry = load_registry()
    headlines: dict[str, str] = {}
    maps: dict[str, tuple] = {}
    for name in names:
        try:
            spec, _ = registry.resolve("metric", name)
            factory = spec.load_factory()
        except FrameworkError:
            continue
        headlines[name] = getattr(factory, "headline", "")
        maps[name] = tuple(getattr(factory, "layer_area_maps", ()))
    return headlines, maps


def natural_key(name: str) -> list:
    """Sort key that orders the numbers inside a name by value (``@50-250`` before ``@150-350``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def benchmark_board_of(rows: list[dict[str, Any]]):
    """The models × benchmarks board of the registered benchmarks that have rows in ``rows`` (None if none);
    a benchmark whose declaration is invalid is left out with a warning."""
    from framework.benchmark_board import build_benchmark_board
    from framework.registry import load_registry

    registry = load_registry()
    benches, params = [], {}
    for spec in sorted(registry.specs("benchmark"), key=lambda sp: natural_key(sp.name)):
        try:
            bench = registry.create("benchmark", spec.name)
            metric = registry.create("metric", bench.params.metric, **bench.params.metric_params)
        except FrameworkError as exc:
            log.warning("Benchmark '%s' left out of the leaderboard: %s", spec.name, exc)
            continue
        benches.append(bench)
        params[bench.name] = json.loads(json.dumps(metric.parameters()))
    return build_benchmark_board(rows, benches, params) if benches else None


def store_leaderboard(store_dir: Path, *, readonly: bool = False) -> tuple[list, Any, list[Path]]:
    """Build the leaderboard of the store at ``store_dir`` and write its files there.

    Returns the per-(dataset, metric) boards, the benchmark board (or None) and the paths written
    (empty, with a warning, when the store's folder cannot be written).
    """
    from framework.leaderboard import build_boards, latest_rows, write_leaderboard
    from framework.store import ResultsStore

    with ResultsStore(store_dir, readonly=readonly) as store:
        rows = list(store.rows(status="ok"))
        headlines, maps = metric_declarations({r["metric"] for r in rows})
        bboard = benchmark_board_of(rows)
        try:
            boards, paths = write_leaderboard(store, headlines, maps, benchmark_board=bboard)
        except OSError as exc:
            boards, paths = build_boards(latest_rows(store), headlines), []
            log.warning("Leaderboard files not written: '%s' is not writable (%s).", store_dir,
                        exc.strerror or exc)
    return boards, bboard, paths
