"""Reference models: precomputed features or RDMs from a file, scored through the real scheduler.

Features must score exactly like the model they came from; RDMs must give the RSA values of an
independent SciPy computation, be refused clearly by metrics that need features, and the
stimuli of a file must match the dataset's or fail with one message naming the file and the fix.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.io
import scipy.stats
from scipy.spatial.distance import pdist, squareform

import fake_plugins
from conftest import ROOT
from framework import scheduler
from framework.config import RunConfig
from framework.errors import ConfigError, DataError
from framework.leaderboard import weights_text
from framework.registry import get_plugin_manager, load_registry
from framework.store import ResultsStore
from plugins.models.reference import ReferenceModel

#: Mean over the 4 human-IT subjects (sessions averaged) of Spearman r between the monkey-IT RDM and
#: the subject's RDM, Kriegeskorte et al. 2008, from scipy.stats.spearmanr on the .mat files.
MONKEY_VS_HUMAN_IT = 0.2963244469957095


@pytest.fixture
def registry():
    """Built-ins (the reference:* family among them) plus the fake plugins."""
    return load_registry(get_plugin_manager(entry_points=False, extra_plugins=[fake_plugins]))


def _run(registry, tmp_path, models, metrics, *, model_params=None, metric_params=None, dataset="fake-responses",
         signals=("all",)):
    """Run the scheduler; returns ``{(model, signal, metric): row}``."""
    config = RunConfig(dataset=str(dataset), models=list(models), signals=list(signals), metrics=list(metrics),
                       model_params=model_params or {}, metric_params=metric_params or {},
                       store=tmp_path / "store", progress=False)
    scheduler.run(config, registry=registry)
    with ResultsStore(tmp_path / "store") as store:
        return {(r["model"], r["signal"], r["metric"]): r for r in store.rows()}


def _fake_features() -> dict[str, np.ndarray]:
    """The fake-net's layers over the fake stimuli (seed 0, what the scheduler extracts), float32."""
    model = fake_plugins.FakeModel(name="fake-net", seed=0)
    (batch,) = model.extract(fake_plugins.fake_stimuli(), model.layers(), batch_size=1000)
    return batch


def _responses() -> np.ndarray:
    return fake_plugins.FakeDataset().load().responses.data


