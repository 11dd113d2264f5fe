"""The weights actually used are part of a cell's identity.

* ``--weights auto`` offline scores a random-init fallback; once the pretrained checkpoint is in
  the torch hub cache the same command scores the cell again (not skipped), and the leaderboard
  shows the pretrained row only;
* keys stay stable across re-runs (random init, weights files, pretrained), so resume is exact,
  and a store written before the weights were part of the key is migrated, not re-scored;
* a download times out instead of hanging and is kept only if it matches the hash in its name
  (the hub cache itself, and files that would run code: ``tests/test_weights_safety.py``).
"""
from __future__ import annotations

import csv
import json
import logging
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import LEGACY_SCHEMA
from framework.config import RunConfig
from framework.leaderboard import FALLBACK_TEXT, build_boards, latest_rows
from framework.scheduler import plan_run, run
from framework.store import Cell, ResultsStore
from framework.types import Score

ALEXNET_PRETRAINED = "ImageNet (torchvision AlexNet_Weights.IMAGENET1K_V1)"


@pytest.fixture
def framework_logger():
    """``framework.cli.main`` installs a handler on the "framework" logger; restore it afterwards."""
    logger = logging.getLogger("framework")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def _stand_in_checkpoint(tmp_path: Path, monkeypatch, torch_home: Path) -> tuple[Path, Path]:
    """A seeded AlexNet state dict standing in for the published checkpoint (which cannot be had
    offline). The loader checks the hash in the cache file's name, so the plugin is pointed at a
    name carrying this file's own hash: ``alexnet-owt-<its sha256[:8]>.pth``. Returns (file, hub path)."""
    import torch
    import torchvision

    from plugins.models._torch_common import sha256_file
    from plugins.models.torchvision_models import TorchvisionModel

    torch.manual_seed(1234)                                          # not the framework's init (seed 0)
    src = tmp_path / "stand_in.pth"
    torch.save(torchvision.models.alexnet().state_dict(), src)
    hub_file = torch_home / "hub" / "checkpoints" / f"alexnet-owt-{sha256_file(src)[:8]}.pth"
    monkeypatch.setattr(TorchvisionModel, "cached_weights_path", lambda self: hub_file)
    return src, hub_file


def _main(capsys, *args: str) -> tuple[int, str]:
    from framework.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def _alexnet_rows(store: Path) -> list[dict]:
    with ResultsStore(store) as s:
        return [r for r in s.rows() if r["model"] == "alexnet"]


