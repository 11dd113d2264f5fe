"""Leaderboard: rank models from the results store.

For every (dataset, metric) a table of models × signals. Each signal is its own
question (which band follows the hierarchy?), so models are never ranked by a
mean over signals: a board with one signal ranks the models by its headline value
(best first, honouring ``higher_is_better``); a board with several signals lists
the models by name, marks the best value of each signal, and leaves the ranks per
signal to the CSV. Each row also names the model's best signal. Comparing models
across datasets and metrics is the job of benchmarks (:mod:`framework.benchmark_board`).
Written as

* ``leaderboard.csv`` - long format, one row per (dataset, metric, signal, model)
  with the rank within that signal, ceiling, CI, p-value and best layer;
* ``leaderboard.md`` - one ranked table per (dataset, metric), signals as columns;
* ``leaderboard.html`` - the report of :mod:`framework.report`: sortable tables, bars with CIs and
  noise ceilings, layer profiles and layer × area maps drawn by matplotlib as inline SVG, and the
  provenance of the scores; self-contained (no external files).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.contracts import LayerAreaMap
from framework.fileio import atomic_file
from framework.store import ResultsStore

FILES = ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "layers.csv")
#: Columns of ``layers.csv`` (one row per cell, details-table row and measure).
LAYER_FIELDS = ("dataset", "metric", "signal", "model", "weights", "table", "layer", "layer_index", "area", "subject",
                "site", "measure", "value", "cell_key")
#: Columns of a details table that identify its row rather than measure something.
_ROW_KEYS = ("layer", "layer_index", "area", "subject", "site")


@dataclass
class Entry:
    """One model's scores for one (dataset, metric)."""

    model: str
    weights: str
    values: dict[str, float]        # signal -> headline value
    ceilings: dict[str, float | None]
    higher_is_better: bool
    #: signal -> (ci_low, ci_high) of the headline value when the score stored a CI
    cis: dict[str, tuple[float, float]] = field(default_factory=dict)

    def ranking_value(self, signals: list[str]) -> float:
        """The value models are ranked by: the headline value when the board has a single signal,
        else NaN (no ranking across signals)."""
        if len(signals) != 1:
            return math.nan
        v = self.values.get(signals[0])
        return v if v is not None and math.isfinite(v) else math.nan

    @property
    def best_signal(self) -> str | None:
        vals = {s: v for s, v in self.values.items() if v is not None and math.isfinite(v)}
        if not vals:
            return None
        pick = max if self.higher_is_better else min
        return pick(vals, key=vals.__getitem__)


@dataclass
class Board:
    dataset: str
    metric: str
    signals: list[str]
    entries: list[Entry]            # ranked
    headline: str = ""
    #: (model, weights, signal) -> the metric's details tables (for the layer x area plots)
    details: dict[tuple[str, str, str], dict[str, dict[str, list]]] = field(default_factory=dict)
    #: The metric's declared layer x area maps (:attr:`framework.contracts.MetricPlugin.layer_area_maps`).
    layer_area_maps: tuple[LayerAreaMap, ...] = ()
    #: (model, weights, signal) -> the score's summary (units, comparison, ... for the report's axis titles)
    summaries: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)


#: Weights column of a row asked for pretrained weights that were scored with a random-init fallback.
FALLBACK_TEXT = "random init (fallback)"
#: Appended by :func:`latest_rows` to the weights label of such a row.
FALLBACK_SUFFIX = " (fallback)"


def weights_text(source: str | None, label: str | None) -> str:
    """Short weights column: ``random init`` for any random initialisation asked for, ``random init
    (fallback)`` when pretrained weights were asked for but unavailable (label marked by :func:`latest_rows`)."""
    if source == "random":
        return FALLBACK_TEXT if (label or "").endswith(FALLBACK_SUFFIX) else "random init"
    if source == "file":
        return label or "file"
    return label or (source or "")


def is_fallback(row: dict[str, Any]) -> bool:
    """Whether ``row`` asked for pretrained weights (``weights`` auto or pretrained, no weights file)
    but was scored with random init because they were unavailable."""
    model = (row.get("provenance") or {}).get("model") or {}
    return (row.get("weights_source") == "random" and model.get("weights_mode") in ("auto", "pretrained")
            and not model.get("weights_file"))


