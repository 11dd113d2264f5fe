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
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from framework.contracts import WeightsInfo
from framework.errors import ConfigError, DataError, unknown_name_error
from framework.params import PluginParams, param
from plugins.models._torch_common import (
    PIXELS,
    HookedTorchModel,
    _Tap,
    download_file,
    hash_prefix_in_name,
    interpolation_name,
    load_checkpoint_tensors,
    load_state_dict_strict,
    sha256_file,
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
        ``"pretrained"``: the architecture's ``DEFAULT`` weights enum through torchvision's loader
        and the torch hub cache (``$TORCH_HOME/hub/checkpoints``); offline with nothing cached
        raises :class:`DataError`. ``"random"``: seeded random init. ``"auto"``: pretrained,
        falling back to random init with a warning.
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
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self._weights_enum.url).path)

    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        """The ``DEFAULT`` weights from the torch hub cache, downloaded there first if missing.

        Like torchvision's loader (same cache file, same hash check of a download), but the
        download times out (:func:`download_timeout`) instead of hanging on a firewalled
        machine, and the file is read with ``torch.load(weights_only=True)``: a cache file
        that would run code when unpickled is refused, never executed.
        """
        w = self._weights_enum
        cached = self.cached_weights_path()
        enum_name = f"{type(w).__name__}.{w.name}"
        fix = (f"provide a local file with --weights-file {self.name}=PATH (.safetensors/.pt/.pth), "
               "or use weights='random'.")
        expected = hash_prefix_in_name(cached.name)
        if not cached.is_file():
            try:
                download_file(w.url, cached, hash_prefix=expected)
            except Exception as exc:  # URLError, timeout, hash mismatch, disk full ...
                raise DataError(
                    f"Pretrained weights {enum_name} for model '{self.name}' are not in the torch hub cache "
                    f"('{cached}') and could not be downloaded from {w.url} ({type(exc).__name__}: {exc}). "
                    f"Go online once, or {fix}") from None
        try:
            state = load_checkpoint_tensors(cached)
        except ValueError as exc:
            raise DataError(
                f"Torch hub cache file '{cached}' (pretrained weights {enum_name} for model '{self.name}') cannot "
                f"be loaded safely: {exc}. Delete it to download it again, or {fix}") from None
        load_state_dict_strict(module, state, path=cached, model=self.name)
        digest = sha256_file(cached)
        detail = f"torchvision weights {enum_name} from torch hub cache file {cached} (url {w.url}); digest of the file"
        if expected and not digest.startswith(expected):
            log.warning("Model '%s': torch hub cache file %s does not match the hash in its name (SHA-256 %s...); "
                        "it is not the file torchvision publishes. Its digest is recorded with every score.",
                        self.name, cached, digest[:12])
            detail += f"; SHA-256 does not start with '{expected}' as the file name says (not the published file)"
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
