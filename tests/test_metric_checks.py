"""Plan-time checks of metric parameters against a dataset (``MetricPlugin.check``).

* a setting the dataset cannot give (more folds than stimuli, held-out folds too small) is
  one ConfigError line naming the parameter and the fix ``--metric-param NAME.n_splits=K``;
* the edge is accepted, and whatever the check accepts the metric can score (tiny datasets);
* :func:`framework.scheduler.plan_run` raises before any work (no signal, no extraction);
* a setting the dataset makes merely undefined (rsa's ceiling with one subject) is no error.
"""
from __future__ import annotations

import numpy as np
import pytest

import fake_plugins
from framework.config import RunConfig
from framework.errors import ConfigError, FrameworkError
from framework.types import Activations, BrainRDMs, Dataset, Responses, SiteTable, StimulusSet, digest_of
from plugins.metrics.alignment import AlignmentMetric
from plugins.metrics.cka import CKAMetric
from plugins.metrics.linear_predictivity import LinearPredictivityMetric
from plugins.metrics.rsa import RSAMetric

AREAS = ("17", "17", "18", "19", "37", "20")


def _data(n: int, *, labels: bool = False, seed: int = 0) -> tuple[Dataset, Activations]:
    """A responses dataset of ``n`` stimuli x 6 sites and two model layers related to it."""
    rng = np.random.default_rng(seed)
    ids = tuple(f"s{i:02d}" for i in range(n))
    lab = tuple("abc"[i % 3] for i in range(n)) if labels else None
    stimuli = StimulusSet(ids, images=rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), labels=lab)
    conv = rng.normal(size=(n, 12))
    data = conv[:, :6] + 0.5 * rng.normal(size=(n, 6))
    sites = SiteTable(tuple(f"p1/e{j}" for j in range(6)), ("p1",) * 6, AREAS)
    responses = Responses(data.astype(np.float32), sites, ids)
    acts = Activations({"pixels": rng.normal(size=(n, 48)).astype(np.float32), "conv": conv.astype(np.float32),
                        "fc": rng.normal(size=(n, 5)).astype(np.float32)}, ids)
    if labels:
        acts.info["labels"] = list(lab)
    return Dataset(f"tiny{n}", stimuli, digest_of("tiny", n), responses=responses), acts


def _one_line(exc: BaseException, *parts: str) -> str:
    msg = str(exc)
    assert type(exc) is ConfigError and "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in: {msg}"
    return msg


# ------------------------------------------------------------------------------------------
# the check refuses impossible settings, one line with the fix
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric,n,parts", [
    (LinearPredictivityMetric(), 9, ["n_splits=10", "10 folds need at least 10 stimuli", "9 stimuli",
                                     "--metric-param linear-predictivity.n_splits=K with K from 2 to 3"]),
    (LinearPredictivityMetric(n_splits=4), 10, ["held-out folds of 2 stimuli", "K from 2 to 3"]),
    (LinearPredictivityMetric(n_splits=2), 7, ["7 stimuli, too few", "at least 8 stimuli"]),
    (LinearPredictivityMetric(), 6, ["6 stimuli, too few", "at least 8 stimuli"]),
    (LinearPredictivityMetric(n_splits=2, regression="pls", inner_splits=6), 10,
     ["inner_splits=6", "smallest training fold (5", "--metric-param linear-predictivity.inner_splits=K"]),
    (LinearPredictivityMetric(n_splits=3, alpha_selection="inner-cv", inner_splits=7), 9,
     ["inner_splits=7", "inner_splits=K with K from 2 to 6"]),
    (CKAMetric(n_splits=3), 11, ["n_splits=3", "held-out folds of 3 stimuli", "--metric-param cka.n_splits=K",
                                 "K from 2 to 2"]),
    (CKAMetric(n_splits=20), 12, ["n_splits=20", "K from 2 to 3"]),
    (CKAMetric(), 7, ["7 stimuli", "at least 8"]),
    (RSAMetric(n_splits=20), 12, ["n_splits=20", "20 folds need at least 20 stimuli",
                                  "--metric-param rsa.n_splits=K with K from 2 to 4"]),
    (RSAMetric(n_splits=5), 12, ["held-out folds of 2 stimuli", "K from 2 to 4"]),
    (RSAMetric(), 5, ["5 stimuli", "at least 6"]),
    (RSAMetric(n_splits=6, selection="optimistic"), 9, ["n_splits=6", "held-out folds of 1 stimuli", "K from 2 to 3"]),
], ids=lambda v: getattr(v, "name", None) if hasattr(v, "score") else None)
def test_check_refuses_what_the_dataset_cannot_give(metric, n, parts):
    dataset, _ = _data(n)
    with pytest.raises(ConfigError) as info:
        metric.check(dataset)
    _one_line(info.value, f"'{dataset.name}'", *parts)


# ------------------------------------------------------------------------------------------
# the edge is accepted, and accepted settings score
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", [LinearPredictivityMetric(n_splits=4), LinearPredictivityMetric(n_splits=2),
                                    CKAMetric(n_splits=3), RSAMetric(n_splits=4)], ids=lambda m: m.name)
