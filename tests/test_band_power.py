"""Band-power signal: Morlet power against MNE, closed-form bursts, bookkeeping, errors, demo recovery."""
from __future__ import annotations

import json

import mne
import numpy as np
import pytest
from mne.time_frequency import tfr_array_morlet

from framework.errors import ConfigError, DataError
from framework.types import Dataset, SiteTable, StimulusSet
from plugins.signals._power import window_power
from plugins.signals.band_power import DEFAULT_N_CYCLES, BandPowerSignal

SFREQ = 512.0


def make_dataset(subjects: dict, stimulus_ids, *, sfreq=SFREQ, tmin=-0.5, areas=None, extra_sites=()):
    """Dataset from {subject: (data (n_trials, n_ch, n_times), channels, trial stimulus ids)}."""
    names, subj, ar = [], [], []
    loaders = {}
    for s, (data, channels, stims) in subjects.items():
        names += [f"{s}/{c}" for c in channels]
        subj += [s] * len(channels)
        ar += [(areas or {}).get(c, "17") for c in channels]

        def load(data=data, channels=channels, stims=stims):
            info = mne.create_info(list(channels), sfreq, "seeg")
            codes = {sid: i + 1 for i, sid in enumerate(dict.fromkeys(stims))}
            events = np.column_stack([np.arange(len(stims)) * 2000, np.zeros(len(stims), int),
                                      [codes[x] for x in stims]])
            return mne.EpochsArray(data, info, events=events, event_id=codes, tmin=tmin, verbose="error")
        loaders[s] = load
    for name in extra_sites:
        names.append(name)
        subj.append(name.split("/")[0])
        ar.append("n/a")
    sites = SiteTable(tuple(names), tuple(subj), tuple(ar), np.zeros((len(names), 3)))
    return Dataset(name="test", stimuli=StimulusSet(tuple(stimulus_ids)), digest="x", epochs=loaders, sites=sites)


# ------------------------------------------------------------------ Morlet power
def test_window_power_equals_tfr_array_morlet():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 768))
    freqs = np.array([5.0, 6.5, 8.0, 30.0, 30.0, 51.0, 70.0, 150.0])
    cycles = np.array([3, 3, 3, 5, 7, 7, 7, 7.0])
    ref = tfr_array_morlet(x, SFREQ, freqs, n_cycles=cycles, output="power", verbose="error")
    ranges = [(0, 205), (281, 384), (333, 436), (0, 768), (400, 401)]
    expected = np.stack([ref[..., a:b].mean(-1) for a, b in ranges], -1).reshape(12, len(freqs), len(ranges))
    got = window_power(x.reshape(12, 768), SFREQ, freqs, cycles, ranges, pad="none", batch_bytes=2**20)
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_window_power_reflect_equals_tfr_array_morlet_of_the_mirrored_signal():
    """pad="reflect": MNE on the signal mirrored by n_times - 1 samples (numpy.pad), zeros beyond; the
    5 Hz wavelet (489 samples) is longer than the 200-sample epoch, so the mirror is capped."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 200))
    freqs = np.array([5.0, 12.0, 40.0, 120.0])
    cycles = np.array([3.0, 4.0, 7.0, 7.0])
    p = 199
    ref = tfr_array_morlet(np.pad(x, ((0, 0), (0, 0), (p, p)), mode="reflect"), SFREQ, freqs, n_cycles=cycles,
                           output="power", verbose="error")[..., p:p + 200]
    ranges = [(0, 200), (0, 1), (150, 200), (37, 120)]
    expected = np.stack([ref[..., a:b].mean(-1) for a, b in ranges], -1).reshape(6, len(freqs), len(ranges))
    got = window_power(x.reshape(6, 200), SFREQ, freqs, cycles, ranges, pad="reflect")
    np.testing.assert_allclose(got, expected, rtol=2e-5)


@pytest.mark.parametrize("pad", ["none", "reflect"])
def test_window_power_entries_do_not_depend_on_the_other_requests(pad):
    """Each (signal, wavelet, range) mean has the same bits whatever other wavelets and ranges are asked for
    (ranges across block boundaries included), with the same batches for any number of threads."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((23, 1500))  # 1500 samples at 512 Hz: ~3 blocks of 1 s
    freqs = np.array([5.0, 9.0, 30.0, 30.0, 70.0, 70.0, 150.0])
    cycles = np.array([3.0, 4.0, 5.0, 7.0, 7.0, 7.0, 7.0])
    ranges = [(0, 205), (282, 385), (500, 530), (480, 1100), (1400, 1500), (0, 1500)]
    full = window_power(data, SFREQ, freqs, cycles, ranges, pad=pad, batch_bytes=1 << 18, workers=2)
    for i in range(len(freqs)):
        for r, rng_ in enumerate(ranges):
            alone = window_power(data, SFREQ, freqs[i:i + 1], cycles[i:i + 1], [rng_], pad=pad, batch_bytes=1 << 18)
            assert np.array_equal(alone[:, 0, 0], full[:, i, r]), (freqs[i], cycles[i], rng_)
    assert np.array_equal(full[:, 4], full[:, 5])  # the same wavelet twice


