"""Weights are never unpickled, and every bad weights input is one clear DataError line.

* the torch hub / Hugging Face cache file is checked against the SHA-256 its name carries
  BEFORE it is read; a pickle planted under the official name is refused and never runs;
* a file with a matching name is still read with ``torch.load(weights_only=True)`` only: a
  pickle that would run code is refused, never executed (hub cache and ``--weights-file``);
* every bad ``--weights-file`` (truncated, wrong architecture, wrong suffix, bare tensor, empty,
  directory, text, pickled objects) is a :class:`DataError` naming the file, the model and the
  fix, in one line, without torch's "weights_only=False" advice;
* offline, ``weights="pretrained"`` fails after a short probe naming the URL, the cache path and
  the overrides; ``weights="auto"`` still falls back to seeded random init;
* duplicate layers are refused; stimuli much smaller than the input are reported once.

The payloads only create a marker file when unpickled (never anything destructive).
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import plugins.models._timm as tm
from framework.errors import ConfigError, DataError
from framework.types import StimulusSet
from plugins.models import _torch_common as common
from plugins.models.base import TorchModulePlugin
from plugins.models.timm_models import TimmModel
from plugins.models.torchvision_models import TorchvisionModel

SMALL = "squeezenet1_0"          # a small torchvision network (1.2 M parameters) for weights files
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


# ------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------
class _Touch:
    """Unpickling this calls ``open(marker, "w")``, i.e. creates the marker file (and nothing else)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_payload(path: Path, marker: Path, writer: str) -> Path:
    """A state-dict-shaped pickle that runs code when unpickled, written by torch.save or plain pickle.

    Checked to be a real threat: plain unpickling creates the marker (removed again)."""
    payload = {"features.0.weight": _Touch(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "torch.save":
        torch.save(payload, path)
        torch.load(path, weights_only=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
        pickle.loads(path.read_bytes())
    assert marker.exists(), "the payload should create the marker when unpickled"
    marker.unlink()
    return path


def _one_line(exc: BaseException, *parts: str) -> str:
    """Check the house rules of a weights error and that it says each of ``parts``; return the message."""
    msg = str(exc)
    assert type(exc) is DataError, f"{type(exc).__name__}: {msg}"
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert "weights_only=False" not in msg and "Traceback" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in: {msg}"
    return msg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def caches(tmp_path, monkeypatch, offline):
    """Empty torch hub and Hugging Face caches in ``tmp_path``; no network (probe and downloads fail)."""
    import huggingface_hub.constants as hf_constants

    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(tm, "_host_reachable", common.host_unreachable)  # the offline probe of `offline`
    return {"torch_hub": torch_home / "hub" / "checkpoints", "hf": tmp_path / "hf", "tried": offline}


@pytest.fixture
def torch_loads(monkeypatch):
    """Every path given to ``torch.load`` (which still runs)."""
    calls: list[str] = []
    real = torch.load

    def spy(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def _plant_hf(hf_root: Path, repo: str, filename: str, data: bytes, *, blob: str | None = None) -> Path:
    """Put ``data`` in a Hugging Face cache as huggingface_hub lays it out: a blob named by its SHA-256
    (or ``blob``) and a link to it from ``snapshots/<commit>/<filename>``. Returns the link."""
    folder = hf_root / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    blob_name = blob or hashlib.sha256(data).hexdigest()
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "blobs" / blob_name).write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    link = folder / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("..") / ".." / "blobs" / blob_name)
    return link


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Seeded state dicts written to disk: the small network (.pth, .safetensors) and a resnet18."""
    import torchvision
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    src = TorchvisionModel(name=SMALL, arch=SMALL, weights="random", seed=5)
    state = {k: v.contiguous() for k, v in src._ready().state_dict().items()}
    torch.save(state, root / "small.pth")
    save_file(state, str(root / "small.safetensors"))
    resnet = common.seeded(lambda: torchvision.models.resnet18(), 1)
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(root / "resnet18.safetensors"))
    return {"root": root, "state": state, "digest": common.state_dict_digest(state)}


def _small(path, **kw) -> TorchvisionModel:
    return TorchvisionModel(name=SMALL, arch=SMALL, weights_file=path, **kw)


# ------------------------------------------------------------------------------------------
# 1. the torch hub cache (torchvision): hash before reading, never unpickle
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_hub_payload_under_the_official_name_is_refused_before_reading(caches, tmp_path, torch_loads, writer):
    marker = tmp_path / "marker"
    hub_file = _write_payload(caches["torch_hub"] / ALEXNET_FILE, marker, writer)
    torch_loads.clear()
    with pytest.raises(DataError) as info:
        TorchvisionModel(name="alexnet", arch="alexnet", weights="pretrained").weights_info()
    _one_line(info.value, str(hub_file), "model 'alexnet'", "is not the published file",
              f"starts with '{_sha(hub_file)[:8]}'", "its name says '7be5be79'",
              "Delete it (it will be downloaded again)", "--weights-file alexnet=PATH", "--weights random")
    assert torch_loads == []                               # refused before anything read it as weights
    assert not marker.exists()
    assert caches["tried"] == []                           # the file was there: no download
    auto = TorchvisionModel(name="alexnet", arch="alexnet", weights="auto").weights_info()
    assert auto.source == "random" and "is not the published file" in auto.detail
    assert not marker.exists() and hub_file.is_file()      # the user's file is left for them to inspect


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_hub_payload_with_a_matching_name_is_refused_unread(caches, tmp_path, monkeypatch, writer):
    """A file whose name carries its real hash passes the hash check; weights_only=True still refuses it."""
    marker = tmp_path / "marker"
    src = _write_payload(tmp_path / "payload.pth", marker, writer)
    hub_file = caches["torch_hub"] / f"alexnet-owt-{_sha(src)[:8]}.pth"
    hub_file.parent.mkdir(parents=True, exist_ok=True)
    src.rename(hub_file)
    monkeypatch.setattr(TorchvisionModel, "cached_weights_path", lambda self: hub_file)
    with pytest.raises(DataError) as info:
        TorchvisionModel(name="alexnet", arch="alexnet", weights="pretrained").weights_info()
    _one_line(info.value, str(hub_file), "cannot be loaded safely",
              "pickled Python objects other than tensors (", "refused without running them", "Delete it")
    assert not marker.exists()


def test_hub_checkpoint_with_a_matching_name_loads(caches, files, monkeypatch):
    """The positive control: a genuine state dict whose name carries its hash is loaded, digest recorded."""
    src = files["root"] / "small.pth"
    hub_file = caches["torch_hub"] / f"squeezenet1_0-{_sha(src)[:8]}.pth"
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(src.read_bytes())
    monkeypatch.setattr(TorchvisionModel, "cached_weights_path", lambda self: hub_file)
    model = TorchvisionModel(name=SMALL, arch=SMALL, weights="pretrained", seed=0)
    info = model.weights_info()
    assert info.source == "pretrained" and info.digest == _sha(hub_file)
    assert common.state_dict_digest(model._ready()) == files["digest"]


def test_hub_payload_fails_a_run_before_any_work(caches, tmp_path, capsys):
    """Through the CLI: exit 2 and one line naming the file, before anything is computed or recorded."""
    from framework.cli import main

    marker = tmp_path / "marker"
    hub_file = _write_payload(caches["torch_hub"] / ALEXNET_FILE, marker, "torch.save")
    logger = logging.getLogger("framework")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        code = main(["run", "--weights", "pretrained", "--models", "alexnet", "--signals", "lowgamma@150-350",
                     "--metrics", "rsa", "--no-progress", "--store", str(tmp_path / "store")])
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if str(hub_file) in ln]
    assert len(lines) == 1 and "is not the published file" in lines[0] and "Delete it" in lines[0], err
    assert "Traceback" not in err and "Extracted" not in err and "Computing" not in err
    assert not marker.exists()


def test_pretrained_offline_is_a_quick_data_error(caches):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        TorchvisionModel(name="alexnet", arch="alexnet", weights="pretrained").weights_info()
    _one_line(info.value, "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "offline (test)",
              f"Place that file at '{caches['torch_hub'] / ALEXNET_FILE}'", "--weights-file alexnet=PATH",
              "--weights random")
    assert time.perf_counter() - t0 < 10
    assert caches["tried"] == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]  # probe only
    auto = TorchvisionModel(name="alexnet", arch="alexnet", weights="auto", seed=2).weights_info()
    assert auto.source == "random" and auto.label == "random init (seed 2)" and "offline (test)" in auto.detail


def test_a_damaged_download_is_not_kept(caches, files, monkeypatch):
    """Online, a download whose SHA-256 does not match the name is refused and leaves nothing behind."""
    import io

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    body = (files["root"] / "small.pth").read_bytes()
    monkeypatch.setattr(common, "host_unreachable", lambda url, timeout=None: None)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(body))
    with pytest.raises(DataError) as info:
        TorchvisionModel(name="alexnet", arch="alexnet", weights="pretrained").weights_info()
    _one_line(info.value, "cannot be downloaded", "does not start with '7be5be79'")
    assert not caches["torch_hub"].exists() or list(caches["torch_hub"].iterdir()) == []


def test_host_probe_is_bounded_and_honours_proxies(monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert common.host_unreachable(f"http://127.0.0.1:{port}/w.pth") is None
        # behind a proxy, the proxy is what must answer (the weights host itself does not resolve)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        assert common.host_unreachable("https://weights.invalid/w.pth") is None
        monkeypatch.delenv("https_proxy")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    t0 = time.perf_counter()
    reason = common.host_unreachable(f"http://127.0.0.1:{free}/w.pth")
    assert reason and f"127.0.0.1:{free} unreachable" in reason and time.perf_counter() - t0 < 5
    seen = []

    def hangs(address, timeout=None):  # a firewall that drops packets: only the timeout ends it
        seen.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    assert "timed out" in common.host_unreachable("https://download.pytorch.org/x.pth")
    assert seen and 0 < seen[0] <= common.PROBE_TIMEOUT_S


# ------------------------------------------------------------------------------------------
# 1b. timm: the Hugging Face and torch hub caches
# ------------------------------------------------------------------------------------------
def test_timm_hf_payload_is_refused_unread(caches, tmp_path):
    marker = tmp_path / "marker"
    data = _write_payload(tmp_path / "payload.bin", marker, "torch.save").read_bytes()
    link = _plant_hf(caches["hf"], "timm/resnet18.a1_in1k", "pytorch_model.bin", data)
    with pytest.raises(DataError) as info:
        TimmModel(name="timm:resnet18", weights="pretrained").weights_info()
    _one_line(info.value, str(link), "cannot be loaded safely", "pickled Python objects other than tensors",
              "--weights-file timm:resnet18=PATH", "--weights random")
    assert not marker.exists()


def test_timm_hf_blob_that_is_not_its_hash_is_refused(caches, tmp_path):
    from safetensors.torch import save_file

    src = TimmModel(name="timm:resnet18", weights="random", seed=3)
    save_file({k: v.contiguous() for k, v in src._ready().state_dict().items()}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    wrong = hashlib.sha256(b"the published file").hexdigest()
    link = _plant_hf(caches["hf"], "timm/resnet18.a1_in1k", "model.safetensors", data, blob=wrong)
    with pytest.raises(DataError) as info:
        TimmModel(name="timm:resnet18", weights="pretrained").weights_info()
    actual = _sha(tmp_path / "w.safetensors")
    _one_line(info.value, str(link), "is not the published file", f"starts with '{actual[:16]}'",
              f"its name says '{wrong[:16]}'", "Delete it")


def test_timm_hf_cache_file_is_what_gets_loaded(caches, tmp_path):
    """The positive control: a cached model.safetensors is loaded by timm (pretrained), digest recorded."""
    from safetensors.torch import save_file

    src = TimmModel(name="timm:resnet18", weights="random", seed=3)
    save_file({k: v.contiguous() for k, v in src._ready().state_dict().items()}, str(tmp_path / "w.safetensors"))
    _plant_hf(caches["hf"], "timm/resnet18.a1_in1k", "model.safetensors", (tmp_path / "w.safetensors").read_bytes())
    model = TimmModel(name="timm:resnet18", weights="pretrained", seed=0)
    info = model.weights_info()
    assert info.source == "pretrained" and info.digest == _sha(tmp_path / "w.safetensors")
    assert common.state_dict_digest(model._ready()) == common.state_dict_digest(src._ready())
    assert caches["tried"] == []


def test_timm_torch_hub_payload_is_refused_before_reading(caches, tmp_path, torch_loads):
    marker = tmp_path / "marker"
    hub_file = _write_payload(caches["torch_hub"] / "resnet18_a1_0-d63eafa0.pth", marker, "pickle")
    torch_loads.clear()
    with pytest.raises(DataError) as info:
        TimmModel(name="timm:resnet18", weights="pretrained").weights_info()
    _one_line(info.value, str(hub_file), "is not the published file", "its name says 'd63eafa0'")
    assert torch_loads == [] and not marker.exists()


def test_timm_offline_names_the_cache_and_the_overrides(caches, monkeypatch):
    with pytest.raises(DataError) as info:
        TimmModel(name="timm:resnet18", weights="pretrained").weights_info()
    _one_line(info.value, "offline", "timm/resnet18.a1_in1k", str(caches["hf"] / "models--timm--resnet18.a1_in1k"),
              "--weights-file timm:resnet18=PATH", "--weights random")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caches["tried"].clear()
    with pytest.raises(DataError) as info:
        TimmModel(name="timm:resnet18", weights="pretrained").weights_info()
    _one_line(info.value, "HF_HUB_OFFLINE is set")
    assert caches["tried"] == []                           # no probe, no download
    auto = TimmModel(name="timm:resnet18", weights="auto", seed=1).weights_info()
    assert auto.source == "random" and "fell back" in auto.detail


# ------------------------------------------------------------------------------------------
# 1c. third-party networks (TorchModulePlugin): the same safe download for their own weights
# ------------------------------------------------------------------------------------------
class _TinyPlugin(TorchModulePlugin):
    """A third-party network whose pretrained weights come from ``url`` through ``load_from_url``."""

    default_layer_map = {"conv": "1", "logits": "4"}
    input_size = 32
    url = "https://weights.example.org/tiny-00000000.pth"

    def build_module(self):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, 2))

    def load_pretrained(self, module):
        return self.load_from_url(module, self.url, label="tiny test weights")


def test_third_party_load_from_url(caches, tmp_path, monkeypatch):
    state = _TinyPlugin(name="tiny", weights="random", seed=4)._ready().state_dict()
    src = _save(dict(state), tmp_path / "tiny.pth")
    url = f"https://weights.example.org/tiny-{_sha(src)[:8]}.pth"
    monkeypatch.setattr(_TinyPlugin, "url", url)
    with pytest.raises(DataError) as info:                 # offline, nothing cached
        _TinyPlugin(name="tiny", weights="pretrained").weights_info()
    _one_line(info.value, url, str(common.hub_cache_path(url)), "--weights-file tiny=PATH", "--weights random")
    common.hub_cache_path(url).parent.mkdir(parents=True)
    src.rename(common.hub_cache_path(url))
    model = _TinyPlugin(name="tiny", weights="pretrained", seed=0)
    info = model.weights_info()
    assert info.source == "pretrained" and info.label == "tiny test weights"
    assert info.digest == _sha(common.hub_cache_path(url))
    assert common.state_dict_digest(model._ready()) == common.state_dict_digest(state)


@pytest.mark.parametrize("named", ["official", "matching"])
def test_third_party_cache_payload_is_refused(caches, tmp_path, monkeypatch, named):
    marker = tmp_path / "marker"
    src = _write_payload(tmp_path / "p.pth", marker, "torch.save")
    prefix = "0123abcd" if named == "official" else _sha(src)[:8]
    url = f"https://weights.example.org/tiny-{prefix}.pth"
    monkeypatch.setattr(_TinyPlugin, "url", url)
    common.hub_cache_path(url).parent.mkdir(parents=True)
    src.rename(common.hub_cache_path(url))
    with pytest.raises(DataError) as info:
        _TinyPlugin(name="tiny", weights="pretrained").weights_info()
    _one_line(info.value, str(common.hub_cache_path(url)),
              "is not the published file" if named == "official" else "cannot be loaded safely")
    assert not marker.exists()


def test_third_party_loader_failure_is_a_data_error(monkeypatch):
    def broken(self, module):
        raise RuntimeError("checkpoint server said no\nsecond line")

    monkeypatch.setattr(_TinyPlugin, "load_pretrained", broken)
    with pytest.raises(DataError) as info:
        _TinyPlugin(name="tiny", weights="pretrained").weights_info()
    _one_line(info.value, "model 'tiny'", "_TinyPlugin.load_pretrained (RuntimeError: checkpoint server said no "
              "second line)", "--weights random")
    auto = _TinyPlugin(name="tiny", weights="auto", seed=1).weights_info()
    assert auto.source == "random" and "checkpoint server said no" in auto.detail


# ------------------------------------------------------------------------------------------
# 2. --weights-file: code never runs, every bad file is one clear line
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix,writer", [(".pt", "torch.save"), (".pth", "pickle"), (".pt", "pickle")])
def test_weights_file_payload_is_refused_unread(tmp_path, suffix, writer):
    marker = tmp_path / "marker"
    path = _write_payload(tmp_path / f"payload{suffix}", marker, writer)
    for model in (_small(path), TimmModel(name="timm:resnet18", weights_file=path)):
        with pytest.raises(DataError) as info:
            model.weights_info()
        _one_line(info.value, str(path), f"model '{model.name}'", "pickled Python objects other than tensors",
                  "from a source you trust", f"--weights-file {model.name}=PATH")
    assert not marker.exists()


def _cut(src: Path, dst: Path, n_bytes: int | None = None) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2 if n_bytes is None else n_bytes])
    return dst


#: (id, how to make the file from the fixture's folder and state dict, what the message must say)
BAD_FILES = [
    ("truncated-pth", lambda d, s: _cut(d / "small.pth", d / "cut.pth"), ["truncated or corrupt"]),
    ("truncated-safetensors", lambda d, s: _cut(d / "small.safetensors", d / "cut.safetensors"),
     ["truncated or corrupt"]),
    ("truncated-header-pth", lambda d, s: _cut(d / "small.pth", d / "head.pth", 40), ["truncated or corrupt"]),
    ("truncated-header-safetensors", lambda d, s: _cut(d / "small.safetensors", d / "head.safetensors", 5),
     ["truncated or corrupt"]),
    ("bare-tensor", lambda d, s: _save(s["features.0.weight"], d / "tensor.pt"),
     ["single tensor of shape (96, 3, 7, 7)", "not a state dict", "model.state_dict()"]),
    ("list", lambda d, s: _save(list(s.values()), d / "list.pt"), ["holds a list, not a state dict"]),
    ("non-tensor-entries", lambda d, s: _save({"epoch": 3, "arch": "x", **s}, d / "mixed.pt"),
     ["2 of 54 entries that are not named tensors", "'epoch' (int)", "no 'state_dict'/'model_state_dict'/'model'"]),
    ("wrapper-with-non-tensors", lambda d, s: _save({"state_dict": {"lr": 0.1, **s}}, d / "wrapped.pt"),
     ["(under 'state_dict')", "'lr' (float)"]),
    ("empty-dict", lambda d, s: _save({}, d / "nothing.pt"), ["holds an empty dict"]),
    ("empty-safetensors", lambda d, s: _save_st({}, d / "nothing.safetensors"), ["holds an empty dict"]),
    ("text-pt", lambda d, s: _text(d / "notes.pt"), ["is a text file (it starts with 'model: squeezenet"]),
    ("text-safetensors", lambda d, s: _text(d / "notes.safetensors"), ["is a text file"]),
    ("whole-model", lambda d, s: _save(torch.nn.Linear(2, 2), d / "model.pt"),
     ["pickled Python object (torch.nn.modules.linear.Linear", "model.state_dict()"]),
    ("safetensors-named-pt", lambda d, s: _copy(d / "small.safetensors", d / "st.pt"),
     ["it is a safetensors file, not a torch.save file", "Rename it to 'st.safetensors'"]),
    ("torch-save-named-safetensors", lambda d, s: _copy(d / "small.pth", d / "ts.safetensors"),
     ["it is a torch.save file, not a safetensors file", "Rename it to 'ts.pt'"]),
    ("suffix-bin", lambda d, s: _copy(d / "small.pth", d / "pytorch_model.bin"),
     ["has suffix '.bin'", "expected one of .safetensors, .pt, .pth", "renamed to .pt"]),
    ("suffix-txt", lambda d, s: _text(d / "weights.txt"), ["has suffix '.txt'"]),
    ("no-suffix", lambda d, s: _copy(d / "small.pth", d / "weights"), ["has suffix ''"]),
    ("empty-file", lambda d, s: _empty(d / "empty.pth"), ["is empty (0 bytes)"]),
    ("directory", lambda d, s: _folder(d / "checkpoints"), ["is a directory, not a file",
                                                            "(it holds small.pth)"]),
    ("missing", lambda d, s: d / "missing.safetensors", ["does not exist"]),
    ("wrong-architecture", lambda d, s: d / "resnet18.safetensors",
     ["does not fit model", "16 tensors expected, 122 in file", "16 missing keys (e.g. features.0.weight",
      "122 unexpected keys (e.g. bn1.", "another architecture"]),
    ("shape-mismatch", lambda d, s: _save({**s, "classifier.1.weight": s["classifier.1.weight"][:10],
                                          "classifier.1.bias": s["classifier.1.bias"][:10]}, d / "head.pth"),
     ["2 shape or dtype mismatches (e.g. classifier.1.weight: file (10, 512, 1, 1) vs model (1000, 512, 1, 1)"]),
]


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _save_st(state, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path))
    return path


def _text(path: Path) -> Path:
    path.write_text("model: squeezenet1_0\nweights: see the shared drive\n")
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    (path / "small.pth").write_bytes(b"x")
    return path


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_weights_file_is_one_clear_data_error(files, case):
    _, make, parts = case
    path = make(files["root"], files["state"])
    arch = "alexnet" if "resnet18" in path.name else SMALL
    with pytest.raises(DataError) as info:  # at construction (path checks) or on weights_info (contents)
        TorchvisionModel(name=arch, arch=arch, weights="random", weights_file=path).weights_info()
    _one_line(info.value, f"'{path}'", f"model '{arch}'", *parts)
    assert f"--weights-file {arch}=" in str(info.value) or "drop the option" in str(info.value)


@pytest.mark.parametrize("layout", ["state_dict", "model", "model_state_dict", "module.", "safetensors"])
def test_checkpoint_layouts_that_are_accepted(files, tmp_path, layout):
    """Today's behaviour, kept: a training checkpoint's weights under a usual key, DataParallel names."""
    state = files["state"]
    if layout == "safetensors":
        path = files["root"] / "small.safetensors"
    elif layout == "module.":
        path = _save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    else:
        path = _save({layout: state, "epoch": 90, "optimizer": {"lr": 0.01}}, tmp_path / "ckpt.pth")
    model = _small(path, seed=99)
    info = model.weights_info()
    assert info.source == "file" and info.digest == _sha(path)
    assert common.state_dict_digest(model._ready()) == files["digest"]


def test_weights_file_removed_after_construction(files, tmp_path):
    path = _copy(files["root"] / "small.pth", tmp_path / "w.pth")
    model = _small(path)
    path.unlink()
    with pytest.raises(DataError) as info:
        model.weights_info()
    _one_line(info.value, str(path), "does not exist")


def test_weights_file_must_be_a_path():
    with pytest.raises(ConfigError, match="weights_file must be a path"):
        _small(123)


# ------------------------------------------------------------------------------------------
# layers and stimuli
# ------------------------------------------------------------------------------------------
def _stimuli(tmp_path: Path, sizes: list[tuple[int, int]]) -> StimulusSet:
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"s{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(p)
        paths.append(p)
    return StimulusSet(ids=tuple(p.stem for p in paths), paths=tuple(paths))


def test_duplicate_layers_are_refused(tmp_path):
    model = TorchvisionModel(name="alexnet", arch="alexnet", weights="random")
    stimuli = _stimuli(tmp_path, [(32, 32)])
    with pytest.raises(ConfigError) as info:
        model.extract(stimuli, ["conv1", "fc6", "conv1"])
    assert "'conv1' more than once" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="'conv1' more than once"):
        TorchvisionModel(name="alexnet", arch="alexnet", weights="random", layers=["conv1", "conv1"]).default_layers()


def test_small_stimuli_are_reported_once(tmp_path, model_log):
    model = TorchvisionModel(name=SMALL, arch=SMALL, weights="random")
    assert model.small_image_px() == 56                    # a quarter of the 224 px input
    stimuli = _stimuli(tmp_path, [(1, 1), (300, 10), (56, 60), (175, 175)])
    list(model.extract(stimuli, ["pixels"], batch_size=3))
    warnings = [r.getMessage() for r in model_log if "smaller than" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "2 of 4 stimuli are smaller than 56 px" in warnings[0] and "smallest 1x1 px" in warnings[0]
    list(model.extract(stimuli, ["pixels"], batch_size=2))  # the same model (run) again: no repeat
    assert len([r for r in model_log if "smaller than" in r.getMessage()]) == 1
    (tmp_path / "large").mkdir()
    other = TorchvisionModel(name=SMALL, arch=SMALL, weights="random")
    list(other.extract(_stimuli(tmp_path / "large", [(56, 56), (400, 300)]), ["pixels"]))
    assert len([r for r in model_log if "smaller than" in r.getMessage()]) == 1



# ------------------------------------------------------------------------------------------
# weights values: non-finite refused at load, all-zero / constant warned at load
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_non_finite_weights_file_is_refused_at_load(files, tmp_path, bad, suffix):
    state = {k: v.clone() for k, v in files["state"].items()}
    state["features.3.squeeze.weight"].view(-1)[7] = bad
    state["classifier.1.weight"].view(-1)[0] = bad
    path = tmp_path / f"nan{suffix}"
    _save_st(state, path) if suffix == ".safetensors" else _save(state, path)
    model = _small(path)
    with pytest.raises(DataError) as info:
        model.weights_info()
    msg = _one_line(info.value, f"'{path}'", f"model '{SMALL}'", "NaN/inf", "and 1 more of 52 tensors",
                    f"--weights-file {SMALL}=PATH")
    # the first bad tensor in the file's order (safetensors sorts names)
    first = "classifier.1.weight" if suffix == ".safetensors" else "features.3.squeeze.weight"
    assert f"tensor '{first}'" in msg and "activation cache" not in msg


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_constant_weights_file_warns_at_load(files, tmp_path, model_log, fill):
    state = {k: (torch.full_like(v, fill) if v.is_floating_point() else v) for k, v in files["state"].items()}
    path = _save_st(state, tmp_path / "zero.safetensors")
    info = _small(path).weights_info()
    assert info.source == "file"
    said = [r.getMessage() for r in model_log if str(path) in r.getMessage()]
    assert len(said) == 1, said
    expected = "every tensor is zero — is this a real checkpoint?" if fill == 0 else "single repeated value"
    assert expected in said[0] and "\n" not in said[0]


def test_a_real_weights_file_loads_without_a_warning(files, model_log):
    _small(files["root"] / "small.safetensors").weights_info()
    assert not [r for r in model_log if "real checkpoint" in r.getMessage()]


# ------------------------------------------------------------------------------------------
# two names of one layer; $FRAMEWORK_DOWNLOAD_TIMEOUT
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [["conv1", "features.1"], ["features.1", "fc6", "conv1"]])
def test_alias_and_module_path_of_one_layer_are_refused(tmp_path, layers):
    model = TorchvisionModel(name="alexnet", arch="alexnet", weights="random")
    with pytest.raises(ConfigError) as info:
        model.check_layers(layers)
    msg = str(info.value)
    assert "'conv1'" in msg and "'features.1'" in msg and "module 'features.1'" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="names the same layer twice"):
        list(model.extract(_stimuli(tmp_path, [(32, 32)]), layers))
    with pytest.raises(ConfigError, match="names the same layer twice"):
        TorchvisionModel(name="alexnet", arch="alexnet", weights="random", layers=layers).default_layers()
    assert model.check_layers(["conv1", "features.0", "features.2", "fc6"])  # distinct modules: fine


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf"])
def test_bad_download_timeout_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("FRAMEWORK_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ConfigError) as info:
        common.download_timeout()
    msg = str(info.value)
    assert "$FRAMEWORK_DOWNLOAD_TIMEOUT" in msg and repr(value) in msg and "FRAMEWORK_DOWNLOAD_TIMEOUT=20" in msg
    # it is raised where the timeout is used: resolving pretrained weights (not for random init)
    with pytest.raises(ConfigError, match="FRAMEWORK_DOWNLOAD_TIMEOUT"):
        TorchvisionModel(name=SMALL, arch=SMALL, weights="auto").weights_info()
    assert TorchvisionModel(name=SMALL, arch=SMALL, weights="random").weights_info().source == "random"


@pytest.mark.parametrize("value,expected", [(None, 20.0), ("", 20.0), ("2.5", 2.5)])
def test_download_timeout_default_and_override(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("FRAMEWORK_DOWNLOAD_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("FRAMEWORK_DOWNLOAD_TIMEOUT", value)
    assert common.download_timeout() == expected
