"""The `framework` command end to end: errors, exit codes, interruption and resume."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TESTS


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _framework(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout, cwd=ROOT)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("framework: error: ")
    return lines[0]


def test_unknown_model_is_one_line_with_suggestion(tmp_path):
    line = _one_error_line(_framework("run", "--models", "alexnett", "--store", str(tmp_path)))
    assert "Unknown model 'alexnett'" in line and "Did you mean 'alexnet'" in line


def test_unknown_metric_and_signal(tmp_path):
    line = _one_error_line(_framework("run", "--models", "alexnet", "--metrics", "rsq", "--store", str(tmp_path)))
    assert "Unknown metric 'rsq'" in line and "'rsa'" in line


def test_unknown_layer(tmp_path):
    line = _one_error_line(_framework("run", "--models", "alexnet", "--layers", "conv1,conv9", "--store",
                                      str(tmp_path)))
    assert "Unknown layer 'conv9'" in line and "--layers for 'alexnet'" in line and "conv1," in line


def test_missing_dataset_path(tmp_path):
    line = _one_error_line(_framework("run", "--dataset", str(tmp_path / "missing.toml"), "--store", str(tmp_path)))
    assert "missing.toml' does not exist" in line


@pytest.mark.parametrize("content, match", [
    ("models = [alexnet\n", "not valid TOML"),
    ('modles = "alexnet"\n', "unknown field 'modles'"),
    ("batch_size = -4\n", "batch_size"),
])
def test_bad_config_file(tmp_path, content, match):
    cfg = tmp_path / "run.toml"
    cfg.write_text(content)
    line = _one_error_line(_framework("run", "--config", str(cfg)))
    assert match in line and "run.toml" in line


def test_leaderboard_without_store(tmp_path):
    line = _one_error_line(_framework("leaderboard", "--store", str(tmp_path / "none")))
    assert "No results store" in line


def test_run_with_fake_plugins_writes_leaderboard(tmp_path):
    env = _env(FRAMEWORK_PLUGINS="fake_plugins")
    proc = _framework("run", "--dataset", "fake-responses", "--models", "fake-net,fake-broken", "--signals",
                      "fake-signal", "--metrics", "fake-corr", "--store", str(tmp_path), env=env)
    assert proc.returncode == 1, proc.stderr          # some cells failed
    assert "2 of 4 cell(s) failed" in proc.stderr and "simulated failure" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "fake-net" in proc.stdout and "random init" in proc.stdout
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html"):
        assert (tmp_path / name).is_file()
    proc = _framework("leaderboard", "--store", str(tmp_path), env=env)
    assert proc.returncode == 0 and "fake-corr on fake-responses" in proc.stdout


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("select count(*) from scores where status='ok'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_or_duplicating(tmp_path):
    env = _env(FRAMEWORK_PLUGINS="fake_plugins")
    args = ["run", "--dataset", "fake-responses", "--models", "fake-net,fake-net2", "--signals", "fake-signal",
            "--metrics", "fake-corr",
            "--metric-param", "fake-corr.sleep=0.7", "--store", str(tmp_path), "--no-progress"]
    db = tmp_path / "results.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "framework.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _count(db) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        before = dict(conn.execute("select cell_key, finished_at from scores where status='ok'").fetchall())
    assert 2 <= len(before) < 4, "the run should have been killed mid-way"

    done = _framework(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} skipped" in done.stderr
    with sqlite3.connect(db) as conn:
        after = dict(conn.execute("select cell_key, finished_at from scores where status='ok'").fetchall())
        total = conn.execute("select count(*) from scores").fetchone()[0]
    assert total == 4 and len(after) == 4
    assert all(after[k] == v for k, v in before.items())     # finished cells were not recomputed


def test_config_file_drives_the_run(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "fake-responses"\nmodels = ["fake-net"]\nsignals = ["fake-signal"]\n'
                   'metrics = ["fake-corr"]\nstore = "out"\nseed = 3\n'
                   '[metric_params.fake-corr]\nfail_on_signal_sign = "resp-neg"\n')
    proc = _framework("run", "--config", str(cfg), "--no-progress", env=_env(FRAMEWORK_PLUGINS="fake_plugins"))
    assert proc.returncode == 1, proc.stderr
    assert "fake-net × resp-neg × fake-corr" in proc.stderr and "simulated metric failure" in proc.stderr
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as conn:    # store relative to the file
        rows = conn.execute("select signal, status, provenance from scores").fetchall()
    assert sorted((s, st) for s, st, _ in rows) == [("resp", "ok"), ("resp-neg", "error")]
    assert all('"seed": 3' in prov for s, st, prov in rows if st == "ok")


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "words"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_keeps_finished_cells_and_says_how_to_resume(tmp_path, sig, code, words):
    env = _env(FRAMEWORK_PLUGINS="fake_plugins")
    args = ["run", "--dataset", "fake-responses", "--models", "fake-net,fake-net2", "--signals", "fake-signal",
            "--metrics", "fake-corr", "--metric-param", "fake-corr.sleep=0.7", "--store", str(tmp_path),
            "--no-progress"]
    db = tmp_path / "results.sqlite"
    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; give the child the default disposition so it reacts to Ctrl-C as in a terminal.
    proc = subprocess.Popen([sys.executable, "-m", "framework.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while _count(db) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{words}; finished cells are saved" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert 1 <= _count(db) < 4
    # the run resumes: the finished cell is skipped, the others are scored, nothing is duplicated
    done = _count(db)
    again = subprocess.run([sys.executable, "-m", "framework.cli", *args], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{done} skipped" in again.stderr
    assert _count(db) == 4


def test_cache_dir_that_is_a_file_is_one_line(tmp_path):
    cache = tmp_path / "cachefile"
    cache.write_text("x\n")
    proc = _framework("run", "--models", "fake-net", "--dataset", "fake-responses", "--signals", "fake-signal",
                      "--metrics", "fake-corr", "--store", str(tmp_path / "s"), "--no-progress",
                      env=_env(FRAMEWORK_PLUGINS="fake_plugins", FRAMEWORK_CACHE_DIR=str(cache)))
    line = _one_error_line(proc)
    assert "$FRAMEWORK_CACHE_DIR" in line and str(cache) in line and "internal error" not in proc.stderr
