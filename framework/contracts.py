"""The small contracts every plugin kind fulfils.

A plugin is a class; the registry holds a :class:`framework.registry.PluginSpec`
with a lazy ``factory`` that builds an instance from keyword parameters. The
scheduler only talks to plugins through these methods.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from framework.layer_stats import Need
from framework.params import NoParams, PluginParams, validate_params
from framework.types import Activations, DataKind, Dataset, Score, StimulusSet, Target


class Parametrised:
    """Mixin: a plugin whose parameters are declared once in its ``Params`` class.

    ``Params`` is a :class:`framework.params.PluginParams` subclass; the validated
    values are ``self.params``. The registry validates them before construction
    (naming the plugin as registered); direct construction validates them here.
    """

    #: The parameter declaration (types, bounds, choices, defaults, one-line help).
    Params: ClassVar[type[PluginParams]] = NoParams
    #: Plugin kind, used in messages.
    kind: ClassVar[str] = "plugin"
    params: PluginParams

    def _init_params(self, values: dict[str, Any], name: str | None = None) -> None:
        owner = name or getattr(self, "name", None) or type(self).__name__
        self.params = validate_params(type(self).Params, values, kind=self.kind, name=str(owner))


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


#: Keyword arguments the framework passes to a model factory besides its declared parameters.
MODEL_CONTEXT: tuple[str, ...] = ("name", "weights", "weights_file", "seed", "layers")
#: Keyword arguments the framework passes to a dataset factory besides its declared parameters.
DATASET_CONTEXT: tuple[str, ...] = ("cache_dir", "path")


class ModelPlugin(Parametrised, ABC):
    """A vision network whose layer activations can be extracted.

    Constructed by its factory as ``factory(name=..., weights=..., weights_file=...,
    seed=..., layers=..., **params)`` where ``weights`` is ``"auto" | "pretrained" | "random"``
    and ``params`` are the declared :attr:`Params`.
    """

    kind: ClassVar[str] = "model"
    name: str
    #: Whether :meth:`extract` takes two more keyword-only options, ``device`` (a ``torch.device``
    #: from :func:`framework.devices.resolve_device`) and ``precision`` (``"fp32"``, ``"fp16"`` or
    #: ``"bf16"``, see :func:`framework.devices.autocast_context`), and honours them: runs the network
    #: there, in that arithmetic, and still yields float32 numpy arrays. The framework passes them
    #: (``--device``, ``--precision``) only to models that set this to True and whose ``extract``
    #: accepts them (:func:`takes_device_options`); every other model is called as
    #: ``extract(stimuli, layers, batch_size=...)``, so plugins written before the options keep working.
    #: :class:`plugins.models.base.TorchModulePlugin` sets it.
    supports_devices: ClassVar[bool] = False

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


def takes_device_options(model: Any) -> bool:
    """Whether ``model.extract`` is to be given ``device=`` and ``precision=``: its class sets
    :attr:`ModelPlugin.supports_devices` and its ``extract`` accepts both keywords (or ``**kwargs``)."""
    if getattr(type(model), "supports_devices", False) is not True:
        return False
    try:
        params = inspect.signature(model.extract).parameters
    except (TypeError, ValueError):  # not introspectable: trust the declaration
        return True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(name in params and params[name].kind in (inspect.Parameter.KEYWORD_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD)
               for name in ("device", "precision"))


class SignalPlugin(Parametrised, ABC):
    """Turns a dataset's brain data into per-stimulus targets for the metrics.

    One plugin may expand into many named signals (``lowgamma@150-350``).
    Constructed as ``factory(**params)`` with the declared :attr:`Params`.
    """

    kind: ClassVar[str] = "signal"
    #: Registered name, used in messages.
    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self._init_params(params)

    #: Data kinds of datasets this signal can read.
    accepts: ClassVar[frozenset[DataKind]] = frozenset({"epochs"})

    @abstractmethod
    def names(self, dataset_kind: DataKind) -> list[str]:
        """The named signals this plugin offers for a dataset of ``dataset_kind``."""

    @abstractmethod
    def compute(self, dataset: Dataset, names: Sequence[str]) -> dict[str, Target]:
        """Compute several named signals in one pass; returns ``{name: target}``.

        Each signal's value must depend on its own name, parameters and the dataset only,
        never on which other signals are computed with it (a cell's value is a function of
        its key; finished cells are skipped on re-runs).
        """

    def check(self, dataset: Dataset, names: Sequence[str]) -> None:
        """Check the settings of signals ``names`` against ``dataset`` before any computation.

        Called at plan time. Raise :class:`framework.errors.ConfigError` (a setting that
        cannot work, e.g. a window outside the epochs or a band above the Nyquist frequency)
        or :class:`framework.errors.DataError` (the data cannot give the signal); log a
        warning for settings that work but are suspicious. Only cheap facts may be used
        (``dataset.epochs_meta``, ``dataset.sites``), no loading of recordings.
        The default checks nothing.
        """

    def parameters(self, name: str) -> dict[str, Any]:
        """JSON-serialisable parameters that define signal ``name`` (cache key, provenance).

        By default the declared parameters that define results (:meth:`PluginParams.key`).
        """
        return self.params.key()

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")


@dataclass(frozen=True)
class LayerAreaMap:
    """A table of a metric's :attr:`Score.details` that the leaderboard draws as a layer x area map.

    Parameters
    ----------
    table : str
        Key in ``Score.details``; the table has columns ``layer``, ``area``, ``value`` and
        optionally ``layer_index`` and ``area_rank`` (plot order).
    value : str
        The column plotted.
    label : str
        What the colour means, with units, for the legend.
    sem : str, optional
        A column of the same table with the SEM of ``value`` over sites or subjects (the report's
        layer profiles shade ±SEM); empty: none stored.
    per_unit : (str, str), optional
        ``(table, column)`` of a details table with one row per (layer, area, site or subject) whose
        mean per (area, layer) is ``value``; the report computes the SEM from its rows when ``sem``
        is empty.
    """

    table: str
    value: str
    label: str
    sem: str = ""
    per_unit: tuple[str, str] | None = None


class MetricPlugin(Parametrised, ABC):
    """Scores activations against a signal's target.

    Constructed as ``factory(**params)`` with the declared :attr:`Params`.
    """

    kind: ClassVar[str] = "metric"
    #: Registered name, used in messages.
    name: ClassVar[str] = ""

    #: Target kinds this metric can score ("responses", "rdms").
    accepts: ClassVar[frozenset[str]] = frozenset({"responses"})
    higher_is_better: ClassVar[bool] = True
    #: One line saying what the headline value is.
    headline: ClassVar[str] = ""
    #: Details tables the leaderboard draws as layer x area maps; the first one present in a
    #: score's details is drawn (a metric may produce different tables for different targets).
    layer_area_maps: ClassVar[tuple[LayerAreaMap, ...]] = ()

    @abstractmethod
    def score(self, activations: Activations, target: Target, *, seed: int = 0) -> Score:
        """Score all layers of ``activations`` against ``target``; never modifies its inputs."""

    def needs(self, dataset: Dataset, *, seed: int = 0) -> list[Need]:
        """What :meth:`score` reads from every layer, for the activation cache to keep.

        Called at plan time. The extraction computes exactly these statistics while the
        features pass through and caches them (:mod:`framework.layer_stats`): e.g.
        ``[Need.gram(centered=True)]`` for a metric built on Euclidean RDMs or a linear
        kernel, which then reads ``activations.gram(layer, center=True)``. The default,
        the raw features, suits any metric that indexes ``activations[layer]``; declare
        statistics instead to keep the cache small (kilobytes instead of gigabytes per layer).
        """
        return [Need.features()]

    def __init__(self, **params: Any) -> None:
        self._init_params(params)

    def check(self, dataset: Dataset) -> None:
        """Check this metric's parameters against ``dataset`` before any computation.

        Called at plan time for every metric that scores the dataset's kind. Raise
        :class:`framework.errors.ConfigError` for a setting that cannot work on it (e.g. more
        folds than stimuli), naming the parameter and the fix; only cheap facts may be used
        (number of stimuli, labels, subjects, areas). The default checks nothing.
        """

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters that define scores (cell key, provenance): the declared
        parameters with ``key=True`` (:meth:`framework.params.PluginParams.key`)."""
        return self.params.key()

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")


class DatasetPlugin(Parametrised, ABC):
    """Loads a dataset.

    Constructed as ``factory(cache_dir=..., path=..., **params)`` (``path`` for file
    datasets only) with the declared :attr:`Params`.
    """

    kind: ClassVar[str] = "dataset"

    @abstractmethod
    def load(self) -> Dataset:
        """Return the dataset; may cache expensive generation on disk."""

    def version(self) -> str:
        return getattr(self, "plugin_version", "1")
