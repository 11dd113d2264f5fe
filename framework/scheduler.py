"""Plan and execute a run: the cross product models × signals × metrics on each dataset, or benchmarks.

Stages, each done once and cached:

1. load the dataset (the dataset plugin caches expensive generation);
2. compute every requested signal in one pass per signal plugin
   (``<user cache>/responses/<key>.npz``);
3. per model: run the network once and keep, per layer, the statistics the
   metrics declared (:meth:`framework.contracts.MetricPlugin.needs`: Gram
   matrices, per-fold Gram matrices; raw features only when a metric needs them
   or ``keep_activations``) in ``<user cache>/activations/``, then score every
   pending (signal, metric) cell, writing each row to the results store as soon
   as it is computed.

The user cache (:func:`framework.paths.user_cache_dir`) is shared by every
store; ``framework cache info`` and ``framework cache prune`` manage it.

A cell's key is settled in two steps: the plan hashes what the run asks for
(:attr:`PlannedCell.cell` holds that provisional key); execution first resolves
each model's weights (``weights_info()``: offline a pretrained load fails fast,
else the checkpoint is read) and keys its cells by the weights actually used
(:meth:`framework.store.Cell.with_weights`). Only then are cells already in the
store with status ``ok`` skipped, so an interrupted run resumes exactly, and a
cell scored with a random-init fallback is scored again once the pretrained
weights load. A failing cell is recorded with its error and the run goes on.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import framework
from framework.config import RunConfig
from framework.contracts import MetricPlugin, ModelPlugin, SignalPlugin, WeightsInfo
from framework.errors import ConfigError, DataError, FrameworkError, did_you_mean, unknown_name_error
from framework.layer_stats import Need
from framework.log_context import attribute_warnings, cell_context
from framework.numerics.stimuli import stimulus_order
from framework.paths import ensure_cache_dir, not_a_file, user_cache_dir
from framework.registry import RANDOM_SUFFIX, Registry, load_registry
from framework.store import DB_NAME, Cell, ResultsStore, StoreWriteError
from framework.target_io import load_target, save_target
from framework.types import Activations, Dataset, Score, StimulusSet, Target, digest_of

log = logging.getLogger("framework.scheduler")

#: Largest per-layer size (bytes) of a statistic computed ahead for a built-in metric the run does not use
#: (:meth:`Scheduler._extra_needs`).
EXTRA_STATS_BYTES = 8 * 2**20

_PACKAGES = ("numpy", "scipy", "torch", "torchvision", "timm", "mne", "scikit-learn", "pluggy", "pydantic")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "framework": framework.__version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------
@dataclass
class ModelChoice:
    """One model of the run and how to build it."""

    name: str                    # as the user wrote it, e.g. "alexnet:random"
    weights: str                 # auto | pretrained | random
    weights_file: Path | None
    layers: list[str] | None
    params: dict[str, Any]       # as given; passed to the factory
    #: What identifies the model's activations: its validated parameters that define results
    #: (``model.params.key()``) and its plugin version; filled when the model is first built.
    identity: dict[str, Any] = field(default_factory=dict)

    def key_parts(self) -> dict[str, Any]:
        wf = None
        if self.weights_file is not None:
            st = self.weights_file.stat() if self.weights_file.exists() else None
            wf = [str(self.weights_file.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None]
        return {"model": self.name, "weights": self.weights, "weights_file": wf, "layers": self.layers,
                **(self.identity or {"params": self.params})}


def model_identity(model: ModelPlugin, given: dict[str, Any]) -> dict[str, Any]:
    """The validated parameters that define a model's results and its plugin version.

    A model without a declaration (``params``) is identified by the parameters as given.
    """
    declared = getattr(model, "params", None)
    params = declared.key() if hasattr(declared, "key") else dict(given)
    return {"params": params, "version": model.version()}


@dataclass
class PlannedCell:
    cell: Cell              # planned: keyed by what was asked for; execution re-keys it by the weights used
    model: ModelChoice
    signal: str
    metric: str


@dataclass
class Plan:
    config: RunConfig
    dataset: Dataset
    models: list[ModelChoice]
    signals: dict[str, SignalPlugin]          # signal name -> plugin that computes it
    signal_plugin_names: dict[str, str]       # signal name -> plugin id
    metrics: dict[str, MetricPlugin]
    cells: list[PlannedCell]
    notes: list[str] = field(default_factory=list)
    #: Benchmarks this plan scores (:func:`benchmark_plans`); empty for a cross-product run.
    benchmarks: list[str] = field(default_factory=list)


def load_dataset(config: RunConfig, registry: Registry) -> Dataset:
    """Load the dataset named by ``config.dataset`` (registered name or TOML path)."""
    name = config.dataset
    registered = registry.names("dataset")
    if name in registered and name != "file":
        cache_dir = ensure_cache_dir("datasets")  # a bad $FRAMEWORK_CACHE_DIR is one line, not a crash
        dataset = registry.create("dataset", name, cache_dir=cache_dir, **config.dataset_params.get(name, {})).load()
    elif _looks_like_path(name):
        path = Path(name)
        if path.is_dir():
            tomls = sorted(p.name for p in path.glob("*.toml"))
            listing = f" (TOML files there: {', '.join(tomls[:5])})" if tomls else ""
            raise DataError(f"Dataset file '{path}' is a folder, not a file (option --dataset); give the path of "
                            f"the dataset TOML file inside it{listing}.")
        if not path.is_file():
            raise DataError(f"Dataset file '{path}' does not exist (option --dataset); give the path of a dataset "
                            f"TOML file or one of: {', '.join(n for n in registered if n != 'file')}.")
        dataset = registry.create("dataset", "file", path=path, cache_dir=ensure_cache_dir("datasets"),
                                  **config.dataset_params.get("file", {})).load()
    else:
        raise unknown_name_error("dataset", name, [n for n in registered if n != "file"], option="--dataset")
    return dataset


def _looks_like_path(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name or "/" in name or Path(name).exists()


def dataset_plugin_name(config: RunConfig, registry: Registry) -> str | None:
    """The dataset plugin the run uses: a registered name, ``"file"`` for a path, else None (unknown)."""
    name = config.dataset
    if name in registry.names("dataset") and name != "file":
        return name
    return "file" if _looks_like_path(name) else None


def _check_params_in_run(config: RunConfig, registry: Registry, metric_names: list[str]) -> None:
    """Refuse parameters for a metric or dataset that is not in the run (they would be ignored silently),
    as :func:`_resolve_models` does for models."""
    for key in config.metric_params:
        if key not in metric_names:
            raise ConfigError(f"metric_params (--metric-param) names metric '{key}', which is not in this run's "
                              f"metrics ({', '.join(metric_names)}); add it to --metrics or drop its parameters."
                              f"{did_you_mean(key, metric_names)}")
    used = dataset_plugin_name(config, registry)
    for key in config.dataset_params:
        if used is not None and key != used:
            raise ConfigError(f"dataset_params (--dataset-param) names dataset '{key}', which is not this run's "
                              f"dataset ('{used}'); choose it with --dataset or drop its parameters.")


def _check_signal_params_in_run(config: RunConfig, owners: dict[str, str]) -> None:
    """Refuse parameters for a signal plugin that computes none of the run's signals (they would be ignored)."""
    used = sorted(set(owners.values()))
    for key in config.signal_params:
        if key not in used:
            raise ConfigError(f"signal_params (--signal-param) names signal plugin '{key}', which computes none of "
                              f"this run's signals (computed by: {', '.join(used)}); choose its signals with "
                              "--signals or drop its parameters.")


