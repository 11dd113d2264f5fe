"""Linear predictivity end to end: pinned to scikit-learn, planted truth, no peeking."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from scipy import stats
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from framework.errors import ConfigError, DataError
from framework.numerics.ceiling import split_half_reliability
from framework.numerics.gram import fold_grams
from framework.numerics.ridge import DEFAULT_ALPHAS
from framework.numerics.splits import kfold_splits
from framework.numerics.stats import pearson_columns
from framework.types import Activations, BrainRDMs, Responses, SiteTable
from plugins.metrics.linear_predictivity import LinearPredictivityMetric


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _sites(areas):
    return SiteTable(tuple(f"s{i}" for i in range(len(areas))), ("p1",) * len(areas), tuple(areas))


def _ids(n):
    return tuple(f"img{i:04d}" for i in range(n))


# -- splits ---------------------------------------------------------------------------------
def test_kfold_partition_seeded():
    splits, stratified = kfold_splits(23, n_splits=5, seed=3)
    assert not stratified and len(splits) == 5
    tests = np.concatenate([te for _, te in splits])
    np.testing.assert_array_equal(np.sort(tests), np.arange(23))
    for tr, te in splits:
        assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == 23
    again, _ = kfold_splits(23, n_splits=5, seed=3)
    other, _ = kfold_splits(23, n_splits=5, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other))
    ref = KFold(5, shuffle=True, random_state=3).split(np.zeros((23, 1)))
    assert all(np.array_equal(np.sort(r[1]), s[1]) for r, s in zip(ref, splits))


def test_kfold_stratified_keeps_category_proportions():
    labels = np.repeat(["face", "body", "animal", "place", "object"], [20, 20, 20, 20, 20])
    labels = np.random.default_rng(0).permutation(labels)
    splits, stratified = kfold_splits(100, n_splits=10, seed=0, labels=labels)
    assert stratified
    for _, te in splits:
        counts = collections.Counter(labels[te])
        assert sorted(counts.values()) == [2, 2, 2, 2, 2]
    unstratified, _ = kfold_splits(100, n_splits=10, seed=0)
    assert any(sorted(collections.Counter(labels[te]).values()) != [2] * 5 for _, te in unstratified)


def test_kfold_falls_back_when_a_category_is_small(caplog):
    labels = np.array(["a"] * 30 + ["b"] * 3)
    _, stratified = kfold_splits(33, n_splits=5, labels=labels)
    assert not stratified
    assert "unstratified" in caplog.text


def test_kfold_bad_input():
    with pytest.raises(ConfigError, match="n_splits"):
        kfold_splits(10, n_splits=1)
    with pytest.raises(DataError, match="at most 10"):
        kfold_splits(10, n_splits=11)
    with pytest.raises(DataError, match="one per stimulus"):
        kfold_splits(10, n_splits=2, labels=["a"] * 9)


# -- pinned to an independent computation ---------------------------------------------------
def _random_case(n=90, seed=0, with_reps=False):
    rng = np.random.default_rng(seed)
    layers = {"narrow": rng.standard_normal((n, 12)) * rng.uniform(0.1, 5, 12) + 3,
              "wide": rng.standard_normal((n, 150))}  # wide: more features than training stimuli
    layers["narrow"][:, 4] = 1.5  # a constant feature
    y = layers["narrow"][:, :3] @ rng.standard_normal((3, 5)) + layers["wide"][:, :20] @ rng.standard_normal((20, 5))
    y = y + 3 * rng.standard_normal(y.shape)
    reps = None
    if with_reps:
        reps = (y[None] + 4 * rng.standard_normal((4, n, 5))).astype(np.float32)
        y = reps.mean(axis=0)
    labels = np.repeat(["a", "b", "c"], n // 3)
    acts = Activations({k: v.astype(np.float32) for k, v in layers.items()}, _ids(n), {"labels": labels})
    resp = Responses(y.astype(np.float32), _sites(["17", "17", "20", "20", "20"]), _ids(n), reps)
    return acts, resp, labels


def _manual_site_r(x, y, folds, regression="ridge"):
    """Per-fold z-scoring (StandardScaler), RidgeCV per site (or PLS), scipy Pearson, mean over folds."""
    rs = []
    for train, test in folds:
        if regression == "ridge":
            scaler = StandardScaler().fit(x[train])
            model = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(scaler.transform(x[train]), y[train])
            pred = model.predict(scaler.transform(x[test]))
        else:
            keep = x[train].std(axis=0) > 0  # the metric caps components at the non-constant features
            n_comp = min(25, int(keep.sum()))
            pls = PLSRegression(n_components=n_comp, scale=False).fit(x[train][:, keep], y[train])
            pred = pls.predict(x[test][:, keep])
        rs.append([stats.pearsonr(pred[:, j], y[test, j])[0] for j in range(y.shape[1])])
    return np.mean(rs, axis=0)


def test_ridge_scores_match_sklearn_pipeline():
    acts, resp, labels = _random_case()
    score = LinearPredictivityMetric().score(acts, resp, seed=5)
    assert score.summary["stratified"] is True
    folds = list(StratifiedKFold(10, shuffle=True, random_state=5).split(np.zeros((90, 1)), labels))
    y = resp.data.astype(np.float64)
    table = score.details["layer_site"]
    for layer in acts.layers:
        expected = _manual_site_r(acts[layer].astype(np.float64), y, folds)
        got = [r for lay, r in zip(table["layer"], table["r"]) if lay == layer]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
        curve = {a: r for lay, a, r in zip(*(score.details["layer_area"][k] for k in ("layer", "area", "r")))
                 if lay == layer}
        assert curve["17"] == pytest.approx(np.median(expected[:2]), rel=1e-6)
        assert curve["20"] == pytest.approx(np.median(expected[2:]), rel=1e-6)


def test_pls_scores_match_sklearn_pipeline():
    acts, resp, labels = _random_case(seed=1)
    metric = LinearPredictivityMetric(regression="pls", standardize=False, stratify=False, inner_splits=2)
    score = metric.score(acts, resp, seed=2)
    assert score.summary["stratified"] is False
    folds = list(KFold(10, shuffle=True, random_state=2).split(np.zeros((90, 1))))
    table = score.details["layer_site"]
    for layer in acts.layers:
        x = acts[layer].astype(np.float64)
        x = x - x.mean(axis=0)  # centring is part of PLS; only helps rounding here
        expected = _manual_site_r(x, resp.data.astype(np.float64), folds, regression="pls")
        got = [r for lay, r in zip(table["layer"], table["r"]) if lay == layer]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
        assert all(a is None for lay, a in zip(table["layer"], table["alpha"]) if lay == layer)


def test_ceiling_and_ceiled_values():
    acts, resp, _ = _random_case(seed=2, with_reps=True)
    score = LinearPredictivityMetric(ceiling_splits=4).score(acts, resp, seed=1)
    site_ceiling = split_half_reliability(resp.repetitions, n_splits=4, seed=1).ceiling
    ceil17, ceil20 = np.median(site_ceiling[:2]), np.median(site_ceiling[2:])
    assert score.ceiling == pytest.approx((ceil17 + ceil20) / 2, rel=1e-12)
    area = score.details["area"]
    assert area["ceiling"] == pytest.approx([ceil17, ceil20], rel=1e-12)
    assert area["r_ceiled"] == pytest.approx([area["r"][0] / ceil17, area["r"][1] / ceil20], rel=1e-12)
    assert score.summary["value_ceiled"] == pytest.approx(np.mean(area["r_ceiled"]), rel=1e-12)
    assert score.value == pytest.approx(np.mean(area["r"]), rel=1e-12)
    no_reps = LinearPredictivityMetric().score(acts, Responses(resp.data, resp.sites, resp.stimulus_ids), seed=1)
    assert no_reps.ceiling is None and "value_ceiled" not in no_reps.summary
    assert no_reps.value == pytest.approx(score.value, rel=1e-12)


# -- wide layers: every fold's kernel from one blockwise pass ----------------------------------
def _awkward_layer(n=40, p=61, seed=20):
    """Random features plus columns that break one-pass statistics."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.1, 3.0, p) + rng.uniform(-2, 2, p)
    x[:, 0] = 0.0  # dead unit
    x[:, 1] = 0.7  # constant, not zero
    x[:, 2] = 0.0
    x[5, 2] = 4.0  # zero but for one stimulus (constant on the training rows of one fold)
    x[:, 3] = 0.0
    x[[1, 2, 30], 3] = [2.0, 1.0, 3.0]
    x[:, 4] = 1e4 + 1e-2 * rng.standard_normal(n)  # large offset, small spread
    x[:, 5] = 0.3
    x[17, 5] = 0.3 + 1e-6  # tiny spread on a non-zero constant
    x[:, 6] *= 1e3
    # nearly constant on the training rows of the fold holding stimuli 0..7 (which are large there):
    # the training variance is ~1e-9 of the second moment about the full-set mean
    x[:, 7] = 0.0
    x[8:12, 7] = 1e-4 * rng.uniform(1, 2, 4)
    x[:8, 7] = rng.uniform(2, 3, 8)
    return x.astype(np.float32)


