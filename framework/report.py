"""The HTML leaderboard report (``leaderboard.html``): sortable tables, figures and provenance.

One self-contained page (no external file, no network, no JavaScript library): the figures are
static SVG drawn by matplotlib (:mod:`framework.figures`) and inlined; a few lines of inline
JavaScript sort the tables. For the benchmark board and for every (dataset, metric) board:

1. a sortable table (``<table class="sortable">``; click a header: ascending, again: descending;
   numbers sort as numbers, "—" stays last); ranks are competition ranks (ties share a rank,
   :func:`framework.leaderboard.competition_ranks`), the rule of the CSV and Markdown files;
2. bars of the headline value per model and signal (or benchmark) with the stored CI as error
   bars and the noise ceiling per signal as a dashed line (``data-chart="bars"``);
3. layer profiles of the top models (at most :data:`TOP_MODELS`, by their value at their best
   signal): the value of the metric's declared layer × area table against the layer (network
   order), one line per area, shaded ±SEM over sites or subjects when the details hold them
   (``data-chart="profiles"``);
4. layer × area maps of the same models on one diverging colour scale centred at 0, shared by
   every map of the page section (``data-chart="maps"``; the ``<figure>`` carries ``data-vmin`` and
   ``data-vmax``);
5. a provenance footer: versions, date, seeds, dataset and weights digests, weights labels.

The numbers come from the results-store rows only; nothing is estimated for the page except the
SEM of a layer profile, computed as ``std(ddof=1) / sqrt(n)`` from the per-site or per-subject
rows the metric declared (:attr:`framework.contracts.LayerAreaMap.per_unit`) when it stored no
SEM column (:attr:`~framework.contracts.LayerAreaMap.sem`).
"""
from __future__ import annotations

import datetime as _dt
import html
import math
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from framework import figures
from framework.contracts import LayerAreaMap
from framework.leaderboard import Board, Entry, _fmt, _fmt_ci, _rank_labels, _ranking_text, weights_text

__all__ = ["LayerAreaData", "TOP_MODELS", "benchmark_section", "collect_provenance", "layer_area_data", "render_html"]

#: Models per board whose layer profiles and maps are drawn.
TOP_MODELS = 3
#: Packages whose versions the footer lists (those the scores recorded, then the page's own).
PACKAGES = ("numpy", "scipy", "torch", "torchvision", "timm", "mne", "scikit-learn", "matplotlib")
_UNITS = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ", "kendall_tau_a": "Kendall τa"}


# --------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------
@dataclass
class LayerAreaData:
    """A metric's layer × area table, as drawn.

    Attributes
    ----------
    areas : list of str, (n_areas,)
        Hierarchy order (``area_rank`` when the table has it, else first appearance).
    layers : list of str, (n_layers,)
        Network order (``layer_index``).
    values : ndarray, (n_areas, n_layers) float64
        The declared value column (NaN where missing).
    sem : ndarray, (n_areas, n_layers) float64 or None
        SEM of ``values`` over sites/subjects: the stored column, or ``std(ddof=1) / sqrt(n)`` of the
        per-unit rows (NaN where n < 2); None when the details hold neither.
    n : ndarray, (n_areas, n_layers) int or None
        Number of per-unit values behind each SEM (None when the SEM is stored or absent).
    sem_note : str
        Where the SEM comes from, for the caption.
    map : LayerAreaMap
        The declaration drawn.
    """

    areas: list[str]
    layers: list[str]
    values: np.ndarray
    sem: np.ndarray | None
    n: np.ndarray | None
    sem_note: str
    map: LayerAreaMap


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def _complete(table: Any, columns: tuple[str, ...]) -> bool:
    if not isinstance(table, dict) or not all(isinstance(table.get(c), list) for c in columns):
        return False
    return len({len(table[c]) for c in columns}) == 1