# -- features --------------------------------------------------------------------------------------
def test_features_reference_scores_exactly_like_the_model(registry, tmp_path):
    feats = _fake_features()
    ids = np.array(fake_plugins.fake_stimuli().ids)
    perm = np.random.default_rng(3).permutation(len(ids))       # rows stored in another order, with their ids
    path = tmp_path / "fake-net-features.npz"
    np.savez(path, stimulus_ids=ids[perm], **{k: v[perm] for k, v in feats.items()})
    rows = _run(registry, tmp_path, ["fake-net", "reference:feat"], ["rsa", "fake-corr"], signals=["resp", "resp-neg"],
                model_params={"reference:feat": {"file": str(path)}})
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows.values()), rows
    for signal in ("resp", "resp-neg"):
        for metric in ("rsa", "fake-corr"):
            ref, net = rows["reference:feat", signal, metric], rows["fake-net", signal, metric]
            assert ref["value"] == pytest.approx(net["value"], abs=1e-12)
            assert ref["details"] == net["details"]
    row = rows["reference:feat", "resp", "rsa"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["weights_source"] == "reference" and row["provenance"]["model"]["weights_digest"] == digest
    assert weights_text(row["weights_source"], row["weights_label"]) == \
        f"reference fake-net-features.npz (sha256 {digest[:12]})"


# -- RDMs ------------------------------------------------------------------------------------------
def _spearman_sites(ref: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Spearman r between a condensed reference RDM and every site's |r_i - r_j| RDM, (n_sites,)."""
    return np.array([scipy.stats.spearmanr(ref, pdist(data[:, [j]]))[0] for j in range(data.shape[1])])


def _site_r(row: dict) -> np.ndarray:
    table = row["details"]["layer_site"]
    return np.array(table["r"])


def test_rdm_reference_gives_scipy_rsa_and_refuses_what_an_rdm_cannot_give(registry, tmp_path):
    ids = fake_plugins.fake_stimuli().ids
    x = np.random.default_rng(7).standard_normal((len(ids), 20)).astype(np.float32).astype(np.float64)
    corr, euc = pdist(x, "correlation"), pdist(x, "euclidean")
    order = np.arange(len(ids))[::-1]                                # condensed, rows in reverse with their ids
    np.savez(tmp_path / "corr.npz", stimulus_ids=np.array(ids)[order], rdm=squareform(squareform(corr)[np.ix_(
        order, order)], checks=False))
    np.savez(tmp_path / "euc.npz", rdm=squareform(euc))               # square, in the dataset's order, no ids
    np.savez(tmp_path / "x.npz", stimulus_ids=np.array(ids), x=x.astype(np.float32))
    params = {"reference:corr": {"file": str(tmp_path / "corr.npz"), "holds": "rdm", "distance": "correlation"},
              "reference:euc": {"file": str(tmp_path / "euc.npz"), "holds": "rdm", "distance": "euclidean",
                                "stimuli": "dataset-order"}}
    rows = _run(registry, tmp_path, ["reference:corr", "reference:euc"], ["rsa", "fake-corr"], signals=["resp"],
                model_params=params, metric_params={"rsa": {"distance": "correlation"}})
    data = _responses()
    np.testing.assert_allclose(_site_r(rows["reference:corr", "resp", "rsa"]), _spearman_sites(corr, data),
                               rtol=0, atol=1e-10)
    # an RDM made with another distance is refused, per cell, never re-made
    bad = rows["reference:euc", "resp", "rsa"]
    assert bad["status"] == "error" and "layer 'rdm' as an RDM of euclidean distance" in bad["error"]
    assert "rsa.distance='euclidean'" in bad["error"]
    # a metric that needs features fails on each cell, saying so
    for model in ("reference:corr", "reference:euc"):
        err = rows[model, "resp", "fake-corr"]
        assert err["status"] == "error" and err["error"].startswith(f"metric 'fake-corr' failed on {model} × resp:")
        assert "needs features" in err["error"] and f"reference model '{model}'" in err["error"]
        assert "provides RDMs only" in err["error"]
    # Euclidean RDMs: rsa (auto: Euclidean on responses) as given, and CKA from the exact -1/2 J D^2 J
    rows = _run(registry, tmp_path / "2", ["reference:euc", "reference:x"], ["rsa", "cka"], signals=["resp"],
                model_params={"reference:euc": params["reference:euc"], "reference:x": {"file": str(tmp_path /
                                                                                                  "x.npz")}})
    np.testing.assert_allclose(_site_r(rows["reference:euc", "resp", "rsa"]), _spearman_sites(euc, data),
                               rtol=0, atol=1e-10)
    cka_rdm, cka_x = rows["reference:euc", "resp", "cka"], rows["reference:x", "resp", "cka"]
    assert cka_rdm["status"] == cka_x["status"] == "ok"
    np.testing.assert_allclose(cka_rdm["details"]["layer_area"]["cka"], cka_x["details"]["layer_area"]["cka"],
                               rtol=0, atol=1e-10)


def test_monkey_it_as_a_model_of_human_it(registry, tmp_path, shared_dir):
    data = shared_dir / "data" / "kriegeskorte2008"
    if not (data / "Kriegeskorte_Neuron2008_supplementalData.mat").is_file():
        pytest.skip(f"Kriegeskorte et al. 2008 data not found in {data}")
    mat = data / "Kriegeskorte_Neuron2008_supplementalData.mat"
    params = {"reference:monkey-it": {"file": str(mat), "holds": "rdm", "distance": "correlation",
                                      "arrays": {"mIT": "RDMs_mIT_hIT_fig1[0].RDM"}, "stimuli": "dataset-order"}}
    rows = _run(registry, tmp_path, ["reference:monkey-it"], ["rsa"], model_params=params,
                dataset=ROOT / "datasets" / "kriegeskorte2008-92.toml")
    (row,) = rows.values()
    assert row["status"] == "ok", row["error"]
    # independent: Spearman of the condensed monkey RDM with each subject's (sessions averaged)
    fig1 = scipy.io.loadmat(mat, squeeze_me=True, struct_as_record=False)["RDMs_mIT_hIT_fig1"]
    raw = scipy.io.loadmat(data / "92_brainRDMs.mat")["RDMs"]
    human = [np.mean([np.asarray(raw[0, s, k]["RDM"], np.float64) for k in range(2)], axis=0) for s in range(4)]
    expected = np.mean([scipy.stats.spearmanr(fig1[0].RDM, squareform(h, checks=False))[0] for h in human])
    assert row["value"] == pytest.approx(expected, abs=1e-10)
    assert row["value"] == pytest.approx(MONKEY_VS_HUMAN_IT, abs=1e-12)
    table = row["details"]["layer_area"]
    assert table["r_mean"][table["area"].index("mIT")] == pytest.approx(1.0, abs=1e-12)  # the monkey RDM itself
    assert row["weights_source"] == "reference" and "Kriegeskorte_Neuron2008_supplementalData.mat" in \
        row["weights_label"]


# -- stimuli that do not match, and bad declarations ------------------------------------------------
def test_stimulus_mismatch_is_one_clear_error(registry, tmp_path):
    feats = _fake_features()
    ids = np.array(fake_plugins.fake_stimuli().ids)
    np.savez(tmp_path / "short.npz", stimulus_ids=ids[:-1], means=feats["means"][:-1])
    np.savez(tmp_path / "noids.npz", means=feats["means"][:-2])
    np.savez(tmp_path / "cond.npz", rdm=pdist(feats["proj"]))       # an RDM declared as features (the default)
    params = {"reference:short": {"file": str(tmp_path / "short.npz")},
              "reference:noids": {"file": str(tmp_path / "noids.npz")},
              "reference:count": {"file": str(tmp_path / "noids.npz"), "stimuli": "dataset-order"},
              "reference:cond": {"file": str(tmp_path / "cond.npz"), "stimuli": "dataset-order"}}
    rows = _run(registry, tmp_path, list(params), ["fake-corr"], signals=["resp"], model_params=params)
    errors = {model: rows[model, "resp", "fake-corr"]["error"] for model in params}
    assert f"'{tmp_path / 'short.npz'}' lacks 1 of the dataset's 12 stimuli (first: 'img11')" in errors[
        "reference:short"]
    assert "has no stimulus ids under 'stimulus_ids'" in errors["reference:noids"]
    assert "stimuli='dataset-order'" in errors["reference:noids"]
    assert "has 10 stimuli in layer 'means', the dataset 12" in errors["reference:count"]
    assert "has 66 stimuli in layer 'rdm', the dataset 12" in errors["reference:cond"]
    assert "looks like a condensed RDM: set holds='rdm'" in errors["reference:cond"]
    for model, error in errors.items():   # the model's cells fail, naming its file
        assert error.startswith(f"model '{model}' failed: Reference file '{params[model]['file']}'"), error


def test_bad_declarations_fail_before_any_work(registry, tmp_path):
    np.savez(tmp_path / "r.npz", rdm=squareform(pdist(np.eye(5))))
    with pytest.raises(DataError, match=r"Reference file 'nowhere\.npz' of model 'reference:nowhere\.npz' does "
                                        r"not exist; .* --model-param reference:nowhere\.npz\.file=PATH"):
        _run(registry, tmp_path, ["reference:nowhere.npz"], ["rsa"])
    with pytest.raises(ConfigError, match=r"holds='rdm' needs the distance the RDMs were made with"):
        ReferenceModel(name="reference:r", file=str(tmp_path / "r.npz"), holds="rdm")
    square = ReferenceModel(name="reference:r", file=str(tmp_path / "r.npz"))    # holds defaults to features
    with pytest.raises(DataError, match=r"looks like an RDM, not features; set holds='rdm'"):
        square.layer_shapes()
    with pytest.raises(DataError, match=r"has no array 'rdn'\. Did you mean 'rdm'"):
        ReferenceModel(name="reference:r", file=str(tmp_path / "r.npz"), holds="rdm", distance="euclidean",
                       arrays=["rdn"]).layer_shapes()
    (tmp_path / "r.txt").write_text("0 1\n1 0\n")
    with pytest.raises(DataError, match=r"has suffix '\.txt'; expected one of \.npz, \.npy, \.mat"):
        ReferenceModel(name="reference:r", file=str(tmp_path / "r.txt"))


def test_activations_serve_precomputed_rdms_exactly():
    """The RDM route of Activations: rows selected like features, exact conversions only, the exact centred
    Gram matrix of a Euclidean RDM (double centring), and no other statistic."""
    from framework.numerics.gram import gram
    from framework.types import Activations, PrecomputedRDMs

    x = np.random.default_rng(1).standard_normal((6, 4))
    ids = tuple(f"s{i}" for i in range(6))
    rdms = PrecomputedRDMs({"x": squareform(pdist(x)), "flat": np.zeros((6, 6))}, "euclidean", "reference model 'r'")
    acts = Activations({}, ids, {}, rdms=rdms)
    assert acts.layers == ("x", "flat") and not acts.has_features("x") and acts.finite("x")
    rows = np.array([4, 0, 2])
    view = acts.select(rows, tuple(ids[i] for i in rows), {})
    np.testing.assert_array_equal(view.precomputed_rdm("x", "euclidean"), squareform(pdist(x[rows])))
    np.testing.assert_allclose(view.precomputed_rdm("x", "sqeuclidean"), squareform(pdist(x[rows], "sqeuclidean")),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(acts.gram("x", center=True)[0], gram(x, center=True)[0], rtol=0, atol=1e-12)
    assert acts.constant_layers() == ["flat"] and view.constant_layers() == ["flat"]
    for call, what in ((lambda: acts.gram("x", center=False), "the Gram matrix X X\\^T"),
                       (lambda: acts.fold_grams("x", [np.arange(3)], standardize=True), "cross-validation fold"),
                       (lambda: acts["x"], "its raw features"), (lambda: acts.n_features("x"), "number of features"),
                       (lambda: acts.precomputed_rdm("x", "correlation"), "cannot be converted")):
        with pytest.raises(DataError, match=what):
            call()


def test_npy_and_mat_files(tmp_path):
    """A .npy file is one layer named after the file; a .mat file's variables are layers, its cell array of
    strings the stimulus ids."""
    from framework.types import StimulusSet

    stimuli = StimulusSet(("a", "b", "c", "d"))
    x = np.arange(12, dtype=np.float32).reshape(4, 3) ** 2
    np.save(tmp_path / "v1.npy", x)
    npy = ReferenceModel(name="reference:v1", file=str(tmp_path / "v1.npy"), stimuli="dataset-order")
    assert npy.layers() == ["v1"] and npy.layer_shapes() == {"v1": (3,)}
    (batch,) = npy.extract(stimuli, ["v1"], batch_size=10)
    np.testing.assert_array_equal(batch["v1"], x)
    ids = np.array(["d", "c", "b", "a"], dtype=object)
    scipy.io.savemat(tmp_path / "f.mat", {"stimulus_ids": ids, "conv": x[::-1], "fc": x[::-1, :1]})
    mat = ReferenceModel(name="reference:f", file=str(tmp_path / "f.mat"))
    assert mat.layers() == ["conv", "fc"]
    first, second = mat.extract(stimuli, ["conv", "fc"], batch_size=2)
    np.testing.assert_array_equal(np.vstack([first["conv"], second["conv"]]), x)
    np.testing.assert_array_equal(np.vstack([first["fc"], second["fc"]]), x[:, :1])
