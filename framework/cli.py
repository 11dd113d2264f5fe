"""The ``framework`` command.

Subcommands: ``run``, ``list``, ``layers``, ``leaderboard``. A
:class:`framework.errors.FrameworkError` becomes one line on stderr and exit
status 2; a run whose cells partly failed exits with status 1 after a summary.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from framework import __version__
from framework.errors import ConfigError, FrameworkError

log = logging.getLogger("framework")

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + 15


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (``kill``, a batch system's time limit), so the run
    stops exactly as on Ctrl-C: the cell in progress is dropped, finished cells stay in the
    store, temporary files are removed, and re-running resumes."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (main thread only; a no-op elsewhere, e.g. in a
    notebook's worker thread)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _interrupted_code(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"Option {option} expects NAME=VALUE, got '{item}'.")
        name = name.strip()
        if name in out:  # the last one used to win silently
            raise ConfigError(f"Option {option} gives '{name}' twice ('{out[name]}' and '{value.strip()}'); "
                              "give each NAME once.")
        out[name] = value.strip()
    return out


def _parse_value(text: str) -> Any:
    """Parse a ``--*-param`` value as TOML (numbers, booleans, lists), else keep the string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _plugin_params(values: list[str] | None, option: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(values, option).items():
        plugin, dot, param = key.rpartition(".")
        if not dot or not plugin or not param:
            raise ConfigError(f"Option {option} expects PLUGIN.PARAM=VALUE (e.g. rsa.n_permutations=1000), "
                              f"got '{key}'.")
        out.setdefault(plugin, {})[param] = _parse_value(value)
    return out


def _layers_option(value: str | None) -> dict[str, list[str]] | None:
    """Parse ``--layers``: ``a,b`` for every model or ``model=a,b;model2=c`` per model.

    Empty lists and malformed parts are refused (they used to be dropped silently).
    """
    if value is None:
        return None
    usage = "expects a,b,c (every model) or MODEL=a,b;MODEL2=c (per model)"
    if not value.strip():
        raise ConfigError(f"Option --layers is empty; it {usage}, or leave it out for each model's defaults.")
    out: dict[str, list[str]] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        name, sep, layers = part.partition("=")
        name = name.strip() if sep else "*"
        text = layers if sep else part
        names = [x.strip() for x in text.split(",")]
        if not name or "=" in text or not all(names):
            raise ConfigError(f"Option --layers has a malformed part '{part.strip()}'; it {usage}.")
        if name in out:
            where = "every model" if name == "*" else f"model '{name}'"
            raise ConfigError(f"Option --layers gives layers for {where} twice; give one list per model.")
        out[name] = names
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framework", description="Score vision models against brain recordings.")
    parser.add_argument("--version", action="version", version=f"framework {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="score models × signals × metrics on a dataset and write the leaderboard")
    run.add_argument("--config", type=Path, help="run.toml with the same fields (command-line options win)")
    run.add_argument("--models", help="'all' (every registered model) or a comma list, e.g. alexnet,timm:resnet18")
    run.add_argument("--signals", help="'all', signal names (lowgamma@150-350), bands (lowgamma) or plugin ids")
    run.add_argument("--metrics", help="'all' or a comma list (default: rsa)")
    run.add_argument("--dataset", help="registered dataset name (default: demo), the path of a dataset TOML file, "
                     "a comma list of them or 'all'")
    run.add_argument("--benchmarks", help="'all' or a comma list of registered benchmarks (`framework list "
                     "benchmarks`); each sets its dataset, signal and metric")
    run.add_argument("--store", help="directory for results and leaderboard (default: ./results); caches are in "
                     "the user cache ($FRAMEWORK_CACHE_DIR), shared by every store")
    run.add_argument("--weights", choices=["auto", "pretrained", "random"],
                     help="auto (default): pretrained if available, else seeded random init")
    run.add_argument("--weights-file", action="append", metavar="MODEL=PATH",
                     help="local weights file for one model (.safetensors, .pt, .pth); repeatable")
    run.add_argument("--layers", help="layer list for every model (a,b,c) or per model (alexnet=conv1,fc6;vgg16=pool5)")
    run.add_argument("--model-param", action="append", metavar="MODEL.PARAM=VALUE", help="repeatable")
    run.add_argument("--signal-param", action="append", metavar="PLUGIN.PARAM=VALUE",
                     help="e.g. band-power.responsive_only=true; repeatable")
    run.add_argument("--metric-param", action="append", metavar="METRIC.PARAM=VALUE",
                     help="e.g. rsa.n_permutations=1000; repeatable")
    run.add_argument("--dataset-param", action="append", metavar="DATASET.PARAM=VALUE",
                     help="e.g. demo.n_images_per_category=10; repeatable")
    run.add_argument("--batch-size", type=int, help="stimuli per forward pass (default 32)")
    run.add_argument("--device", help="where the networks run (feature extraction only; the statistics are numpy on "
                     "the CPU): cpu (default), auto (cuda, else mps, else cpu), cuda, cuda:N or mps")
    run.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                     help="arithmetic of the forward pass: fp32 (default), or fp16/bf16 autocast (features differ "
                          "from fp32 by ~5e-4 / ~5e-3 relative; fast on GPUs, slow on most CPUs)")
    run.add_argument("--keep-activations", action="store_true", default=None,
                     help="also keep every layer's raw features in the cache (reduced with a reduction); by "
                          "default only the statistics the metrics need are kept")
    run.add_argument("--seed", type=int, help="seed for random init, splits and permutations (default 0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--executor", choices=["local", "dask"],
                     help="local (default): this process; dask: tasks on a Dask cluster (docs/scaling.md)")
    run.add_argument("--dask-scheduler", metavar="ADDRESS",
                     help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --executor dask)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="start a local Dask cluster of N single-threaded worker processes (implies --executor dask)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging (tracebacks of failed cells)")
    run.add_argument("-q", "--quiet", action="store_true", help="only warnings and the leaderboard")

    lst = sub.add_parser("list", help="list registered plugins")
    lst.add_argument("kind", nargs="?", choices=["models", "signals", "metrics", "datasets", "benchmarks"],
                     help="one kind (default: all kinds)")
    lst.add_argument("--brief", action="store_true", help="names and descriptions only, no parameters")

    layers = sub.add_parser("layers", help="list a model's extractable layers in forward order with output shapes")
    layers.add_argument("model")
    layers.add_argument("--weights", choices=["auto", "pretrained", "random"], default="random",
                        help="weights to build the model with (default: random; shapes do not depend on them)")
    layers.add_argument("--weights-file", type=Path)

    board = sub.add_parser("leaderboard", help="print and write the leaderboard of a results store")
    board.add_argument("--store", type=Path, default=Path("results"))

    cache = sub.add_parser("cache", help="show or prune the user cache shared by every store ($FRAMEWORK_CACHE_DIR)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cache_sub.add_parser("info", help="size of the cache by model and dataset")
    prune = cache_sub.add_parser("prune", help="remove cache entries (rebuilt on demand)")
    prune.add_argument("--older-than", metavar="AGE", help="entries not used for AGE (30d, 12h, 90m, or days)")
    prune.add_argument("--model", help="entries of this model (as named in the run, e.g. alexnet:random)")
    prune.add_argument("--dataset", help="entries of this dataset")
    prune.add_argument("--all", action="store_true", help="every entry")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    return parser


# --------------------------------------------------------------------------------------
def _parameter_lines(spec) -> list[str]:
    """One line per declared parameter of ``spec``: name, what it expects, default, help."""
    from framework.params import describe_params

    try:
        declared = spec.parameter_class()
    except FrameworkError as exc:
        return [f"(cannot be loaded: {exc})"]
    if declared is None:
        return ["(parameters not declared by the plugin)"]
    rows = describe_params(declared)
    overrides = spec.params
    lines = []
    for name, expected, default, help_text in rows:
        if name in overrides:
            default = repr(overrides[name]) if isinstance(overrides[name], str) else str(overrides[name])
        lines.append(f"{name} = {default}  [{expected}]  {help_text}".rstrip())
    if declared.extra_help:
        lines.append(declared.extra_help)
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    from framework.params import OPTION_OF_KIND
    from framework.registry import load_registry

    registry = load_registry()
    kinds = [args.kind[:-1]] if args.kind else ["model", "signal", "metric", "dataset", "benchmark"]
    for kind in kinds:
        if kind == "benchmark":
            _list_benchmarks(registry, brief=getattr(args, "brief", False))
            continue
        print(f"{kind}s (parameters: {OPTION_OF_KIND[kind]} NAME.PARAM=VALUE or [{kind}_params.NAME] in run.toml):")
        for spec in registry.specs(kind):
            source = "" if spec.source == "builtin" else f" [{spec.source}]"
            print(f"  {spec.name}  {spec.description}{source}")
            if kind == "signal":
                plugin = spec.create()
                names = [n for k in ("epochs", "responses", "rdms") if k in plugin.accepts for n in plugin.names(k)]
                if names and names != [spec.name]:
                    print(f"      expands to: {', '.join(names)}")
            if not getattr(args, "brief", False):
                for line in _parameter_lines(spec):
                    print(f"      {line}")
    return EXIT_OK


def _list_benchmarks(registry, *, brief: bool) -> None:
    """Print every registered benchmark: name, description, source, and (unless ``brief``) what it scores."""
    print("benchmarks (run with --benchmarks NAME,... or all):")
    for spec in registry.specs("benchmark"):
        source = "" if spec.source == "builtin" else f" [{spec.source}]"
        print(f"  {spec.name}  {spec.description}{source}")
        if brief:
            continue
        try:
            bench = registry.create("benchmark", spec.name)
        except FrameworkError as exc:
            print(f"      (invalid: {exc})")
            continue
        p = bench.params
        params = ", ".join(f"{k}={v!r}" for k, v in p.metric_params.items())
        print(f"      {p.metric}{f' ({params})' if params else ''} on {p.dataset} × {p.signal}"
              f"{f', area {p.area}' if p.area else ''}; score normalised by "
              f"{'the noise ceiling' if p.normalize == 'ceiling' else 'nothing (0-1 scale, no ceiling)'}")
        if p.reference:
            print(f"      reference: {p.reference}")


def cmd_layers(args: argparse.Namespace) -> int:
    from framework.paths import expand_user, not_a_file
    from framework.registry import load_registry

    weights_file = expand_user(args.weights_file, "--weights-file") if args.weights_file is not None else None
    if weights_file is not None and weights_file.is_dir():
        raise ConfigError(f"Weights file '{weights_file}' is a directory (option --weights-file of `framework "
                          "layers`); give the path of a .safetensors, .pt or .pth file inside it: "
                          f"framework layers {args.model} --weights-file PATH.")
    if weights_file is not None and not weights_file.is_file():
        raise ConfigError(f"Weights file '{weights_file}' {not_a_file(weights_file)} (option --weights-file of "
                          "`framework layers`); give the path of a .safetensors, .pt or .pth file: "
                          f"framework layers {args.model} --weights-file PATH, or leave the option out.")
    registry = load_registry()
    model = registry.create("model", args.model, weights=args.weights, weights_file=weights_file, seed=0)
    if weights_file is not None:  # shapes do not need the weights, but a file given must fit the network
        model.weights_info()
    defaults = set(model.default_layers())
    shapes = model.layer_shapes()
    width = max(len(n) for n in shapes)
    print(f"{args.model}: {len(shapes)} layers in forward order (* = default)")
    for name, shape in shapes.items():
        mark = "*" if name in defaults else " "
        print(f"{mark} {name.ljust(width)}  {tuple(shape)}")
    return EXIT_OK


def _print_leaderboard(store_dir: Path, *, readonly: bool = False) -> None:
    """Print the leaderboard and write its files into the store; a store that cannot be written
    (read-only folder or mount) is still printed, with a warning that the files were not written."""
    from framework.benchmark_board import render_benchmark_terminal
    from framework.leaderboard import render_terminal
    from framework.publish import store_leaderboard

    boards, bboard, paths = store_leaderboard(store_dir, readonly=readonly)
    if bboard is not None:
        print(render_benchmark_terminal(bboard), end="")
    print(render_terminal(boards), end="")
    if paths:
        print(f"Leaderboard written to {', '.join(str(p) for p in paths)}")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from framework.store import DB_NAME

    if (args.store / DB_NAME).is_dir():
        raise ConfigError(f"'{args.store / DB_NAME}' is a directory, not a results database (option --store); "
                          "move it away or give the right --store.")
    if not (args.store / DB_NAME).is_file():
        raise ConfigError(f"No results store at '{args.store}' (no {DB_NAME}); run `framework run --store "
                          f"{args.store}` first or give the right --store.")
    _print_leaderboard(args.store, readonly=True)
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from framework.cache_admin import entries, human_size, parse_age, prune, summarise
    from framework.paths import user_cache_dir

    root = user_cache_dir()
    if args.cache_command == "info":
        items = list(entries(root)) if root.is_dir() else []
        rows = summarise(items)
        print(f"Cache: {root}  ({human_size(sum(e.size for e in items))} in {len(items)} entries)")
        if not rows:
            return EXIT_OK
        header = ("area", "model", "dataset", "entries", "size", "of which features", "last used")
        table = [header] + [(g["area"], g["model"], g["dataset"], str(g["entries"]), human_size(g["size"]),
                             human_size(g["features"]) if g["features"] else "-",
                             time.strftime("%Y-%m-%d %H:%M", time.localtime(g["last_used"]))) for g in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return EXIT_OK
    older = parse_age(args.older_than) if args.older_than is not None else None
    removed = prune(root, older_than=older, model=args.model, dataset=args.dataset, everything=args.all,
                    dry_run=args.dry_run) if root.is_dir() else []
    verb = "Would remove" if args.dry_run else "Removed"
    print(f"{verb} {len(removed)} entries ({human_size(sum(e.size for e in removed))}) from {root}.")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from framework.config import build_config, load_config_file
    from framework.scheduler import run

    if args.dataset is not None and not args.dataset.strip():
        raise ConfigError("Option --dataset is empty; give a registered dataset name (`framework list datasets`) "
                          "or the path of a dataset TOML file, or leave it out for 'demo'.")
    file_fields = load_config_file(args.config) if args.config else {}
    cli_fields: dict[str, Any] = {
        "models": args.models, "signals": args.signals, "metrics": args.metrics, "dataset": args.dataset,
        "benchmarks": args.benchmarks,
        "store": args.store, "weights": args.weights, "batch_size": args.batch_size, "seed": args.seed,
        "device": args.device, "precision": args.precision,
        "keep_activations": args.keep_activations,
        "layers": _layers_option(args.layers),
        "weights_files": _pairs(args.weights_file, "--weights-file") or None,
        "model_params": _plugin_params(args.model_param, "--model-param") or None,
        "signal_params": _plugin_params(args.signal_param, "--signal-param") or None,
        "metric_params": _plugin_params(args.metric_param, "--metric-param") or None,
        "dataset_params": _plugin_params(args.dataset_param, "--dataset-param") or None,
        "progress": False if args.no_progress else None,
        "executor": args.executor, "dask_scheduler": args.dask_scheduler, "workers": args.workers,
    }
    source = f"'{args.config}'" if args.config else "command-line options"
    config = build_config(file_fields, cli_fields, source=source)

    def announce(plan) -> None:
        if plan.benchmarks:
            log.info("Dataset '%s' (%s, %d stimuli); %d model(s) × benchmark(s) %s = %d cells.",
                     plan.dataset.name, plan.dataset.kind, len(plan.dataset.stimuli), len(plan.models),
                     ", ".join(plan.benchmarks), len(plan.cells))
        else:
            log.info("Dataset '%s' (%s, %d stimuli); %d model(s) × %d signal(s) × %d metric(s) = %d cells.",
                     plan.dataset.name, plan.dataset.kind, len(plan.dataset.stimuli), len(plan.models),
                     len(plan.signals), len(plan.metrics), len(plan.cells))
        for note in plan.notes:
            log.warning("Note: %s.", note)

    try:
        summary = run(config, on_plan=announce)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"framework: {how}; finished cells are saved in '{config.store}'. Run the same command "
              "again to resume.", file=sys.stderr)
        return _interrupted_code(exc)
    for name, info in summary.signal_info.items():
        resp = info.get("responsive")
        if resp:
            state = "filter on" if resp.get("filter_applied") else "filter off"
            log.info("Signal %s: %s of %s sites responsive (%s).", name, resp.get("n_responsive"),
                     resp.get("n_sites"), state)
    log.info("Run %s: %d cell(s) scored, %d skipped (already in the store), %d failed, in %.1f s.",
             summary.run_id, summary.n_done, summary.n_skipped, summary.n_failed, summary.seconds)
    if summary.fallback_models:
        log.warning("%d of %d model(s) used random init because their pretrained weights were unavailable (labelled "
                    "'random init (fallback)'): %s.", len(summary.fallback_models), summary.n_models,
                    ", ".join(summary.fallback_models))
    _print_leaderboard(config.store)
    if summary.failures:
        print(f"framework: {summary.n_failed} of {summary.n_cells} cell(s) failed:", file=sys.stderr)
        seen: set[str] = set()
        for cell, error in summary.failures:
            if error in seen:
                continue
            seen.add(error)
            print(f"  {cell.model} × {cell.signal} × {cell.metric}: {error}", file=sys.stderr)
        return EXIT_FAILED_CELLS
    return EXIT_OK


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be swapped after set-up,
    e.g. by a notebook or a test harness), never to a stream closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # set by StreamHandler.__init__; the property always follows sys.stderr
        pass