def layer_area_data(details: dict[str, dict[str, list]], maps: tuple[LayerAreaMap, ...] | list = ()
                    ) -> LayerAreaData | None:
    """The first of the metric's declared ``maps`` present in ``details`` as matrices; None if none is.

    Parameters
    ----------
    details : dict of table name -> dict of column -> list
        A score's details tables (``Score.details`` as stored).
    maps : sequence of LayerAreaMap
        The metric's declarations (:attr:`framework.contracts.MetricPlugin.layer_area_maps`).
    """
    chosen = next((m for m in maps if _complete(details.get(m.table), ("layer", "area", m.value))), None)
    if chosen is None:
        return None
    table = details[chosen.table]
    n_rows = len(table["layer"])
    index = table["layer_index"] if _complete(table, ("layer", "layer_index")) else list(range(n_rows))
    layers = [name for _, name in sorted({(int(i), str(name)) for i, name in zip(index, table["layer"])})]
    rank = table["area_rank"] if _complete(table, ("area", "area_rank")) else [0] * n_rows
    areas: list[str] = []
    for k in sorted(range(n_rows), key=lambda k: (rank[k], k)):
        if str(table["area"][k]) not in areas:
            areas.append(str(table["area"][k]))
    a_pos, l_pos = {a: i for i, a in enumerate(areas)}, {name: j for j, name in enumerate(layers)}
    values = np.full((len(areas), len(layers)), np.nan)
    for k in range(n_rows):
        values[a_pos[str(table["area"][k])], l_pos[str(table["layer"][k])]] = _num(table[chosen.value][k])
    sem, n, note = None, None, "no SEM: one value per layer"
    if chosen.sem and _complete(table, ("layer", chosen.sem)):
        sem = np.full_like(values, np.nan)
        for k in range(n_rows):
            sem[a_pos[str(table["area"][k])], l_pos[str(table["layer"][k])]] = _num(table[chosen.sem][k])
        note = f"shaded: ±1 SEM stored by the metric (column '{chosen.sem}' of table '{chosen.table}')"
    elif chosen.per_unit is not None:
        name, column = chosen.per_unit
        units = details.get(name)
        unit = next((u for u in ("site", "subject") if _complete(units, ("layer", "area", u, column))), None)
        if unit is not None:
            groups: dict[tuple[int, int], list[float]] = defaultdict(list)
            for lay, area, v in zip(units["layer"], units["area"], units[column]):
                i, j = a_pos.get(str(area)), l_pos.get(str(lay))
                if i is not None and j is not None and math.isfinite(_num(v)):
                    groups[(i, j)].append(_num(v))
            sem = np.full_like(values, np.nan)
            n = np.zeros(values.shape, dtype=int)
            for (i, j), vals in groups.items():
                n[i, j] = len(vals)
                if len(vals) >= 2:
                    sem[i, j] = float(np.std(vals, ddof=1) / math.sqrt(len(vals)))
            note = (f"shaded: ±1 SEM over {unit}s, std(ddof=1)/√n of the per-{unit} values ('{column}' of "
                    f"table '{name}'; n = {int(n[n > 0].min()) if (n > 0).any() else 0}–{int(n.max())} per point)")
    return LayerAreaData(areas, layers, values, sem, n, note, chosen)


def _signal_unit(summaries: list[dict[str, Any]], headline: str) -> str:
    """The unit of a board's headline: the squared unit or comparison the metric reported, else one the
    headline text names; empty when none is known."""
    for s in summaries:
        if str(s.get("score_unit") or "").startswith("R^2"):
            return "R², mean squared Spearman ρ"
    for s in summaries:
        if s.get("comparison") in _UNITS:
            return _UNITS[s["comparison"]]
    for word, unit in (("Pearson", "Pearson r"), ("Spearman", "Spearman ρ"), ("CKA", "CKA, 0-1")):
        if word in headline:
            return unit
    return ""


def _value_label(b: Board, unit: str) -> str:
    """Axis title of a board's headline values: the metric and the unit (the headline text is in the caption)."""
    return f"{b.metric} headline value" + (f" ({unit})" if unit else "")


def _top_entries(b: Board, n: int = TOP_MODELS) -> list[Entry]:
    """The ``n`` models with the best value at their best signal (honouring the direction)."""
    def key(e: Entry) -> tuple:
        s = e.best_signal
        v = e.values.get(s) if s else None
        if v is None or not math.isfinite(v):
            return (1, 0.0, e.model, e.weights)
        return (0, -v if e.higher_is_better else v, e.model, e.weights)

    return [e for e in sorted(b.entries, key=key)[:n] if e.best_signal is not None]


