"""ActivationCache: content keys, bit-identical round trips, atomic writes, stale temp dirs, reductions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framework.activation_cache import ActivationCache, normalise_reduction, reduction_id
from framework.contracts import ModelPlugin, WeightsInfo
from framework.errors import ConfigError, PluginError
from framework.types import StimulusSet

WIDTHS = {"narrow": 4, "wide": 300, "image": 96}


class FakeModel(ModelPlugin):
    """Known answers: layer values are a deterministic function of the stimulus id; counts extract calls."""

    name = "fake"

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def layers(self):
        return list(WIDTHS)

    def default_layers(self):
        return list(WIDTHS)

    def layer_shapes(self):
        return {k: (w,) for k, w in WIDTHS.items()}

    def weights_info(self):
        return WeightsInfo(source="random", label="random init (seed 0)", digest="d" * 64, seed=0)

    def preprocessing(self):
        return {"input_size": [3, 8, 4]}

    @staticmethod
    def values(stimulus_id: str, layer: str) -> np.ndarray:
        seed = int.from_bytes(f"{stimulus_id}/{layer}".encode()[:8].ljust(8, b"\0"), "little")
        return np.random.default_rng(seed).standard_normal(WIDTHS[layer]).astype(np.float32)

    def extract(self, stimuli, layers, *, batch_size=32):
        self.calls += 1

        def gen():
            for k, start in enumerate(range(0, len(stimuli), batch_size)):
                if self.fail_after is not None and k >= self.fail_after:
                    raise RuntimeError("interrupted (test)")
                ids = stimuli.ids[start:start + batch_size]
                yield {layer: np.stack([self.values(i, layer) for i in ids]) for layer in layers}
        return gen()


def _stimuli(n: int = 7) -> StimulusSet:
    return StimulusSet(ids=tuple(f"s{i:02d}" for i in range(n)),
                       images=np.zeros((n, 4, 4, 3), dtype=np.uint8))


def _key(cache: ActivationCache, layers, reduction=None, **changes) -> str:
    args = dict(model_name="fake", model_params={"a": 1}, weights=FakeModel().weights_info(), layers=list(layers),
                preprocessing={"input_size": [3, 8, 4]}, dataset_digest="e" * 64, reduction=reduction)
    args.update(changes)
    return cache.key(**args)


def _tmp_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_roundtrip_bit_identical_and_served_from_cache(tmp_path):
    cache = ActivationCache(tmp_path)
    model, stimuli, layers = FakeModel(), _stimuli(7), ["wide", "narrow"]
    key = _key(cache, layers)
    assert cache.get(key) is None
    seen: list[int] = []
    acts = cache.extract(model, stimuli, layers, key=key, batch_size=3, progress=seen.append)
    assert seen == [3, 6, 7] and model.calls == 1
    assert acts.layers == ("wide", "narrow") and acts.stimulus_ids == stimuli.ids
    for layer in layers:
        expected = np.stack([FakeModel.values(i, layer) for i in stimuli.ids])
        assert isinstance(acts[layer], np.memmap) and not acts[layer].flags.writeable
        assert acts[layer].dtype == np.float32 and np.array_equal(acts[layer], expected)
    info = acts.info
    assert info["model"] == "fake" and info["layers"] == layers and info["reduction"] is None
    assert info["weights"]["digest"] == "d" * 64 and info["preprocessing"] == {"input_size": [3, 8, 4]}
    again = cache.extract(model, stimuli, layers, key=key, batch_size=3)
    assert model.calls == 1  # served from the cache
    assert all(np.array_equal(again[x], acts[x]) for x in layers)
    assert _tmp_dirs(tmp_path) == []
    meta = json.loads((tmp_path / key / "meta.json").read_text())
    assert meta["layers"] == layers and meta["n_features"] == [300, 4]


def test_real_model_roundtrip_not_extracted_twice(tmp_path, monkeypatch):
    from plugins.models.timm_models import TimmModel

    model = TimmModel(name="timm:mobilenetv2_100", weights="random", seed=0)
    rng = np.random.default_rng(0)
    stimuli = StimulusSet(ids=("a", "b", "c"), images=rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8))
    layers = ["pixels", "blocks.1", "logits"]
    direct = list(model.extract(stimuli, layers, batch_size=2))
    cache = ActivationCache(tmp_path)
    key = cache.key(model.name, {}, model.weights_info(), layers, model.preprocessing(), stimuli.digest(), None)
    acts = cache.extract(model, stimuli, layers, key=key, batch_size=2)
    for layer in layers:
        assert np.array_equal(acts[layer], np.concatenate([b[layer] for b in direct]))

    def boom(*args, **kwargs):
        raise AssertionError("extract called although the activations are cached")

    monkeypatch.setattr(model, "extract", boom)
    again = cache.extract(model, stimuli, layers, key=key, batch_size=2)
    assert all(np.array_equal(again[x], acts[x]) for x in layers)


def test_key_is_content_addressed(tmp_path):
    cache = ActivationCache(tmp_path)
    base = _key(cache, ["wide", "narrow"])
    assert base == _key(cache, ["wide", "narrow"]) and len(base) == 64
    w = FakeModel().weights_info()
    variants = [
        _key(cache, ["narrow", "wide"]),
        _key(cache, ["wide", "narrow"], model_name="other"),
        _key(cache, ["wide", "narrow"], model_params={"a": 2}),
        _key(cache, ["wide", "narrow"], weights=WeightsInfo(w.source, w.label, "f" * 64, 0)),
        _key(cache, ["wide", "narrow"], weights=WeightsInfo(w.source, w.label, w.digest, 1)),
        _key(cache, ["wide", "narrow"], preprocessing={"input_size": [3, 9, 4]}),
        _key(cache, ["wide", "narrow"], dataset_digest="0" * 64),
    ]
    assert len(set(variants + [base])) == len(variants) + 1
    red = {"method": "srp", "n_components": 8}
    rkey = _key(cache, ["wide", "narrow"], reduction=red)
    assert rkey == f"{base}.{reduction_id(red)}"
    assert rkey == _key(cache, ["wide", "narrow"], reduction={**red, "seed": 0, "min_features": 8})
    assert rkey != _key(cache, ["wide", "narrow"], reduction={**red, "seed": 1})


def test_bad_keys_and_reductions(tmp_path):
    cache = ActivationCache(tmp_path)
    model, stimuli = FakeModel(), _stimuli(3)
    with pytest.raises(ConfigError, match="not a key made by"):
        cache.get("../escape")
    full = _key(cache, ["wide"])
    red = {"method": "pca", "n_components": 2}
    with pytest.raises(ConfigError, match="not made with reduction"):
        cache.extract(model, stimuli, ["wide"], key=full, reduction=red)
    with pytest.raises(ConfigError, match="no reduction was given"):
        cache.extract(model, stimuli, ["wide"], key=_key(cache, ["wide"], reduction=red))
    with pytest.raises(ConfigError, match="Did you mean 'pca'"):
        normalise_reduction({"method": "pcaa", "n_components": 3})
    with pytest.raises(ConfigError, match="unknown keys"):
        normalise_reduction({"method": "srp", "n_components": 3, "components": 2})
    with pytest.raises(ConfigError, match="n_components must be an integer >= 1"):
        normalise_reduction({"method": "srp", "n_components": 0})


def test_interrupted_extraction_leaves_nothing(tmp_path):
    cache = ActivationCache(tmp_path)
    stimuli, layers = _stimuli(7), ["wide", "narrow"]
    key = _key(cache, layers)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.extract(FakeModel(fail_after=2), stimuli, layers, key=key, batch_size=2)
    assert cache.get(key) is None and not (tmp_path / key).exists() and _tmp_dirs(tmp_path) == []
    model = FakeModel()
    acts = cache.extract(model, stimuli, layers, key=key, batch_size=2)
    assert model.calls == 1 and acts["wide"].shape == (7, 300)


def test_model_yielding_wrong_rows_is_rejected(tmp_path):
    class Short(FakeModel):
        def extract(self, stimuli, layers, *, batch_size=32):
            return iter([{layer: np.zeros((2, WIDTHS[layer]), np.float32) for layer in layers}])

    cache = ActivationCache(tmp_path)
    key = _key(cache, ["narrow"])
    with pytest.raises(PluginError, match="yielded 2 stimuli, expected 5"):
        cache.extract(Short(), _stimuli(5), ["narrow"], key=key)
    assert cache.get(key) is None and _tmp_dirs(tmp_path) == []


def test_incomplete_entry_is_not_served_and_is_replaced(tmp_path):
    cache = ActivationCache(tmp_path)
    stimuli, layers = _stimuli(4), ["wide"]
    key = _key(cache, layers)
    # a directory without meta.json (e.g. copied by hand, half-written) is a miss
    (tmp_path / key).mkdir()
    np.save(tmp_path / key / "layer_000.npy", np.zeros((2, 300), np.float32))
    assert cache.get(key) is None
    acts = cache.extract(FakeModel(), stimuli, layers, key=key)
    assert acts["wide"].shape == (4, 300)
    # a truncated layer file under a complete meta.json is also a miss
    del acts
    path = tmp_path / key / "layer_000.npy"
    path.write_bytes(path.read_bytes()[:200])
    assert cache.get(key) is None
    assert cache.extract(FakeModel(), stimuli, layers, key=key)["wide"].shape == (4, 300)


def test_stale_temp_dirs_are_cleaned(tmp_path):
    import socket

    cache = ActivationCache(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".tmp-0123456789abcdef-{host}-{dead.pid}-deadbeef"
    live = tmp_path / f".tmp-0123456789abcdef-{host}-{os.getpid()}-cafecafe"
    old = tmp_path / ".tmp-0123456789abcdef-otherhost-1-00000000"
    for d in (stale, live, old):
        d.mkdir()
        (d / "layer_000.npy").write_bytes(b"partial")
    os.utime(old, (0, 0))  # 1970: older than STALE_AGE_S
    cache.extract(FakeModel(), _stimuli(2), ["narrow"], key=_key(cache, ["narrow"]))
    assert not stale.exists() and not old.exists() and live.exists()


def test_srp_reduction_matches_dense_projection(tmp_path):
    from sklearn.random_projection import SparseRandomProjection

    cache = ActivationCache(tmp_path)
    model, stimuli, layers = FakeModel(), _stimuli(9), ["wide", "narrow", "image"]
    red = {"method": "srp", "n_components": 20, "min_features": 50, "seed": 3}
    key = _key(cache, layers, reduction=red)
    acts = cache.extract(model, stimuli, layers, key=key, batch_size=4, reduction=red)
    assert cache.get(key.split(".")[0]) is None and model.calls == 1  # the full features are never kept
    full = {layer: np.stack([FakeModel.values(i, layer) for i in stimuli.ids]) for layer in layers}
    r = SparseRandomProjection(n_components=20, random_state=3).fit(np.zeros((1, 300))).components_.toarray()
    expected = np.asarray(full["wide"], np.float64) @ r.T  # dense brute force
    np.testing.assert_allclose(acts["wide"], expected, rtol=1e-5, atol=1e-5)
    assert acts["image"].shape == (9, 20)
    assert np.array_equal(acts["narrow"], full["narrow"])  # 4 features <= min_features: unchanged
    rinfo = acts.info["reduction"]
    assert rinfo["method"] == "srp" and rinfo["derived_from"] == key.split(".")[0]
    assert rinfo["layers"]["narrow"] == {"n_features_in": 4, "reduced": False}
    assert rinfo["layers"]["wide"]["n_components"] == 20
    cache.extract(model, stimuli, layers, key=key, reduction=red)
    assert model.calls == 1


def test_pca_reduction_matches_sklearn(tmp_path):
    from sklearn.decomposition import PCA

    cache = ActivationCache(tmp_path)
    model, stimuli, layers = FakeModel(), _stimuli(12), ["wide"]
    red = {"method": "pca", "n_components": 5}
    acts = cache.extract(model, stimuli, layers, key=_key(cache, layers, reduction=red), reduction=red)
    x = np.stack([FakeModel.values(i, "wide") for i in stimuli.ids]).astype(np.float64)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(x)
    got = np.asarray(acts["wide"], np.float64)
    signs = np.sign(np.sum(got * ref, axis=0))  # components are defined up to sign
    np.testing.assert_allclose(got, ref * signs, rtol=1e-4, atol=1e-4)
    # more components than stimuli: clamped to n_stimuli and recorded
    red2 = {"method": "pca", "n_components": 50}
    acts2 = cache.extract(model, stimuli, layers, key=_key(cache, layers, reduction=red2), reduction=red2)
    assert acts2["wide"].shape == (12, 12) and acts2.info["reduction"]["layers"]["wide"]["n_components"] == 12
    assert acts2.info["reduction"]["layers"]["wide"]["explained_variance_ratio"] == pytest.approx(1.0)