def test_the_edge_is_accepted(metric):
    metric.check(_data(12)[0])


def _settings():
    out = []
    for n in range(4, 14):
        for k in range(2, n + 2):
            out += [(LinearPredictivityMetric, n, {"n_splits": k}),
                    (LinearPredictivityMetric, n, {"n_splits": k, "regression": "pls", "pls_components": 2,
                                                   "inner_splits": 3}),
                    (CKAMetric, n, {"n_splits": k}),
                    (RSAMetric, n, {"n_splits": k}),
                    (RSAMetric, n, {"n_splits": k, "selection": "optimistic"})]
    return out


@pytest.mark.parametrize("labels", [False, True])
def test_accepted_settings_score_on_tiny_datasets(labels):
    """check accepting => score works (a finite headline), for every fold count on 4..13 stimuli."""
    accepted = 0
    for cls, n, params in _settings():
        metric = cls(**params)
        dataset, acts = _data(n, labels=labels, seed=n)
        try:
            metric.check(dataset)
        except ConfigError:
            continue
        accepted += 1
        score = metric.score(acts, dataset.responses, seed=3)
        assert np.isfinite(score.value), (cls.name, n, params, score.summary)
    assert accepted > 50


def test_rsa_rdms_with_one_subject():
    """RDM datasets: one subject has no ceiling (reported, not an error); a held-out headline over it cannot
    be scored, so the default selection is refused at plan time with the fix, and the optimistic one passes."""
    n = 6
    ids = tuple(f"s{i}" for i in range(n))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    rdm = np.abs(x[:, None, 0] - x[None, :, 0])
    target = BrainRDMs({"IT": rdm[None]}, ids, ("IT",), distance="euclidean")
    dataset = Dataset("rdm1", StimulusSet(ids), "d", rdms=target)
    with pytest.raises(ConfigError, match=r"headline area\(s\) IT have one subject.*rsa.selection='optimistic'"):
        RSAMetric().check(dataset)
    RSAMetric(selection="optimistic").check(dataset)
    RSAMetric(selection="optimistic", n_splits=50).check(dataset)   # n_splits is for responses only
    score = RSAMetric(selection="optimistic").score(Activations({"a": x.astype(np.float32)}, ids), target)
    assert np.isfinite(score.value) and score.ceiling is None


def test_rsa_rdms_with_a_distance_layers_cannot_use_is_refused_at_plan_time():
    n = 6
    ids = tuple(f"s{i}" for i in range(n))
    rdm = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(float)
    target = BrainRDMs({"IT": np.stack([rdm, rdm + 1 - np.eye(n)])}, ids, ("IT",), distance="crossnobis")
    dataset = Dataset("rdm2", StimulusSet(ids), "d", rdms=target)
    with pytest.raises(FrameworkError, match=r"distance 'crossnobis'.*--metric-param rsa.distance="):
        RSAMetric().check(dataset)
    RSAMetric(distance="euclidean").check(dataset)


def test_alignment_has_nothing_to_check():
    AlignmentMetric().check(_data(5)[0])


# ------------------------------------------------------------------------------------------
# plan_run refuses before any work
# ------------------------------------------------------------------------------------------
@pytest.fixture
def registry():
    from framework.registry import get_plugin_manager, load_registry

    return load_registry(get_plugin_manager(entry_points=False, builtins=True, extra_plugins=[fake_plugins]))


@pytest.mark.parametrize("metric,params,parts", [
    ("linear-predictivity", {"n_splits": 13}, ["n_splits=13", "12 stimuli",
                             "linear-predictivity.n_splits=K with K from 2 to 4"]),
    ("cka", {"n_splits": 4}, ["n_splits=4", "cka.n_splits=K with K from 2 to 3"]),
    ("rsa", {"n_splits": 13}, ["n_splits=13", "rsa.n_splits=K with K from 2 to 4"]),
])
def test_plan_run_refuses_before_any_work(tmp_path, registry, monkeypatch, metric, params, parts):
    from framework.scheduler import plan_run

    def no_work(*a, **k):
        raise AssertionError("work started before the plan-time check")

    monkeypatch.setattr(fake_plugins.FakeSignal, "compute", no_work)
    monkeypatch.setattr(fake_plugins.FakeModel, "extract", no_work)
    config = RunConfig(dataset="fake-responses", models=["fake-net"], signals=["resp"], metrics=[metric],
                       metric_params={metric: params} if params else {}, store=tmp_path / "store", progress=False)
    with pytest.raises(ConfigError) as info:
        plan_run(config, registry)
    _one_line(info.value, "'fake-responses'", *parts)
    assert not (tmp_path / "store").exists()
    fixed = {**params, "n_splits": 3}
    ok = RunConfig(dataset="fake-responses", models=["fake-net"], signals=["resp"], metrics=[metric],
                   metric_params={metric: fixed}, store=tmp_path / "store", progress=False)
    assert len(plan_run(ok, registry).cells) == 1
