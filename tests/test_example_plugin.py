"""A separate pip-installable package registers a new DCNN through the entry-point group."""
from __future__ import annotations

import csv
import shutil
import site
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

from conftest import TESTS

EXAMPLE = TESTS / "example_plugin"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A new virtual environment that sees the framework installation of the interpreter running the
    tests, with the example package installed into it the way a user would: ``pip install <path>``,
    build isolation on (pip fetches the package's build backend, setuptools)."""
    env_dir = tmp_path_factory.mktemp("venv")
    # a copy, so the setuptools build leaves no build/ or *.egg-info in the source tree
    package = tmp_path_factory.mktemp("src") / "example_plugin"
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # `system_site_packages=True` would expose the *base* interpreter's site-packages, not those of a
    # virtual environment running the tests (CI). Add the running interpreter's site directories
    # instead, as `site` does (their .pth files included, so editable installs work too).
    child_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
    parent_dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    Path(child_site, "_framework_under_test.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in parent_dirs) + "\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(package)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"installing the example package failed:\n{proc.stdout}\n{proc.stderr}")
    # installed into the child environment, and its dependency satisfied by the framework under test
    check = subprocess.run([str(python), "-c", _WHERE], capture_output=True, text=True, cwd=env_dir)
    assert check.returncode == 0, check.stderr
    plugin_dir, framework_dir = check.stdout.split()
    assert Path(plugin_dir).resolve().is_relative_to(env_dir.resolve())
    assert Path(framework_dir).resolve() == Path(_installed_framework()).resolve()
    return python


# where the example distribution and the framework package come from, seen by an interpreter
_WHERE = ("import importlib.metadata as md, framework, os; "
          "print(md.distribution('tinynet-plugin').locate_file(''), os.path.dirname(framework.__file__))")


def _installed_framework() -> str:
    """The framework package directory an interpreter started outside the project folder imports."""
    proc = subprocess.run([sys.executable, "-c", "import framework, os; print(os.path.dirname(framework.__file__))"],
                          capture_output=True, text=True, cwd=Path(tempfile.gettempdir()), check=True)
    return proc.stdout.strip()


def _framework(python: Path, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    # run from a neutral folder so only installed packages are importable
    return subprocess.run([str(python), "-m", "framework.cli", *args], capture_output=True, text=True,
                          cwd=tmp, timeout=600)


def _listed(python: Path, kind: str, name: str, tmp: Path) -> tuple[str, str]:
    """The line of ``framework list KIND`` that names ``name``, and the whole listing; fails if absent."""
    listing = _framework(python, "list", kind, tmp=tmp)
    assert listing.returncode == 0, listing.stderr
    line = next((ln for ln in listing.stdout.splitlines() if ln.strip().startswith(f"{name} ")), None)
    assert line is not None, f"the entry point did not register {name}:\n{listing.stdout}"
    return line, listing.stdout


@pytest.mark.slow
def test_installed_package_is_listed_and_scored(plugin_python, tmp_path):
    line, _ = _listed(plugin_python, "models", "tinynet", tmp_path)
    assert "separate package" in line and "tinynet-plugin 0.1" in line

    layers = _framework(plugin_python, "layers", "tinynet", tmp=tmp_path)
    assert layers.returncode == 0, layers.stderr
    assert "* conv1" in layers.stdout and "* logits" in layers.stdout and "(10,)" in layers.stdout

    store = tmp_path / "store"
    run = _framework(plugin_python, "run", "--models", "tinynet", "--metrics", "rsa", "--signals",
                     "lowgamma@150-350,theta@150-350", "--store", str(store), "--no-progress", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    with open(store / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"tinynet"} and len(rows) == 2
    # offline with --weights auto: scored with random init, labelled as a fallback (README, "What a run writes")
    assert all(r["weights"] == "random init (fallback)" and r["value"] not in ("", None) for r in rows), rows
    assert "pretrained weights unavailable (Model 'tinynet' has no pretrained weights source" in run.stderr
    assert "1 of 1 model(s) used random init" in run.stderr  # announced in one line, summed up at the end


@pytest.mark.slow
def test_installed_package_benchmark_is_listed_and_scored(plugin_python, tmp_path):
    line, listing = _listed(plugin_python, "benchmarks", "tinylab.demo-theta-rsa", tmp_path)
    assert "tinynet-plugin 0.1" in line
    assert "rsa (selection='optimistic') on demo × theta@150-350" in listing

    store = tmp_path / "store"
    run = _framework(plugin_python, "run", "--benchmarks", "tinylab.demo-theta-rsa", "--models",
                     "tinynet,tinynet:random", "--store", str(store), "--no-progress", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    with open(store / "benchmarks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["benchmark"], r["model"], r["weights"]) for r in rows} == {
        ("tinylab.demo-theta-rsa", "tinynet", "random init (fallback)"),
        ("tinylab.demo-theta-rsa", "tinynet:random", "random init")}
    assert all(r["status"] == "ok" and float(r["normalized"]) == float(r["aggregate"]) for r in rows), rows
    assert "## Benchmarks" in (store / "leaderboard.md").read_text()

