"""Contract tests of the model plugins (torchvision AlexNet/VGG, timm), random init or local files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from framework.contracts import ModelPlugin
from framework.errors import ConfigError, DataError, PluginError
from framework.types import StimulusSet
from plugins.models import _torch_common as common
from plugins.models._torch_common import to_rgb
from plugins.models.timm_models import TimmModel
from plugins.models.torchvision_models import VGG_ARCHS, TorchvisionModel

ALEXNET_SHAPES = {"pixels": (3, 224, 224), "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13),
                  "conv4": (256, 13, 13), "conv5": (256, 13, 13), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
VGG_SHAPES = {"pixels": (3, 224, 224), "pool1": (64, 112, 112), "pool2": (128, 56, 56), "pool3": (256, 28, 28),
              "pool4": (512, 14, 14), "pool5": (512, 7, 7), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}


def _tiny_stimuli(tmp_path: Path) -> StimulusSet:
    """Three small images of odd sizes stored as grayscale, RGBA and RGB files."""
    rng = np.random.default_rng(7)
    grey = Image.fromarray(rng.integers(0, 256, (17, 23), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (40, 31, 4), dtype=np.uint8), "RGBA")
    rgb = Image.fromarray(rng.integers(0, 256, (9, 301, 3), dtype=np.uint8), "RGB")
    paths = []
    for name, img in (("grey", grey), ("rgba", rgba), ("rgb", rgb)):
        p = tmp_path / f"{name}.png"
        img.save(p)
        paths.append(p)
    return StimulusSet(ids=("grey", "rgba", "rgb"), paths=tuple(paths))


def _collect(model: ModelPlugin, stimuli: StimulusSet, layers, batch_size=2) -> dict[str, np.ndarray]:
    batches = list(model.extract(stimuli, layers, batch_size=batch_size))
    assert len(batches) == -(-len(stimuli) // batch_size)
    return {layer: np.concatenate([b[layer] for b in batches]) for layer in layers}


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory) -> StimulusSet:
    return _tiny_stimuli(tmp_path_factory.mktemp("stim"))


@pytest.fixture(scope="module")
def alexnet() -> TorchvisionModel:
    return TorchvisionModel(name="alexnet", arch="alexnet", weights="random", seed=0)


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------
def test_to_rgb_modes_against_numpy():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(grey, "L")))
    assert out.shape == (5, 6, 3) and np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))).astype(np.float64)
    a = rgba[..., 3:].astype(np.float64) / 255.0
    expected = rgba[..., :3] * a + 255.0 * (1.0 - a)  # composited on white
    assert np.abs(out - expected).max() <= 1.0

    deep = (rng.integers(0, 65536, (4, 4))).astype(np.uint16)
    img16 = Image.fromarray(deep)
    assert img16.mode.startswith("I;16")
    out = np.asarray(to_rgb(img16))
    assert np.array_equal(out[..., 0], np.clip(np.rint(deep / 257.0), 0, 255).astype(np.uint8))

    pal = Image.fromarray(grey, "L").convert("P")
    assert to_rgb(pal).mode == "RGB"


# ------------------------------------------------------------------------------------------
# torchvision: layers, shapes, defaults (meta-device dry run: fast for every VGG)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ("alexnet",) + VGG_ARCHS)
def test_torchvision_layers_and_shapes(arch):
    model = TorchvisionModel(name=arch, arch=arch, weights="random")
    assert isinstance(model, ModelPlugin)
    layers = model.layers()
    shapes = model.layer_shapes()
    assert layers[0] == "pixels" and list(shapes) == layers and len(set(layers)) == len(layers)
    expected = ALEXNET_SHAPES if arch == "alexnet" else VGG_SHAPES
    assert model.default_layers() == list(expected)
    assert {k: shapes[k] for k in expected} == expected
    # forward order: the default layers appear in layers() in the documented order
    positions = [layers.index(x) for x in expected]
    assert positions == sorted(positions)
    # each alias sits right before the module path it names, with the same shape
    import torchvision

    from plugins.models.torchvision_models import layer_aliases

    with torch.device("meta"):
        meta = torchvision.models.get_model(arch, weights=None)
    aliases = layer_aliases(arch, meta)
    modules = dict(meta.named_modules())
    for alias, path in aliases.items():
        assert layers[layers.index(alias) + 1] == path and shapes[alias] == shapes[path]
        if alias.startswith(("conv", "fc6", "fc7")):
            assert isinstance(modules[path], torch.nn.ReLU), (alias, path)
        elif alias.startswith("pool"):
            assert isinstance(modules[path], torch.nn.MaxPool2d)
        else:  # fc8 = logits
            assert isinstance(modules[path], torch.nn.Linear) and modules[path].out_features == 1000


def test_alexnet_aliases_are_kuzovkin_layers():
    from plugins.models.torchvision_models import ALEXNET_ALIASES

    assert ALEXNET_ALIASES == {"conv1": "features.1", "conv2": "features.4", "conv3": "features.7",
                               "conv4": "features.9", "conv5": "features.11", "fc6": "classifier.2",
                               "fc7": "classifier.5", "fc8": "classifier.6"}


def test_unknown_layer_and_bad_options(alexnet, stimuli):
    with pytest.raises(ConfigError, match=r"Unknown layer 'conv6'.*Did you mean"):
        alexnet.extract(stimuli, ["conv6"])  # raised at call time, before iteration
    with pytest.raises(ConfigError, match="more than once"):
        alexnet.extract(stimuli, ["conv1", "conv1"])
    with pytest.raises(ConfigError, match="batch_size"):
        alexnet.extract(stimuli, ["conv1"], batch_size=0)
    with pytest.raises(ConfigError, match="weights"):
        TorchvisionModel(name="alexnet", arch="alexnet", weights="imagenet")
    with pytest.raises(ConfigError, match="seed"):
        TorchvisionModel(name="alexnet", arch="alexnet", seed=-1)
    with pytest.raises(ConfigError, match=r"Unknown torchvision architecture 'alexnot'.*Did you mean 'alexnet'"):
        TorchvisionModel(name="alexnot", arch="alexnot")
    with pytest.raises(ConfigError, match="Unknown layer"):
        TorchvisionModel(name="alexnet", arch="alexnet", layers=["conv1", "conv9"]).default_layers()
    assert TorchvisionModel(name="a", arch="alexnet", layers=["fc7", "conv1"]).default_layers() == ["fc7", "conv1"]


# ------------------------------------------------------------------------------------------
# torchvision: extraction
# ------------------------------------------------------------------------------------------
def test_alexnet_extraction_matches_manual_forward(alexnet, stimuli):
    layers = alexnet.default_layers() + ["features.0"]
    acts = _collect(alexnet, stimuli, layers, batch_size=2)
    for layer, arr in acts.items():
        shape = alexnet.layer_shapes()[layer]
        assert arr.dtype == np.float32 and arr.shape == (3, int(np.prod(shape))) and np.isfinite(arr).all()
    # independent computation: torchvision's own transform on PIL RGB images, plain module calls
    import torchvision

    tf = torchvision.models.AlexNet_Weights.DEFAULT.transforms()
    imgs = [stimuli.image(i) for i in range(3)]
    grey_rgb = Image.fromarray(np.repeat(np.asarray(imgs[0])[..., None], 3, axis=2))
    x = torch.stack([tf(grey_rgb), tf(to_rgb(imgs[1])), tf(imgs[2])])
    np.testing.assert_array_equal(acts["pixels"], x.reshape(3, -1).numpy())
    net = alexnet._ready()
    with torch.no_grad():
        conv1_pre = net.features[0](x)
        feats = net.features(x)
        flat = torch.flatten(net.avgpool(feats), 1)
        fc6 = torch.relu(net.classifier[1](flat))
        logits = net(x)
        conv5 = net.features[:12](x)
    np.testing.assert_allclose(acts["features.0"], conv1_pre.reshape(3, -1).numpy(), rtol=1e-5, atol=1e-5)
    assert (acts["features.0"] < 0).any(), "pre-ReLU output was overwritten by the in-place ReLU"
    np.testing.assert_allclose(acts["conv1"], torch.relu(conv1_pre).reshape(3, -1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["conv5"], conv5.reshape(3, -1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["fc6"], fc6.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts["fc8"], logits.numpy(), rtol=1e-4, atol=1e-5)
    # an early-stopped pass (only conv1 requested) gives the same numbers at the same batch size
    # (another batch size may take another oneDNN convolution kernel: equal to float32 rounding only)
    only = _collect(alexnet, stimuli, ["conv1"], batch_size=2)
    np.testing.assert_array_equal(only["conv1"], acts["conv1"])
    other_batch = _collect(alexnet, stimuli, ["conv1"], batch_size=3)
    np.testing.assert_allclose(other_batch["conv1"], acts["conv1"], rtol=1e-5, atol=1e-5)


def test_hooks_removed_and_no_mode_leak(alexnet, stimuli):
    gen = alexnet.extract(stimuli, ["conv2", "fc8"], batch_size=1)
    first = next(gen)
    assert not torch.is_inference_mode_enabled()
    net = alexnet._ready()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    gen.close()  # consumer stops early
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert set(first) == {"conv2", "fc8"} and first["fc8"].shape == (1, 1000)


def test_determinism_same_seed_bit_identical(alexnet, stimuli):
    twin = TorchvisionModel(name="alexnet", arch="alexnet", weights="random", seed=0)
    a = _collect(alexnet, stimuli, ["conv3", "fc8"])
    b = _collect(twin, stimuli, ["conv3", "fc8"])
    for layer in a:
        assert np.array_equal(a[layer], b[layer])
    # another batch size changes BLAS blocking: equal to float32 rounding only
    c = _collect(twin, stimuli, ["fc8"], batch_size=3)
    np.testing.assert_allclose(c["fc8"], a["fc8"], rtol=1e-5, atol=1e-6)
    assert twin.weights_info() == alexnet.weights_info()
    info = twin.weights_info()
    assert info.source == "random" and info.label == "random init (seed 0)" and info.seed == 0
    assert info.digest == common.state_dict_digest(twin._ready())


def test_different_seed_different_weights():
    a = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="random", seed=1).weights_info()
    b = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="random", seed=2).weights_info()
    assert a.digest != b.digest


@pytest.mark.slow
@pytest.mark.parametrize("arch", VGG_ARCHS)
def test_vgg_extraction(arch, stimuli):
    model = TorchvisionModel(name=arch, arch=arch, weights="random", seed=0)
    acts = _collect(model, stimuli, model.default_layers(), batch_size=3)
    for layer, shape in VGG_SHAPES.items():
        arr = acts[layer]
        assert arr.dtype == np.float32 and arr.shape == (3, int(np.prod(shape))) and np.isfinite(arr).all()
    assert (acts["pool1"] >= 0).all() and (acts["fc7"] >= 0).all()  # after ReLU
    net = model._ready()
    with torch.no_grad():  # independent: the classifier applied to pool5 by hand
        flat = torch.flatten(net.avgpool(torch.from_numpy(acts["pool5"].reshape(3, 512, 7, 7))), 1)
        fc8 = net.classifier(flat)
    np.testing.assert_allclose(acts["fc8"], fc8.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# weights policy
# ------------------------------------------------------------------------------------------
def test_auto_falls_back_to_random_and_pretrained_raises(monkeypatch):
    def offline(self, module):
        raise DataError("no network (test)")

    monkeypatch.setattr(TorchvisionModel, "_load_pretrained", offline)
    auto = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="auto", seed=3)
    info = auto.weights_info()
    assert info.source == "random" and info.label == "random init (seed 3)" and "no network (test)" in info.detail
    rand = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="random", seed=3).weights_info()
    assert info.digest == rand.digest
    with pytest.raises(DataError, match="no network"):
        TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="pretrained").weights_info()


def test_torchvision_offline_message_names_weights_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise OSError("offline (test)")

    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", no_download)    # the plugin's own downloader
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(common, "host_unreachable", lambda url, timeout=None: None)  # the probe passes
    model = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="pretrained")
    with pytest.raises(DataError, match=r"OSError: offline \(test\).*--weights-file squeezenet1_0=PATH"):
        model.weights_info()


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    """A seeded timm mobilenetv2 state dict saved as .safetensors and .pth, and a resnet18 one."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    src = TimmModel(name="timm:mobilenetv2_100", weights="random", seed=11)
    state = {k: v.contiguous() for k, v in src._ready().state_dict().items()}
    save_file(state, str(root / "mnv2.safetensors"))
    torch.save({"state_dict": state}, root / "mnv2.pth")
    other = TorchvisionModel(name="squeezenet1_0", arch="squeezenet1_0", weights="random")
    save_file({k: v.contiguous() for k, v in other._ready().state_dict().items()}, str(root / "squeeze.safetensors"))
    return root, src


