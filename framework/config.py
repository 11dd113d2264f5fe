"""Run configuration: the options of ``framework run``, validated once by pydantic.

The same fields come from the command line or from ``--config run.toml``
(command-line options win). Names are checked against the registry by the
scheduler, which knows the dataset's kind; here we check types and ranges.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from framework.errors import ConfigError, did_you_mean
from framework.paths import expand_user

WeightsMode = Literal["auto", "pretrained", "random"]
Precision = Literal["fp32", "fp16", "bf16"]


def _split_names(value: Any) -> Any:
    """Accept ``"a,b"`` or ``["a", "b"]``; strip blanks."""
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    return value


class RunConfig(BaseModel):
    """Everything that defines a run.

    Attributes
    ----------
    models, signals, metrics : list of str
        Plugin names, or ``["all"]``. ``all`` models means every registered model
        (built-ins and installed plugins), not every timm network.
    dataset : str
        A registered dataset name (``demo``), the path of a dataset TOML file, a comma list of
        them (each scored in turn, into the same store) or ``all`` (every registered dataset).
    benchmarks : list of str
        Registered benchmarks (``["all"]`` for every one); each sets its own dataset, signal
        and metric with its parameters, so they exclude ``dataset``, ``signals``, ``metrics``
        and ``metric_params`` (:mod:`framework.benchmarks`). Empty: a cross-product run.
    store : Path
        Directory for the results database and the leaderboard files (caches are in the
        user cache, :func:`framework.paths.user_cache_dir`, shared by every store).
    weights : {"auto", "pretrained", "random"}
        ``auto`` tries pretrained weights and falls back to seeded random init.
    weights_files : dict of model name -> Path
        A local weights file per model (.safetensors, .pt, .pth); wins over ``weights``.
    layers : dict of model name -> list of str
        Layer lists overriding a model's defaults; key ``"*"`` applies to every model.
    model_params, signal_params, metric_params, dataset_params : dict of plugin name -> dict
        Declared parameters of a plugin (``framework list`` describes them), checked
        against its declaration before any work.
    batch_size : int
        Stimuli per forward pass.
    device : {"cpu", "auto", "cuda", "cuda:N", "mps"}
        Where the networks run (feature extraction only: the statistics and metrics are numpy/SciPy
        and run on the CPU, :mod:`framework.numerics` uses no torch). ``auto`` is ``cuda`` when a CUDA
        device is visible, else ``mps``, else ``cpu``. The default is ``cpu``, not ``auto``: a GPU's
        float32 convolutions (cuDNN/cuBLAS algorithms, TF32) differ from the CPU's in the last bits,
        so ``auto`` would make the same configuration give different numbers on different machines
        (and a run on a GPU machine could not reuse activations cached on a CPU); the GPU is opt-in,
        and recorded. A device that is not there is a :class:`ConfigError` before any work
        (:func:`framework.devices.resolve_device`). Models whose plugin does not take a device
        (:attr:`framework.contracts.ModelPlugin.supports_devices`) run as they do by themselves.
    precision : {"fp32", "fp16", "bf16"}
        Arithmetic of the forward pass: ``fp32`` (default) is the network's float32; ``fp16`` and
        ``bf16`` run it under ``torch.autocast`` (half-precision convolutions and matrix products,
        float32 weights; AlexNet's features differ from fp32 by about 5e-3 relative in bf16, 5e-4
        in fp16). Features are always stored as float32. Probed on the device before any work
        (:func:`framework.devices.check_precision`); on a CPU without native half-precision units
        both run but are much slower than fp32. The device type and precision are part of the
        activation cache key (except ``cpu`` with ``fp32``, the key of every earlier entry) and of
        each row's provenance (``model.device``, ``model.precision``).
    keep_activations : bool
        Also keep every layer's raw features in the activation cache (reduced when
        ``reduction`` is set); by default the cache keeps only the statistics the run's
        metrics declared (:mod:`framework.layer_stats`).
    seed : int
        Seed for random init, splits and permutations.
    progress : bool or None
        Progress bars; ``None`` means on when stderr is a terminal.
    executor : {"local", "dask"}
        Where the work runs (:mod:`framework.executors`): in this process, or as tasks on a Dask
        cluster (signals per plugin, extraction per model, scoring per cell). Only this process
        writes the results store, so resume and provenance are the same; so are the numbers.
    dask_scheduler : str or None
        Address of a running ``dask scheduler`` (``tcp://host:8786``); implies ``executor="dask"``.
    workers : int or None
        Start a ``dask.distributed.LocalCluster`` of this many single-threaded worker processes on
        this machine; implies ``executor="dask"``. Neither address nor workers: one worker per core.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["all"])
    signals: list[str] = Field(default_factory=lambda: ["all"])
    metrics: list[str] = Field(default_factory=lambda: ["rsa"])
    dataset: str = "demo"
    benchmarks: list[str] = Field(default_factory=list)
    store: Path = Path("results")
    weights: WeightsMode = "auto"
    weights_files: dict[str, Path] = Field(default_factory=dict)
    layers: dict[str, list[str]] = Field(default_factory=dict)
    model_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    signal_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dataset_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    reduction: dict[str, Any] | None = None
    batch_size: StrictInt = Field(default=32, gt=0, le=4096)
    device: str = "cpu"
    precision: Precision = "fp32"
    keep_activations: StrictBool = False
    # 2**32 - 1: the largest seed every consumer takes. numpy's SeedSequence accepts any size and
    # torch.manual_seed anything below 2**64, but scikit-learn's random_state (the folds of
    # framework.numerics.splits, the random projection of a reduction) must lie in [0, 2**32 - 1];
    # a larger seed would fail only after signals and activations were computed.
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    progress: StrictBool | None = None
    executor: Literal["local", "dask"] = "local"
    dask_scheduler: str | None = None
    workers: StrictInt | None = Field(default=None, gt=0, le=1024)

    @model_validator(mode="after")
    def _executor_options(self) -> RunConfig:
        if self.dask_scheduler is not None and self.workers is not None:
            raise ValueError("dask_scheduler connects to a running cluster and workers starts a local one; give "
                             "one of them")
        if (self.dask_scheduler is not None or self.workers is not None) and self.executor == "local":
            if "executor" in self.model_fields_set:
                raise ValueError("dask_scheduler and workers apply to executor='dask', not 'local'; drop them or "
                                 "set executor='dask'")
            self.executor = "dask"
        return self

    @field_validator("models", "signals", "metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        value = _split_names(value)
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one name (or 'all')")
        return value

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _benchmark_names(cls, value: Any) -> Any:
        return _split_names(value)

    @model_validator(mode="after")
    def _benchmarks_alone(self) -> RunConfig:
        if self.benchmarks:
            clash = [f for f in ("dataset", "signals", "metrics", "metric_params") if f in self.model_fields_set]
            if clash:
                raise ValueError(f"benchmarks set each benchmark's dataset, signal and metric (with its "
                                 f"parameters); drop {', '.join(clash)} or drop benchmarks")
        return self

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> Any:
        from framework.devices import check_device_name

        if not isinstance(value, str):
            return value  # pydantic reports the type
        try:
            return check_device_name(value, option="device")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix(f"Invalid value {value!r} for device; ")) from None

    @model_validator(mode="after")
    def _device_usable(self) -> RunConfig:
        from framework.devices import check_run_options

        if self.executor == "dask":   # the workers have the GPUs, not necessarily this client: checked there
            return self
        check_run_options(self.device, self.precision)  # raises ConfigError: the device or precision is not here
        return self

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: _split_names(v) for k, v in value.items()}
            for model, names in value.items():
                if isinstance(names, list) and not names:
                    raise ValueError(f"the layer list for '{model}' is empty; give layer names "
                                     "(`framework layers MODEL` lists them) or leave the option out")
                if isinstance(names, list):
                    seen: set[str] = set()
                    dups = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
                    if dups:
                        raise ValueError(f"layer '{dups[0]}' is listed twice for '{model}'; list each layer once")
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty, which would write into the current folder; give a directory "
                             "such as 'results'")
        if isinstance(value, (str, Path)):
            value = expand_user(value, "store")
        return value

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give a registered dataset name (`framework list datasets`) or the path "
                             "of a dataset TOML file")
        if isinstance(value, str) and value.startswith("~"):
            value = str(expand_user(value, "dataset"))
        return value

    @field_validator("weights_files", mode="before")
    @classmethod
    def _weights_files(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: (expand_user(v, f"weights_files.{k}") if isinstance(v, (str, Path)) and str(v).startswith("~")
                         else v)
                     for k, v in value.items()}
        return value

    @field_validator("reduction", mode="before")
    @classmethod
    def _reduction(cls, value: Any) -> Any:
        from framework.activation_cache import normalise_reduction

        normalise_reduction(value)  # raises ConfigError naming the bad key or value
        return value


