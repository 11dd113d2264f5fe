"""docs/plugins.md: every worked example is extracted, registered and run for real.

Each ```python block of the page starts with a marker comment: ``# example: KIND, saved as
MODULE.py`` (a complete plugin module, run here) or ``# snippet`` (a fragment, only compiled). The
examples are written to ``MODULE.py`` in a temporary folder, made importable and registered through
``$FRAMEWORK_PLUGINS`` exactly as the page tells a reader to, then driven through
``framework.cli.main`` in-process: listed with their parameters, run end to end on the shrunken demo
dataset (or the example dataset), and given bad parameters. The example metric is checked against a
brute-force SciPy computation and the example signal against MNE's own baseline correction.

Blocks introduced by ``<!-- checked: framework ARGS -->`` show the output of that command; every line
of such a block must appear verbatim in what the command prints now (stdout, or the one error line on
stderr).
"""
from __future__ import annotations

import csv
import importlib
import logging
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from framework.cli import main

DOC = ROOT / "docs" / "plugins.md"
KINDS = ("model", "signal", "metric", "dataset")
EXAMPLE_MARKER = re.compile(r"^# example: (?P<kind>\w+), saved as (?P<module>\w+)\.py$")
SNIPPET_MARKER = "# snippet"
SMALL_DEMO = ["--dataset-param", "demo.n_images_per_category=4"]


def _doc_text() -> str:
    if not DOC.is_file():
        pytest.fail(f"{DOC} does not exist")
    return DOC.read_text(encoding="utf-8")


