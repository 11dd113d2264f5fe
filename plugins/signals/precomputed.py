"""Pass a dataset's precomputed responses or RDMs through unchanged."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from framework.contracts import SignalPlugin
from framework.errors import ConfigError, PluginError, did_you_mean
from framework.types import DataKind, Dataset, Target

log = logging.getLogger("framework.signals.precomputed")

_NAMES: dict[str, list[str]] = {"responses": ["responses"], "rdms": ["rdms"], "epochs": []}


class PrecomputedSignal(SignalPlugin):
    """The signal of a dataset that already holds per-stimulus targets.

    A ``responses`` dataset offers one signal named ``"responses"`` (its
    :class:`~framework.types.Responses`, (n_stimuli, n_sites) float32), an
    ``rdms`` dataset one named ``"rdms"`` (its :class:`~framework.types.BrainRDMs`,
    (n_subjects, n_stimuli, n_stimuli) float64 per area). Epochs datasets offer
    none (use ``band-power``). Targets are returned as the same objects, not copies.
    """

    accepts: ClassVar[frozenset[DataKind]] = frozenset({"responses", "rdms"})
    plugin_version = "1"

    def names(self, dataset_kind: DataKind) -> list[str]:
        """``["responses"]``, ``["rdms"]`` or ``[]`` (epochs) for ``dataset_kind``."""
        if dataset_kind not in _NAMES:
            raise PluginError(f"Signal 'precomputed': unknown dataset kind {dataset_kind!r}; expected "
                              f"one of {', '.join(map(repr, _NAMES))}.")
        return list(_NAMES[dataset_kind])

    def compute(self, dataset: Dataset, names: Sequence[str]) -> dict[str, Target]:
        """Return ``{name: dataset.responses}`` or ``{name: dataset.rdms}``.

        Parameters
        ----------
        dataset : Dataset
            Of kind ``"responses"`` or ``"rdms"``.
        names : sequence of str
            Names from :meth:`names` for this dataset's kind.
        """
        self.check(dataset, names)
        kind = dataset.kind
        out: dict[str, Target] = {}
        for name in names:
            out[name] = dataset.responses if kind == "responses" else dataset.rdms  # type: ignore[assignment]
        log.debug("precomputed: passing %s of dataset '%s' through.", kind, dataset.name)
        return out

    def check(self, dataset: Dataset, names: Sequence[str]) -> None:
        """Raise :class:`ConfigError` when ``dataset`` holds no precomputed target or a name is not offered.

        The same checks :meth:`compute` runs (it calls this), so a plan that passes them cannot
        fail in compute; nothing is loaded.
        """
        kind = dataset.kind
        if kind not in self.accepts:
            raise ConfigError(f"Signal 'precomputed' cannot read dataset '{dataset.name}' of kind '{kind}' (it "
                              "holds raw recordings, not precomputed targets); choose a signal that computes "
                              "responses from epochs, e.g. 'band-power'.")
        valid = _NAMES[kind]
        for name in names:
            if name not in valid:
                raise ConfigError(f"Signal 'precomputed' offers {valid[0]!r} for dataset '{dataset.name}' "
                                  f"(kind '{kind}'), got {name!r}.{did_you_mean(str(name), valid)}")

    def parameters(self, name: str) -> dict[str, str]:
        """``{"target": name}``: the signal has no parameters besides which target it passes."""
        return {"target": name}