def _brute_grams(x, splits, standardize):
    """Per-fold loop: training mean / population sd (sd 1 at rounding level), Z Z^T over all stimuli."""
    x = x.astype(np.float64)
    out = []
    for train, _ in splits:
        mean = x[train].mean(axis=0)
        z = x - mean
        if standardize:
            sd = np.sqrt(((x[train] - mean) ** 2).mean(axis=0))
            sd[sd <= np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
            z = z / sd
        out.append(z @ z.T)
    return np.stack(out)


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize(("block", "workers"), [(None, 1), (7, 1), (7, 2), (16, 3)])
def test_fold_grams_match_per_fold_loop(standardize, block, workers):
    x = _awkward_layer()
    splits = [(np.setdiff1d(np.arange(40), te), te) for te in np.array_split(np.arange(40), 5)]
    expected = _brute_grams(x, splits, standardize)
    got = fold_grams(x, splits, standardize=standardize, block=block, workers=workers)
    assert got.shape == (5, 40, 40)
    scale = np.abs(expected).max(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=1e-13)
    # the awkward columns must not be scaled by rounding noise: the single non-zero of column 2
    # sits in one test fold, where it stays 4 - 0 = 4 (sd set to 1)
    fold = next(f for f, (_, te) in enumerate(splits) if 5 in te)
    assert np.abs(got[fold] - expected[fold]).max() < 1e-12 * np.abs(expected[fold]).max()


def test_fold_grams_row_order_and_bad_values():
    x = _awkward_layer(seed=21)
    splits, _ = kfold_splits(40, n_splits=4, seed=2)
    order = np.random.default_rng(0).permutation(40)
    got = fold_grams(x, splits, order=order, block=9)
    np.testing.assert_allclose(got, _brute_grams(x[order], splits, True), rtol=1e-12, atol=1e-9)
    x[3, 50] = np.nan
    with pytest.raises(DataError, match="'conv9' has NaN"):
        fold_grams(x, splits, layer="conv9", block=9)


def test_wide_layer_unstandardized_and_inner_cv_match_sklearn():
    """Kernel path (150 features > 54 training stimuli) against per-fold sklearn refits."""
    acts, resp, _ = _random_case(n=60, seed=4)
    x = acts["wide"].astype(np.float64)
    x[:, 7] = 0.0
    x[[3, 40], 7] = [5.0, 2.0]  # constant on most training folds
    acts = Activations({"wide": x.astype(np.float32)}, acts.stimulus_ids)
    y = resp.data.astype(np.float64)
    x = acts["wide"].astype(np.float64)
    folds, _ = kfold_splits(60, n_splits=10, seed=3)
    alphas = np.logspace(-2, 4, 7)
    score = LinearPredictivityMetric(standardize=False, stratify=False, alphas=alphas).score(acts, resp, seed=3)
    rs = []
    for train, test in folds:
        mean = x[train].mean(axis=0)
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x[train] - mean, y[train])
        pred = model.predict(x[test] - mean)
        rs.append([stats.pearsonr(pred[:, j], y[test, j])[0] for j in range(y.shape[1])])
    np.testing.assert_allclose(score.details["layer_site"]["r"], np.mean(rs, axis=0), rtol=1e-7)
    # inner-CV selection on the fold kernels: brute-force Ridge over the inner folds of each outer fold
    metric = LinearPredictivityMetric(n_splits=4, stratify=False, alphas=alphas, alpha_selection="inner-cv",
                                      inner_splits=3)
    score = metric.score(acts, resp, seed=6)
    outer, _ = kfold_splits(60, n_splits=4, seed=6)
    rs = []
    for f, (train, test) in enumerate(outer):
        scaler = StandardScaler().fit(x[train])
        xtr, xte, ytr = scaler.transform(x[train]), scaler.transform(x[test]), y[train]
        inner, _ = kfold_splits(train.size, n_splits=3, seed=6 + 1 + f, name="inner_splits")
        sse = np.zeros((alphas.size, y.shape[1]))
        for k, alpha in enumerate(alphas):
            for itr, ite in inner:
                err = Ridge(alpha=alpha).fit(xtr[itr], ytr[itr]).predict(xtr[ite]) - ytr[ite]
                sse[k] += (err ** 2).sum(axis=0)
        pred = Ridge(alpha=alphas[np.argmin(sse, axis=0)]).fit(xtr, ytr).predict(xte)
        rs.append([stats.pearsonr(pred[:, j], y[test, j])[0] for j in range(y.shape[1])])
    np.testing.assert_allclose(score.details["layer_site"]["r"], np.mean(rs, axis=0), rtol=1e-7)