# ------------------------------------------------------------------ closed form
#: Constant background sinusoids covering each band's wavelets; on a 5 Hz grid so that their beats
#: complete whole cycles in the 200 ms windows and the 400 ms baseline.
BACKGROUND = {"theta": [5.0], "alpha": [10.0], "beta": [15.0, 20.0, 25.0], "lowgamma": [35.0, 45.0, 55.0, 65.0],
              "highgamma": [75.0 + 10 * k for k in range(8)]}


def _burst_epochs(f0, a_win, b_base, background=(), n_trials=8, noise=0.01, seed=0):
    """A sinusoid at f0 Hz with amplitude b_base before onset and a_win after (20 ms ramp), constant
    unit sinusoids at the ``background`` frequencies, plus white noise.

    Epochs -1.0 .. 1.0 s so the baseline is far from the epoch edges.
    """
    rng = np.random.default_rng(seed)
    t = -1.0 + np.arange(1024) / SFREQ
    ramp = np.clip(t / 0.02, 0.0, 1.0)
    amp = b_base + (a_win - b_base) * (0.5 - 0.5 * np.cos(np.pi * ramp))
    x = np.empty((n_trials, 2, t.size))
    for k in range(n_trials):
        for c in range(2):
            x[k, c] = amp * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)) + noise * rng.standard_normal(t.size)
            for fb in background:
                x[k, c] += np.sin(2 * np.pi * fb * t + rng.uniform(0, 2 * np.pi))  # unit amplitude
    stims = [f"im{k}" for k in range(n_trials)]
    return make_dataset({"s1": (x, ["A1", "A2"], stims)}, stims, tmin=-1.0)


@pytest.mark.parametrize("f0, band, far_bands", [
    (52.0, "lowgamma", ("theta", "alpha", "beta")),
    (120.0, "highgamma", ("theta", "alpha", "beta", "lowgamma")),
    (22.0, "beta", ("theta", "highgamma")),
])
def test_burst_gives_squared_amplitude_ratio(f0, band, far_bands):
    """A -> power ratio (A/B)^2 = 9 in the band holding f0; 1 in bands whose wavelets miss f0
    (each holding a constant sinusoid)."""
    a, b = 3.0, 1.0
    ds = _burst_epochs(f0, a, b, background=[f for fb in far_bands for f in BACKGROUND[fb]])
    sig = BandPowerSignal(windows=[(150, 350), (250, 450)])
    out = sig.compute(ds, [f"{band}@150-350", f"{band}@250-450"])
    for r in out.values():
        np.testing.assert_allclose(r.data, (a / b) ** 2, rtol=0.01)
    mean_sig = BandPowerSignal(windows=[(150, 350)], reduction="mean")
    far = mean_sig.compute(ds, [f"{fb}@150-350" for fb in far_bands])
    for name, r in far.items():
        np.testing.assert_allclose(r.data, 1.0, rtol=0.015, err_msg=name)


def test_per_trial_values_match_brute_force_from_mne():
    """Repetitions hold each trial's max-subband ratio computed from tfr_array_morlet (no padding)."""
    rng = np.random.default_rng(5)
    stims = ["a", "b", "c", "a", "b", "a"]  # 'a' three times, 'c' once
    x = rng.standard_normal((6, 2, 768))
    ds = make_dataset({"s1": (x, ["A1", "A2"], stims)}, ["a", "b", "c", "d"][:3])
    sig = BandPowerSignal(windows=[(150, 350)], pad="none")
    r = sig.compute(ds, ["beta@150-350"])["beta@150-350"]
    freqs = np.linspace(15, 30, 9)
    p = tfr_array_morlet(x, SFREQ, freqs, n_cycles=DEFAULT_N_CYCLES["beta"], output="power", verbose="error")
    times = -500 + np.arange(768) * 1000 / SFREQ
    base = p[..., (times >= -500) & (times <= -100)].mean(-1)
    win = p[..., (times >= 150) & (times <= 350)].mean(-1)
    ratio = win / base  # (trial, ch, freq)
    sub1 = ratio[..., freqs <= 25].mean(-1)
    sub2 = ratio[..., freqs >= 25].mean(-1)
    per_trial = np.maximum(sub1, sub2)
    assert r.repetitions.shape == (3, 3, 2)
    order = {"a": [0, 3, 5], "b": [1, 4], "c": [2]}
    for si, sid in enumerate("abc"):
        for rep, trial in enumerate(order[sid]):
            np.testing.assert_allclose(r.repetitions[rep, si], per_trial[trial], rtol=1e-4)
        assert np.isnan(r.repetitions[len(order[sid]):, si]).all()
        np.testing.assert_allclose(r.data[si], per_trial[order[sid]].mean(0), rtol=1e-4)
    assert r.data.dtype == np.float32 and r.repetitions.dtype == np.float32