class _OtherLibrariesHandler(_StderrHandler):
    """Warnings of other libraries' loggers (torch, timm, ...), on the root logger: written like the
    framework's lines, so the scheduler can route them around the progress bars."""


def _setup_logging(verbose: bool, quiet: bool) -> None:
    """Framework lines on stderr, warnings prefixed with the cell they concern
    (:class:`framework.log_context.CellFilter`); other libraries' warnings too, named by their logger."""
    from framework.log_context import CellFilter

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(CellFilter())
    root = logging.getLogger("framework")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    others = _OtherLibrariesHandler()
    others.setLevel(logging.WARNING)
    others.setFormatter(logging.Formatter("%(name)s: %(message)s" if not verbose
                                          else "%(levelname)s %(name)s: %(message)s"))
    others.addFilter(CellFilter())
    top = logging.getLogger()
    top.handlers[:] = [h for h in top.handlers if not isinstance(h, _OtherLibrariesHandler)] + [others]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    handlers = {"run": cmd_run, "list": cmd_list, "layers": cmd_layers, "leaderboard": cmd_leaderboard,
                "cache": cmd_cache}
    _handle_sigterm()
    try:
        return handlers[args.command](args)
    except FrameworkError as exc:
        print(f"framework: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("framework: terminated (SIGTERM)." if isinstance(exc, Terminated) else "framework: interrupted.",
              file=sys.stderr)
        return _interrupted_code(exc)
    except BrokenPipeError:  # output piped into `head` and the like
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    except Exception as exc:  # last resort: one line, traceback only with --verbose
        if getattr(args, "verbose", False):
            raise
        print(f"framework: internal error: {type(exc).__name__}: {exc} (run again with --verbose for the "
              "traceback and report it)", file=sys.stderr)
        return EXIT_FAILED_CELLS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
