"""The built-in demo dataset: structure, determinism, caching and the planted truth."""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from framework.contracts import DatasetPlugin
from framework.errors import ConfigError, DataError
from framework.paths import user_cache_dir
from plugins.datasets.demo import DemoDataset

SMALL = dict(n_images_per_category=4, n_subjects=2, n_sites=10)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    plugin = DemoDataset(cache_dir=tmp_path_factory.mktemp("demo-default"))
    t0 = time.perf_counter()
    ds = plugin.load()
    print(f"demo generation (default size) took {time.perf_counter() - t0:.2f} s")
    return plugin, ds


def test_default_demo_structure(default_demo):
    plugin, ds = default_demo
    assert isinstance(plugin, DatasetPlugin) and ds.kind == "epochs" and ds.digest == plugin.key
    st = ds.stimuli
    assert len(st) == 100 and st.images.shape == (100, 128, 128, 3) and st.images.dtype == np.uint8
    assert Counter(st.labels) == {c: 20 for c in ("discs", "gratings", "checkers", "stars", "lines")}
    assert len(ds.epochs) == 3 and len(ds.sites) == 60
    assert set(ds.sites.areas) == {"17", "18", "19", "37", "20", "21", "n/a"}
    assert len(set(ds.sites.names)) == 60 and ds.sites.coords.shape == (60, 3)
    assert all(n.startswith(f"{s}/") for n, s in zip(ds.sites.names, ds.sites.subjects))
    ep = ds.epochs["s02"]()
    assert ep.info["sfreq"] == 512.0 and ep.times.size == 768 and ep.tmin == pytest.approx(-0.5)
    assert ep.get_data().shape == (200, 20, 768)
    assert len(set(ep.ch_names)) == 20
    from framework.types import epochs_stimulus_ids as trial_stimuli

    counts = Counter(trial_stimuli(ep, "subject 's02'"))
    assert set(counts) == set(st.ids) and set(counts.values()) == {2}
    md = ep.metadata  # a DataFrame with pandas, else MNE's list of per-epoch dicts
    from_md = list(md["stimulus"]) if hasattr(md, "columns") else [row["stimulus"] for row in md]
    inverse = {code: name for name, code in ep.event_id.items()}
    assert from_md == [inverse[c] for c in ep.events[:, 2]] == trial_stimuli(ep, "subject 's02'")


def test_images_differ_between_categories(default_demo):
    _, ds = default_demo
    imgs = ds.stimuli.images.reshape(100, -1).astype(np.float64)
    labels = np.array(ds.stimuli.labels)
    # nearest-centroid on raw pixels' simple statistics separates the categories well above chance
    feats = np.column_stack([imgs.std(1), np.abs(np.diff(ds.stimuli.images.astype(float), axis=1)).mean((1, 2, 3)),
                             np.abs(np.diff(ds.stimuli.images.astype(float), axis=2)).mean((1, 2, 3))])
    feats = (feats - feats.mean(0)) / feats.std(0)
    cats = sorted(set(labels))
    cent = np.stack([feats[labels == c].mean(0) for c in cats])
    pred = np.array(cats)[np.argmin(((feats[:, None] - cent[None]) ** 2).sum(-1), axis=1)]
    assert (pred == labels).mean() > 0.5  # chance 0.2
    assert len(np.unique(imgs, axis=0)) == 100  # no duplicate images