def _board_csv(store: Path) -> list[dict]:
    with open(store / "leaderboard.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["model"] == "alexnet"]


# ------------------------------------------------------------------------------------------
# the bug: a fallback score kept under the pretrained model's name
# ------------------------------------------------------------------------------------------
def test_fallback_cell_is_rescored_once_pretrained_weights_load(tmp_path, monkeypatch, capsys, offline,
                                                                framework_logger):
    torch_home = tmp_path / "torch"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    stand_in, hub_file = _stand_in_checkpoint(tmp_path, monkeypatch, torch_home)
    store = tmp_path / "store"
    args = ["run", "--weights", "auto", "--dataset", "demo", "--models", "alexnet", "--signals",
            "lowgamma@150-350", "--metrics", "rsa", "--no-progress", "--store", str(store)]

    # 1) offline, nothing cached: the loader fails fast and the cell is scored with random init
    code, err = _main(capsys, *args)
    assert code == 0, err
    assert offline, "the loader should have tried to download the missing weights"
    assert "pretrained weights unavailable (" in err and "using random init" in err
    (fallback,) = _alexnet_rows(store)
    assert fallback["status"] == "ok" and fallback["weights_source"] == "random"
    assert fallback["provenance"]["model"]["weights_mode"] == "auto"
    assert "fell back to random init" in fallback["provenance"]["model"]["weights_detail"]
    (csv_row,) = _board_csv(store)
    assert csv_row["weights"] == FALLBACK_TEXT                       # never shown as the pretrained model's

    # 2) the checkpoint arrives in the hub cache (standing in for a download): the cell is scored again
    hub_file.parent.mkdir(parents=True, exist_ok=True)
    stand_in.rename(hub_file)
    offline.clear()
    code, err = _main(capsys, *args)
    assert code == 0, err
    assert offline == []                                             # read from the cache, no download
    assert "1 cell(s) scored, 0 skipped" in err and "cells already in the store" not in err
    assert "scored with other weights and are scored again" in err
    rows = {r["weights_source"]: r for r in _alexnet_rows(store)}
    assert set(rows) == {"random", "pretrained"}
    pretrained = rows["pretrained"]
    assert pretrained["weights_label"] == ALEXNET_PRETRAINED
    assert pretrained["provenance"]["model"]["weights_mode"] == "auto"
    from plugins.models._torch_common import sha256_file

    assert pretrained["provenance"]["model"]["weights_digest"] == sha256_file(hub_file)
    assert pretrained["cell_key"] != fallback["cell_key"] and pretrained["plan_key"] == fallback["plan_key"]
    assert pretrained["value"] != pytest.approx(fallback["value"], abs=1e-9)
    (csv_row,) = _board_csv(store)                                   # the fallback row is superseded
    assert csv_row["weights"] == ALEXNET_PRETRAINED
    assert float(csv_row["value"]) == pytest.approx(pretrained["value"])

    # 3) the same command again: the pretrained cell is done, nothing is computed
    code, err = _main(capsys, *args)
    assert code == 0, err
    assert "1 of 1 cells already in the store" in err and "0 cell(s) scored, 1 skipped" in err
    assert "Computing" not in err and "Extracted" not in err       # no signals, no activations
    assert len(_alexnet_rows(store)) == 2


# ------------------------------------------------------------------------------------------
# downloads: no hanging, no damaged file kept
# ------------------------------------------------------------------------------------------
def test_download_times_out_instead_of_hanging(tmp_path, monkeypatch):
    """A server (or firewall) that accepts the connection and never answers: the download gives up."""
    from plugins.models._torch_common import download_file

    monkeypatch.setenv("FRAMEWORK_DOWNLOAD_TIMEOUT", "0.5")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)                                             # never accepts, never answers
        port = server.getsockname()[1]
        dst = tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth"
        t0 = time.perf_counter()
        with pytest.raises(OSError):
            download_file(f"http://127.0.0.1:{port}/alexnet-owt-7be5be79.pth", dst, hash_prefix="7be5be79")
        assert time.perf_counter() - t0 < 10
    assert list(dst.parent.iterdir()) == []                         # no partial file left behind


def test_download_checks_the_hash_in_the_name(tmp_path, monkeypatch):
    import io

    from plugins.models._torch_common import download_file

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(b"not the published file"))
    dst = tmp_path / "alexnet-owt-7be5be79.pth"
    with pytest.raises(ValueError, match="does not start with '7be5be79'"):
        download_file("https://example.invalid/alexnet-owt-7be5be79.pth", dst, hash_prefix="7be5be79")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# keys stay stable: random init, weights files, resume, old stores
# ------------------------------------------------------------------------------------------
def _config(tmp_path, **kw) -> RunConfig:
    fields = dict(dataset="fake-responses", models=["fake-net:random", "fake-net2"], signals=["all"],
                  metrics=["fake-corr"], store=tmp_path / "store", progress=False)
    fields.update(kw)
    return RunConfig(**fields)


def test_random_and_file_weights_keep_their_keys(fake_registry, tmp_path):
    wfile = tmp_path / "w.pt"
    wfile.write_bytes(b"weights")
    cfg = _config(tmp_path, weights_files={"fake-net2": wfile})
    first = run(cfg, registry=fake_registry)
    assert (first.n_done, first.n_skipped) == (4, 0)
    again = run(cfg, registry=fake_registry)
    assert (again.n_done, again.n_skipped, again.n_failed) == (0, 4, 0)
    with ResultsStore(tmp_path / "store") as store:
        rows = list(store.rows())
    assert len(rows) == 4
    assert {(r["model"], r["weights_source"]) for r in rows} == {("fake-net:random", "random"),
                                                                 ("fake-net2", "file")}
    plan = plan_run(cfg, fake_registry)
    assert {c.cell.key for c in plan.cells} == {r["plan_key"] for r in rows}   # planned, then finalised
    assert not {c.cell.key for c in plan.cells} & {r["cell_key"] for r in rows}


