"""The leaderboard across benchmarks: models × benchmarks, normalised scores, one aggregate per model.

Each cell is a model's score on a benchmark (:meth:`framework.benchmarks.Benchmark.read`):
the normalised score (raw / noise ceiling, or the raw score for a 0-1 metric without a
ceiling) with its 95 % interval, and the raw score beside it. A row is a model as scored: its
name and its weights (pretrained, ``random init`` for a ``:random`` control, ``random init
(fallback)`` when pretrained weights were asked for but unavailable), so trained networks,
their random controls and baselines such as ``pixels`` are rows of one table.

Aggregate (documented rule)
    The mean of the model's normalised scores over *all* benchmarks of the board
    (Schrimpf et al. 2018 average the ceiled scores of their benchmarks). A benchmark on which
    the metric returned an undefined score (NaN: e.g. rho_align with too few significant
    sites, a constant model RDM) counts as 0, the score of a model with no brain-like
    structure there. A benchmark with no row for the model (not run, or the cell failed)
    leaves the aggregate undefined: the model is ranked after every model with an aggregate
    and the table says how many benchmarks it has. A model cannot climb by missing a benchmark.

Ranks
    By aggregate, best first; aggregates equal at the shown precision (3 decimals) share a
    rank (competition ranking: 1, 2, 2, 4).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.benchmarks import Benchmark, BenchmarkScore
from framework.leaderboard import FALLBACK_SUFFIX, competition_ranks, is_fallback, md_cell, weights_text

__all__ = ["BenchmarkBoard", "BoardRow", "build_benchmark_board", "benchmark_csv_rows", "render_benchmark_html",
           "render_benchmark_markdown", "render_benchmark_terminal"]

#: Decimals of the shown aggregate; equal at this precision = tied.
DIGITS = 3


@dataclass
class BoardRow:
    """One model (as scored) across the board's benchmarks."""

    model: str
    weights: str
    scores: dict[str, BenchmarkScore] = field(default_factory=dict)   # benchmark name -> score
    rank: str = "—"

    def aggregate(self, names: list[str]) -> float:
        """Mean normalised score over ``names`` (undefined scores count 0); NaN if one is missing."""
        if any(n not in self.scores for n in names) or not names:
            return math.nan
        vals = [self.scores[n].normalized for n in names]
        return sum(v if math.isfinite(v) else 0.0 for v in vals) / len(vals)


@dataclass
class BenchmarkBoard:
    """Models × benchmarks, ranked by aggregate."""

    benchmarks: list[Benchmark]
    rows: list[BoardRow]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.benchmarks]


def dataset_name(bench: Benchmark) -> str:
    """The dataset name the benchmark's rows carry: a registered name as is; for a dataset TOML
    path, its ``[dataset] name`` (the file stem when it has none or cannot be read)."""
    value = bench.params.dataset
    if not (value.endswith(".toml") or "/" in value):
        return value
    try:
        with open(Path(value).expanduser(), "rb") as fh:
            return str(tomllib.load(fh).get("dataset", {}).get("name") or Path(value).stem)
    except (OSError, tomllib.TOMLDecodeError):
        return Path(value).stem


def _weights_kind(row: dict[str, Any]) -> str:
    return "fallback" if is_fallback(row) else str(row.get("weights_source"))


def build_benchmark_board(rows: list[dict[str, Any]], benchmarks: list[Benchmark],
                          metric_params: dict[str, dict[str, Any]]) -> BenchmarkBoard | None:
    """The board of the ``benchmarks`` that have at least one row among ``rows``.

    Parameters
    ----------
    rows : list of dict
        ``ok`` rows of the results store, oldest first (``ResultsStore.rows(status="ok")``).
    benchmarks : list of Benchmark
    metric_params : dict of benchmark name -> dict
        The full validated parameters of each benchmark's metric (``metric.parameters()``): a row
        belongs to a benchmark when its dataset, signal, metric and these parameters match.

    Returns
    -------
    BenchmarkBoard or None
        None when no benchmark has a row.
    """
    by_model: dict[tuple[str, str], BoardRow] = {}
    pretrained: set[tuple[str, str]] = set()   # (benchmark, model) with a pretrained row
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    used: list[Benchmark] = []
    for bench in benchmarks:
        p = bench.params
        dname = dataset_name(bench)
        found = False
        for row in rows:
            prov = row.get("provenance") or {}
            params = (prov.get("metric") or {}).get("params")
            if (row.get("dataset"), row.get("signal"), row.get("metric")) != (dname, p.signal, p.metric):
                continue
            if params != metric_params.get(bench.name):
                continue
            kind = _weights_kind(row)
            latest[(bench.name, row["model"], kind)] = row
            if kind == "pretrained":
                pretrained.add((bench.name, row["model"]))
            found = True
        if found:
            used.append(bench)
    if not used:
        return None
    for (bname, model, kind), row in latest.items():
        if kind == "fallback" and (bname, model) in pretrained:
            continue  # the pretrained score replaces the fallback's
        label = row.get("weights_label")
        if kind == "fallback":
            label = (label or "random init") + FALLBACK_SUFFIX
        weights = weights_text(row.get("weights_source"), label)
        entry = by_model.setdefault((model, weights), BoardRow(model, weights))
        bench = next(b for b in used if b.name == bname)
        entry.scores[bname] = bench.read(row)
    names = [b.name for b in used]
    ranked = sorted(by_model.values(), key=lambda r: _sort_key(r, names))
    _assign_ranks(ranked, names)
    return BenchmarkBoard(used, ranked)


