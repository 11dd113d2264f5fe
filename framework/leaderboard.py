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
* ``leaderboard.html`` - the same tables plus inline SVG plots (bar chart of the
  ranking, model × signal heat map), self-contained (no external files).
"""
from __future__ import annotations

import csv
import html
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
        details = {}
        for r in group:
            w = weights_text(r["weights_source"], r["weights_label"])
            e = entries.setdefault((r["model"], w), Entry(r["model"], w, {}, {}, bool(r["higher_is_better"])))
            e.values[r["signal"]] = r["value"] if r["value"] is not None else math.nan
            e.ceilings[r["signal"]] = r["ceiling"]
            if r.get("ci_low") is not None and r.get("ci_high") is not None:
                e.cis[r["signal"]] = (r["ci_low"], r["ci_high"])
            details[(r["model"], w, r["signal"])] = r.get("details") or {}
        ranked = sorted(entries.values(), key=lambda e: (_sort_key(e, signals), e.model, e.weights))
        boards.append(Board(dataset, metric, signals, ranked, (headlines or {}).get(metric, ""), details))
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


def _rank_labels(b: Board) -> list[str]:
    """Competition ranks (ties share a rank) on a single-signal board; "—" otherwise or without a value."""
    out: list[str] = []
    previous, rank = None, 0
    for i, e in enumerate(b.entries):
        v = e.ranking_value(b.signals)
        if not math.isfinite(v):
            out.append("—")
            continue
        if v != previous:
            rank, previous = i + 1, v
        out.append(str(rank))
    return out


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
                     "—. A value stored with a confidence interval is shown as `value [low, high]`.")
        lines.append("")
        header = ["rank", "model", "weights", "best signal", *(md_cell(s) for s in b.signals)]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        best = _best_per_signal(b) if len(b.signals) > 1 else {}
        for rank, e in zip(_rank_labels(b), b.entries):
            cells = [rank, md_cell(e.model), md_cell(e.weights), md_cell(e.best_signal or "—"),
                     *[_fmt_ci(e.values.get(s), e.cis.get(s))
                       + (" *" if s in best and best[s] == e.values.get(s) else "") for s in b.signals]]
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

        for rank, r in enumerate(sorted(group, key=lambda r: (key(r), r["model"])), start=1):
            summary = r["summary"] or {}
            out.append({
                "dataset": dataset, "metric": metric, "signal": signal,
                "rank": rank if r["value"] is not None else "",
                "model": r["model"], "weights": weights_text(r["weights_source"], r["weights_label"]),
                "value": r["value"], "ceiling": r["ceiling"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "p_value": r["p_value"], "best_layer": _layer_text(summary.get("best_layer", "")),
                "weights_digest": (r["provenance"].get("model") or {}).get("weights_digest", ""),
                "dataset_digest": (r["provenance"].get("dataset") or {}).get("digest", ""),
                "seconds": r["seconds"], "cell_key": r["cell_key"],
            })
    return out


# --------------------------------------------------------------------------------------
def _color(v: float | None, lo: float, hi: float) -> str:
    if v is None or not math.isfinite(v):
        return "#eeeeee"
    t = 0.5 if hi <= lo else (v - lo) / (hi - lo)
    t = min(max(t, 0.0), 1.0)
    # white -> deep blue
    r = int(255 - t * (255 - 33))
    g = int(255 - t * (255 - 102))
    b = int(255 - t * (255 - 172))
    return f"#{r:02x}{g:02x}{b:02x}"


def _svg_bars(b: Board) -> str:
    entries = [e for e in b.entries if math.isfinite(e.ranking_value(b.signals))]
    if not entries:
        return ""
    vals = [e.ranking_value(b.signals) for e in entries]
    lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
    span = (hi - lo) or 1.0
    labels = [f"{e.model} ({e.weights})" if e.weights else e.model for e in entries]
    row_h, plot_w = 22, 360
    label_w = min(480, 7 * max(len(t) for t in labels) + 16)  # ~7 px per character at 12 px
    height = row_h * len(entries) + 30
    zero_x = label_w + (0 - lo) / span * plot_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{height}" '
             f'role="img" aria-label="ranking of models by {html.escape(b.metric)}">']
    for i, (text, v) in enumerate(zip(labels, vals)):
        y = 10 + i * row_h
        x0 = zero_x if v >= 0 else zero_x - (0 - v) / span * plot_w
        w = abs(v) / span * plot_w
        label = html.escape(text)
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">{label}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row_h - 6}" '
                     f'fill="#2166ac"><title>{label}: {v:.4f}</title></rect>')
        parts.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 14}" font-size="11">{v:.3f}</text>')
    parts.append(f'<line x1="{zero_x:.1f}" y1="5" x2="{zero_x:.1f}" y2="{height - 15}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(b: Board) -> str:
    vals = [v for e in b.entries for v in e.values.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["rank", "model", "weights", "best signal"])
    head += "".join(f'<th class="sig">{html.escape(s)}</th>' for s in b.signals)
    body = []
    for rank, e in zip(_rank_labels(b), b.entries):
        cells = [rank, e.model, e.weights, e.best_signal or "—"]
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        for s in b.signals:
            v = e.values.get(s)
            ceil = e.ceilings.get(s)
            ci = e.cis.get(s)
            tip = (f"{s}: {_fmt(v, 4)}" + (f" (ceiling {_fmt(ceil, 4)})" if ceil is not None else "")
                   + (f", CI [{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]" if ci is not None else ""))
            text = html.escape(_fmt_ci(v, ci))
            tds += f'<td class="num" style="background:{_color(v, lo, hi)}" title="{html.escape(tip)}">{text}</td>'
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def layer_area_profile(details: dict[str, dict[str, list]], maps: tuple[LayerAreaMap, ...] | list = ()
                       ) -> tuple[list[str], list[str], dict, LayerAreaMap] | None:
    """Areas (rows, hierarchy order), layers (columns, layer index order), ``{(area, layer): value}``
    and the map drawn, from the first of the metric's declared ``maps``
    (:attr:`framework.contracts.MetricPlugin.layer_area_maps`) present in ``details``; None if none is."""
    chosen = next((m for m in maps if m.table in details and m.value in details[m.table]
                   and {"layer", "area"} <= set(details[m.table])), None)
    if chosen is None:
        return None
    table, column = details[chosen.table], chosen.value
    n = len(table["layer"])
    layer_index = table.get("layer_index") or list(range(n))
    area_rank = table.get("area_rank")
    layers = [name for _, name in sorted({(i, name) for i, name in zip(layer_index, table["layer"])})]
    areas: list[str] = []
    for k in sorted(range(n), key=lambda k: (area_rank[k] if area_rank else 0, k)):
        if table["area"][k] not in areas:
            areas.append(table["area"][k])
    values = {(table["area"][k], table["layer"][k]): table[column][k] for k in range(n)}
    return areas, layers, values, chosen


def _svg_profile(details: dict[str, dict[str, list]], caption: str, maps: tuple[LayerAreaMap, ...]) -> str:
    profile = layer_area_profile(details, maps)
    if profile is None:
        return ""
    areas, layers, values, chosen = profile
    column = chosen.value
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(0.0, min(finite)), max(finite)
    cell, left, top = 34, 70, 90
    width, height = left + cell * len(layers) + 10, top + cell * len(areas) + 10
    parts = [f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(caption)}">']
    for j, layer in enumerate(layers):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x:.0f}" y="{top - 6}" font-size="11" transform="rotate(-60 {x:.0f} {top - 6})">'
                     f'{html.escape(str(layer))}</text>')
    for i, area in enumerate(areas):
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4:.0f}" text-anchor="end" font-size="11">'
                     f'{html.escape(str(area))}</text>')
        for j, layer in enumerate(layers):
            v = values.get((area, layer))
            tip = f"area {area}, layer {layer}: {column} = {_fmt(v, 4)}"
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{_color(v, lo, hi)}"><title>{html.escape(tip)}</title></rect>')
    parts.append(f"</svg><figcaption>{html.escape(caption)} ({html.escape(column)}: "
                 f"{html.escape(chosen.label)}; darker is higher)"
                 "</figcaption></figure>")
    return "".join(parts)


def _profiles(b: Board, n_models: int = 3) -> str:
    """Layer x area maps of the top models, each at its best signal."""
    figures = []
    for e in b.entries[:n_models]:
        signal = e.best_signal
        if signal is None:
            continue
        caption = f"{e.model} ({e.weights}), {signal}: layer × area"
        figures.append(_svg_profile(b.details.get((e.model, e.weights, signal), {}), caption, b.layer_area_maps))
    figures = [f for f in figures if f]
    return f'<div class="profiles">{"".join(figures)}</div>' if figures else ""


def render_html(boards: list[Board], *, title: str = "Leaderboard", before: str = "") -> str:
    sections = [before] if before else []
    for b in boards:
        headline = f"<p class='headline'>Headline: {html.escape(b.headline)}</p>" if b.headline else ""
        sections.append(
            f"<section><h2>{html.escape(b.metric)} on {html.escape(b.dataset)}</h2>{headline}"
            f"<p>Models {html.escape(_ranking_text(b))}; cells shaded by value (hover for the noise ceiling).</p>"
            f"{_svg_bars(b)}{_html_table(b)}"
            f"{_profiles(b)}</section>")
    if not sections:
        sections.append("<p>No scores in the store yet.</p>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px}th.sig{writing-mode:"
             "vertical-rl;transform:rotate(180deg);white-space:nowrap}td.num{text-align:right;font-variant-numeric:"
             "tabular-nums}section{margin-bottom:2.5em}.headline{color:#555}.profiles{display:flex;flex-wrap:wrap;"
             "gap:1.5em}figure{margin:0}figcaption{font-size:12px;color:#555;max-width:420px}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


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
    md_before = html_before = ""
    if benchmark_board is not None:
        from framework.benchmark_board import (
            CSV_FIELDS,
            benchmark_csv_rows,
            render_benchmark_html,
            render_benchmark_markdown,
        )

        md_before, html_before = render_benchmark_markdown(benchmark_board), render_benchmark_html(benchmark_board)
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
    _atomic_write(paths[2], render_html(boards, before=html_before))
    return boards, paths