def test_layer_as_wide_as_some_training_folds_mixes_paths():
    """19 features, training folds of 18 (kernel path) and 19 stimuli (primal path)."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((23, 19)) * rng.uniform(0.5, 2, 19)
    y = x[:, :4] @ rng.standard_normal((4, 3)) + rng.standard_normal((23, 3))
    acts = Activations({"l": x.astype(np.float32)}, _ids(23))
    resp = Responses(y.astype(np.float32), _sites(["17"] * 3), _ids(23))
    score = LinearPredictivityMetric(n_splits=5).score(acts, resp, seed=8)
    folds, _ = kfold_splits(23, n_splits=5, seed=8)
    assert sorted({tr.size for tr, _ in folds}) == [18, 19]
    expected = _manual_site_r(acts["l"].astype(np.float64), resp.data.astype(np.float64), folds)
    np.testing.assert_allclose(score.details["layer_site"]["r"], expected, rtol=1e-6, atol=1e-9)


# -- planted truth and honesty ---------------------------------------------------------------
def test_planted_layer_wins_with_theoretical_r():
    rng = np.random.default_rng(10)
    n, sigma2 = 300, 0.25
    layers = {f"l{i}": rng.standard_normal((n, 20)) for i in range(4)}
    w = rng.standard_normal((20, 16))
    w /= np.linalg.norm(w, axis=0)  # unit signal variance for standard normal features
    y = np.concatenate([layers["l1"] @ w[:, :8], layers["l3"] @ w[:, 8:]], axis=1)
    y += np.sqrt(sigma2) * rng.standard_normal(y.shape)
    acts = Activations({k: v.astype(np.float32) for k, v in layers.items()}, _ids(n))
    resp = Responses(y.astype(np.float32), _sites(["17"] * 8 + ["37"] * 8), _ids(n))
    score = LinearPredictivityMetric().score(acts, resp)
    area = score.details["area"]
    assert area["best_layer"] == ["l1", "l3"] and area["best_layer_agreement"] == [1.0, 1.0]
    r_theory = np.sqrt(1.0 / (1.0 + sigma2))  # 0.894: correlation of the noiseless map with the data
    # finite-sample fitting costs ~ sigma2 * p / n_train of prediction variance (~0.004 in r)
    assert area["r"] == pytest.approx([r_theory, r_theory], abs=0.02)
    assert score.value == pytest.approx(r_theory, abs=0.02)
    curve = score.details["layer_area"]
    others = [r for lay, a, r in zip(curve["layer"], curve["area"], curve["r"])
              if (a == "17" and lay != "l1") or (a == "37" and lay != "l3")]
    assert max(abs(r) for r in others) < 0.1


def test_no_peeking_with_pure_noise_targets():
    rng = np.random.default_rng(11)
    n, n_layers, n_areas = 120, 12, 20
    layers = {f"l{i}": rng.standard_normal((n, 8)).astype(np.float32) for i in range(n_layers)}
    areas = [f"a{k}" for k in range(n_areas) for _ in range(3)]
    resp = Responses(rng.standard_normal((n, len(areas))).astype(np.float32), _sites(areas), _ids(n),
                     area_order=tuple(f"a{k}" for k in range(n_areas)))
    score = LinearPredictivityMetric().score(Activations(layers, _ids(n)), resp, seed=0)
    curve = collections.defaultdict(list)
    for a, r in zip(score.details["layer_area"]["area"], score.details["layer_area"]["r"]):
        curve[a].append(r)
    peeking = np.mean([max(v) for v in curve.values()])  # best layer chosen on the test folds
    assert abs(score.value) < 0.06
    assert peeking > score.value + 0.08  # what choosing on held-out data would have reported


def test_pixels_is_a_baseline_unless_included():
    """A pixels layer that predicts area 17 best does not win the layer choice by default; its held-out score is
    reported as the baseline (per area: its layer_area curve value; headline: mean over the hierarchy's areas)."""
    rng = np.random.default_rng(13)
    n = 90
    layers = {"pixels": rng.standard_normal((n, 10)), "conv": rng.standard_normal((n, 10)),
              "fc": rng.standard_normal((n, 10))}
    y = np.concatenate([layers["pixels"][:, :4] @ rng.standard_normal((4, 4)),
                        layers["fc"][:, :4] @ rng.standard_normal((4, 4))], axis=1)
    y += 0.5 * rng.standard_normal(y.shape)
    acts = Activations({k: v.astype(np.float32) for k, v in layers.items()}, _ids(n))
    resp = Responses(y.astype(np.float32), _sites(["17"] * 4 + ["20"] * 4), _ids(n), area_order=("17", "20"))
    metric = LinearPredictivityMetric(n_splits=5)
    score = metric.score(acts, resp, seed=0)
    assert metric.parameters()["include_pixels"] is False
    assert score.summary["candidate_layers"] == ["conv", "fc"] and score.summary["include_pixels"] is False
    assert "pixels" not in score.details["fold_area"]["layer"]
    assert score.summary["best_layer"]["17"] in ("conv", "fc") and score.summary["best_layer"]["20"] == "fc"
    curve = {(lay, a): r for lay, a, r in zip(*(score.details["layer_area"][k] for k in ("layer", "area", "r")))}
    baseline = score.summary["baseline"]["pixels"]
    assert baseline["per_area"] == {"17": curve["pixels", "17"], "20": curve["pixels", "20"]}
    assert baseline["value"] == pytest.approx((curve["pixels", "17"] + curve["pixels", "20"]) / 2, rel=1e-12)
    assert score.details["area"]["pixels_r"] == [curve["pixels", "17"], curve["pixels", "20"]]
    r17 = score.details["area"]["r"][0]
    assert curve["pixels", "17"] > 0.7 and r17 < 0.3  # the network is not credited with its input
    included = LinearPredictivityMetric(n_splits=5, include_pixels=True).score(acts, resp, seed=0)
    assert included.summary["best_layer"]["17"] == "pixels"
    assert included.details["area"]["r"][0] == pytest.approx(curve["pixels", "17"], rel=1e-12)
    assert included.summary["baseline"] == score.summary["baseline"]  # reported either way
    assert included.value > score.value + 0.2


# -- contract ----------------------------------------------------------------------------------
def test_deterministic_inputs_untouched_and_aligned():
    acts, resp, _ = _random_case(n=60, seed=3, with_reps=True)
    before = ({k: v.copy() for k, v in acts.items()}, resp.data.copy(), resp.repetitions.copy())
    metric = LinearPredictivityMetric(n_splits=5, alpha_selection="inner-cv", inner_splits=3)
    a = metric.score(acts, resp, seed=7)
    b = metric.score(acts, resp, seed=7)
    assert a.value == b.value and a.details == b.details
    for k, v in acts.items():
        np.testing.assert_array_equal(v, before[0][k])
    np.testing.assert_array_equal(resp.data, before[1])
    np.testing.assert_array_equal(resp.repetitions, before[2])
    # activations in another stimulus order are re-aligned (labels follow them)
    perm = np.random.default_rng(0).permutation(60)
    shuffled = Activations({k: v[perm] for k, v in acts.items()}, tuple(np.array(acts.stimulus_ids)[perm]),
                           {"labels": np.asarray(acts.info["labels"])[perm]})
    c = metric.score(shuffled, resp, seed=7)
    assert c.value == pytest.approx(a.value, rel=1e-9)
    assert set(a.details) == {"layer_area", "layer_site", "area", "fold_area"}
    json.dumps([a.details, a.summary, metric.parameters()], allow_nan=False)
    assert len(a.details["layer_site"]["r"]) == len(acts) * resp.n_sites


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"regression": "ridgee"}, "Did you mean 'ridge'"),
    ({"alpha_selection": "loo"}, "alpha_selection"),
    ({"n_splits": 1}, "n_splits"),
    ({"alphas": [1.0, -2.0]}, "alphas"),
    ({"pls_components": 0}, "pls_components"),
    ({"standardize": "yes"}, "standardize"),
    ({"include_pixels": 1}, "include_pixels"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LinearPredictivityMetric(**kwargs)


def test_parameters_roundtrip_and_bad_data():
    params = LinearPredictivityMetric().parameters()
    assert params["n_splits"] == 10 and params["regression"] == "ridge" and len(params["alphas"]) == 19
    assert LinearPredictivityMetric(**params).parameters() == params
    acts, resp, _ = _random_case(n=30)
    with pytest.raises(DataError, match="responses"):
        LinearPredictivityMetric().score(acts, BrainRDMs({"IT": np.zeros((1, 30, 30))}, resp.stimulus_ids, ("IT",)))
    bad = Activations({"x": np.full((30, 3), np.nan, np.float32)}, resp.stimulus_ids)
    with pytest.raises(DataError, match="'x' has NaN"):
        LinearPredictivityMetric(n_splits=3).score(bad, resp)
    with pytest.raises(DataError, match="at most 30"):
        LinearPredictivityMetric(n_splits=31).score(acts, resp)


def test_pearson_columns_matches_scipy_and_flags_constants():
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((2, 15, 4))
    a[:, 3] = 2.0
    r = pearson_columns(a, b)
    for j in range(3):
        assert r[j] == pytest.approx(stats.pearsonr(a[:, j], b[:, j])[0], rel=1e-12)
    assert np.isnan(r[3])


def _tiny(n: int = 24):
    rng = np.random.default_rng(3)
    ids = tuple(f"im{i}" for i in range(n))
    x = rng.normal(size=(n, 8)).astype(np.float32)
    sites = SiteTable(tuple(f"p/e{i}" for i in range(4)), ("p",) * 4, ("17", "18", "19", "20"))
    data = (x[:, :4] + 0.3 * rng.normal(size=(n, 4))).astype(np.float32)
    return Activations({"pixels": x, "conv": x}, ids), Responses(data, sites, ids)


def test_pixels_alone_is_not_scored_as_the_model():
    acts, resp = _tiny()
    only = Activations({"pixels": acts["pixels"]}, acts.stimulus_ids)
    with pytest.raises(ConfigError, match="no model layer left to score: the only layer given is 'pixels'.*"
                                          "linear-predictivity.include_pixels=true"):
        LinearPredictivityMetric(n_splits=3).score(only, resp)
    included = LinearPredictivityMetric(n_splits=3, include_pixels=True).score(only, resp)
    assert set(included.summary["best_layer"].values()) == {"pixels"}


def test_constant_side_is_named():
    acts, resp = _tiny()
    zero = Activations({"conv": np.zeros_like(acts["conv"])}, acts.stimulus_ids)
    with pytest.raises(DataError, match=r"every layer of the model .*\(the model side is constant.*weights"):
        LinearPredictivityMetric(n_splits=3).score(zero, resp)
    flat = Responses(np.full_like(resp.data, 2.0), resp.sites, resp.stimulus_ids)
    with pytest.raises(DataError, match=r"every site has a constant response .*\(the brain side.*check the signal"):
        LinearPredictivityMetric(n_splits=3).score(acts, flat)
