"""The small contracts every plugin kind fulfils.

A plugin is a class; the registry holds a :class:`framework.registry.PluginSpec`
with a lazy ``factory`` that builds an instance from keyword parameters. The
scheduler only talks to plugins through these methods.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from framework.types import Activations, Dataset, DataKind, Score, StimulusSet, Target


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from.

    Parameters
    ----------
    source : {"pretrained", "random", "file"}
    label : str
        Short human label for the leaderboard, e.g. ``"ImageNet (torchvision V1)"``
        or ``"random init (seed 0)"``.
    digest : str
        SHA-256 of the weights file, or of the state dict for random init.
    seed : int, optional
        The seed of a random initialisation.
    detail : str
        Free text: loader, cache path, fallback reason.
    """

    source: str
    label: str
    digest: str
    seed: int | None = None
    detail: str = ""


class ModelPlugin(ABC):
    """A vision network whose layer activations can be extracted.

    Constructed by its factory as ``factory(name=..., weights=..., weights_file=...,
    seed=..., **params)`` where ``weights`` is ``"auto" | "pretrained" | "random"``.
    """

    name: str

    @abstractmethod
    def layers(self) -> list[str]:
        """Every extractable layer, in forward order."""

    @abstractmethod
    def default_layers(self) -> list[str]:
        """The documented default layer list (the field's convention), in forward order."""

    @abstractmethod
    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape of each layer for one stimulus (no batch axis), in forward order."""

    @abstractmethod
    def weights_info(self) -> WeightsInfo:
        """Describe the weights in use (loading them if not done yet)."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """JSON-serialisable description of input preprocessing (size, mean, std, ...)."""

    @abstractmethod
    def extract(self, stimuli: StimulusSet, layers: Sequence[str], *,
                batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Yield, per batch in stimulus order, ``{layer: (batch, n_features) float32}``."""

    def version(self) -> str:
        """Plugin version recorded in provenance."""
        return getattr(self, "plugin_version", "1")


class SignalPlugin(ABC):
    """Turns a dataset's brain data into per-stimulus targets for the metrics.

    One plugin may expand into many named signals (``lowgamma@150-350``).
    """

    #: Data kinds of datasets this signal can read.
    accepts: ClassVar[frozenset[DataKind]] = frozenset({"epochs"})

    @abstractmethod
    def names(self, dataset_kind: DataKind) -> list[str]:
        """The named signals this plugin offers for a dataset of ``dataset_kind``."""

    @abstractmethod
    def compute(self, dataset: Dataset, names: Sequence[str]) -> dict[str, Target]:
        """Compute several named signals in one pass; returns ``{name: target}``."""

    def parameters(self, name: str) -> dict[str, Any]:
        """JSON-serialisable parameters that define signal ``name`` (cache key, provenance)."""
        return {}

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")


class MetricPlugin(ABC):
    """Scores activations against a signal's target."""

    #: Target kinds this metric can score ("responses", "rdms").
    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    #: One line saying what the headline value is.
    headline: ClassVar[str] = ""

    @abstractmethod
    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        """Score all layers of ``activations`` against ``target``; never modifies its inputs."""

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters (provenance, cache key)."""
        return {}

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")


class DatasetPlugin(ABC):
    """Loads a dataset."""

    @abstractmethod
    def load(self) -> Dataset:
        """Return the dataset; may cache expensive generation on disk."""

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")
