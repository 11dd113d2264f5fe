"""Linear CKA with the unbiased HSIC, against the U-statistic definition; held-out layer choice."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from framework.errors import ConfigError, DataError
from framework.numerics.gram import centered_gram
from framework.types import Activations, BrainRDMs, Responses, SiteTable
from plugins.metrics import cka as cka_module
from plugins.metrics.cka import CKAMetric, linear_cka


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def hsic_u_statistic(x, y):
    """Unbiased HSIC written as Song et al.'s U-statistic: the mean, over ordered
    4-tuples of distinct stimuli, of h = 1/4! sum over their orderings (t, u, v, w) of
    k_tu l_tu + k_tu l_vw - 2 k_tu l_tv, with linear kernels k = x x^T, l = y y^T."""
    n = x.shape[0]
    k = x @ x.T
    l_ = y @ y.T
    total, count = 0.0, 0
    for quad in itertools.permutations(range(n), 4):
        h = 0.0
        for t, u, v, w in itertools.permutations(quad):
            h += k[t, u] * l_[t, u] + k[t, u] * l_[v, w] - 2 * k[t, u] * l_[t, v]
        total += h / 24
        count += 1
    return total / count


def hsic_u_centred(x, y):
    """Unbiased HSIC by U-centring (Szekely & Rizzo 2014; Kornblith et al.'s ``center_gram(unbiased=True)``),
    looped over stimulus pairs: A~_ij = a_ij - a_i./(n-2) - a_.j/(n-2) + a_../((n-1)(n-2)) off the diagonal
    (a = the Gram matrix with a zero diagonal), HSIC = sum_{i != j} A~_ij B~_ij / (n (n-3))."""
    n = x.shape[0]

    def u_centre(f):
        a = f.astype(np.float64) @ f.astype(np.float64).T  # raw features: no centring
        np.fill_diagonal(a, 0.0)
        rows, total = a.sum(axis=1), a.sum()
        out = np.zeros_like(a)
        for i in range(n):
            for j in range(n):
                if i != j:
                    out[i, j] = a[i, j] - rows[i] / (n - 2) - rows[j] / (n - 2) + total / ((n - 1) * (n - 2))
        return out

    return float((u_centre(x) * u_centre(y)).sum() / (n * (n - 3)))


def cka_looped(x, y):
    return hsic_u_centred(x, y) / np.sqrt(hsic_u_centred(x, x) * hsic_u_centred(y, y))


def test_linear_cka_matches_u_statistic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)) + 1.0
    y = x[:, :2] @ rng.standard_normal((2, 3)) + 0.5 * rng.standard_normal((7, 3))
    expected = hsic_u_statistic(x, y) / np.sqrt(hsic_u_statistic(x, x) * hsic_u_statistic(y, y))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    assert hsic_u_centred(x, y) == pytest.approx(hsic_u_statistic(x, y), rel=1e-9)  # the reference below
    kx = cka_module._HSICKernel(centered_gram(x))
    ky = cka_module._HSICKernel(centered_gram(y))
    assert cka_module.unbiased_hsic(kx, ky) == pytest.approx(hsic_u_statistic(x, y), rel=1e-9)


def test_invariances():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 8))
    y = rng.standard_normal((30, 4)) + x[:, :4]
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(3.0 * x @ q + 7.0, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-12)


def test_gram_blocks_equal_one_product():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 50)).astype(np.float32)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(centered_gram(x, block=7), xc @ xc.T, rtol=1e-12, atol=1e-12)


def _planted(seed=3, n=60):
    rng = np.random.default_rng(seed)
    layers = {"a": rng.standard_normal((n, 20)), "b": rng.standard_normal((n, 40)), "c": rng.standard_normal((n, 10))}
    layers = {k: v.astype(np.float32) for k, v in layers.items()}
    y = np.concatenate([layers["a"][:, :5] @ rng.standard_normal((5, 4)),
                        layers["c"][:, :5] @ rng.standard_normal((5, 3)),
                        rng.standard_normal((n, 2))], axis=1)
    y += 0.3 * rng.standard_normal(y.shape)
    areas = ("17",) * 4 + ("20",) * 3 + ("n/a",) * 2
    sites = SiteTable(tuple(f"s{i}" for i in range(9)), ("p1",) * 9, areas)
    ids = tuple(f"img{i}" for i in range(n))
    return Activations(layers, ids), Responses(y.astype(np.float32), sites, ids)


def test_metric_table_headline_and_planted_best_layer():
    acts, resp = _planted()
    score = CKAMetric().score(acts, resp)
    table = score.details["layer_area"]
    assert table["area"][:3] == ["17", "20", "n/a"]
    groups = {"17": slice(0, 4), "20": slice(4, 7), "n/a": slice(7, 9)}
    for layer, area, value in zip(table["layer"], table["area"], table["cka"]):
        assert value == pytest.approx(linear_cka(acts[layer], resp.data[:, groups[area]]), rel=1e-10)
    best = score.summary["best_layer"]
    assert best["17"] == "a" and best["20"] == "c"
    json.dumps([score.details, score.summary], allow_nan=False)
    areas = score.details["area"]
    assert areas["in_headline"] == [True, True, False]
    assert score.value == pytest.approx(np.mean(areas["cka"][:2]))
    # the planted layer stands well clear of the unrelated ones
    for area in ("17", "20"):
        values = sorted(v for a, v in zip(table["area"], table["cka"]) if a == area)
        assert values[-1] > 0.25 and values[-1] > 3 * max(values[-2], 0.02)


def test_stimulus_order_is_aligned_and_inputs_untouched():
    acts, resp = _planted(seed=4)
    perm = np.random.default_rng(0).permutation(len(acts.stimulus_ids))
    shuffled = Activations({k: v[perm] for k, v in acts.items()}, tuple(np.array(acts.stimulus_ids)[perm]))
    before = {k: v.copy() for k, v in shuffled.items()}
    data_before = resp.data.copy()
    a = CKAMetric().score(acts, resp)
    b = CKAMetric().score(shuffled, resp)
    assert b.value == pytest.approx(a.value, rel=1e-10)
    for k, v in shuffled.items():
        np.testing.assert_array_equal(v, before[k])
    np.testing.assert_array_equal(resp.data, data_before)


def test_bad_targets():
    acts, resp = _planted()
    rdms = BrainRDMs({"IT": np.zeros((1, 60, 60))}, resp.stimulus_ids, ("IT",))
    with pytest.raises(DataError, match="responses"):
        CKAMetric().score(acts, rdms)
    other = Activations({"a": np.zeros((60, 3), np.float32)}, tuple(f"x{i}" for i in range(60)))
    with pytest.raises(DataError, match="no activations"):
        CKAMetric().score(other, resp)
    assert CKAMetric.headline and CKAMetric.accepts == {"responses"}


# -- the layer choice: held out by default, optimistic on request, pixels a baseline ------------------
def _labelled(seed=5, n=60, pixels_drive=False):
    """Planted layers 'a' (area 17) and 'c' (area 20), a 'pixels' layer, 3 categories of 20 stimuli."""
    rng = np.random.default_rng(seed)
    layers = {"pixels": rng.standard_normal((n, 30)), "a": rng.standard_normal((n, 20)),
              "b": rng.standard_normal((n, 40)), "c": rng.standard_normal((n, 10))}
    drive17 = layers["pixels" if pixels_drive else "a"][:, :5]
    y = np.concatenate([drive17 @ rng.standard_normal((5, 4)), layers["c"][:, :5] @ rng.standard_normal((5, 3)),
                        rng.standard_normal((n, 2))], axis=1)
    y += 0.8 * rng.standard_normal(y.shape)
    areas = ("17",) * 4 + ("20",) * 3 + ("n/a",) * 2
    sites = SiteTable(tuple(f"s{i}" for i in range(9)), ("p1",) * 9, areas)
    ids = tuple(f"img{i}" for i in range(n))
    labels = np.array(["x", "y", "z"] * (n // 3))
    acts = Activations({k: v.astype(np.float32) for k, v in layers.items()}, ids, {"labels": labels})
    return acts, Responses(y.astype(np.float32), sites, ids, area_order=("17", "18", "20")), labels


@pytest.mark.parametrize("n_splits", [2, 5])
def test_heldout_headline_matches_looped_hsic_on_each_fold(n_splits):
    """Independent: sklearn's stratified folds, U-centred HSIC looped over each fold's stimuli from the raw
    features, the layer (pixels excluded) committed on the training part, scored on the held-out part."""
    acts, resp, labels = _labelled()
    score = CKAMetric(n_splits=n_splits).score(acts, resp, seed=3)
    assert score.summary["stratified"] is True and score.summary["selection"] == "heldout"
    folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=3).split(np.zeros((60, 1)), labels))
    groups = {"17": slice(0, 4), "20": slice(4, 7), "n/a": slice(7, 9)}
    competing = ["a", "b", "c"]
    per_area, pixels, expected_best = {}, {}, {}
    for area, cols in groups.items():
        y = resp.data[:, cols]
        values, pix, chosen = [], [], []
        for train, test in folds:
            train_cka = [cka_looped(acts[layer][train], y[train]) for layer in competing]
            layer = competing[int(np.argmax(train_cka))]
            chosen.append(layer)
            values.append(cka_looped(acts[layer][test], y[test]))
            pix.append(cka_looped(acts["pixels"][test], y[test]))
        per_area[area], pixels[area] = np.mean(values), np.mean(pix)
        # best_layer: the most frequent committed layer, ties to the higher CKA on all stimuli
        top = max(chosen.count(layer) for layer in chosen)
        tied = [layer for layer in competing if chosen.count(layer) == top]
        expected_best[area] = max(tied, key=lambda layer: linear_cka(acts[layer], y))
        fold_rows = [i for i, a in enumerate(score.details["fold_area"]["area"]) if a == area]
        assert [score.details["fold_area"]["layer"][i] for i in fold_rows] == chosen
    table = score.details["area"]
    assert table["area"] == ["17", "20", "n/a"] and table["in_headline"] == [True, True, False]
    assert table["cka"] == pytest.approx([per_area[a] for a in table["area"]], rel=1e-8)
    assert table["pixels_cka"] == pytest.approx([pixels[a] for a in table["area"]], rel=1e-8)
    assert table["best_layer"] == [expected_best[a] for a in table["area"]]
    assert score.value == pytest.approx((per_area["17"] + per_area["20"]) / 2, rel=1e-8)  # area_order only
    assert score.summary["value_heldout"] == score.value
    assert score.summary["baseline"]["pixels"]["value"] == pytest.approx((pixels["17"] + pixels["20"]) / 2,
                                                                         rel=1e-8)
    # the optimistic value: max over the competing layers of the CKA on all stimuli
    optimistic = {a: max(linear_cka(acts[layer], resp.data[:, cols]) for layer in competing)
                  for a, cols in groups.items()}
    assert table["cka_optimistic"] == pytest.approx([optimistic[a] for a in table["area"]], rel=1e-9)
    assert score.summary["value_optimistic"] == pytest.approx((optimistic["17"] + optimistic["20"]) / 2)
    assert score.summary["best_layer"]["17"] == "a" and score.summary["best_layer"]["20"] == "c"
    json.dumps([score.details, score.summary], allow_nan=False)


def test_optimistic_selection_is_the_max_over_layers():
    acts, resp, _ = _labelled(seed=6)
    heldout = CKAMetric().score(acts, resp, seed=1)
    score = CKAMetric(selection="optimistic").score(acts, resp, seed=1)
    assert score.value == pytest.approx(heldout.summary["value_optimistic"], rel=1e-12)
    assert score.summary["value_heldout"] == pytest.approx(heldout.value, rel=1e-12)
    table = score.details["area"]
    assert table["cka"] == table["cka_optimistic"] and table["best_layer"] == table["optimistic_layer"]
    assert score.summary["selection"] == "optimistic" and "optimistic" in score.summary["selection_rule"]
    # the baseline on the same footing: all stimuli
    assert table["pixels_cka"] == pytest.approx(
        [linear_cka(acts["pixels"], resp.data[:, cols]) for cols in (slice(0, 4), slice(4, 7), slice(7, 9))])


def test_pure_noise_heldout_is_unbiased_optimistic_is_not():
    """Targets unrelated to the network: the held-out headline averages ~0 over seeds; the max over
    layers on the same stimuli is biased upward (it peeks)."""
    heldout, optimistic = [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n, n_areas = 60, 5
        layers = {f"l{i}": rng.standard_normal((n, 8)).astype(np.float32) for i in range(10)}
        areas = tuple(f"a{k}" for k in range(n_areas) for _ in range(3))
        ids = tuple(f"img{i}" for i in range(n))
        resp = Responses(rng.standard_normal((n, len(areas))).astype(np.float32),
                         SiteTable(tuple(f"s{i}" for i in range(len(areas))), ("p1",) * len(areas), areas), ids,
                         area_order=tuple(f"a{k}" for k in range(n_areas)))
        score = CKAMetric().score(Activations(layers, ids), resp, seed=seed)
        heldout.append(score.value)
        optimistic.append(score.summary["value_optimistic"])
    # 20 seeds x 5 areas; the per-seed SD of the held-out headline is ~0.016 (SE of the mean ~0.004)
    assert abs(np.mean(heldout)) < 0.015
    assert np.mean(optimistic) > 0.025 and np.mean(optimistic) > np.mean(heldout) + 0.025


def test_pixels_is_a_baseline_unless_included():
    acts, resp, _ = _labelled(seed=7, pixels_drive=True)  # area 17 is driven by the pixels layer
    default = CKAMetric().score(acts, resp, seed=0)
    assert "pixels" not in default.summary["candidate_layers"] and default.summary["include_pixels"] is False
    assert "pixels" not in default.details["fold_area"]["layer"]
    assert "pixels" not in default.summary["best_layer_optimistic"].values()
    pix17 = default.summary["baseline"]["pixels"]["per_area"]["17"]
    assert pix17 > 0.15 and default.details["area"]["cka"][0] < 0.5 * pix17  # the network is not credited
    included = CKAMetric(include_pixels=True).score(acts, resp, seed=0)
    assert included.summary["best_layer"]["17"] == "pixels" and included.summary["best_layer_optimistic"]["17"] \
        == "pixels"
    assert included.details["area"]["cka"][0] == pytest.approx(pix17, rel=1e-12)
    assert included.summary["baseline"] == default.summary["baseline"]  # reported either way
    only_pixels = Activations({"pixels": acts["pixels"]}, acts.stimulus_ids)  # nothing else to choose
    with pytest.raises(ConfigError, match="no model layer left to score: the only layer given is 'pixels'"):
        CKAMetric().score(only_pixels, resp)   # the baseline is never ranked as the model's layer
    assert CKAMetric(include_pixels=True).score(only_pixels, resp).summary["best_layer"]["17"] == "pixels"


def test_seeded_folds_and_parameters():
    acts, resp, _ = _labelled(seed=8)
    a, b = CKAMetric().score(acts, resp, seed=4), CKAMetric().score(acts, resp, seed=4)
    assert a.value == b.value and a.details == b.details
    assert CKAMetric().score(acts, resp, seed=5).details["fold_area"] != a.details["fold_area"]
    unlabelled = Activations(dict(acts.items()), acts.stimulus_ids)
    assert CKAMetric().score(unlabelled, resp, seed=4).summary["stratified"] is False
    params = CKAMetric().parameters()
    assert params == {"selection": "heldout", "n_splits": 2, "include_pixels": False, "kernel": "linear",
                      "hsic": "unbiased"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"selection": "held-out"}, "Did you mean 'heldout'"),
    ({"n_splits": 1}, "n_splits"),
    ({"include_pixels": "yes"}, "include_pixels"),
    ({"kernel": "rbf"}, "has no parameter 'kernel'"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CKAMetric(**kwargs)


def test_folds_too_small_for_the_unbiased_hsic():
    acts, resp, _ = _labelled(seed=9, n=30)
    with pytest.raises(DataError, match=r"Held-out folds of 3 stimuli.*cka.n_splits \(now 10\) to at most 7"):
        CKAMetric(n_splits=10).score(acts, resp)


def test_constant_side_is_named():
    acts, resp, _ = _labelled(seed=3)
    zero = Activations({k: np.zeros_like(acts[k]) for k in acts.layers}, acts.stimulus_ids)
    with pytest.raises(DataError, match=r"every layer of the model .*\(the model side is constant.*weights"):
        CKAMetric().score(zero, resp)
    flat = Responses(np.ones_like(resp.data), resp.sites, resp.stimulus_ids)
    with pytest.raises(DataError, match=r"every site has a constant response .*\(the brain side.*check the signal"):
        CKAMetric().score(acts, flat)
