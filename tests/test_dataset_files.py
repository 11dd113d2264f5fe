"""FileDataset: datasets described by a TOML file (epochs, responses, RDMs)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from scipy.spatial.distance import squareform

from conftest import epochs_metadata
from framework.errors import ConfigError, DataError
from framework.registry import get_plugin_manager, load_registry
from framework.types import DEFAULT_AREA_ORDER, epochs_stimulus_ids
from plugins.datasets import _readers as rd
from plugins.datasets.files import FileDataset

mne = pytest.importorskip("mne")
mne.set_log_level("ERROR")

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
DATA = SHARED / "data"
REPO = Path(__file__).resolve().parents[1]

STIM = [f"s{i:02d}" for i in range(1, 7)]
SFREQ = 128.0
# (subject, channels in the file, bad channels, stimulus per epoch)
SUBJECTS = {
    "sub-01": (["A1", "A2", "A3"], ["A3"], ["s03", "s01", "s02", "s04", "s05", "s06", "s01"]),
    "sub-02": (["B1", "B2"], [], ["s02", "s05", "s05", "s06"]),
}
SITES_TSV = (
    "name\tsubject\tx\ty\tz\tarea\themisphere\n"
    "A1\tsub-01\t-10.5\t-90.0\t2.0\t17\tL\n"
    "A2\tsub-01\tn/a\tn/a\tn/a\t37\tL\n"
    "B2\tsub-02\t30.0\t-50.25\t-12.0\tn/a\tR\n"
    "B1\tsub-02\t31.0\t-60.0\t-10.0\t19\tR\n"
    "X9\tsub-03\t0\t0\t0\t20\tR\n"
)


def _write_images(folder: Path, ids) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, sid in enumerate(ids):
        Image.fromarray(np.full((4, 4, 3), 10 * k, np.uint8)).save(folder / f"{sid}.png")


def _write_epochs(path: Path, channels, bads, stimuli, *, seed: int, data=None, metadata="default",
                  types="seeg") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if data is None:
        data = rng.standard_normal((len(stimuli), len(channels), 32)) * 1e-5
    info = mne.create_info(list(channels), SFREQ, types)
    md = [{"stimulus": s, "trial": i} for i, s in enumerate(stimuli)] if metadata == "default" else metadata
    epochs = mne.EpochsArray(data, info, tmin=-0.1, metadata=epochs_metadata(md), verbose="error")
    epochs.info["bads"] = list(bads)
    epochs.save(path, overwrite=True, fmt="double", verbose="error")
    return data


TOML_EPOCHS = """
[dataset]
name = "tiny"
description = "two subjects"
kind = "epochs"

[stimuli]
folder = "stimuli"
labels = "labels.tsv"

