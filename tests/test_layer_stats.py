"""The activation cache keeps what metrics need, not the features, and every score is unchanged.

* each built-in metric scores the same (1e-9) from the statistics it declared as from the raw features,
  on wide and narrow layers, with labels (stratified folds), a permuted and a subset target;
* without ``keep_features`` no features entry is written and the entries are (n, n)-sized;
  ``acts[layer]`` is then one clear DataError naming the fix;
* a damaged statistics entry is discarded with a warning and rebuilt; the score is unchanged;
* constant layers are found from per-stimulus digests exactly as from the features;
* :class:`ColumnReader` releases the pages it read.
"""
from __future__ import annotations

import json
import logging
import math
import resource

import numpy as np
import pytest

from framework.activation_cache import ActivationCache
from framework.contracts import ModelPlugin, WeightsInfo
from framework.errors import DataError
from framework.layer_stats import ColumnReader, Need, compute
from framework.numerics.gram import fold_grams, gram
from framework.numerics.layers import constant_layers
from framework.types import Activations, BrainRDMs, Dataset, Responses, SiteTable, StimulusSet, digest_of
from plugins.metrics.alignment import AlignmentMetric
from plugins.metrics.cka import CKAMetric
from plugins.metrics.linear_predictivity import LinearPredictivityMetric
from plugins.metrics.rsa import RSAMetric

N = 40
AREAS = ("17", "17", "18", "18", "19", "37", "20", "20")


class ArrayModel(ModelPlugin):
    """Yields fixed arrays batch by batch; counts forward passes."""

    name = "arrays"

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.calls = 0

    def layers(self):
        return list(self.arrays)

    def default_layers(self):
        return list(self.arrays)

    def layer_shapes(self):
        return {k: (v.shape[1],) for k, v in self.arrays.items()}

    def weights_info(self):
        return WeightsInfo(source="random", label="random init (seed 0)", digest="a" * 64, seed=0)

    def preprocessing(self):
        return {}

    def extract(self, stimuli, layers, *, batch_size=32):
        self.calls += 1
        for s in range(0, len(stimuli), batch_size):
            yield {layer: self.arrays[layer][s:s + batch_size] for layer in layers}


def _layers(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N, 8))
    return {
        "pixels": rng.uniform(0, 1, size=(N, 300)).astype(np.float32),
        "conv": (np.maximum(base @ rng.normal(size=(8, 500)), 0) + 3.0).astype(np.float32),  # wide, offset mean
        "fc": (base @ rng.normal(size=(8, 20))).astype(np.float32),                           # narrower than a fold
        "dead": np.zeros((N, 50), dtype=np.float32),                                           # constant
    }


def _dataset(*, labels: bool, kind: str = "responses", seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed + 1)
    ids = tuple(f"s{i:02d}" for i in range(N))
    lab = tuple("abcd"[i % 4] for i in range(N)) if labels else None
    stimuli = StimulusSet(ids, images=np.zeros((N, 4, 4, 3), dtype=np.uint8), labels=lab)
    layers = _layers(seed)
    if kind == "rdms":
        feats = layers["conv"][:, :30].astype(np.float64) + rng.normal(size=(N, 30))
        subj = []
        for _ in range(3):
            x = feats + 0.5 * rng.normal(size=feats.shape)
            c = np.corrcoef(x)
            subj.append(1.0 - c)
        target = BrainRDMs({"IT": np.stack(subj)}, ids, ("IT",), distance="correlation")
        return Dataset("rdmset", stimuli, digest_of("rdmset", seed), rdms=target)
    sig = layers["fc"][:, :8].astype(np.float64)
    data = sig + 0.7 * rng.normal(size=(N, 8))
    reps = np.stack([data + 0.5 * rng.normal(size=data.shape) for _ in range(2)]).astype(np.float32)
    sites = SiteTable(tuple(f"p1/e{j}" for j in range(8)), ("p1",) * 8, AREAS)
    responses = Responses(data.astype(np.float32), sites, ids, reps)
    return Dataset("respset", stimuli, digest_of("respset", seed), responses=responses)