def _warn_store_in_cache(store: Path) -> None:
    """A store in the user cache lives in a folder documented as deletable: warn (valid, but risky)."""
    try:
        cache = user_cache_dir().resolve()
        where = Path(store).expanduser().resolve()
    except (OSError, RuntimeError):
        return
    if where == cache or where.is_relative_to(cache):
        log.warning("Store '%s' is inside the user cache '%s', which may be deleted at any time (it holds only "
                    "files the framework can rebuild); choose a --store outside it to keep your results.",
                    store, cache)


def _check_store_database(store: Path) -> None:
    db = Path(store) / DB_NAME
    if db.is_dir():
        raise ConfigError(f"'{db}' is a directory, not a results database (option --store); move it away or "
                          "choose another --store.")


def _expand(requested: list[str], available: list[str], kind: str, option: str) -> list[str]:
    if requested == ["all"]:
        return list(available)
    out: list[str] = []
    for name in requested:
        if name == "all":
            raise ConfigError(f"'all' cannot be combined with other names in {option}; give either 'all' or a list.")
        if name not in out:
            out.append(name)
    return out


def _resolve_signals(config: RunConfig, registry: Registry, dataset: Dataset
                     ) -> tuple[dict[str, SignalPlugin], dict[str, str]]:
    plugins: dict[str, SignalPlugin] = {}
    owner: dict[str, str] = {}
    offered: dict[str, SignalPlugin] = {}
    for spec in registry.specs("signal"):
        if spec.is_family:
            continue
        params = config.signal_params.get(spec.name, {})
        plugin: SignalPlugin = spec.create(**params)
        plugins[spec.name] = plugin
        if dataset.kind not in plugin.accepts:
            continue
        for sname in plugin.names(dataset.kind):
            if sname in offered:
                raise ConfigError(f"Signal '{sname}' is offered by two plugins ('{owner[sname]}' and "
                                  f"'{spec.name}'); uninstall one.")
            offered[sname] = plugin
            owner[sname] = spec.name
    unknown_params = set(config.signal_params) - set(plugins)
    if unknown_params:
        bad = sorted(unknown_params)[0]
        raise unknown_name_error("signal", bad, list(plugins), option="signal_params", error_cls=ConfigError)
    if not offered:
        raise ConfigError(f"No signal plugin can read a dataset of kind '{dataset.kind}' ('{dataset.name}').")
    chosen: list[str] = []
    if config.signals == ["all"]:
        chosen = list(offered)
    else:
        for name in _expand(config.signals, list(offered), "signal", "--signals"):
            if name in offered:
                matches = [name]
            elif name in plugins:  # a plugin id expands to all its signals
                matches = [s for s, o in owner.items() if o == name]
                if not matches:
                    raise ConfigError(f"Signal plugin '{name}' offers nothing for a dataset of kind "
                                      f"'{dataset.kind}'; choose from: {', '.join(offered)}.")
            else:  # a band name expands to all its windows: "lowgamma" -> "lowgamma@..."
                matches = [s for s in offered if s.split("@", 1)[0] == name]
            if not matches:
                raise unknown_name_error("signal", name, list(offered) + list(plugins), option="--signals")
            chosen += [m for m in matches if m not in chosen]
    return {s: offered[s] for s in chosen}, {s: owner[s] for s in chosen}


def _check_signals(signals: dict[str, SignalPlugin], dataset: Dataset) -> None:
    """Let each signal plugin check its chosen signals against the dataset (plan time, no computation)."""
    groups: dict[int, tuple[SignalPlugin, list[str]]] = {}
    for name, plugin in signals.items():
        groups.setdefault(id(plugin), (plugin, []))[1].append(name)
    for plugin, names in groups.values():
        plugin.check(dataset, names)


def _resolve_metrics(config: RunConfig, registry: Registry, target_kind: str) -> tuple[dict[str, MetricPlugin],
                                                                                      list[str]]:
    names = _expand(config.metrics, registry.names("metric"), "metric", "--metrics")
    for bad in set(config.metric_params) - set(registry.names("metric")):
        raise unknown_name_error("metric", bad, registry.names("metric"), option="metric_params",
                                 error_cls=ConfigError)
    metrics: dict[str, MetricPlugin] = {}
    notes: list[str] = []
    for name in names:
        spec, _ = registry.resolve("metric", name, option="--metrics")
        plugin: MetricPlugin = spec.create(**config.metric_params.get(name, {}))
        if target_kind not in plugin.accepts:
            notes.append(f"metric '{name}' does not score {target_kind} data; skipped")
            continue
        metrics[name] = plugin
    if not metrics:
        raise ConfigError(f"None of the metrics {', '.join(names)} can score {target_kind} data; choose from "
                          f"metrics that accept it (`framework list metrics`).")
    return metrics, notes


