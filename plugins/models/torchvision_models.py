"""torchvision classification networks: AlexNet, the VGG family, and any other torchvision classifier.

Default layers follow the field's conventions:

* AlexNet (Kuzovkin et al. 2018): ``pixels, conv1 .. conv5`` (after ReLU), ``fc6, fc7``
  (after ReLU), ``fc8`` (logits) - nine layers;
* VGG-11/13/16/19 and their ``_bn`` variants: ``pixels, pool1 .. pool5, fc6, fc7`` (after ReLU),
  ``fc8`` (logits);
* every other torchvision classifier: ``pixels``, its stages (:func:`stage_layers`), ``pre_logits``
  (the input of the classifier, :func:`classifier_path`) and ``logits`` (the network output).

Stages (:func:`stage_layers`), a generic rule over the module tree, in forward order:

1. the *head* is the top-level child holding the classifier (the last module, in registration
   order, with parameters of its own: ``fc``, ``classifier.1``, ``heads.head``); it and every
   top-level child after it are left out;
2. a *trunk* is a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` or a
   subclass) with at least two *blocks* (modules that have child modules) among its children,
   either a top-level child or the only block of a top-level child (ViT's ``encoder.layers``).
   When exactly one trunk exists, its children replace it (``features`` -> ``features.0`` ...);
   several (ResNet's ``layer1`` ... ``layer4``) are stages themselves and are kept whole;
3. of the resulting modules, every block is a stage; plain modules (convolution, norm,
   activation, pooling) are dropped, except the last plain module before the first block, the
   output of a stem made of plain modules (ResNet's ``maxpool``, ViT's ``conv_proj``);
4. only modules that run exactly once in the forward pass count (GoogLeNet's auxiliary heads do
   not run in ``eval()``); a container that never runs as a unit (``nn.ModuleList``) stands for
   its children (MaxViT's ``blocks.0`` ... ``blocks.3``).

Examples: ``resnet18``: ``maxpool, layer1`` ... ``layer4``; ``efficientnet_b0``: ``features.0`` ...
``features.8``; ``densenet121``: ``features.pool0``, its dense blocks and transitions;
``vit_b_16``: ``conv_proj``, ``encoder.layers.encoder_layer_0`` ... ``_11``; ``regnet_y_400mf``:
``stem``, ``trunk_output.block1`` ... ``block4``; ``maxvit_t``: ``stem``, ``blocks.0`` ... ``blocks.3``.
``framework layers torchvision:<name>`` marks the defaults with ``*``.

Friendly names are aliases of torchvision module paths (``conv1`` -> ``features.1``); both
spellings are valid layer names and give identical arrays.

Any torchvision classifier by name: ``torchvision:<name>`` (:class:`TorchvisionFamilyModel`), e.g.
``torchvision:resnet50``, built and loaded exactly like the named models above.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.contracts import WeightsInfo
from framework.errors import ConfigError, did_you_mean, unknown_name_error
from framework.params import NoParams, PluginParams, param
from plugins.models._torch_common import (
    PIXELS,
    HookedTorchModel,
    _Tap,
    hub_cache_path,
    interpolation_name,
    load_hub_checkpoint,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

log = logging.getLogger("framework.models.torchvision")

#: The VGG architectures with the pool1-5 / fc6-8 convention.
VGG_ARCHS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
#: AlexNet layer aliases (torchvision ``alexnet``): conv layers and fc6/fc7 after their ReLU.
ALEXNET_ALIASES = {
    "conv1": "features.1", "conv2": "features.4", "conv3": "features.7", "conv4": "features.9",
    "conv5": "features.11", "fc6": "classifier.2", "fc7": "classifier.5", "fc8": "classifier.6",
}
#: VGG fully connected aliases (fc6/fc7 after their ReLU, fc8 = logits); pool1-5 are found by type.
VGG_FC_ALIASES = {"fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


#: Name prefix of the family: ``torchvision:<architecture>``.
PREFIX = "torchvision:"


def _classification_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def classifier_path(module: torch.nn.Module) -> str | None:
    """Path of the module producing the class scores: the last module, in registration order, with
    parameters of its own (``fc``, ``classifier.6``, ``heads.head``; SqueezeNet's ``classifier.1``
    convolution). None for a network without parameters."""
    last = None
    for path, sub in module.named_modules():
        if path and next(sub.parameters(recurse=False), None) is not None:
            last = path
    return last


def _is_block(module: torch.nn.Module) -> bool:
    return next(module.children(), None) is not None


def _trunk(path: str, module: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    """``(path, container)`` if ``module`` is a trunk or wraps exactly one (rule 2 of the module docstring)."""
    import torch

    def is_trunk(m: torch.nn.Module) -> bool:
        containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
        return isinstance(m, containers) and sum(_is_block(c) for c in m.children()) >= 2

    if is_trunk(module):
        return path, module
    blocks = [(name, child) for name, child in module.named_children() if _is_block(child)]
    if len(blocks) == 1 and is_trunk(blocks[0][1]):
        return f"{path}.{blocks[0][0]}", blocks[0][1]
    return None


def stage_layers(module: torch.nn.Module, known: list[str]) -> list[str]:
    """The stages of a torchvision classifier (module docstring, rules 1-4), in forward order.

    Parameters
    ----------
    module : torch.nn.Module
        The network (parameters may be on the meta device).
    known : list of str
        Its layers in forward order (modules that run exactly once), as ``HookedTorchModel.layers()``.

    Returns
    -------
    list of str
        Module paths, a subset of ``known`` in its order; no head, no ``pixels``.
    """
    head = (classifier_path(module) or "").split(".")[0]
    top: list[tuple[str, torch.nn.Module]] = []
    for name, child in module.named_children():
        if name == head:
            break
        top.append((name, child))
    trunks = [t for t in (_trunk(name, child) for name, child in top) if t is not None]
    items: list[tuple[str, torch.nn.Module]] = []
    for name, child in top:
        if len(trunks) == 1 and (name == trunks[0][0] or trunks[0][0].startswith(name + ".")):
            items.extend((f"{trunks[0][0]}.{n}", c) for n, c in trunks[0][1].named_children())
        else:
            items.append((name, child))
    position = {layer: i for i, layer in enumerate(known)}
    runs: list[tuple[str, torch.nn.Module]] = []
    while items:  # a container that never runs as a unit (nn.ModuleList) stands for its children
        path, child = items.pop(0)
        if path in position:
            runs.append((path, child))
        elif _is_block(child):
            items[:0] = [(f"{path}.{n}", c) for n, c in child.named_children()]
    items = sorted(runs, key=lambda item: position[item[0]])
    out: list[str] = []
    stem: str | None = None
    for path, child in items:
        if _is_block(child):
            if not out and stem is not None:
                out.append(stem)
            out.append(path)
        elif not out:
            stem = path
    return out


def layer_aliases(arch: str, module: torch.nn.Module) -> dict[str, str]:
    """Friendly layer names of ``arch`` mapped to module paths (empty for other networks)."""
    import torch

    if arch == "alexnet":
        return dict(ALEXNET_ALIASES)
    if arch in VGG_ARCHS:
        pools = [path for path, sub in module.named_modules()
                 if path.startswith("features.") and isinstance(sub, torch.nn.MaxPool2d)]
        aliases = {f"pool{i + 1}": path for i, path in enumerate(pools)}
        aliases.update(VGG_FC_ALIASES)
        return aliases
    return {}


class TorchvisionParams(PluginParams):
    """Parameters of a torchvision network (its registration sets ``arch``)."""

    arch: str = param("alexnet", "torchvision architecture, e.g. 'alexnet', 'vgg16' "
                      "(torchvision.models.list_models())")


class TorchvisionModel(HookedTorchModel):
    """A torchvision classification network with forward-hook layer extraction.

    Parameters
    ----------
    name : str
        Registry name (e.g. ``"alexnet"``), shown on the leaderboard.
    arch : str
        torchvision architecture (``torchvision.models.list_models(module=torchvision.models)``).
    weights : {"auto", "pretrained", "random"}
        ``"pretrained"``: the architecture's ``DEFAULT`` weights enum from the torch hub cache
        (``$TORCH_HOME/hub/checkpoints``, torchvision's file), checked against the hash in its
        file name and read without unpickling code (:meth:`_load_pretrained`); offline with
        nothing cached raises :class:`DataError` after a probe of at most 5 s. ``"random"``:
        seeded random init. ``"auto"``: pretrained, falling back to random init with a warning.
    weights_file : str or Path, optional
        A local state dict (``.safetensors``, ``.pt``, ``.pth``) loaded strictly; wins over
        ``weights``.
    seed : int
        Seed of the random initialisation (``torch.manual_seed`` before building).
    layers : list of str, optional
        Overrides :meth:`default_layers`.

    Notes
    -----
    Construction is cheap (options are validated); the network is built on first use and the
    weights resolved on the first :meth:`weights_info` / :meth:`extract`. Preprocessing is the
    pretrained weights' ``transforms()`` (resize, centre crop, ImageNet mean/std), also for
    random init.
    """

    library = "torchvision"

    #: The loader raises before loading anything into the module (see HookedTorchModel).
    pretrained_failure_may_touch_module = False

    Params = TorchvisionParams

    def __init__(self, *, name: str, weights: str = "auto", weights_file: str | Path | None = None,
                 seed: int = 0, layers: list[str] | None = None, **params: Any) -> None:
        super().__init__(name=name, weights=weights, weights_file=weights_file, seed=seed, layers=layers, **params)
        arch = self.params.arch
        archs = _classification_archs()
        if arch not in archs:
            raise unknown_name_error("torchvision architecture", arch, archs, option=f"{name} arch",
                                     error_cls=ConfigError)
        self._set_arch(arch)

    def _set_arch(self, arch: str) -> None:
        """Use torchvision architecture ``arch`` (already checked): weights enum, input size, version."""
        self.arch = arch
        #: "2" for the stage rule (:func:`stage_layers`) of the default layers, which replaced "every
        #: top-level child"; AlexNet and VGG keep their convention, hence "1". Part of the cell key.
        self.plugin_version = "1" if arch == "alexnet" or arch in VGG_ARCHS else "2"
        from torchvision.models import get_model_weights

        self._weights_enum = get_model_weights(arch).DEFAULT
        crop = self._weights_enum.transforms().crop_size
        self._input_size = (3, int(crop[0]), int(crop[-1]))

    # -- subclass hooks -----------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        import torchvision

        kwargs: dict[str, Any] = {}
        if self.arch.startswith("vit_"):  # a ViT is built for one input size: that of its DEFAULT weights
            kwargs["image_size"] = self._input_size[1]
        return torchvision.models.get_model(self.arch, weights=None, **kwargs)

    def _meta_build(self) -> torch.nn.Module:
        """The network without parameter data (meta device) for its structure; the real one when a
        network cannot be built that way (RegNet's initialisation reads values)."""
        import torch

        if self._module is not None:
            return self._module
        try:
            with torch.device("meta"):
                return self._build()
        except Exception:
            return self._built()

    def _make_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._weights_enum.transforms()

    def _special_taps(self, module: torch.nn.Module) -> dict[str, _Tap]:
        """AlexNet / VGG aliases; for every other network ``pre_logits`` (the classifier's input) and ``logits``."""
        if self.arch == "alexnet" or self.arch in VGG_ARCHS:
            return {alias: _Tap(path) for alias, path in layer_aliases(self.arch, module).items()}
        taps = {"logits": _Tap("")}
        path = classifier_path(module)
        if path is not None:
            taps["pre_logits"] = _Tap(path, "input")
        return taps

    def _convention_layers(self) -> list[str]:
        """AlexNet / VGG conventions; else ``pixels``, the stages (:func:`stage_layers`), ``pre_logits``, ``logits``."""
        if self.arch == "alexnet":
            return [PIXELS, "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
        if self.arch in VGG_ARCHS:
            return [PIXELS, "pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7", "fc8"]
        known = self.layers()
        module = self._meta_build()
        tail = [x for x in ("pre_logits", "logits") if x in known]
        return [PIXELS] + stage_layers(module, known) + tail

    def cached_weights_path(self) -> Path:
        """Where torchvision's loader keeps the pretrained file (``<torch hub dir>/checkpoints/<file>``)."""
        return hub_cache_path(self._weights_enum.url)

    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        """The ``DEFAULT`` weights from the torch hub cache, downloaded there first if missing.

        The same cache file as torchvision's loader, but never unpickled:

        1. missing: a quick offline probe (at most 5 s), then a download that times out and is
           kept only if its SHA-256 starts with the hash in the file name;
        2. the cached file's SHA-256 is checked against the hash in its name BEFORE it is read:
           a damaged or planted file is refused, not loaded;
        3. it is read with ``torch.load(weights_only=True)``: tensors only, a file that would
           run code is refused, never executed; then loaded strictly
           (:func:`~plugins.models._torch_common.load_hub_checkpoint`).

        Raises
        ------
        DataError
            One line naming the file or URL and the fix (delete the file, ``--weights-file``,
            ``--weights random``).
        """
        w = self._weights_enum
        enum_name = f"{type(w).__name__}.{w.name}"
        cached, digest = load_hub_checkpoint(module, w.url, model=self.name, cached=self.cached_weights_path(),
                                             what=f"pretrained weights {enum_name} for model '{self.name}'")
        detail = f"torchvision weights {enum_name} from torch hub cache file {cached} (url {w.url}); digest of the file"
        info = WeightsInfo(source="pretrained", label=f"ImageNet (torchvision {enum_name})", digest=digest,
                           seed=None, detail=detail)
        return module, info

    def preprocessing(self) -> dict[str, Any]:
        """Input preprocessing of the weights' ``transforms()``: sizes in px, mean/std per RGB channel."""
        t = self._weights_enum.transforms()
        return {
            "library": "torchvision",
            "transforms": f"{type(self._weights_enum).__name__}.{self._weights_enum.name}.transforms()",
            "input_size": list(self._input_size),
            "resize": [int(v) for v in t.resize_size],
            "crop": [int(v) for v in t.crop_size],
            "interpolation": interpolation_name(t.interpolation),
            "antialias": bool(t.antialias),
            "mean": [float(v) for v in t.mean],
            "std": [float(v) for v in t.std],
            "color": "RGB (grey replicated, alpha composited on white)",
        }


class TorchvisionFamilyModel(TorchvisionModel):
    """Any torchvision classifier by name: ``torchvision:<arch>`` (registered as the family ``torchvision:*``).

    Parameters
    ----------
    name : str
        ``"torchvision:<arch>"``, ``<arch>`` one of ``torchvision.models.list_models(module=torchvision.models)``
        (e.g. ``"torchvision:resnet50"``); anything else is a :class:`ConfigError` with a suggestion.
    weights, weights_file, seed, layers
        As :class:`TorchvisionModel`: the architecture's ``DEFAULT`` weights enum from the torch hub
        cache (offline without it: ``"auto"`` falls back to seeded random init with a warning,
        ``"pretrained"`` raises :class:`~framework.errors.DataError`).

    Notes
    -----
    Default layers: AlexNet and VGG keep their conventions (``torchvision:alexnet`` equals ``alexnet``);
    every other network gets ``pixels``, its stages (:func:`stage_layers`), ``pre_logits``, ``logits``.
    """

    Params = NoParams

    def __init__(self, *, name: str, weights: str = "auto", weights_file: str | Path | None = None,
                 seed: int = 0, layers: list[str] | None = None, **params: Any) -> None:
        HookedTorchModel.__init__(self, name=name, weights=weights, weights_file=weights_file, seed=seed,
                                  layers=layers, **params)
        if not isinstance(name, str) or not name.startswith(PREFIX) or len(name) == len(PREFIX):
            raise ConfigError(f"A torchvision model name must look like '{PREFIX}<architecture>' (e.g. "
                              f"'{PREFIX}resnet50'), got {name!r}.")
        arch = name[len(PREFIX):]
        archs = _classification_archs()
        if arch not in archs:
            hint = did_you_mean(name, [PREFIX + a for a in archs])
            raise ConfigError(f"Unknown torchvision model '{name}'.{hint} The {len(archs)} valid names are "
                              f"'{PREFIX}' + torchvision.models.list_models(module=torchvision.models), e.g. "
                              f"'{PREFIX}resnet50'.")
        self._set_arch(arch)