# ------------------------------------------------------------------ bookkeeping
def test_names_and_parameters():
    sig = BandPowerSignal()
    names = sig.names("epochs")
    assert len(names) == 15 and names[0] == "theta@50-250" and names[-1] == "highgamma@250-450"
    assert "lowgamma@150-350" in names and sig.names("responses") == [] and sig.names("rdms") == []
    p = sig.parameters("lowgamma@150-350")
    json.dumps(p)
    assert p["band_hz"] == [30.0, 70.0] and p["window_ms"] == [150.0, 350.0] and p["baseline"] == [-500.0, -100.0]
    assert p["n_cycles"] == 7.0 and p["reduction"] == "max-subband"
    assert BandPowerSignal(n_cycles=4).parameters("theta@50-250")["n_cycles"] == 4.0
    assert BandPowerSignal(n_cycles={"theta": 2}).parameters("theta@50-250")["n_cycles"] == 2.0


def _two_subject_dataset(seed=1):
    rng = np.random.default_rng(seed)
    stim = ["i0", "i1", "i2", "i3", "i4", "i5"]
    d1 = rng.standard_normal((12, 3, 768))
    d2 = rng.standard_normal((5, 2, 768))
    subjects = {"s1": (d1, ["B1", "A1", "A2"], stim * 2), "s2": (d2, ["A1", "A2"], stim[:5])}
    return make_dataset(subjects, stim)


def test_site_and_stimulus_order_and_missing_stimuli():
    ds = _two_subject_dataset()
    r = BandPowerSignal().compute(ds, ["alpha@50-250"])["alpha@50-250"]
    assert r.sites.names == ds.sites.names == ("s1/B1", "s1/A1", "s1/A2", "s2/A1", "s2/A2")
    assert r.stimulus_ids == ds.stimuli.ids
    assert r.repetitions.shape == (2, 6, 5)
    assert np.isnan(r.data[5, 3:]).all() and np.isfinite(r.data[:5]).all() and np.isfinite(r.data[5, :3]).all()
    assert np.isnan(r.repetitions[1, :, 3:]).all()  # subject 2 saw each image once
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        expected = np.nanmean(r.repetitions, axis=0)  # stimulus 5 is all-NaN for subject 2
    np.testing.assert_allclose(r.data, expected, rtol=1e-6)


def test_log_zscore_and_responsive_only():
    ds = _two_subject_dataset()
    plain = BandPowerSignal().compute(ds, ["beta@50-250"])["beta@50-250"]
    logged = BandPowerSignal(log=True).compute(ds, ["beta@50-250"])["beta@50-250"]
    np.testing.assert_allclose(logged.repetitions, np.log(plain.repetitions), rtol=1e-5, atol=1e-6)
    z = BandPowerSignal(zscore=True).compute(ds, ["beta@50-250"])["beta@50-250"]
    np.testing.assert_allclose(np.nanmean(z.data, 0), 0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(z.data, 0), 1, rtol=1e-5)
    info = plain.info["responsive"]
    assert info["n_sites"] == 5 and info["filter_applied"] is False and len(info["mask"]) == 5
    kept = BandPowerSignal(responsive_only=True).compute(ds, ["beta@50-250"])["beta@50-250"]
    assert kept.info["responsive"]["filter_applied"] is True
    assert kept.sites.names == tuple(n for n, m in zip(plain.sites.names, info["mask"]) if m)


def test_bipolar_equals_manual_rereferencing():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 768))
    stims = ["p", "q", "p", "q"]
    ds = make_dataset({"s1": (x, ["A1", "A2", "A3"], stims)}, ["p", "q"])
    got = BandPowerSignal(bipolar=True).compute(ds, ["theta@50-250"])["theta@50-250"]
    assert got.sites.names == ("s1/A1-A2", "s1/A2-A3")
    manual = make_dataset({"s1": (x[:, :2] - x[:, 1:], ["A1-A2", "A2-A3"], stims)}, ["p", "q"])
    ref = BandPowerSignal().compute(manual, ["theta@50-250"])["theta@50-250"]
    np.testing.assert_allclose(got.data, ref.data, rtol=1e-6)