def _resolve_models(config: RunConfig, registry: Registry) -> list[ModelChoice]:
    names = _expand(config.models, registry.names("model"), "model", "--models")
    for name in names:
        registry.resolve("model", name, option="--models")
    for option, table in (("weights_files", config.weights_files), ("layers", config.layers),
                          ("model_params", config.model_params)):
        for key in table:
            if key != "*" and key not in names:
                raise ConfigError(f"{option} names model '{key}', which is not in this run's models "
                                  f"({', '.join(names)}).{did_you_mean(key, names)}")
    choices = []
    for name in names:
        weights = "random" if name.endswith(RANDOM_SUFFIX) else config.weights
        wf = config.weights_files.get(name)
        if wf is not None and name.endswith(RANDOM_SUFFIX):
            raise ConfigError(f"Model '{name}' is the random-init control, but a weights file is given for it "
                              f"(option --weights-file {name}={wf}); give the file to "
                              f"'{name[:-len(RANDOM_SUFFIX)]}' instead, or drop it.")
        if wf is not None and Path(wf).is_dir():
            raise DataError(f"Weights file '{wf}' for model '{name}' is a directory (option --weights-file); "
                            "give the path of a .safetensors, .pt or .pth file inside it.")
        if wf is not None and not Path(wf).is_file():
            raise DataError(f"Weights file '{wf}' for model '{name}' {not_a_file(wf)} (option --weights-file); "
                            "give the path of a .safetensors, .pt or .pth file.")
        if wf is not None and config.weights == "random":
            log.warning("Model '%s' is scored with its weights file '%s', not random init: a weights file wins "
                        "over --weights random (use '%s%s' for the random-init control).", name, wf, name,
                        RANDOM_SUFFIX)
        layers = config.layers.get(name, config.layers.get("*"))
        choice = ModelChoice(name, weights, Path(wf) if wf else None, layers, dict(config.model_params.get(name, {})))
        # Model plugins validate their name (e.g. a timm network) and parameters on construction,
        # which is cheap (weights load lazily), and list their layers without weights: a typo in a
        # name or a layer fails here, before any work.
        model = _build_model(registry, choice, config.seed)
        if layers:
            _check_layers(model, layers, name)
        choice.identity = model_identity(model, choice.params)
        choices.append(choice)
    return choices


def check_plugin_params(config: RunConfig, registry: Registry) -> None:
    """Validate every signal, metric and dataset parameter of ``config`` against its plugin's declaration.

    Model parameters are validated when the models are built (:func:`_resolve_models`).
    Raises :class:`ConfigError` (one line naming the plugin, the parameter and the fix).
    """
    for kind, table, option in (("signal", config.signal_params, "signal_params"),
                                ("metric", config.metric_params, "metric_params"),
                                ("dataset", config.dataset_params, "dataset_params")):
        names = [s.name for s in registry.specs(kind) if not s.is_family]
        for name, params in table.items():
            if name not in names:
                raise unknown_name_error(kind, name, names, option=option, error_cls=ConfigError)
            spec, _ = registry.resolve(kind, name)
            spec.check_params(params, name=name)


def _check_layers(model: ModelPlugin, layers: list[str], name: str) -> None:
    """Every layer known to ``model``; a model that can tell (``check_layers``) also refuses two names
    of one module (an alias and its module path), which would be scored twice."""
    known = model.layers()
    for layer in layers:
        if layer not in known:
            raise unknown_name_error("layer", layer, known, option=f"--layers for '{name}'", error_cls=ConfigError)
    check = getattr(model, "check_layers", None)
    if callable(check):
        check(layers, option=f"--layers for '{name}'")


def _check_baseline_only(models: list[ModelChoice], metrics: dict[str, MetricPlugin]) -> None:
    """Refuse a layer list holding only the baseline (``pixels``) for a metric that leaves the baseline
    out of the layer choice (``include_pixels=false``): it would have no model layer to score."""
    from framework.numerics.layers import BASELINE_LAYERS

    for choice in models:
        if not choice.layers or any(layer not in BASELINE_LAYERS for layer in choice.layers):
            continue
        for mname, metric in metrics.items():
            if getattr(metric.params, "include_pixels", True) is False:
                raise ConfigError(f"{mname}: no model layer left to score for '{choice.name}': the only layer given "
                                  f"is {', '.join(repr(x) for x in choice.layers)}, the baseline "
                                  f"(include_pixels=false); add model layers to --layers or set --metric-param "
                                  f"{mname}.include_pixels=true.")


def _build_model(registry: Registry, choice: ModelChoice, seed: int) -> ModelPlugin:
    overrides: dict[str, Any] = {} if choice.name.endswith(RANDOM_SUFFIX) else {"weights": choice.weights}
    return registry.create("model", choice.name, **overrides, weights_file=choice.weights_file, seed=seed,
                           **choice.params)


def _extraction_key_parts(config: RunConfig) -> list[dict[str, str]]:
    """What the cell keys add for a non-default extraction: ``[{"device": type, "precision": p}]``, or
    nothing for the CPU in fp32, so keys of cells scored before these options existed stay valid.

    ``auto`` is resolved here for the local executor (it is the CPU on a machine without a GPU); on
    Dask the workers resolve it, so it stays ``auto``. ``cuda:1`` keys as ``cuda``: devices of one
    type give the same numbers.
    """
    device = config.device
    if device == "auto" and config.executor == "local":
        from framework.devices import resolve_device

        device = resolve_device(device).type
    device = device.split(":", 1)[0]
    if device == "cpu" and config.precision == "fp32":
        return []
    return [{"device": device, "precision": config.precision}]


