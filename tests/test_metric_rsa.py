"""RSAMetric on responses and on precomputed RDMs (with noise ceilings)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import pdist

from framework.contracts import MetricPlugin
from framework.errors import ConfigError, DataError
from framework.numerics.ceiling import noise_ceilings
from framework.types import Activations, BrainRDMs, Responses, SiteTable
from plugins.metrics.rsa import RSAMetric

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
N = 16


def _acts(rng: np.random.Generator, ids: tuple[str, ...]) -> Activations:
    return Activations({"a": rng.normal(size=(len(ids), 30)).astype(np.float32),
                        "b": rng.normal(size=(len(ids), 7)).astype(np.float32),
                        "c": rng.normal(size=(len(ids), 50)).astype(np.float32)}, ids)


def _responses(rng: np.random.Generator, acts: Activations) -> Responses:
    data = rng.normal(size=(N, 6))
    data[:, :3] += 2 * acts["b"][:, :3]       # three sites follow layer b
    sites = SiteTable(tuple(f"p1/e{i}" for i in range(6)), ("p1",) * 6, ("17", "17", "19", "19", "20", "n/a"))
    return Responses(data.astype(np.float32), sites, acts.stimulus_ids)


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    ids = tuple(f"im{i}" for i in range(N))
    acts = _acts(rng, ids)
    return acts, _responses(rng, acts)


def test_contract() -> None:
    m = RSAMetric()
    assert isinstance(m, MetricPlugin) and m.accepts == {"responses", "rdms"} and m.higher_is_better
    assert m.headline and "\n" not in m.headline
    assert m.parameters()["distance"] == "euclidean" and m.parameters()["n_permutations"] == 0
    json.dumps(m.parameters())


def test_site_and_area_correlations_match_scipy(setup) -> None:
    acts, resp = setup
    data_before = resp.data.copy()
    layer_before = acts["a"].copy()
    score = RSAMetric(comparison="spearman").score(acts, resp)
    t = score.details["layer_site"]
    want = np.array([[scipy.stats.spearmanr(pdist(resp.data[:, s:s + 1].astype(np.float64)),
                                            pdist(acts[layer].astype(np.float64))).statistic
                      for layer in acts.layers] for s in range(resp.n_sites)])
    np.testing.assert_allclose(np.array(t["r"]).reshape(6, 3), want, atol=1e-12)
    mean = want.mean(axis=0)
    assert score.value == pytest.approx(mean.max(), abs=1e-12)
    assert score.summary["best_layer"] == "b" == acts.layers[int(np.argmax(mean))]
    area = score.details["layer_area"]
    assert area["area"][:3] == ["17", "17", "17"] and area["area"][-1] == "n/a"
    a19 = resp.data[:, 2:4].astype(np.float64)
    k = area["area"].index("19") + 2
    assert area["r"][k] == pytest.approx(scipy.stats.spearmanr(pdist(a19), pdist(acts["c"].astype(np.float64)))
                                         .statistic, abs=1e-12)
    np.testing.assert_array_equal(resp.data, data_before)          # inputs untouched
    np.testing.assert_array_equal(acts["a"], layer_before)
    json.dumps(score.details), json.dumps(score.summary)


def test_stimulus_order_of_activations_is_followed(setup) -> None:
    acts, resp = setup
    perm = np.random.default_rng(1).permutation(N)
    shuffled = Activations({k: acts[k][perm] for k in acts.layers}, tuple(np.array(acts.stimulus_ids)[perm]))
    a = RSAMetric(distance="correlation").score(acts, resp)
    b = RSAMetric(distance="correlation").score(shuffled, resp)
    np.testing.assert_allclose(a.details["layer_site"]["r"], b.details["layer_site"]["r"], atol=1e-12)


def test_permutations_and_determinism(setup) -> None:
    acts, resp = setup
    m = RSAMetric(n_permutations=300, alpha=0.01)
    s1, s2 = m.score(acts, resp, seed=4), m.score(acts, resp, seed=4)
    assert s1.details == s2.details
    p = np.array(s1.details["layer_site"]["p"]).reshape(6, 3)
    assert (p[:3, 1] <= 0.01).all()                    # planted sites vs layer b
    assert s1.summary["n_significant"] >= 3
    assert "p" in s1.details["layer_area"]


def test_kendall_tau_a_responses(setup) -> None:
    acts, resp = setup
    s = RSAMetric(comparison="kendall-tau-a").score(acts, resp)
    x, y = pdist(resp.data[:, :1].astype(np.float64)), pdist(acts["b"].astype(np.float64))
    # no ties in continuous data: tau-a equals SciPy's tau-b
    assert s.details["layer_site"]["r"][1] == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ConfigError, match="'distance' of metric 'rsa'.*Did you mean 'correlation'"):
        RSAMetric(distance="corelation")
    with pytest.raises(ConfigError, match="'comparison' of metric 'rsa'"):
        RSAMetric(comparison="kendall")
    with pytest.raises(ConfigError, match="n_permutations"):
        RSAMetric(n_permutations=-1)
    with pytest.raises(ConfigError, match="alpha"):
        RSAMetric(alpha=0)
    with pytest.raises(ConfigError, match="no fast permutation test"):
        RSAMetric(comparison="kendall-tau-a", n_permutations=100)


def test_missing_stimuli_rejected(setup) -> None:
    acts, resp = setup
    fewer = Activations({k: acts[k][:-1] for k in acts.layers}, acts.stimulus_ids[:-1])
    with pytest.raises(DataError, match="have no activations"):
        RSAMetric().score(fewer, resp)


def _direct_ceilings(subj: np.ndarray) -> tuple[float, float]:
    iu, ju = np.triu_indices(subj.shape[1], 1)
    v = subj[:, iu, ju]
    n = v.shape[0]
    upper = np.mean([scipy.stats.spearmanr(v[s], v.mean(axis=0)).statistic for s in range(n)])
    lower = np.mean([scipy.stats.spearmanr(v[s], np.delete(v, s, axis=0).mean(axis=0)).statistic
                     for s in range(n)])
    return lower, upper


def _random_rdms(rng: np.random.Generator, n_subj: int, n: int) -> np.ndarray:
    shared = rng.normal(size=(n, 5))
    out = []
    for _ in range(n_subj):
        x = shared + rng.normal(size=(n, 5))
        out.append(scipy.spatial.distance.squareform(pdist(x)))
    return np.stack(out)


def test_noise_ceilings_match_direct_formula() -> None:
    rng = np.random.default_rng(2)
    stack = _random_rdms(rng, 6, 12)
    iu, ju = np.triu_indices(12, 1)
    lower, upper = noise_ceilings(stack[:, iu, ju], "spearman")
    want_lower, want_upper = _direct_ceilings(stack)
    assert lower == pytest.approx(want_lower, abs=1e-12) and upper == pytest.approx(want_upper, abs=1e-12)
    assert lower < upper


def test_brain_rdms_score() -> None:
    rng = np.random.default_rng(3)
    ids = tuple(f"im{i}" for i in range(12))
    acts = Activations({"a": rng.normal(size=(12, 8)).astype(np.float32),
                        "b": rng.normal(size=(12, 8)).astype(np.float32)}, ids)
    target = BrainRDMs({"IT": _random_rdms(rng, 5, 12), "EVC": _random_rdms(rng, 4, 12)}, ids, ("EVC", "IT"))
    score = RSAMetric(n_permutations=200).score(acts, target)
    iu, ju = np.triu_indices(12, 1)
    per_area = []
    for area in ("EVC", "IT"):
        v = target.rdms[area][:, iu, ju]
        r = np.array([[scipy.stats.spearmanr(v[s], pdist(acts[layer].astype(np.float64))).statistic
                       for layer in ("a", "b")] for s in range(v.shape[0])])
        per_area.append(r.mean(axis=0).max())
        k = score.details["area"]["area"].index(area)
        lo, up = _direct_ceilings(target.rdms[area])
        assert score.details["area"]["noise_ceiling_upper"][k] == pytest.approx(up, abs=1e-12)
        assert score.details["area"]["noise_ceiling_lower"][k] == pytest.approx(lo, abs=1e-12)
        sem = r.std(axis=0, ddof=1) / np.sqrt(v.shape[0])
        rows = [i for i, a in enumerate(score.details["layer_area"]["area"]) if a == area]
        np.testing.assert_allclose([score.details["layer_area"]["r_sem"][i] for i in rows], sem, atol=1e-12)
    assert score.details["area"]["area"] == ["EVC", "IT"]
    assert score.value == pytest.approx(np.mean(per_area), abs=1e-12)
    assert score.ceiling == pytest.approx(np.mean(score.details["area"]["noise_ceiling_upper"]), abs=1e-12)
    assert all(0 < p <= 1 for p in score.details["layer_area"]["p"])
    json.dumps(score.details)


# ------------------------------------------------------------------------------- real data
def _efficientnet_activations(image_dir: Path, weights: Path) -> Activations:
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    from PIL import Image

    model = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(weights))).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)
    paths = sorted(image_dir.glob("image_*.jpg"))
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    names = ["conv_stem", "blocks.1", "blocks.3", "blocks.5", "global_pool"]
    out: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(
        lambda _m, _i, o, n=n: out.__setitem__(n, o.flatten(1).numpy().astype(np.float32))) for n in names]
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return Activations({n: out[n] for n in names}, tuple(p.stem for p in paths))


@pytest.mark.slow
def test_algonauts_92_images_with_efficientnet() -> None:
    base = SHARED / "data" / "algonauts2019" / "92images"
    weights = SHARED / "weights" / "tf_efficientnet_lite0.safetensors"
    if not (base / "fmri_EVC_RDMs.npz").exists() or not weights.exists():
        pytest.skip("shared Algonauts data or weights absent")
    acts = _efficientnet_activations(base / "stimuli", weights)
    assert len(acts.stimulus_ids) == 92
    rdms = {area: np.load(base / f"fmri_{area}_RDMs.npz")["Net_RDM"].astype(np.float64) for area in ("EVC", "IT")}
    target = BrainRDMs(rdms, acts.stimulus_ids, ("EVC", "IT"), distance="correlation")
    score = RSAMetric(distance="correlation").score(acts, target)
    t = score.details["layer_area"]
    assert np.isfinite(t["r_mean"]).all() and np.isfinite(t["r_sem"]).all()
    a = score.details["area"]
    print("\nAlgonauts 92 images, tf_efficientnet_lite0, correlation-distance RDMs, Spearman:")
    for i, area in enumerate(a["area"]):
        rows = [k for k, x in enumerate(t["area"]) if x == area]
        print(f"  {area}: " + ", ".join(f"{t['layer'][k]}={t['r_mean'][k]:.4f}" for k in rows)
              + f" | lower={a['noise_ceiling_lower'][i]:.4f} upper={a['noise_ceiling_upper'][i]:.4f}")
    for i in range(2):
        assert 0.0 < a["noise_ceiling_lower"][i] < a["noise_ceiling_upper"][i] < 0.6
        assert a["r"][i] < a["noise_ceiling_upper"][i]
    assert np.isfinite(score.value) and score.ceiling == pytest.approx(np.mean(a["noise_ceiling_upper"]))