def latest_rows(store: ResultsStore) -> list[dict[str, Any]]:
    """Successful rows, the most recent per (dataset, metric, signal, model, weights).

    The weights are told apart by source (pretrained, file, random init asked for) and a
    random-init *fallback* is its own kind: its weights label is marked (:data:`FALLBACK_SUFFIX`,
    shown as :data:`FALLBACK_TEXT`) so it is never shown as the pretrained model's score, and it is
    left out once the same (dataset, metric, signal, model) has a row scored with pretrained weights.
    """
    latest: dict[tuple, dict[str, Any]] = {}
    for row in store.rows(status="ok"):
        kind = row["weights_source"]
        if is_fallback(row):
            kind = "fallback"
            row = {**row, "weights_label": (row["weights_label"] or "random init") + FALLBACK_SUFFIX}
        latest[(row["dataset"], row["metric"], row["signal"], row["model"], kind)] = row
    pretrained = {key[:4] for key in latest if key[4] == "pretrained"}
    return [row for key, row in latest.items() if not (key[4] == "fallback" and key[:4] in pretrained)]


def _sort_key(entry: Entry, signals: list[str]) -> tuple[int, float]:
    m = entry.ranking_value(signals)
    if not math.isfinite(m):
        return (1, 0.0)
    return (0, -m if entry.higher_is_better else m)


def build_boards(rows: list[dict[str, Any]], headlines: dict[str, str] | None = None) -> list[Board]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["metric"])].append(row)
    boards = []
    for (dataset, metric), group in sorted(groups.items()):
        signals = sorted({r["signal"] for r in group}, key=_signal_order)
        entries: dict[tuple[str, str], Entry] = {}
        details, summaries = {}, {}
        for r in group:
            w = weights_text(r["weights_source"], r["weights_label"])
            e = entries.setdefault((r["model"], w), Entry(r["model"], w, {}, {}, bool(r["higher_is_better"])))
            e.values[r["signal"]] = r["value"] if r["value"] is not None else math.nan
            e.ceilings[r["signal"]] = r["ceiling"]
            if r.get("ci_low") is not None and r.get("ci_high") is not None:
                e.cis[r["signal"]] = (r["ci_low"], r["ci_high"])
            details[(r["model"], w, r["signal"])] = r.get("details") or {}
            summaries[(r["model"], w, r["signal"])] = r.get("summary") or {}
        ranked = sorted(entries.values(), key=lambda e: (_sort_key(e, signals), e.model, e.weights))
        boards.append(Board(dataset, metric, signals, ranked, (headlines or {}).get(metric, ""), details,
                            summaries=summaries))
    return boards


_BAND_ORDER = {"theta": 0, "alpha": 1, "beta": 2, "lowgamma": 3, "highgamma": 4}


def _signal_order(name: str) -> tuple:
    band, _, window = name.partition("@")
    start = window.split("-")[0]
    return (_BAND_ORDER.get(band, 99), band, int(start) if start.lstrip("-").isdigit() else 0, name)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}f}"