FIELDS = tuple(RunConfig.model_fields)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            field = str(err["loc"][0])
            parts.append(f"unknown field '{loc}'.{did_you_mean(field, FIELDS)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict) and got is not None else ""
            parts.append(f"field '{loc}': {msg}{got_text}")
    return f"Invalid run configuration in {source}: " + "; ".join(parts) + ". Fix the value and run again."


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a run TOML file into a dict of fields (paths resolved against the file's folder)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file '{path}' is a directory; give the path of a run TOML file to --config.")
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist; check the path given to --config.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Config file '{path}' cannot be read ({exc.strerror}).") from None
    # A UTF-8 byte-order mark (written by some Windows editors) is not valid TOML but is harmless: drop it.
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file '{path}' is not valid TOML: {exc}. Fix the syntax.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file '{path}' is not UTF-8 text (byte {exc.start}: {exc.reason}); save it "
                          "as UTF-8 (TOML files must be UTF-8).") from None
    if "run" in data and isinstance(data["run"], dict):
        if len(data) > 1:
            others = ", ".join(sorted(k for k in data if k != "run"))
            raise ConfigError(f"Config file '{path}' has a [run] table and top-level entries outside it ({others}); "
                              "put every field under [run] (tables as [run.NAME]) or drop the [run] header.")
        data = data["run"]
    base = path.parent

    def rebase(value: str) -> str:
        """``~`` expanded; a relative path taken relative to the config file's folder."""
        p = expand_user(value, f"config file '{path}'")
        return str(p if p.is_absolute() else base / p)

    if isinstance(data.get("store"), str) and data["store"].strip():
        data["store"] = rebase(data["store"])
    dataset = data.get("dataset")
    # A dataset value that looks like a path (a registered name has no separator and no .toml suffix).
    if isinstance(dataset, str) and dataset.strip() and (
            dataset.endswith(".toml") or "/" in dataset or os.sep in dataset or dataset.startswith("~")):
        data["dataset"] = rebase(dataset)
    if isinstance(data.get("weights_files"), dict):
        data["weights_files"] = {k: (rebase(v) if isinstance(v, str) and v.strip() else v)
                                 for k, v in data["weights_files"].items()}
    return data


def build_config(file_fields: dict[str, Any] | None = None, cli_fields: dict[str, Any] | None = None,
                 *, source: str = "command-line options") -> RunConfig:
    """Merge config-file fields with command-line fields (CLI wins) and validate them."""
    merged: dict[str, Any] = dict(file_fields or {})
    for key, value in (cli_fields or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