def plan_run(config: RunConfig, registry: Registry | None = None, *,
             pairs: set[tuple[str, str]] | None = None) -> Plan:
    """Check every name against the registry, load the dataset and list the cells to run.

    ``config.dataset`` names one dataset (:func:`plan_runs` plans several, and benchmarks).
    ``pairs``: only these (signal, metric) pairs instead of the full cross product (benchmarks).
    """
    registry = registry or load_registry()
    if len(split_datasets(config.dataset)) > 1:
        raise ConfigError(f"plan_run plans one dataset; '{config.dataset}' names several: use plan_runs.")
    # Validate names and parameters that need no data first, so typos fail fast.
    _check_store_database(config.store)
    _warn_store_in_cache(config.store)
    models = _resolve_models(config, registry)
    metric_names = _expand(config.metrics, registry.names("metric"), "metric", "--metrics")
    for name in metric_names:
        registry.resolve("metric", name, option="--metrics")
    check_plugin_params(config, registry)
    _check_params_in_run(config, registry, metric_names)
    dataset = load_dataset(config, registry)
    signals, owners = _resolve_signals(config, registry, dataset)
    _check_signal_params_in_run(config, owners)
    _check_signals(signals, dataset)
    target_kind = "rdms" if dataset.kind == "rdms" else "responses"
    metrics, notes = _resolve_metrics(config, registry, target_kind)
    for metric in metrics.values():
        metric.check(dataset)
    _check_baseline_only(models, metrics)
    extraction = _extraction_key_parts(config)
    cells = []
    for model in models:
        for sname, splugin in signals.items():
            for mname, mplugin in metrics.items():
                if pairs is not None and (sname, mname) not in pairs:
                    continue
                key = digest_of(
                    "cell-v1", dataset.name, dataset.digest, model.key_parts(), config.reduction,
                    {"signal": sname, "plugin": owners[sname], "params": splugin.parameters(sname),
                     "version": splugin.version()},
                    {"metric": mname, "params": mplugin.parameters(), "version": mplugin.version()},
                    config.seed, *extraction,
                )
                cells.append(PlannedCell(Cell(key, dataset.name, model.name, sname, mname), model, sname, mname))
    return Plan(config, dataset, models, signals, owners, metrics, cells, notes)


def split_datasets(value: str) -> list[str]:
    """The datasets of a ``dataset`` field: a comma list of registered names or TOML paths."""
    return [p for p in (part.strip() for part in str(value).split(",")) if p]


def dataset_names(config: RunConfig, registry: Registry) -> list[str]:
    """The datasets of a cross-product run, in order: ``all`` expands to every registered dataset
    (``file`` excepted: it needs a path)."""
    names = split_datasets(config.dataset)
    available = [n for n in registry.names("dataset") if n != "file"]
    return _expand(names, available, "dataset", "--dataset")


def plan_runs(config: RunConfig, registry: Registry | None = None) -> list[Plan]:
    """Plan every dataset of ``config`` (or every benchmark), before any computation.

    One :class:`Plan` per dataset: ``--dataset a,b`` scores the cross product on ``a``, then on
    ``b``, into the same store (cells are keyed by dataset, so resume and provenance work per
    dataset). With ``config.benchmarks`` the plans come from the benchmarks
    (:func:`benchmark_plans`). Planning loads every dataset first, so a missing file or an unknown
    name stops the run before anything is computed.
    """
    registry = registry or load_registry()
    if config.benchmarks:
        return benchmark_plans(config, registry)
    names = dataset_names(config, registry)
    if len(names) == 1:
        return [plan_run(config.model_copy(update={"dataset": names[0]}), registry)]
    plugin_of = {n: dataset_plugin_name(config.model_copy(update={"dataset": n}), registry) for n in names}
    for key in config.dataset_params:
        if key not in plugin_of.values():
            raise ConfigError(f"dataset_params (--dataset-param) names dataset '{key}', which is not among this "
                              f"run's datasets ({', '.join(names)}); add it to --dataset or drop its parameters.")
    return [plan_run(config.model_copy(update={
        "dataset": n, "dataset_params": {k: v for k, v in config.dataset_params.items() if k == plugin_of[n]}}),
        registry) for n in names]


def benchmark_plans(config: RunConfig, registry: Registry) -> list[Plan]:
    """Plans scoring ``config.models`` on ``config.benchmarks``.

    Benchmarks on one dataset share a plan (the models run once per dataset), with only their
    (signal, metric) cells; two benchmarks that use one metric with different parameters go to
    separate plans. The user's ``dataset_params`` (e.g. a local data folder) are merged over each
    benchmark's own; parameters for a dataset no benchmark uses are refused.
    """
    import json

    from framework.benchmarks import resolve_benchmarks

    benches = resolve_benchmarks(config.benchmarks, registry)
    plugin_of = {b.name: dataset_plugin_name(config.model_copy(update={"dataset": b.params.dataset}), registry)
                 for b in benches}
    for key in config.dataset_params:
        if key not in plugin_of.values():
            raise ConfigError(f"dataset_params (--dataset-param) names dataset '{key}', which no benchmark of this "
                              f"run uses ({', '.join(sorted({b.params.dataset for b in benches}))}); drop its "
                              "parameters.")
    groups: dict[tuple[str, str], list[list[Any]]] = {}
    for b in benches:
        slots = groups.setdefault((b.params.dataset, json.dumps(b.params.dataset_params, sort_keys=True)), [])
        for slot in slots:
            if all(o.params.metric != b.params.metric or o.params.metric_params == b.params.metric_params
                   for o in slot):
                slot.append(b)
                break
        else:
            slots.append([b])
    plans = []
    for (dataset, _), slots in groups.items():
        for slot in slots:
            plugin = plugin_of[slot[0].name]
            dparams = {**slot[0].params.dataset_params, **config.dataset_params.get(plugin or "", {})}
            sub = config.model_copy(update={
                "dataset": dataset,
                "signals": list(dict.fromkeys(b.params.signal for b in slot)),
                "metrics": list(dict.fromkeys(b.params.metric for b in slot)),
                "metric_params": {b.params.metric: dict(b.params.metric_params) for b in slot
                                  if b.params.metric_params},
                "dataset_params": {plugin: dparams} if dparams and plugin else {},
                "benchmarks": [b.name for b in slot],
            })
            plan = plan_run(sub, registry, pairs={(b.params.signal, b.params.metric) for b in slot})
            plan.benchmarks = [b.name for b in slot]
            plans.append(plan)
    return plans


