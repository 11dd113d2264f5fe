"""Nothing wrong ever comes from a cache: corrupted or edited entries are detected, discarded and rebuilt.

Covers the activation cache (flipped bytes, edited meta.json, entries without checksums), the
responses cache of the scheduler (``framework.target_io``), the demo dataset cache and the
shared helpers of ``framework.fileio`` (checksums remembered per process, stale temporary folders).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fake_plugins
from framework import fileio
from framework.activation_cache import ActivationCache
from framework.config import RunConfig
from framework.errors import DataError
from framework.fileio import CHECKSUMS_FILE, ChecksumError, verify_checksums, write_checksums
from framework.layer_stats import Need
from framework.scheduler import run
from framework.store import ResultsStore
from framework.target_io import load_target, save_target
from framework.types import Responses, SiteTable
from plugins.datasets.demo import DemoDataset
from test_activation_cache import FakeModel, _key, _stimuli

ROOT = Path(__file__).resolve().parents[1]
SMALL_DEMO = dict(n_images_per_category=4, n_subjects=2, n_sites=10)


def _flip_signs(path: Path, fraction: float = 0.5) -> None:
    """Flip the sign bit of the first ``fraction`` of the float32 values of a ``.npy`` file, in place."""
    arr = np.load(path, mmap_mode="r+")
    flat = arr.reshape(-1).view(np.uint32)
    flat[: max(1, int(len(flat) * fraction))] ^= np.uint32(0x80000000)
    arr.flush()
    del arr, flat


def _swap_ids_in_meta(path: Path) -> None:
    meta = json.loads(path.read_text())
    ids = meta["stimulus_ids"]
    ids[0], ids[1] = ids[1], ids[0]
    path.write_text(json.dumps(meta))


# ----------------------------------------------------------------------------------------
# activation cache
# ----------------------------------------------------------------------------------------
@pytest.fixture
def entry(tmp_path):
    """A cache with one full entry: (cache, key, stimuli, layers, {layer: values})."""
    cache = ActivationCache(tmp_path / "acts")
    stimuli, layers = _stimuli(6), ["wide", "narrow"]
    key = _key(cache, layers)
    acts = cache.extract(FakeModel(), stimuli, layers, key=key, batch_size=4)
    values = {layer: np.array(acts[layer]) for layer in layers}
    del acts
    return cache, key, stimuli, layers, values


def test_entry_records_checksums_of_meta_and_every_layer(entry):
    cache, key, *_ = entry
    record = json.loads((cache.path(key) / CHECKSUMS_FILE).read_text())
    assert record["algorithm"] == fileio.CHECKSUM_ALGORITHM
    assert set(record["files"]) == {"meta.json", "layer_000.npy", "layer_001.npy"}
    for name, item in record["files"].items():
        assert item["size"] == (cache.path(key) / name).stat().st_size and len(item["hash"]) == 32


def test_flipped_bytes_in_a_layer_file_are_detected_and_re_extracted(entry, caplog):
    cache, key, stimuli, layers, values = entry
    _flip_signs(cache.path(key) / "layer_000.npy")
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        assert cache.get(key) is None
    assert f"'{cache.path(key)}' is damaged" in caplog.text
    assert "layer_000.npy: content differs from the recorded xxh3_128 hash" in caplog.text
    assert not cache.path(key).exists()  # discarded, not served again
    assert [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")] == []
    model = FakeModel()
    acts = cache.extract(model, stimuli, layers, key=key)
    assert model.calls == 1 and all(np.array_equal(acts[x], values[x]) for x in layers)


def test_truncated_layer_file_names_the_sizes(entry, caplog):
    cache, key, *_ = entry
    path = cache.path(key) / "layer_001.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        assert cache.get(key) is None
    assert "layer_001.npy: 216 bytes, recorded 224 (truncated or replaced)" in caplog.text
    assert not path.exists()


def test_edited_meta_json_is_detected_by_its_checksum(entry, caplog):
    cache, key, stimuli, *_ = entry
    _swap_ids_in_meta(cache.path(key) / "meta.json")
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        assert cache.get(key) is None
    assert "meta.json: content differs" in caplog.text and not cache.path(key).exists()


def test_edited_meta_json_with_rewritten_checksums_is_caught_by_the_expected_ids(entry, caplog):
    cache, key, stimuli, layers, values = entry
    _swap_ids_in_meta(cache.path(key) / "meta.json")
    write_checksums(cache.path(key))  # the edit now passes the checksums...
    assert cache.get(key) is not None  # (a caller that does not say which ids it expects)
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        assert cache.get(key, stimulus_ids=stimuli.ids) is None  # ...but not the expected ids
    assert "meta.json has stimulus id 's01' at position 0, expected 's00'" in caplog.text
    model = FakeModel()
    acts = cache.extract(model, stimuli, layers, key=key)  # extract passes the ids itself
    assert model.calls == 1 and acts.stimulus_ids == stimuli.ids


def test_entry_of_an_older_version_without_checksums_is_rebuilt_once(entry, caplog):
    cache, key, stimuli, layers, values = entry
    (cache.path(key) / CHECKSUMS_FILE).unlink()
    model = FakeModel()
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        acts = cache.extract(model, stimuli, layers, key=key)
        assert model.calls == 1 and all(np.array_equal(acts[x], values[x]) for x in layers)
        cache.extract(model, stimuli, layers, key=key)
    assert model.calls == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no checksums.json (written by an older version" in warnings[0].getMessage()


def test_entry_is_hashed_once_per_process_and_a_later_change_is_caught(entry, monkeypatch, caplog):
    cache, key, *_ = entry
    monkeypatch.setattr(fileio, "RACY_NS", 20_000_000)  # 20 ms instead of 2 s, to keep the test short
    time.sleep(0.05)  # older than RACY_NS: a hash taken now may be reused
    hashed = []
    real = fileio.new_hasher

    def counting():
        hashed.append(1)
        return real()

    monkeypatch.setattr(fileio, "new_hasher", counting)
    fileio.forget_checksums()
    assert cache.get(key) is not None and len(hashed) == 3  # meta.json and two layers
    assert cache.get(key) is not None and cache.get(key) is not None and len(hashed) == 3
    _flip_signs(cache.path(key) / "layer_001.npy", fraction=0.01)
    with caplog.at_level(logging.WARNING, logger="framework.activation_cache"):
        assert cache.get(key) is None
    assert "layer_001.npy: content differs" in caplog.text


def test_a_hash_taken_right_after_a_write_is_not_reused(tmp_path, monkeypatch):
    # File times are coarse: a change right after hashing may keep the same times. A hash taken
    # within RACY_NS of the file's last change is therefore taken again at the next check.
    monkeypatch.setattr(fileio, "RACY_NS", 20_000_000)
    hashed = []
    real = fileio.new_hasher
    monkeypatch.setattr(fileio, "new_hasher", lambda: hashed.append(1) or real())
    path = tmp_path / "x.bin"
    path.write_bytes(b"a" * 1000)
    first = fileio.file_checksum(path)
    assert fileio.file_checksum(path) == first and len(hashed) == 2  # racy: read again
    time.sleep(0.05)
    assert fileio.file_checksum(path) == first and len(hashed) == 3
    assert fileio.file_checksum(path) == first and len(hashed) == 3  # settled: remembered
    path.write_bytes(b"b" * 1000)  # same size, later times
    assert fileio.file_checksum(path) != first and len(hashed) == 4


# ----------------------------------------------------------------------------------------
# the scheduler, end to end
# ----------------------------------------------------------------------------------------
def _config(tmp_path, **kw) -> RunConfig:
    fields = dict(dataset="fake-responses", models=["fake-net"], signals=["resp"], metrics=["fake-corr"],
                  store=tmp_path / "store", progress=False)
    fields.update(kw)
    return RunConfig(**fields)


def _values(tmp_path, sleep: float) -> dict[str, float]:
    with ResultsStore(tmp_path / "store") as store:
        return {r["signal"]: r["value"] for r in store.rows() if r["status"] == "ok"
                and r["provenance"]["metric"]["params"]["sleep"] == sleep}


def _user_cache(sub: str) -> Path:
    """A folder of the user cache (every test has its own, see conftest)."""
    return Path(os.environ["FRAMEWORK_CACHE_DIR"]) / sub


def _counting(monkeypatch, cls, method: str) -> list[str]:
    calls: list[str] = []
    original = getattr(cls, method)

    def wrapper(self, *a, **k):
        calls.append(method)
        return original(self, *a, **k)

    monkeypatch.setattr(cls, method, wrapper)
    return calls


@pytest.mark.parametrize("damage", ["flip layer bytes", "swap meta ids"])
def test_scheduler_re_extracts_a_damaged_activation_entry(fake_registry, tmp_path, monkeypatch, caplog, damage):
    extracts = _counting(monkeypatch, fake_plugins.FakeModel, "extract")
    run(_config(tmp_path), registry=fake_registry)
    before = _values(tmp_path, 0.0)
    assert extracts == ["extract"] and set(before) == {"resp"}
    # fake-corr declares the uncentred Gram statistic: its entry is what the scores come from
    (entry_dir,) = _user_cache("activations").glob(f"*@{Need.gram(centered=False).id}")
    if damage == "flip layer bytes":
        for layer_file in sorted(entry_dir.glob("L*_row_sums.npy")):
            _flip_signs(layer_file)
    else:
        _swap_ids_in_meta(entry_dir / "meta.json")
    # new cells (another metric parameter) on the same activations key
    with caplog.at_level(logging.WARNING, logger="framework"):
        summary = run(_config(tmp_path, metric_params={"fake-corr": {"sleep": 0.001}}), registry=fake_registry)
    assert summary.n_done == 1 and summary.n_failed == 0
    assert _values(tmp_path, 0.001) == before  # the damaged entry would change the score
    assert extracts == ["extract", "extract"]  # re-extracted, not served
    assert f"Activation cache entry '{entry_dir}' is damaged" in caplog.text


def test_scheduler_recomputes_a_damaged_responses_entry(fake_registry, tmp_path, monkeypatch, caplog):
    computes = _counting(monkeypatch, fake_plugins.FakeSignal, "compute")
    run(_config(tmp_path), registry=fake_registry)
    before = _values(tmp_path, 0.0)
    (path,) = _user_cache("responses").glob("*.npz")
    # an edit through numpy keeps valid zip CRCs: swap two stimulus ids in the meta, keep the checksum
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["stimulus_ids"][0], meta["stimulus_ids"][1] = meta["stimulus_ids"][1], meta["stimulus_ids"][0]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="framework"):
        run(_config(tmp_path, metric_params={"fake-corr": {"sleep": 0.001}}), registry=fake_registry)
    assert _values(tmp_path, 0.001) == before  # the swapped ids would change the score
    assert computes == ["compute", "compute"]
    assert "Cached signal 'resp'" in caplog.text and "does not match its xxh3_128 checksum" in caplog.text
    load_target(path)  # rewritten by the recomputation, valid again


# ----------------------------------------------------------------------------------------
# responses cache (framework.target_io)
# ----------------------------------------------------------------------------------------
@pytest.fixture
def target_file(tmp_path):
    rng = np.random.default_rng(0)
    sites = SiteTable(("s1/a", "s1/b", "s1/c"), ("s1",) * 3, ("17", "18", "19"))
    target = Responses(rng.standard_normal((5, 3)).astype(np.float32), sites, tuple("vwxyz"),
                       rng.standard_normal((2, 5, 3)).astype(np.float32), info={"band": "lowgamma"})
    path = tmp_path / "t.npz"
    save_target(target, path)
    return target, path


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


def test_target_round_trip_is_verified(target_file):
    target, path = target_file
    back = load_target(path)
    assert np.array_equal(back.data, target.data) and np.array_equal(back.repetitions, target.repetitions)
    assert back.stimulus_ids == target.stimulus_ids and back.info == target.info


def test_flipped_byte_in_target_data_is_caught_by_the_zip_crc(target_file):
    _, path = target_file
    raw = bytearray(path.read_bytes())
    at = raw.find(np.asarray(target_file[0].data).tobytes()[:16])
    raw[at + 7] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"'.*t\.npz' is unreadable \(BadZipFile: Bad CRC-32 for file 'data\.npy'\)"):
        load_target(path)


@pytest.mark.parametrize("edit", ["data", "repetitions", "meta ids", "drop repetitions"])
def test_target_rewritten_with_edits_fails_its_checksum(target_file, edit):
    target, path = target_file
    if edit == "data":
        _rewrite(path, data=target.data * 2)
    elif edit == "repetitions":
        _rewrite(path, repetitions=target.repetitions[::-1].copy())
    elif edit == "drop repetitions":
        _rewrite(path, repetitions=None)
    else:
        with np.load(path) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
        meta["stimulus_ids"] = meta["stimulus_ids"][::-1]
        _rewrite(path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    with pytest.raises(DataError, match=r"does not match its xxh3_128 checksum: its arrays or meta changed"):
        load_target(path)


def test_target_without_checksum_is_unverifiable(target_file):
    _, path = target_file
    _rewrite(path, checksum=None)
    with pytest.raises(DataError, match=r"has no checksum \(written by an older version\)"):
        load_target(path)


def test_truncated_target_is_a_data_error(target_file):
    _, path = target_file
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"is unreadable \(BadZipFile"):
        load_target(path)


# ----------------------------------------------------------------------------------------
# demo dataset cache
# ----------------------------------------------------------------------------------------
@pytest.fixture
def demo(tmp_path):
    """A generated small demo: (plugin, {file name: bytes})."""
    plugin = DemoDataset(cache_dir=tmp_path / "datasets", **SMALL_DEMO)
    plugin.load()
    return plugin, {p.name: p.read_bytes() for p in plugin.path.iterdir()}


def _assert_regenerated_identically(plugin, files, caplog, problem: str) -> None:
    with caplog.at_level(logging.WARNING, logger="framework.datasets.demo"):
        ds = plugin.load()
        ep = ds.epochs["s01"]()
    assert f"The cached demo dataset in '{plugin.path}' is damaged" in caplog.text and problem in caplog.text
    assert ds.digest == plugin.key
    assert {p.name: p.read_bytes() for p in plugin.path.iterdir()} == files
    with np.load(plugin.path / "s01.npz") as z:
        np.testing.assert_array_equal(ep.get_data(), z["data"].astype(np.float64))
    assert [p.name for p in plugin.cache_dir.iterdir()] == [plugin.path.name]  # no temporary folders left


@pytest.mark.parametrize("name", ["images.npy", "s01.npz", "truth.npz"])
def test_demo_flipped_bytes_are_regenerated(demo, caplog, name):
    plugin, files = demo
    path = plugin.path / name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    _assert_regenerated_identically(plugin, files, caplog, f"{name}: content differs")


def test_demo_truncated_file_is_regenerated(demo, caplog):
    plugin, files = demo
    path = plugin.path / "s02.npz"
    path.write_bytes(files["s02.npz"][:5000])
    _assert_regenerated_identically(plugin, files, caplog, f"s02.npz: 5000 bytes, recorded {len(files['s02.npz'])}")


def test_demo_edited_meta_and_missing_file_are_regenerated(demo, caplog):
    plugin, files = demo
    meta = json.loads(files["meta.json"])
    meta["ids"][0], meta["ids"][1] = meta["ids"][1], meta["ids"][0]
    (plugin.path / "meta.json").write_text(json.dumps(meta, indent=1))
    (plugin.path / "truth.npz").unlink()
    _assert_regenerated_identically(plugin, files, caplog, "meta.json: content differs")
    assert "truth.npz: missing" in caplog.text


def test_demo_of_an_older_version_without_checksums_is_regenerated(demo, caplog):
    plugin, files = demo
    (plugin.path / CHECKSUMS_FILE).unlink()
    _assert_regenerated_identically(plugin, files, caplog, "no checksums.json")


def test_demo_stale_temporary_folders_are_removed_by_the_next_generation(tmp_path):
    cache_dir = tmp_path / "datasets"
    cache_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = cache_dir / f".demo-tmp-0123456789abcdef-{host}-{dead.pid}-deadbeef"
    live = cache_dir / f".demo-tmp-0123456789abcdef-{host}-{os.getpid()}-cafecafe"
    legacy = cache_dir / ".demo-tmp-k2j4_8x1"  # tempfile.mkdtemp name of an older version, a day old
    for d in (stale, live, legacy):
        d.mkdir()
        (d / "images.npy").write_bytes(b"partial")
    os.utime(legacy, (0, 0))
    plugin = DemoDataset(cache_dir=cache_dir, **SMALL_DEMO)
    plugin.load()
    assert not stale.exists() and not legacy.exists() and live.exists()


def test_demo_generation_killed_midway_is_cleaned_up(tmp_path):
    cache_dir = tmp_path / "datasets"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from plugins.datasets.demo import DemoDataset\n"
        "def slow(self, target):\n"
        "    (target / 'images.npy').write_bytes(b'partial')\n"
        "    time.sleep(600)\n"
        "DemoDataset._generate = slow\n"
        f"DemoDataset(cache_dir={str(cache_dir)!r}, **{SMALL_DEMO!r}).load()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not list(cache_dir.glob(".demo-tmp-*/images.npy")):
            assert proc.poll() is None and time.monotonic() < deadline, "generation did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (left,) = list(cache_dir.glob(".demo-tmp-*"))
    assert f"-{proc.pid}-" in left.name
    plugin = DemoDataset(cache_dir=cache_dir, **SMALL_DEMO)
    plugin.load()
    assert not left.exists() and [p.name for p in cache_dir.iterdir()] == [plugin.path.name]


# ----------------------------------------------------------------------------------------
# the helpers
# ----------------------------------------------------------------------------------------
def test_verify_checksums_reports_every_problem(tmp_path):
    for name, data in (("a.bin", b"aaaa"), ("b.bin", b"bbbb"), ("c.bin", b"cccc")):
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".hidden").write_bytes(b"not recorded")
    assert set(write_checksums(tmp_path)) == {"a.bin", "b.bin", "c.bin"}
    verify_checksums(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"aaab")
    (tmp_path / "b.bin").write_bytes(b"bb")
    (tmp_path / "c.bin").unlink()
    with pytest.raises(ChecksumError) as info:
        verify_checksums(tmp_path)
    assert info.value.problems == ["a.bin: content differs from the recorded xxh3_128 hash (bytes changed after "
                                   "it was written)", "b.bin: 2 bytes, recorded 4 (truncated or replaced)",
                                   "c.bin: missing"]
    with pytest.raises(ChecksumError, match=r"b\.bin: 2 bytes"):
        verify_checksums(tmp_path, names=["b.bin"])
    (tmp_path / CHECKSUMS_FILE).write_text("{not json")
    with pytest.raises(ChecksumError, match=r"checksums\.json is unreadable \(JSONDecodeError"):
        verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS_FILE).write_text(json.dumps({"algorithm": "md5", "files": {}}))
    with pytest.raises(ChecksumError, match="uses hash 'md5', expected 'xxh3_128'"):
        verify_checksums(tmp_path)


def test_file_checksum_is_xxh3_128_of_the_bytes(tmp_path):
    import xxhash

    data = np.random.default_rng(0).bytes(3 * fileio.CHUNK_BYTES + 17)  # several chunks and a remainder
    (tmp_path / "x").write_bytes(data)
    assert fileio.file_checksum(tmp_path / "x") == xxhash.xxh3_128(data).hexdigest()
