"""The Dask executor against a real cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1. Same numbers as the local executor (bit for bit); a worker killed mid-run and a client
killed mid-run lose nothing and duplicate nothing."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import framework

distributed = pytest.importorskip("distributed", reason="the test extra installs dask.distributed")

pytestmark = pytest.mark.slow

RUN = dict(models="alexnet:random,vgg11:random,pixels", signals="lowgamma@150-350,highgamma@150-350",
           metrics="rsa,linear-predictivity",
           dataset_params={"demo": {"n_images_per_category": 4, "n_subjects": 1, "n_sites": 10}},
           metric_params={"linear-predictivity": {"n_splits": 5}})
CLI_RUN = ["--models", RUN["models"], "--signals", RUN["signals"], "--metrics", RUN["metrics"],
           "--dataset-param", "demo.n_images_per_category=4", "--dataset-param", "demo.n_subjects=1",
           "--dataset-param", "demo.n_sites=10", "--metric-param", "linear-predictivity.n_splits=5",
           "--no-progress"]
N_CELLS = 3 * 2 * 2
FIELDS = ("status", "value", "ceiling", "ci_low", "ci_high", "p_value", "weights_digest")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEWORK_", "DASK_"))}
    env.update(FRAMEWORK_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1", https_proxy="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", FRAMEWORK_DOWNLOAD_TIMEOUT="2")
    return env


class Cluster:
    """A dask scheduler and two workers (no nanny: a killed worker stays dead), as separate processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = _env(folder / "worker-cache")      # the workers' user cache: not the local run's
        self.file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        self._start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.file)], "scheduler")
        deadline = time.monotonic() + 60
        while not self.file.is_file() or not self.file.read_text().strip():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]
        for i in (1, 2):
            self._start(["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                         "--name", f"w{i}", "--host", "127.0.0.1"], f"worker{i}")
        with distributed.Client(self.address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)

    def _start(self, args: list[str], name: str) -> None:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        self.procs.append(subprocess.Popen([sys.executable, "-m", "dask", *args], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=self.folder))

    def worker_pids(self) -> dict[str, int]:
        with distributed.Client(self.address, timeout=30) as client:
            return client.run(os.getpid)

    def busy_worker(self) -> str | None:
        with distributed.Client(self.address, timeout=30) as client:
            busy = [w for w, tasks in client.processing().items() if tasks]
            return busy[0] if busy else None

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()


@pytest.fixture
def cluster(tmp_path):
    folder = tmp_path / "cluster"
    folder.mkdir()
    c = Cluster(folder)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory) -> dict[str, dict]:
    """The reference: the same run with the local executor, its own cache."""
    folder = tmp_path_factory.mktemp("local")
    old = os.environ.get("FRAMEWORK_CACHE_DIR")
    os.environ["FRAMEWORK_CACHE_DIR"] = str(folder / "cache")
    try:
        framework.run(store=folder / "store", **RUN)
    finally:
        if old is None:
            os.environ.pop("FRAMEWORK_CACHE_DIR")
        else:
            os.environ["FRAMEWORK_CACHE_DIR"] = old
    return _rows(folder / "store")


def _rows(store: Path) -> dict[str, dict]:
    rows = framework.open_store(store).rows()
    keys = [r["cell_key"] for r in rows]
    assert len(keys) == len(set(keys))
    return {r["cell_key"]: r for r in rows}


def _assert_same(rows: dict[str, dict], reference: dict[str, dict]) -> None:
    assert set(rows) == set(reference) and len(rows) == N_CELLS
    for key, ref in reference.items():
        got = rows[key]
        for f in FIELDS:
            assert got.get(f) == ref.get(f) or (got.get(f) != got.get(f) and ref.get(f) != ref.get(f)), (
                got["model"], got["signal"], got["metric"], f, got.get(f), ref.get(f))
        assert json.dumps(got["details"], sort_keys=True) == json.dumps(ref["details"], sort_keys=True)
        assert got["provenance"]["executor"] == "dask" and ref["provenance"]["executor"] == "local"


def _n_rows(store: Path) -> int:
    db = store / "results.sqlite"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    except sqlite3.Error:
        return 0


def _cli(cluster: Cluster, store: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "framework.cli", "run", *CLI_RUN, "--store", str(store),
                             "--dask-scheduler", cluster.address], env=_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_dask_cluster_gives_the_local_numbers_bit_for_bit(cluster, local_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path / "client-cache"))
    results = framework.run(store=tmp_path / "store", dask_scheduler=cluster.address, **RUN)
    rows = _rows(tmp_path / "store")
    _assert_same(rows, local_rows)
    assert len(results.to_pandas()) == N_CELLS
    # the extraction ran on the workers: their cache holds the activations, the client's none
    assert any((cluster.folder / "worker-cache" / "activations").iterdir())
    assert not (tmp_path / "client-cache" / "activations").exists()


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, local_rows, tmp_path):
    store = tmp_path / "store"
    proc = _cli(cluster, store, tmp_path / "client-cache")
    pids = cluster.worker_pids()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        victim = cluster.busy_worker()                  # a worker in the middle of a task
        time.sleep(0.05)
    assert victim is not None, "no task seen running on the cluster"
    os.kill(pids[victim], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"{N_CELLS} cell(s) scored, 0 skipped" in out
    _assert_same(_rows(store), local_rows)


def test_a_client_killed_mid_run_resumes(cluster, local_rows, tmp_path):
    store = tmp_path / "store"
    proc = _cli(cluster, store, tmp_path / "client-cache")
    deadline = time.monotonic() + 180
    while _n_rows(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = _n_rows(store)
    assert 1 <= done < N_CELLS
    again = _cli(cluster, store, tmp_path / "client-cache")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert f"{N_CELLS - done} cell(s) scored, {done} skipped" in out
    _assert_same(_rows(store), local_rows)


def test_unreachable_scheduler_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "run", *CLI_RUN, "--store", str(tmp_path / "s"),
                           "--dask-scheduler", "tcp://127.0.0.1:9"], env=_env(tmp_path / "cache"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("framework: error:")]
    assert len(errors) == 1 and "Cannot reach the dask scheduler at 'tcp://127.0.0.1:9'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s" / "results.sqlite").exists() or _n_rows(tmp_path / "s") == 0


def test_gpu_device_without_gpu_workers_is_refused_before_any_work(cluster, tmp_path):
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--device cuda on Dask: no worker offers a GPU resource.*--resources GPU=1"):
        framework.run(store=tmp_path / "store", dask_scheduler=cluster.address, device="cuda", **RUN)
    assert _n_rows(tmp_path / "store") == 0


def test_cli_workers_starts_a_local_cluster_with_the_same_numbers(local_rows, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "run", *CLI_RUN, "--store", str(tmp_path / "store"),
                           "--workers", "2"], env=_env(tmp_path / "cache"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{N_CELLS} cell(s) scored, 0 skipped" in proc.stderr
    _assert_same(_rows(tmp_path / "store"), local_rows)


def test_a_script_without_a_main_guard_gets_one_line(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import framework\nframework.run(models='pixels', signals='lowgamma@150-350', metrics='rsa', "
                      f"store={str(tmp_path / 'store')!r}, workers=1, dataset_params={RUN['dataset_params']!r})\n")
    proc = subprocess.run([sys.executable, str(script)], env=_env(tmp_path / "cache"), capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "framework.errors.ConfigError: Could not start a local Dask cluster of 1 worker(s)" in last, proc.stderr
    assert "if __name__ == \"__main__\":" in last
