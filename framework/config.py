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
    keep_activations : bool
        Also keep every layer's raw features in the activation cache (reduced when
        ``reduction`` is set); by default the cache keeps only the statistics the run's
        metrics declared (:mod:`framework.layer_stats`).
    seed : int
        Seed for random init, splits and permutations.
    progress : bool or None
        Progress bars; ``None`` means on when stderr is a terminal.
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
    keep_activations: StrictBool = False
    # 2**32 - 1: the largest seed every consumer takes. numpy's SeedSequence accepts any size and
    # torch.manual_seed anything below 2**64, but scikit-learn's random_state (the folds of
    # framework.numerics.splits, the random projection of a reduction) must lie in [0, 2**32 - 1];
    # a larger seed would fail only after signals and activations were computed.
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    progress: StrictBool | None = None

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
