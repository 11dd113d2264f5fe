"""Benchmarks as data, several datasets in one run, and the models × benchmarks leaderboard.

Scores are pinned against the cells they read (the same run's rows) and the aggregate rule is
checked by hand-computed means.
"""
from __future__ import annotations

import csv
import math

import pytest

from framework.benchmark_board import build_benchmark_board, render_benchmark_markdown, render_benchmark_terminal
from framework.benchmarks import Benchmark, resolve_benchmarks
from framework.config import RunConfig, build_config
from framework.errors import ConfigError, FrameworkError
from framework.leaderboard import write_leaderboard
from framework.scheduler import plan_runs, run
from framework.store import ResultsStore


def _row(model, value, *, dataset="ds", signal="sig", metric="m", params=None, ceiling=None, ci=None,
         source="pretrained", label="ImageNet", mode="auto", details=None, summary=None):
    return {"dataset": dataset, "signal": signal, "metric": metric, "model": model, "value": value,
            "ceiling": ceiling, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "weights_source": source, "weights_label": label, "details": details or {}, "summary": summary or {},
            "provenance": {"metric": {"params": params or {"p": 1}}, "model": {"weights_mode": mode}}}


def _bench(name="b1", **params):
    fields = {"dataset": "ds", "signal": "sig", "metric": "m"}
    fields.update(params)
    return Benchmark(name=name, **fields)


# -- reading one score -----------------------------------------------------------------------------
def test_read_headline_normalises_by_the_ceiling_and_scales_the_ci():
    s = _bench().read(_row("a", 0.3, ceiling=0.6, ci=(0.2, 0.4), summary={"best_layer": "fc6"}))
    assert (s.raw, s.ceiling, s.normalized, s.layer) == (0.3, 0.6, 0.5, "fc6")
    assert s.normalized_ci == pytest.approx((0.2 / 0.6, 0.4 / 0.6))
    assert math.isnan(_bench().read(_row("a", 0.3)).normalized)                      # no ceiling: undefined
    assert _bench(normalize="none").read(_row("a", 0.3)).normalized == 0.3            # 0-1 metric, no ceiling
    assert math.isnan(_bench(normalize="none").read(_row("a", None)).normalized)


def test_read_area_row_of_the_details_table():
    details = {"area": {"area": ["EVC", "IT"], "score": [0.04, 0.02], "noise_ceiling_upper": [0.08, 0.05],
                        "heldout_sem": [0.01, 0.005], "optimistic_sem": [0.5, 0.5], "best_layer": ["conv2", "fc6"]}}
    summary = {"selection_rule": "leave one subject out: ..."}
    s = _bench(area="IT").read(_row("a", 0.03, details=details, summary=summary))
    assert (s.raw, s.ceiling, s.layer) == (0.02, 0.05, "fc6")
    assert s.normalized == pytest.approx(0.4)
    assert s.ci == pytest.approx((0.02 - 1.96 * 0.005, 0.02 + 1.96 * 0.005))
    assert math.isnan(_bench(area="V4").read(_row("a", 0.03, details=details)).raw)   # no such area


# -- the board -------------------------------------------------------------------------------------
def test_board_aggregate_rule_ranks_ties_and_missing_benchmarks():
    b1 = _bench("b1", normalize="none")
    b2 = _bench("b2", signal="sig2", normalize="none")
    params = {"b1": {"p": 1}, "b2": {"p": 1}}
    rows = [_row("a", 0.4), _row("a", 0.2, signal="sig2"),          # mean 0.3
            _row("b", 0.6), _row("b", None, signal="sig2"),         # undefined counts 0: mean 0.3 (tie with a)
            _row("c", 0.9),                                         # b2 missing: no aggregate, ranked last
            _row("d", 0.1), _row("d", 0.2, signal="sig2"),          # mean 0.15
            _row("e", 5.0, params={"p": 2})]                        # other metric parameters: not this benchmark
    board = build_benchmark_board(rows, [b1, b2], params)
    got = [(r.rank, r.model, None if math.isnan(r.aggregate(board.names)) else round(r.aggregate(board.names), 6))
           for r in board.rows]
    assert got == [("1", "a", 0.3), ("1", "b", 0.3), ("3", "d", 0.15), ("—", "c", None)]
    text = render_benchmark_terminal(board)
    assert "1/2" in text and not any(line.split()[1:2] == ["e"] for line in text.splitlines()[3:] if line)
    md = render_benchmark_markdown(board)
    assert "| — | c | ImageNet | — | 1/2 | 0.900 (raw 0.900) | — |" in md
    assert "undefined score counts as 0" in md


def test_board_prefers_pretrained_over_fallback_and_keeps_controls_apart():
    b = _bench(normalize="none")
    rows = [_row("net", 0.1, source="random", label="random init (seed 0)"),                  # fallback
            _row("net:random", 0.05, source="random", label="random init (seed 0)", mode="random"),
            _row("pix", 0.2)]
    board = build_benchmark_board(rows, [b], {"b1": {"p": 1}})
    assert [(r.model, r.weights) for r in board.rows] == [
        ("pix", "ImageNet"), ("net", "random init (fallback)"), ("net:random", "random init")]
    rows.append(_row("net", 0.7))                                   # the pretrained weights load later
    board = build_benchmark_board(rows, [b], {"b1": {"p": 1}})
    assert [(r.model, r.weights, r.scores["b1"].raw) for r in board.rows][0] == ("net", "ImageNet", 0.7)
    assert not any(r.weights.endswith("(fallback)") for r in board.rows)
    assert build_benchmark_board(rows, [_bench(dataset="other")], {"b1": {"p": 1}}) is None


