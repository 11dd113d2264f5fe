"""Where a plan's work runs: in this process (``local``), or as tasks on a Dask cluster (``dask``).

The local executor is :meth:`framework.scheduler.Scheduler._run_pending`. On Dask
(``--executor dask``, ``--dask-scheduler ADDRESS`` or ``--workers N``), the plan becomes tasks:

* one per signal plugin (its signals, cached in the worker's user cache),
* one per model (extraction; what it returns are the per-layer statistics the metrics declared,
  kilobytes to megabytes, never the raw features), annotated ``resources={"GPU": 1}`` when the
  extraction device is a GPU,
* one per cell (scoring), placed by Dask where its model's statistics are.

Only this process (the client) writes the results store, a row as each cell's future completes,
so an interrupted run resumes exactly as a local one; the numbers are the same because a task
runs the same functions as the local loop (:func:`framework.scheduler.score_cell`,
:meth:`~framework.scheduler.Scheduler._activations`). A task lost with its worker is computed again
by Dask on another worker (its ``allowed-failures``, 3 by default); a cell whose task still cannot
finish is recorded as failed with the reason, like any failed cell, and is scored on the next run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from framework.errors import ConfigError, FrameworkError

if TYPE_CHECKING:
    from framework.config import RunConfig
    from framework.scheduler import Plan, PlannedCell, RunSummary, Scheduler, _ModelWork

log = logging.getLogger(__name__)

#: Seconds to wait for a ``--dask-scheduler`` to answer.
CONNECT_TIMEOUT_S = 10
#: Seconds to wait for the first worker of a running scheduler (batch-queued workers may start late).
WORKER_WAIT_S = 300
INSTALL_HINT = "pip install 'brainscore-framework[cluster]' (dask.distributed) on the client and every worker"


@contextlib.contextmanager
def open_executor(config: RunConfig) -> Iterator[Any]:
    """The Dask client of ``config`` (None for the local executor), closed on exit.

    ``dask_scheduler``: connect to a running scheduler (and wait for a worker); ``workers``:
    start a :class:`distributed.LocalCluster` of that many single-threaded worker processes
    (default one per core). Unreachable scheduler, no worker or a framework version that differs
    on a worker: :class:`ConfigError`, before any work.
    """
    if config.executor != "dask":
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(f"--executor dask needs dask.distributed, which is not installed; {INSTALL_HINT}.") from None
    cluster = None
    if config.dask_scheduler:
        try:
            client = Client(config.dask_scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"Cannot reach the dask scheduler at '{config.dask_scheduler}' (option "
                              f"--dask-scheduler): {type(exc).__name__}: {exc}. Start one with `dask scheduler` and "
                              "workers with `dask worker ADDRESS`, or fix the address.") from None
    else:
        n = config.workers or os.cpu_count() or 1
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        except RuntimeError as exc:  # e.g. "Nanny failed to start": the workers could not import the caller
            raise ConfigError(f"Could not start a local Dask cluster of {n} worker(s) ({exc}). In a Python script, "
                              "call framework.run(...) under `if __name__ == \"__main__\":` (the workers are new "
                              "processes that import the script); otherwise see the worker errors above.") from None
        client = Client(cluster)
    try:
        _check_workers(client, config.dask_scheduler)
        if str(config.device).startswith(("cuda", "mps")):
            _check_gpu_workers(client, config.device)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _framework_version() -> str:
    import framework

    return framework.__version__


def _check_workers(client: Any, address: str | None) -> None:
    """At least one worker, each with this framework version (tasks run this process's functions)."""
    if not client.scheduler_info().get("workers"):
        log.info("Waiting up to %d s for a worker to join the dask scheduler at %s...", WORKER_WAIT_S, address)
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ConfigError(f"The dask scheduler at '{address}' has no worker after {WORKER_WAIT_S} s; start "
                          f"workers with `dask worker {address}` (each with this environment: {INSTALL_HINT}).") \
            from None
    mine = _framework_version()
    theirs = client.run(_framework_version)
    other = {w: v for w, v in theirs.items() if v != mine}
    if other:
        worker, version = next(iter(other.items()))
        raise ConfigError(f"Dask worker {worker} has framework {version}, this process {mine}; install the same "
                          "version on every worker (tasks run the client's code).")


def _check_gpu_workers(client: Any, device: str) -> None:
    """Extraction tasks ask for ``resources={"GPU": 1}``: some worker must offer it, or they would wait forever."""
    workers = client.scheduler_info().get("workers", {})
    if not any((w.get("resources") or {}).get("GPU") for w in workers.values()):
        raise ConfigError(f"--device {device} on Dask: no worker offers a GPU resource, so no extraction could "
                          "start; start the GPU workers with `dask worker ADDRESS --resources GPU=1` (dask-jobqueue: "
                          "worker_extra_args=['--resources', 'GPU=1']), or use --device cpu.")


# --------------------------------------------------------------------------------------------------
# tasks (run on the workers)
# --------------------------------------------------------------------------------------------------
_WORKER_REGISTRY: Any = None


def _warm_up() -> None:
    """Import the scheduler, torch and the plugin registry on a worker (seconds, once per process)."""
    global _WORKER_REGISTRY
    import torch  # noqa: F401 - the import is the point

    from framework.registry import load_registry
    from framework.scheduler import Scheduler  # noqa: F401

    if _WORKER_REGISTRY is None:
        _WORKER_REGISTRY = load_registry()


def _worker_scheduler(plan: Plan) -> Scheduler:
    """A scheduler of ``plan`` without a store, on a worker: its caches are the worker's user cache."""
    from framework.scheduler import Scheduler

    _warm_up()
    scheduler = Scheduler(plan, None, progress=False)  # type: ignore[arg-type]
    scheduler._registry = _WORKER_REGISTRY
    return scheduler


def _the(value: Any) -> Any:
    return value


@dataclass
class Failed:
    """A task's error, returned rather than raised so Dask does not retry it (only lost workers are)."""

    text: str
    traceback: str | None = None


def _failed(exc: BaseException, what: str) -> Failed:
    from framework.scheduler import _error_text

    return Failed(f"{what} failed: {_error_text(exc)}",
                  None if isinstance(exc, FrameworkError) else traceback.format_exc())


def signals_task(plan: Plan, names: list[str]) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Compute (or read from the worker's cache) ``names``: targets, errors by signal, signal info."""
    from framework.scheduler import RunSummary

    scheduler = _worker_scheduler(plan)
    summary = RunSummary("worker", 0)
    targets, errors = scheduler._compute_signals(set(names), summary)
    return targets, errors, summary.signal_info


def extract_task(plan: Plan, work: _ModelWork) -> tuple[Any, Any, dict[str, Any]] | Failed:
    """A model's activations (the statistics its metrics need), its weights and extraction info."""
    scheduler = _worker_scheduler(plan)
    try:
        with scheduler._cell(model=work.choice.name):
            return scheduler._activations(work)
    except Exception as exc:
        return _failed(exc, f"model '{work.choice.name}'")


def score_task(plan: Plan, c: PlannedCell, extraction: Any, signals: Any) -> tuple[Any, ...]:
    """Score one cell on a worker: ``("ok", outcome, weights, model_info, target_info)``, or
    ``("model" | "signal", Failed)`` when its model or signal failed."""
    from framework.log_context import cell_context
    from framework.scheduler import score_cell

    if isinstance(extraction, Failed):
        return ("model", extraction)
    targets, errors, _ = signals
    if c.signal in errors:
        return ("signal", Failed(errors[c.signal]))
    acts, weights, info = extraction
    target = targets[c.signal]
    with cell_context(model=c.model.name, signal=c.signal, metric=c.metric):
        outcome = score_cell(plan, c, acts, target)
    return ("ok", outcome, weights, info, dict(getattr(target, "info", {}) or {}))


# --------------------------------------------------------------------------------------------------
# the client loop
# --------------------------------------------------------------------------------------------------
def run_pending_on_dask(scheduler: Scheduler, works: list[_ModelWork], summary: RunSummary, client: Any,
                        bar: Any) -> None:
    """Submit the pending work of ``works`` as tasks and write each cell's row as its task completes."""
    from distributed import as_completed

    plan = scheduler.plan
    tag = uuid.uuid4().hex[:8]
    # a task (not scatter): Dask can compute it again if the worker holding the plan is lost
    plan_future = client.submit(_the, plan, key=f"plan-{tag}", pure=False)
    live = [w for w in works if w.cells and w.error is None]
    for w in works:                                     # weights unresolved: fail as the local loop does
        if w.cells and w.error is not None:
            for c in w.cells:
                scheduler._fail(c, w.error, summary)
                bar.update()
    needed = sorted({c.signal for w in live for c in w.cells})
    by_plugin: dict[str, list[str]] = {}
    for name in needed:
        by_plugin.setdefault(plan.signal_plugin_names[name], []).append(name)
    signal_future = {}
    signal_futures = []
    for plugin, names in by_plugin.items():
        fut = client.submit(signals_task, plan_future, names, key=f"signals-{plugin}-{tag}", pure=False)
        signal_futures.append(fut)
        signal_future.update({name: fut for name in names})
    resources = _extraction_resources(plan)
    cells: dict[Any, tuple[_ModelWork, PlannedCell]] = {}
    for w in live:
        ext = client.submit(extract_task, plan_future, replace(w, model=None), key=f"extract-{w.choice.name}-{tag}",
                            pure=False, resources=resources)
        for i, c in enumerate(w.cells):
            fut = client.submit(score_task, plan_future, c, ext, signal_future[c.signal],
                                key=f"score-{w.choice.name}-{c.signal}-{c.metric}-{i}-{tag}", pure=False)
            cells[fut] = (w, c)
        del ext                                         # held by the scheduler while its cells need it
        w.model = None
    model_errors: set[str] = set()
    for fut in as_completed(list(cells)):
        work, c = cells.pop(fut)
        assert work.weights is not None
        try:
            result = fut.result()
        except Exception as exc:  # KilledWorker after Dask's retries, a cancelled task, a lost connection
            text = (f"cell {c.model.name} × {c.signal} × {c.metric} was lost on the Dask cluster "
                    f"({type(exc).__name__}: {exc}); run again to score it")
            log.error(text)
            scheduler._fail(c, text, summary, weights_source=work.weights.source, weights_label=work.weights.label)
        else:
            _write(scheduler, work, c, result, summary, model_errors)
        fut.release()
        bar.set_postfix_str(f"{c.model.name} × {c.signal} × {c.metric}", refresh=False)
        bar.update()
    for fut in signal_futures:   # the info is a summary line; a failure is already in its cells' rows
        with contextlib.suppress(Exception):
            summary.signal_info.update(fut.result()[2])
    client.cancel([plan_future])


def _write(scheduler: Scheduler, work: _ModelWork, c: PlannedCell, result: tuple, summary: RunSummary,
           model_errors: set[str]) -> None:
    """The row of one completed score task (on the client)."""
    assert work.weights is not None
    kind = result[0]
    if kind in ("model", "signal"):
        failed: Failed = result[1]
        if kind == "model" and failed.text not in model_errors:   # the model's error once, not once per cell
            model_errors.add(failed.text)
            if failed.traceback:
                log.debug("Model failure:\n%s", failed.traceback)
            log.error(failed.text)
        scheduler._fail(c, failed.text, summary, weights_source=work.weights.source, weights_label=work.weights.label)
        return
    _, outcome, weights, model_info, target_info = result
    if (weights.source, weights.digest) != (work.weights.source, work.weights.digest):
        # the weights changed since they were resolved (e.g. a checkpoint replaced): key by those used
        c = replace(c, cell=c.cell.with_weights(weights.source, weights.digest))
        summary.cell_keys.append(c.cell.key)
        if c.cell.key in scheduler.store.done_keys():
            summary.n_skipped += 1
            return
    provenance = scheduler._provenance(c, weights, model_info, target_info)
    scheduler._record(c, outcome, weights, provenance, summary)


def _extraction_resources(plan: Plan) -> dict[str, float] | None:
    """``{"GPU": 1}`` when extraction runs on a GPU (workers started with ``--resources GPU=1``)."""
    device = str(getattr(plan.config, "device", "cpu") or "cpu")
    return {"GPU": 1} if device.startswith(("cuda", "mps")) else None