def _fenced(text: str, language: str) -> list[tuple[int, str]]:
    """``(line number, body)`` of every fenced block of ``language``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(rf"^```{language}\n(.*?)^```\s*$", text, flags=re.S | re.M)]


def _examples() -> dict[str, tuple[str, str]]:
    """kind -> (module name, source) of every example block."""
    out: dict[str, tuple[str, str]] = {}
    for _, body in _fenced(_doc_text(), "python"):
        m = EXAMPLE_MARKER.match(body.splitlines()[0]) if body.strip() else None
        if m:
            out[m["kind"]] = (m["module"], body)
    return out


def _checked_blocks() -> list[tuple[int, list[str], list[str]]]:
    """``(line number, command argv, expected lines)`` of every ``<!-- checked: ... -->`` text block."""
    text = _doc_text()
    pattern = re.compile(r"^<!-- checked: framework (.*?) -->\n```text\n(.*?)^```\s*$", flags=re.S | re.M)
    return [(text.count("\n", 0, m.start()) + 1, shlex.split(m.group(1)),
             [ln for ln in m.group(2).splitlines() if ln.strip()]) for m in pattern.finditer(text)]


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    """The examples written as the modules the page names; their imports are forgotten afterwards."""
    folder = tmp_path_factory.mktemp("doc_examples")
    examples = _examples()
    for module, source in examples.values():
        (folder / f"{module}.py").write_text(source, encoding="utf-8")
    yield folder
    for module, _ in examples.values():
        sys.modules.pop(module, None)


def _module_of(kind: str) -> str:
    examples = _examples()
    if kind not in examples:
        pytest.fail(f"docs/plugins.md has no '# example: {kind}, saved as MODULE.py' block")
    return examples[kind][0]


@pytest.fixture
def example(example_dir, monkeypatch):
    """``example("metric")``: the example module, imported from the folder the examples were written to."""
    monkeypatch.syspath_prepend(str(example_dir))
    return lambda kind: importlib.import_module(_module_of(kind))


@pytest.fixture
def register(example_dir, monkeypatch):
    """``register("model", "metric")``: those examples importable and named in $FRAMEWORK_PLUGINS."""
    monkeypatch.syspath_prepend(str(example_dir))

    def _register(*kinds: str) -> None:
        monkeypatch.setenv("FRAMEWORK_PLUGINS", ",".join(_module_of(k) for k in kinds))

    return _register


@pytest.fixture(autouse=True)
def _restore_framework_logger():
    """``main`` points the "framework" logger at the captured stderr; give other tests back the original."""
    logger = logging.getLogger("framework")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One results store for the end-to-end runs: they share its signal and activation caches."""
    return tmp_path_factory.mktemp("doc_store") / "results"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(store: Path, **match: str) -> list[dict[str, str]]:
    with open(store / "leaderboard.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if all(r[k] == v for k, v in match.items())]


def _store_rows(store: Path, **match: str) -> list[dict]:
    from framework.store import ResultsStore

    with ResultsStore(store) as s:
        return [r for r in s.rows(status="ok") if all(r[k] == v for k, v in match.items())]


def _assert_finite_rows(rows: list[dict[str, str]], n: int) -> None:
    assert len(rows) == n, rows
    for r in rows:
        assert r["value"] not in ("", None) and math.isfinite(float(r["value"])), r


# --------------------------------------------------------------------------------------
# the page itself
# --------------------------------------------------------------------------------------
def test_every_python_block_is_marked_and_compiles():
    blocks = _fenced(_doc_text(), "python")
    assert blocks, "docs/plugins.md has no python blocks"
    kinds = []
    for line, body in blocks:
        first = body.splitlines()[0] if body.strip() else ""
        m = EXAMPLE_MARKER.match(first)
        assert m or first == SNIPPET_MARKER, (
            f"docs/plugins.md line {line}: a python block must start with '# example: KIND, saved as MODULE.py' "
            f"or '# snippet', got {first!r}")
        if m:
            kinds.append(m["kind"])
        compile(body, f"docs/plugins.md:{line}", "exec")
    assert sorted(kinds) == sorted(KINDS), f"expected one example of each kind {KINDS}, got {kinds}"


def test_each_example_registers_itself_with_a_hook(register):
    from framework.registry import get_plugin_manager, load_registry

    for kind in KINDS:
        register(kind)
        module, _ = _examples()[kind]
        registry = load_registry(get_plugin_manager())
        mine = [s for k in KINDS for s in registry.specs(k) if s.source == module]
        assert len(mine) == 1 and mine[0].kind == kind, (kind, mine)
        assert mine[0].description and mine[0].parameter_class() is not None, f"{kind}: no description or Params"


def test_checked_output_blocks_match_the_framework(register, tmp_path, monkeypatch, capsys):
    register(*KINDS)
    monkeypatch.chdir(tmp_path)            # a run command must not write ./results anywhere else
    blocks = _checked_blocks()
    assert len(blocks) >= 8, "docs/plugins.md lost its checked output blocks"
    for line, argv, expected in blocks:
        if argv[0] == "run":
            argv = [*argv, "--store", str(tmp_path / "store"), "--no-progress"]
        code, out, err = _run(capsys, *argv)
        if any(ln.startswith("framework: error:") for ln in expected):
            assert code == 2, (line, err)
            assert err.strip().splitlines() == expected, f"docs/plugins.md line {line}: {argv}\nnow: {err}"
        else:
            assert code == 0, (line, err)
            printed = out.splitlines()
            for ln in expected:
                assert ln in printed, f"docs/plugins.md line {line}: `framework {' '.join(argv)}` no longer " \
                                      f"prints\n{ln}\nit prints:\n{out}"


# --------------------------------------------------------------------------------------
# every example: listed with its parameters, bad values rejected with one line
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_listed_with_its_parameters(kind, register, capsys):
    from framework.params import describe_params
    from framework.registry import load_registry

    register(kind)
    module, _ = _examples()[kind]
    spec = next(s for s in load_registry().specs(kind) if s.source == module)
    code, out, err = _run(capsys, "list", f"{kind}s")
    assert code == 0, err
    lines = out.splitlines()
    assert f"  {spec.name}  {spec.description} [{module}]" in lines, out
    described = describe_params(spec.parameter_class())
    assert described, f"the {kind} example declares no parameters"
    for name, expected, default, help_text in described:
        assert f"      {name} = {default}  [{expected}]  {help_text}" in lines, (name, out)


BAD_PARAMETERS = {
    "model": ["--models", "gabornet", "--model-param", "gabornet.wavelength_px=2"],
    "signal": ["--models", "gabornet", "--signal-param", "evoked.baseline_correct=1"],
    "metric": ["--models", "gabornet", "--metrics", "area-rsa", "--metric-param", "area-rsa.comparison='kendall'"],
    "dataset": ["--models", "gabornet", "--dataset", "gratings", "--dataset-param", "gratings.n_repetitions=1"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_bad_parameter_is_one_line_exit_2(kind, register, tmp_path, capsys):
    register(*dict.fromkeys(("model", kind)))
    args = BAD_PARAMETERS[kind]
    plugin, _, rest = args[-1].partition(".")
    parameter = rest.partition("=")[0]
    code, out, err = _run(capsys, "run", *args, "--store", str(tmp_path / "store"), "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("framework: error: Invalid value"), lines[0]
    assert f"'{parameter}' of {kind} '{plugin}'" in lines[0] and "Fix:" in lines[0], lines[0]
    assert not (tmp_path / "store").exists(), "a rejected run must not create its store"


# --------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------
def test_model_example_scores_end_to_end(register, store, capsys):
    register("model")
    code, out, err = _run(capsys, "layers", "gabornet")
    assert code == 0, err
    assert "* complex  (8, 32, 32)" in out and "* logits   (10,)" in out, out
    code, out, err = _run(capsys, "run", "--models", "gabornet", "--weights", "random", "--signals",
                          "lowgamma@150-350", "--metrics", "rsa", *SMALL_DEMO, "--store", str(store),
                          "--no-progress", "-q")
    assert code == 0, err
    rows = _rows(store, model="gabornet", metric="rsa", signal="lowgamma@150-350")
    _assert_finite_rows(rows, 1)
    assert rows[0]["weights"] == "random init" and rows[0]["best_layer"], rows[0]
    (row,) = _store_rows(store, model="gabornet", metric="rsa", signal="lowgamma@150-350")
    assert row["provenance"]["model"]["layers"] == ["pixels", "simple", "complex", "conv2", "conv3", "logits"]
    assert row["provenance"]["model"]["preprocessing"]["crop"] == 64


def test_model_example_fixed_front_end_survives_random_init(example):
    """The Gabor bank is a buffer: the same under every seed; the learned stages differ."""
    model = example("model")
    import torch

    a = model.GaborNetPlugin(name="gabornet", weights="random", seed=0)
    b = model.GaborNetPlugin(name="gabornet", weights="random", seed=1)
    sa, sb = a._ready().state_dict(), b._ready().state_dict()
    assert torch.equal(sa["simple.weight"], sb["simple.weight"])
    assert not torch.equal(sa["conv2.0.weight"], sb["conv2.0.weight"])
    bank = model.gabor_bank(8, 6.0)
    assert bank.shape == (16, 3, 11, 11) and bank.dtype == np.float32
    np.testing.assert_allclose(bank.sum(axis=(1, 2, 3)), 0.0, atol=1e-5)       # zero mean: blind to uniform light
    np.testing.assert_allclose((bank.sum(axis=1) ** 2).sum(axis=(1, 2)), 1.0, rtol=1e-5)   # unit norm on luminance


def test_signal_example_scores_end_to_end(register, store, capsys):
    register("model", "signal")
    code, out, err = _run(capsys, "run", "--models", "gabornet", "--weights", "random", "--signals",
                          "evoked@100-300", "--metrics", "rsa", *SMALL_DEMO, "--store", str(store),
                          "--no-progress", "-q")
    assert code == 0, err
    _assert_finite_rows(_rows(store, model="gabornet", metric="rsa", signal="evoked@100-300"), 1)


def test_signal_example_equals_mne_baseline_and_crop(example):
    """Independent computation: MNE's apply_baseline, crop and event selection, averaged with numpy.

    The spans fall on samples of the demo's 512 Hz grid (1.953125 ms), where MNE's nearest-sample
    rounding and the example's inclusive span select the same samples.
    """
    from plugins.datasets.demo import DemoDataset

    signal = example("signal")
    dataset = DemoDataset(n_images_per_category=4).load()
    plugin = signal.EvokedAmplitude(window_ms=[125.0, 250.0], baseline_ms=[-250.0, 0.0])
    (name,) = plugin.names("epochs")
    assert name == "evoked@125-250"
    before = {s: load().get_data().copy() for s, load in dataset.epochs.items()}
    target = plugin.compute(dataset, [name])[name]
    assert target.data.dtype == np.float32 and target.data.shape == (len(dataset.stimuli), len(dataset.sites))
    assert target.sites.names == dataset.sites.names and target.stimulus_ids == dataset.stimuli.ids
    for subject, load in dataset.epochs.items():
        np.testing.assert_array_equal(load().get_data(), before[subject])          # the dataset is untouched
        epochs = load().apply_baseline((-0.25, 0.0), verbose="error").crop(0.125, 0.25, verbose="error")
        # the trials of each stimulus selected by MNE through its event name; mean over trials and samples, µV
        expected = np.stack([epochs[s].get_data().mean(axis=(0, 2)) * 1e6 for s in dataset.stimuli.ids])
        cols = [dataset.sites.names.index(f"{subject}/{c}") for c in epochs.ch_names]
        np.testing.assert_allclose(target.data[:, cols], expected, rtol=1e-5, atol=1e-4)
    no_baseline = signal.EvokedAmplitude(baseline_correct=False)
    assert no_baseline.parameters(name)["baseline_ms"] is None        # unused settings do not split the cache


def test_metric_example_scores_end_to_end(register, store, capsys):
    register("model", "metric")
    code, out, err = _run(capsys, "run", "--models", "gabornet", "--weights", "random", "--signals",
                          "lowgamma@150-350", "--metrics", "area-rsa", "--metric-param", "area-rsa.n_permutations=100",
                          *SMALL_DEMO, "--store", str(store), "--no-progress", "-q")
    assert code == 0, err
    _assert_finite_rows(_rows(store, model="gabornet", metric="area-rsa", signal="lowgamma@150-350"), 1)
    (row,) = _store_rows(store, model="gabornet", metric="area-rsa", signal="lowgamma@150-350")
    table = row["details"]["layer_area"]
    assert set(table["area"]) >= {"17", "18", "19", "37", "20"}
    assert all(0.0 < p <= 1.0 for p in table["p"]) and all(math.isfinite(r) for r in table["r"])
    assert "area-rsa" in (store / "leaderboard.html").read_text()


def test_metric_example_matches_brute_force_scipy(example):
    """Correlation-distance RDMs by scipy's pdist, Spearman by scipy, p-values by an explicit loop."""
    import scipy.stats
    from scipy.spatial.distance import pdist

    from framework.numerics.permutation import draw_permutations
    from framework.types import Activations, Responses, SiteTable

    metric = example("metric")
    rng = np.random.default_rng(1)
    n, n_perm, seed = 14, 199, 3
    ids = tuple(f"img{i:02d}" for i in range(n))
    latent = rng.standard_normal((n, 3))
    layers = {"shared": (latent @ rng.standard_normal((3, 30)) + rng.standard_normal((n, 30))).astype(np.float32),
              "noise": rng.standard_normal((n, 7)).astype(np.float32)}
    activations = Activations(layers, ids)
    areas = ("17",) * 4 + ("20",) * 5 + ("n/a",) * 2          # n/a has fewer than min_sites=3 sites: left out
    data = (latent @ rng.standard_normal((3, 11)) + 0.5 * rng.standard_normal((n, 11))).astype(np.float32)
    order = rng.permutation(n)                                # the target's stimulus order differs
    target = Responses(data[order], SiteTable(tuple(f"s/c{j}" for j in range(11)), ("s",) * 11, areas),
                       tuple(ids[i] for i in order), area_order=("17", "18", "20"))
    copies = (target.data.copy(), {k: v.copy() for k, v in layers.items()})

    score = metric.AreaRSA(n_permutations=n_perm).score(activations, target, seed=seed)

    table = score.details["layer_area"]
    assert table["area"] == ["17", "17", "20", "20"] and table["layer"] == ["shared", "noise"] * 2
    perms = draw_permutations(seed, n, n_perm)
    best = {}
    for area, layer, r, p in zip(table["area"], table["layer"], table["r"], table["p"]):
        layer_rdm = pdist(layers[layer][order].astype(np.float64), "correlation")
        area_resp = target.data[:, np.array(areas) == area].astype(np.float64)
        expected = scipy.stats.spearmanr(layer_rdm, pdist(area_resp, "correlation")).statistic
        assert r == pytest.approx(expected, abs=1e-12)
        null = np.array([scipy.stats.spearmanr(layer_rdm, pdist(area_resp[pi], "correlation")).statistic
                         for pi in perms])
        assert p == pytest.approx((1 + np.sum(null >= expected - 1e-9)) / (1 + n_perm), abs=1e-12)
        best[area] = max(best.get(area, -np.inf), expected)
    assert score.value == pytest.approx(np.mean([best["17"], best["20"]]), abs=1e-12)
    assert score.summary["best_layer"] == {"17": "shared", "20": "shared"}
    np.testing.assert_array_equal(target.data, copies[0])                      # inputs untouched
    for k, v in layers.items():
        np.testing.assert_array_equal(v, copies[1][k])


def test_metric_example_error_is_one_line(example):
    from framework.errors import DataError
    from framework.types import Activations, Responses, SiteTable

    metric = example("metric")
    ids = tuple(f"i{k}" for k in range(6))
    target = Responses(np.random.default_rng(0).random((6, 2), dtype=np.float32),
                       SiteTable(("s/a", "s/b"), ("s", "s"), ("17", "18")), ids)
    acts = Activations({"x": np.random.default_rng(1).random((6, 3), dtype=np.float32)}, ids)
    with pytest.raises(DataError, match=r"No area has 3 or more sites .*area-rsa.min_sites") as info:
        metric.AreaRSA().score(acts, target)
    assert "\n" not in str(info.value)


def test_dataset_example_plants_orientation_tuning(example):
    dataset_module = example("dataset")
    ds = dataset_module.GratingsDataset(noise=0.0).load()
    resp = ds.responses
    assert ds.kind == "responses" and resp.data.dtype == np.float32
    assert resp.data.shape == (8 * 3, 12) and resp.repetitions.shape == (4, 8 * 3, 12)
    assert ds.stimuli.images.shape == (24, 64, 64, 3) and ds.stimuli.images.dtype == np.uint8
    # noiseless: each site peaks at the grating orientation nearest its preferred one (period 180 deg)
    theta = np.repeat(np.arange(8) * np.pi / 8, 3)
    preferred = ds.truth["preferred_rad"]
    circ = np.abs(np.angle(np.exp(2j * (theta[:, None] - preferred[None]))))
    np.testing.assert_array_equal(theta[np.argmax(resp.data, axis=0)], theta[np.argmin(circ, axis=0)])
    other = dataset_module.GratingsDataset(noise=0.1).load()
    assert other.digest != ds.digest and dataset_module.GratingsDataset(noise=0.0).load().digest == ds.digest


def test_dataset_example_scores_end_to_end_with_the_other_examples(register, store, capsys):
    register(*KINDS)
    code, out, err = _run(capsys, "run", "--dataset", "gratings", "--models", "gabornet", "--weights", "random",
                          "--metrics", "area-rsa,linear-predictivity", "--metric-param",
                          "linear-predictivity.n_splits=8", "--store", str(store), "--no-progress", "-q")
    assert code == 0, err
    rows = _rows(store, dataset="gratings")
    _assert_finite_rows(rows, 2)
    lp = next(r for r in rows if r["metric"] == "linear-predictivity")
    assert lp["ceiling"] and 0.0 < float(lp["ceiling"]) <= 1.0             # the repetitions give a noise ceiling
    (row,) = _store_rows(store, dataset="gratings", metric="area-rsa")
    # what the page says: the V1 energy layer matches the simulated V1 cells best; phase-sensitive layers do not
    assert row["summary"]["best_layer"] == {"17": "complex"}
    r = dict(zip(row["details"]["layer_area"]["layer"], row["details"]["layer_area"]["r"]))
    assert r["pixels"] < 0 and r["simple"] < 0 < r["conv2"] < r["complex"], r


@pytest.mark.slow
def test_evoked_signal_is_a_negative_control_on_the_demo(register, tmp_path, capsys):
    """The page's claim: on the demo (induced gamma power, nothing phase-locked) the evoked amplitude has
    about as many p < 0.05 (area, layer) cells as chance gives, low-gamma power many more."""
    register(*KINDS)
    code, out, err = _run(capsys, "run", "--models", "gabornet", "--weights", "random", "--signals",
                          "lowgamma@150-350,evoked@100-300", "--metrics", "area-rsa", "--metric-param",
                          "area-rsa.n_permutations=1000", "--dataset-param", "demo.n_images_per_category=10",
                          "--store", str(tmp_path / "store"), "--no-progress", "-q")
    assert code == 0, err
    rows = {r["signal"]: r for r in _store_rows(tmp_path / "store", metric="area-rsa")}
    significant = {name: int(np.sum(np.array(row["details"]["layer_area"]["p"]) < 0.05))
                   for name, row in rows.items()}
    n_cells = len(rows["evoked@100-300"]["details"]["layer_area"]["p"])
    assert n_cells == 42 and significant["evoked@100-300"] <= 4, significant        # chance: 0.05 * 42 = 2.1
    assert significant["lowgamma@150-350"] >= 10, significant
    assert rows["lowgamma@150-350"]["value"] > rows["evoked@100-300"]["value"] + 0.1
