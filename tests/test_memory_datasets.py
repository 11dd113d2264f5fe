"""Datasets built in Python (framework.epochs_dataset): scored exactly as the same data saved as files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import framework
from framework.errors import ConfigError, DataError

mne = pytest.importorskip("mne")
mne.set_log_level("ERROR")

SFREQ = 512.0
N_STIM = 8
IDS = [f"img{i:02d}" for i in range(N_STIM)]
AREAS = {"c0": "17", "c1": "37", "c2": "20"}


def _images() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (N_STIM, 32, 32, 3), dtype=np.uint8)


def _epochs(seed: int, *, n_rep: int = 3) -> mne.EpochsArray:
    """Three sEEG channels, -0.5..1 s, a 50 Hz burst at 150-350 ms whose size depends on the stimulus."""
    rng = np.random.default_rng(seed)
    t = np.arange(-0.5, 1.0, 1 / SFREQ)
    stim = np.tile(np.arange(N_STIM), n_rep)
    data = rng.standard_normal((stim.size, 3, t.size)) * 1e-5
    burst = np.exp(-((t - 0.25) / 0.08) ** 2) * np.sin(2 * np.pi * 50 * t)
    data += 3e-5 * (1 + stim)[:, None, None] / N_STIM * burst * np.array([1.0, 0.5, 0.2])[:, None]
    info = mne.create_info(list(AREAS), SFREQ, "seeg")
    return mne.EpochsArray(data, info, tmin=-0.5, metadata=pd.DataFrame({"stimulus": [IDS[k] for k in stim]}))


def _sites(subjects=("s1", "s2")) -> pd.DataFrame:
    return pd.DataFrame([{"name": ch, "subject": s, "area": a} for s in subjects for ch, a in AREAS.items()])


def _dataset(name="toy-ieeg", **kw):
    epochs = kw.pop("epochs") if "epochs" in kw else {"s1": _epochs(0), "s2": _epochs(1)}
    return framework.epochs_dataset(name, _images(), epochs, kw.pop("sites", _sites()), stimulus_ids=IDS, **kw)


RUN = dict(models="alexnet:random", signals="lowgamma@150-350,highgamma@150-350", metrics="rsa,alignment",
           progress=False)


def test_in_memory_epochs_score_as_the_same_data_saved_as_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path / "cache"))
    ds = _dataset()
    assert ds.sites.names == ("s1/c0", "s1/c1", "s1/c2", "s2/c0", "s2/c1", "s2/c2")
    assert ds.sites.areas == ("17", "37", "20") * 2 and ds.epochs_meta["s1"].tmin_ms == -500.0
    memory = framework.run(dataset=ds, store=tmp_path / "memory", **RUN).to_pandas()
    # the same recordings as files: -epo.fif per subject, a sites TSV, PNG images, a dataset TOML
    (tmp_path / "files" / "stimuli").mkdir(parents=True)
    for sid, img in zip(IDS, _images()):
        Image.fromarray(img).save(tmp_path / "files" / "stimuli" / f"{sid}.png")
    for subject, seed in (("s1", 0), ("s2", 1)):
        _epochs(seed).save(tmp_path / "files" / f"{subject}-epo.fif", fmt="double")
    _sites().to_csv(tmp_path / "files" / "sites.tsv", sep="\t", index=False)
    (tmp_path / "files" / "ds.toml").write_text(
        '[dataset]\nname = "toy-files"\nkind = "epochs"\n[stimuli]\nfolder = "stimuli"\n'
        '[recordings]\nfiles = "*-epo.fif"\nsites = "sites.tsv"\n')
    files = framework.run(dataset=str(tmp_path / "files" / "ds.toml"), store=tmp_path / "files_store",
                          **RUN).to_pandas()
    assert len(memory) == len(files) == 4 and set(memory["status"]) == {"ok"}
    a = memory.sort_values(["signal", "metric"]).reset_index(drop=True)
    b = files.sort_values(["signal", "metric"]).reset_index(drop=True)
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), rtol=0, atol=1e-12)
    assert list(a["best_layer"]) == list(b["best_layer"])
    assert np.isfinite(a[a["metric"] == "rsa"]["value"].to_numpy(float)).all()   # (alignment: too few sites here)


def test_rerun_resumes_and_returns_the_same_table(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path / "cache"))
    run = dict(RUN, signals="lowgamma@150-350", metrics="rsa")
    first = framework.run(dataset=_dataset(), store=tmp_path / "store", **run).to_pandas()
    # rebuilt from equal objects: same digest, so nothing is scored again and the same rows come back
    again = framework.run(dataset=_dataset(), store=tmp_path / "store", **run).to_pandas()
    pd.testing.assert_frame_equal(first, again)
    assert len(framework.open_store(tmp_path / "store").to_pandas()) == 1


def test_digest_follows_every_sample_and_not_later_edits_of_the_callers_objects():
    epochs = {"s1": _epochs(0), "s2": _epochs(1)}
    ds = framework.epochs_dataset("toy", _images(), epochs, _sites(), stimulus_ids=IDS)
    assert _dataset("toy").digest == ds.digest
    before = ds.epochs["s1"]().get_data()
    epochs["s1"]._data[0, 0, 0] += 1.0                     # the caller changes its object afterwards
    np.testing.assert_array_equal(ds.epochs["s1"]().get_data(), before)
    changed = framework.epochs_dataset("toy", _images(), epochs, _sites(), stimulus_ids=IDS)
    assert changed.digest != ds.digest
    # every call hands out a fresh copy
    ds.epochs["s1"]()._data[:] = 0
    np.testing.assert_array_equal(ds.epochs["s1"]().get_data(), before)


def test_bad_channels_and_other_types_are_not_sites():
    ep = _epochs(0)
    ep.info["bads"] = ["c1"]
    ep.add_channels([mne.EpochsArray(np.zeros((len(ep), 1, len(ep.times))), mne.create_info(["STI"], SFREQ, "stim"),
                                     tmin=-0.5)], force_update_info=True)
    ds = framework.epochs_dataset("toy", _images(), {"s1": ep}, _sites(["s1"]), stimulus_ids=IDS)
    assert ds.sites.names == ("s1/c0", "s1/c2") and ds.epochs["s1"]().ch_names == ["c0", "c2"]


@pytest.mark.parametrize(("change", "error", "text"), [
    (lambda kw: kw.update(sites=_sites(["s1"])), DataError, "subject 's2' have 3 channel(s) missing from sites"),
    (lambda kw: kw.update(sites=_sites().drop(columns="area")), ConfigError, "sites lacks column(s) area"),
    (lambda kw: kw.update(sites=_sites().assign(x=0.0, y=0.0)), ConfigError,
     "sites has coordinate column(s) x, y but not all of x, y, z; give all three (NaN when unknown) or none."),
    (lambda kw: kw.update(epochs={"s1": _epochs(0).drop([0, 8, 16])}), DataError,
     "1 stimulus id(s) are never shown in any epochs: 'img00'"),
    (lambda kw: kw.update(epochs={"s1": np.zeros((3, 3, 3))}), ConfigError, "epochs['s1'] is a ndarray"),
    (lambda kw: kw.update(epochs={}), ConfigError, "non-empty dict"),
])
def test_bad_input_gets_one_line_naming_what_to_fix(change, error, text):
    kw: dict = {}
    change(kw)
    with pytest.raises(error) as info:
        _dataset(**kw)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_unknown_stimulus_and_nan_channel_are_refused():
    ep = _epochs(0)
    ep.metadata = pd.DataFrame({"stimulus": ["imgXX"] + list(ep.metadata["stimulus"][1:])})
    with pytest.raises(DataError, match=r"subject 's1' name 1 stimulus id\(s\) not among stimulus_ids: 'imgXX'"):
        framework.epochs_dataset("toy", _images(), {"s1": ep}, _sites(["s1"]), stimulus_ids=IDS)
    ep = _epochs(0)
    ep._data[2, 1, 5] = np.nan
    with pytest.raises(DataError, match=r"The epochs of subject 's1': channel\(s\) 'c1' contain NaN"):
        framework.epochs_dataset("toy", _images(), {"s1": ep}, _sites(["s1"]), stimulus_ids=IDS)
