"""Benchmarks: a dataset, a signal, a metric with its parameters, and how the score is read.

A benchmark is data, not code: built-ins are ``[[benchmark]]`` tables in ``registry.toml``
and third-party packages declare theirs through the ``framework_register_benchmarks`` hook
(entry-point group ``framework``) with the same fields::

    registry.declare("benchmark", "mylab2026-v4.rsa", "framework.benchmarks:Benchmark",
                     "one line", params={"dataset": "path/to/mylab.toml", "signal": "precomputed",
                                         "metric": "rsa", "metric_params": {"ceiling": "nili"},
                                         "area": "V4", "reference": "Lab et al. 2026"})

``framework run --benchmarks all|NAME,...`` scores the run's models on each benchmark (the
cells are ordinary cells of the results store: a benchmark selects and reads them), and the
leaderboard gets one column per benchmark (:mod:`framework.benchmark_board`).

Reading a score (:meth:`Benchmark.read`)
    * ``area`` empty: the metric's headline value, its noise ceiling and its CI;
    * ``area`` set: that area's row of the metric's ``details["area"]`` table (``score``,
      ``noise_ceiling_upper``, and the SEM of the score over subjects, shown as
      ``score +- 1.96 SEM``), as the rsa metric reports it on RDM datasets.

Normalisation (``normalize``)
    * ``"ceiling"``: raw score / noise ceiling (Schrimpf et al. 2018, Brain-Score); undefined
      when the data allow no ceiling. Not clipped: a score above its ceiling shows as > 1
      (Brain-Score clips to [0, 1], which hides such a score and biases means).
    * ``"none"``: the raw score is already on a 0-1 scale with no noise ceiling (e.g.
      rho_align of Kuzovkin et al. 2018, a Spearman correlation); it is used as is.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from framework.contracts import Parametrised
from framework.errors import ConfigError
from framework.params import PluginParams, param

__all__ = ["Benchmark", "BenchmarkParams", "BenchmarkScore", "resolve_benchmarks"]


class BenchmarkParams(PluginParams):
    """Fields of a benchmark (``params`` of its ``[[benchmark]]`` table)."""

    dataset: str = param("", "registered dataset name (or dataset TOML path) the benchmark scores on", min_length=1)
    dataset_params: dict[str, Any] = param({}, "declared parameters of that dataset")
    signal: str = param("", "one signal of the dataset, e.g. lowgamma@150-350 or precomputed", min_length=1)
    metric: str = param("", "registered metric name", min_length=1)
    metric_params: dict[str, Any] = param({}, "declared parameters of the metric (the field's convention)")
    area: str = param("", "area whose row of the metric's details['area'] table is the score; empty: the "
                      "metric's headline value")
    normalize: Literal["ceiling", "none"] = param(
        "ceiling", "ceiling: raw / noise ceiling (Schrimpf et al. 2018); none: the raw score is already on a 0-1 "
        "scale with no ceiling")
    reference: str = param("", "where the data and the convention come from (citation)")


@dataclass(frozen=True)
class BenchmarkScore:
    """One model's score on one benchmark, read from a results-store row.

    Attributes
    ----------
    raw : float
        The score in the metric's unit (NaN when the metric found it undefined).
    ceiling : float or None
        Noise ceiling in the same unit (None when the data allow none).
    normalized : float
        ``raw / ceiling`` (``normalize="ceiling"``) or ``raw`` (``"none"``); NaN when undefined.
    ci : (float, float) or None
        95 % interval of ``raw`` (the metric's CI, or score +- 1.96 SEM over subjects).
    layer : str or None
        The layer behind the score (best or held-out layer), when the metric reports it.
    """

    raw: float
    ceiling: float | None
    normalized: float
    ci: tuple[float, float] | None
    layer: str | None = None

    @property
    def normalized_ci(self) -> tuple[float, float] | None:
        """``ci`` on the normalised scale."""
        if self.ci is None:
            return None
        scale = self.normalized / self.raw if self.raw and math.isfinite(self.raw) and math.isfinite(
            self.normalized) else None
        if scale is None:
            return None
        lo, hi = self.ci[0] * scale, self.ci[1] * scale
        return (min(lo, hi), max(lo, hi))


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Benchmark(Parametrised):
    """A registered benchmark (see the module docstring).

    Parameters
    ----------
    name : str
        Registered name, e.g. ``"algonauts2019-92.it"``.
    **params
        The fields of :class:`BenchmarkParams`.
    """

    kind: ClassVar[str] = "benchmark"
    Params = BenchmarkParams
    params: BenchmarkParams

    def __init__(self, *, name: str, **params: Any) -> None:
        self.name = name
        self._init_params(params, name)

    def __repr__(self) -> str:
        p = self.params
        area = f", area={p.area!r}" if p.area else ""
        return f"Benchmark({self.name!r}: {p.metric} on {p.dataset} × {p.signal}{area})"

    @property
    def label(self) -> str:
        """Short column label: the name."""
        return self.name

    def read(self, row: dict[str, Any]) -> BenchmarkScore:
        """The benchmark's score in an ``ok`` row of the results store (``ResultsStore.rows``).

        A row whose metric reports no such area gives a NaN score.
        """
        p = self.params
        summary = row.get("summary") or {}
        if not p.area:
            raw = _finite(row.get("value"))
            ceiling = _finite(row.get("ceiling"))
            lo, hi = _finite(row.get("ci_low")), _finite(row.get("ci_high"))
            ci = (lo, hi) if lo is not None and hi is not None else None
            best = summary.get("best_layer")
            layer = best if isinstance(best, str) else None
        else:
            table = (row.get("details") or {}).get("area") or {}
            areas = list(table.get("area") or [])
            if p.area not in areas:
                return BenchmarkScore(math.nan, None, math.nan, None, None)
            i = areas.index(p.area)

            def col(name: str) -> Any:
                values = table.get(name)
                return values[i] if values is not None and i < len(values) else None

            raw = _finite(col("score"))
            ceiling = _finite(col("noise_ceiling_upper"))
            heldout = (summary.get("selection_rule") or "").startswith("leave one subject out")
            sem = _finite(col("heldout_sem") if heldout else col("optimistic_sem"))
            ci = (raw - 1.96 * sem, raw + 1.96 * sem) if raw is not None and sem is not None else None
            layer = col("best_layer")
        if raw is None:
            return BenchmarkScore(math.nan, ceiling, math.nan, None, layer)
        if p.normalize == "none":
            normalized = raw
        else:
            normalized = raw / ceiling if ceiling is not None and ceiling > 0 else math.nan
        return BenchmarkScore(raw, ceiling, normalized, ci, layer)


def resolve_benchmarks(names: list[str], registry: Any) -> list[Benchmark]:
    """The benchmarks named (``["all"]``: every registered one), built from the registry.

    Raises :class:`ConfigError` for an unknown name (with a suggestion) or an empty registry.
    """
    available = registry.names("benchmark")
    if names == ["all"]:
        if not available:
            raise ConfigError("No benchmark is registered (`framework list benchmarks`); declare one in "
                              "registry.toml or through the framework_register_benchmarks hook.")
        chosen = sorted(available, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    else:
        if "all" in names:
            raise ConfigError("'all' cannot be combined with other names in --benchmarks; give either 'all' or "
                              "a list.")
        chosen = list(dict.fromkeys(names))
    out = []
    for name in chosen:
        registry.resolve("benchmark", name, option="--benchmarks")  # unknown: one line with a suggestion
        out.append(registry.create("benchmark", name))
    return out
