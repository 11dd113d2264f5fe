"""Linear CKA with the unbiased HSIC, against the U-statistic definition."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from framework.errors import DataError
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


def test_linear_cka_matches_u_statistic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)) + 1.0
    y = x[:, :2] @ rng.standard_normal((2, 3)) + 0.5 * rng.standard_normal((7, 3))
    expected = hsic_u_statistic(x, y) / np.sqrt(hsic_u_statistic(x, x) * hsic_u_statistic(y, y))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
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