def test_weights_resolution_failure_keeps_plan_key_and_is_replaced(fake_registry, tmp_path, monkeypatch):
    from fake_plugins import FakeModel
    from framework.errors import DataError

    # weights the user asked for explicitly stop the run before anything is recorded
    with pytest.raises(DataError, match="not available offline"):
        run(_config(tmp_path, models=["fake-net"], weights="pretrained"), registry=fake_registry)
    if (tmp_path / "store").exists():
        with ResultsStore(tmp_path / "store") as store:
            assert list(store.rows()) == []

    # otherwise a model whose weights cannot be resolved fails its cells, keyed by the plan alone
    def broken(self):
        raise DataError("weights unavailable (test)")

    monkeypatch.setattr(FakeModel, "weights_info", broken)
    summary = run(_config(tmp_path, models=["fake-net"], weights="auto"), registry=fake_registry)
    assert summary.n_failed == 2
    with ResultsStore(tmp_path / "store") as store:
        errors = list(store.rows(status="error"))
        assert all(r["cell_key"] == r["plan_key"] for r in errors)
        # the same planned cells scored later (here: written directly) supersede the error rows
        for r in errors:
            cell = Cell(r["cell_key"], r["dataset"], r["model"], r["signal"], r["metric"]).with_weights("file", "d")
            store.record_score(cell, Score(0.5), run_id="r2", weights_source="file", weights_label="file w.pt",
                               provenance={}, started_at=0.0, seconds=0.0)
        assert [r["status"] for r in store.rows()] == ["ok", "ok"]


def test_store_from_before_weights_keys_is_migrated_not_rescored(fake_registry, tmp_path):
    cfg = _config(tmp_path)
    run(cfg, registry=fake_registry)
    with ResultsStore(tmp_path / "store") as store:
        rows = list(store.rows())
    # the same rows as the previous version wrote them: keyed by the plan alone, no plan_key column
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with sqlite3.connect(legacy / "results.sqlite") as conn:
        conn.executescript(LEGACY_SCHEMA)
        for r in rows:
            r = dict(r, cell_key=r["plan_key"])
            r.pop("plan_key")
            for col in ("summary", "details", "provenance"):
                r[col] = json.dumps(r[col])
            conn.execute(f"INSERT INTO scores ({', '.join(r)}) VALUES ({', '.join('?' for _ in r)})",
                         tuple(r.values()))
    summary = run(_config(tmp_path, store=legacy), registry=fake_registry)
    assert (summary.n_done, summary.n_skipped) == (0, 4)
    with ResultsStore(legacy) as store:
        assert {r["cell_key"] for r in store.rows()} == {r["cell_key"] for r in rows}
    ResultsStore(legacy).close()                                     # migrating twice is a no-op


# ------------------------------------------------------------------------------------------
# the leaderboard rule
# ------------------------------------------------------------------------------------------
def _record(store, model, value, *, source, mode, key, signal="s", weights_file=None):
    label = {"random": "random init (seed 0)", "pretrained": "ImageNet", "file": "file w.pt"}[source]
    store.record_score(Cell(key, "ds", model, signal, "m"), Score(value), run_id="r", weights_source=source,
                       weights_label=label, provenance={"model": {"weights_mode": mode, "weights_file": weights_file}},
                       started_at=0.0, seconds=0.0)


def test_leaderboard_labels_fallbacks_and_drops_them_once_pretrained_exists(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "alexnet", 0.1, source="random", mode="auto", key="k1")
        _record(store, "alexnet:random", 0.2, source="random", mode="random", key="k2")
        _record(store, "vgg11", 0.3, source="file", mode="auto", key="k3", weights_file="w.pt")
        board = {(e.model, e.weights) for e in build_boards(latest_rows(store))[0].entries}
        assert board == {("alexnet", FALLBACK_TEXT), ("alexnet:random", "random init"), ("vgg11", "file w.pt")}

        _record(store, "alexnet", 0.4, source="pretrained", mode="auto", key="k4")
        _record(store, "alexnet", 0.15, source="random", mode="auto", key="k5", signal="t")  # no pretrained yet
        rows = latest_rows(store)
        shown = {(r["model"], r["signal"], r["weights_source"]) for r in rows}
        assert ("alexnet", "s", "random") not in shown and ("alexnet", "s", "pretrained") in shown
        assert ("alexnet", "t", "random") in shown
        entries = {(e.model, e.weights): e for e in build_boards(rows)[0].entries}
        assert entries["alexnet", "ImageNet"].values == {"s": 0.4}
        assert entries["alexnet", FALLBACK_TEXT].values == {"t": 0.15}

        # a later fallback (e.g. offline again) does not hide the pretrained score
        _record(store, "alexnet", 0.05, source="random", mode="auto", key="k6")
        assert {(r["signal"], r["value"]) for r in latest_rows(store) if r["model"] == "alexnet"} == {
            ("s", 0.4), ("t", 0.15)}
