"""Plan-time checks of the band-power signal (SignalPlugin.check) and its compute-time warnings.

Every bad setting fails at plan time with one line naming the signal or parameter, the subject,
what the epochs allow and the ``--signal-param`` that fixes it (and that fix works); check() is
exactly as strict as compute(): what it accepts computes, what it rejects compute rejects with
the same message.
"""
from __future__ import annotations

import logging
import re

import mne
import numpy as np
import pytest

import fake_plugins
from framework.cli import _parse_value
from framework.config import RunConfig
from framework.contracts import DatasetPlugin
from framework.errors import ConfigError, DataError, FrameworkError
from framework.hookspecs import hookimpl
from framework.registry import PluginSpec, get_plugin_manager, load_registry
from framework.scheduler import plan_run
from framework.types import Dataset, EpochsMeta, SiteTable, StimulusSet
from plugins.signals import _preprocessing as preprocessing
from plugins.signals._power import longest_half_length, wavelet_half_lengths
from plugins.signals.band_power import DEFAULT_BANDS, EXTREME_RATIO, BandPowerSignal

SFREQ = 256.0
TMIN_MS = -312.5  # on the sample grid: MNE rounds an epoch's first time to a whole sample
N_TIMES = 205  # -312.5 .. 484.375 ms
TMAX_MS = TMIN_MS + (N_TIMES - 1) * 1000.0 / SFREQ
STEP_MS = 1000.0 / SFREQ
#: Small settings that fit the short epochs below (the defaults need a longer baseline).
SMALL = {"bands": {"theta": [5.0, 8.0], "lowgamma": [30.0, 70.0]}, "windows": [[50.0, 250.0], [150.0, 350.0]],
         "baseline": [-250.0, -50.0]}
LOG = "framework.signals.band_power"


