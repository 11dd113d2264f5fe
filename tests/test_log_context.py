"""Log lines name the cell they concern: the context, its filter, layer names in warnings, Python warnings."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import fake_plugins
from framework.config import RunConfig
from framework.log_context import CellFilter, attribute_warnings, cell_context, current_cell
from framework.scheduler import run
from framework.types import Activations, Responses, SiteTable
from plugins.metrics.linear_predictivity import LinearPredictivityMetric
from plugins.metrics.rsa import RSAMetric

PREFIX = "[alexnet × lowgamma@150-350 × rsa] "


@pytest.fixture
def lines():
    """Formatted lines of the ``framework`` logger, through a handler carrying :class:`CellFilter`."""
    out: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            out.append(self.format(record))

    logger = logging.getLogger("framework")
    handler, level = Keep(), logger.level
    handler.addFilter(CellFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_prefix_inside_a_cell_only(lines):
    log = logging.getLogger("framework.test")
    log.warning("before %s", "any cell")
    with cell_context("alexnet", "lowgamma@150-350", "rsa") as ctx:
        assert current_cell() == ctx
        log.warning("layer %s is odd (%d%%)", "conv1", 50)
        log.info("an info line")
        log.error("a failure")
    log.warning("after")
    assert current_cell() is None
    assert lines == ["before any cell", PREFIX + "layer conv1 is odd (50%)", "an info line", PREFIX + "a failure",
                     "after"]


def test_partial_context_dataset_and_messages_naming_the_cell(lines):
    log = logging.getLogger("framework.test")
    with cell_context(model="vgg16"):
        log.warning("weights look odd")
        log.warning("Model 'vgg16': pretrained weights unavailable")  # names its model already
    with cell_context("m", "s", "rsa", dataset="demo"):
        log.warning("x")
        with cell_context(model="inner"):
            log.warning("y")
        log.warning("z")
    assert lines == ["[vgg16] weights look odd", "Model 'vgg16': pretrained weights unavailable",
                     "[demo: m × s × rsa] x", "[inner] y", "[demo: m × s × rsa] z"]


def test_one_prefix_through_several_handlers_and_a_cell_attribute(lines):
    more: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            more.append(record)

    extra = Keep()
    extra.addFilter(CellFilter())
    logger = logging.getLogger("framework")
    logger.addHandler(extra)
    try:
        with cell_context("a", "b", "c"):
            logging.getLogger("framework.test").warning("once")
    finally:
        logger.removeHandler(extra)
    assert lines == ["[a × b × c] once"] and more[0].getMessage() == "[a × b × c] once"
    assert more[0].cell == "a × b × c"


def test_python_warnings_are_logged_once_each_with_the_cell(lines):
    with cell_context("alexnet", "lowgamma@150-350", "rsa"):
        for _ in range(3):
            np.log(np.zeros(2))                      # RuntimeWarning: divide by zero
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert len(lines) == 2, lines
    assert lines[0].startswith(PREFIX + "RuntimeWarning: divide by zero encountered in log (")
    assert lines[0].endswith("; 3 times)")
    assert lines[1].startswith(PREFIX + "UserWarning: something else (") and "test_log_context.py" in lines[1]


def test_ignore_filters_still_apply(lines):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with attribute_warnings():
            np.log(np.zeros(2))
    assert lines == []


def test_numpy_warning_inside_a_metric_is_attributed_to_its_cell(fake_registry, tmp_path, monkeypatch, lines):
    original = fake_plugins.FakeMetric.score

    def noisy(self, activations, target, *, seed=0):
        np.log(np.zeros(1))
        np.log(np.zeros(1))
        logging.getLogger("framework.metrics.fake").warning("layer 'proj': odd")
        return original(self, activations, target, seed=seed)

    monkeypatch.setattr(fake_plugins.FakeMetric, "score", noisy)
    config = RunConfig(dataset="fake-responses", models=["fake-net"], signals=["resp", "resp-neg"],
                       metrics=["fake-corr"], store=tmp_path / "store", progress=False)
    summary = run(config, registry=fake_registry)
    assert summary.n_done == 2
    for signal in ("resp", "resp-neg"):
        prefix = f"[fake-net × {signal} × fake-corr] "
        numpy_lines = [x for x in lines if x.startswith(prefix + "RuntimeWarning: divide by zero")]
        assert len(numpy_lines) == 1 and numpy_lines[0].endswith("; 2 times)"), lines
        assert prefix + "layer 'proj': odd" in lines
    assert not [x for x in lines if "RuntimeWarning" in x and not x.startswith("[fake-net × ")]


def test_ridge_penalty_warnings_name_the_layers(caplog):
    rng = np.random.default_rng(0)
    n = 120
    clean, noise, noise2 = (rng.standard_normal((n, 5)) for _ in range(3))
    y = clean @ rng.standard_normal((5, 4)) + 1e-3 * rng.standard_normal((n, 4))
    ids = tuple(f"img{i:03d}" for i in range(n))
    acts = Activations({"clean": clean.astype(np.float32), "noise": noise.astype(np.float32),
                        "noise2": noise2.astype(np.float32)}, ids)
    resp = Responses(y.astype(np.float32), SiteTable(tuple(f"s{i}" for i in range(4)), ("p1",) * 4, ("17",) * 4),
                     ids)
    with caplog.at_level(logging.INFO, logger="framework.metrics.linear_predictivity"):
        score = LinearPredictivityMetric(alphas=[1e-3, 1e6]).score(acts, resp)
    low = [r.getMessage() for r in caplog.records if "smallest of the grid" in r.getMessage()]
    high = [r.getMessage() for r in caplog.records if "largest of the grid" in r.getMessage()]
    assert score.summary["alpha_at_lower_edge_fraction"] > 0.25
    # most often first, with each layer's share of its (fold, site) choices
    assert len(low) == 1 and "most often in layer(s) 'clean' 100%" in low[0], low
    assert len(high) == 1 and "most often in layer(s) 'noise" in high[0] and "clean" not in high[0], high


def test_rsa_names_the_left_out_sites(caplog):
    rng = np.random.default_rng(1)
    n = 20
    ids = tuple(f"img{i:03d}" for i in range(n))
    acts = Activations({"l1": rng.standard_normal((n, 8)).astype(np.float32),
                        "l2": rng.standard_normal((n, 8)).astype(np.float32)}, ids)
    data = rng.standard_normal((n, 4))
    data[:, 2] = 1.0                                 # site 'c' is constant
    resp = Responses(data.astype(np.float32), SiteTable(("a", "b", "c", "d"), ("p1",) * 4, ("17",) * 4), ids)
    with caplog.at_level(logging.WARNING, logger="framework.metrics.rsa"):
        RSAMetric(n_permutations=0).score(acts, resp)
    text = [r.getMessage() for r in caplog.records if "left out of the means" in r.getMessage()]
    assert len(text) == 1 and "1 of 4 sites" in text[0] and "(sites 'c')" in text[0], text


@pytest.fixture
def cli_logging():
    """The CLI's logging set-up, undone afterwards (handlers of the ``framework`` and root loggers)."""
    from framework.cli import _setup_logging

    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (logging.getLogger("framework"),
                                                                      logging.getLogger())]
    _setup_logging(False, False)
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def test_console_lines_of_framework_and_other_libraries_go_through_tqdm(cli_logging, capsys, monkeypatch):
    from tqdm.contrib.logging import _TqdmLoggingHandler

    from framework.scheduler import _logs_around_bars

    writes: list[str] = []
    monkeypatch.setattr("tqdm.auto.tqdm.write", classmethod(lambda cls, s, file=None, **kw: writes.append(s)))
    with _logs_around_bars(True):
        for name in ("framework", ""):
            handlers = logging.getLogger(name).handlers
            assert any(isinstance(h, _TqdmLoggingHandler) for h in handlers), name
        with cell_context(model="alexnet"):
            logging.getLogger("framework.models").warning("weights look odd")
            logging.getLogger("timm.models").warning("unexpected keys")
            logging.getLogger("timm.models").info("not shown: other libraries' info")
    assert writes == ["[alexnet] weights look odd", "timm.models: [alexnet] unexpected keys"]
    assert capsys.readouterr().err == ""
    assert not any(isinstance(h, _TqdmLoggingHandler) for h in logging.getLogger().handlers)
