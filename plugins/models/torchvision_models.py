"""torchvision classification networks: AlexNet, the VGG family, and any other torchvision classifier.

Default layers follow the field's conventions:

* AlexNet (Kuzovkin et al. 2018): ``pixels, conv1 .. conv5`` (after ReLU), ``fc6, fc7``
  (after ReLU), ``fc8`` (logits) - nine layers;
* VGG-11/13/16/19 and their ``_bn`` variants: ``pixels, pool1 .. pool5, fc6, fc7`` (after ReLU),
  ``fc8`` (logits);
* other torchvision classifiers: ``pixels``, each top-level child module, in forward order.

Friendly names are aliases of torchvision module paths (``conv1`` -> ``features.1``); both
spellings are valid layer names and give identical arrays.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.contracts import WeightsInfo
from framework.errors import ConfigError, unknown_name_error
from framework.params import PluginParams, param
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


def _classification_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


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
        self.arch = arch
        from torchvision.models import get_model_weights

        self._weights_enum = get_model_weights(arch).DEFAULT
        crop = self._weights_enum.transforms().crop_size
        self._input_size = (3, int(crop[0]), int(crop[-1]))

    # -- subclass hooks -----------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        import torchvision

        return torchvision.models.get_model(self.arch, weights=None)

    def _make_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._weights_enum.transforms()

    def _special_taps(self, module: torch.nn.Module) -> dict[str, _Tap]:
        return {alias: _Tap(path) for alias, path in layer_aliases(self.arch, module).items()}

    def _convention_layers(self) -> list[str]:
        if self.arch == "alexnet":
            return [PIXELS, "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
        if self.arch in VGG_ARCHS:
            return [PIXELS, "pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "fc7", "fc8"]
        import torch

        with torch.device("meta"):
            module = self._build()
        top = {path for path, _ in module.named_children()}
        return [PIXELS] + [layer for layer in self.layers() if layer in top]

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
