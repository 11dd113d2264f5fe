"""Results store (atomic rows, no duplicates) and leaderboard rendering."""
from __future__ import annotations

import csv
import math
import re
import sqlite3
from xml.etree import ElementTree

import pytest

from framework.contracts import LayerAreaMap
from framework.errors import DataError
from framework.fileio import _umask
from framework.leaderboard import build_boards, latest_rows, render_terminal, write_leaderboard
from framework.store import Cell, ResultsStore
from framework.types import Score

LAYER_AREA = {"layer_area": {"layer": ["conv1", "conv1", "fc6", "fc6"], "layer_index": [0, 0, 1, 1],
                              "area": ["17", "20", "17", "20"], "r": [0.4, 0.1, 0.05, 0.3]}}


def _record(store, model, signal, value, *, metric="m", source="pretrained", higher=True, key=None, ci=None):
    cell = Cell(key or f"{model}-{signal}-{metric}-{source}", "ds", model, signal, metric)
    store.record_score(cell, Score(value, ceiling=0.8, ci=ci, higher_is_better=higher, summary={"best_layer": "fc6"},
                                   details=LAYER_AREA),
                       run_id="r1", weights_source=source, weights_label="random init (seed 0)" if source == "random"
                       else "ImageNet", provenance={"model": {"weights_digest": "abc"}}, started_at=0.0,
                       seconds=0.1)


def test_rows_are_keyed_and_replaced_not_duplicated(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "s1", 0.1, key="k1")
        _record(store, "a", "s1", 0.3, key="k1")
        store.record_error(Cell("k2", "ds", "b", "s1", "m"), "boom", run_id="r1")
        assert store.count() == 2
        assert store.done_keys() == {"k1"}
        assert store.status("k2") == "error"
        rows = list(store.rows(status="ok"))
        assert rows[0]["value"] == 0.3 and rows[0]["summary"] == {"best_layer": "fc6"}


def test_nan_values_are_stored_as_null(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "s1", math.nan)
        row = next(store.rows())
        assert row["value"] is None and row["status"] == "ok"


def test_corrupt_database_is_a_clear_error(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not a usable SQLite file"):
        ResultsStore(tmp_path)


def test_no_ranking_across_signals_and_direction(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "lowgamma@50-250", 0.5)
        _record(store, "a", "theta@50-250", 0.1)
        _record(store, "b", "lowgamma@50-250", 0.4)
        _record(store, "b", "theta@50-250", 0.4)
        _record(store, "c", "lowgamma@50-250", 0.9, source="random")
        boards = build_boards(latest_rows(store))
    (board,) = boards
    # several signals: each is its own question, so the models are listed by name, not ranked by a mean
    assert [e.model for e in board.entries] == ["a", "b", "c"]
    assert board.signals == ["theta@50-250", "lowgamma@50-250"]   # band order, not alphabetical
    assert board.entries[2].weights == "random init"
    assert board.entries[0].best_signal == "lowgamma@50-250"
    text = render_terminal(boards)
    assert "not ranked across signals" in text and "mean" not in text
    assert re.search(r"^—\s+c\s+random init\s+lowgamma@50-250\s+0\.900", text, re.M)

    with ResultsStore(tmp_path / "one") as store:    # one signal: ranked by it, ties share a rank
        _record(store, "a", "s", 0.3)
        _record(store, "b", "s", 0.7)
        _record(store, "c", "s", 0.7)
        (board,) = build_boards(latest_rows(store))
    assert [e.model for e in board.entries] == ["b", "c", "a"]
    assert re.findall(r"^(\d)\s+(\w)", render_terminal([board]), re.M) == [("1", "b"), ("1", "c"), ("3", "a")]

    with ResultsStore(tmp_path / "low") as store:
        _record(store, "x", "s", 2.0, higher=False)
        _record(store, "y", "s", 1.0, higher=False)
        (board,) = build_boards(latest_rows(store))
    assert [e.model for e in board.entries] == ["y", "x"]


def test_leaderboard_files(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "lowgamma@50-250", 0.5)
        _record(store, "b", "lowgamma@50-250", 0.7)
        boards, paths = write_leaderboard(store, {"m": "the headline"},
                                          {"m": (LayerAreaMap("layer_area", "r", "RDM correlation"),)})
    names = sorted(p.name for p in paths)
    assert names == ["layers.csv", "leaderboard.csv", "leaderboard.html", "leaderboard.md"]
    layer_rows = list(csv.DictReader((tmp_path / "layers.csv").read_text().splitlines()))
    got = {(r["model"], r["layer"], r["area"], r["measure"]): float(r["value"]) for r in layer_rows}
    table = LAYER_AREA["layer_area"]
    want = {(m, layer, area, "r"): v for m in ("a", "b")
            for layer, area, v in zip(table["layer"], table["area"], table["r"])}
    assert got == want and all(r["table"] == "layer_area" and r["weights"] == "ImageNet" for r in layer_rows)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").read_text().splitlines()))
    assert [(r["model"], r["rank"]) for r in rows] == [("b", "1"), ("a", "2")]
    assert rows[0]["best_layer"] == "fc6" and rows[0]["ceiling"] == "0.8"
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | b |" in md and "the headline" in md
    page = (tmp_path / "leaderboard.html").read_text()
    assert "<svg" in page and "<table class='sortable'" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)   # self-contained
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    for svg in svgs:                                                     # every plot is well-formed XML
        ElementTree.fromstring(svg)
    # bars, then the layer profiles and the layer x area maps of the models at their best signal
    assert [re.search(r'data-chart="(\w+)"', svg).group(1) for svg in svgs] == ["bars", "profiles", "maps"]
    assert "b (ImageNet), lowgamma@50-250" in svgs[2] and "a (ImageNet), lowgamma@50-250" in svgs[2]
    from framework.report import layer_area_data

    data = layer_area_data(LAYER_AREA, boards[0].layer_area_maps)           # cells in hierarchy / layer order
    assert data.areas == ["17", "20"] and data.layers == ["conv1", "fc6"]
    assert data.values.tolist() == [[0.4, 0.05], [0.1, 0.3]]
    for path in paths:                                                   # readable like any other file
        assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()
    # the database itself stays readable by plain sqlite3
    assert sqlite3.connect(tmp_path / "results.sqlite").execute("select count(*) from scores").fetchone()[0] == 2


def test_leaderboard_shows_the_stored_ci(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "a", "lowgamma@150-350", 0.424, ci=(-0.2280, 0.7612))
        _record(store, "a", "theta@150-350", math.nan)                     # undefined: no value, no CI
        _record(store, "b", "lowgamma@150-350", 0.2)                       # no CI stored
        boards, _ = write_leaderboard(store)
    (board,) = boards
    a = next(e for e in board.entries if e.model == "a")
    assert a.cis == {"lowgamma@150-350": (-0.228, 0.7612)}
    text = render_terminal(boards)
    assert re.search(r"^—\s+a\s+ImageNet\s+lowgamma@150-350\s+0\.424 \[-0\.23, 0\.76\]", text, re.M)
    assert re.search(r"^—\s+b\s+ImageNet\s+lowgamma@150-350\s+0\.200\s*$", text, re.M)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| — | a | ImageNet | lowgamma@150-350 | — | 0.800 | 0.424 [-0.23, 0.76] * | 0.800 |" in md
    assert "| — | b | ImageNet | lowgamma@150-350 | — | — | 0.200 | 0.800 |" in md
    page = (tmp_path / "leaderboard.html").read_text()
    assert ">0.424 [-0.23, 0.76]</td>" in page and "data-sort='0.424'" in page