# --------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    run_id: str
    n_cells: int
    n_done: int = 0
    n_skipped: int = 0
    failures: list[tuple[Cell, str]] = field(default_factory=list)
    seconds: float = 0.0
    signal_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The store's run of each plan, when several plans ran (:func:`run`).
    run_ids: list[str] = field(default_factory=list)
    #: Models scored with random init because their pretrained weights were unavailable (``weights="auto"``).
    fallback_models: list[str] = field(default_factory=list)
    #: Models whose weights were resolved.
    n_models: int = 0
    #: Keys of every cell the run accounted for: scored now, failed, or already in the store (skipped).
    cell_keys: list[str] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def _show_progress(enabled: bool | None) -> bool:
    """Progress bars on stderr when asked for; by default when stderr is a terminal."""
    if enabled is not None:
        return bool(enabled)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _bar(total: int, desc: str, unit: str, *, show: bool):
    """A tqdm bar on stderr; with ``show`` false tqdm's own ``disable`` makes every call a no-op."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True,
                disable=not show)


def _is_console_handler(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


def _logs_around_bars(show: bool) -> contextlib.AbstractContextManager:
    """While bars are shown, console log lines go through ``tqdm.write``
    (:func:`tqdm.contrib.logging.logging_redirect_tqdm`) so they do not break the bars.

    Redirected: the console handlers of the ``framework`` logger (every framework and plugin logger is
    its child) and of the root logger (other libraries' loggers, and the ``framework`` records when it
    propagates there, as after ``logging.basicConfig()``); a no-op when progress is off or neither
    writes to the console.
    """
    loggers = [lg for lg in (logging.getLogger("framework"), logging.getLogger())
               if any(_is_console_handler(h) for h in lg.handlers)]
    if not show or not loggers:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=loggers, tqdm_class=tqdm)


@dataclass
class _ModelWork:
    """One model's share of a run once its weights are resolved."""

    choice: ModelChoice
    cells: list[PlannedCell]              # pending cells, keyed by the weights (plan keys if unresolved)
    weights: WeightsInfo | None = None    # None: the weights could not be resolved (``error`` says why)
    error: str | None = None
    model: ModelPlugin | None = None      # kept loaded from the weights check to spare a second load


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, FrameworkError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _align(activations: Activations, target: Target, stimuli: StimulusSet) -> Activations:
    """Activations whose rows follow ``target.stimulus_ids``, with the stimulus labels in ``info["labels"]``."""
    info = dict(activations.info)
    if stimuli.labels is not None:
        label_of = dict(zip(stimuli.ids, stimuli.labels))
        info["labels"] = [label_of.get(s) for s in target.stimulus_ids]
    idx = stimulus_order(activations.stimulus_ids, target.stimulus_ids, target="signal",
                         fix="The dataset's stimulus list and its recordings disagree; fix the dataset's "
                             "stimulus ids.")
    return activations.select(idx, tuple(target.stimulus_ids), info)


