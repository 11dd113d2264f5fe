"""Bad dataset input stops at load with one clear DataError line; suspicious input warns.

Every case writes a small dataset (TOML + files) in ``tmp_path``, breaks one thing, and
checks that :meth:`FileDataset.load` - which ``framework run`` calls at plan time, before
any computation - refuses it with a one-line message naming the file and the fix, or
loads it with a warning naming the input. A few cases go through the CLI to check that
the run stops before any work.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import epochs_metadata
from framework.errors import ConfigError, DataError, FrameworkError
from framework.types import EpochsMeta
from plugins.datasets import _readers as rd
from plugins.datasets.files import FileDataset

mne = pytest.importorskip("mne")
mne.set_log_level("ERROR")

#: The console script of the interpreter running the tests (``python -m framework.cli`` if not installed).
_SCRIPT = Path(sys.executable).with_name("framework")
FRAMEWORK = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "framework.cli"]
STIM = [f"s{i:02d}" for i in range(1, 7)]
SIDE = 40  # image side in px: above rd.MIN_IMAGE_SIDE, so no size warning unless a case asks for one
SFREQ = 256.0
N_TIMES = 256  # -500 .. 496 ms at 256 Hz: room for the band-power baseline and windows
TMIN = -0.5


# -- builders ---------------------------------------------------------------------------------------
def _write_image(path: Path, seed: int, side: int = SIDE) -> None:
    pixels = (np.random.default_rng(seed).random((side, side, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _images(folder: Path, ids=STIM) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, sid in enumerate(ids):
        _write_image(folder / f"{sid}.png", k)


def _rdm_stack(k: int, n: int = len(STIM), seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((k, n, 5))
    return np.stack([1 - np.corrcoef(s) for s in x])


def _write_epochs(path: Path, *, channels=("A1", "A2"), bads=(), stimuli=tuple(STIM) * 2, data=None,
                  seed: int = 0) -> np.ndarray:
    if data is None:
        data = np.random.default_rng(seed).standard_normal((len(stimuli), len(channels), N_TIMES)) * 1e-5
    info = mne.create_info(list(channels), SFREQ, "seeg")
    epochs = mne.EpochsArray(data, info, tmin=TMIN, metadata=epochs_metadata([{"stimulus": s} for s in stimuli]),
                             verbose="error")
    epochs.info["bads"] = list(bads)
    epochs.save(path, overwrite=True, fmt="double", verbose="error")
    return data


EPOCHS_TOML = """[dataset]
name = "checks"
kind = "epochs"
[stimuli]
folder = "stimuli"
[recordings]
files = {files}
sites = "sites.tsv"
"""
FILES_TABLE = '{ "sub-01" = "rec/sub-01-epo.fif", "sub-02" = "rec/sub-02-epo.fif" }'
SITES = ("name\tsubject\tx\ty\tz\tarea\n"
         "A1\tsub-01\t1\t2\t3\t17\nA2\tsub-01\t1\t2\t3\t37\nA3\tsub-01\t1\t2\t3\t20\n"
         "A1\tsub-02\t1\t2\t3\t18\nA2\tsub-02\t1\t2\t3\t19\n")


def make_epochs(tmp: Path, files: str = FILES_TABLE) -> Path:
    """Two subjects, two site channels each (sub-01 also has A3, marked bad), every stimulus twice."""
    _images(tmp / "stimuli")
    (tmp / "rec").mkdir(exist_ok=True)
    _write_epochs(tmp / "rec" / "sub-01-epo.fif", channels=("A1", "A2", "A3"), bads=("A3",), seed=1)
    _write_epochs(tmp / "rec" / "sub-02-epo.fif", seed=2)
    (tmp / "sites.tsv").write_text(SITES)
    (tmp / "ds.toml").write_text(EPOCHS_TOML.format(files=files))
    return tmp / "ds.toml"


def make_rdms(tmp: Path, entries: str = 'IT = { file = "r.npz" }', stimuli: str = "", extra: str = "") -> Path:
    _images(tmp / "stimuli")
    np.savez(tmp / "r.npz", rdm=_rdm_stack(2))
    (tmp / "ds.toml").write_text(f'[dataset]\nkind = "rdms"\n{extra}\n[stimuli]\nfolder = "stimuli"\n{stimuli}\n'
                                 f"[rdms]\n{entries}\n")
    return tmp / "ds.toml"


RESPONSES_TOML = '[dataset]\nkind = "responses"\narea_order = ["V4", "IT"]\n{extra}\n[stimuli]\nfolder = "stimuli"\n' \
                 '[responses]\nfile = "resp.npz"\n'


def _responses_arrays(**override) -> dict[str, np.ndarray]:
    arrays = dict(responses=np.random.default_rng(3).standard_normal((len(STIM), 4)),
                  site_names=np.array(["n1", "n2", "n3", "n4"]), site_areas=np.array(["V4", "V4", "IT", "IT"]))
    arrays.update(override)
    return arrays


def make_responses(tmp: Path, extra: str = "", **override) -> Path:
    _images(tmp / "stimuli")
    np.savez(tmp / "resp.npz", **_responses_arrays(**override))
    (tmp / "ds.toml").write_text(RESPONSES_TOML.format(extra=extra))
    return tmp / "ds.toml"


def _load(toml: Path, **kw):
    return FileDataset(path=toml, **kw).load()


def _truncate(path: Path, fraction: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])


def _corrupt_member(path: Path) -> None:
    """Overwrite bytes inside the first stored array of an .npz, leaving its ZIP directory intact."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"\x93NUMPY") + 160
    raw[at:at + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _epochs_with(tmp: Path, value) -> None:
    data = np.random.default_rng(2).standard_normal((len(STIM) * 2, 2, N_TIMES)) * 1e-5
    if value == "flat":
        data[:, 1] = 2e-6
    else:
        data[3, 1, 10] = value
    _write_epochs(tmp / "rec" / "sub-02-epo.fif", data=data)


def _epochs_without_metadata(tmp: Path) -> None:
    """sub-02 saved without metadata: MNE names its (default) events '1', which are not stimulus ids."""
    data = np.random.default_rng(2).standard_normal((len(STIM) * 2, 2, N_TIMES)) * 1e-5
    epochs = mne.EpochsArray(data, mne.create_info(["A1", "A2"], SFREQ, "seeg"), tmin=TMIN, verbose="error")
    epochs.save(tmp / "rec" / "sub-02-epo.fif", overwrite=True, fmt="double", verbose="error")


def _set_toml(tmp: Path, old: str, new: str) -> None:
    text = (tmp / "ds.toml").read_text()
    assert old in text, old
    (tmp / "ds.toml").write_text(text.replace(old, new))


def _hdf5_file(path: Path) -> None:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)


