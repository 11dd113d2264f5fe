"""The demo reproduces the Kuzovkin et al. pattern end to end, from raw time series to rho_align:
with real ImageNet weights, low-gamma responses follow the layer hierarchy along the ventral
stream; theta carries no stimulus information; a randomly initialised network is not aligned."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from conftest import SHARED


@pytest.mark.slow
def test_lowgamma_aligned_theta_not_random_control_not(tmp_path):
    weights = SHARED / "weights" / "tf_efficientnet_lite0.safetensors"
    if not weights.is_file():
        pytest.skip("real EfficientNet weights not in ../shared/weights")
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "framework.cli", "run", "--models", "timm:tf_efficientnet_lite0,alexnet:random",
         "--weights-file", f"timm:tf_efficientnet_lite0={weights}", "--metrics", "alignment",
         "--signals", "lowgamma@150-350,theta@150-350", "--store", str(store), "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(store / "results.sqlite") as conn:
        rows = {(m.split(":")[1] if m.startswith("timm:") else m, s.split("@")[0]): (v, p) for m, s, v, p in
                conn.execute("select model, signal, value, p_value from scores where status='ok'")}
    rho, p = rows["tf_efficientnet_lite0", "lowgamma"]
    assert rho > 0.3 and p < 0.01, (rho, p)
    assert rows["tf_efficientnet_lite0", "theta"][0] is None          # no significant (site, layer) pair
    rho_random, p_random = rows["alexnet:random", "lowgamma"]
    assert rho_random is None or (abs(rho_random) < 0.2 and p_random > 0.05), (rho_random, p_random)