[recordings]
files = {{ "sub-01" = "rec/sub-01-epo.fif", "sub-02" = "rec/sub-02-epo.fif" }}
sites = "electrodes.tsv"
{extra}
"""


@pytest.fixture
def epochs_dir(tmp_path: Path) -> Path:
    _write_images(tmp_path / "stimuli", STIM)
    (tmp_path / "rec").mkdir()
    written = {}
    for seed, (subject, (chans, bads, stims)) in enumerate(SUBJECTS.items()):
        written[subject] = _write_epochs(tmp_path / "rec" / f"{subject}-epo.fif", chans, bads, stims, seed=seed)
    np.savez(tmp_path / "written.npz", **written)
    (tmp_path / "electrodes.tsv").write_text(SITES_TSV)
    (tmp_path / "labels.tsv").write_text("".join(f"{s}\t{'face' if i % 2 else 'body'}\n" for i, s in enumerate(STIM)))
    (tmp_path / "ds.toml").write_text(TOML_EPOCHS.format(extra=""))
    return tmp_path


def _load(tmp: Path, name: str = "ds.toml", **kw):
    return FileDataset(path=tmp / name, **kw).load()


# -- epochs round trip -----------------------------------------------------------------------------
def test_epochs_round_trip(epochs_dir: Path) -> None:
    ds = _load(epochs_dir)
    assert ds.kind == "epochs" and ds.name == "tiny" and ds.description == "two subjects"
    assert ds.stimuli.ids == tuple(STIM)
    assert ds.stimuli.paths == tuple(epochs_dir / "stimuli" / f"{s}.png" for s in STIM)
    assert ds.stimuli.labels == ("body", "face", "body", "face", "body", "face")
    assert ds.area_order == DEFAULT_AREA_ORDER
    # bad channel A3 is left out; file channel order, not TSV order; extra TSV rows ignored
    assert ds.sites.names == ("sub-01/A1", "sub-01/A2", "sub-02/B1", "sub-02/B2")
    assert ds.sites.subjects == ("sub-01", "sub-01", "sub-02", "sub-02")
    assert ds.sites.areas == ("17", "37", "19", "n/a")
    np.testing.assert_array_equal(ds.sites.coords, [[-10.5, -90.0, 2.0], [np.nan] * 3,
                                                    [31.0, -60.0, -10.0], [30.0, -50.25, -12.0]])
    assert list(ds.epochs) == ["sub-01", "sub-02"]
    written = np.load(epochs_dir / "written.npz")
    for subject, (chans, bads, stims) in SUBJECTS.items():
        ep = ds.epochs[subject]()
        keep = [i for i, c in enumerate(chans) if c not in bads]
        assert ep.ch_names == [chans[i] for i in keep]
        np.testing.assert_array_equal(ep.get_data(), written[subject][:, keep])
        assert epochs_stimulus_ids(ep) == stims
        assert ep.info["sfreq"] == SFREQ


def test_epochs_loader_pickles_and_glob(epochs_dir: Path) -> None:
    toml = TOML_EPOCHS.format(extra="").replace(
        'files = { "sub-01" = "rec/sub-01-epo.fif", "sub-02" = "rec/sub-02-epo.fif" }', 'files = "rec/*-epo.fif"')
    (epochs_dir / "glob.toml").write_text(toml)
    ds = _load(epochs_dir, "glob.toml")
    assert list(ds.epochs) == ["sub-01", "sub-02"]
    loader = pickle.loads(pickle.dumps(ds.epochs["sub-02"]))
    assert loader().ch_names == ["B1", "B2"]
    assert ds.digest != _load(epochs_dir).digest  # the TOML text is part of the digest


# -- digest ----------------------------------------------------------------------------------------
def test_digest_covers_every_referenced_file(epochs_dir: Path) -> None:
    base = _load(epochs_dir).digest
    assert _load(epochs_dir).digest == base
    (epochs_dir / "unrelated.txt").write_text("x")
    assert _load(epochs_dir).digest == base
    for rel in ("stimuli/s04.png", "electrodes.tsv", "labels.tsv", "rec/sub-02-epo.fif"):
        p = epochs_dir / rel
        original = p.read_bytes()
        p.write_bytes(original + b"\0" if rel.endswith(".fif") else original + b"\n")
        try:
            assert _load(epochs_dir).digest != base, rel
        finally:
            p.write_bytes(original)
    assert _load(epochs_dir).digest == base


def test_digest_cache_keyed_by_size_and_mtime(epochs_dir: Path, tmp_path_factory) -> None:
    cache = tmp_path_factory.mktemp("cache")
    plain = _load(epochs_dir).digest
    assert _load(epochs_dir, cache_dir=cache).digest == plain
    table = json.loads((cache / rd.FileHasher.FILENAME).read_text())
    fif = str((epochs_dir / "rec" / "sub-01-epo.fif").resolve())
    assert table[fif][2] == hashlib.sha256(Path(fif).read_bytes()).hexdigest()
    # a poisoned entry with matching (size, mtime) is trusted: proves the cache is used
    table[fif][2] = "0" * 64
    (cache / rd.FileHasher.FILENAME).write_text(json.dumps(table))
    assert _load(epochs_dir, cache_dir=cache).digest != plain
    # a new mtime invalidates the entry
    st = os.stat(fif)
    os.utime(fif, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert _load(epochs_dir, cache_dir=cache).digest == plain


# -- errors: the TOML ------------------------------------------------------------------------------
def test_missing_toml(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Dataset file '.*nope\.toml' does not exist"):
        FileDataset(path=tmp_path / "nope.toml").load()


def test_unparsable_toml_quotes_line(epochs_dir: Path) -> None:
    (epochs_dir / "bad.toml").write_text('[dataset]\nname = "x"\nkind = epochs\n')
    with pytest.raises(ConfigError, match=r"bad\.toml' is not valid TOML: .*line 3"):
        _load(epochs_dir, "bad.toml")


@pytest.mark.parametrize("old, new, match", [
    ('name = "tiny"', 'nmae = "tiny"', r"unknown key 'nmae' in \[dataset\]\. Did you mean 'name'\?"),
    ('[stimuli]', '[stimulus]', r"unknown key 'stimulus' in the top level.*Did you mean 'stimuli'"),
    ('sites = "electrodes.tsv"', 'site = "electrodes.tsv"', r"unknown key 'site' in \[recordings\]"),
    ('kind = "epochs"', 'kind = "epoch"', r"Invalid value 'epoch' for .*kind.*Did you mean 'epochs'"),
    ('kind = "epochs"', 'kind = "rdms"', r"section \[recordings\] does not belong to a dataset of kind 'rdms'"),
    ('folder = "stimuli"', 'folder = 3', r"\[stimuli\] folder must be a string, got 3"),
])
def test_bad_toml_content(epochs_dir: Path, old: str, new: str, match: str) -> None:
    text = TOML_EPOCHS.format(extra="")
    assert old in text
    (epochs_dir / "ds.toml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=match):
        _load(epochs_dir)


@pytest.mark.parametrize("old, new, match", [
    ('sites = "electrodes.tsv"', 'sites = "missing.tsv"', r"Sites table '.*missing\.tsv' .*does not exist"),
    ('"rec/sub-02-epo.fif"', '"rec/sub-09-epo.fif"', r"Epochs file of subject 'sub-02' '.*sub-09-epo\.fif'"),
    ('folder = "stimuli"', 'folder = "pics"', r"Stimulus folder '.*pics' .*does not exist"),
    ('labels = "labels.tsv"', 'labels = "lab.tsv"', r"Stimulus labels file '.*lab\.tsv' .*does not exist"),
])
def test_missing_referenced_file(epochs_dir: Path, old: str, new: str, match: str) -> None:
    (epochs_dir / "ds.toml").write_text(TOML_EPOCHS.format(extra="").replace(old, new))
    with pytest.raises(DataError, match=match):
        _load(epochs_dir)


# -- errors: epochs --------------------------------------------------------------------------------
def test_recording_names_unknown_stimulus(epochs_dir: Path) -> None:
    _write_epochs(epochs_dir / "rec" / "sub-02-epo.fif", ["B1", "B2"], [], ["s02", "zz9", "s05", "s06"], seed=1)
    with pytest.raises(DataError, match=r"sub-02-epo\.fif' \(subject 'sub-02'\) names 1 stimulus id\(s\) "
                                        r"not in the stimulus set: 'zz9'"):
        _load(epochs_dir)


def test_stimulus_never_shown(epochs_dir: Path) -> None:
    _write_images(epochs_dir / "stimuli", ["s07"])
    with open(epochs_dir / "labels.tsv", "a") as fh:
        fh.write("s07\tbody\n")
    with pytest.raises(DataError, match=r"1 stimulus id\(s\) .* never shown .*: 's07'.*\[stimuli\] ids"):
        _load(epochs_dir)
    # the fix the message suggests works
    (epochs_dir / "ds.toml").write_text(TOML_EPOCHS.format(extra="").replace(
        'folder = "stimuli"', f'folder = "stimuli"\nids = {json.dumps(STIM)}'))
    assert _load(epochs_dir).stimuli.ids == tuple(STIM)


def test_channels_missing_from_sites(epochs_dir: Path) -> None:
    (epochs_dir / "electrodes.tsv").write_text(SITES_TSV.replace("A2\tsub-01", "A2\tsub-1"))
    with pytest.raises(DataError, match=r"sub-01-epo\.fif' \(subject 'sub-01'\) has 1 channel\(s\) missing from "
                                        r"the sites table '.*electrodes\.tsv': 'A2'"):
        _load(epochs_dir)


def test_missing_stimulus_metadata(epochs_dir: Path) -> None:
    _write_epochs(epochs_dir / "rec" / "sub-02-epo.fif", ["B1", "B2"], [], ["s02"] * 4, seed=1,
                  metadata=[{"stim": "s02"}] * 4)
    with pytest.raises(DataError, match=r"sub-02-epo\.fif' have metadata without a 'stimulus' column.*'stim'"):
        _load(epochs_dir)


def test_sites_tsv_lacking_column(epochs_dir: Path) -> None:
    (epochs_dir / "electrodes.tsv").write_text(SITES_TSV.replace("\tarea\t", "\tareas\t"))
    with pytest.raises(DataError, match=r"electrodes\.tsv' lacks column\(s\) area;.*Did you mean 'areas'"):
        _load(epochs_dir)


@pytest.mark.parametrize("value, match", [(np.nan, "contain NaN or infinite samples"), (np.inf, "contain NaN"),
                                          ("flat", "are flat")])
def test_nan_or_flat_channel_fails_at_load_and_on_read(epochs_dir: Path, value, match: str) -> None:
    chans, bads, stims = SUBJECTS["sub-02"]
    data = np.random.default_rng(5).standard_normal((len(stims), 2, 32)) * 1e-5
    data[:, 1] = 3e-6 if value == "flat" else data[:, 1]
    if value != "flat":
        data[2, 1, 7] = value
    path = epochs_dir / "rec" / "sub-02-epo.fif"
    _write_epochs(path, chans, bads, stims, seed=0, data=data)
    with pytest.raises(DataError, match=rf"sub-02-epo\.fif': channel\(s\) 'B2' {match}.*Mark it bad"):
        _load(epochs_dir)  # the samples are read at load time
    # the loader checks again (the file may change between load and compute)
    loader = rd.EpochsLoader(path=path, subject="sub-02", channels=("B1", "B2"), fingerprint=rd.file_fingerprint(path))
    with pytest.raises(DataError, match=rf"sub-02-epo\.fif': channel\(s\) 'B2' {match}.*Mark it bad"):
        loader()
    # marking it bad is the fix
    _write_epochs(path, chans, ["B2"], stims, seed=0, data=data)
    assert _load(epochs_dir).epochs["sub-02"]().ch_names == ["B1"]


def test_non_site_channels_are_ignored(epochs_dir: Path) -> None:
    chans, bads, stims = SUBJECTS["sub-02"]
    data = np.random.default_rng(8).standard_normal((len(stims), 3, 32)) * 1e-5
    data[:, 2] = 0.0  # a flat trigger channel, absent from the sites table
    _write_epochs(epochs_dir / "rec" / "sub-02-epo.fif", [*chans, "STI"], bads, stims, seed=0, data=data,
                  types=["seeg", "seeg", "stim"])
    ds = _load(epochs_dir)
    assert ds.sites.names[-2:] == ("sub-02/B1", "sub-02/B2")
    ep = ds.epochs["sub-02"]()
    assert ep.ch_names == ["B1", "B2", "STI"]
    np.testing.assert_array_equal(ep.get_data(picks=["B1", "B2"]), data[:, :2])


def test_file_changed_after_load(epochs_dir: Path) -> None:
    ds = _load(epochs_dir)
    chans, bads, stims = SUBJECTS["sub-01"]
    _write_epochs(epochs_dir / "rec" / "sub-01-epo.fif", chans, bads, stims, seed=42)
    with pytest.raises(DataError, match=r"sub-01-epo\.fif' \(subject 'sub-01'\) changed after the dataset"):
        ds.epochs["sub-01"]()


# -- responses -------------------------------------------------------------------------------------
TOML_RESPONSES = """
[dataset]
name = "resp"
kind = "responses"
area_order = ["V4", "IT"]
[stimuli]
folder = "stimuli"
[responses]
file = "resp.npz"
"""


def test_responses_round_trip_reorders_stimuli(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(STIM))
    data = rng.standard_normal((6, 4))
    reps = rng.standard_normal((3, 6, 4)).astype(np.float32)
    reps[2, 1, 0] = np.nan
    np.savez(tmp_path / "resp.npz", responses=data, repetitions=reps, stimulus_ids=np.array(STIM)[perm],
             site_names=np.array(["n1", "n2", "n3", "n4"]), site_areas=np.array(["V4", "V4", "IT", "IT"]),
             site_coords=np.arange(12.0).reshape(4, 3))
    (tmp_path / "ds.toml").write_text(TOML_RESPONSES)
    ds = _load(tmp_path)
    r = ds.responses
    assert ds.kind == "responses" and ds.area_order == ("V4", "IT") and r.area_order == ("V4", "IT")
    assert r.stimulus_ids == tuple(STIM) and r.data.dtype == np.float32 and r.repetitions.dtype == np.float32
    inverse = np.argsort(perm)  # row of each stimulus-set id in the file
    np.testing.assert_array_equal(r.data, data[inverse].astype(np.float32))
    np.testing.assert_array_equal(r.repetitions, reps[:, inverse])
    for k, sid in enumerate(STIM):  # brute force: look each id up by name
        row = list(np.array(STIM)[perm]).index(sid)
        np.testing.assert_array_equal(r.data[k], data[row].astype(np.float32))
    assert r.sites.names == ("n1", "n2", "n3", "n4") and r.sites.areas == ("V4", "V4", "IT", "IT")
    assert r.sites.subjects == ("n/a",) * 4
    np.testing.assert_array_equal(r.sites.coords, np.arange(12.0).reshape(4, 3))


@pytest.mark.parametrize("arrays, match", [
    (dict(response=np.zeros((6, 2))),
     r"has no key 'responses' and unknown key 'response'; keys found: 'response'.*Did you mean 'responses'"),
    (dict(responses=np.zeros((6, 2)), site_name=np.array(["a", "b"])),
     r"unknown key 'site_name'; keys found: 'responses', 'site_name'"),
    (dict(responses=np.zeros((5, 2)), site_names=np.array(["a", "b"]), site_areas=np.array(["1", "2"])),
     r"'responses' in '.*resp\.npz' has 5 stimulus rows but the stimulus set has 6"),
    (dict(responses=np.zeros((6, 2)), site_names=np.array(["a", "b"])), r"lacks key 'site_areas'"),
    (dict(responses=np.zeros((6, 2)), site_names=np.array(["a", "b"]), site_areas=np.array(["1", "2"]),
          stimulus_ids=np.array(STIM[:5] + ["q"])), r"1 stimulus id\(s\) are not in the stimulus set: 'q'"),
])
def test_responses_errors(tmp_path: Path, arrays, match: str) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    np.savez(tmp_path / "resp.npz", **arrays)
    (tmp_path / "ds.toml").write_text(TOML_RESPONSES)
    with pytest.raises(DataError, match=match):
        _load(tmp_path)


# -- rdms ------------------------------------------------------------------------------------------
def _rdm_stack(k: int, n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((k, n, 5))
    return np.stack([1 - np.corrcoef(s) for s in x])


def _rdm_toml(tmp: Path, entries: str, extra: str = "") -> None:
    (tmp / "ds.toml").write_text(f'[dataset]\nkind = "rdms"\n{extra}\n[stimuli]\nfolder = "stimuli"\n'
                                 f'[rdms]\ndistance = "correlation"\n{entries}\n')


def test_rdms_round_trip_all_layouts(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    full = _rdm_stack(3, 6, 0)
    np.fill_diagonal(full[0], 0.0)
    np.savez(tmp_path / "a.npz", rdm=full)
    np.savez(tmp_path / "b.npz", one=full[1])
    np.save(tmp_path / "c.npy", np.stack([squareform(full[i], checks=False) for i in range(3)]))
    sessions = np.stack([full, full[::-1]], axis=1)  # (3 subjects, 2 sessions, 6, 6)
    np.savez(tmp_path / "d.npz", x=sessions)
    structs = np.empty((2,), dtype=[("RDM", object), ("name", object)])
    structs[0] = (squareform(full[0], checks=False).astype(np.float32), "first")
    structs[1] = (squareform(full[2], checks=False), "second")
    scipy.io.savemat(tmp_path / "e.mat", {"RDMs": structs, "other": np.eye(2)})
    _rdm_toml(tmp_path, 'IT = { file = "a.npz", key = "rdm" }\nV1 = { file = "b.npz" }\nV4 = { file = "c.npy" }\n'
                        'LO = { file = "d.npz", mean_over = [1] }\n'
                        'M1 = { file = "e.mat", key = "RDMs", field = "RDM", index = 0 }\n'
                        'M2 = { file = "e.mat", key = "RDMs", field = "RDM", index = [1] }',
              extra='area_order = ["V1", "V4", "LO", "IT", "M1", "M2"]')
    ds = _load(tmp_path)
    b = ds.rdms
    assert ds.kind == "rdms" and b.distance == "correlation" and b.stimulus_ids == tuple(STIM)
    assert tuple(b.rdms) == b.area_order == ds.area_order == ("V1", "V4", "LO", "IT", "M1", "M2")
    sym = (full + full.transpose(0, 2, 1)) / 2
    np.testing.assert_allclose(b.rdms["IT"], sym, rtol=0, atol=1e-15)
    np.testing.assert_allclose(b.rdms["V1"], sym[1:2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b.rdms["V4"], sym, rtol=0, atol=1e-15)
    np.testing.assert_allclose(b.rdms["LO"], (sym + sym[::-1]) / 2, rtol=0, atol=1e-15)
    m1 = squareform(squareform(full[0], checks=False).astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(b.rdms["M1"], m1[None])
    np.testing.assert_allclose(b.rdms["M2"], sym[2:3], rtol=0, atol=1e-15)
    for r in b.rdms.values():
        assert r.dtype == np.float64
        np.testing.assert_array_equal(r, r.transpose(0, 2, 1))
        assert not np.diagonal(r, axis1=1, axis2=2).any()


def test_rdms_default_area_order_is_table_order(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    np.savez(tmp_path / "a.npz", rdm=_rdm_stack(2, 6, 1))
    _rdm_toml(tmp_path, 'IT = { file = "a.npz" }\nEVC = { file = "a.npz" }')
    assert _load(tmp_path).rdms.area_order == ("IT", "EVC")


@pytest.mark.parametrize("array, entry, match", [
    (_rdm_stack(2, 5, 0), 'file = "r.npz"', r"has shape \(2, 5, 5\) \(5x5 RDMs\), but the stimulus set has 6"),
    (np.zeros(10), 'file = "r.npz"', r"condensed upper triangles of 5x5 RDMs\), but the stimulus set has 6"),
    (np.zeros((6, 7)), 'file = "r.npz"', r"shape \(6, 7\), which is neither square RDMs"),
    ("asym", 'file = "r.npz"', r"\(RDM at index \(1,\)\) is not symmetric \(max \|d\[i,j\] - d\[j,i\]\| = 0\.5"),
    ("diag", 'file = "r.npz"', r"is diagonal not zero"),
    ("nan", 'file = "r.npz"', r"contains NaN or infinite values \(first at index \(0, 2, 3\)\)"),
    (_rdm_stack(2, 6, 0), 'file = "r.npz", key = "RDMs"', r"'.*r\.npz' has no key 'RDMs'; keys found: 'rdm'"),
    (_rdm_stack(2, 6, 0), 'file = "q.npz"', r"RDM file '.*q\.npz' .*does not exist"),
    (_rdm_stack(2, 6, 0), 'file = "ds.toml"', r"RDM file '.*ds\.toml' has suffix '\.toml'; expected \.npz"),
    (_rdm_stack(2, 6, 0), 'file = "r.npz", index = 5', r"index \[5\] is out of range .* length 2"),
    (_rdm_stack(2, 6, 0), 'file = "r.npz", mean_over = 1', r"mean_over \[1\] must name leading axes 0..0"),
])
def test_rdm_errors(tmp_path: Path, array, entry: str, match: str) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    if isinstance(array, str):
        good = _rdm_stack(2, 6, 0)
        if array == "asym":
            good[1, 0, 4] += 0.5
        elif array == "diag":
            good[0, 1, 1] = 0.3
        else:
            good[0, 2, 3] = np.nan
        array = good
    np.savez(tmp_path / "r.npz", rdm=array)
    _rdm_toml(tmp_path, f"IT = {{ {entry} }}")
    with pytest.raises(DataError, match=match):
        _load(tmp_path)


def test_rdm_config_errors(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    np.savez(tmp_path / "r.npz", rdm=_rdm_stack(1, 6, 0))
    _rdm_toml(tmp_path, 'IT = { file = "r.npz", kye = "rdm" }')
    with pytest.raises(ConfigError, match=r"unknown key 'kye' in \[rdms\] IT\. Did you mean 'key'\?"):
        _load(tmp_path)
    _rdm_toml(tmp_path, 'IT = { file = "r.npz" }', extra='area_order = ["V1", "it"]')
    with pytest.raises(ConfigError, match=r"area_order \['V1', 'it'\] lacks area\(s\) IT of \[rdms\]"):
        _load(tmp_path)


def test_rdm_headline_areas_and_species(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    np.savez(tmp_path / "r.npz", rdm=_rdm_stack(2, 6, 0))
    entries = ('hIT = { file = "r.npz", species = "human", kind = "fMRI" }\n'
               'mIT = { file = "r.npz", index = 0, species = "monkey", kind = "electrophysiology" }')
    _rdm_toml(tmp_path, 'headline_areas = ["hIT"]\n' + entries)
    b = _load(tmp_path).rdms
    assert b.headline_areas == ("hIT",)
    assert b.area_species == {"hIT": "human", "mIT": "monkey"}
    assert b.area_kinds == {"hIT": "fMRI", "mIT": "electrophysiology"}
    assert b.area_groups() == {"human fMRI": ["hIT"], "monkey electrophysiology": ["mIT"]}
    # the new fields survive the response cache
    from framework.target_io import load_target, save_target

    save_target(b, tmp_path / "t.npz")
    back = load_target(tmp_path / "t.npz")
    assert (back.headline_areas, back.area_species, back.area_kinds) == (b.headline_areas, b.area_species,
                                                                         b.area_kinds)
    # mixed species without headline_areas: refused, never averaged silently
    _rdm_toml(tmp_path, entries)
    with pytest.raises(ConfigError, match=r"different species or kinds \(human fMRI: hIT; monkey electrophysiology: "
                                          r"mIT\).*headline_areas = \[\"hIT\"\]"):
        _load(tmp_path)
    # one species and kind, or none declared: no headline_areas needed
    _rdm_toml(tmp_path, 'IT = { file = "r.npz", species = "human" }\nEVC = { file = "r.npz", species = "human" }')
    assert _load(tmp_path).rdms.headline_areas is None
    for bad, match in (('headline_areas = ["it"]', r"headline_areas names 'it', which is not an \[rdms\] area "
                                                   r"\(areas: IT\)\. Did you mean 'IT'"),
                       ("headline_areas = []", r"headline_areas must be a non-empty list"),
                       ('headline_areas = ["IT", "IT"]', r"lists an area twice"),
                       ('headline_area = ["IT"]', r"\[rdms\] headline_area must be a table.*Did you mean "
                                                  r"'headline_areas'")):
        _rdm_toml(tmp_path, f'{bad}\nIT = {{ file = "r.npz" }}')
        with pytest.raises(ConfigError, match=match):
            _load(tmp_path)
    _rdm_toml(tmp_path, 'IT = { file = "r.npz", species = 3 }')
    with pytest.raises(ConfigError, match=r"\[rdms.IT\] species must be a string"):
        _load(tmp_path)


def test_mat_struct_errors(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    structs = np.empty((1, 2), dtype=[("RDM", object)])
    structs[0, 0] = (_rdm_stack(1, 6, 0)[0],)
    structs[0, 1] = (_rdm_stack(1, 6, 1)[0],)
    scipy.io.savemat(tmp_path / "m.mat", {"RDMs": structs})
    _rdm_toml(tmp_path, 'IT = { file = "m.mat", key = "RDMs" }')
    with pytest.raises(DataError, match=r"variable 'RDMs' is a MATLAB struct with fields 'RDM'; say which"):
        _load(tmp_path)
    _rdm_toml(tmp_path, 'IT = { file = "m.mat", key = "RDM", field = "RDM" }')
    with pytest.raises(DataError, match=r"has no variable 'RDM'; variables found: 'RDMs'\. Did you mean 'RDMs'"):
        _load(tmp_path)
    _rdm_toml(tmp_path, 'IT = { file = "m.mat", key = "RDMs", field = "RDM" }')
    assert _load(tmp_path).rdms.rdms["IT"].shape == (2, 6, 6)


# -- registry --------------------------------------------------------------------------------------
def test_registered_as_file_dataset(epochs_dir: Path) -> None:
    registry = load_registry(get_plugin_manager(entry_points=False))
    plugin = registry.create("dataset", "file", path=str(epochs_dir / "ds.toml"))
    assert isinstance(plugin, FileDataset)
    assert plugin.load().stimuli.ids == tuple(STIM)


# -- the real example datasets ---------------------------------------------------------------------
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared reference data (../shared/data) not present")


@needs_data
@pytest.mark.parametrize("n_images,key", [(92, "Net_RDM"), (78, "arr_0")])
def test_algonauts2019(n_images: int, key: str) -> None:
    ds = FileDataset(path=REPO / "datasets" / f"algonauts2019-{n_images}.toml").load()
    assert ds.kind == "rdms" and ds.name == f"algonauts2019-{n_images}"
    assert ds.stimuli.ids == tuple(f"image_{i:02d}" for i in range(1, n_images + 1))
    assert ds.rdms.area_order == ("EVC", "IT") and ds.rdms.headline_areas == ("EVC", "IT")
    assert ds.rdms.distance == "correlation" and ds.rdms.area_groups() == {"human fMRI": ["EVC", "IT"]}
    for area in ("EVC", "IT"):
        stored = np.load(DATA / "algonauts2019" / f"{n_images}images" / f"fmri_{area}_RDMs.npz")[key]
        assert ds.rdms.rdms[area].shape == (15, n_images, n_images)
        np.testing.assert_allclose(ds.rdms.rdms[area], stored, rtol=0, atol=1e-15)


@needs_data
def test_kriegeskorte2008_92() -> None:
    ds = FileDataset(path=REPO / "datasets" / "kriegeskorte2008-92.toml").load()
    assert ds.stimuli.ids == tuple(f"stim_{i:02d}" for i in range(1, 93))
    assert ds.stimuli.labels[0] == "human bodypart" and len(set(ds.stimuli.labels)) > 1
    raw = scipy.io.loadmat(DATA / "kriegeskorte2008" / "92_brainRDMs.mat")["RDMs"]  # (1, 4, 2) records
    by_loop = np.array([[np.asarray(raw[0, s, k]["RDM"], np.float64) for k in range(2)] for s in range(4)])
    hit = ds.rdms.rdms["hIT"]
    assert hit.shape == (4, 92, 92) and ds.rdms.rdms["mIT"].shape == (1, 92, 92)
    np.testing.assert_allclose(hit, by_loop.mean(axis=1), rtol=0, atol=1e-15)
    # the published human-IT vector is the mean of the 8 session RDMs, in squareform order
    fig1 = scipy.io.loadmat(DATA / "kriegeskorte2008" / "Kriegeskorte_Neuron2008_supplementalData.mat",
                            squeeze_me=True, struct_as_record=False)["RDMs_mIT_hIT_fig1"]
    np.testing.assert_allclose(squareform(hit.mean(axis=0), checks=False), fig1[1].RDM, atol=1e-6)
    np.testing.assert_allclose(ds.rdms.rdms["mIT"][0], squareform(fig1[0].RDM), rtol=0, atol=0)
    # human fMRI and monkey electrophysiology: the headline is human IT only
    assert ds.rdms.headline_areas == ("hIT",)
    assert ds.rdms.area_groups() == {"human fMRI": ["hIT"], "monkey electrophysiology": ["mIT"]}


# -- stimuli options -------------------------------------------------------------------------------
def test_stimulus_id_file_and_label_table(tmp_path: Path) -> None:
    _write_images(tmp_path / "stimuli", STIM)
    order = ["s03", "s01.png", "s02", "s06", "s05", "s04"]
    (tmp_path / "order.txt").write_text("# presentation order\n" + "\n".join(order) + "\n\n")
    (tmp_path / "index.csv").write_text("index,filename,category\n" +
                                        "".join(f"{i},{s}.png,cat{i % 3}\n" for i, s in enumerate(STIM)))
    np.savez(tmp_path / "r.npz", rdm=_rdm_stack(1, 6, 2))
    (tmp_path / "ds.toml").write_text(
        '[dataset]\nkind = "rdms"\n[stimuli]\nfolder = "stimuli"\nids = "order.txt"\n'
        'labels = { file = "index.csv", id_column = "filename", label_column = "category" }\n'
        '[rdms]\nIT = { file = "r.npz" }\n')
    ds = _load(tmp_path)
    assert ds.stimuli.ids == ("s03", "s01", "s02", "s06", "s05", "s04")
    assert ds.stimuli.paths[1] == tmp_path / "stimuli" / "s01.png"
    assert ds.stimuli.labels == ("cat2", "cat0", "cat1", "cat2", "cat1", "cat0")
    (tmp_path / "order.txt").write_text("s03\ns1\n")
    with pytest.raises(DataError, match=r"1 stimulus id\(s\) of \[stimuli\] ids .* have no image in .*: 's1'\. "
                                        r"Did you mean 's01'"):
        _load(tmp_path)
    (tmp_path / "ds.toml").write_text((tmp_path / "ds.toml").read_text().replace('"category"', '"kind"'))
    (tmp_path / "order.txt").write_text("s03\ns01\ns02\n")
    with pytest.raises(DataError, match=r"index\.csv' has no column 'kind'; columns found: 'index', 'filename'"):
        _load(tmp_path)
