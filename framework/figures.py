"""Static figures of the leaderboard report, drawn by matplotlib as inline SVG text.

Pure functions: numbers in, an ``<svg>`` string out. Figures are made with
:class:`matplotlib.figure.Figure` and :class:`matplotlib.backends.backend_svg.FigureCanvasSVG`
directly (never pyplot: no global figure registry, no GUI backend). Text stays text
(``svg.fonttype = 'none'``) so the page is small and searchable, and the SVG carries no date,
so the same numbers give the same bytes.

Every root ``<svg>`` gets ``class="chart"`` and a ``data-chart`` attribute naming the kind of
figure (``bars``, ``profiles``, ``maps``), for the page's CSS and for tests.

Conventions
-----------
* Values are in the metric's unit (the axis title says which); NaN / None mean "no value" and are
  not drawn (bars: a gap; maps: grey cells).
* Value axes start at 0, or below 0 when a value or interval is negative.
* Layer × area maps share one diverging colour scale, centred at 0 and symmetric
  (``vmin = -vmax``), given by the caller so that every map of a page section uses the same one.
"""
from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence

import numpy as np

__all__ = ["CMAP", "bar_chart", "layer_area_maps", "layer_profiles", "series_colours", "symmetric_limit"]

#: Diverging colour map of the layer × area maps (blue negative, white 0, red positive).
CMAP = "RdBu_r"
#: Colours of the series (signals, areas): Okabe-Ito, distinguishable with colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_RC = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
       "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
       "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"]}


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _plain(text: str) -> str:
    """``text`` drawn as is: dollar signs escaped so matplotlib never reads a name as mathtext."""
    return str(text).replace("$", r"\$")


def symmetric_limit(values: Sequence[float | None] | np.ndarray) -> float:
    """``max |v|`` over the finite values (1.0 when there is none or all are 0): the half-range of a
    colour scale centred at 0."""
    arr = np.array([v if _finite(v) else np.nan for v in np.ravel(np.asarray(values, dtype=object))], dtype=float)
    arr = arr[np.isfinite(arr)]
    top = float(np.abs(arr).max()) if arr.size else 0.0
    return top if top > 0 else 1.0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasSVG(fig)
    return fig