def _sort_key(row: BoardRow, names: list[str]) -> tuple:
    agg = row.aggregate(names)
    if not math.isfinite(agg):
        return (1, -len([n for n in names if n in row.scores]), 0.0, row.model, row.weights)
    return (0, 0, -round(agg, DIGITS), row.model, row.weights)


def _assign_ranks(rows: list[BoardRow], names: list[str]) -> None:
    """Competition ranks by aggregate at :data:`DIGITS` decimals (:func:`framework.leaderboard.competition_ranks`);
    no rank without an aggregate."""
    ranks = competition_ranks([row.aggregate(names) for row in rows], digits=DIGITS)
    for row, rank in zip(rows, ranks):
        row.rank = str(rank) if rank is not None else "—"


def _fmt(x: float | None, digits: int = DIGITS) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _cell_text(score: BenchmarkScore | None) -> str:
    """``normalised [lo, hi] (raw r)`` for one cell; ``—`` when missing."""
    if score is None:
        return "—"
    if not math.isfinite(score.normalized):
        return f"undefined (raw {_fmt(score.raw)})" if math.isfinite(score.raw) else "undefined"
    ci = score.normalized_ci
    ci_text = f" [{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]" if ci else ""
    return f"{_fmt(score.normalized)}{ci_text} (raw {_fmt(score.raw)})"


def _coverage(row: BoardRow, names: list[str]) -> str:
    return f"{sum(n in row.scores for n in names)}/{len(names)}"


RULE_TEXT = ("Normalised score = raw score / noise ceiling (raw score for metrics on a 0-1 scale without a "
             "ceiling), with its 95 % interval. Aggregate = mean normalised score over all benchmarks; an "
             "undefined score counts as 0, a missing benchmark leaves the aggregate undefined (ranked last). Equal "
             "aggregates at 3 decimals share a rank.")


def render_benchmark_terminal(board: BenchmarkBoard) -> str:
    names = board.names
    header = ["rank", "model", "weights", "aggregate", "benchmarks", *names]
    table = [[r.rank, r.model, r.weights, _fmt(r.aggregate(names)), _coverage(r, names),
              *[_fmt(r.scores[n].normalized) if n in r.scores else "—" for n in names]] for r in board.rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    out = [f"Benchmarks — {len(board.rows)} model(s) × {len(names)} benchmark(s); normalised scores "
           "(raw / noise ceiling), ranked by their mean",
           "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in table]
    return "\n".join(out) + "\n\n"


def render_benchmark_markdown(board: BenchmarkBoard) -> str:
    names = board.names
    lines = ["## Benchmarks", "", RULE_TEXT, "", "| benchmark | dataset | signal | metric | area | score | reference |",
             "|---|---|---|---|---|---|---|"]
    for b in board.benchmarks:
        p = b.params
        params = ", ".join(f"{k}={v}" for k, v in p.metric_params.items())
        lines.append("| " + " | ".join(md_cell(x) for x in (
            b.name, p.dataset, p.signal, p.metric + (f" ({params})" if params else ""), p.area or "headline",
            "raw / ceiling" if p.normalize == "ceiling" else "raw (0-1, no ceiling)", p.reference or "—")) + " |")
    lines += ["", "| rank | model | weights | aggregate | benchmarks | " + " | ".join(md_cell(n) for n in names) + " |",
              "|" + "|".join("---" for _ in range(5 + len(names))) + "|"]
    for r in board.rows:
        cells = [r.rank, md_cell(r.model), md_cell(r.weights), _fmt(r.aggregate(names)), _coverage(r, names),
                 *[md_cell(_cell_text(r.scores.get(n))) for n in names]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def benchmark_csv_rows(board: BenchmarkBoard) -> list[dict[str, Any]]:
    """Long format: one row per (model, weights, benchmark)."""
    names = board.names
    out = []
    for r in board.rows:
        agg = r.aggregate(names)
        for b in board.benchmarks:
            s = r.scores.get(b.name)
            nci = s.normalized_ci if s else None
            out.append({
                "benchmark": b.name, "dataset": b.params.dataset, "signal": b.params.signal, "metric": b.params.metric,
                "area": b.params.area, "rank": r.rank, "model": r.model, "weights": r.weights,
                "aggregate": agg if math.isfinite(agg) else None,
                "normalized": _num(s.normalized) if s else None,
                "normalized_ci_low": nci[0] if nci else None, "normalized_ci_high": nci[1] if nci else None,
                "raw": _num(s.raw) if s else None, "ceiling": s.ceiling if s else None,
                "raw_ci_low": s.ci[0] if s and s.ci else None, "raw_ci_high": s.ci[1] if s and s.ci else None,
                "layer": s.layer if s else None, "status": "missing" if s is None else (
                    "ok" if math.isfinite(s.normalized) else "undefined"),
            })
    return out


CSV_FIELDS = ("benchmark", "dataset", "signal", "metric", "area", "rank", "model", "weights", "aggregate",
              "normalized", "normalized_ci_low", "normalized_ci_high", "raw", "ceiling", "raw_ci_low", "raw_ci_high",
              "layer", "status")


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def render_benchmark_html(board: BenchmarkBoard) -> str:
    """The benchmark section of the HTML report (:mod:`framework.report`): sortable table and bars."""
    from framework.report import benchmark_section

    return benchmark_section(board)
