"""The pixel baseline as a model: the preprocessed image itself, one layer named ``image``.

Brain-Score lists a ``pixels`` model beside the networks (Schrimpf et al. 2018) so that every
benchmark shows what the raw image already explains. Here the image goes through the same
preprocessing as the torchvision networks (shorter side 256 px, centre crop 224 px, RGB in
[0, 1] normalised by the ImageNet mean and standard deviation), so the row equals the
``pixels`` baseline layer of AlexNet and VGG. The layer is called ``image``, not ``pixels``:
metrics leave the baseline layers out of the best-layer choice, and here it is the model.

The model has no weights: ``weights_info()`` reports source ``"pretrained"`` with the label
``no weights (image pixels)`` and a digest of the preprocessing, so its cells are keyed like any
model's and it is never shown as a random-init fallback.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from framework.contracts import WeightsInfo
from plugins.models.base import TorchModulePlugin


def _identity_module():
    import torch

    class _Image(torch.nn.Module):
        """Passes the preprocessed batch through a named, parameter-free module ``image``."""

        def __init__(self) -> None:
            super().__init__()
            self.image = torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.image(x)

    return _Image()


class PixelsModel(TorchModulePlugin):
    """The image pixels as a model (one layer, ``image``: 3 x 224 x 224 = 150,528 features)."""

    default_layer_map = {"image": "image"}
    input_size = 224
    plugin_version = "1"

    def build_module(self):
        return _identity_module()

    def _convention_layers(self) -> list[str]:
        return ["image"]

    def load_pretrained(self, module: Any) -> WeightsInfo:
        digest = hashlib.sha256(json.dumps(self.preprocessing(), sort_keys=True).encode()).hexdigest()
        return WeightsInfo(source="pretrained", label="no weights (image pixels)", digest=digest, seed=None,
                           detail="parameter-free: the preprocessed image; digest of the preprocessing")
