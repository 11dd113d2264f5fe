"""The public datasets algonauts2019-92, algonauts2019-78 and kriegeskorte2008-92.

Read from the shared reference copy (``../shared/data``, the same bytes as the public files;
skipped when absent) through ``$FRAMEWORK_DATA_DIR`` and the ``data_dir`` parameter, and
downloaded from a local HTTP server that serves those files in the layout of each public
source (files one by one for Net2Brain's repository and rsatoolbox, a ZIP archive for
Net2Brain's 92-image release). Numbers are checked against independent SciPy computations
and against the published Algonauts 2019 noise ceiling of the 78-image set.
"""
from __future__ import annotations

import dataclasses
import io
import shutil
import time
import zipfile

import numpy as np
import pytest
import scipy.io
import scipy.stats
from PIL import Image
from scipy.spatial.distance import squareform

from conftest import SHARED
from framework.downloads import downloads_dir
from framework.errors import DataError
from framework.numerics.ceiling import rdm_noise_ceiling
from plugins.datasets import public
from plugins.datasets.public import (
    ALGONAUTS_78,
    ALGONAUTS_92,
    KRIEGESKORTE_92,
    Algonauts2019Objects92,
    Algonauts2019Scenes78,
    Kriegeskorte2008,
    PublicDataset,
)
from test_downloads import FileServer, closed_port_url, no_proxy  # noqa: F401 (no_proxy is a fixture)

DATA = SHARED / "data"
CLASSES = {"algonauts2019-92": Algonauts2019Objects92, "algonauts2019-78": Algonauts2019Scenes78,
           "kriegeskorte2008-92": Kriegeskorte2008}