def test_reject_trials_sets_nan_per_site():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 768))
    x[1, 0, 400] = 200.0
    ds = make_dataset({"s1": (x, ["A1", "A2"], ["u", "v", "w"] * 2)}, ["u", "v", "w"])
    r = BandPowerSignal(reject_trials=True).compute(ds, ["alpha@50-250"])["alpha@50-250"]
    assert np.isnan(r.repetitions[0, 1, 0]) and np.isfinite(r.repetitions[0, 1, 1])
    assert r.data[1, 0] == pytest.approx(r.repetitions[1, 1, 0])
    assert r.info["n_rejected_trial_sites"] == 1


# ------------------------------------------------------------------ errors
def test_errors_name_the_problem():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 768))
    ds = make_dataset({"s1": (x, ["A1", "A2"], ["a", "b"])}, ["a", "b"])
    sig = BandPowerSignal()
    with pytest.raises(ConfigError, match="Did you mean 'lowgamma'"):
        sig.compute(ds, ["lowgama@50-250"])
    with pytest.raises(ConfigError, match="Unknown window '50-300'"):
        sig.compute(ds, ["theta@50-300"])
    low = make_dataset({"s1": (x, ["A1", "A2"], ["a", "b"])}, ["a", "b"], sfreq=256.0)
    with pytest.raises(ConfigError, match=r"reaches 150 Hz .* at or above the Nyquist frequency of subject 's1' "
                       r"\(128 Hz = 256 Hz / 2\)"):
        sig.compute(low, ["highgamma@50-250"])
    with pytest.raises(ConfigError, match="outside the epochs of subject 's1'"):
        BandPowerSignal(windows=[(800, 1200)]).compute(ds, ["theta@800-1200"])
    bad = x.copy()
    bad[1, 1, 5] = np.nan
    with pytest.raises(DataError, match="Subject 's1', channel 'A2': 1 NaN"):
        sig.compute(make_dataset({"s1": (bad, ["A1", "A2"], ["a", "b"])}, ["a", "b"]), ["theta@50-250"])
    flat = x.copy()
    flat[:, 0] = 0.0
    with pytest.raises(DataError, match=r"channel\(s\) \['A1'\] are flat"):
        sig.compute(make_dataset({"s1": (flat, ["A1", "A2"], ["a", "b"])}, ["a", "b"]), ["theta@50-250"])
    stray = make_dataset({"s1": (x, ["A1", "A2"], ["a", "zz"])}, ["a", "b"])
    with pytest.raises(DataError, match=r"subject 's1' contain trials of stimuli not in .*\['zz'\]"):
        sig.compute(stray, ["theta@50-250"])
    unseen = make_dataset({"s1": (x, ["A1", "A2"], ["a", "a"])}, ["a", "b"])
    with pytest.raises(DataError, match=r"1 stimuli have no trial in any subject \(e.g. \['b'\]\)"):
        sig.compute(unseen, ["theta@50-250"])
    with pytest.raises(ConfigError, match="Did you mean 'reduction'"):
        BandPowerSignal(reductoin="mean")
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        BandPowerSignal(reduction="meen")
    with pytest.raises(ConfigError, match="start < stop"):
        BandPowerSignal(bands={"x": (10, 5)})


# ------------------------------------------------------------------ demo recovery
@pytest.fixture(scope="module")
def demo_small(tmp_path_factory):
    from plugins.datasets.demo import DemoDataset

    return DemoDataset(cache_dir=tmp_path_factory.mktemp("demo"), n_images_per_category=12, n_subjects=2).load()


def test_demo_recovers_planted_lowgamma_drive_not_theta_beta(demo_small):
    ds = demo_small
    names = ["theta@150-350", "beta@150-350", "lowgamma@150-350"]
    out = BandPowerSignal().compute(ds, names)
    drive, level = ds.truth["drive"], ds.truth["level"]
    visual = np.flatnonzero(level > 0)
    med = {}
    for name, r in out.items():
        assert r.sites.names == ds.sites.names
        x = r.data.astype(np.float64)
        rs = [np.corrcoef(x[:, j], drive[:, j])[0, 1] for j in visual]
        med[name] = float(np.median(rs))
        print(f"demo recovery {name}: median per-site r(recovered, planted) = {med[name]:.3f} "
              f"over {len(visual)} visual sites; responsive {r.info['responsive']['n_responsive']}/{r.n_sites}")
    assert med["lowgamma@150-350"] > 0.35
    assert abs(med["theta@150-350"]) < 0.1 and abs(med["beta@150-350"]) < 0.1
    nonvis = np.flatnonzero(level == 0)
    lg = out["lowgamma@150-350"].info["responsive"]["mask"]
    assert sum(lg[i] for i in visual) >= 0.8 * len(visual) and sum(lg[i] for i in nonvis) <= 1
    assert sum(out["beta@150-350"].info["responsive"]["mask"]) <= 2