def epochs_dataset(*, sfreq=SFREQ, tmin_ms=TMIN_MS, n_times=N_TIMES, channels=("A1", "A2", "A3"), n_trials=4,
                   meta: bool | dict = True, data=None, seed=0) -> Dataset:
    """One subject 's1' of white-noise epochs, each stimulus shown once; ``epochs_meta`` as the
    epochs are (``meta=True``), None (``False``) or with fields overridden (a dict)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_trials, len(channels), n_times)) if data is None else data
    stims = [f"im{k}" for k in range(n_trials)]

    def load():
        info = mne.create_info(list(channels), sfreq, "seeg")
        events = np.column_stack([np.arange(n_trials) * 1000, np.zeros(n_trials, int), np.arange(n_trials) + 1])
        return mne.EpochsArray(x, info, events=events, event_id={s: i + 1 for i, s in enumerate(stims)},
                               tmin=tmin_ms / 1000.0, verbose="error")

    names = tuple(f"s1/{c}" for c in channels)
    sites = SiteTable(names, ("s1",) * len(names), ("17",) * len(names))
    declared = None
    if meta is not False:
        fields = dict(sfreq=sfreq, tmin_ms=tmin_ms, tmax_ms=tmin_ms + (n_times - 1) * 1000.0 / sfreq,
                      n_epochs=n_trials, channels=tuple(channels))
        fields.update(meta if isinstance(meta, dict) else {})
        declared = {"s1": EpochsMeta(**fields)}
    return Dataset(name="tiny", stimuli=StimulusSet(tuple(stims)), digest="tiny", epochs={"s1": load}, sites=sites,
                   epochs_meta=declared)


def outcome(fn):
    """None when ``fn()`` succeeds, else (error class, message)."""
    try:
        fn()
    except FrameworkError as exc:
        return type(exc), str(exc)
    return None


def typed_fix(message: str) -> tuple[str, object]:
    """The ``--signal-param 'band-power.X=V'`` a message proposes, parsed as the command line does."""
    m = re.search(r"--signal-param '?band-power\.(\w+)=([^' ]+)'?", message)
    assert m, f"no --signal-param fix in: {message}"
    return m.group(1), _parse_value(m.group(2))


# ------------------------------------------------------------------ each bad setting: one line, a fix that works
def _cycles_limit(band_low_hz: float, pad: str) -> float:
    """Most cycles (0.01 steps) whose wavelet at ``band_low_hz`` fits the short epochs with ``pad``."""
    limit = longest_half_length(N_TIMES, pad)
    c = 1.0
    while wavelet_half_lengths(SFREQ, np.array([band_low_hz]), np.array([c + 0.01]))[0] <= limit:
        c = round(c + 0.01, 2)
    return c


BAD = {
    "window after the epochs": (dict(windows=[[50.0, 250.0], [300.0, 600.0]]), {},
                                r"Signals 'theta@300-600', 'lowgamma@300-600': window 300-600 \(300 to 600 ms, "
                                r"band-power parameter windows\) is outside the epochs of subject 's1', which span "
                                r"-312.5 to 484.375 ms at 256 Hz"),
    "window ends beyond half a sample": (dict(windows=[[50.0, TMAX_MS + 0.6 * STEP_MS]]), {}, "is outside the epochs"),
    "window without a sample": (dict(windows=[[100.5, 101.5]]), {}, r"contains no sample of subject 's1' \(one every "
                                                                     r"3.90625 ms from -312.5 ms\)"),
    "baseline before the epochs": (dict(baseline=[-500.0, -100.0]), {}, r"the baseline \(-500 to -100 ms, band-power "
                                                                         r"parameter baseline\) is outside"),
    "baseline entirely before": (dict(baseline=[-900.0, -600.0]), {}, "the baseline"),
    "band at Nyquist": (dict(bands={"theta": [5.0, 8.0], "highgamma": [70.0, 128.0]}), {},
                        r"band 'highgamma' reaches 128 Hz .* at or above the Nyquist frequency of subject 's1' "
                        r"\(128 Hz = 256 Hz / 2\)"),
    "band above Nyquist at a lower rate": (dict(SMALL), dict(sfreq=100.0),
                                           r"band 'lowgamma' reaches 70 Hz .*\(50 Hz = 100 Hz / 2\)"),
    # every band above Nyquist is fixed at once: lowgamma ends at 49 Hz, highgamma (70 Hz > 50 Hz) is removed
    "default bands at a lower rate": (dict(bands={b: list(r) for b, r in DEFAULT_BANDS.items()}), dict(sfreq=100.0),
                                      r"band 'lowgamma' reaches 70 Hz .*\(50 Hz = 100 Hz / 2\).*"
                                      r"band\(s\) 'lowgamma' end at 49 Hz; band\(s\) 'highgamma' removed"),
    "wavelet longer than the epochs": (dict(n_cycles={"theta": 6.0}, pad="none"), {},
                                       r"the 5 Hz wavelet of band 'theta' \(6 cycles, band-power parameter n_cycles\) "
                                       r"spans \d+ samples .* more than the 205-sample epochs of subject 's1' allow "
                                       r"with pad='none'"),
    "wavelet longer than mirrored epochs": (dict(n_cycles=20.0), {}, r"allow with pad='reflect'"),
    "notch stop band past Nyquist": (dict(notch=50.0, notch_width=60.0), {},
                                     r"notch=50 Hz and notch_width=60 Hz cannot be computed for subject 's1' "
                                     r"\(256 Hz\): the 100 Hz harmonic's stop band .* reaches 130.5 Hz"),
    "notch above Nyquist": (dict(notch=150.0), {}, r"the line frequency 150 Hz is not below the Nyquist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_setting_fails_at_plan_time_in_one_line_with_a_fix_that_works(case):
    params, meta, pattern = BAD[case]
    params = {**SMALL, **params}
    ds = epochs_dataset(meta=meta or True, sfreq=meta.get("sfreq", SFREQ))
    sig = BandPowerSignal(**params)
    with pytest.raises(ConfigError, match=pattern) as info:
        sig.check(ds, sig.names("epochs"))
    message = str(info.value)
    assert "\n" not in message and "subject 's1'" in message and "Fix: " in message
    if case == "notch above Nyquist":  # no value to type: the fix is to leave the option out
        assert "leave out --signal-param band-power.notch" in message
        return
    name, value = typed_fix(message)
    fixed = BandPowerSignal(**{**params, name: value})
    fixed.check(ds, fixed.names("epochs"))  # the proposed fix passes the plan-time check ...
    assert outcome(lambda: fixed.compute(ds, fixed.names("epochs"))) is None  # ... and computes


@pytest.mark.parametrize("params, meta, error, pattern", [
    (dict(bipolar=True), dict(channels=("EKG", "X")), DataError, "no neighbouring contacts"),
    ({}, dict(channels=("A1", "ZZ")), DataError, r"Channels \['s1/ZZ'\] of subject 's1' are not in the site table"),
])
def test_declared_channels_are_checked(params, meta, error, pattern):
    ds = epochs_dataset(meta=meta)
    ds.sites = SiteTable(("s1/A1", "s1/A2", "s1/A3", "s1/EKG", "s1/X"), ("s1",) * 5, ("17",) * 5)
    sig = BandPowerSignal(**{**SMALL, **params})
    with pytest.raises(error, match=pattern) as info:
        sig.check(ds, sig.names("epochs"))
    assert "\n" not in str(info.value)


def test_check_only_needs_cheap_facts_and_skips_what_is_not_declared():
    def no_loading():
        raise AssertionError("check() loaded epochs")

    bad = BandPowerSignal(**{**SMALL, "windows": [[300.0, 600.0]]})
    ds = epochs_dataset()
    ds.epochs = {"s1": no_loading}
    with pytest.raises(ConfigError, match="outside the epochs"):
        bad.check(ds, bad.names("epochs"))
    ds.epochs_meta = None  # nothing declared: nothing to check against, compute will tell
    bad.check(ds, bad.names("epochs"))
    with pytest.raises(ConfigError, match="outside the epochs of subject 's1'"):
        bad.compute(epochs_dataset(meta=False), bad.names("epochs"))
    with pytest.raises(ConfigError, match="Did you mean 'lowgamma'"):
        bad.check(epochs_dataset(), ["lowgama@300-600"])
    responses = Dataset("r", StimulusSet(("a",)), "d", responses=fake_plugins.FakeDataset().load().responses)
    with pytest.raises(DataError, match="needs a dataset with epochs"):
        bad.check(responses, ["theta@300-600"])


# ------------------------------------------------------------------ exactly as strict as compute
def _edge_settings():
    half = STEP_MS / 2
    limit_none = _cycles_limit(5.0, "none")
    widest = preprocessing.widest_notch(SFREQ, 50.0)
    return {
        "window ends at the last sample": dict(windows=[[50.0, TMAX_MS]]),
        "window ends 0.45 sample after": dict(windows=[[50.0, TMAX_MS + 0.9 * half]]),
        "window ends 0.55 sample after": dict(windows=[[50.0, TMAX_MS + 1.1 * half]]),
        "baseline starts at the first sample": dict(baseline=[TMIN_MS, -50.0]),
        "baseline starts 0.45 sample before": dict(baseline=[TMIN_MS - 0.9 * half, -50.0]),
        "baseline starts 0.55 sample before": dict(baseline=[TMIN_MS - 1.1 * half, -50.0]),
        "window of one sample": dict(windows=[[97.65625, 98.0], [TMIN_MS, TMIN_MS + 1.0]]),
        "window between samples": dict(windows=[[98.0, 101.0]]),
        "whole epoch as window": dict(windows=[[TMIN_MS, TMAX_MS]]),
        "band just below Nyquist": dict(bands={"highgamma": [70.0, 127.99]}),
        "band at Nyquist": dict(bands={"highgamma": [70.0, 128.0]}),
        "longest wavelet that fits, no padding": dict(pad="none", n_cycles={"theta": limit_none}),
        "one step longer, no padding": dict(pad="none", n_cycles={"theta": round(limit_none + 0.01, 2)}),
        "longest wavelet that fits, mirrored": dict(n_cycles={"theta": _cycles_limit(5.0, "reflect")}),
        "one step longer, mirrored": dict(n_cycles={"theta": round(_cycles_limit(5.0, "reflect") + 0.01, 2)}),
        "widest notch": dict(notch=50.0, notch_width=math_floor(widest - 1e-9, 2)),
        "notch at the limit": dict(notch=50.0, notch_width=widest),
        "bipolar": dict(bipolar=True),
    }


def math_floor(x: float, digits: int) -> float:
    return float(np.floor(x * 10**digits) / 10**digits)


@pytest.mark.parametrize("case", list(_edge_settings()))
def test_check_is_exactly_as_strict_as_compute(case):
    """At the edges: check() accepts => compute() succeeds; check() rejects => compute() raises the same."""
    sig = BandPowerSignal(**{**SMALL, **_edge_settings()[case]})
    ds = epochs_dataset()
    names = sig.names("epochs")
    planned = outcome(lambda: sig.check(ds, names))
    computed = outcome(lambda: sig.compute(ds, names))
    assert planned == computed, f"{case}: check() -> {planned}, compute() -> {computed}"


def test_edge_cases_cover_both_outcomes():
    """The edge cases above are on both sides of each limit (else the agreement test proves little)."""
    results = {case: outcome(lambda p=p: BandPowerSignal(**{**SMALL, **p}).check(epochs_dataset(), BandPowerSignal(
        **{**SMALL, **p}).names("epochs"))) for case, p in _edge_settings().items()}
    rejected = {c for c, r in results.items() if r is not None}
    assert rejected == {"window ends 0.55 sample after", "baseline starts 0.55 sample before",
                        "window between samples", "band at Nyquist", "one step longer, no padding",
                        "one step longer, mirrored", "notch at the limit"}


# ------------------------------------------------------------------ warnings
def test_valid_defaults_pass_quietly_and_suspicious_settings_warn(caplog):
    ds = epochs_dataset()
    with caplog.at_level(logging.WARNING, logger=LOG):
        BandPowerSignal(**SMALL).check(ds, BandPowerSignal(**SMALL).names("epochs"))
    assert not caplog.records
    cases = {"pad": (dict(pad="none", bands={"lowgamma": [30.0, 70.0]}),
                     r"with pad='none' zeros .* subject\(s\) \(e.g. 's1'.*pad=reflect"),
             "overlap": (dict(windows=[[-100.0, 100.0]]), r"window -100-100 overlaps the baseline \(-250 to -50 ms\)"),
             "after onset": (dict(baseline=[-250.0, 20.0], windows=[[150.0, 350.0]]),
                             r"baseline \(-250 to 20 ms\) ends after stimulus onset.*baseline=\[-250,0\]")}
    for params, pattern in cases.values():
        caplog.clear()
        sig = BandPowerSignal(**{**SMALL, **params})
        with caplog.at_level(logging.WARNING, logger=LOG):
            sig.check(ds, sig.names("epochs"))
        assert len(caplog.records) == 1 and re.search(pattern, caplog.records[0].getMessage()), caplog.text
        assert "signal" in caplog.records[0].getMessage()


@pytest.mark.parametrize("gain, warned", [(5.0, False), (20.0, True), (1 / 20.0, True), (1 / 5.0, False)])
def test_extreme_power_ratios_warn_at_compute(gain, warned, caplog):
    """A site whose baseline is ``gain`` times weaker in amplitude than the rest of the epoch has
    power ratios ~gain^2 (x ~1.6 from the max over sub-bands): ~40 is a (large) response, ~600 is
    beyond the documented 100x bound; their inverses likewise (a baseline artefact)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, N_TIMES))
    onset = int(round(-TMIN_MS / STEP_MS))
    if gain >= 1:
        x[:, 1, :onset] /= gain  # a near-flat baseline on A2
    else:
        x[:, 1, :onset] *= 1 / gain
    ds = epochs_dataset(data=x, n_trials=6)
    # high gamma: its wavelets (<= 80 ms) keep the baseline and the window on their side of onset
    sig = BandPowerSignal(**{**SMALL, "bands": {"highgamma": [70.0, 120.0]}, "windows": [[150.0, 350.0]]})
    with caplog.at_level(logging.WARNING, logger=LOG):
        out = sig.compute(ds, ["highgamma@150-350"])["highgamma@150-350"]
    ratio = float(np.median(out.data[:, 1]))
    assert (ratio > EXTREME_RATIO or ratio < 1 / EXTREME_RATIO) == warned, ratio  # the criterion itself
    messages = [r.getMessage() for r in caplog.records]
    if warned:
        assert len(messages) == 1, messages
        assert ("subject 's1'" in messages[0] and "1 of 3 sites for signal 'highgamma@150-350'" in messages[0]
                and "'s1/A2'" in messages[0]), messages[0]
    else:
        assert not messages


