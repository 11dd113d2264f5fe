"""Public base class for third-party PyTorch networks.

A package that wants its own ``torch.nn.Module`` scored subclasses
:class:`TorchModulePlugin`, implements :meth:`~TorchModulePlugin.build_module`, declares its
default layers and preprocessing as class attributes, and registers the class through the
``framework`` entry-point group (see the README). Layer extraction (forward hooks under
``torch.inference_mode``), streaming to the cache, weights files (``--weights-file``, never
unpickled), seeded random initialisation and provenance come from the framework's own PyTorch
machinery; :meth:`TorchModulePlugin.load_from_url` downloads and caches published weights safely.

Example
-------
>>> class TinyNetPlugin(TorchModulePlugin):
...     default_layer_map = {"conv1": "conv1", "logits": "fc"}
...     input_size = 64
...     def build_module(self):
...         return TinyNet()
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from framework.contracts import WeightsInfo
from framework.errors import DataError, FrameworkError
from plugins.models._torch_common import PIXELS, HookedTorchModel, _Tap, load_hub_checkpoint, one_line

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["TorchModulePlugin", "PIXELS"]


class TorchModulePlugin(HookedTorchModel):
    """A model plugin around any ``torch.nn.Module``.

    Class attributes
    ----------------
    default_layer_map : dict of str to str
        Default layers in forward order: friendly name -> module path as in
        ``module.named_modules()`` (``"features.3"``). ``pixels`` (the normalised input)
        is always available and listed first by default.
    input_size : int
        Side of the square input in px (centre crop).
    resize : int or None
        Shorter side in px before the crop; None means ``round(input_size / 0.875)``.
    mean, std : tuple of 3 floats
        Per-channel normalisation of RGB values in [0, 1].
    interpolation : {"bilinear", "bicubic", "nearest"}
    """

    default_layer_map: dict[str, str] = {}
    input_size: int = 224
    resize: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._input_size = (3, int(self.input_size), int(self.input_size))

    @abstractmethod
    def build_module(self) -> torch.nn.Module:
        """Return the network, randomly initialised (the framework seeds torch first)."""

    def load_pretrained(self, module: torch.nn.Module) -> WeightsInfo:
        """Load pretrained weights into ``module`` and describe them.

        The default has no pretrained source: ``--weights auto`` falls back to seeded
        random init and ``--weights pretrained`` fails with a clear message. Override
        to read packaged weights, or to download them with :meth:`load_from_url` (cached,
        hash-checked, never unpickled; ``torch.hub.load_state_dict_from_url`` unpickles
        whatever is in its cache, so do not use it); raise
        :class:`framework.errors.DataError` when they cannot be had. Any other exception is
        reported as a :class:`DataError` too.
        """
        raise DataError(f"Model '{self.name}' has no pretrained weights source; give a local file with "
                        f"--weights-file {self.name}=PATH (.safetensors/.pt/.pth) or use --weights random.")

    def load_from_url(self, module: torch.nn.Module, url: str, *, label: str) -> WeightsInfo:
        """Load the state dict published at ``url`` into ``module``, for :meth:`load_pretrained`.

        The file is kept in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); offline the
        call fails after a probe of at most 5 s; a download times out instead of hanging; the
        cached file is checked against the SHA-256 prefix in its name (name the file
        ``<name>-<first 8 hex digits of its SHA-256>.pth``) before it is read, and read with
        ``torch.load(weights_only=True)``: a file that would run code is refused, never executed.

        Parameters
        ----------
        module : torch.nn.Module
            The network passed to :meth:`load_pretrained`; loaded strictly.
        url : str
            Where the ``.pth`` state dict is published.
        label : str
            Short description for the leaderboard, e.g. ``"ImageNet (v1)"``.

        Raises
        ------
        DataError
            Offline with nothing cached, a damaged or planted cache file, a file that does not fit.
        """
        cached, digest = load_hub_checkpoint(module, url, model=self.name,
                                             what=f"pretrained weights for model '{self.name}'")
        return WeightsInfo(source="pretrained", label=label, digest=digest, seed=None,
                           detail=f"{url} via torch hub cache file {cached}; digest of the file")

    # -- the HookedTorchModel hooks, derived from the declarations above --------------------
    def _build(self) -> torch.nn.Module:
        return self.build_module()

    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        try:
            info = self.load_pretrained(module)
        except FrameworkError:
            raise
        except Exception as exc:  # a third-party loader's own failure: still one clear line
            raise DataError(f"Pretrained weights of model '{self.name}' could not be loaded by "
                            f"{type(self).__name__}.load_pretrained ({type(exc).__name__}: {one_line(exc, 200)}); "
                            f"give a local file with --weights-file {self.name}=PATH (.safetensors/.pt/.pth) or "
                            "use --weights random.") from None
        if not isinstance(info, WeightsInfo):
            raise DataError(f"{type(self).__name__}.load_pretrained of model '{self.name}' returned "
                            f"{type(info).__name__}, not a WeightsInfo; fix the plugin, or use --weights random.")
        return module, info

    def _resize_px(self) -> int:
        return int(self.resize) if self.resize else int(round(self.input_size / 0.875))

    def _make_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        from torchvision import transforms

        mode = {"bilinear": transforms.InterpolationMode.BILINEAR,
                "bicubic": transforms.InterpolationMode.BICUBIC,
                "nearest": transforms.InterpolationMode.NEAREST}[self.interpolation]
        return transforms.Compose([
            transforms.Resize(self._resize_px(), interpolation=mode, antialias=True),
            transforms.CenterCrop(self.input_size),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    def _special_taps(self, module: torch.nn.Module) -> dict[str, _Tap]:
        return {alias: _Tap(path) for alias, path in self.default_layer_map.items() if alias != path}

    def _convention_layers(self) -> list[str]:
        layers = list(self.default_layer_map)
        return layers if PIXELS in layers else [PIXELS, *layers]

    def preprocessing(self) -> dict[str, Any]:
        """Resize (shorter side, px), centre crop (px), interpolation, mean and std per RGB channel."""
        return {"library": type(self).__module__, "input_size": list(self._input_size), "resize": self._resize_px(),
                "crop": int(self.input_size), "interpolation": self.interpolation,
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}
