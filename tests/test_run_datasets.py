"""`framework run` end to end on dataset files: MNE epochs + sites TSV + TOML, and fMRI RDMs."""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SHARED, epochs_metadata

mne = pytest.importorskip("mne")

SFREQ = 512.0
N_IMAGES = 12


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.cli", "run", *args, "--no-progress"],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


def _write_epochs_dataset(folder: Path) -> np.ndarray:
    """12 images of increasing brightness; channel A1 of each subject carries a 50 Hz burst whose
    amplitude follows the brightness, 100-400 ms after onset; A2 is noise only."""
    rng = np.random.default_rng(3)
    (folder / "images").mkdir()
    brightness = np.linspace(0.1, 1.0, N_IMAGES)
    ids = [f"im{i:02d}" for i in rng.permutation(N_IMAGES)]          # file order != brightness order
    for sid in ids:
        k = int(sid[2:])
        pixels = (rng.random((48, 48, 3)) * 80 + 170 * brightness[k]).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{sid}.png")
    (folder / "order.txt").write_text("\n".join(sorted(ids)) + "\n")
    times = np.arange(768) / SFREQ - 0.5
    window = ((times >= 0.1) & (times <= 0.4)).astype(float)
    (folder / "rec").mkdir()
    for subject in ("sub-01", "sub-02"):
        trials, md = [], []
        for rep in range(2):
            for k in range(N_IMAGES):
                noise = rng.standard_normal((2, times.size))
                burst = 3 * brightness[k] * window * np.sin(2 * np.pi * 50 * times + rng.uniform(0, 6.28))
                trials.append((noise + np.array([burst, 0 * burst])) * 1e-5)
                md.append({"stimulus": f"im{k:02d}", "repetition": rep})
        info = mne.create_info(["A1", "A2"], SFREQ, "seeg")
        epochs = mne.EpochsArray(np.array(trials), info, tmin=-0.5, metadata=epochs_metadata(md), verbose="error")
        epochs.save(folder / "rec" / f"{subject}-epo.fif", verbose="error")
    (folder / "electrodes.tsv").write_text(
        "name\tsubject\tx\ty\tz\tarea\n"
        "A1\tsub-01\t-10\t-90\t0\t17\nA2\tsub-01\t-30\t-40\t-10\t37\n"
        "A1\tsub-02\t12\t-88\t2\t18\nA2\tsub-02\t40\t-20\t5\tn/a\n")
    (folder / "ds.toml").write_text(
        '[dataset]\nname = "bursts"\nkind = "epochs"\n\n'
        '[stimuli]\nfolder = "images"\nids = "order.txt"\n\n'
        '[recordings]\nfiles = { "sub-01" = "rec/sub-01-epo.fif", "sub-02" = "rec/sub-02-epo.fif" }\n'
        'sites = "electrodes.tsv"\n')
    return brightness


@pytest.mark.slow
def test_epochs_dataset_runs_end_to_end(tmp_path):
    brightness = _write_epochs_dataset(tmp_path)
    store = tmp_path / "store"
    proc = _run("--dataset", str(tmp_path / "ds.toml"), "--models", "alexnet:random",
                "--signals", "lowgamma@150-350,theta@150-350", "--metrics", "rsa,linear-predictivity",
                "--metric-param", "linear-predictivity.n_splits=3", "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((store / "leaderboard.csv").read_text().splitlines()))
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"bursts"}
    assert all(r["value"] != "" for r in rows)

    # the low-gamma response of the driven channels follows the planted brightness; theta does not
    with sqlite3.connect(store / "results.sqlite") as conn:
        prov = {sig: json.loads(p) for sig, p in conn.execute(
            "select signal, provenance from scores where metric='rsa'")}
    assert prov["lowgamma@150-350"]["dataset"]["kind"] == "epochs"
    from framework.target_io import load_target

    targets = {load_target(p).info["parameters"]["band"]: load_target(p)
               for p in (Path(os.environ["FRAMEWORK_CACHE_DIR"]) / "responses").glob("*.npz")}
    gamma, theta = targets["lowgamma"], targets["theta"]
    assert gamma.sites.names == ("sub-01/A1", "sub-01/A2", "sub-02/A1", "sub-02/A2")
    order = [int(s[2:]) for s in gamma.stimulus_ids]
    for j in (0, 2):
        assert np.corrcoef(gamma.data[:, j], brightness[order])[0, 1] > 0.9
        assert abs(np.corrcoef(theta.data[:, j], brightness[order])[0, 1]) < 0.8
    assert gamma.repetitions.shape == (2, N_IMAGES, 4)


@pytest.mark.slow
def test_algonauts_rdms_run_end_to_end(tmp_path):
    toml = ROOT / "datasets" / "algonauts2019-92.toml"
    weights = SHARED / "weights" / "tf_efficientnet_lite0.safetensors"
    if not (SHARED / "data" / "algonauts2019").is_dir() or not weights.is_file():
        pytest.skip("Algonauts 2019 data or the EfficientNet weights are not in ../shared")
    store = tmp_path / "store"
    proc = _run("--dataset", str(toml), "--models", "timm:tf_efficientnet_lite0",
                "--weights-file", f"timm:tf_efficientnet_lite0={weights}", "--metrics", "all",
                "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "does not score rdms data; skipped" in proc.stderr        # e.g. linear-predictivity
    rows = list(csv.DictReader((store / "leaderboard.csv").read_text().splitlines()))
    assert [(r["metric"], r["signal"]) for r in rows] == [("rsa", "rdms")]
    row = rows[0]
    assert row["weights"] == "file tf_efficientnet_lite0.safetensors"
    value, ceiling = float(row["value"]), float(row["ceiling"])
    assert 0.0 < value < ceiling < 1.0
    with sqlite3.connect(store / "results.sqlite") as conn:
        details, prov = conn.execute("select details, provenance from scores").fetchone()
    prov = json.loads(prov)
    assert prov["model"]["weights_source"] == "file"
    import hashlib

    assert prov["model"]["weights_digest"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    areas = json.loads(details)["area"]
    assert set(areas["area"]) == {"EVC", "IT"}
    with sqlite3.connect(store / "results.sqlite") as conn:
        summary = json.loads(conn.execute("select summary from scores").fetchone()[0])
    # model RDMs use the dataset's distance; the headline layer is committed on held-out subjects;
    # pixels is a baseline beside the model; both ceiling conventions are reported
    assert summary["distance"] == "correlation" and summary["brain_distance"] == "correlation"
    assert summary["selection"] == "heldout" and summary["ceiling_convention"] == "nili"
    assert "pixels" not in summary["candidate_layers"] and set(summary["pixels_baseline"]) == {"EVC", "IT"}
    assert value == pytest.approx(summary["headline_heldout"]) and summary["headline_optimistic"] >= value
    assert set(summary["noise_ceilings"]) == {"nili", "algonauts2019"}
    assert prov["metric"]["params"]["distance"] == "auto"
