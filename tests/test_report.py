"""The HTML report (framework.report, framework.figures): what it shows equals what the store holds."""
from __future__ import annotations

import csv
import math
import re
from html.parser import HTMLParser
from xml.etree import ElementTree

import numpy as np
import pytest

import framework
from framework import figures
from framework.contracts import LayerAreaMap
from framework.leaderboard import competition_ranks, latest_rows, write_leaderboard
from framework.report import layer_area_data
from framework.store import Cell, ResultsStore
from framework.types import Activations, Responses, Score, SiteTable
from plugins.metrics.rsa import RSAMetric

LAYERS = ["pixels", "conv1", "conv2", "fc6"]
AREAS = ["17", "19", "20"]
SITES = {"17": ["s1/a", "s1/b", "s2/a"], "19": ["s1/c", "s2/b"], "20": ["s1/d", "s2/c", "s2/d", "s2/e"]}
RSA_MAPS = RSAMetric.layer_area_maps


def _site_details(seed: int, shift: float = 0.0) -> dict:
    """rsa-like details on responses: per-site r (layer_site) and its mean per area (layer_area)."""
    rng = np.random.default_rng(seed)
    site = {"layer": [], "layer_index": [], "site": [], "subject": [], "area": [], "r": []}
    area = {"layer": [], "layer_index": [], "area": [], "site_mean_r": []}
    for a in AREAS:
        for j, layer in enumerate(LAYERS):
            vals = rng.normal(0.1 * j - 0.15 + shift, 0.1, size=len(SITES[a]))
            for name, v in zip(SITES[a], vals):
                site["layer"].append(layer)
                site["layer_index"].append(j)
                site["site"].append(name)
                site["subject"].append(name.split("/")[0])
                site["area"].append(a)
                site["r"].append(float(v))
            area["layer"].append(layer)
            area["layer_index"].append(j)
            area["area"].append(a)
            area["site_mean_r"].append(float(vals.mean()))
    return {"layer_site": site, "layer_area": area}


def _record(store, model, signal, value, *, details=None, ceiling=0.6, ci=None, source="pretrained",
            label="ImageNet-1k (torchvision IMAGENET1K_V1)", metric="rsa", dataset="ds", seed=7):
    cell = Cell(f"{dataset}-{model}-{signal}-{metric}-{source}", dataset, model, signal, metric)
    provenance = {"run_id": "run-1", "seed": seed,
                  "packages": {"framework": framework.__version__, "numpy": np.__version__},
                  "dataset": {"name": dataset, "digest": f"digest-of-{dataset}", "kind": "responses", "n_stimuli": 12},
                  "model": {"weights_digest": f"wdigest-{model}", "weights_seed": None}}
    store.record_score(cell, Score(value, ceiling=ceiling, ci=ci, details=details or {}, summary={"best_layer": "fc6"},
                                   higher_is_better=True),
                       run_id="run-1", weights_source=source, weights_label=label, provenance=provenance,
                       started_at=0.0, seconds=0.1)