def _svg(fig, chart: str, label: str, salt: str) -> str:
    """The figure as inline ``<svg>`` text (no XML prologue) with its class, ``data-chart`` and label."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"{chart}-{salt}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    from html import escape

    return text.replace("<svg ", f'<svg class="chart" data-chart="{chart}" role="img" '
                                 f'aria-label="{escape(label, quote=True)}" ', 1)


def _draw(chart: str, label: str, salt: str, width: float, height: float, draw) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(width, height)
        draw(fig)
        return _svg(fig, chart, label, salt)


def series_colours(series: Sequence[str]) -> list[str]:
    """One colour per series, none repeated.

    Signals named ``<band>@<window>`` (band power, e.g. ``lowgamma@150-350``) get their band's
    colour (:data:`PALETTE`, bands in order of appearance), lighter for earlier windows, so the
    legend reads as bands x windows; other series take :data:`PALETTE` in order, and beyond its
    eight colours matplotlib's ``tab20``.
    """
    import matplotlib as mpl
    from matplotlib.colors import to_hex, to_rgb

    names = [str(s) for s in series]
    parts = [n.split("@", 1) for n in names]
    bands = list(dict.fromkeys(p[0] for p in parts))
    if names and all(len(p) == 2 for p in parts) and len(bands) <= len(PALETTE) and len(bands) < len(names):
        windows: dict[str, list[str]] = {}
        for band, window in parts:
            windows.setdefault(band, []).append(window)
        out = []
        for band, window in parts:
            k, n = windows[band].index(window), len(windows[band])
            white = 0.6 * (n - 1 - k) / max(n - 1, 1)          # the last window in full colour
            rgb = np.array(to_rgb(PALETTE[bands.index(band)]))
            out.append(to_hex(rgb + (1.0 - rgb) * white))
        return out
    if len(names) <= len(PALETTE):
        return list(PALETTE[:len(names)])
    tab = mpl.colormaps["tab20"]
    return [to_hex(tab(j % 20)) for j in range(len(names))]


def bar_chart(labels: Sequence[str], series: Sequence[str], values: np.ndarray, *,
              ci_low: np.ndarray | None = None, ci_high: np.ndarray | None = None,
              ceilings: np.ndarray | None = None, ylabel: str, ceiling_label: str = "noise ceiling",
              title: str = "", salt: str = "") -> str:
    """Grouped bars: one group per row label, one bar per series, with CI error bars and noise ceilings.

    Parameters
    ----------
    labels : sequence of str, (n_rows,)
        The groups (models), left to right in the given order.
    series : sequence of str, (n_series,)
        The bars of a group (signals, benchmarks), each with its colour and legend entry.
    values : ndarray, (n_rows, n_series) float
        Bar heights in the unit of ``ylabel``; NaN: no bar.
    ci_low, ci_high : ndarray, (n_rows, n_series) float, optional
        Bounds of the interval drawn as an error bar (NaN: none for that bar).
    ceilings : ndarray, (n_rows, n_series) float, optional
        Noise ceiling of each bar, same unit. A series whose finite ceilings are all equal gets one
        dashed line across the plot, labelled with its value; otherwise each bar gets its own mark.
    ylabel : str
        Axis title with the unit.
    ceiling_label : str
        Legend text of the ceilings (``"noise ceiling"``).

    Returns
    -------
    str
        ``<svg class="chart" data-chart="bars" ...>``.
    """
    vals = np.asarray(values, dtype=float).reshape(len(labels), len(series))
    lo = None if ci_low is None else np.asarray(ci_low, dtype=float).reshape(vals.shape)
    hi = None if ci_high is None else np.asarray(ci_high, dtype=float).reshape(vals.shape)
    ceil = None if ceilings is None else np.asarray(ceilings, dtype=float).reshape(vals.shape)
    n_rows, n_series = vals.shape
    width = min(11.0, max(4.6, 1.4 + n_rows * (0.45 + 0.3 * n_series)))

    def draw(fig) -> None:
        ax = fig.add_subplot()
        group = 0.8
        bar_w = group / max(n_series, 1)
        x = np.arange(n_rows, dtype=float)
        colours = series_colours(series)
        for j, name in enumerate(series):
            colour = colours[j]
            pos = x - group / 2 + (j + 0.5) * bar_w
            v = vals[:, j]
            shown = np.isfinite(v)
            ax.bar(pos[shown], v[shown], bar_w * 0.92, color=colour, label=_plain(name))
            if lo is not None and hi is not None:
                ok = np.isfinite(v) & np.isfinite(lo[:, j]) & np.isfinite(hi[:, j])
                if ok.any():
                    err = np.vstack([np.maximum(v[ok] - lo[ok, j], 0), np.maximum(hi[ok, j] - v[ok], 0)])
                    ax.errorbar(pos[ok], v[ok], yerr=err, fmt="none", ecolor="#222222", elinewidth=0.9,
                                capsize=2.5, capthick=0.9)
            if ceil is not None:
                c = ceil[:, j]
                finite = c[np.isfinite(c)]
                if finite.size and np.allclose(finite, finite[0], rtol=0, atol=1e-12):
                    ax.axhline(finite[0], color=colour, linestyle="--", linewidth=1.1,
                               label=_plain(f"{ceiling_label}, {name} ({finite[0]:.3g})"))
                elif finite.size:
                    ok = np.isfinite(c)
                    ax.hlines(c[ok], pos[ok] - bar_w * 0.5, pos[ok] + bar_w * 0.5, colors=colour,
                              linestyles="--", linewidth=1.3, label=_plain(f"{ceiling_label}, {name} (per model)"))
        ax.axhline(0.0, color="#333333", linewidth=0.8)
        ax.set_xticks(x, [_plain(_wrap(t, 30)) for t in labels], rotation=25, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, n_rows - 0.4)
        ax.set_ylim(*_value_limits(vals, lo, hi, ceil))
        ax.set_ylabel(_plain(_wrap(ylabel, 40)))
        ax.set_xlabel("model (weights)")
        if title:
            ax.set_title(_plain(_wrap(title, 90)), loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)

    return _draw("bars", title or ylabel, salt, width + 2.4, 3.4, draw)


def _value_limits(*arrays: np.ndarray | None) -> tuple[float, float]:
    """Axis limits holding every finite value: from 0 (or below it when a value is negative) to the top."""
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays if a is not None] or [np.zeros(0)])
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(0.0, float(finite.max())) if finite.size else 1.0
    span = (high - low) or 1.0
    return (low - 0.06 * span if low < 0 else 0.0), high + 0.08 * span


def layer_profiles(panels: Sequence[dict], *, ylabel: str, salt: str = "") -> str:
    """Score against layer, one line per area and a shaded ±SEM band, one panel per model.

    Parameters
    ----------
    panels : sequence of dict
        One per panel (model), each with ``title`` (str), ``layers`` ((n_layers,) names in network
        order: the x ticks), ``areas`` ((n_areas,) names, hierarchy order: one line each),
        ``values`` ((n_areas, n_layers) float, the y values; NaN: no point) and ``sem``
        ((n_areas, n_layers) float or None: the half-width of the shaded band).
    ylabel : str
        Axis title with the unit.

    Returns
    -------
    str
        ``<svg class="chart" data-chart="profiles" ...>``; the panels share the y axis.
    """
    n = len(panels)
    n_layers = max(len(p["layers"]) for p in panels)
    panel_w = min(4.6, max(2.8, 0.32 * n_layers + 1.2))
    areas_all: list[str] = []
    for p in panels:
        areas_all += [a for a in p["areas"] if a not in areas_all]
    colour = dict(zip(areas_all, series_colours(areas_all)))
    limits = _value_limits(*[np.asarray(p["values"], float) + (np.nan_to_num(np.asarray(p["sem"], float))
                                                               if p["sem"] is not None else 0.0) for p in panels],
                           *[np.asarray(p["values"], float) - (np.nan_to_num(np.asarray(p["sem"], float))
                                                               if p["sem"] is not None else 0.0) for p in panels])

    def draw(fig) -> None:
        axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
        for ax, p in zip(axes, panels):
            vals = np.asarray(p["values"], dtype=float)
            sem = None if p["sem"] is None else np.asarray(p["sem"], dtype=float)
            x = np.arange(len(p["layers"]))
            for i, area in enumerate(p["areas"]):
                ax.plot(x, vals[i], marker="o", markersize=3, linewidth=1.4, color=colour[area], label=_plain(area))
                if sem is not None and np.isfinite(sem[i]).any():
                    ax.fill_between(x, vals[i] - sem[i], vals[i] + sem[i], color=colour[area], alpha=0.18,
                                    linewidth=0)
            ax.axhline(0.0, color="#333333", linewidth=0.7)
            ax.set_xticks(x, [_plain(t) for t in p["layers"]], rotation=60, ha="right", rotation_mode="anchor")
            ax.set_xlabel("layer (network order)")
            ax.set_title(_plain(_wrap(p["title"], 42)), loc="left")
            ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        axes[0].set_ylim(*limits)
        axes[0].set_ylabel(_plain(_wrap(ylabel, 40)))
        handles = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        axes[-1].legend(handles.values(), [f"area {a}" for a in handles], loc="upper left",
                        bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0)

    return _draw("profiles", f"layer profiles: {ylabel}", salt, panel_w * n + 1.3, 3.3, draw)


def layer_area_maps(panels: Sequence[dict], *, vmax: float, label: str, salt: str = "") -> str:
    """Layer × area maps, one panel per model, on one diverging colour scale ``[-vmax, vmax]``.

    Parameters
    ----------
    panels : sequence of dict
        One per panel, each with ``title``, ``layers`` ((n_layers,) names in network order: the
        columns), ``areas`` ((n_areas,) names in hierarchy order: the rows, first at the top) and
        ``values`` ((n_areas, n_layers) float; NaN drawn grey).
    vmax : float
        Half-range of the colour scale, > 0: colours run from ``-vmax`` (blue) through 0 (white) to
        ``+vmax`` (red). Give the same value to every map of a page section.
    label : str
        Title of the colour bar (the quantity and its unit).

    Returns
    -------
    str
        ``<svg class="chart" data-chart="maps" ...>`` with one labelled colour bar.
    """
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    vmax = float(vmax) if _finite(vmax) and vmax > 0 else 1.0
    n = len(panels)
    n_layers = max(len(p["layers"]) for p in panels)
    n_areas = max(len(p["areas"]) for p in panels)
    panel_w = min(4.4, max(2.4, 0.3 * n_layers + 1.0))
    norm = Normalize(vmin=-vmax, vmax=vmax)
    cmap = mpl.colormaps[CMAP].with_extremes(bad="#d9d9d9")

    def draw(fig) -> None:
        axes = fig.subplots(1, n, squeeze=False)[0]
        image = None
        for ax, p in zip(axes, panels):
            vals = np.ma.masked_invalid(np.asarray(p["values"], dtype=float))
            image = ax.imshow(vals, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            ax.set_xticks(np.arange(len(p["layers"])), [_plain(t) for t in p["layers"]], rotation=60, ha="right",
                          rotation_mode="anchor")
            ax.set_yticks(np.arange(len(p["areas"])), [_plain(t) for t in p["areas"]])
            ax.set_xlabel("layer (network order)")
            ax.set_ylabel("area (hierarchy order)")
            ax.set_title(_plain(_wrap(p["title"], 40)), loc="left")
            for spine in ax.spines.values():
                spine.set_visible(False)
        bar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.02, aspect=18)
        bar.set_label(_plain(_wrap(label, 34)))
        bar.ax.axhline(0.0, color="#333333", linewidth=0.6)

    return _draw("maps", f"layer × area maps: {label}", salt, panel_w * n + 2.0, max(2.4, 0.32 * n_areas + 1.9),
                 draw)