@pytest.fixture
def data_root(monkeypatch):
    """``$FRAMEWORK_DATA_DIR`` = the shared reference copy (skip when it is absent)."""
    if not (DATA / "algonauts2019").is_dir() or not (DATA / "kriegeskorte2008").is_dir():
        pytest.skip(f"shared reference data not found at {DATA}")
    monkeypatch.setenv("FRAMEWORK_DATA_DIR", str(DATA))
    return DATA


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Each dataset loaded once from the shared copy, with a cache of its own (the checks below only read it)."""
    if not (DATA / "algonauts2019").is_dir() or not (DATA / "kriegeskorte2008").is_dir():
        pytest.skip(f"shared reference data not found at {DATA}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path_factory.mktemp("public-cache")))
        mp.setenv("FRAMEWORK_DATA_DIR", str(DATA))
        return {name: cls().load() for name, cls in CLASSES.items()}


def condensed(rdms: np.ndarray) -> np.ndarray:
    """(n_subjects, n, n) -> (n_subjects, n(n-1)/2) upper triangles, row-major."""
    iu = np.triu_indices(rdms.shape[-1], 1)
    return rdms[:, iu[0], iu[1]]


EXPECTED = {  # name: (n_stimuli, first id, last id, {area: n_subjects}, headline, species of each area)
    "algonauts2019-92": (92, "image_01", "image_92", {"EVC": 15, "IT": 15}, ("EVC", "IT"),
                         {"EVC": "human", "IT": "human"}),
    "algonauts2019-78": (78, "image_01", "image_78", {"EVC": 15, "IT": 15}, ("EVC", "IT"),
                         {"EVC": "human", "IT": "human"}),
    "kriegeskorte2008-92": (92, "stim_01", "stim_92", {"hIT": 4, "mIT": 1}, ("hIT",),
                            {"hIT": "human", "mIT": "monkey"}),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shapes_areas_and_subjects(loaded, name):
    n, first, last, subjects, headline, species = EXPECTED[name]
    ds = loaded[name]
    assert ds.name == name and ds.kind == "rdms" and len(ds.stimuli) == n
    assert (ds.stimuli.ids[0], ds.stimuli.ids[-1]) == (first, last)
    assert list(ds.stimuli.ids) == sorted(ds.stimuli.ids)  # file order
    assert ds.rdms.area_order == tuple(subjects) == ds.area_order
    assert {a: r.shape for a, r in ds.rdms.rdms.items()} == {a: (k, n, n) for a, k in subjects.items()}
    assert ds.rdms.headline_areas == headline and ds.rdms.area_species == species
    assert ds.rdms.distance == "correlation"
    for r in ds.rdms.rdms.values():
        assert r.dtype == np.float64 and np.array_equal(r, np.swapaxes(r, 1, 2))
        assert not np.diagonal(r, axis1=1, axis2=2).any()


def test_group_mean_rdms_match_an_independent_read(loaded):
    """First entries of the group-mean RDMs, read here with numpy/scipy directly."""
    it92 = np.load(DATA / "algonauts2019/92images/fmri_IT_RDMs.npz")["Net_RDM"].mean(axis=0)
    assert np.allclose(loaded["algonauts2019-92"].rdms.rdms["IT"].mean(axis=0), it92, atol=1e-12)
    np.testing.assert_allclose(it92[0, 1:4], [0.43813209, 0.39572224, 0.41647309], atol=1e-8)
    brain = scipy.io.loadmat(DATA / "kriegeskorte2008/92_brainRDMs.mat", squeeze_me=True,
                             struct_as_record=False)["RDMs"]  # 4 subjects x 2 sessions
    sessions = np.array([[np.asarray(s.RDM) for s in row] for row in brain])
    hit = loaded["kriegeskorte2008-92"].rdms.rdms["hIT"]
    assert np.allclose(hit, sessions.mean(axis=1), atol=1e-12)  # each subject = mean of its two sessions
    np.testing.assert_allclose(hit.mean(axis=0)[0, 1:4], [0.935624, 0.7147688, 0.8741814], atol=1e-6)
    fig1 = scipy.io.loadmat(DATA / "kriegeskorte2008/Kriegeskorte_Neuron2008_supplementalData.mat",
                            squeeze_me=True, struct_as_record=False)["RDMs_mIT_hIT_fig1"]
    mit = loaded["kriegeskorte2008-92"].rdms.rdms["mIT"][0]
    assert np.allclose(mit, squareform(fig1[0].RDM), atol=1e-12)
    np.testing.assert_allclose(mit[0, 1:4], [0.96691272, 0.69978381, 1.01611076], atol=1e-7)
    # the paper's figure-1 human IT RDM is the group mean of the session-averaged subjects
    rho = scipy.stats.spearmanr(fig1[1].RDM, condensed(hit.mean(axis=0)[None])[0])[0]
    assert rho > 0.999999


def test_published_algonauts_noise_ceiling_is_reproduced(loaded):
    """Upper ceiling, Algonauts 2019 convention: mean over subjects of Spearman(subject, mean RDM)^2."""
    evc = condensed(loaded["algonauts2019-78"].rdms.rdms["EVC"])
    mine = rdm_noise_ceiling(evc, "spearman", "algonauts2019").upper
    by_scipy = np.mean([scipy.stats.spearmanr(s, evc.mean(axis=0))[0] ** 2 for s in evc])
    assert mine == pytest.approx(by_scipy, abs=1e-12)
    # published for this file (Net2Brain's noise_ceiling_log.json: 0.06397469419484077; Algonauts: 0.0640)
    assert mine == pytest.approx(0.06397469419484077, abs=1e-12)


def test_nili_ceiling_of_kriegeskorte_hit_matches_scipy(loaded):
    """Nili et al. upper bound: mean Spearman of each subject with the mean of the rank-transformed RDMs."""
    hit = condensed(loaded["kriegeskorte2008-92"].rdms.rdms["hIT"])
    pooled = scipy.stats.rankdata(hit, axis=1).mean(axis=0)
    by_scipy = np.mean([scipy.stats.spearmanr(s, pooled)[0] for s in hit])
    assert rdm_noise_ceiling(hit, "spearman", "nili").upper == pytest.approx(by_scipy, abs=1e-12)


def test_kriegeskorte_stimuli_are_the_published_pixels_with_labels(loaded):
    ds = loaded["kriegeskorte2008-92"]
    folder = ds.stimuli.paths[0].parent  # written once from the pinned .mat into the download cache
    assert (folder.parent.name, folder.parent.parent.name) == ("kriegeskorte2008-92", "downloads")
    for i in (0, 45, 91):  # the shared PNG copy holds the same pixels
        ours = np.asarray(Image.open(ds.stimuli.paths[i]))
        assert np.array_equal(ours, np.asarray(Image.open(DATA / f"kriegeskorte2008/stimuli/stim_{i + 1:02d}.png")))
    index = (DATA / "kriegeskorte2008/stimuli/index.csv").read_text().splitlines()[1:]
    assert ds.stimuli.labels == tuple(line.split(",")[2] for line in index)


def test_damaged_derived_stimulus_image_is_written_again(data_root, caplog):
    first = Kriegeskorte2008().load()
    damaged = first.stimuli.paths[10]
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated PNG
    again = Kriegeskorte2008().load()
    assert "damaged; writing them again" in caplog.text
    assert np.array_equal(np.asarray(Image.open(again.stimuli.paths[10])),
                          np.asarray(Image.open(DATA / "kriegeskorte2008/stimuli/stim_11.png")))
    assert again.digest == first.digest


def test_digest_does_not_depend_on_where_the_files_are(loaded, data_root, monkeypatch):
    monkeypatch.delenv("FRAMEWORK_DATA_DIR")
    own_folder = Algonauts2019Scenes78(data_dir=str(data_root / "algonauts2019" / "78images")).load()
    assert own_folder.digest == loaded["algonauts2019-78"].digest
    assert len({ds.digest for ds in loaded.values()}) == 3


def test_local_copy_with_other_bytes_is_refused(data_root, tmp_path):
    copy = tmp_path / "kriegeskorte2008"
    copy.mkdir()
    shutil.copy(data_root / "kriegeskorte2008/Kriegeskorte_Neuron2008_supplementalData.mat", copy)
    raw = bytearray((data_root / "kriegeskorte2008/92_brainRDMs.mat").read_bytes())
    raw[-1] ^= 0xFF
    (copy / "92_brainRDMs.mat").write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        Kriegeskorte2008(data_dir=str(tmp_path)).load()
    message = str(info.value)
    assert "\n" not in message and str(copy / "92_brainRDMs.mat") in message
    assert "not the published file's 1743f90a15e8" in message and "rsatoolbox" in message


def test_local_folder_without_the_files_names_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"algonauts2019/92images/fmri_EVC_RDMs.npz' \(from \$FRAMEWORK_DATA_DIR\) "
                                        r"does not exist"):
        Algonauts2019Objects92().load()
    with pytest.raises(DataError, match=r"data folder '.*nowhere' \(from --dataset-param "
                                        r"algonauts2019-78.data_dir\) does not exist"):
        Algonauts2019Scenes78(data_dir=str(tmp_path / "nowhere")).load()


@pytest.mark.parametrize("manifest", [ALGONAUTS_92, ALGONAUTS_78, KRIEGESKORTE_92], ids=lambda m: m.name)
def test_offline_without_local_copy_is_one_clear_line(manifest, monkeypatch, no_proxy):  # noqa: F811
    monkeypatch.delenv("FRAMEWORK_DATA_DIR", raising=False)
    offline = dataclasses.replace(manifest, source=dataclasses.replace(manifest.source, url=closed_port_url("/d/")))
    cls = type("Offline", (PublicDataset,), {"manifest": offline})
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        cls().load()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and message.startswith("Cannot download")
    assert offline.source.url in message and str(downloads_dir(manifest.name)) in message
    assert "FRAMEWORK_DATA_DIR=DIR" in message and f"--dataset-param {manifest.name}.data_dir=DIR" in message
    assert f"DIR/{manifest.folder}/" in message


def test_real_source_urls_are_pinned_to_commits():
    assert ALGONAUTS_78.source.url_of("fmri_IT_RDMs.npz") == (
        "https://raw.githubusercontent.com/cvai-roig-lab/Net2Brain/b59ed47dc88e3c120e43f5726ede126e902843e8/"
        "net2brain/tests/data/brain_data/fmri_IT_RDMs.npz")
    assert ALGONAUTS_78.source.url_of("stimuli/image_05.jpg").endswith("/tests/data/stimuli_data/image_05.jpg")
    assert KRIEGESKORTE_92.source.url_of("92_brainRDMs.mat") == (
        "https://raw.githubusercontent.com/rsagroup/rsatoolbox/f1f83cadb7243492a1aae7460466e0f0140b20ac/"
        "demos/92imageData/92_brainRDMs.mat")
    assert len(ALGONAUTS_92.files) == 2 + 92 and len(ALGONAUTS_78.files) == 2 + 78


def _serve_like_the_sources(server: FileServer) -> dict[str, type[PublicDataset]]:
    """Serve the shared files as each public source lays them out; dataset classes pointing at the server."""
    n2b = ALGONAUTS_78.source
    for rel in ALGONAUTS_78.files:
        server.add(f"/n2b/{n2b.remote_path(rel)}", (DATA / ALGONAUTS_78.folder / rel).read_bytes())
    for rel in KRIEGESKORTE_92.files:
        server.add(f"/rsa/{rel}", (DATA / KRIEGESKORTE_92.folder / rel).read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # Net2Brain's archive: one top folder, brain_data/ and stimuli_data/
        for rel in ALGONAUTS_92.files:
            zf.write(DATA / ALGONAUTS_92.folder / rel, f"92images/{ALGONAUTS_92.source.remote_path(rel)}")
    server.add("/92images.zip", buf.getvalue())
    urls = [(ALGONAUTS_92, server.url + "/92images.zip"), (ALGONAUTS_78, server.url + "/n2b/"),
            (KRIEGESKORTE_92, server.url + "/rsa/")]
    return {m.name: type("Served", (PublicDataset,), {"manifest": dataclasses.replace(
        m, source=dataclasses.replace(m.source, url=url))}) for m, url in urls}


def test_download_from_the_sources_gives_the_same_dataset(loaded, monkeypatch, no_proxy):  # noqa: F811
    monkeypatch.delenv("FRAMEWORK_DATA_DIR", raising=False)
    server = FileServer()
    try:
        served = _serve_like_the_sources(server)
        server.corrupt["/n2b/brain_data/fmri_IT_RDMs.npz"] = 1  # one damaged transfer: refused and retried
        for name, cls in served.items():
            ds = cls().load()
            assert ds.digest == loaded[name].digest
            for area, r in ds.rdms.rdms.items():
                assert np.array_equal(r, loaded[name].rdms.rdms[area])
            if name.startswith("algonauts"):
                assert ds.stimuli.paths[0].is_relative_to(downloads_dir(name))
        assert server.requests["/n2b/brain_data/fmri_IT_RDMs.npz"] == 2
        assert server.requests["/92images.zip"] == 1
        before = sum(server.requests.values())
        for cls in served.values():  # everything is in the cache now: no request
            cls().load()
        assert sum(server.requests.values()) == before
    finally:
        server.close()


def test_each_class_carries_its_manifest():
    assert {cls.manifest.name for cls in CLASSES.values()} == set(CLASSES)
    assert public.PublicParams().data_dir is None
