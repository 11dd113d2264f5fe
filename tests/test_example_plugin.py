"""A separate pip-installable package registers a new DCNN through the entry-point group."""
from __future__ import annotations

import csv
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import TESTS

EXAMPLE = TESTS / "example_plugin"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A virtual environment that sees the installed framework and has the example package installed."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # the base interpreter's pip installs into the venv (pip >= 22.3 has --python)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-build-isolation", "--quiet", str(EXAMPLE)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"installing the example package failed:\n{proc.stdout}\n{proc.stderr}")
    return python


def _framework(python: Path, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    # run from a neutral folder so only installed packages are importable
    return subprocess.run([str(python), "-m", "framework.cli", *args], capture_output=True, text=True,
                          cwd=tmp, timeout=600)


@pytest.mark.slow
def test_installed_package_is_listed_and_scored(plugin_python, tmp_path):
    listing = _framework(plugin_python, "list", "models", tmp=tmp_path)
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.strip().startswith("tinynet "))
    assert "separate package" in line and "tinynet-plugin 0.1" in line

    layers = _framework(plugin_python, "layers", "tinynet", tmp=tmp_path)
    assert layers.returncode == 0, layers.stderr
    assert "* conv1" in layers.stdout and "* logits" in layers.stdout and "(10,)" in layers.stdout

    store = tmp_path / "store"
    run = _framework(plugin_python, "run", "--models", "tinynet", "--metrics", "rsa", "--signals",
                     "lowgamma@150-350,theta@150-350", "--store", str(store), "--no-progress", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(open(store / "leaderboard.csv")))
    assert {r["model"] for r in rows} == {"tinynet"} and len(rows) == 2
    assert all(r["weights"] == "random init" and r["value"] not in ("", None) for r in rows)
    assert "no pretrained weights source" in run.stderr     # the fallback is announced