def _numbers(obj, path="") -> dict[str, float]:
    """Every number in a score's value, ceiling, details and summary, by path."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_numbers(v, f"{path}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{path}[{i}]"))
    elif isinstance(obj, (bool, str)) or obj is None:
        pass
    elif isinstance(obj, (int, float, np.floating, np.integer)):
        out[path] = float(obj)
    return out


def _score_numbers(score) -> dict[str, float]:
    return _numbers({"value": score.value, "ceiling": score.ceiling, "ci": score.ci, "p": score.p_value,
                     "details": score.details, "summary": score.summary})


def _assert_same(a, b) -> None:
    na, nb = _score_numbers(a), _score_numbers(b)
    assert set(na) == set(nb)
    for k in na:
        x, y = na[k], nb[k]
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(1.0, abs(x)), (k, x, y)


def _from_cache(tmp_path, dataset: Dataset, metric, layers: dict[str, np.ndarray], *, seed: int = 0,
                keep: bool = False) -> tuple[Activations, ActivationCache, ArrayModel]:
    cache = ActivationCache(tmp_path / "acts")
    model = ArrayModel(layers)
    key = cache.key("arrays", {}, model.weights_info(), list(layers), {}, dataset.digest, None)
    acts, extracted = cache.load(model, dataset.stimuli, list(layers), key=key,
                                 needs=metric.needs(dataset, seed=seed), keep_features=keep, batch_size=7)
    assert extracted and model.calls == 1
    return acts, cache, model


def _align(acts: Activations, target, stimuli: StimulusSet) -> Activations:
    from framework.scheduler import _align as align

    return align(acts, target, stimuli)


METRICS = {
    "rsa": lambda: RSAMetric(),
    "rsa-correlation-optimistic": lambda: RSAMetric(distance="correlation", selection="optimistic"),
    "rsa-perm": lambda: RSAMetric(n_permutations=200, comparison="pearson"),
    "cka": lambda: CKAMetric(n_splits=2),
    "alignment": lambda: AlignmentMetric(),
    "lp-gcv": lambda: LinearPredictivityMetric(n_splits=4),
    "lp-inner": lambda: LinearPredictivityMetric(n_splits=4, alpha_selection="inner-cv", inner_splits=3,
                                                 standardize=False),
    "lp-pls": lambda: LinearPredictivityMetric(n_splits=4, regression="pls", pls_components=3),
}


@pytest.mark.parametrize("labels", [False, True], ids=["plain", "labels"])
@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_scores_the_same_from_statistics_as_from_features(tmp_path, name, labels, caplog):
    dataset = _dataset(labels=labels)
    metric = METRICS[name]()
    layers = _layers()
    target = dataset.responses
    features = Activations(layers, dataset.stimuli.ids, {"key": None})
    with caplog.at_level(logging.ERROR):
        expected = metric.score(_align(features, target, dataset.stimuli), target, seed=3)
        acts, cache, _ = _from_cache(tmp_path, dataset, metric, layers, seed=3)
        got = metric.score(_align(acts, target, dataset.stimuli), target, seed=3)
    _assert_same(got, expected)
    features_entries = [p for p in cache.root.iterdir() if "@" not in p.name and not p.name.startswith(".")]
    if name != "lp-pls":  # pls declares the features; everything else keeps (n, n)-sized statistics only
        assert features_entries == []
        assert not acts.has_features("conv")
        stored = sum(f.stat().st_size for f in cache.root.rglob("*.npy"))
        assert stored < 24 * N * N * 8 * len(layers)


def test_rsa_on_rdm_datasets_scores_the_same_from_statistics(tmp_path):
    dataset = _dataset(labels=False, kind="rdms")
    for metric in (RSAMetric(), RSAMetric(distance="euclidean", selection="optimistic")):
        layers = _layers()
        features = Activations(layers, dataset.stimuli.ids)
        expected = metric.score(_align(features, dataset.rdms, dataset.stimuli), dataset.rdms, seed=0)
        acts, _, _ = _from_cache(tmp_path / metric.params.distance, dataset, metric, layers)
        _assert_same(metric.score(_align(acts, dataset.rdms, dataset.stimuli), dataset.rdms, seed=0), expected)
    assert RSAMetric().needs(dataset) == [Need.gram(centered=False)]        # auto: the dataset's distance
    ids = {Need.features().id, Need.features(max_width=10).id, Need.features(max_width=20).id,
           Need.gram(centered=True).id, Need.gram(centered=False).id, Need.summary().id}
    assert len(ids) == 6 and all(len(i) == 16 for i in ids)                 # distinct entries, `@<16 hex>` names
    assert RSAMetric(distance="euclidean").needs(dataset) == [Need.gram(centered=True)]


@pytest.mark.parametrize("name", ["rsa", "cka", "lp-gcv"])
def test_permuted_and_subset_targets_score_the_same(tmp_path, name):
    """A target whose stimuli are the dataset's in another order (and, for rsa, a subset) gets the same
    numbers from statistics as from features."""
    dataset = _dataset(labels=False)
    metric = METRICS[name]()
    layers = _layers()
    rng = np.random.default_rng(5)
    order = rng.permutation(N) if name != "rsa" else rng.permutation(N)[:30]
    r = dataset.responses
    target = Responses(r.data[order], r.sites, tuple(np.asarray(r.stimulus_ids)[order]), r.repetitions[:, order])
    features = Activations(layers, dataset.stimuli.ids)
    expected = metric.score(_align(features, target, dataset.stimuli), target, seed=1)
    acts, _, _ = _from_cache(tmp_path, dataset, metric, layers, seed=1)
    if name == "lp-gcv":  # folds drawn in another stimulus order are not the cached ones: one clear line
        with pytest.raises(DataError, match=r"Layer 'pixels'.*not in the activation cache.*--keep-activations"):
            metric.score(_align(acts, target, dataset.stimuli), target, seed=1)
        acts, _, _ = _from_cache(tmp_path / "kept", dataset, metric, layers, seed=1, keep=True)
    _assert_same(metric.score(_align(acts, target, dataset.stimuli), target, seed=1), expected)


def test_features_are_not_kept_unless_asked_and_the_message_names_the_fix(tmp_path):
    dataset = _dataset(labels=False)
    layers = _layers()
    acts, cache, model = _from_cache(tmp_path, dataset, CKAMetric(), layers)
    with pytest.raises(DataError, match=r"raw features of layer 'conv' were not kept.*--keep-activations"):
        acts["conv"]
    assert acts.n_features("conv") == 500 and acts.layers == tuple(layers)
    # a later run that keeps the features runs the model once more; then everything is served
    key = cache.key("arrays", {}, model.weights_info(), list(layers), {}, dataset.digest, None)
    kept, extracted = cache.load(model, dataset.stimuli, list(layers), key=key, needs=CKAMetric().needs(dataset),
                                 keep_features=True)
    assert extracted and model.calls == 2
    np.testing.assert_array_equal(kept["conv"], layers["conv"])
    # now any new statistic comes from the kept features, without running the model
    again, extracted = cache.load(model, dataset.stimuli, list(layers), key=key, needs=[Need.gram(centered=False)])
    assert not extracted and model.calls == 2
    g, sums = again.gram("fc", center=False)
    ref_g, ref_sums = gram(layers["fc"])
    np.testing.assert_array_equal(g, ref_g)
    np.testing.assert_array_equal(sums, ref_sums)


def test_statistics_are_bitwise_those_of_the_numerics(tmp_path):
    layers = _layers()
    x = layers["conv"]
    rng = np.random.default_rng(0)
    trains = [np.sort(rng.choice(N, 30, replace=False)) for _ in range(3)]
    need = Need.fold_grams(trains, standardize=True)
    got = compute(ColumnReader(x), need, layer="conv")
    ref = fold_grams(x, [(t, np.zeros(0, dtype=np.int64)) for t in trains], standardize=True)
    np.testing.assert_array_equal(got["grams"], ref)
    assert got["wide"].tolist() == [0, 1, 2]
    assert compute(x[:, :20], need)["wide"].tolist() == []      # 20 features < 30 training stimuli: no fold is wide
    g = compute(x, Need.gram(centered=True))["gram"]
    np.testing.assert_array_equal(g, gram(x, center=True)[0])


def test_constant_layers_from_digests_match_the_features(tmp_path):
    dataset = _dataset(labels=False)
    layers = _layers()
    same = np.tile(np.arange(7, dtype=np.float32), (N, 1))
    same[3] = -0.0 * same[3]                       # -0.0 equals 0.0 by value: still constant over rows 2..
    layers["tail"] = np.vstack([np.ones((5, 7), np.float32), np.zeros((N - 5, 7), np.float32)])
    layers["nan"] = np.full((N, 3), np.nan, dtype=np.float32)
    acts, _, _ = _from_cache(tmp_path, dataset, CKAMetric(), layers)
    features = Activations(layers, dataset.stimuli.ids)
    for rows in (None, np.arange(5, N), np.array([7, 3, 9]), np.array([0, 1, 2, 3, 4])):
        assert acts.constant_layers(rows) == constant_layers(features, rows=rows)
        assert acts.constant_layers(rows) == constant_layers(list(features.items()), rows=rows)
    assert "dead" in acts.constant_layers() and "tail" in acts.constant_layers(np.arange(5, N))
    assert not acts.finite("nan") and acts.finite("conv")
    with pytest.raises(DataError, match="layer 'nan' contain NaN"):
        acts.gram("nan", center=True)


def test_damaged_statistics_entry_is_rebuilt_and_the_score_is_unchanged(tmp_path, caplog):
    dataset = _dataset(labels=False)
    metric = CKAMetric(n_splits=2)
    layers = _layers()
    acts, cache, model = _from_cache(tmp_path, dataset, metric, layers)
    expected = metric.score(_align(acts, dataset.responses, dataset.stimuli), dataset.responses)
    del acts
    (entry,) = [p for p in cache.root.iterdir() if p.name.endswith("@" + Need.gram(centered=True).id)]
    target_file = sorted(entry.glob("L001_gram.npy"))[0]
    raw = bytearray(target_file.read_bytes())
    raw[-8:] = np.float64(123.0).tobytes()
    target_file.write_bytes(bytes(raw))
    key = cache.key("arrays", {}, model.weights_info(), list(layers), {}, dataset.digest, None)
    with caplog.at_level(logging.WARNING, logger="framework"):
        again, extracted = cache.load(model, dataset.stimuli, list(layers), key=key, needs=metric.needs(dataset))
    assert extracted and model.calls == 2
    assert f"Activation cache entry '{entry}' is damaged" in caplog.text
    _assert_same(metric.score(_align(again, dataset.responses, dataset.stimuli), dataset.responses), expected)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["need"] == {"kind": "centered_gram"} and meta["layers"] == list(layers)


def _rss_mb() -> float:
    """Resident memory of this process now (file-backed pages included), MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="no madvise on this platform")
