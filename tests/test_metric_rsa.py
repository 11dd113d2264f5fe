"""RSAMetric on responses and on precomputed RDMs (with noise ceilings).

Every definition is pinned against an independent computation: SciPy's ``pdist`` /
``spearmanr`` / ``pearsonr`` in plain loops over sites, subjects, folds and layers,
scikit-learn's ``KFold`` for the stimulus folds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import pdist, squareform
from sklearn.model_selection import KFold

from framework.contracts import MetricPlugin
from framework.errors import ConfigError, DataError
from framework.numerics.rsa import site_layer_correlations, subset_pairs
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


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(scipy.stats.spearmanr(x, y).statistic)


def _site_r(data: np.ndarray, feats: np.ndarray, rows: np.ndarray, distance: str = "euclidean") -> float:
    """Spearman r of one site's |r_i - r_j| with a layer's RDM, over the stimuli ``rows``."""
    return _spearman(pdist(data[rows, None].astype(np.float64)), pdist(feats[rows].astype(np.float64), distance))


def test_contract() -> None:
    m = RSAMetric()
    assert isinstance(m, MetricPlugin) and m.accepts == {"responses", "rdms"} and m.higher_is_better
    assert m.headline and "\n" not in m.headline
    params = m.parameters()
    assert params["distance"] == "auto" and params["n_permutations"] == 0
    assert params["ceiling"] == "nili" and params["selection"] == "heldout" and params["include_pixels"] is False
    json.dumps(params)


def test_site_and_area_correlations_match_scipy(setup) -> None:
    acts, resp = setup
    data_before = resp.data.copy()
    layer_before = acts["a"].copy()
    score = RSAMetric(comparison="spearman", selection="optimistic").score(acts, resp)
    t = score.details["layer_site"]
    all_rows = np.arange(N)
    want = np.array([[_site_r(resp.data[:, s], acts[layer], all_rows) for layer in acts.layers]
                     for s in range(resp.n_sites)])
    np.testing.assert_allclose(np.array(t["r"]).reshape(6, 3), want, atol=1e-12)
    # the headline averages the sites of the ordered areas (17, 19, 20), not the 'n/a' site
    mean = want[:5].mean(axis=0)
    assert score.value == pytest.approx(mean.max(), abs=1e-12)
    assert score.summary["best_layer"] == "b" == acts.layers[int(np.argmax(mean))]
    assert score.summary["headline_areas"] == ["17", "19", "20"] and score.summary["n_sites_used"] == 5
    other = score.summary["other_sites"]
    assert other["areas"] == ["n/a"] and other["n_sites"] == 1
    assert other["at_headline_layer"] == pytest.approx(want[5, 1], abs=1e-12)
    assert other["optimistic"] == pytest.approx(want[5].max(), abs=1e-12)
    assert t["headline"][:3] == [True] * 3 and t["headline"][-1] is False
    assert score.summary["distance"] == "euclidean" and "Kuzovkin" in score.summary["distance_source"]
    area = score.details["layer_area"]
    assert area["area"][:3] == ["17", "17", "17"] and area["area"][-1] == "n/a"
    a19 = resp.data[:, 2:4].astype(np.float64)
    k = area["area"].index("19") + 2
    assert area["r"][k] == pytest.approx(_spearman(pdist(a19), pdist(acts["c"].astype(np.float64))), abs=1e-12)
    np.testing.assert_array_equal(resp.data, data_before)          # inputs untouched
    np.testing.assert_array_equal(acts["a"], layer_before)
    json.dumps(score.details), json.dumps(score.summary)


def test_heldout_stimuli_selection_matches_brute_force(setup) -> None:
    acts, resp = setup
    score = RSAMetric(n_splits=2).score(acts, resp, seed=5)
    folds = KFold(n_splits=2, shuffle=True, random_state=5).split(np.zeros((N, 1)))
    headline_sites = range(5)
    held, chosen = [], []
    for train, test in folds:
        train, test = np.sort(train), np.sort(test)
        tr = [np.mean([_site_r(resp.data[:, s], acts[layer], train) for s in headline_sites])
              for layer in acts.layers]
        k = int(np.argmax(tr))
        chosen.append(acts.layers[k])
        held.append(np.mean([_site_r(resp.data[:, s], acts[acts.layers[k]], test) for s in headline_sites]))
    assert score.details["heldout_folds"]["chosen_layer"] == chosen
    np.testing.assert_allclose(score.details["heldout_folds"]["test_score"], held, atol=1e-12)
    assert score.value == pytest.approx(np.mean(held), abs=1e-12)
    assert score.summary["heldout"] == pytest.approx(np.mean(held), abs=1e-12)
    assert score.summary["selection"] == "heldout" and score.summary["stratified"] is False
    assert score.summary["optimistic"] == pytest.approx(RSAMetric(selection="optimistic").score(acts, resp).value)
    assert "optimistic" in score.summary["optimistic_note"] or "same data" in score.summary["optimistic_note"]


def test_subset_pairs_and_site_layer_correlations() -> None:
    rng = np.random.default_rng(9)
    x, data = rng.normal(size=(12, 4)), rng.normal(size=(12, 3))
    keep = np.array([0, 3, 4, 7, 11])
    full = pdist(x)
    np.testing.assert_array_equal(full[subset_pairs(12, keep)], pdist(x[keep]))
    r = site_layer_correlations(data, full[:, None], "pearson", stimuli=keep)
    for s in range(3):
        want = scipy.stats.pearsonr(pdist(data[keep, s:s + 1]), pdist(x[keep])).statistic
        assert r[s, 0] == pytest.approx(want, abs=1e-12)


def test_pixels_is_a_baseline_not_a_layer_choice() -> None:
    rng = np.random.default_rng(4)
    ids = tuple(f"im{i}" for i in range(30))
    pixels = rng.normal(size=(30, 1)).astype(np.float32)
    data = pixels + 0.3 * rng.normal(size=(30, 4))                 # sites follow the pixels most
    acts = Activations({"pixels": pixels, "conv": (pixels + rng.normal(size=(30, 1))).astype(np.float32),
                        "fc": rng.normal(size=(30, 5)).astype(np.float32)}, ids)
    resp = Responses(data.astype(np.float32), SiteTable(tuple(f"s/{i}" for i in range(4)), ("s",) * 4, ("17",) * 4),
                     ids)
    for selection in ("heldout", "optimistic"):
        score = RSAMetric(selection=selection).score(acts, resp)
        assert score.summary["candidate_layers"] == ["conv", "fc"]
        assert score.summary["best_layer"] == "conv"
        assert score.summary["pixels_baseline"] > score.value        # the model does not beat its input
    opt = RSAMetric(selection="optimistic").score(acts, resp)
    mean_pix = np.mean([_site_r(data[:, s], pixels, np.arange(30)) for s in range(4)])
    assert opt.summary["pixels_baseline"] == pytest.approx(mean_pix, abs=1e-12)
    inc = RSAMetric(selection="optimistic", include_pixels=True).score(acts, resp)
    assert inc.summary["best_layer"] == "pixels" and inc.value == pytest.approx(mean_pix, abs=1e-12)


def test_stimulus_order_of_activations_is_followed(setup) -> None:
    acts, resp = setup
    perm = np.random.default_rng(1).permutation(N)
    shuffled = Activations({k: acts[k][perm] for k in acts.layers}, tuple(np.array(acts.stimulus_ids)[perm]))
    a = RSAMetric(distance="correlation").score(acts, resp)
    b = RSAMetric(distance="correlation").score(shuffled, resp)
    np.testing.assert_allclose(a.details["layer_site"]["r"], b.details["layer_site"]["r"], atol=1e-12)
    assert a.value == pytest.approx(b.value, abs=1e-12)


def test_permutations_and_determinism(setup) -> None:
    acts, resp = setup
    m = RSAMetric(n_permutations=300, alpha=0.01)
    s1, s2 = m.score(acts, resp, seed=4), m.score(acts, resp, seed=4)
    assert s1.details == s2.details and s1.value == s2.value
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
    with pytest.raises(ConfigError, match="squares Spearman"):
        RSAMetric(ceiling="algonauts2019", comparison="pearson")
    with pytest.raises(ConfigError, match="'selection' of metric 'rsa'"):
        RSAMetric(selection="best")
    with pytest.raises(ConfigError, match="n_splits"):
        RSAMetric(n_splits=1)


def test_missing_stimuli_rejected(setup) -> None:
    acts, resp = setup
    fewer = Activations({k: acts[k][:-1] for k in acts.layers}, acts.stimulus_ids[:-1])
    with pytest.raises(DataError, match="have no activations"):
        RSAMetric().score(fewer, resp)


# ------------------------------------------------------------------------------- RDM targets
def _random_rdms(rng: np.random.Generator, n_subj: int, n: int, shared: np.ndarray | None = None,
                 distance: str = "correlation") -> np.ndarray:
    shared = rng.normal(size=(n, 6)) if shared is None else shared
    return np.stack([squareform(pdist(shared + rng.normal(size=shared.shape), distance)) for _ in range(n_subj)])


def _rank_mean(v: np.ndarray) -> np.ndarray:
    return np.mean([scipy.stats.rankdata(x) for x in v], axis=0)


def _brute_area(v: np.ndarray, model: dict[str, np.ndarray], candidates: list[str], square: bool) -> dict:
    """Everything the metric reports for one area, by loops: v (n_subjects, n_pairs), model layer -> RDM."""
    n = v.shape[0]
    r = {layer: np.array([_spearman(v[s], rdm) for s in range(n)]) for layer, rdm in model.items()}
    score = {layer: x ** 2 if square else x for layer, x in r.items()}
    mean = {layer: x.mean() for layer, x in score.items()}
    best = max(candidates, key=lambda layer: r[layer].mean())          # chosen on the signed r
    held, chosen = [], []
    for s in range(n):
        others = [o for o in range(n) if o != s]
        pick = max(candidates, key=lambda layer: np.mean(r[layer][others]))
        chosen.append(pick)
        held.append(score[pick][s])
    nili_up = np.mean([_spearman(v[s], _rank_mean(v)) for s in range(n)])
    nili_lo = np.mean([_spearman(v[s], _rank_mean(np.delete(v, s, axis=0))) for s in range(n)])
    alg_up = np.mean([_spearman(v[s], v.mean(axis=0)) ** 2 for s in range(n)])
    alg_lo = np.mean([_spearman(v[s], np.delete(v, s, axis=0).mean(axis=0)) ** 2 for s in range(n)])
    return {"optimistic": mean[best], "optimistic_layer": best, "heldout": np.mean(held), "chosen": chosen,
            "nili": (nili_lo, nili_up), "algonauts2019": (alg_lo, alg_up), "mean": mean}


@pytest.fixture
def rdm_setup():
    rng = np.random.default_rng(3)
    ids = tuple(f"im{i}" for i in range(14))
    shared = rng.normal(size=(14, 6))
    acts = Activations({"pixels": (shared + 0.3 * rng.normal(size=(14, 6))).astype(np.float32),
                        "a": rng.normal(size=(14, 8)).astype(np.float32),
                        "b": (shared + rng.normal(size=(14, 6))).astype(np.float32),
                        "c": rng.normal(size=(14, 8)).astype(np.float32)}, ids)
    target = BrainRDMs({"IT": _random_rdms(rng, 5, 14, shared), "EVC": _random_rdms(rng, 4, 14, shared)}, ids,
                       ("EVC", "IT"), distance="correlation")
    return acts, target


@pytest.mark.parametrize("convention", ["nili", "algonauts2019"])
@pytest.mark.parametrize("selection", ["heldout", "optimistic"])
def test_rdm_scores_and_ceilings_match_brute_force(rdm_setup, convention, selection) -> None:
    acts, target = rdm_setup
    before = {a: r.copy() for a, r in target.rdms.items()}
    score = RSAMetric(ceiling=convention, selection=selection).score(acts, target)
    iu, ju = np.triu_indices(14, 1)
    model = {layer: pdist(acts[layer].astype(np.float64), "correlation") for layer in acts.layers}  # dataset's distance
    at = score.details["area"]
    assert at["area"] == ["EVC", "IT"]
    want_values, want_uppers = [], []
    for area in ("EVC", "IT"):
        v = target.rdms[area][:, iu, ju]
        want = _brute_area(v, model, ["a", "b", "c"], square=convention == "algonauts2019")
        k = at["area"].index(area)
        assert at["optimistic"][k] == pytest.approx(want["optimistic"], abs=1e-12)
        assert at["optimistic_layer"][k] == want["optimistic_layer"]
        assert at["heldout"][k] == pytest.approx(want["heldout"], abs=1e-12)
        rows = [i for i, a in enumerate(score.details["heldout_folds"]["area"]) if a == area]
        assert [score.details["heldout_folds"]["chosen_layer"][i] for i in rows] == want["chosen"]
        for conv in ("nili", "algonauts2019"):
            assert at[f"{conv}_lower"][k] == pytest.approx(want[conv][0], abs=1e-12)
            assert at[f"{conv}_upper"][k] == pytest.approx(want[conv][1], abs=1e-12)
        lo, up = want[convention]
        assert at["noise_ceiling_lower"][k] == pytest.approx(lo, abs=1e-12)
        assert at["noise_ceiling_upper"][k] == pytest.approx(up, abs=1e-12)
        value = want["heldout"] if selection == "heldout" else want["optimistic"]
        assert at["score"][k] == pytest.approx(value, abs=1e-12)
        assert at["percent_of_ceiling"][k] == pytest.approx(100 * value / up, abs=1e-9)
        assert at["pixels_baseline"][k] == pytest.approx(want["mean"]["pixels"], abs=1e-12)
        # per-subject ceiling values are stored; their means are the ceilings
        cs = score.details["ceiling_subject"]
        sub = [i for i, a in enumerate(cs["area"]) if a == area]
        assert len(sub) == v.shape[0]
        assert np.mean([cs[f"{convention}_upper"][i] for i in sub]) == pytest.approx(up, abs=1e-12)
        want_values.append(value)
        want_uppers.append(up)
    assert score.value == pytest.approx(np.mean(want_values), abs=1e-12)
    assert score.ceiling == pytest.approx(np.mean(want_uppers), abs=1e-12)
    summary = score.summary
    assert summary["ceiling_convention"] == convention and summary["selection"] == selection
    assert summary["distance"] == "correlation" and summary["brain_distance"] == "correlation"
    assert summary["headline_percent_of_ceiling"] == pytest.approx(100 * score.value / score.ceiling, abs=1e-9)
    assert summary["pixels_baseline"]["IT"] == pytest.approx(at["pixels_baseline"][1], abs=1e-12)
    assert set(summary["noise_ceilings"]) == {"nili", "algonauts2019"}
    for a, r in target.rdms.items():
        np.testing.assert_array_equal(r, before[a])
    json.dumps(score.details), json.dumps(score.summary)


def test_anti_correlated_layer_never_wins_under_squared_convention() -> None:
    rng = np.random.default_rng(8)
    ids = tuple(f"im{i}" for i in range(16))
    anti, pos = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    acts = Activations({"anti": anti.astype(np.float32), "pos": pos.astype(np.float32)}, ids)
    subjects = np.stack([squareform(10 - pdist(anti) + 0.5 * pdist(pos) + 0.3 * rng.random(120)) for _ in range(5)])
    for k in range(5):
        np.fill_diagonal(subjects[k], 0.0)
    target = BrainRDMs({"IT": subjects}, ids, ("IT",), distance="euclidean")
    for convention in ("nili", "algonauts2019"):
        score = RSAMetric(ceiling=convention).score(acts, target)
        assert score.summary["best_layer"] == {"IT": "pos"} and score.summary["optimistic_layer"] == {"IT": "pos"}
    rows = RSAMetric(ceiling="algonauts2019").score(acts, target).details["layer_area"]
    assert rows["r_mean"][0] < -0.5 and rows["score_mean"][0] > rows["score_mean"][1]   # r^2 would pick 'anti'


def test_model_rdms_use_the_dataset_distance_unless_overridden(rdm_setup) -> None:
    acts, target = rdm_setup
    iu, ju = np.triu_indices(14, 1)
    v = target.rdms["IT"][:, iu, ju]
    for distance, param in (("correlation", "auto"), ("euclidean", "euclidean"), ("cosine", "cosine")):
        score = RSAMetric(distance=param, selection="optimistic").score(acts, target)
        assert score.summary["distance"] == distance
        assert score.summary["distance_source"].startswith("auto" if param == "auto" else "parameter")
        rows = [i for i, a in enumerate(score.details["layer_area"]["area"]) if a == "IT"]
        want = [np.mean([_spearman(v[s], pdist(acts[layer].astype(np.float64), distance)) for s in range(5)])
                for layer in acts.layers]
        np.testing.assert_allclose([score.details["layer_area"]["r_mean"][i] for i in rows], want, atol=1e-12)
    euclid = BrainRDMs(target.rdms, target.stimulus_ids, target.area_order, distance="euclidean")
    assert RSAMetric().score(acts, euclid).summary["distance"] == "euclidean"
    odd = BrainRDMs(target.rdms, target.stimulus_ids, target.area_order, distance="crossnobis")
    with pytest.raises(DataError, match="distance 'crossnobis'.*rsa.distance"):
        RSAMetric().score(acts, odd)
    assert RSAMetric(distance="correlation").score(acts, odd).summary["brain_distance"] == "crossnobis"


def test_single_subject_area_has_no_ceiling(rdm_setup) -> None:
    acts, target = rdm_setup
    one = BrainRDMs({"IT": target.rdms["IT"], "mIT": target.rdms["IT"][:1]}, target.stimulus_ids, ("IT", "mIT"),
                    headline_areas=("IT",))
    score = RSAMetric().score(acts, one)
    at = score.details["area"]
    k = at["area"].index("mIT")
    assert np.isnan(at["noise_ceiling_upper"][k]) and np.isnan(at["noise_ceiling_lower"][k])
    assert np.isnan(at["nili_upper"][k]) and np.isnan(at["algonauts2019_upper"][k])
    assert "at least two subjects" in at["ceiling_note"][k] and "mIT" in score.summary["ceiling_note"]
    assert np.isnan(at["heldout"][k]) and "no held-out subject" in at["heldout_note"][k]
    assert np.isfinite(at["optimistic"][k])
    assert score.value == pytest.approx(at["heldout"][at["area"].index("IT")], abs=1e-12)   # headline: IT only
    # as the headline: no held-out score (an error saying what to do), and no ceiling when optimistic
    alone = BrainRDMs({"mIT": target.rdms["IT"][:1]}, target.stimulus_ids, ("mIT",))
    with pytest.raises(DataError, match="no held-out score.*mIT.*selection='optimistic'"):
        RSAMetric().score(acts, alone)
    opt = RSAMetric(selection="optimistic").score(acts, alone)
    assert opt.ceiling is None and np.isfinite(opt.value)


def test_mixed_species_are_not_averaged(rdm_setup) -> None:
    acts, target = rdm_setup
    rdms = {"hIT": target.rdms["IT"], "mIT": target.rdms["EVC"]}
    species = {"hIT": "human", "mIT": "monkey"}
    kinds = {"hIT": "fMRI", "mIT": "electrophysiology"}
    mixed = BrainRDMs(rdms, target.stimulus_ids, ("hIT", "mIT"), area_species=species, area_kinds=kinds)
    with pytest.raises(DataError, match="different species or kinds.*human fMRI: hIT; monkey electrophysiology: mIT"
                                        ".*headline_areas"):
        RSAMetric().score(acts, mixed)
    declared = BrainRDMs(rdms, target.stimulus_ids, ("hIT", "mIT"), headline_areas=("hIT",), area_species=species,
                         area_kinds=kinds)
    score = RSAMetric().score(acts, declared)
    at = score.details["area"]
    assert score.value == pytest.approx(at["heldout"][0], abs=1e-12) and at["headline"] == [True, False]
    assert score.ceiling == pytest.approx(at["noise_ceiling_upper"][0], abs=1e-12)
    assert score.summary["headline_areas"] == ["hIT"]
    assert score.summary["group_scores"] == {"human fMRI": pytest.approx(at["heldout"][0]),
                                             "monkey electrophysiology": pytest.approx(at["heldout"][1])}
    assert at["species"] == ["human", "monkey"] and at["kind"] == ["fMRI", "electrophysiology"]
    # one species and kind (or none declared): every area is the headline
    same = BrainRDMs(rdms, target.stimulus_ids, ("hIT", "mIT"), area_species={"hIT": "human", "mIT": "human"})
    with pytest.raises(DataError, match="different species"):     # kinds: one declared, one unspecified
        RSAMetric().score(acts, BrainRDMs(rdms, target.stimulus_ids, ("hIT", "mIT"), area_kinds={"hIT": "fMRI"}))
    assert RSAMetric().score(acts, same).summary["headline_areas"] == ["hIT", "mIT"]


def test_brain_rdms_permutations(rdm_setup) -> None:
    acts, target = rdm_setup
    score = RSAMetric(n_permutations=200, selection="optimistic").score(acts, target)
    assert all(0 < p <= 1 for p in score.details["layer_area"]["p"])
    assert len(score.details["area"]["p"]) == 2


# ------------------------------------------------------------------------------- peeking
def test_heldout_layer_score_is_unbiased_on_noise_while_the_max_is_not() -> None:
    """Pure-noise targets: no layer relates to the brain. The max over layers is biased upwards; the
    score of a layer committed on other data is not (mean ~ 0 over seeds).

    Responses: held-out stimuli. RDMs: held-out subjects, whose RDMs here share nothing (with a
    shared stimulus structure, leaving subjects out does not protect against chance correlations
    of the layers with that structure on these stimuli; held-out stimuli would)."""
    n_seeds, n_stim, n_layers = 40, 24, 10
    held_resp, opt_resp, held_rdm, opt_rdm = [], [], [], []
    ids = tuple(f"im{i}" for i in range(n_stim))
    for seed in range(n_seeds):
        rng = np.random.default_rng(100 + seed)
        acts = Activations({f"l{k}": rng.normal(size=(n_stim, 6)).astype(np.float32) for k in range(n_layers)}, ids)
        resp = Responses(rng.normal(size=(n_stim, 8)).astype(np.float32),
                         SiteTable(tuple(f"s/{j}" for j in range(8)), ("s",) * 8, ("17",) * 8), ids)
        s = RSAMetric().score(acts, resp, seed=seed)
        held_resp.append(s.summary["heldout"])
        opt_resp.append(s.summary["optimistic"])
        noise = _random_rdms(rng, 6, n_stim, shared=np.zeros((n_stim, 6)), distance="euclidean")  # no shared part
        rdms = BrainRDMs({"IT": noise}, ids, ("IT",), distance="euclidean")
        s = RSAMetric().score(acts, rdms, seed=seed)
        held_rdm.append(s.summary["heldout"]["IT"])
        opt_rdm.append(s.summary["optimistic"]["IT"])
    for held, opt in ((held_resp, opt_resp), (held_rdm, opt_rdm)):
        held, opt = np.asarray(held), np.asarray(opt)
        se_held = held.std(ddof=1) / np.sqrt(n_seeds)
        se_opt = opt.std(ddof=1) / np.sqrt(n_seeds)
        assert abs(held.mean()) < 3 * se_held, (held.mean(), se_held)       # unbiased
        assert opt.mean() > 5 * se_opt, (opt.mean(), se_opt)                 # peeking inflates the max


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
    score = RSAMetric().score(acts, target)
    t = score.details["layer_area"]
    assert np.isfinite(t["r_mean"]).all() and np.isfinite(t["r_sem"]).all()
    a = score.details["area"]
    print("\nAlgonauts 92 images, tf_efficientnet_lite0, correlation-distance RDMs, Spearman:")
    for i, area in enumerate(a["area"]):
        rows = [k for k, x in enumerate(t["area"]) if x == area]
        print(f"  {area}: " + ", ".join(f"{t['layer'][k]}={t['r_mean'][k]:.4f}" for k in rows)
              + f" | lower={a['noise_ceiling_lower'][i]:.4f} upper={a['noise_ceiling_upper'][i]:.4f}")
    assert score.summary["distance"] == "correlation"
    for i in range(2):
        assert 0.0 < a["noise_ceiling_lower"][i] < a["noise_ceiling_upper"][i] < 0.6
        assert a["heldout"][i] <= a["optimistic"][i] + 1e-12 and a["optimistic"][i] < a["noise_ceiling_upper"][i]
    assert np.isfinite(score.value) and score.ceiling == pytest.approx(np.mean(a["noise_ceiling_upper"]))


# ------------------------------------------------------------------------------------------
# which side is constant; pixels alone is not a model layer
# ------------------------------------------------------------------------------------------
def test_constant_model_side_is_named_not_the_signal(setup, caplog) -> None:
    acts, resp = setup
    zero = Activations({k: np.zeros_like(acts[k]) for k in acts.layers}, acts.stimulus_ids)
    with pytest.raises(DataError) as info:
        RSAMetric().score(zero, resp)
    msg = str(info.value)
    assert "every layer of the model" in msg and "model side" in msg and "weights" in msg
    assert "check the signal" not in msg and "\n" not in msg
    # one constant layer: the others are still scored (it used to disqualify every site)
    one = Activations({"a": np.zeros_like(acts["a"]), "b": acts["b"], "c": acts["c"]}, acts.stimulus_ids)
    with caplog.at_level("WARNING", logger="framework.metrics.rsa"):
        score = RSAMetric().score(one, resp)
    assert np.isfinite(score.value) and score.summary["best_layer"] in ("b", "c")
    assert any("'a'" in r.getMessage() and "model side" in r.getMessage() for r in caplog.records)


def test_constant_brain_side_is_named(setup) -> None:
    acts, resp = setup
    flat = Responses(np.ones_like(resp.data), resp.sites, resp.stimulus_ids)
    with pytest.raises(DataError, match=r"every site has a constant response .*\(the brain side.*check the signal"):
        RSAMetric().score(acts, flat)


def test_pixels_alone_is_not_scored_as_the_model(setup) -> None:
    acts, resp = setup
    only = Activations({"pixels": acts["a"]}, acts.stimulus_ids)
    with pytest.raises(ConfigError) as info:
        RSAMetric().score(only, resp)
    assert str(info.value) == ("rsa: no model layer left to score: the only layer given is 'pixels', the baseline "
                               "(include_pixels=false); add model layers to --layers or set --metric-param "
                               "rsa.include_pixels=true.")
    assert RSAMetric(include_pixels=True).score(only, resp).summary["best_layer"] == "pixels"
