"""The Dask executor against the local one on an extraction-heavy run, and the cost of a task.

    python benchmarks/bench_executor.py [--models alexnet:random,vgg11:random,...] [--images-per-category 8]

Prints, for the same run (random-init networks on a subset of the demo dataset, one signal, rsa;
a fresh activation cache for every run so each network is really run):

* the local executor (one process; torch and BLAS use every core), the same with one thread
  (what one single-threaded worker does), and ``--workers 2`` (a ``LocalCluster`` of two
  single-threaded worker processes): wall time with and without the cluster's start-up, and the
  speedups;
* the ideal speedup of 2 workers over one single-threaded process: the one-thread run with its
  per-model extraction times packed on two workers (longest first) and the rest of the run
  (planning, weights, signals, scoring, the leaderboard) unchanged, as Amdahl's law has it. On a
  machine with as many cores as workers the local run already uses every core (torch's intra-op
  threads), so against it the ideal is about 1x: the gain of Dask is more machines and GPUs;
* the overhead per task: 1,000 no-op tasks through the same cluster, and a run whose cells are all
  scored from the cache (so each cell is one scoring task and one row write).

The numbers of the two executors are checked to be identical. Needs ``pip install
'brainscore-framework[cluster]'``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODELS = "alexnet:random,vgg11:random,vgg13:random,vgg16:random"


def _run(store: Path, cache: Path, models: str, n_img: int, **executor):
    import framework

    os.environ["FRAMEWORK_CACHE_DIR"] = str(cache)
    t0 = time.perf_counter()
    framework.run(store=store, models=models, signals="lowgamma@150-350", metrics="rsa",
                  dataset_params={"demo": {"n_images_per_category": n_img}}, **executor)
    return time.perf_counter() - t0


def _values(store: Path) -> dict:
    import framework

    return {r["cell_key"]: (r["value"], r["status"]) for r in framework.open_store(store).rows()}


def _extraction_seconds(store: Path) -> list[float]:
    import framework

    out = []
    for r in framework.open_store(store).rows():
        text = ((r.get("provenance") or {}).get("model") or {}).get("extraction") or ""
        if text.endswith(" s"):
            out.append(float(text[:-2]))
    return out


def _ideal(times: list[float], workers: int = 2) -> float:
    """Makespan of ``times`` packed longest first on ``workers`` (LPT), against their sum."""
    loads = [0.0] * workers
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return sum(times) / max(loads) if times else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--images-per-category", type=int, default=8, help="demo images per category (x5)")
    parser.add_argument("--tasks", type=int, default=1000, help="no-op tasks for the per-task overhead")
    args = parser.parse_args()
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("needs dask.distributed: pip install 'brainscore-framework[cluster]'", file=sys.stderr)
        return 2
    import logging

    logging.getLogger("framework").setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    try:
        n_models = len(args.models.split(","))
        # the demo dataset is generated once, outside the timings
        _run(work / "warm", work / "cache-warm", "pixels", args.images_per_category)
        for name in ("local", "local1", "dask"):
            shutil.copytree(work / "cache-warm" / "datasets", work / f"cache-{name}" / "datasets")
        local = _run(work / "local", work / "cache-local", args.models, args.images_per_category)
        import torch
        from threadpoolctl import threadpool_limits

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with threadpool_limits(1):
            local1 = _run(work / "local1", work / "cache-local1", args.models, args.images_per_category)
        torch.set_num_threads(threads)
        os.environ["FRAMEWORK_CACHE_DIR"] = str(work / "cache-dask")   # the workers' cache: not the local run's
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        startup = time.perf_counter() - t0
        dask = _run(work / "dask", work / "cache-dask", args.models, args.images_per_category,
                    dask_scheduler=cluster.scheduler_address)
        same = _values(work / "local") == _values(work / "dask") == _values(work / "local1")
        # overhead: no-op tasks, then a run scored entirely from the cache (a fresh store)
        t0 = time.perf_counter()
        client.gather(client.map(lambda i: i, range(args.tasks), pure=False))
        per_task = (time.perf_counter() - t0) / args.tasks
        cached_dask = _run(work / "dask-cached", work / "cache-dask", args.models, args.images_per_category,
                           dask_scheduler=cluster.scheduler_address)
        cached_local = _run(work / "local-cached", work / "cache-local", args.models, args.images_per_category)
        client.close()
        cluster.close()
        extraction = _extraction_seconds(work / "local1")
        makespan = sum(extraction) / _ideal(extraction)
        ideal = local1 / (local1 - sum(extraction) + makespan)
        print(f"run: {n_models} models x 1 signal x rsa on {5 * args.images_per_category} demo images, "
              f"fresh activation cache; {os.cpu_count()} cores")
        print(f"local executor, 1 process, {threads} threads  : {local:7.2f} s")
        print(f"local executor, 1 process, 1 thread   : {local1:7.2f} s")
        print(f"dask --workers 2 (1 thread each)       : {dask:7.2f} s  (+ {startup:.2f} s cluster start-up)")
        print(f"speedup over local ({threads} threads)        : {local / dask:7.2f}x  "
              f"({local / (dask + startup):.2f}x with start-up)")
        print(f"speedup over local (1 thread)          : {local1 / dask:7.2f}x; ideal {ideal:.2f}x (the 1-thread "
              f"extractions, {sum(extraction):.1f} s, packed on 2 workers in {makespan:.1f} s; the other "
              f"{local1 - sum(extraction):.1f} s of the run unchanged)")
        print(f"same numbers in all three runs          : {same}")
        print(f"1-thread extraction per model (s)      : {', '.join(f'{t:.2f}' for t in sorted(set(extraction)))}")
        print(f"per-task overhead (no-op, {args.tasks} tasks)   : {per_task * 1e3:7.2f} ms")
        print(f"all cells from the cache: local {cached_local:.2f} s, dask {cached_dask:.2f} s "
              f"({n_models} cells; {(cached_dask - cached_local) / n_models * 1e3:+.0f} ms per cell on dask)")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