def _title(e: Any) -> str:
    """A model's panel title: its name and full weights label."""
    return f"{e.model} ({e.weights})" if e.weights else e.model


def _label(e: Any) -> str:
    """A model's axis label: its name over a short weights tag (the full label is in the table)."""
    weights = str(e.weights or "")
    if not weights or weights.startswith("no weights"):
        return e.model
    if "fallback" in weights:
        tag = "random init (fallback)"
    elif weights.startswith("random init"):
        tag = "random init"
    else:                                   # "ImageNet-1k (torchvision IMAGENET1K_V1)" -> "ImageNet-1k"
        tag = weights.split(" (", 1)[0]
    return f"{e.model}\n{tag}"


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------
def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_provenance(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the shown rows recorded about how they were made, gathered for the footer.

    Only fields the store holds are reported: per row ``provenance`` (``run_id``, ``seed``,
    ``packages``, ``dataset.digest``, ``model.weights_digest`` ...) and the weights columns.

    Returns
    -------
    dict
        ``packages`` (name -> sorted distinct versions recorded with the scores), ``runs`` (run ids),
        ``seeds`` (distinct seeds), ``datasets`` (one dict per distinct (name, digest)), ``models``
        (one dict per distinct (model, weights, digest)).
    """
    packages: dict[str, set[str]] = defaultdict(set)
    runs, seeds = set(), set()
    datasets: dict[tuple, dict[str, Any]] = {}
    models: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        prov = r.get("provenance") or {}
        for name, version in (prov.get("packages") or {}).items():
            packages[str(name)].add(str(version))
        if prov.get("run_id") or r.get("run_id"):
            runs.add(str(prov.get("run_id") or r.get("run_id")))
        if prov.get("seed") is not None:
            seeds.add(prov["seed"])
        d = prov.get("dataset") or {}
        datasets.setdefault((r["dataset"], d.get("digest") or ""), {
            "name": r["dataset"], "digest": d.get("digest") or "", "kind": d.get("kind") or "",
            "n_stimuli": d.get("n_stimuli")})
        m = prov.get("model") or {}
        weights = weights_text(r.get("weights_source"), r.get("weights_label"))
        models.setdefault((r["model"], weights, m.get("weights_digest") or ""), {
            "model": r["model"], "weights": weights, "source": r.get("weights_source") or "",
            "digest": m.get("weights_digest") or "", "seed": m.get("weights_seed"),
            "detail": m.get("weights_detail") or "", "file": m.get("weights_file") or ""})
    return {"packages": {k: sorted(v) for k, v in sorted(packages.items())}, "runs": sorted(runs),
            "seeds": sorted(seeds, key=str),
            "datasets": sorted(datasets.values(), key=lambda d: (d["name"], d["digest"])),
            "models": sorted(models.values(), key=lambda m: (m["model"], m["weights"], m["digest"]))}


def _footer(provenance: dict[str, Any] | None, written: str) -> str:
    import framework

    p = provenance or {}
    esc = html.escape
    recorded = p.get("packages") or {}
    lines = [f"<p>Page written {esc(written)} by framework {esc(framework.__version__)}; figures drawn with "
             f"matplotlib {esc(_version('matplotlib'))}.</p>"]
    names = [n for n in ("framework", "python", *PACKAGES) if n in recorded or n in PACKAGES]
    cells = []
    for n in names:
        if n in recorded:
            cells.append((n, ", ".join(recorded[n]), "recorded with the scores"))
        elif n == "matplotlib":
            cells.append((n, _version(n), "this page"))
        else:
            cells.append((n, "not recorded", ""))
    lines.append("<table class='provenance sortable' data-table='packages'><thead><tr><th>package</th><th>version"
                 "</th><th>source</th></tr></thead><tbody>" + "".join(
                     f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>" for a, b, c in cells)
                 + "</tbody></table>")
    seeds = ", ".join(str(s) for s in p.get("seeds") or []) or "not recorded"
    runs = ", ".join(p.get("runs") or []) or "not recorded"
    lines.append(f"<p>Run seed(s): <span class='seeds'>{esc(seeds)}</span>. Run id(s): {esc(runs)}.</p>")
    if p.get("datasets"):
        lines.append("<table class='provenance sortable' data-table='datasets'><thead><tr><th>dataset</th>"
                     "<th>kind</th><th>stimuli</th><th>dataset digest</th></tr></thead><tbody>" + "".join(
                         f"<tr><td>{esc(d['name'])}</td><td>{esc(str(d['kind']))}</td><td class='num'>"
                         f"{esc(str(d['n_stimuli'] if d['n_stimuli'] is not None else '—'))}</td>"
                         f"<td class='digest'>{esc(d['digest'] or 'not recorded')}</td></tr>" for d in p["datasets"])
                     + "</tbody></table>")
    if p.get("models"):
        lines.append("<table class='provenance sortable' data-table='weights'><thead><tr><th>model</th><th>weights "
                     "(what it was trained on)</th><th>source</th><th>weights digest</th><th>detail</th></tr></thead>"
                     "<tbody>" + "".join(
                         f"<tr><td>{esc(m['model'])}</td><td>{esc(m['weights'])}</td><td>{esc(m['source'])}</td>"
                         f"<td class='digest'>{esc(m['digest'] or 'not recorded')}</td><td>"
                         f"{esc(' '.join(x for x in (m['detail'], m['file']) if x))}</td></tr>" for m in p["models"])
                     + "</tbody></table>")
    return "<footer class='provenance'><h2>Provenance</h2>" + "".join(lines) + "</footer>"


# --------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------
def _td(text: str, sort: float | None = None, cls: str = "") -> str:
    attrs = f" class='{cls}'" if cls else ""
    if sort is not None and math.isfinite(sort):
        attrs += f" data-sort='{sort!r}'"
    return f"<td{attrs}>{html.escape(text)}</td>"


def _table(header: list[str], rows: list[str], kind: str) -> str:
    head = "".join(f"<th scope='col' title='click to sort'>{html.escape(h)}</th>" for h in header)
    return (f"<div class='table-wrap'><table class='sortable' data-table='{kind}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _figure(svg: str, caption: str, kind: str, extra: str = "") -> str:
    return (f"<figure class='fig fig-{kind}' data-figure='{kind}'{extra}>{svg}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _board_table(b: Board) -> str:
    best = {}
    for s in b.signals:
        vals = [e.values.get(s) for e in b.entries if e.values.get(s) is not None and math.isfinite(e.values[s])]
        if vals:
            best[s] = max(vals) if b.entries[0].higher_is_better else min(vals)
    with_ceiling = [s for s in b.signals if any(e.ceilings.get(s) is not None for e in b.entries)]
    header = ["rank", "model", "weights", "best signal"]
    for s in b.signals:
        header.append(f"{s} [95% CI]")
        if s in with_ceiling:
            header.append(f"{s} ceiling")
    rows = []
    for rank, e in zip(_rank_labels(b), b.entries):
        cells = [_td(rank, float(rank) if rank.isdigit() else None, "num"), _td(e.model), _td(e.weights),
                 _td(e.best_signal or "—")]
        for s in b.signals:
            v = e.values.get(s)
            cls = "num best" if s in best and v == best[s] else "num"
            cells.append(_td(_fmt_ci(v, e.cis.get(s)), v, cls))
            if s in with_ceiling:
                c = e.ceilings.get(s)
                cells.append(_td(_fmt(c), c, "num"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table(header, rows, "board")


def _board_bars(b: Board, unit: str, salt: str) -> str:
    entries = b.entries
    if not any(v is not None and math.isfinite(v) for e in entries for v in e.values.values()):
        return ""
    shape = (len(entries), len(b.signals))
    vals, lo, hi, ceil = (np.full(shape, np.nan) for _ in range(4))
    for i, e in enumerate(entries):
        for j, s in enumerate(b.signals):
            vals[i, j] = _num(e.values.get(s))
            if s in e.cis:
                lo[i, j], hi[i, j] = _num(e.cis[s][0]), _num(e.cis[s][1])
            ceil[i, j] = _num(e.ceilings.get(s))
    label = _value_label(b, unit)
    svg = figures.bar_chart([_label(e) for e in entries], b.signals, vals, ci_low=lo, ci_high=hi, ceilings=ceil,
                            ylabel=label, salt=salt)
    n_ci = int(np.isfinite(lo).sum())
    caption = (f"{b.metric} on {b.dataset}: headline value of each model per signal "
               f"({'error bars: the stored 95% CI' if n_ci else 'no CI stored'}; dashed: noise ceiling of the signal "
               f"where the data give one). Headline: {b.headline or 'not declared'}")
    return _figure(svg, caption, "bars")


def _board_layers(b: Board, salt: str) -> str:
    top = _top_entries(b)
    data = []
    for e in top:
        d = layer_area_data(b.details.get((e.model, e.weights, e.best_signal), {}), b.layer_area_maps)
        if d is not None and np.isfinite(d.values).any():
            data.append((e, d))
    if not data:
        why = ("the metric declares no layer × area table" if not b.layer_area_maps else
               "the scores hold none of the metric's declared layer × area tables")
        return f"<p class='note'>No layer profiles or maps: {html.escape(why)}.</p>"
    label = data[0][1].map.label
    profile_panels = [{"title": f"{_title(e)}, {e.best_signal}", "layers": d.layers, "areas": d.areas,
                       "values": d.values, "sem": d.sem} for e, d in data]
    notes = sorted({d.sem_note for _, d in data})
    profiles = figures.layer_profiles(profile_panels, ylabel=label, salt=salt)
    which = (f"the top {len(data)} model(s) by their value at their best signal" if len(b.signals) > 1 else
             f"the top {len(data)} model(s)")
    out = _figure(profiles, f"Layer profiles of {which}: {label}, against the layer (network order), one line per "
                            f"area. {' '.join(n[0].upper() + n[1:] + '.' for n in notes)}", "profiles")
    vmax = figures.symmetric_limit(np.concatenate([d.values.ravel() for _, d in data]))
    maps = figures.layer_area_maps(profile_panels, vmax=vmax, label=label, salt=salt)
    out += _figure(maps, f"Layer × area maps of the same models: {label}. One diverging colour scale for this "
                         f"section, centred at 0 (white), from {-vmax:.3g} (blue) to {vmax:.3g} (red); grey: no value.",
                   "maps", f" data-vmin='{-vmax!r}' data-vmax='{vmax!r}' data-cmap='{figures.CMAP}'")
    return out


def _board_section(b: Board, index: int) -> str:
    unit = _signal_unit(list(b.summaries.values()), b.headline)
    salt = f"b{index}"
    headline = f"<p class='headline'>Headline: {html.escape(b.headline)}</p>" if b.headline else ""
    ranking = _ranking_text(b).replace("is marked *", "is in bold")
    return (f"<section class='board' id='board-{index}' data-dataset='{html.escape(b.dataset, quote=True)}' "
            f"data-metric='{html.escape(b.metric, quote=True)}'><h2>{html.escape(b.metric)} on "
            f"{html.escape(b.dataset)}</h2>{headline}<p>Models {html.escape(ranking)}. Equal values (at 3 "
            "decimals) share a rank. Click a column header to sort.</p>"
            f"{_board_table(b)}{_board_bars(b, unit, salt)}{_board_layers(b, salt)}</section>")


def benchmark_section(board: Any) -> str:
    from framework.benchmark_board import RULE_TEXT, _cell_text, _coverage

    names = board.names
    header = ["rank", "model", "weights", "aggregate", "benchmarks", *names]
    rows = []
    for r in board.rows:
        agg = r.aggregate(names)
        cells = [_td(r.rank, float(r.rank) if r.rank.isdigit() else None, "num"), _td(r.model), _td(r.weights),
                 _td(_fmt(agg), agg, "num"), _td(_coverage(r, names), len([n for n in names if n in r.scores]), "num")]
        for n in names:
            s = r.scores.get(n)
            cells.append(_td(_cell_text(s), s.normalized if s else None, "num"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    shape = (len(board.rows), len(names))
    vals, lo, hi, ceil = (np.full(shape, np.nan) for _ in range(4))
    for i, r in enumerate(board.rows):
        for j, bench in enumerate(board.benchmarks):
            s = r.scores.get(bench.name)
            if s is not None:
                vals[i, j] = _num(s.normalized)
                if s.normalized_ci:
                    lo[i, j], hi[i, j] = _num(s.normalized_ci[0]), _num(s.normalized_ci[1])
            if bench.params.normalize == "ceiling":
                ceil[i, j] = 1.0
    figure = ""
    if np.isfinite(vals).any():
        ylabel = "normalised score (raw / noise ceiling; raw for 0-1 metrics without a ceiling)"
        svg = figures.bar_chart([_label(r) for r in board.rows], names, vals, ci_low=lo, ci_high=hi, ceilings=ceil,
                                ylabel=ylabel, ceiling_label="noise ceiling", salt="bench")
        figure = _figure(svg, "Normalised score of each model per benchmark (error bars: its 95% interval; dashed: "
                              "the noise ceiling, 1 on the normalised scale, for benchmarks normalised by one).",
                         "bars")
    refs = "".join(f"<li><b>{html.escape(b.name)}</b>: {html.escape(b.params.metric)} on "
                   f"{html.escape(b.params.dataset)}, {html.escape(b.params.signal)}"
                   f"{', area ' + html.escape(b.params.area) if b.params.area else ''}"
                   f"{' — ' + html.escape(b.params.reference) if b.params.reference else ''}</li>"
                   for b in board.benchmarks)
    return (f"<section class='board benchmarks' id='benchmarks'><h2>Benchmarks</h2><p>{html.escape(RULE_TEXT)}</p>"
            f"<ul class='benchmarks'>{refs}</ul>{_table(header, rows, 'benchmarks')}{figure}</section>")


_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;color:#222;"
    "padding:0 1em}h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse;margin:.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}"
    "th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}th:hover{background:#e6e6e6}"
    "th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.best{font-weight:bold}"
    "td.digest{font-family:ui-monospace,monospace;font-size:11px;word-break:break-all}"
    ".table-wrap{overflow-x:auto}section{margin-bottom:2.5em}.headline{color:#555}.note{color:#777}"
    "figure{margin:1em 0}figure svg.chart{max-width:100%;height:auto;display:block}"
    "figcaption{font-size:12px;color:#555;max-width:900px}footer.provenance{font-size:12px;color:#444;"
    "border-top:2px solid #ccc;margin-top:3em}"
)

_SCRIPT = """
(function(){
  function key(td){
    var s = td.getAttribute('data-sort');
    if (s !== null && s !== '') { var x = parseFloat(s); if (!isNaN(x)) return x; }
    var t = td.textContent.trim();
    if (t === '' || t === '\\u2014') return null;
    var n = Number(t);
    return isNaN(n) ? t : n;
  }
  function sortBy(table, th, col){
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) return (x === null) - (y === null);
      var c = (typeof x === 'number' && typeof y === 'number') ? x - y
            : String(x).localeCompare(String(y), undefined, {numeric: true});
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('thead th').forEach(function(th, col){
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, th, col); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def render_html(boards: list[Board], benchmark_board: Any = None, *, provenance: dict[str, Any] | None = None,
                title: str = "Leaderboard", written: str | None = None) -> str:
    """The self-contained report page.

    Parameters
    ----------
    boards : list of Board
        The (dataset, metric) boards (:func:`framework.leaderboard.build_boards`), with their metric's
        ``layer_area_maps`` set.
    benchmark_board : BenchmarkBoard, optional
        The models × benchmarks board; its section comes first.
    provenance : dict, optional
        :func:`collect_provenance` of the rows shown; without it the footer has the page's own
        versions and date only.
    written : str, optional
        The date shown as the page's writing date (default: now, UTC, ISO 8601).
    """
    written = written or _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    sections = [benchmark_section(benchmark_board)] if benchmark_board is not None else []
    sections += [_board_section(b, i) for i, b in enumerate(boards)]
    if not sections:
        sections.append("<p>No scores in the store yet.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}"
            f"{_footer(provenance, written)}<script>{_SCRIPT}</script></body></html>\n")