@pytest.mark.parametrize("fname", ["mnv2.safetensors", "mnv2.pth"])
def test_weights_file_loads_strictly(saved_weights, stimuli, fname):
    root, src = saved_weights
    path = root / fname
    model = TimmModel(name="timm:mobilenetv2_100", weights="random", seed=99, weights_file=path)
    info = model.weights_info()
    assert info.source == "file" and info.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    a = _collect(model, stimuli, ["blocks.2", "logits"])
    b = _collect(src, stimuli, ["blocks.2", "logits"])
    for layer in a:
        assert np.array_equal(a[layer], b[layer])


def test_bad_weights_files_raise_data_error(saved_weights, tmp_path):
    root, _ = saved_weights
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(DataError, match="nothing.safetensors.*does not exist"):
        TimmModel(name="timm:mobilenetv2_100", weights_file=missing)
    data = (root / "mnv2.safetensors").read_bytes()
    for suffix in (".safetensors", ".pth"):
        cut = tmp_path / f"cut{suffix}"
        src = data if suffix == ".safetensors" else (root / "mnv2.pth").read_bytes()
        cut.write_bytes(src[: len(src) // 2])
        with pytest.raises(DataError, match=rf"cut\{suffix}.*truncated or corrupt"):
            TimmModel(name="timm:mobilenetv2_100", weights_file=cut).weights_info()
    with pytest.raises(DataError, match=r"squeeze.safetensors.*does not fit.*missing keys.*unexpected keys"):
        TimmModel(name="timm:mobilenetv2_100", weights_file=root / "squeeze.safetensors").weights_info()
    wrong_head = tmp_path / "head.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(root / "mnv2.safetensors"))
    state["classifier.weight"] = state["classifier.weight"][:10].contiguous()
    save_file(state, str(wrong_head))
    with pytest.raises(DataError, match=r"1 shape or dtype mismatches.*classifier.weight"):
        TimmModel(name="timm:mobilenetv2_100", weights_file=wrong_head).weights_info()


# ------------------------------------------------------------------------------------------
# timm
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,stages", [
    ("timm:resnet18", ["act1", "layer1", "layer2", "layer3", "layer4"]),
    ("timm:mobilenetv2_100", [f"blocks.{i}" for i in range(7)]),  # every block, not only feature_info's
    ("timm:vit_tiny_patch16_224", [f"blocks.{i}" for i in range(12)]),
])
def test_timm_contract(name, stages, stimuli):
    model = TimmModel(name=name, weights="random", seed=0)
    assert model.default_layers() == ["pixels"] + stages + ["pre_logits", "logits"]
    layers = model.layers()
    assert layers[0] == "pixels" and layers[-1] == "logits" and list(model.layer_shapes()) == layers
    acts = _collect(model, stimuli, ["pixels", stages[-1], "pre_logits", "logits"], batch_size=2)
    net = model._ready()
    x = torch.from_numpy(acts["pixels"].reshape(3, *model.layer_shapes()["pixels"]))
    with torch.no_grad():  # independent: timm's own API
        feats = net.forward_features(x)
        pre = net.forward_head(feats, pre_logits=True)
        logits = net(x)
    np.testing.assert_allclose(acts["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts["logits"], logits.numpy(), rtol=1e-4, atol=1e-5)
    for layer, arr in acts.items():
        assert arr.dtype == np.float32 and arr.shape == (3, int(np.prod(model.layer_shapes()[layer])))
    pp = model.preprocessing()
    assert pp["input_size"] == [3, 224, 224] and len(pp["mean"]) == 3 and len(pp["std"]) == 3


def test_timm_default_layers_are_every_block(capsys):
    """feature_info names EfficientNet's blocks 0, 1, 2, 4, 6; the defaults score every block (3 and 5 too),
    in forward order, between pixels and the head; plain modules (VGG's features.3) are not widened."""
    import timm

    from framework.cli import main
    from plugins.models.timm_models import block_layers

    model = TimmModel(name="timm:tf_efficientnet_lite0", weights="random")
    assert [f["module"] for f in model._architecture().feature_info] == [f"blocks.{i}" for i in (0, 1, 2, 4, 6)]
    defaults = model.default_layers()
    assert defaults == ["pixels"] + [f"blocks.{i}" for i in range(7)] + ["pre_logits", "logits"]
    layers = model.layers()
    assert [layers.index(x) for x in defaults] == sorted(layers.index(x) for x in defaults)  # forward order
    with torch.device("meta"):
        vgg = timm.create_model("vgg11")
    assert block_layers(vgg) == [f["module"] for f in vgg.feature_info]
    assert main(["layers", "timm:tf_efficientnet_lite0", "--weights", "random"]) == 0
    marked = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("* ")]
    assert marked == defaults


def test_timm_determinism_and_overrides(stimuli):
    a = TimmModel(name="timm:resnet18", weights="random", seed=5)
    b = TimmModel(name="timm:resnet18", weights="random", seed=5)
    xa = _collect(a, stimuli, ["layer2", "logits"])
    xb = _collect(b, stimuli, ["layer2", "logits"])
    assert all(np.array_equal(xa[k], xb[k]) for k in xa)
    assert a.weights_info().digest == b.weights_info().digest
    c = TimmModel(name="timm:resnet18", weights="random", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert c.preprocessing()["mean"] == [0.5, 0.5, 0.5] and a.preprocessing()["mean"] == [0.485, 0.456, 0.406]


def test_timm_unknown_name_suggests():
    with pytest.raises(PluginError, match=r"Unknown model 'timm:resnet81'.*Did you mean.*'timm:resnet18'"):
        TimmModel(name="timm:resnet81")
    with pytest.raises(ConfigError, match="timm:<model>"):
        TimmModel(name="resnet18")
    with pytest.raises(ConfigError, match="parameter 'mean' of model .*expected a list of numbers with 3 items"):
        TimmModel(name="timm:resnet18", mean=(0.5, 0.5))


def test_timm_offline_without_cache_is_fast_data_error(monkeypatch, tmp_path):
    import plugins.models._timm as tm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(TimmModel, "_cached_file", lambda self, cfg: None)
    monkeypatch.setattr(tm, "_host_reachable", lambda url, timeout=5.0: "unreachable (test)")
    model = TimmModel(name="timm:resnet18", weights="pretrained")
    with pytest.raises(DataError, match=r"offline.*--weights-file timm:resnet18=PATH"):
        model.weights_info()
    auto = TimmModel(name="timm:resnet18", weights="auto", seed=4).weights_info()
    assert auto.label == "random init (seed 4)" and "fell back" in auto.detail


def test_registry_builds_models():
    from framework.registry import load_registry

    reg = load_registry()
    model = reg.create("model", "vgg16:random")
    assert isinstance(model, TorchvisionModel) and model.arch == "vgg16" and model.weights == "random"
    timm_model = reg.create("model", "timm:resnet18", weights="random")
    assert isinstance(timm_model, TimmModel) and timm_model.timm_name == "resnet18"