class _Tables(HTMLParser):
    """Every <table> of a page: its data-table kind, header texts and rows of (text, data-sort) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"kind": a.get("data-table"), "class": a.get("class"), "head": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", a.get("data-sort")]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, text, sort = self._cell
            if kind == "th":
                self.tables[-1]["head"].append(text)
            else:
                self.tables[-1]["rows"][-1].append((text, sort))
            self._cell = None


def _tables(page: str, kind: str) -> list[dict]:
    parser = _Tables()
    parser.feed(page)
    out = [t for t in parser.tables if t["kind"] == kind]
    for t in out:
        t["rows"] = [r for r in t["rows"] if r]
    return out


def _figures(page: str, kind: str) -> list[str]:
    return re.findall(rf"<figure class='fig fig-{kind}'[^>]*>.*?</figure>", page, re.S)


@pytest.fixture
def page(tmp_path):
    """Three models, two signals (one all-negative), CIs, ceilings, rsa-like details."""
    with ResultsStore(tmp_path) as store:
        _record(store, "alexnet", "lowgamma@150-350", 0.41, ci=(0.30, 0.52), details=_site_details(0))
        _record(store, "alexnet", "theta@150-350", -0.05, ceiling=0.2, details=_site_details(1, -0.3))
        _record(store, "vgg11", "lowgamma@150-350", 0.33, ci=(0.2, 0.45), details=_site_details(2))
        _record(store, "vgg11", "theta@150-350", -0.02, ceiling=0.2, details=_site_details(3, -0.3))
        _record(store, "alexnet", "lowgamma@150-350", 0.12, source="random", label="random init (seed 0)",
                details=_site_details(4, -0.25))
        rows = latest_rows(store)
        write_leaderboard(store, {"rsa": "RDM correlation (Spearman) at a held-out layer"}, {"rsa": RSA_MAPS})
    return (tmp_path / "leaderboard.html").read_text(), rows, tmp_path


def test_table_cells_equal_the_store_rows(page):
    text, rows, _ = page
    (table,) = _tables(text, "board")
    assert table["head"][:4] == ["rank", "model", "weights", "best signal"]
    col = {h: i for i, h in enumerate(table["head"])}
    shown = {}
    for cells in table["rows"]:
        model, weights = cells[1][0], cells[2][0]
        for signal in ("theta@150-350", "lowgamma@150-350"):
            value = cells[col[f"{signal} [95% CI]"]]
            ceiling = cells[col[f"{signal} ceiling"]]
            shown[(model, weights, signal)] = (float(value[1]) if value[1] else None,
                                               float(ceiling[1]) if ceiling[1] else None, value[0])
    for r in rows:
        weights = "random init" if r["weights_source"] == "random" else r["weights_label"]
        value, ceiling, text_ = shown[(r["model"], weights, r["signal"])]
        assert value == r["value"] and ceiling == r["ceiling"]          # exactly the stored numbers
        if r["ci_low"] is not None:
            assert text_ == f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    assert shown[("alexnet", "random init", "theta@150-350")][0] is None   # no row: "—", no sort key


def test_page_has_sortable_tables_figures_and_is_self_contained(page):
    text, _, _ = page
    assert re.findall(r"<table class='sortable' data-table='(\w+)'", text) == ["board"]
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    assert [re.search(r'data-chart="(\w+)"', s).group(1) for s in svgs] == ["bars", "profiles", "maps"]
    for svg in svgs:
        ElementTree.fromstring(svg)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text) and "<script src" not in text
    bars = svgs[0]
    assert "noise ceiling, lowgamma@150-350 (0.6)" in bars and "noise ceiling, theta@150-350 (0.2)" in bars
    assert "rsa headline value (Spearman ρ)" in bars                # axis title with the unit
    assert "layer (network order)" in svgs[1] and "area (hierarchy order)" in svgs[2]


def test_bars_draw_the_ci_and_start_below_zero_for_negative_values():
    """The error bars span the stored CI and the value axis includes 0 and the negative values."""
    low, high = figures._value_limits(np.array([[0.4, -0.05]]), np.array([[0.3, -0.1]]), np.array([[0.5, 0.0]]))
    assert low < -0.1 and high > 0.5
    assert figures._value_limits(np.array([[0.4, 0.2]]))[0] == 0.0


def test_one_symmetric_colour_scale_per_section(page):
    text, rows, _ = page
    (maps,) = _figures(text, "maps")
    vmin = float(re.search(r"data-vmin='([^']+)'", maps).group(1))
    vmax = float(re.search(r"data-vmax='([^']+)'", maps).group(1))
    assert vmin == -vmax
    # the top 3 models at their best signal: the largest |value| of their maps is the limit
    drawn = [r for r in rows if r["signal"] == "lowgamma@150-350"]
    assert len(drawn) == 3
    top = max(abs(v) for r in drawn for v in r["details"]["layer_area"]["site_mean_r"])
    assert vmax == pytest.approx(top)
    assert any(v < 0 for r in drawn for v in r["details"]["layer_area"]["site_mean_r"])
    assert "RdBu_r" in maps and "centred at 0" in maps
    assert figures.symmetric_limit([-0.3, 0.1, None, math.nan]) == 0.3
    assert figures.symmetric_limit([]) == 1.0


def test_profile_sem_is_the_sem_over_sites():
    details = _site_details(5)
    data = layer_area_data(details, RSA_MAPS)
    assert data.map.value == "site_mean_r" and data.areas == AREAS and data.layers == LAYERS
    site = details["layer_site"]
    for i, a in enumerate(AREAS):
        for j, layer in enumerate(LAYERS):
            vals = np.array([v for v, aa, ll in zip(site["r"], site["area"], site["layer"]) if aa == a and ll == layer])
            assert data.sem[i, j] == pytest.approx(np.std(vals, ddof=1) / np.sqrt(vals.size), rel=1e-12)
            assert data.values[i, j] == pytest.approx(vals.mean(), rel=1e-12)   # the curve is the sites' mean
            assert data.n[i, j] == vals.size
    assert "SEM over sites" in data.sem_note


def test_profile_sem_stored_column_is_used_and_none_is_never_invented():
    table = {"layer": ["a", "b", "a", "b"], "layer_index": [0, 1, 0, 1], "area": ["EVC", "EVC", "IT", "IT"],
             "score_mean": [0.2, 0.1, 0.05, 0.3], "score_sem": [0.01, 0.02, 0.03, 0.04]}
    data = layer_area_data({"layer_area": table}, RSA_MAPS)
    assert data.map.value == "score_mean" and data.sem.tolist() == [[0.01, 0.02], [0.03, 0.04]]
    assert "stored by the metric" in data.sem_note
    plain = layer_area_data({"t": {"layer": ["a", "b"], "area": ["V1", "V1"], "v": [0.1, 0.2]}},
                            (LayerAreaMap("t", "v", "value"),))
    assert plain.sem is None and plain.sem_note == "no SEM: one value per layer"


def test_no_sem_caption_on_the_page(tmp_path):
    table = {"layer": ["conv1", "fc6", "conv1", "fc6"], "layer_index": [0, 1, 0, 1], "area": ["17", "17", "20", "20"],
             "r": [0.4, -0.1, 0.1, 0.3]}
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "s", 0.5, details={"layer_area": table}, metric="m")
        write_leaderboard(store, {}, {"m": (LayerAreaMap("layer_area", "r", "r of the area"),)})
    text = (tmp_path / "leaderboard.html").read_text()
    assert "No SEM: one value per layer" in _figures(text, "profiles")[0]


def test_ties_share_competition_ranks_in_every_file(tmp_path):
    assert competition_ranks([0.7, 0.7, 0.3, None]) == [1, 1, 3, None]
    assert competition_ranks([2.0, 1.0, 1.0004], higher_is_better=False) == [3, 1, 1]
    with ResultsStore(tmp_path) as store:
        _record(store, "b", "s", 0.7)
        _record(store, "c", "s", 0.7000004)        # equal at the shown precision: a tie
        _record(store, "a", "s", 0.3)
        _record(store, "d", "s", math.nan)
        write_leaderboard(store)
    (table,) = _tables((tmp_path / "leaderboard.html").read_text(), "board")
    assert [(c[0][0], c[1][0]) for c in table["rows"]] == [("1", "c"), ("1", "b"), ("3", "a"), ("—", "d")]
    with open(tmp_path / "leaderboard.csv", newline="") as fh:
        assert [(r["model"], r["rank"]) for r in csv.DictReader(fh)] == [("c", "1"), ("b", "1"), ("a", "3"),
                                                                         ("d", "")]
    md = (tmp_path / "leaderboard.md").read_text()
    assert re.findall(r"^\| (\S+) \| (\w) \|", md, re.M) == [("1", "c"), ("1", "b"), ("3", "a"), ("—", "d")]


def test_provenance_footer(page):
    text, rows, _ = page
    footer = text[text.index("<footer"):]
    assert f"framework {framework.__version__}" in footer
    assert "digest-of-ds" in footer and "wdigest-alexnet" in footer and "wdigest-vgg11" in footer
    assert "ImageNet-1k (torchvision IMAGENET1K_V1)" in footer and "random init" in footer
    assert "<span class='seeds'>7</span>" in footer and "run-1" in footer
    assert re.search(r"Page written \d{4}-\d\d-\d\dT", footer)
    (packages,) = _tables(text, "packages")
    versions = {cells[0][0]: cells[1][0] for cells in packages["rows"]}
    assert versions["numpy"] == np.__version__ and versions["torch"] == "not recorded"
    import matplotlib

    assert versions["matplotlib"] == matplotlib.__version__


def test_markdown_and_csv_carry_values_cis_and_ceilings(page):
    _, rows, directory = page
    md = (directory / "leaderboard.md").read_text()
    assert "lowgamma@150-350 ceiling" in md and "| 0.410 [0.30, 0.52] * | 0.600 |" in md
    with open(directory / "leaderboard.csv", newline="") as fh:
        got = {(r["model"], r["weights"], r["signal"]): r for r in csv.DictReader(fh)}
    r = got[("alexnet", "ImageNet-1k (torchvision IMAGENET1K_V1)", "lowgamma@150-350")]
    assert (float(r["value"]), float(r["ceiling"]), float(r["ci_low"]), float(r["ci_high"])) == (0.41, 0.6, 0.3, 0.52)


def test_names_are_escaped_in_the_page_and_figures(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "net$x$<script>alert(1)</script>", "s", 0.5, details=_site_details(0))
        write_leaderboard(store, {}, {"rsa": RSA_MAPS})
    text = (tmp_path / "leaderboard.html").read_text()
    assert "<script>alert" not in text
    for svg in re.findall(r"<svg.*?</svg>", text, re.S):
        ElementTree.fromstring(svg)


def test_rsa_map_is_the_headline_quantity():
    """On responses the declared map is the site-RDM correlation averaged over sites, the quantity the
    headline averages (optimistic selection: the headline is the site-weighted mean of the map at its layer)."""
    rng = np.random.default_rng(0)
    n = 16
    ids = tuple(f"im{i}" for i in range(n))
    acts = Activations({"a": rng.normal(size=(n, 30)).astype(np.float32),
                        "b": rng.normal(size=(n, 7)).astype(np.float32)}, ids)
    data = rng.normal(size=(n, 5))
    data[:, :3] += 2 * acts["b"][:, :3]
    sites = SiteTable(tuple(f"p1/e{i}" for i in range(5)), ("p1",) * 5, ("17", "17", "19", "19", "20"))
    target = Responses(data.astype(np.float32), sites, ids, area_order=("17", "19", "20"))
    score = RSAMetric(selection="optimistic", n_permutations=0, n_splits=2).score(acts, target)
    d = layer_area_data(score.details, RSA_MAPS)
    assert d.map.value == "site_mean_r"
    best = d.layers.index(score.summary["optimistic_layer"])
    counts = np.array([sites.areas.count(a) for a in d.areas])
    assert float(np.sum(d.values[:, best] * counts) / counts.sum()) == pytest.approx(score.value, rel=1e-9)


def test_series_colours_never_repeat_and_group_band_power_signals_by_band():
    from matplotlib.colors import to_rgb

    from framework.figures import PALETTE, series_colours

    bands = ["theta", "alpha", "beta", "lowgamma", "highgamma"]
    signals = [f"{b}@{w}" for b in bands for w in ("50-250", "150-350", "250-450")]
    colours = series_colours(signals)
    assert len(set(colours)) == 15
    for k, band in enumerate(bands):       # the band's last window in its own colour, earlier ones lighter
        own = [colours[signals.index(f"{band}@{w}")] for w in ("50-250", "150-350", "250-450")]
        assert own[2] == PALETTE[k].lower()
        assert sum(to_rgb(own[0])) > sum(to_rgb(own[1])) > sum(to_rgb(own[2]))
    assert series_colours(["a", "b"]) == list(PALETTE[:2])
    assert len(set(series_colours([f"area{i}" for i in range(12)]))) == 12