def test_planted_truth(default_demo):
    _, ds = default_demo
    t = ds.truth
    n_sites = len(ds.sites)
    assert t["drive"].shape == (100, n_sites) and t["level"].shape == (n_sites,)
    assert t["site_names"] == ds.sites.names
    level = {"17": 1, "18": 2, "19": 2, "37": 3, "20": 3, "21": 0, "n/a": 0}
    np.testing.assert_array_equal(t["level"], [level[a] for a in ds.sites.areas])
    visual = t["level"] > 0
    np.testing.assert_allclose(t["drive"][:, visual].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(t["drive"][:, visual].std(0), 1, rtol=1e-12)
    assert not t["drive"][:, ~visual].any()
    assert (t["strength"]["lowgamma"][visual] >= 1).all() and not t["strength"]["lowgamma"][~visual].any()
    np.testing.assert_allclose(t["strength"]["highgamma"], 0.35 * t["strength"]["lowgamma"])
    assert not t["strength"]["beta"].any() and not t["strength"]["alpha"].any()
    assert t["stimulus_specific_bands"] == ("lowgamma", "highgamma")
    # category drives late sites more than early ones: between-category share of drive variance
    labels = np.array(ds.stimuli.labels)

    def category_share(cols):
        d = t["drive"][:, cols]
        means = np.stack([d[labels == c].mean(0) for c in set(labels)])
        return float(means.var(0).mean() / d.var(0).mean())
    assert category_share(t["level"] == 3) > category_share(t["level"] == 1) + 0.2


def test_generation_is_deterministic_and_bit_identical(tmp_path):
    a = DemoDataset(cache_dir=tmp_path / "a", **SMALL)
    b = DemoDataset(cache_dir=tmp_path / "b", **SMALL)
    da, db = a.load(), b.load()
    assert da.digest == db.digest
    np.testing.assert_array_equal(da.stimuli.images, db.stimuli.images)
    np.testing.assert_array_equal(da.truth["drive"], db.truth["drive"])
    for s in da.epochs:
        xa, xb = da.epochs[s]().get_data(), db.epochs[s]().get_data()
        assert xa.tobytes() == xb.tobytes()
    for f in sorted(a.path.iterdir()):
        assert f.read_bytes() == (b.path / f.name).read_bytes(), f.name
    other = DemoDataset(cache_dir=tmp_path / "a", seed=1, **SMALL)
    assert other.key != a.key and other.path != a.path


def test_cached_load_is_fast_and_does_not_regenerate(tmp_path, monkeypatch):
    DemoDataset(cache_dir=tmp_path, **SMALL).load()

    def boom(self, target):
        raise AssertionError("regenerated although cached")
    monkeypatch.setattr(DemoDataset, "_generate", boom)
    t0 = time.perf_counter()
    ds = DemoDataset(cache_dir=tmp_path, **SMALL).load()
    ds.epochs["s01"]()
    assert time.perf_counter() - t0 < 2.0
    assert [p.name for p in tmp_path.iterdir()] == [f"demo-{ds.digest[:16]}"]  # no temp folders left


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path))
    assert user_cache_dir() == tmp_path
    assert DemoDataset().path.parent == tmp_path / "datasets"
    monkeypatch.delenv("FRAMEWORK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DemoDataset().path.parent == tmp_path / "xdg" / "framework" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "framework"
    assert DemoDataset().path.parent == Path.home() / ".cache" / "framework" / "datasets"


def test_bad_parameters_and_corrupt_cache(tmp_path, caplog):
    with pytest.raises(ConfigError, match=r"Invalid value 0 \(int\) for parameter 'n_subjects' of dataset 'demo': "
                                          r"expected an integer >= 1"):
        DemoDataset(n_subjects=0)
    with pytest.raises(ConfigError, match="n_images_per_category"):
        DemoDataset(n_images_per_category=2.5)
    with pytest.raises(ConfigError, match="has no parameter 'n_subject'. Did you mean 'n_subjects'"):
        DemoDataset(n_subject=3)
    plugin = DemoDataset(cache_dir=tmp_path, **SMALL)
    ds = plugin.load()
    before = ds.epochs["s01"]().get_data()
    (plugin.path / "s01.npz").write_bytes(b"garbage")  # after load: the loader notices and regenerates
    with caplog.at_level(logging.WARNING, logger="framework.datasets.demo"):
        after = ds.epochs["s01"]().get_data()
    assert "s01.npz: 7 bytes, recorded" in caplog.text and "regenerated" in caplog.text
    assert after.tobytes() == before.tobytes()


@pytest.mark.parametrize("params, pattern", [
    (dict(n_subjects=100_000_000), r"Invalid value 100000000 \(int\) for parameter 'n_subjects' of dataset 'demo': "
                                   r"expected an integer >= 1 and <= 20\. Fix: --dataset-param demo\.n_subjects="),
    (dict(n_images_per_category=10_000), r"parameter 'n_images_per_category' .* <= 200"),
    (dict(n_sites=1_000), r"parameter 'n_sites' .* <= 200"),
    (dict(n_repetitions=1_000), r"parameter 'n_repetitions' .* <= 20"),
    (dict(n_images_per_category=200, n_sites=200), r"Invalid parameters for dataset 'demo': one subject would hold "
                                                   r"2000 trials .* = 400000 trial-sites, more than the demo's limit "
                                                   r"of 50000 .*lower n_images_per_category, n_repetitions or n_sites"),
])
def test_sizes_beyond_the_documented_bounds_are_refused_in_one_line(tmp_path, params, pattern):
    # generation would run for minutes or hours and fill memory and disk: refused before any work
    with pytest.raises(ConfigError, match=pattern) as info:
        DemoDataset(cache_dir=tmp_path, **params)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_unreadable_file_under_valid_checksums_is_a_data_error(tmp_path, monkeypatch):
    # only a generator bug could do this (the checksums are taken from the written files)
    plugin = DemoDataset(cache_dir=tmp_path, **SMALL)
    ds = plugin.load()
    for name in ("s01.npz", "truth.npz"):  # truncated zips
        path = plugin.path / name
        path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setattr(plugin, "_ensure", lambda: plugin.path)  # skip the verification
    ds.epochs["s01"].ensure = plugin._ensure
    with pytest.raises(DataError, match=r"s01\.npz' are unreadable \(BadZipFile: .*delete the folder"):
        ds.epochs["s01"]()
    with pytest.raises(DataError, match=r"is unreadable \(BadZipFile: .*delete that folder"):
        plugin.load()


def test_epochs_meta_matches_the_epochs(tmp_path):
    ds = DemoDataset(cache_dir=tmp_path, **SMALL).load()
    assert set(ds.epochs_meta) == set(ds.epochs) == {"s01", "s02"}
    for subject, meta in ds.epochs_meta.items():
        ep = ds.epochs[subject]()
        assert meta.sfreq == ep.info["sfreq"] == 512.0
        assert meta.tmin_ms == ep.times[0] * 1000 == -500.0
        assert meta.tmax_ms == pytest.approx(ep.times[-1] * 1000, abs=1e-9) and meta.tmax_ms == 998.046875
        assert meta.n_epochs == len(ep) == 20 * 2
        assert meta.channels == tuple(ep.ch_names)
        assert [f"{subject}/{c}" for c in meta.channels] == [
            n for n, s in zip(ds.sites.names, ds.sites.subjects) if s == subject]