def test_trial_stimuli_reads_metadata_or_events():
    from framework.types import epochs_stimulus_ids as trial_stimuli

    info = mne.create_info(["A1"], SFREQ, "seeg")
    x = np.zeros((3, 1, 10))
    events = np.column_stack([[0, 20, 40], [0, 0, 0], [2, 1, 2]])
    ep = mne.EpochsArray(x, info, events=events, event_id={"cat": 1, "dog": 2}, verbose="error")
    assert trial_stimuli(ep, "subject 's1'") == ["dog", "cat", "dog"]
    md = [{"stimulus": "x"}, {"stimulus": "y"}, {"stimulus": "x"}]
    try:
        import pandas as pd

        md = pd.DataFrame(md)
    except ImportError:
        pass
    with mne.utils.use_log_level("error"):
        ep.metadata = md
    assert trial_stimuli(ep, "subject 's1'") == ["x", "y", "x"]  # metadata wins over events
    ep2 = mne.EpochsArray(x, info, events=events, event_id={"cat": 1, "dog": 2}, verbose="error",
                          metadata=[{"image": "x"}] * 3 if not hasattr(md, "columns") else md.rename(
                              columns={"stimulus": "image"}))
    with pytest.raises(DataError, match="subject 's1' have metadata without a 'stimulus' column"):
        trial_stimuli(ep2, "subject 's1'")


def test_threads_do_not_change_results():
    from plugins.signals._power import window_power

    rng = np.random.default_rng(5)
    data = rng.standard_normal((37, 768))
    freqs = np.array([6.0, 12.0, 40.0, 100.0])
    args = (data, 512.0, freqs, np.array([3.0, 4.0, 7.0, 7.0]), [(0, 205), (281, 384)])
    one = window_power(*args, workers=1, batch_bytes=1 << 16)
    two = window_power(*args, workers=2, batch_bytes=1 << 16)
    assert np.array_equal(one, two)


# ------------------------------------------------------------------ a value depends on its key alone
def _key_dataset():
    rng = np.random.default_rng(11)
    stims = [f"i{k}" for k in range(8)]
    d1 = rng.standard_normal((16, 3, 768))
    d2 = rng.standard_normal((9, 2, 700)) * 3.0  # another epoch length: its own block grid
    return make_dataset({"s1": (d1, ["A1", "A2", "A3"], stims * 2), "s2": (d2, ["A1", "A2"], stims + ["i0"])},
                        stims)


@pytest.mark.parametrize("name", ["lowgamma@150-350", "theta@50-250", "highgamma@250-450", "beta@50-250"])
@pytest.mark.parametrize("options", [{}, {"pad": "none", "reduction": "mean", "log": True}])
def test_value_depends_on_its_key_alone(name, options):
    """A signal computed alone, with the other windows of its band, with every band, or by a plugin
    configured with other windows and bands (same key) is bit-identical: finished cells are skipped on
    re-runs, so a store's numbers must not depend on what was computed together."""
    ds = _key_dataset()
    sig = BandPowerSignal(**options)
    band = name.split("@")[0]
    alone = sig.compute(ds, [name])[name]
    runs = {"band": sig.compute(ds, [n for n in sig.names("epochs") if n.startswith(band + "@")])[name],
            "every": sig.compute(ds, sig.names("epochs"))[name]}
    window = [float(t) for t in name.split("@")[1].split("-")]
    other = BandPowerSignal(**options, windows=[(-300, -200), window, (600, 800)],
                            bands={band: list(sig.bands[band]), "wide": [12.0, 160.0]})
    assert other.parameters(name) == sig.parameters(name)  # the same cell key ...
    runs["other plugin"] = other.compute(ds, other.names("epochs"))[name]
    for what, got in runs.items():  # ... gives the same bits
        for field in ("data", "repetitions"):
            a, b = getattr(got, field), getattr(alone, field)
            same = np.array_equal(a, b, equal_nan=True)
            assert same, f"{name} {field} computed {what} differs by up to {np.nanmax(np.abs(a / b - 1)):.1e} relative"
        assert got.info["responsive"] == alone.info["responsive"], what
