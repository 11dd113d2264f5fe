"""Real ImageNet weights from local files (../shared/weights) predict the right classes on real photos."""
from __future__ import annotations

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


@pytest.mark.parametrize("name,fname,kwargs", CASES, ids=[c[0] for c in CASES])
def test_top1_on_test_images(name, fname, kwargs):
    path = WEIGHTS / fname
    if not path.is_file() or not (IMAGES / "imagenet_labels.txt").is_file():
        pytest.skip(f"real weights not available at {WEIGHTS}")
    from plugins.models.timm_models import TimmModel

    labels = (IMAGES / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001  # line 0 is "background": class i is line i + 1
    stimuli = StimulusSet(ids=("cat", "bird"), paths=(IMAGES / "cat.bmp", IMAGES / "bird.bmp"))
    model = TimmModel(name=name, weights_file=path, **kwargs)
    info = model.weights_info()
    assert info.source == "file" and len(info.digest) == 64
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