def test_declared_meta_that_disagrees_with_the_epochs_is_reported(caplog):
    ds = epochs_dataset(meta=dict(tmin_ms=-200.0))
    sig = BandPowerSignal(**SMALL)
    with caplog.at_level(logging.WARNING, logger=LOG):
        sig.compute(ds, ["theta@50-250"])
    assert any("declares the epochs of subject 's1' as 256 Hz, -200 to" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ through the scheduler's plan
class _TinyEpochsPlugin:
    """Registers dataset 'tiny-epochs' (the short epochs above, with epochs_meta)."""

    loads: list[str] = []

    class Plugin(DatasetPlugin):
        def __init__(self, *, cache_dir=None, **params):
            self._init_params(params, "tiny-epochs")

        def load(self):
            ds = epochs_dataset(n_trials=12)

            def counted(load=ds.epochs["s1"]):
                _TinyEpochsPlugin.loads.append("s1")
                return load()

            ds.epochs = {"s1": counted}
            return ds

    @staticmethod
    @hookimpl
    def framework_register_datasets(registry):
        registry.add(PluginSpec("dataset", "tiny-epochs", _TinyEpochsPlugin.Plugin, "short test epochs"))


def _plan(tmp_path, dataset, **kw):
    registry = load_registry(get_plugin_manager(entry_points=False, extra_plugins=[fake_plugins, _TinyEpochsPlugin]))
    config = RunConfig(dataset=dataset, models=["fake-net"], metrics=["fake-corr"], store=tmp_path / "store",
                       progress=False, **kw)
    return plan_run(config, registry=registry)


def test_plan_run_raises_before_any_signal_computation(tmp_path, monkeypatch):
    def no_compute(self, dataset, names):
        raise AssertionError("compute() ran before the plan was checked")

    monkeypatch.setattr(BandPowerSignal, "compute", no_compute)
    _TinyEpochsPlugin.loads.clear()
    with pytest.raises(ConfigError, match=r"window 300-600 .* outside the epochs of subject 's1'.*Fix: --signal-param"):
        _plan(tmp_path, "tiny-epochs", signal_params={"band-power": {**SMALL, "windows": [[50, 250], [300, 600]]}})
    assert _TinyEpochsPlugin.loads == []  # no recording was read
    plan = _plan(tmp_path, "tiny-epochs", signal_params={"band-power": SMALL})  # valid: plans
    assert len(plan.cells) == len(BandPowerSignal(**SMALL).names("epochs"))


def test_plan_run_checks_the_demo_dataset(tmp_path):
    from plugins.datasets.demo import DemoDataset

    small = {"n_images_per_category": 4, "n_subjects": 1, "n_sites": 10, "n_repetitions": 1}
    assert DemoDataset(cache_dir=tmp_path / "demo", **small).load().epochs_meta is not None
    with pytest.raises(ConfigError, match=r"band 'highgamma' reaches 300 Hz .*Nyquist frequency of subject 's01' "
                                          r"\(256 Hz = 512 Hz / 2\).*--signal-param 'band-power.bands="):
        _plan(tmp_path, "demo", dataset_params={"demo": small},
              signal_params={"band-power": {"bands": {"highgamma": [70.0, 300.0]}}})