class Scheduler:
    """Executes a :class:`Plan` against a results store (local, in-process executor)."""

    def __init__(self, plan: Plan, store: ResultsStore, *, progress: bool | None = None, client: Any = None) -> None:
        self.plan = plan
        self.store = store
        #: The Dask client of ``--executor dask`` (:mod:`framework.executors`); None: this process does the work.
        self.client = client
        self.show_progress = _show_progress(progress)
        self.cache_root = ensure_cache_dir()  # the user cache, shared by every store
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._versions = package_versions()
        #: Whether log lines of a cell name the dataset too (a run over several datasets, :func:`run`).
        self.name_dataset = False

    def _cell(self, **parts: str) -> contextlib.AbstractContextManager:
        """The logging context of the work on ``parts`` (:func:`framework.log_context.cell_context`):
        its warnings are prefixed ``[model × signal × metric]``, its Python warnings logged once each."""
        return cell_context(**parts, dataset=self.plan.dataset.name if self.name_dataset else None)

    # -- signals ------------------------------------------------------------------------
    def _signal_key(self, name: str) -> str:
        plugin = self.plan.signals[name]
        return digest_of("signal-v1", self.plan.dataset.digest, name, self.plan.signal_plugin_names[name],
                         plugin.parameters(name), plugin.version())

    def _compute_signals(self, names: set[str], summary: RunSummary) -> tuple[dict[str, Target], dict[str, str]]:
        targets: dict[str, Target] = {}
        errors: dict[str, str] = {}
        todo: dict[int, tuple[SignalPlugin, list[str]]] = {}
        for name in [n for n in self.plan.signals if n in names]:
            path = self.cache_root / "responses" / f"{self._signal_key(name)}.npz"
            if path.is_file():
                try:
                    targets[name] = load_target(path)
                    continue
                except Exception as exc:  # a corrupt cache entry is recomputed
                    log.warning("Cached signal '%s' at %s is damaged (%s); recomputing.", name, path, exc)
            plugin = self.plan.signals[name]
            todo.setdefault(id(plugin), (plugin, []))[1].append(name)
        for plugin, group in todo.values():
            log.info("Computing %d signal(s) with '%s' on '%s'...", len(group),
                     self.plan.signal_plugin_names[group[0]], self.plan.dataset.name)
            t0 = time.perf_counter()
            try:
                with self._cell(signal=", ".join(group) if len(group) <= 3 else
                                f"{self.plan.signal_plugin_names[group[0]]} ({len(group)} signals)"):
                    computed = plugin.compute(self.plan.dataset, group)
            except Exception as exc:
                text = _error_text(exc)
                if not isinstance(exc, FrameworkError):
                    log.debug("Signal failure:\n%s", traceback.format_exc())
                for name in group:
                    errors[name] = f"signal '{name}' failed: {text}"
                continue
            log.info("Signals computed in %.1f s.", time.perf_counter() - t0)
            for name in group:
                if name not in computed:
                    errors[name] = f"signal plugin '{self.plan.signal_plugin_names[name]}' returned no '{name}'"
                    continue
                targets[name] = computed[name]
                save_target(computed[name], self.cache_root / "responses" / f"{self._signal_key(name)}.npz",
                            describe={"dataset": self.plan.dataset.name, "signal": name})
        for name, target in targets.items():
            summary.signal_info[name] = dict(getattr(target, "info", {}) or {})
        return targets, errors

    # -- models -------------------------------------------------------------------------
    def _identify(self, summary: RunSummary) -> list[_ModelWork]:
        """Resolve each model's weights, key its cells by them and keep the cells not yet in the store.

        The model would resolve its weights before extracting anyway: offline a pretrained
        load fails fast (``weights="auto"`` falls back to seeded random init), otherwise the
        checkpoint is read. Only the first model with pending cells stays loaded (memory);
        the others are built again when their turn comes. Weights the user asked for
        explicitly (``weights="pretrained"`` or a weights file) that cannot be resolved stop
        the run with the model's :class:`FrameworkError`, before any computation.
        """
        done = self.store.done_keys()
        scored_before = self.store.done_plan_keys()
        by_model: dict[str, list[PlannedCell]] = {}
        for c in self.plan.cells:
            by_model.setdefault(c.model.name, []).append(c)
        works: list[_ModelWork] = []
        keep = True
        for name, cells in by_model.items():
            choice = cells[0].model
            try:
                with self._cell(model=name):
                    model = _build_model(self._registry, choice, self.plan.config.seed)
                    weights = model.weights_info()
            except Exception as exc:
                if isinstance(exc, ConfigError) or (isinstance(exc, FrameworkError)
                                                    and (choice.weights == "pretrained" or choice.weights_file)):
                    # The user asked for these weights: a missing download or a bad file is bad input,
                    # reported before any computation (exit 2), not a row of failed cells.
                    raise
                if not isinstance(exc, FrameworkError):
                    log.debug("Model failure:\n%s", traceback.format_exc())
                text = f"model '{name}' failed: {_error_text(exc)}"
                log.error(text)
                works.append(_ModelWork(choice, cells, error=text))
                continue
            if weights.source == "random" and choice.weights in ("auto", "pretrained") and not choice.weights_file:
                summary.fallback_models.append(name)
            summary.n_models += 1
            keyed = [replace(c, cell=c.cell.with_weights(weights.source, weights.digest)) for c in cells]
            pending = [c for c in keyed if c.cell.key not in done]
            summary.cell_keys += [c.cell.key for c in keyed]
            summary.n_skipped += len(keyed) - len(pending)
            again = sum(c.cell.plan_key in scored_before for c in pending)
            if again:
                log.info("Model '%s' now has weights %s (%s, digest %s...); %d of its cell(s) in the store were "
                         "scored with other weights and are scored again.", name, weights.label, weights.source,
                         weights.digest[:12], again)
            work = _ModelWork(choice, pending, weights)
            if pending and keep:
                work.model, keep = model, False
            works.append(work)
            del model
        return works

    def _activations(self, work: _ModelWork) -> tuple[Activations, WeightsInfo, dict[str, Any]]:
        from framework.activation_cache import ActivationCache
        from framework.contracts import takes_device_options
        from framework.devices import device_info, resolve_device

        choice = work.choice
        weights = work.weights
        assert weights is not None
        model, work.model = work.model, None
        if model is None:  # built again with the weights _identify resolved: no second download or fallback
            resolved = {"pretrained": "pretrained", "random": "random"}.get(weights.source, choice.weights)
            model = _build_model(self._registry, replace(choice, weights=resolved), self.plan.config.seed)
        layers = choice.layers or model.default_layers()
        _check_layers(model, layers, choice.name)
        provided = getattr(model, "provided_activations", None)
        given = provided(self.plan.dataset.stimuli, list(layers)) if callable(provided) else None
        if given is not None:  # a reference model's precomputed layer RDMs: nothing to extract or cache
            return given, weights, {"layers": list(layers), "preprocessing": model.preprocessing(),
                                    "plugin_version": model.version(), "extraction": "precomputed",
                                    "device": None, "precision": None}
        # --device / --precision: resolved here, where the network runs ("auto" picks this machine's device),
        # and given only to models that take them; for the others both are recorded as None.
        config = self.plan.config
        device = precision = None
        if takes_device_options(model):
            device, precision = resolve_device(config.device), config.precision
        elif config.device not in ("cpu", "auto") or config.precision != "fp32":
            log.warning("Model '%s' (%s) takes no device or precision: it runs as its plugin does, not on --device "
                        "%s in --precision %s (its rows record device and precision as None).", choice.name,
                        type(model).__name__, config.device, config.precision)
        cache = ActivationCache(self.cache_root / "activations")
        needs = self._needs(work)
        ids = self.plan.dataset.stimuli.ids

        def key_for(weights: WeightsInfo) -> str:
            return cache.key(choice.name, choice.identity or model_identity(model, choice.params), weights,
                             list(layers), model.preprocessing(),
                             self.plan.dataset.digest, self.plan.config.reduction,
                             device=None if device is None else device.type, precision=precision)

        key = key_for(weights)
        cached = cache.lookup(key, needs, ids)
        if cached is None:  # extraction needs the weights: loaded now unless kept from _identify
            actual = model.weights_info()
            if (actual.source, actual.digest) != (weights.source, weights.digest):
                log.warning("Model '%s': its weights changed during the run (now %s, digest %s...); its cells are "
                            "keyed by the weights used.", choice.name, actual.label, actual.digest[:12])
                weights = actual
                key = key_for(weights)
                cached = cache.lookup(key, needs, ids)
        info = {"activations_key": key, "layers": list(layers), "preprocessing": model.preprocessing(),
                "plugin_version": model.version(),
                "device": None if device is None else {"requested": config.device, **device_info(device)},
                "precision": precision}
        if cached is not None:
            info["extraction"] = "cache"
            return cached, weights, info
        n = len(self.plan.dataset.stimuli)
        t0 = time.perf_counter()
        with _bar(n, f"{choice.name}: activations", "img", show=self.show_progress) as bar:
            acts, _ = cache.load(model, self.plan.dataset.stimuli, list(layers), key=key,
                                 needs=needs + self._extra_needs(needs),
                                 batch_size=self.plan.config.batch_size,
                                 progress=lambda done: bar.update(done - bar.n),  # reports cumulative counts
                                 reduction=self.plan.config.reduction,
                                 describe={"dataset": self.plan.dataset.name, "model_as_named": choice.name},
                                 device=device, precision=precision)
        info["extraction"] = f"{time.perf_counter() - t0:.2f} s"
        log.info("Extracted %d layers of '%s' for %d stimuli in %s.", len(layers), choice.name, n, info["extraction"])
        return acts, weights, info

    def _extra_needs(self, needs: list[Need]) -> list[Need]:
        """Statistics of the built-in metrics this run does not use, computed while the network runs anyway.

        A later run with other built-in metrics on the same data (``--metrics all`` after ``rsa``) then
        reads them from the cache instead of running every network again. Only statistics of at most
        :data:`EXTRA_STATS_BYTES` per layer (per-fold Gram matrices are ``n_folds x n_stimuli^2`` float64:
        0.8 MB for the 100-stimulus demo, 80 MB for 1,000 stimuli; raw features only of narrow layers);
        a built-in metric that cannot plan this dataset is skipped (it will say why when it is run).
        """
        n = len(self.plan.dataset.stimuli)
        target_kind = "rdms" if self.plan.dataset.kind == "rdms" else "responses"
        out: list[Need] = []
        for spec in self._registry.specs("metric"):
            if spec.source != "builtin" or spec.is_family or spec.name in self.plan.metrics:
                continue
            try:
                metric = spec.create()
                if target_kind not in metric.accepts:
                    continue
                extra = metric.needs(self.plan.dataset, seed=self.plan.config.seed)
            except Exception as exc:  # any failure only loses the head start
                log.debug("No cached statistics ahead for metric '%s': %s", spec.name, exc)
                continue
            for need in extra:
                if need.kind == "features":  # only narrow layers' features (e.g. ridge's layers below a fold)
                    per_layer = 4 * n * need.max_width if need.max_width is not None else EXTRA_STATS_BYTES + 1
                else:
                    per_layer = 8 * n * n * (len(need.trains) if need.kind == "fold_grams" else 1)
                if per_layer <= EXTRA_STATS_BYTES and need not in needs and need not in out:
                    out.append(need)
        return out

    def _needs(self, work: _ModelWork) -> list[Need]:
        """What the metrics of ``work``'s pending cells read from each layer, plus the raw features
        with ``keep_activations``."""
        out: list[Need] = []
        for name in dict.fromkeys(c.metric for c in work.cells):
            for need in self.plan.metrics[name].needs(self.plan.dataset, seed=self.plan.config.seed):
                if need not in out:
                    out.append(need)
        if self.plan.config.keep_activations and Need.features() not in out:
            out.append(Need.features())
        return out

    def _rekey(self, work: _ModelWork, weights: WeightsInfo, summary: RunSummary, bar: Any) -> list[PlannedCell]:
        """``work``'s cells keyed by ``weights`` (changed since :meth:`_identify`), minus those now in the store."""
        cells = [replace(c, cell=c.cell.with_weights(weights.source, weights.digest)) for c in work.cells]
        summary.cell_keys += [c.cell.key for c in cells]
        done = self.store.done_keys()
        pending = [c for c in cells if c.cell.key not in done]
        if len(pending) < len(cells):
            summary.n_skipped += len(cells) - len(pending)
            bar.update(len(cells) - len(pending))
            log.info("%d cell(s) of '%s' with these weights are already in the store; skipping them.",
                     len(cells) - len(pending), work.choice.name)
        return pending

    # -- the run ------------------------------------------------------------------------
    def execute(self, registry: Registry) -> RunSummary:
        self._registry = registry
        plan = self.plan
        t_start = time.perf_counter()
        summary = RunSummary(self.run_id, len(plan.cells))
        # Python warnings raised outside a cell are logged too (through tqdm.write while bars show)
        with _logs_around_bars(self.show_progress), attribute_warnings():
            works = self._identify(summary)  # before the run is recorded: bad weights stop it here
            self.store.start_run(self.run_id, plan.config.model_dump(mode="json"))
            if summary.n_skipped:
                log.info("%d of %d cells already in the store (same inputs and weights); skipping them.",
                         summary.n_skipped, len(plan.cells))
            if any(w.cells for w in works):
                try:
                    self._run_pending(works, summary)
                except StoreWriteError:  # not finish_run: it would fail the same way
                    log.error("Run %s stopped: %d cell(s) scored before the store failed.", self.run_id,
                              summary.n_done)
                    raise
        summary.seconds = time.perf_counter() - t_start
        self.store.finish_run(self.run_id, n_done=summary.n_done, n_failed=summary.n_failed,
                              n_skipped=summary.n_skipped)
        return summary

    def _run_pending(self, works: list[_ModelWork], summary: RunSummary) -> None:
        if self.client is not None:
            from framework.executors import run_pending_on_dask

            with _bar(sum(len(w.cells) for w in works), "cells", "cell", show=self.show_progress) as cells_bar:
                run_pending_on_dask(self, works, summary, self.client, cells_bar)
            return
        needed = {c.signal for w in works if w.error is None for c in w.cells}
        targets, signal_errors = self._compute_signals(needed, summary) if needed else ({}, {})
        with _bar(sum(len(w.cells) for w in works), "cells", "cell", show=self.show_progress) as cells_bar:
            for work in works:
                if not work.cells:
                    continue
                model_name = work.choice.name
                if work.error is not None:  # weights unresolved: the cells keep their plan keys
                    for c in work.cells:
                        self._fail(c, work.error, summary)
                        cells_bar.update()
                    continue
                assert work.weights is not None
                cells_bar.set_postfix_str(f"{model_name}: activations", refresh=True)
                try:
                    with self._cell(model=model_name):
                        acts, weights, model_info = self._activations(work)
                except Exception as exc:
                    if not isinstance(exc, FrameworkError):
                        log.debug("Model failure:\n%s", traceback.format_exc())
                    text = f"model '{model_name}' failed: {_error_text(exc)}"
                    log.error(text)
                    for c in work.cells:
                        self._fail(c, text, summary, weights_source=work.weights.source,
                                   weights_label=work.weights.label)
                        cells_bar.update()
                    continue
                cells = work.cells
                if (weights.source, weights.digest) != (work.weights.source, work.weights.digest):
                    cells = self._rekey(work, weights, summary, cells_bar)
                for c in cells:
                    cells_bar.set_postfix_str(f"{model_name} × {c.signal} × {c.metric}", refresh=True)
                    with self._cell(model=model_name, signal=c.signal, metric=c.metric):
                        self._score_cell(c, acts, weights, model_info, targets, signal_errors, summary)
                    cells_bar.update()
                del acts

    def _fail(self, c: PlannedCell, text: str, summary: RunSummary, **kwargs: Any) -> None:
        self.store.record_error(c.cell, text, run_id=self.run_id, **kwargs)
        summary.failures.append((c.cell, text))

    def _score_cell(self, c: PlannedCell, acts: Activations, weights: WeightsInfo, model_info: dict[str, Any],
                    targets: dict[str, Target], signal_errors: dict[str, str], summary: RunSummary) -> None:
        if c.signal in signal_errors:
            self._fail(c, signal_errors[c.signal], summary, weights_source=weights.source,
                       weights_label=weights.label)
            return
        target = targets[c.signal]
        provenance = self._provenance(c, weights, model_info, getattr(target, "info", {}))
        self._record(c, score_cell(self.plan, c, acts, target), weights, provenance, summary)

    def _provenance(self, c: PlannedCell, weights: WeightsInfo, model_info: dict[str, Any],
                    target_info: dict[str, Any] | None) -> dict[str, Any]:
        """What a cell's row records about its inputs (plugins, parameters, weights, digests, versions)."""
        metric = self.plan.metrics[c.metric]
        splugin = self.plan.signals[c.signal]
        return {
            "run_id": self.run_id,
            "dataset": {"name": self.plan.dataset.name, "digest": self.plan.dataset.digest,
                        "kind": self.plan.dataset.kind, "n_stimuli": len(self.plan.dataset.stimuli)},
            "model": {"name": c.model.name, "params": c.model.params, "weights_mode": c.model.weights,
                      "weights_source": weights.source, "weights_label": weights.label,
                      "weights_digest": weights.digest, "weights_seed": weights.seed, "weights_detail": weights.detail,
                      "weights_file": str(c.model.weights_file) if c.model.weights_file else None,
                      "reduction": self.plan.config.reduction, **model_info},
            "signal": {"name": c.signal, "plugin": self.plan.signal_plugin_names[c.signal],
                       "params": splugin.parameters(c.signal), "version": splugin.version(),
                       "info": dict(target_info or {})},
            "metric": {"name": c.metric, "params": metric.parameters(), "version": metric.version()},
            "seed": self.plan.config.seed,
            "executor": self.plan.config.executor,
            "packages": self._versions,
        }

    def _record(self, c: PlannedCell, outcome: CellOutcome, weights: WeightsInfo, provenance: dict[str, Any],
                summary: RunSummary) -> None:
        """Write one cell's row: its score, or its error (logged, with the traceback at debug level)."""
        if outcome.error is not None:
            if outcome.traceback:
                log.debug("Metric failure:\n%s", outcome.traceback)
            log.error(outcome.error)
            self._fail(c, outcome.error, summary, weights_source=weights.source, weights_label=weights.label,
                       provenance=provenance, started_at=outcome.started_at, seconds=outcome.seconds)
            return
        self.store.record_score(c.cell, outcome.score, run_id=self.run_id, weights_source=weights.source,
                                weights_label=weights.label, provenance=provenance, started_at=outcome.started_at,
                                seconds=outcome.seconds)
        summary.n_done += 1