# -- the catalogue of refused input ------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """One broken input: ``build(tmp)`` writes the dataset and returns its TOML; the load must raise
    ``error`` matching ``match`` and naming ``names`` (a file or item)."""

    build: Callable[[Path], Path]
    match: str
    names: str
    error: type[FrameworkError] = DataError


def _then(make: Callable[[Path], Path], *steps: Callable[[Path], object]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        toml = make(tmp)
        for step in steps:
            step(tmp)
        return toml
    return build


BAD: dict[str, Bad] = {
    # 1. epochs files: read whole at load
    "epochs-truncated": Bad(_then(make_epochs, lambda t: _truncate(t / "rec/sub-02-epo.fif", 0.7)),
                            r"has a readable header but its data cannot be read \(.*\); the file is truncated or "
                            r"corrupt .*Copy or save it again\.", "sub-02-epo.fif"),
    "epochs-nan": Bad(_then(make_epochs, lambda t: _epochs_with(t, np.nan)),
                      r"channel\(s\) 'A2' contain NaN or infinite samples\. Mark it bad", "sub-02-epo.fif"),
    "epochs-inf": Bad(_then(make_epochs, lambda t: _epochs_with(t, -np.inf)),
                      r"channel\(s\) 'A2' contain NaN or infinite samples\. Mark it bad", "sub-02-epo.fif"),
    "epochs-flat": Bad(_then(make_epochs, lambda t: _epochs_with(t, "flat")),
                       r"channel\(s\) 'A2' are flat .*Mark it bad", "sub-02-epo.fif"),
    "epochs-no-stimulus-metadata": Bad(_then(make_epochs, _epochs_without_metadata),
                                       r"\(subject 'sub-02'\) has no metadata\['stimulus'\] column \(no metadata at "
                                       r"all\), so the stimulus ids were taken from its event names, and 1 of them are "
                                       r"not stimulus ids: '1'\. Fix: set epochs\.metadata = pandas\.DataFrame",
                                       "sub-02-epo.fif"),
    "epochs-empty-file": Bad(_then(make_epochs, lambda t: (t / "rec/sub-02-epo.fif").write_bytes(b"")),
                             r"is empty \(0 bytes\); it must be an MNE Epochs FIF file.*save it again",
                             "sub-02-epo.fif"),
    "epochs-not-fif": Bad(_then(make_epochs, lambda t: (t / "rec/sub-02-epo.fif").write_text("subject,trial\n1,2\n")),
                          r"cannot be read by mne\.read_epochs \(.*; its first bytes look like text: "
                          r"'subject,trial 1,2'\); it must be an MNE Epochs FIF file", "sub-02-epo.fif"),
    "epochs-path-is-folder": Bad(_then(make_epochs, lambda t: _replace_with_folder(t / "rec/sub-02-epo.fif")),
                                 r"Epochs file of subject 'sub-02' '.*' \(referenced by .*\) is a folder, not a "
                                 r"file\. Fix the path", "sub-02-epo.fif"),
    "epochs-same-file-twice": Bad(lambda t: make_epochs(
        t, '{ "sub-01" = "rec/sub-01-epo.fif", "sub-02" = "rec/./sub-01-epo.fif" }'),
        r"gives the same file '.*' to subjects 'sub-01' and 'sub-02', which would count its channels twice; give "
        r"each subject its own file", "sub-01-epo.fif"),
    "epochs-glob-only-folders": Bad(_then(lambda t: make_epochs(t, '"rec/*-epo*"'),
                                          lambda t: [_replace_with_folder(t / "rec" / f"sub-0{i}-epo.fif")
                                                     for i in (1, 2)]),
                                    r"files = 'rec/\*-epo\*' matches only folders \('sub-01-epo\.fif', "
                                    r"'sub-02-epo\.fif'\).*fix the pattern", "rec/*-epo*"),
    "sites-inf-coordinate": Bad(_then(make_epochs, lambda t: (t / "sites.tsv").write_text(
        SITES.replace("A2\tsub-02\t1\t2\t3", "A2\tsub-02\tinf\t2\t3"))),
        r"row 6, column x: 'inf' is not a finite number; write the coordinate in mm or n/a", "sites.tsv"),
    # 3. stimulus images: every one decoded at load
    "image-corrupt": Bad(_then(make_rdms, lambda t: (t / "stimuli/s03.png").write_bytes(bytes(range(256)) * 8)),
                         r"Stimulus image '.*s03\.png' \(id 's03', referenced by '.*ds\.toml'\) is not an image "
                         r"PIL can read \(its first bytes are .*\)\. Replace the file", "s03.png"),
    "image-truncated": Bad(_then(make_rdms, lambda t: (t / "stimuli/s03.png").unlink(),
                                 lambda t: _write_image(t / "stimuli/s03.jpg", 3, side=64),
                                 lambda t: _truncate(t / "stimuli/s03.jpg", 0.5)),
                           r"Stimulus image '.*s03\.jpg' \(id 's03', referenced by .*\) cannot be decoded; it is "
                           r"truncated or corrupt \(OSError: image file is truncated.*\)\. Replace the file",
                           "s03.jpg"),
    "image-is-text": Bad(_then(make_rdms, lambda t: (t / "stimuli/s05.png").write_text("not an image\n")),
                         r"'.*s05\.png' \(id 's05', referenced by .*\) is not an image PIL can read \(its first "
                         r"bytes look like text: 'not an image'\)\. Replace the file", "s05.png"),
    "image-empty": Bad(_then(make_rdms, lambda t: (t / "stimuli/s01.png").write_bytes(b"")),
                       r"Stimulus image '.*s01\.png' \(id 's01', referenced by .*\) is empty \(0 bytes\)\. "
                       r"Replace the file", "s01.png"),
    "image-broken-symlink": Bad(_then(make_rdms, lambda t: (t / "stimuli/s04.png").unlink(),
                                      lambda t: (t / "stimuli/s04.png").symlink_to(t / "elsewhere/s04.png")),
                                r"Stimulus image '.*s04\.png' \(id 's04', .*\) is a broken symbolic link \(to "
                                r"'.*elsewhere/s04\.png'\)\. Replace the file", "s04.png"),
    "stimulus-folder-is-a-file": Bad(_then(make_rdms, lambda t: _set_toml(t, 'folder = "stimuli"',
                                                                          'folder = "r.npz"')),
                                     r"Stimulus folder '.*r\.npz' \(referenced by .*\) is a file, not a folder\. "
                                     r"Fix \[stimuli\] folder", "r.npz"),
    "too-few-stimuli": Bad(_then(lambda t: make_rdms(t, stimuli='ids = ["s01", "s02"]'),
                                 lambda t: np.savez(t / "r.npz", rdm=_rdm_stack(2, n=2))),
                           r"the stimulus set has 2 stimulus/stimuli \('s01', 's02'\); at least 3 are needed.*Add "
                           r"the other stimulus images", "ds.toml"),
    # 4. arrays: misleading numpy/scipy messages replaced
    "npz-is-text": Bad(_then(make_responses, lambda t: (t / "resp.npz").write_text("responses,site\n1.0,a\n")),
                       r"'.*resp\.npz' is not an \.npz archive \(a ZIP file written by numpy\.savez\): its first "
                       r"bytes look like text: 'responses,site 1\.0,a'\. Convert it: .*numpy\.savez", "resp.npz"),
    "npz-is-mat": Bad(_then(make_rdms, lambda t: scipy.io.savemat(t / "x.mat", {"r": _rdm_stack(1)}),
                            lambda t: os.replace(t / "x.mat", t / "r.npz")),
                      r"'.*r\.npz' is not an \.npz archive .*: it looks like a MATLAB \.mat file\. Convert it",
                      "r.npz"),
    "npz-truncated": Bad(_then(make_rdms, lambda t: _truncate(t / "r.npz", 0.6)),
                         r"'.*r\.npz' is truncated or corrupt: numpy\.load cannot read it \(BadZipFile: .*\)\. Copy "
                         r"it again or save it again with numpy\.savez", "r.npz"),
    "npz-damaged-member": Bad(_then(make_rdms, lambda t: _corrupt_member(t / "r.npz")),
                              r"'.*r\.npz', key 'rdm' cannot be read \(.*\); the archive is truncated or corrupt\. "
                              r"Copy it again or save it again", "r.npz"),
    "npy-truncated": Bad(_then(lambda t: make_rdms(t, 'IT = { file = "r.npy" }'),
                               lambda t: np.save(t / "r.npy", _rdm_stack(2)), lambda t: _truncate(t / "r.npy", 0.5)),
                         r"'.*r\.npy' is truncated or corrupt: numpy\.load cannot read it \(.*\)\. "
                         r".*numpy\.save\(path, array\)", "r.npy"),
    "npy-objects": Bad(_then(lambda t: make_rdms(t, 'IT = { file = "r.npy" }'),
                             lambda t: np.save(t / "r.npy", np.array([{"a": 1}], dtype=object))),
                       r"'.*r\.npy' holds Python objects .*never unpickled", "r.npy"),
    "mat-truncated": Bad(_then(lambda t: make_rdms(t, 'IT = { file = "r.mat", key = "RDMs" }'),
                               lambda t: scipy.io.savemat(t / "r.mat", {"RDMs": _rdm_stack(3)}),
                               lambda t: _truncate(t / "r.mat", 0.5)),
                         r"'.*r\.mat'.* cannot be read .*truncated.* copy it again or re-save it in MATLAB", "r.mat"),
    "mat-is-text": Bad(_then(lambda t: make_rdms(t, 'IT = { file = "r.mat" }'),
                             lambda t: (t / "r.mat").write_text("1,2,3\n4,5,6\n")),
                       r"'.*r\.mat' is not a MATLAB \.mat file: its first bytes look like text: '1,2,3 4,5,6'; "
                       r"re-save it", "r.mat"),
    "mat-hdf5": Bad(_then(lambda t: make_rdms(t, 'IT = { file = "r.mat" }'), lambda t: _hdf5_file(t / "r.mat")),
                    r"'.*r\.mat' is a MATLAB v7\.3 \(HDF5\) file, which scipy cannot read; re-save it in MATLAB with "
                    r"save\(\.\.\., '-v7'\)", "r.mat"),
    "rdm-file-is-folder": Bad(_then(make_rdms, lambda t: _replace_with_folder(t / "r.npz")),
                              r"RDM file '.*r\.npz' \(referenced by .*\) is a folder, not a file\. Fix the path",
                              "r.npz"),
    "rdm-broken-symlink": Bad(_then(make_rdms, lambda t: (t / "r.npz").unlink(),
                                    lambda t: (t / "r.npz").symlink_to(t / "gone.npz")),
                              r"RDM file '.*r\.npz' .* is a broken symbolic link \(to '.*gone\.npz'\)\. Fix the path",
                              "r.npz"),
    # 5. nothing usable left
    "rdm-all-constant": Bad(_then(make_rdms, lambda t: np.savez(t / "r.npz", rdm=1 - np.eye(6)[None].repeat(2, 0))),
                            r"RDMs of area 'IT' \('.*r\.npz'\): every RDM \(2\) is constant .*remove area 'IT' from "
                            r"\[rdms\]", "r.npz"),
    "responses-all-constant": Bad(_then(make_responses, lambda t: np.savez(
        t / "resp.npz", **_responses_arrays(responses=np.ones((6, 4))))),
        r"every site of 'responses' is constant over the stimuli .*check that the right array was saved",
        "resp.npz"),
    # 6. found in the walk-through
    "responses-beyond-float32": Bad(_then(make_responses, lambda t: np.savez(
        t / "resp.npz", **_responses_arrays(responses=np.random.default_rng(0).standard_normal((6, 4)) * 1e39))),
        r"'responses' has values beyond the float32 range .*rescale the values", "resp.npz"),
    "responses-no-site": Bad(_then(make_responses, lambda t: np.savez(t / "resp.npz", **_responses_arrays(
        responses=np.zeros((6, 0)), site_names=np.array([], str), site_areas=np.array([], str)))),
        r"'responses' has shape \(6, 0\), no site", "resp.npz"),
    "responses-coords-text": Bad(_then(make_responses, lambda t: np.savez(t / "resp.npz", **_responses_arrays(
        site_coords=np.array([["1", "2", "x"]] * 4)))),
        r"'site_coords' has dtype <U1; expected numbers in mm", "resp.npz"),
    "labels-two-labels": Bad(_then(lambda t: make_rdms(t, stimuli='labels = "lab.tsv"'),
                                   lambda t: (t / "lab.tsv").write_text(
                                       "".join(f"{s}\tface\n" for s in STIM) + "s02\tbody\n")),
                             r"gives stimulus 's02' two labels \('face' and 'body', row 7\); keep one row per stimulus",
                             "lab.tsv"),
    "labels-empty-label": Bad(_then(lambda t: make_rdms(t, stimuli='labels = "lab.tsv"'),
                                    lambda t: (t / "lab.tsv").write_text(
                                        "".join(f"{s}\t{'' if s == 's04' else 'face'}\n" for s in STIM))),
                              r"row 4: stimulus 's04' has an empty label; give every stimulus a category", "lab.tsv"),
    "rdm-index-twice": Bad(lambda t: make_rdms(t, 'IT = { file = "r.npz", index = [0, 1, -2] }'),
                           r"RDMs of area 'IT' \('.*r\.npz'\): index \[0, 1, -2\] selects entry\(ies\) \[0\] of the "
                           r"first axis more than once, which would count those subjects twice; list each once",
                           "r.npz"),
    "area-order-twice": Bad(lambda t: make_rdms(t, extra='area_order = ["IT", "IT"]'),
                            r"\[dataset\] area_order lists 'IT' more than once; list each area once", "ds.toml",
                            ConfigError),
    "name-empty": Bad(lambda t: make_rdms(t, extra='name = " "'),
                      r"\[dataset\] name is empty; give the name shown on the leaderboard", "ds.toml", ConfigError),
    "distance-empty": Bad(lambda t: make_rdms(t, entries='distance = ""\nIT = { file = "r.npz" }'),
                          r"\[rdms\] distance is empty; name how the RDMs were made", "ds.toml", ConfigError),
    "subject-with-slash": Bad(lambda t: make_epochs(t, '{ "a/b" = "rec/sub-01-epo.fif" }'),
                              r"\[recordings\] files has subject 'a/b'; a subject must be a non-empty name without "
                              r"'/'", "ds.toml", ConfigError),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_stops_at_load_with_one_line(tmp_path: Path, case: str) -> None:
    bad = BAD[case]
    toml = bad.build(tmp_path)
    with pytest.raises(bad.error) as info:
        _load(toml)
    message = str(info.value)
    assert type(info.value) is bad.error, message
    assert "\n" not in message, message
    assert bad.names in message, message
    assert "Traceback" not in message and len(message) < 700, message
    assert re.search(bad.match, message), f"{bad.match!r} not in {message!r}"


def test_epochs_check_reads_data_once_per_file_version(tmp_path: Path, monkeypatch) -> None:
    toml = make_epochs(tmp_path)
    cache = tmp_path / "cache"
    reads: list[tuple[str, bool]] = []
    real = rd._read_epochs

    def counting(path, *, preload):
        reads.append((Path(path).name, preload))
        return real(path, preload=preload)

    monkeypatch.setattr(rd, "_read_epochs", counting)
    _load(toml, cache_dir=cache)
    assert sorted(n for n, pre in reads if pre) == ["sub-01-epo.fif", "sub-02-epo.fif"]  # read whole once each
    assert not [n for n, pre in reads if not pre]  # ... and not a second time for the header
    table = json.loads((cache / rd.FileChecks.FILENAME).read_text())
    key = str((tmp_path / "rec/sub-02-epo.fif").resolve())
    assert table[key][2][rd.EPOCHS_CHECK] == ["A1", "A2"]
    reads.clear()
    _load(toml, cache_dir=cache)  # unchanged: header only
    assert reads and not [n for n, pre in reads if pre]
    # the verdict is tied to (size, mtime): a file rewritten with a NaN is read again and refused
    reads.clear()
    _epochs_with(tmp_path, np.nan)
    with pytest.raises(DataError, match=r"sub-02-epo\.fif': channel\(s\) 'A2' contain NaN"):
        _load(toml, cache_dir=cache)
    assert ("sub-02-epo.fif", True) in reads and ("sub-01-epo.fif", True) not in reads
    # without cache_dir nothing is remembered between loads
    _write_epochs(tmp_path / "rec" / "sub-02-epo.fif", seed=2)
    reads.clear()
    _load(toml)
    _load(toml)
    assert sum(pre for _, pre in reads) == 4


def test_image_check_decodes_once_per_file_version(tmp_path: Path, monkeypatch, caplog) -> None:
    toml = make_rdms(tmp_path)
    cache = tmp_path / "cache"
    decoded: list[str] = []
    real = rd._decode_image
    monkeypatch.setattr(rd, "_decode_image", lambda p, sid, src: decoded.append(sid) or real(p, sid, src))
    _load(toml, cache_dir=cache)
    assert decoded == STIM
    decoded.clear()
    _load(toml, cache_dir=cache)
    assert decoded == []
    # a poisoned verdict with the file's (size, mtime) is trusted: proves the remembered facts are used
    table_path = cache / rd.FileChecks.FILENAME
    table = json.loads(table_path.read_text())
    key = str((tmp_path / "stimuli" / "s02.png").resolve())
    assert table[key][2][rd.IMAGE_CHECK] == [SIDE, SIDE, 1, 1]
    table[key][2][rd.IMAGE_CHECK] = [8, 8, 1, 1]
    table_path.write_text(json.dumps(table))
    with caplog.at_level(logging.WARNING, logger="framework"):
        _load(toml, cache_dir=cache)
    assert "id 's02', 8x8 px" in caplog.text and decoded == []
    # a changed file is decoded again
    (tmp_path / "stimuli" / "s02.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"s02\.png' \(id 's02', referenced by .*\) is not an image PIL can read"):
        _load(toml, cache_dir=cache)
    assert decoded == ["s02"]


def test_epochs_meta_from_the_headers(tmp_path: Path) -> None:
    ds = _load(make_epochs(tmp_path))
    first = round(TMIN * SFREQ) / SFREQ  # MNE puts tmin on the sample grid
    first_ms, last_ms = first * 1e3, (first + (N_TIMES - 1) / SFREQ) * 1e3
    assert set(ds.epochs_meta) == {"sub-01", "sub-02"}
    for subject, meta in ds.epochs_meta.items():
        assert meta == EpochsMeta(sfreq=SFREQ, tmin_ms=pytest.approx(first_ms), tmax_ms=pytest.approx(last_ms),
                                  n_epochs=len(STIM) * 2, channels=("A1", "A2"))
        assert meta.nyquist == SFREQ / 2
        # it agrees with what the loader returns (bad channel A3 of sub-01 left out)
        ep = ds.epochs[subject]()
        assert (ep.info["sfreq"], len(ep), tuple(ep.ch_names)) == (meta.sfreq, meta.n_epochs, meta.channels)
        assert ep.times[0] * 1e3 == pytest.approx(meta.tmin_ms) and ep.times[-1] * 1e3 == pytest.approx(meta.tmax_ms)
    header = rd.read_epochs_header(tmp_path / "rec" / "sub-01-epo.fif")
    assert header.tmin == pytest.approx(first) and header.tmax == pytest.approx(last_ms / 1e3)


def test_glob_with_absolute_pattern_and_special_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "data [v1]"
    folder.mkdir()
    make_epochs(folder, '"rec/*-epo.fif"')
    assert list(_load(folder / "ds.toml").epochs) == ["sub-01", "sub-02"]  # '[v1]' is not a glob class
    pattern = json.dumps(str(folder / "rec").replace("[", "[[]") + "/sub-*-epo.fif")
    (folder / "ds.toml").write_text(EPOCHS_TOML.format(files=pattern))
    assert list(_load(folder / "ds.toml").epochs) == ["sub-01", "sub-02"]


# -- suspicious but valid: a warning naming the input --------------------------------------------------
def _small_image(t: Path) -> None:
    _write_image(t / "stimuli" / "s02.png", 1, side=8)
    _write_image(t / "stimuli" / "s05.png", 4, side=20)


def _constant_subject(t: Path) -> None:
    stack = _rdm_stack(3)
    stack[1] = 1 - np.eye(len(STIM))
    np.savez(t / "r.npz", rdm=stack)


def _similarities(t: Path) -> None:
    sim = 1 - _rdm_stack(2)
    sim[:, np.arange(6), np.arange(6)] = 0.0
    np.savez(t / "r.npz", rdm=sim)


def _exif_rotated(t: Path) -> None:
    (t / "stimuli" / "s04.png").unlink()
    img = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(t / "stimuli" / "s04.jpg", exif=exif)


def _animated(t: Path) -> None:
    (t / "stimuli" / "s06.png").unlink()
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(t / "stimuli" / "s06.gif", save_all=True, append_images=frames[1:])


@dataclass(frozen=True)
class Odd:
    build: Callable[[Path], Path]
    match: str
    check: Callable[[object], bool] = lambda ds: True


ODD: dict[str, Odd] = {
    "small-images": Odd(_then(make_rdms, _small_image),
                        r"^2 of 6 stimulus image\(s\) are smaller than 32 px on a side \(smallest: '.*s02\.png', id "
                        r"'s02', 8x8 px\); models upsample them"),
    "constant-subject-rdm": Odd(_then(make_rdms, _constant_subject),
                                r"^RDMs of area 'IT' \('.*r\.npz'\): 1 of 3 subject RDM\(s\) are constant .*subject "
                                r"index\(es\) \[1\].*left out.*index = \[\.\.\.\]",
                                lambda ds: ds.rdms.rdms["IT"].shape == (2, 6, 6)
                                and ds.rdms.info["dropped_constant_subjects"] == {"IT": [1]}),
    "negative-dissimilarities": Odd(_then(make_rdms, _similarities),
                                    r"^RDMs of area 'IT' \('.*r\.npz'\) has negative dissimilarities \(min -.*\), "
                                    r"which a 'correlation' distance cannot give; .*convert them \(1 - r\)"),
    "constant-sites": Odd(_then(make_responses, lambda t: np.savez(t / "resp.npz", **_responses_arrays(
        responses=np.random.default_rng(0).standard_normal((6, 4)) * [1, 0, 1, 0] + 5))),
        r"^'.*resp\.npz': 2 of 4 site\(s\) of 'responses' are constant over the stimuli \('n2', 'n4'\)",
        lambda ds: ds.responses.n_sites == 4),
    "area-order-unmatched": Odd(_then(make_responses, lambda t: _set_toml(t, 'area_order = ["V4", "IT"]\n', "")),
        r"^'.*ds\.toml': no site area \('IT', 'V4'\) is in \[dataset\] area_order \(17, 18, 19, 37, 20, the "
        r"default\).*set area_order"),
    "area-order-typo": Odd(_then(make_responses, lambda t: _set_toml(t, 'area_order = ["V4", "IT"]',
                                                                     'area_order = ["V4", "it"]')),
        r"^'.*ds\.toml': \[dataset\] area_order names 'it', which no site has .*Did you mean 'IT'"),
    "site-area-float": Odd(_then(make_epochs, lambda t: (t / "sites.tsv").write_text(SITES.replace("\t17\n",
                                                                                                   "\t17.0\n"))),
        r"^'.*ds\.toml': 1 site\(s\) in '.*sites\.tsv' have area\(s\) '17\.0', which \[dataset\] area_order \(17, 18, "
        r"19, 37, 20, the default\) does not list, e\.g\. 'sub-01/A1'; they are left out of the area-ordered metric "
        r"headlines and the alignment metric\. Did you mean '17'",
        lambda ds: ds.sites.areas[0] == "17.0"),
    "area-outside-order-responses": Odd(_then(make_responses, lambda t: np.savez(t / "resp.npz", **_responses_arrays(
        site_areas=np.array(["V4", "V4", "IT", "IT."])))),
        r"^'.*ds\.toml': 1 site\(s\) in '.*resp\.npz' have area\(s\) 'IT\.', which \[dataset\] area_order \(V4, IT\) "
        r"does not list"),
    "labels-unknown-id": Odd(_then(lambda t: make_rdms(t, stimuli='labels = "lab.tsv"'),
                                   lambda t: (t / "lab.tsv").write_text(
                                       "".join(f"{s}\tface\n" for s in STIM) + "s77\tbody\n")),
                             r"^Labels file '.*lab\.tsv' has rows for 1 id\(s\) that are neither in the stimulus set "
                             r"nor images of the stimulus folder: 's77'\..* They are ignored; a typo or the labels of "
                             r"another stimulus set\? Fix the ids or remove the rows\.",
                             lambda ds: ds.stimuli.labels == ("face",) * 6),
    "identical-areas": Odd(lambda t: make_rdms(t, 'IT = { file = "r.npz" }\nEVC = { file = "./r.npz" }'),
                           r"^'.*ds\.toml': \[rdms\] areas 'IT' and 'EVC' have identical RDMs"),
    "distance-typo": Odd(lambda t: make_rdms(t, 'distance = "corelation"\nIT = { file = "r.npz" }'),
                         r"^'.*ds\.toml': \[rdms\] distance = 'corelation' is not a distance model RDMs can be made "
                         r"with .*Did you mean 'correlation'"),
    "exif-rotated": Odd(_then(make_rdms, _exif_rotated),
                        r"^1 stimulus image\(s\) carry an EXIF orientation tag \(e\.g\. '.*s04\.jpg'\)"),
    "identical-images": Odd(_then(make_rdms, lambda t: shutil.copy(t / "stimuli/s01.png", t / "stimuli/s02.png")),
                            r"^'.*ds\.toml': 1 group\(s\) of stimulus images have identical bytes \(e\.g\. "
                            r"'stimuli/s01\.png' = 'stimuli/s02\.png'\)"),
    "animated": Odd(_then(make_rdms, _animated),
                    r"^1 stimulus image\(s\) have several frames .*'.*s06\.gif' with 2\); only the first frame"),
}


@pytest.mark.parametrize("case", list(ODD), ids=list(ODD))
def test_suspicious_input_warns_naming_it(tmp_path: Path, caplog, case: str) -> None:
    odd = ODD[case]
    toml = odd.build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="framework"):
        ds = _load(toml)
    hits = [r for r in caplog.records if r.levelno == logging.WARNING and re.search(odd.match, r.getMessage())]
    assert len(hits) == 1, [r.getMessage() for r in caplog.records]
    assert hits[0].name.startswith("framework.") and "\n" not in hits[0].getMessage()
    assert odd.check(ds)


def test_clean_dataset_loads_without_warnings(tmp_path: Path, caplog) -> None:
    """The builders above are clean: each warning case warns because of what it changed."""
    for make in (make_epochs, make_rdms, make_responses):
        folder = tmp_path / make.__name__
        folder.mkdir()
        with caplog.at_level(logging.WARNING, logger="framework"):
            _load(make(folder))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_labels_of_images_left_out_by_ids_are_quiet(tmp_path: Path, caplog) -> None:
    """A labels file covering the whole folder is fine when [stimuli] ids picks a subset of it."""
    toml = make_rdms(tmp_path, stimuli='labels = "lab.tsv"', extra="")
    _images(tmp_path / "stimuli", STIM + ["s07"])
    (tmp_path / "lab.tsv").write_text("".join(f"{s}\tface\n" for s in STIM + ["s07"]))
    _set_toml(tmp_path, 'labels = "lab.tsv"', f'ids = {json.dumps(STIM)}\nlabels = "lab.tsv"')
    with caplog.at_level(logging.WARNING, logger="framework"):
        ds = _load(toml)
    assert len(ds.stimuli) == 6
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- through the CLI: exit 2, one line, no work done ---------------------------------------------------
CLI_CASES = {
    "epochs-truncated": "lowgamma@150-350",
    "image-corrupt": "rdms",
    "npz-is-text": "responses",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_stops_before_any_work(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    toml = BAD[case].build(data)
    store = tmp_path / "store"
    proc = subprocess.run([*FRAMEWORK, "run", "--dataset", str(toml), "--models", "alexnet:random",
                           "--signals", CLI_CASES[case], "--store", str(store), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("framework: error: "), proc.stderr
    assert BAD[case].names in lines[0] and re.search(BAD[case].match, lines[0]) and "Traceback" not in proc.stderr
    assert not (store / "cache" / "activations").exists() and not (store / "cache" / "responses").exists()


def test_zipfile_marker_is_what_numpy_writes(tmp_path: Path) -> None:
    """The .npz sniffing accepts exactly what numpy.savez and numpy.save write (guards against a too-strict check)."""
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    np.savez_compressed(tmp_path / "b.npz", x=np.arange(3))
    np.save(tmp_path / "c.npy", np.arange(3))
    assert zipfile.is_zipfile(tmp_path / "a.npz")
    for name in ("a.npz", "b.npz"):
        with rd._open_npz(tmp_path / name) as npz:
            np.testing.assert_array_equal(npz["x"], np.arange(3))
    np.testing.assert_array_equal(rd._open_npz(tmp_path / "c.npy"), np.arange(3))
