"""The example notebook (examples/python_api.ipynb) runs top to bottom in a real Jupyter kernel."""
from __future__ import annotations

from pathlib import Path

import pytest

from framework.store import ResultsStore

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "python_api.ipynb"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        out.append((o.get("data") or {}).get("text/plain", ""))
    return "".join(out)


@pytest.mark.slow
def test_example_notebook_runs_and_builds_dataframes_from_a_run_and_from_the_store(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path / "cache"))   # the kernel inherits the environment
    monkeypatch.delenv("MPLBACKEND", raising=False)                     # the kernel's inline backend draws PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # the run's DataFrame: 2 models x 2 signals of rsa; the figure; the store read back with the same values
    run_table = _text(code[1])
    assert "alexnet:random" in run_table and "pixels" in run_table and "lowgamma@150-350" in run_table
    assert any("image/png" in (o.get("data") or {}) for o in code[2]["outputs"])
    assert "4 cells in notebook-results; the same values as the run: True" in _text(code[3])
    assert "leaderboard.html" in _text(code[4]) and "layers.csv" in _text(code[4])
    with ResultsStore(tmp_path / "notebook-results", readonly=True) as store:
        rows = [r for r in store.rows() if r["status"] == "ok"]
    assert sorted((r["model"], r["signal"]) for r in rows) == sorted(
        (m, s) for m in ("pixels", "alexnet:random") for s in ("lowgamma@150-350", "highgamma@150-350"))