# -- registry, config ------------------------------------------------------------------------------
def test_builtin_benchmarks_are_registered_and_resolve():
    from framework.registry import load_registry

    registry = load_registry()
    names = registry.names("benchmark")
    assert {"demo.linear-predictivity", "demo.kuzovkin-lowgamma@150-350"} <= set(names)
    chosen = resolve_benchmarks(["all"], registry)
    demo = [b.name for b in chosen if b.name.startswith("demo.kuzovkin")]
    assert demo == ["demo.kuzovkin-lowgamma@50-250", "demo.kuzovkin-lowgamma@150-350",
                    "demo.kuzovkin-lowgamma@250-450"]                                # numbers ordered by value
    assert {"algonauts2019-92.it", "algonauts2019-78.evc", "kriegeskorte2008-92.hit"} <= set(names)
    with pytest.raises(FrameworkError, match="Did you mean 'demo.linear-predictivity'"):
        resolve_benchmarks(["demo.linear-predictivty"], registry)
    with pytest.raises(ConfigError, match="'all' cannot be combined"):
        resolve_benchmarks(["all", "demo.linear-predictivity"], registry)


def test_benchmarks_exclude_dataset_signals_and_metrics():
    with pytest.raises(ConfigError, match="drop metrics"):
        build_config({}, {"benchmarks": "demo.linear-predictivity", "metrics": "rsa"})
    assert build_config({}, {"benchmarks": "a,b"}).benchmarks == ["a", "b"]


# -- runs ------------------------------------------------------------------------------------------
def _config(tmp_path, **kw) -> RunConfig:
    fields = dict(models=["fake-net", "fake-net2"], signals=["all"], metrics=["fake-corr"],
                  store=tmp_path / "store", progress=False)
    fields.update(kw)
    return RunConfig(**fields)


def test_several_datasets_in_one_run_equal_separate_runs(fake_registry, tmp_path):
    summary = run(_config(tmp_path, dataset="fake-responses,fake-noisy"), registry=fake_registry)
    assert summary.n_done == 2 * 2 * 2 and len(summary.run_ids) == 2
    with ResultsStore(tmp_path / "store") as store:
        both = {(r["dataset"], r["model"], r["signal"]): r["value"] for r in store.rows(status="ok")}
    for name in ("fake-responses", "fake-noisy"):
        run(_config(tmp_path / name, dataset=name), registry=fake_registry)
        with ResultsStore(tmp_path / name / "store") as store:
            alone = {(r["dataset"], r["model"], r["signal"]): r["value"] for r in store.rows(status="ok")}
        assert alone == {k: v for k, v in both.items() if k[0] == name}
    assert {k[0] for k in both} == {"fake-responses", "fake-noisy"}
    # resume: nothing left to do
    again = run(_config(tmp_path, dataset="all"), registry=fake_registry)
    assert again.n_done == 0 and again.n_skipped == 8


def test_dataset_params_must_name_a_dataset_of_the_run(fake_registry, tmp_path):
    plans = plan_runs(_config(tmp_path, dataset="fake-responses,fake-noisy",
                              dataset_params={"fake-noisy": {"noise": 0.9}}), fake_registry)
    assert [p.dataset.name for p in plans] == ["fake-responses", "fake-noisy"]
    assert plans[1].config.dataset_params == {"fake-noisy": {"noise": 0.9}} and not plans[0].config.dataset_params
    with pytest.raises(ConfigError, match="not among this run's datasets"):
        plan_runs(_config(tmp_path, dataset="fake-responses,fake-noisy", dataset_params={"demo": {}}),
                  fake_registry)


def test_benchmark_run_scores_only_its_cells_and_writes_the_board(fake_registry, tmp_path):
    fake_registry.declare("benchmark", "fake.pos", "framework.benchmarks:Benchmark", "positive signal",
                          params={"dataset": "fake-responses", "signal": "resp", "metric": "fake-corr",
                                  "normalize": "none"})
    fake_registry.declare("benchmark", "fake.noisy-neg", "framework.benchmarks:Benchmark", "negated, noisy",
                          params={"dataset": "fake-noisy", "signal": "resp-neg", "metric": "fake-corr",
                                  "normalize": "none"})
    config = RunConfig(benchmarks=["all"], models=["fake-net", "fake-net2"], store=tmp_path / "store",
                       progress=False)
    plans = plan_runs(config, fake_registry)
    assert [(p.dataset.name, [(c.signal, c.metric) for c in p.cells]) for p in plans] == [
        ("fake-noisy", [("resp-neg", "fake-corr")] * 2), ("fake-responses", [("resp", "fake-corr")] * 2)]
    summary = run(config, registry=fake_registry)
    assert summary.n_done == 4 and not summary.failures
    with ResultsStore(tmp_path / "store") as store:
        rows = list(store.rows(status="ok"))
        benches = resolve_benchmarks(["all"], fake_registry)
        params = {b.name: fake_registry.create("metric", "fake-corr").parameters() for b in benches}
        board = build_benchmark_board(rows, benches, params)
        write_leaderboard(store, benchmark_board=board)
    value = {(r["dataset"], r["model"]): r["value"] for r in rows}
    for r in board.rows:   # each cell is the row's value; the aggregate their mean
        want = [value[("fake-noisy", r.model)], value[("fake-responses", r.model)]]
        assert [r.scores[n].normalized for n in board.names] == want
        assert r.aggregate(board.names) == pytest.approx(sum(want) / 2, abs=1e-15)
    with open(tmp_path / "store" / "benchmarks.csv", newline="") as fh:
        out = list(csv.DictReader(fh))
    assert len(out) == 4 and {o["benchmark"] for o in out} == {"fake.pos", "fake.noisy-neg"}
    assert (tmp_path / "store" / "leaderboard.md").read_text().index("## Benchmarks") < \
        (tmp_path / "store" / "leaderboard.md").read_text().index("## fake-corr")