@dataclass
class CellOutcome:
    """What scoring one cell gave: a score, or the one-line error of its failure."""

    score: Score | None
    error: str | None
    started_at: float          # wall clock (s since the epoch)
    seconds: float             # scoring time
    traceback: str | None = None


def score_cell(plan: Plan, c: PlannedCell, acts: Activations, target: Target) -> CellOutcome:
    """Score one cell: the metric on the activations aligned to the target's stimuli.

    Pure (writes nothing), so it runs in this process or as a task on a worker; an exception of
    the metric becomes the outcome's error, named ``metric '<m>' failed on <model> × <signal>``.
    """
    metric = plan.metrics[c.metric]
    started = time.time()
    t0 = time.perf_counter()
    try:
        score = metric.score(_align(acts, target, plan.dataset.stimuli), target, seed=plan.config.seed)
    except Exception as exc:
        text = f"metric '{c.metric}' failed on {c.model.name} × {c.signal}: {_error_text(exc)}"
        trace = None if isinstance(exc, FrameworkError) else traceback.format_exc()
        return CellOutcome(None, text, started, time.perf_counter() - t0, trace)
    return CellOutcome(score, None, started, time.perf_counter() - t0)


def run(config: RunConfig, *, registry: Registry | None = None,
        on_plan: Callable[[Plan], None] | None = None) -> RunSummary:
    """Plan every dataset (or benchmark) of ``config``, then execute the plans in turn into one store.

    Returns the summary of all plans (each plan is one run of the store, :attr:`RunSummary.run_ids`).
    ``on_plan`` is called with each plan just before it is executed.
    """
    from framework.executors import open_executor

    registry = registry or load_registry()
    plans = plan_runs(config, registry)
    summaries = []
    several = len({p.dataset.name for p in plans}) > 1
    with open_executor(config) as client, ResultsStore(config.store) as store:
        for plan in plans:
            if on_plan is not None:
                on_plan(plan)
            scheduler = Scheduler(plan, store, progress=config.progress, client=client)
            scheduler.name_dataset = several
            summaries.append(scheduler.execute(registry))
    return merge_summaries(summaries, [p.dataset.name for p in plans])


def merge_summaries(summaries: list[RunSummary], datasets: list[str]) -> RunSummary:
    """One summary for several plans: counts added, failures and run ids listed in order; with
    several datasets the signal information is keyed ``<dataset>:<signal>``."""
    if len(summaries) == 1:
        return summaries[0]
    out = RunSummary(", ".join(s.run_id for s in summaries), sum(s.n_cells for s in summaries))
    for s, dataset in zip(summaries, datasets):
        out.n_done += s.n_done
        out.n_skipped += s.n_skipped
        out.failures += s.failures
        out.seconds += s.seconds
        out.run_ids.append(s.run_id)
        out.cell_keys += s.cell_keys
        out.fallback_models += [m for m in s.fallback_models if m not in out.fallback_models]
        out.n_models = max(out.n_models, s.n_models)
        out.signal_info.update({f"{dataset}:{k}": v for k, v in s.signal_info.items()})
    return out