def test_column_reader_releases_pages(tmp_path):
    """Reading a 120 MB memory-mapped layer in column blocks keeps resident memory near one release interval; the
    same read through the bare memory map keeps the whole file resident (the control)."""
    from threadpoolctl import threadpool_limits

    path = tmp_path / "big.npy"
    n, p = 30, 1_000_000
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, p))
    for s in range(0, n, 10):
        mm[s:s + 10] = np.float32(s + 1)
    mm.flush()
    del mm
    with threadpool_limits(1):
        expected = gram(np.load(path), block=20_000)[0]   # the file read into memory at once
    growth = {}
    for name, wrap in (("bare", lambda a: a), ("reader", ColumnReader)):
        arr = np.load(path, mmap_mode="r")
        before = _rss_mb()
        with threadpool_limits(1):
            g = gram(wrap(arr), block=20_000)[0]
        growth[name] = _rss_mb() - before
        np.testing.assert_array_equal(g, expected)
        del arr, g
    assert growth["bare"] > 90, growth      # the control keeps the file's pages: the test can fail
    assert growth["reader"] < 60, growth    # about RELEASE_BYTES (32 MB) of pages at most


def test_column_reader_bounds_memory_for_narrow_blocks_of_many_rows(tmp_path):
    """The realistic case: many stimuli, so the Gram builder reads narrow column blocks (one short piece of every
    row). Through a memory map the kernel maps whole page-cache folios per row and made ~1.2 GB of a 1.8 GB layer
    resident (1,000-stimulus VGG-16 extraction: 6.8 GB peak); the reader's pread copies keep it to the blocks."""
    path = tmp_path / "wide.npy"
    n, p = 400, 150_000                                        # 240 MB; default blocks of 655 columns
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, p))
    rng = np.random.default_rng(0)
    for s in range(0, n, 50):
        mm[s:s + 50] = rng.standard_normal((50, p), dtype=np.float32)
    mm.flush()
    del mm
    arr = np.load(path, mmap_mode="r")
    before = _rss_mb()
    got, sums = gram(ColumnReader(arr), center=True)
    growth = _rss_mb() - before
    assert growth < 60, growth
    x = np.load(path).astype(np.float64)
    x -= x.mean(axis=0)
    np.testing.assert_allclose(got, x @ x.T, rtol=1e-10, atol=1e-6)
    np.testing.assert_allclose(sums, x.sum(axis=1), atol=1e-6)
    rows = ColumnReader(arr)[3:7]                              # a row block: one read
    np.testing.assert_array_equal(rows, np.load(path)[3:7])
