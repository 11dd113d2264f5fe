"""Real ImageNet weights from local files (../shared/weights) predict the right classes on real photos,
given as a weights file or found in the Hugging Face cache as timm's pretrained weights."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from framework.types import StimulusSet

WEIGHTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights"
IMAGES = WEIGHTS / "testimages"

CASES = [
    ("timm:tf_efficientnet_lite0", "tf_efficientnet_lite0.safetensors", {}),
    ("timm:mobilenetv2_100", "mobilenetv2_100_same.safetensors",
     {"pad_type": "same", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}),
]


def _real(fname: str) -> Path:
    path = WEIGHTS / fname
    if not path.is_file() or not (IMAGES / "imagenet_labels.txt").is_file():
        pytest.skip(f"real weights not available at {WEIGHTS}")
    return path


@pytest.mark.parametrize("name,fname,kwargs", CASES, ids=[c[0] for c in CASES])
def test_top1_on_test_images(name, fname, kwargs):
    path = _real(fname)
    from plugins.models.timm_models import TimmModel

    model = TimmModel(name=name, weights_file=path, **kwargs)
    info = model.weights_info()
    assert info.source == "file" and len(info.digest) == 64
    _check_top1(model)


def _plant_hf(hf_root: Path, repo: str, filename: str, data: bytes, blob: str) -> None:
    """Lay ``data`` out as huggingface_hub caches it: blobs/<blob>, snapshots/<commit>/<filename> -> blob."""
    folder = hf_root / ("models--" + repo.replace("/", "--"))
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / blob).write_bytes(data)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).symlink_to(Path("..") / ".." / "blobs" / blob)


@pytest.mark.parametrize("blob", ["sha256", "other"])
def test_pretrained_from_the_hugging_face_cache(tmp_path, monkeypatch, blob):
    """``weights="pretrained"`` offline with the file in the Hugging Face cache: timm's real loader reads it
    (after the hash check); a blob whose bytes do not match its name is refused before it is read."""
    import huggingface_hub.constants as hf_constants

    from framework.errors import DataError
    from plugins.models.timm_models import TimmModel

    path = _real("tf_efficientnet_lite0.safetensors")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = digest if blob == "sha256" else hashlib.sha256(b"another file").hexdigest()
    _plant_hf(tmp_path / "hf", "timm/tf_efficientnet_lite0.in1k", "model.safetensors", data, name)
    model = TimmModel(name="timm:tf_efficientnet_lite0", weights="pretrained")
    if blob == "other":
        with pytest.raises(DataError, match=rf"is not the published file: its SHA-256 starts with '{digest[:16]}'"):
            model.weights_info()
        return
    info = model.weights_info()
    assert info.source == "pretrained" and info.digest == digest
    assert info.label == "pretrained (timm tf_efficientnet_lite0.in1k)"
    _check_top1(model)


def _check_top1(model) -> None:
    labels = (IMAGES / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001  # line 0 is "background": class i is line i + 1
    stimuli = StimulusSet(ids=("cat", "bird"), paths=(IMAGES / "cat.bmp", IMAGES / "bird.bmp"))
    (batch,) = list(model.extract(stimuli, ["pre_logits", "logits"], batch_size=2))
    logits = batch["logits"]
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    top1 = [labels[int(i) + 1] for i in logits.argmax(axis=1)]
    assert top1[0] in ("Egyptian cat", "tabby, tabby cat", "tabby"), top1
    assert top1[1] == "chickadee", top1
    # the classifier applied to pre_logits reproduces the logits (hook taps are consistent)
    net = model._ready()
    import torch

    with torch.no_grad():
        again = net.get_classifier()(torch.from_numpy(batch["pre_logits"])).numpy()
    np.testing.assert_allclose(again, logits, rtol=1e-4, atol=1e-4)
