"""Small plugins with known answers, used by the core tests.

Registered either directly (``get_plugin_manager(extra_plugins=[fake_plugins])``)
or, in subprocess tests, through ``FRAMEWORK_PLUGINS=fake_plugins``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from framework.contracts import DatasetPlugin, MetricPlugin, ModelPlugin, SignalPlugin, WeightsInfo
from framework.errors import DataError
from framework.hookspecs import hookimpl
from framework.layer_stats import Need
from framework.params import PluginParams, param
from framework.registry import PluginSpec
from framework.types import Dataset, Responses, Score, SiteTable, StimulusSet, digest_of

N_STIMULI = 12
N_SITES = 6


def fake_stimuli() -> StimulusSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_STIMULI, 8, 8, 3), dtype=np.uint8)
    labels = tuple("ab"[i % 2] for i in range(N_STIMULI))
    return StimulusSet(tuple(f"img{i:02d}" for i in range(N_STIMULI)), images=images, labels=labels)


class FakeDataset(DatasetPlugin):
    """Responses dataset: site j responds to the image mean with gain j+1, plus noise."""

    class Params(PluginParams):
        noise: float = param(0.1, "SD of the added Gaussian noise", ge=0)
        label: str = param("fake-responses", "the dataset's name")

    def __init__(self, *, cache_dir=None, **params) -> None:
        self._init_params(params, "fake-responses")
        self.noise = self.params.noise

    def load(self) -> Dataset:
        stimuli = fake_stimuli()
        means = stimuli.images.reshape(N_STIMULI, -1).mean(1) / 255.0
        rng = np.random.default_rng(1)
        gains = np.arange(1, N_SITES + 1)
        data = (means[:, None] * gains[None, :] + self.noise * rng.standard_normal((N_STIMULI, N_SITES)))
        sites = SiteTable(tuple(f"s1/c{j}" for j in range(N_SITES)), ("s1",) * N_SITES,
                          ("17", "17", "18", "19", "37", "20"))
        responses = Responses(data.astype(np.float32), sites, stimuli.ids)
        return Dataset(self.params.label, stimuli, digest_of("fake", self.noise), responses=responses)


class FakeModel(ModelPlugin):
    """Numpy 'network': pixels, per-channel means, a seeded random projection."""

    plugin_version = "1.0"

    class Params(PluginParams):
        fail: bool = param(False, "raise inside extract")
        pretrained_available: bool = param(False, "whether 'pretrained' weights can be had")

    def __init__(self, *, name: str, weights: str = "auto", weights_file=None, seed: int = 0, layers=None,
                 **params) -> None:
        self.name = name
        self._init_params(params)
        fail, pretrained_available = self.params.fail, self.params.pretrained_available
        self.fail = fail
        self._missing = weights == "pretrained" and not pretrained_available and weights_file is None
        if weights_file is not None:
            self._source = "file"
        elif weights == "random" or not pretrained_available:
            self._source = "random"
        else:
            self._source = "pretrained"
        self.seed = seed
        self._proj = np.random.default_rng(seed).standard_normal((8 * 8 * 3, 5)).astype(np.float32)
        self.extract_calls = 0

    def layers(self) -> list[str]:
        return ["pixels", "means", "proj"]

    def default_layers(self) -> list[str]:
        return ["pixels", "means", "proj"]

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"pixels": (8, 8, 3), "means": (3,), "proj": (5,)}

    def weights_info(self) -> WeightsInfo:
        if self._missing:  # like the real plugins, weights are resolved lazily
            raise DataError(f"Pretrained weights of '{self.name}' are not available offline; give --weights-file.")
        label = f"random init (seed {self.seed})" if self._source == "random" else self._source
        return WeightsInfo(self._source, label, digest_of(self._proj), self.seed if self._source == "random" else None)

    def preprocessing(self) -> dict:
        return {"scale": 1 / 255}

    def extract(self, stimuli: StimulusSet, layers: Sequence[str], *, batch_size: int = 32
                ) -> Iterator[dict[str, np.ndarray]]:
        self.extract_calls += 1
        if self.fail:
            raise RuntimeError("simulated failure inside the network")
        for start in range(0, len(stimuli), batch_size):
            imgs = np.stack([np.asarray(stimuli.image(i).convert("RGB"), dtype=np.float32) / 255
                             for i in range(start, min(start + batch_size, len(stimuli)))])
            flat = imgs.reshape(len(imgs), -1)
            out = {"pixels": flat, "means": imgs.mean(axis=(1, 2)), "proj": flat @ self._proj}
            yield {k: np.ascontiguousarray(out[k], dtype=np.float32) for k in layers}


class FakeSignal(SignalPlugin):
    """Passes responses through ('resp') or negated ('resp-neg')."""

    accepts = frozenset({"responses"})
    name = "fake-signal"

    class Params(PluginParams):
        fail: bool = param(False, "raise inside compute")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.fail = self.params.fail
        self.compute_calls = 0

    def names(self, dataset_kind):
        return ["resp", "resp-neg"] if dataset_kind == "responses" else []

    def compute(self, dataset, names):
        self.compute_calls += 1
        if self.fail:
            raise DataError("simulated signal failure")
        r = dataset.responses
        out = {}
        for n in names:
            data = r.data if n == "resp" else -r.data
            out[n] = Responses(data, r.sites, r.stimulus_ids, None, r.area_order, {"sign": n})
        return out

    def parameters(self, name):
        return {"name": name}


class FakeMetric(MetricPlugin):
    """Max over layers of the mean over sites of Pearson r(layer feature mean, site)."""

    accepts = frozenset({"responses"})
    headline = "max over layers of the mean Pearson r between the layer's feature mean and each site"

    name = "fake-corr"

    class Params(PluginParams):
        sleep: float = param(0.0, "seconds to sleep per score", ge=0)
        fail_on_signal_sign: str | None = param(None, "raise on targets whose info['sign'] is this")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.sleep = self.params.sleep
        self.fail_on = self.params.fail_on_signal_sign

    def needs(self, dataset, *, seed=0):
        """The feature mean of each stimulus is its row sum over the width: the uncentred Gram statistic."""
        return [Need.gram(centered=False)]

    def score(self, activations, target, *, seed=0):
        if self.fail_on is not None and target.info.get("sign") == self.fail_on:
            raise ValueError("simulated metric failure")
        time.sleep(self.sleep)
        per_layer = {}
        for layer in activations.layers:
            _, sums = activations.gram(layer, center=False)
            x = sums / activations.n_features(layer)
            rs = [np.corrcoef(x, target.data[:, j])[0, 1] for j in range(target.n_sites)]
            per_layer[layer] = float(np.mean(rs))
        best = max(per_layer, key=per_layer.__getitem__)
        return Score(per_layer[best], details={"layer": {"layer": list(per_layer), "r": list(per_layer.values())}},
                     summary={"best_layer": best})


@hookimpl
def framework_register_models(registry):
    registry.add(PluginSpec("model", "fake-net", FakeModel, "numpy fake network"))
    registry.add(PluginSpec("model", "fake-net2", FakeModel, "second fake network"))
    registry.add(PluginSpec("model", "fake-broken", FakeModel, "fails in extract", {"fail": True}))


@hookimpl
def framework_register_signals(registry):
    registry.add(PluginSpec("signal", "fake-signal", FakeSignal, "responses passed through or negated"))


@hookimpl
def framework_register_metrics(registry):
    registry.add(PluginSpec("metric", "fake-corr", FakeMetric, "mean Pearson r of the layer mean"))


@hookimpl
def framework_register_datasets(registry):
    registry.add(PluginSpec("dataset", "fake-responses", FakeDataset, "12 stimuli x 6 sites"))
    registry.add(PluginSpec("dataset", "fake-noisy", FakeDataset, "the same, noisier",
                            {"noise": 0.5, "label": "fake-noisy"}))