def _fmt_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``value [low, high]`` when a CI is stored (bounds to 2 decimals), else the value alone."""
    text = _fmt(value, digits)
    if ci is None or text == "—":
        return text
    return f"{text} [{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]"


#: Decimals of shown values; values equal at this precision are tied (share a rank).
RANK_DIGITS = 3


def competition_ranks(values: list[float | None], *, higher_is_better: bool = True,
                      digits: int = RANK_DIGITS) -> list[int | None]:
    """Competition ranks (1, 2, 2, 4) of ``values``, whatever their order: 1 + the number of values
    strictly better at ``digits`` decimals (equal shown values share a rank); None for a missing or
    non-finite value. The one ranking rule of the leaderboard files (CSV, Markdown, HTML) and the
    benchmark board."""
    shown = [round(float(v), digits) if v is not None and math.isfinite(v) else None for v in values]
    finite = [x for x in shown if x is not None]
    return [None if x is None else 1 + sum((y > x) if higher_is_better else (y < x) for y in finite)
            for x in shown]


def _rank_labels(b: Board) -> list[str]:
    """Competition ranks (ties share a rank) on a single-signal board; "—" otherwise or without a value."""
    higher = b.entries[0].higher_is_better if b.entries else True
    ranks = competition_ranks([e.ranking_value(b.signals) for e in b.entries], higher_is_better=higher)
    return [str(r) if r is not None else "—" for r in ranks]


def _ranking_text(b: Board) -> str:
    if len(b.signals) == 1:
        return "ranked by the headline value"
    return (f"{len(b.signals)} signals, each its own question: not ranked across signals (per-signal ranks in "
            "leaderboard.csv; the best value of each signal is marked *)")


def _best_per_signal(b: Board) -> dict[str, float]:
    """The best finite value of each signal (honouring the direction)."""
    out: dict[str, float] = {}
    for s in b.signals:
        vals = [e.values.get(s) for e in b.entries]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if vals:
            out[s] = max(vals) if (not b.entries or b.entries[0].higher_is_better) else min(vals)
    return out


# --------------------------------------------------------------------------------------
def render_terminal(boards: list[Board]) -> str:
    """Compact ranked tables for the terminal (no per-signal columns); the best signal's value with its CI."""
    if not boards:
        return "No scores in the store yet.\n"
    out = []
    for b in boards:
        out.append(f"{b.metric} on {b.dataset} — {len(b.entries)} model(s); {_ranking_text(b)}")
        header = ["rank", "model", "weights", "best signal", "best"]
        rows = []
        for rank, e in zip(_rank_labels(b), b.entries):
            best = e.best_signal
            rows.append([rank, e.model, e.weights, best or "—",
                         _fmt_ci(e.values.get(best), e.cis.get(best)) if best else "—"])
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        out.append("  ".join("-" * w for w in widths))
        for r in rows:
            out.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def md_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell: ``|`` escaped, HTML tags and line breaks
    neutralised, so a plugin, model or signal name cannot break the table or inject markup."""
    text = " ".join(str(value).split())
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;")
            .replace("<", "&lt;").replace(">", "&gt;"))


#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> Any:
    """A text cell for the CSV with a leading formula character neutralised by a ``'`` prefix;
    numbers and empty values are returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def render_markdown(boards: list[Board], *, before: str = "") -> str:
    lines = ["# Leaderboard", ""]
    if before:
        lines += [before.rstrip("\n"), ""]
    if not boards and not before:
        lines.append("No scores in the store yet.")
    for b in boards:
        lines.append(f"## {md_cell(b.metric)} on {md_cell(b.dataset)}")
        lines.append("")
        if b.headline:
            lines.append(f"Headline: {md_cell(b.headline)}")
            lines.append("")
        lines.append(f"Models {_ranking_text(b)}. A signal without a value (e.g. no significant pair) is shown as "
                     "—. A value stored with a confidence interval is shown as `value [low, high]`; a signal's "
                     "noise ceiling, when the data give one, is in its `ceiling` column. Equal values at 3 decimals "
                     "share a rank.")
        lines.append("")
        with_ceiling = {s for s in b.signals if any(e.ceilings.get(s) is not None for e in b.entries)}
        header = ["rank", "model", "weights", "best signal"]
        for s in b.signals:
            header += [md_cell(s)] + ([f"{md_cell(s)} ceiling"] if s in with_ceiling else [])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        best = _best_per_signal(b) if len(b.signals) > 1 else {}
        for rank, e in zip(_rank_labels(b), b.entries):
            cells = [rank, md_cell(e.model), md_cell(e.weights), md_cell(e.best_signal or "—")]
            for s in b.signals:
                cells.append(_fmt_ci(e.values.get(s), e.cis.get(s))
                             + (" *" if s in best and best[s] == e.values.get(s) else ""))
                if s in with_ceiling:
                    cells.append(_fmt(e.ceilings.get(s)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _layer_text(best: Any) -> str:
    """A best layer as CSV text: the name, or a JSON object for per-area layers (``{"IT": "fc6", ...}``)."""
    if best is None or isinstance(best, str):
        return best or ""
    return json.dumps(best, sort_keys=True)


def render_layer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-layer numbers of every cell in long format (``layers.csv``).

    Every details table with a ``layer`` column gives one output row per table row and numeric
    measure column (e.g. rsa's ``layer_area``: layer, area, then ``r_mean``, ``r_sem``, ...), with
    the cell's dataset, metric, signal, model and weights.
    """
    out = []
    for r in rows:
        weights = weights_text(r["weights_source"], r["weights_label"])
        for name, table in (r.get("details") or {}).items():
            if "layer" not in table:
                continue
            n = len(table["layer"])
            if not all(isinstance(v, list) and len(v) == n for v in table.values()):
                continue
            measures = [c for c, v in table.items() if c not in _ROW_KEYS
                        and all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in v)]
            for i in range(n):
                ident = {k: (table[k][i] if k in table else "") for k in _ROW_KEYS}
                for m in measures:
                    out.append({"dataset": r["dataset"], "metric": r["metric"], "signal": r["signal"],
                                "model": r["model"], "weights": weights, "table": name, **ident, "measure": m,
                                "value": table[m][i], "cell_key": r["cell_key"]})
    return out


def render_csv_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-format rows, ranked within (dataset, metric, signal)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["metric"], r["signal"])].append(r)
    out = []
    for (dataset, metric, signal), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                  _signal_order(kv[0][2]))):
        def key(r: dict[str, Any]) -> tuple[int, float]:
            v = r["value"]
            if v is None:
                return (1, 0.0)
            return (0, -v if r["higher_is_better"] else v)

        ordered = sorted(group, key=lambda r: (key(r), r["model"]))
        ranks = competition_ranks([r["value"] for r in ordered],
                                  higher_is_better=bool(ordered[0]["higher_is_better"]) if ordered else True)
        for rank, r in zip(ranks, ordered):
            summary = r["summary"] or {}
            out.append({
                "dataset": dataset, "metric": metric, "signal": signal,
                "rank": rank if rank is not None else "",
                "model": r["model"], "weights": weights_text(r["weights_source"], r["weights_label"]),
                "value": r["value"], "ceiling": r["ceiling"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "p_value": r["p_value"], "best_layer": _layer_text(summary.get("best_layer", "")),
                "weights_digest": (r["provenance"].get("model") or {}).get("weights_digest", ""),
                "dataset_digest": (r["provenance"].get("dataset") or {}).get("digest", ""),
                "seconds": r["seconds"], "cell_key": r["cell_key"],
            })
    return out


# --------------------------------------------------------------------------------------
def render_html(boards: list[Board], benchmark_board: Any = None, *, provenance: dict[str, Any] | None = None,
                title: str = "Leaderboard") -> str:
    """The HTML report page (:func:`framework.report.render_html`)."""
    from framework.report import render_html as report_html

    return report_html(boards, benchmark_board, provenance=provenance, title=title)


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_leaderboard(store: ResultsStore, headlines: dict[str, str] | None = None,
                      layer_area_maps: dict[str, tuple[LayerAreaMap, ...]] | None = None,
                      benchmark_board: Any = None) -> tuple[list[Board], list[Path]]:
    """Write the three leaderboard files into the store directory; return the boards and paths.

    ``headlines`` and ``layer_area_maps`` are the metrics' declarations by metric name
    (:attr:`framework.contracts.MetricPlugin.headline`, ``layer_area_maps``). A
    ``benchmark_board`` (:class:`framework.benchmark_board.BenchmarkBoard`) becomes the first
    section of the Markdown and HTML files and is written to ``benchmarks.csv`` too.
    """
    rows = latest_rows(store)
    boards = build_boards(rows, headlines)
    for board in boards:
        board.layer_area_maps = tuple((layer_area_maps or {}).get(board.metric, ()))
    directory = store.directory
    csv_rows = render_csv_rows(rows)
    import io

    buf = io.StringIO()
    fields = ["dataset", "metric", "signal", "rank", "model", "weights", "value", "ceiling", "ci_low", "ci_high",
              "p_value", "best_layer", "weights_digest", "dataset_digest", "seconds", "cell_key"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: csv_text(v) for k, v in row.items()} for row in csv_rows)
    paths = [directory / name for name in FILES]
    md_before = ""
    if benchmark_board is not None:
        from framework.benchmark_board import CSV_FIELDS, benchmark_csv_rows, render_benchmark_markdown

        md_before = render_benchmark_markdown(benchmark_board)
        bbuf = io.StringIO()
        bwriter = csv.DictWriter(bbuf, fieldnames=list(CSV_FIELDS))
        bwriter.writeheader()
        bwriter.writerows({k: csv_text(v) for k, v in row.items()} for row in benchmark_csv_rows(benchmark_board))
        paths.append(directory / "benchmarks.csv")
        _atomic_write(paths[-1], bbuf.getvalue())
    _atomic_write(paths[0], buf.getvalue())
    lbuf = io.StringIO()
    lwriter = csv.DictWriter(lbuf, fieldnames=list(LAYER_FIELDS))
    lwriter.writeheader()
    lwriter.writerows({k: csv_text(v) for k, v in row.items()} for row in render_layer_rows(rows))
    _atomic_write(paths[3], lbuf.getvalue())
    _atomic_write(paths[1], render_markdown(boards, before=md_before))
    from framework.report import collect_provenance

    _atomic_write(paths[2], render_html(boards, benchmark_board, provenance=collect_provenance(rows)))
    return boards, paths
