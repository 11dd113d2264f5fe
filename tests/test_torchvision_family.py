"""The ``torchvision:<name>`` family (plugins.models.torchvision_models.TorchvisionFamilyModel): names, the
stage rule of the default layers, extraction with random init, and the offline weights policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.errors import ConfigError, DataError
from framework.hookspecs import hookimpl
from framework.registry import get_plugin_manager, load_registry
from framework.types import StimulusSet
from plugins.models.torchvision_models import (
    TorchvisionFamilyModel,
    TorchvisionModel,
    _classification_archs,
    classifier_path,
)

RESNET18_SHAPES = {"pixels": (3, 224, 224), "maxpool": (64, 56, 56), "layer1": (64, 56, 56),
                   "layer2": (128, 28, 28), "layer3": (256, 14, 14), "layer4": (512, 7, 7),
                   "pre_logits": (512,), "logits": (1000,)}


class _Declarations:
    """The family declared as in registry.toml, through the hook a third-party plugin uses."""

    @hookimpl
    def framework_register_models(self, registry):
        registry.add_model("torchvision:*", "plugins.models.torchvision_models:TorchvisionFamilyModel",
                           "Any torchvision classifier by name", {})


@pytest.fixture(scope="module")
def registry():
    return load_registry(get_plugin_manager(entry_points=False, builtins=False, extra_plugins=[_Declarations()]))


def _images(n: int = 2, seed: int = 5) -> StimulusSet:
    rng = np.random.default_rng(seed)
    return StimulusSet(ids=tuple(f"s{i}" for i in range(n)),
                       images=rng.integers(0, 256, (n, 72, 96, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------
# resnet18: layers, defaults, extraction (random init)
# ------------------------------------------------------------------------------------------
def test_resnet18_layers_and_extraction(registry):
    model = registry.create("model", "torchvision:resnet18:random", seed=0)
    assert isinstance(model, TorchvisionFamilyModel) and model.name == "torchvision:resnet18"
    assert model.arch == "resnet18" and model.weights == "random"
    layers, shapes = model.layers(), model.layer_shapes()
    assert layers[0] == "pixels" and list(shapes) == layers and len(set(layers)) == len(layers)
    assert model.default_layers() == list(RESNET18_SHAPES)
    assert {k: shapes[k] for k in RESNET18_SHAPES} == RESNET18_SHAPES
    positions = [layers.index(x) for x in RESNET18_SHAPES]
    assert positions == sorted(positions)                  # forward order
    assert layers.index("pre_logits") == layers.index("fc") - 1 and layers[-1] == "logits"

    stimuli = _images()
    batches = list(model.extract(stimuli, model.default_layers(), batch_size=2))
    assert len(batches) == 1
    (out,) = batches
    assert list(out) == list(RESNET18_SHAPES)
    for layer, shape in RESNET18_SHAPES.items():
        assert out[layer].shape == (2, int(np.prod(shape))) and out[layer].dtype == np.float32
        assert np.isfinite(out[layer]).all()
    assert not np.allclose(out["layer4"][0], out["layer4"][1])   # the two images differ
    # logits = fc(pre_logits): the taps read the classifier's input and the network's output
    with torch.inference_mode():
        again = model._ready().fc(torch.from_numpy(out["pre_logits"])).numpy()
    np.testing.assert_allclose(again, out["logits"], rtol=1e-4, atol=1e-4)
    # the same seed gives the same numbers; another seed others
    same = registry.create("model", "torchvision:resnet18:random", seed=0)
    other = registry.create("model", "torchvision:resnet18:random", seed=1)
    (o_same,), (o_other,) = (list(m.extract(stimuli, ["layer2", "logits"], batch_size=2)) for m in (same, other))
    np.testing.assert_array_equal(o_same["logits"], out["logits"])
    assert not np.allclose(o_other["logits"], out["logits"])
    info = model.weights_info()
    assert info.source == "random" and info.seed == 0 and info.digest == same.weights_info().digest
    assert info.digest != other.weights_info().digest
    # the plain class with arch="resnet18" follows the same rule; the rule's version is part of the cell key
    plain = TorchvisionModel(name="r18", arch="resnet18", weights="random")
    assert plain.default_layers() == list(RESNET18_SHAPES)
    assert model.version() == plain.version() == "2"
    assert TorchvisionModel(name="alexnet", arch="alexnet").version() == "1"   # its convention did not change


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
def test_every_classifier_name_is_accepted():
    archs = _classification_archs()
    assert {"alexnet", "resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0"} <= set(archs)
    for arch in archs:                                     # construction is cheap: no network is built
        model = TorchvisionFamilyModel(name=f"torchvision:{arch}", weights="random")
        assert model.arch == arch and model.preprocessing()["input_size"][0] == 3


def test_unknown_name_suggests_the_closest(registry):
    with pytest.raises(ConfigError) as info:
        registry.create("model", "torchvision:resnet5O")
    msg = str(info.value)
    assert "\n" not in msg and "Unknown torchvision model 'torchvision:resnet5O'" in msg
    assert "Did you mean 'torchvision:resnet50'" in msg and "list_models" in msg
    with pytest.raises(ConfigError, match="Did you mean 'torchvision:alexnet'"):
        TorchvisionFamilyModel(name="torchvision:alexnte")
    with pytest.raises(ConfigError, match=r"must look like 'torchvision:<architecture>'"):
        TorchvisionFamilyModel(name="resnet18")
    with pytest.raises(ConfigError, match="arch"):       # the name says which network; no arch= parameter
        TorchvisionFamilyModel(name="torchvision:resnet18", arch="vgg16")


# ------------------------------------------------------------------------------------------
# the stage rule on other architectures (meta-device dry runs: no weights, fast)
# ------------------------------------------------------------------------------------------
STAGES = {
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],   # its own convention
    "efficientnet_b0": [f"features.{i}" for i in range(9)] + ["pre_logits", "logits"],
    "densenet121": ["features.pool0", "features.denseblock1", "features.transition1", "features.denseblock2",
                    "features.transition2", "features.denseblock3", "features.transition3",
                    "features.denseblock4", "pre_logits", "logits"],
    "vit_b_16": ["conv_proj"] + [f"encoder.layers.encoder_layer_{i}" for i in range(12)] + ["pre_logits", "logits"],
    "shufflenet_v2_x0_5": ["conv1", "stage2", "stage3", "stage4", "conv5", "pre_logits", "logits"],
    "googlenet": ["conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
                  "inception4c", "inception4d", "inception4e", "inception5a", "inception5b", "pre_logits", "logits"],
    "squeezenet1_1": ["features.2", "features.3", "features.4", "features.6", "features.7", "features.9",
                      "features.10", "features.11", "features.12", "pre_logits", "logits"],
}


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
@pytest.mark.parametrize("arch", list(STAGES))
def test_default_layers_follow_the_stage_rule(arch):
    model = TorchvisionFamilyModel(name=f"torchvision:{arch}", weights="random")
    assert model.default_layers() == ["pixels", *STAGES[arch]]
    if arch == "alexnet":
        assert model.default_layers() == TorchvisionModel(name="alexnet", arch="alexnet").default_layers()
    else:
        import torchvision

        with torch.device("meta"):
            net = torchvision.models.get_model(arch, weights=None)
        path = classifier_path(net)
        assert isinstance(net.get_submodule(path), torch.nn.Linear | torch.nn.Conv2d)
        assert model.layer_shapes()["logits"] == (1000,)


# ------------------------------------------------------------------------------------------
# weights policy offline
# ------------------------------------------------------------------------------------------
def test_offline_weights_policy(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))      # an empty torch hub cache
    with pytest.raises(DataError) as info:
        TorchvisionFamilyModel(name="torchvision:resnet18", weights="pretrained").weights_info()
    msg = str(info.value)
    assert "\n" not in msg and "ResNet18_Weights.IMAGENET1K_V1" in msg and "--weights random" in msg
    auto = TorchvisionFamilyModel(name="torchvision:resnet18", weights="auto", seed=2).weights_info()
    random = TorchvisionFamilyModel(name="torchvision:resnet18", weights="random", seed=2).weights_info()
    assert auto.source == "random" and auto.digest == random.digest and "fell back" in auto.detail
