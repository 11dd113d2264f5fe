"""Any timm network by name: ``timm:<model>`` (``timm.list_models()``), optionally ``timm:<model>.<tag>``.

Default layers, in forward order: ``pixels``, the output of every block or stage a user would
name (rule below), ``pre_logits`` (the input of the classifier module, i.e. what
``forward_head(x, pre_logits=True)`` returns) and ``logits`` (the network output).

Which blocks (:func:`block_layers`): timm's ``feature_info`` names only the stages where the
resolution changes (EfficientNet ``blocks.0, 1, 2, 4, 6``), which would leave ``blocks.3`` and
``blocks.5`` unscored. The field scores every block: Brain-Score's layer commitment scores every
candidate layer on separate data and commits the best per region, its candidates spanning the
network's blocks (Schrimpf et al. 2018, bioRxiv 407007). So each ``feature_info`` module that is a
block (a module with children) whose name ends in an integer is widened to all its siblings of the
same name pattern that are blocks too: ``blocks.2`` -> every ``blocks.<i>``, ``layer1`` -> every
``layer<i>``, ``s1`` -> every ``s<i>``. Plain modules (``act1``, VGG's ``features.3``) are kept as
they are and never widened. Examples: ``tf_efficientnet_lite0`` / ``mobilenetv2_100``: ``blocks.0``
... ``blocks.6`` (10 layers with pixels, pre_logits, logits); ``resnet18``: ``act1, layer1`` ...
``layer4`` (8); ``vit_tiny_patch16_224``: ``blocks.0`` ... ``blocks.11`` (15). A deep transformer
thus gets one layer per transformer block. A network without ``feature_info`` uses its top-level
children before the head. ``framework layers timm:<name>`` marks the defaults with ``*``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict

from framework.contracts import WeightsInfo
from framework.errors import ConfigError, DataError, unknown_name_error
from framework.params import PluginParams, param
from plugins.models._torch_common import (
    PIXELS,
    PROBE_TIMEOUT_S,
    HookedTorchModel,
    _Tap,
    check_cached_file,
    download_file,
    hash_prefix_in_name,
    hub_cache_path,
    interpolation_name,
    one_line,
    read_weights_object,
    resize_for_crop,
    seeded,
)
from plugins.models._torch_common import host_unreachable as _host_reachable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

log = logging.getLogger("framework.models.timm")

PREFIX = "timm:"
#: Keyword arguments that override the pretrained config's preprocessing instead of going to
#: ``timm.create_model`` (same meaning as in ``timm.data.resolve_data_config``).
DATA_CONFIG_KEYS = ("mean", "std", "input_size", "crop_pct", "interpolation", "crop_mode")
#: Weights formats that cannot run code when read (everything else is a pickle, checked first).
SAFE_FORMATS = (".safetensors", ".npz")
__all__ = ["PROBE_TIMEOUT_S", "TimmModel", "TimmParams", "block_layers", "hf_cache_folder", "hf_candidates"]


def hf_candidates(cfg: dict[str, Any]) -> list[str]:
    """File names timm would read from a Hugging Face repo, in timm's order: the safetensors
    alternative first (``pytorch_model.bin`` -> ``model.safetensors``), then the named file."""
    wanted = str(cfg.get("hf_hub_filename") or "pytorch_model.bin")
    names = []
    if wanted == "pytorch_model.bin":
        names.append("model.safetensors")
    elif wanted.endswith(".bin"):
        names.append(wanted[:-4] + ".safetensors")
    names.append(wanted)
    return names


def hf_cache_folder(hub_id: str) -> Path:
    """The Hugging Face cache folder of a model repo (``$HF_HOME/hub/models--<org>--<name>``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + hub_id.partition("@")[0].replace("/", "--"))


def block_layers(module: torch.nn.Module) -> list[str]:
    """Module paths of every block a user would name, from timm's ``feature_info`` (see module docstring).

    Parameters
    ----------
    module : torch.nn.Module
        A timm network (parameters may be on the meta device).

    Returns
    -------
    list of str
        Each ``feature_info`` module path; one that is a block (has child modules) and whose last
        name component ends in an integer (``blocks.2``, ``layer1``) is replaced by all its
        siblings matching ``<same prefix><integer>`` that are blocks too (in registration order).
        Duplicates removed; empty without ``feature_info``. Callers put them in forward order.
    """
    paths = [f.get("module") for f in (getattr(module, "feature_info", None) or []) if isinstance(f, dict)]
    out: list[str] = []
    for path in paths:
        if not isinstance(path, str) or not path:
            continue
        widened = [path]
        parent_path, _, leaf = path.rpartition(".")
        match = re.fullmatch(r"(.*?)\d+", leaf)
        try:
            parent = module.get_submodule(parent_path) if parent_path else module
            own = module.get_submodule(path)
        except AttributeError:  # feature_info may name something that is not a module
            own = parent = None
        if match is not None and own is not None and next(own.children(), None) is not None:
            pattern = re.compile(re.escape(match.group(1)) + r"\d+")
            prefix = parent_path + "." if parent_path else ""
            widened = [prefix + name for name, child in parent.named_children()
                       if pattern.fullmatch(name) and next(child.children(), None) is not None] or [path]
        out.extend(p for p in widened if p not in out)
    return out


class TimmParams(PluginParams):
    """Preprocessing overrides of a timm network; other keywords go to ``timm.create_model``.

    Same meaning as in ``timm.data.resolve_data_config``; unset values come from the
    network's pretrained config.
    """

    model_config = ConfigDict(extra="allow")
    extra_help: ClassVar[str] = ("any other NAME=VALUE is a keyword argument of timm.create_model "
                                 "(e.g. pad_type='same', drop_rate=0.1)")

    mean: list[float] | None = param(None, "per-channel RGB mean of the input normalisation (3 numbers)",
                                     min_length=3, max_length=3)
    std: list[float] | None = param(None, "per-channel RGB standard deviation (3 numbers)",
                                    min_length=3, max_length=3)
    input_size: list[int] | None = param(None, "input tensor size [3, height, width] in px",
                                         min_length=3, max_length=3)
    crop_pct: float | None = param(None, "centre-crop fraction of the resized image", gt=0, le=1)
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = param(None, "resize interpolation")
    crop_mode: Literal["center", "squash", "border"] | None = param(None, "how the crop is taken")


class TimmModel(HookedTorchModel):
    """A timm network with forward-hook layer extraction.

    Parameters
    ----------
    name : str
        ``"timm:<timm model name>"``, optionally with a pretrained tag
        (``"timm:resnet18.a1_in1k"``); checked against ``timm.list_models()``.
    weights : {"auto", "pretrained", "random"}
        ``"pretrained"``: ``timm.create_model(..., pretrained=True)`` from the Hugging Face /
        torch hub caches, the cached file checked against the hash its name carries and read
        without unpickling code first (:meth:`_load_pretrained`); offline with nothing cached
        raises :class:`DataError` (after a probe of at most 5 s). ``"random"``: seeded random init.
        ``"auto"``: pretrained, falling back to random init with a warning.
    weights_file : str or Path, optional
        A local state dict (``.safetensors``, ``.pt``, ``.pth``) loaded strictly into the model
        built with ``model_kwargs``; wins over ``weights``.
    seed : int
        Seed of the random initialisation (``torch.manual_seed`` before building).
    layers : list of str, optional
        Overrides :meth:`default_layers`.
    **model_kwargs
        ``mean``, ``std`` (3 floats each), ``input_size`` ((3, H, W)), ``crop_pct``,
        ``interpolation``, ``crop_mode`` override the pretrained config's preprocessing; every
        other keyword goes to ``timm.create_model`` (e.g. ``pad_type="same"``).

    Notes
    -----
    Construction validates the name and options only; the network is built on first use and
    the weights resolved on the first :meth:`weights_info` / :meth:`extract`. Preprocessing is
    ``timm.data.resolve_data_config`` + ``create_transform`` of the pretrained config (with the
    overrides above), also for random init.
    """

    library = "timm"
    #: "2": the default layers are every block (:func:`block_layers`), not only ``feature_info``'s stages.
    #: The version is part of the cell key, so scores made with the old default layers are not reused.
    plugin_version = "2"

    #: The loader raises before loading anything into the module (see HookedTorchModel).
    pretrained_failure_may_touch_module = False

    Params = TimmParams

    def __init__(self, *, name: str, weights: str = "auto", weights_file: str | Path | None = None,
                 seed: int = 0, layers: list[str] | None = None, **params: Any) -> None:
        super().__init__(name=name, weights=weights, weights_file=weights_file, seed=seed, layers=layers, **params)
        import timm

        if not name.startswith(PREFIX) or len(name) == len(PREFIX):
            raise ConfigError(f"timm model name must look like 'timm:<model>' (e.g. 'timm:resnet18'), got {name!r}.")
        self.timm_name = name[len(PREFIX):]
        base = self.timm_name.split(".", 1)[0]
        if base not in timm.list_models():
            raise unknown_name_error("model", name, [PREFIX + m for m in timm.list_models()])
        declared = self.params.model_dump(exclude_unset=True)
        self.data_overrides = {k: v for k, v in declared.items() if k in DATA_CONFIG_KEYS}
        model_kwargs = dict(self.params.model_extra or {})
        for key in ("pretrained", "pretrained_cfg_overlay", "features_only"):
            if key in model_kwargs:
                raise ConfigError(f"{name}: option '{key}' is managed by the framework; use weights= / "
                                  "weights_file= instead.")
        self.model_kwargs = model_kwargs
        if model_kwargs:  # unknown keywords fail now, on a parameter-free build, not at extraction
            self._architecture()
        self._data_config: dict[str, Any] | None = None

    # -- building ------------------------------------------------------------------------------
    def _create(self, pretrained: bool, overlay: dict[str, Any] | None = None) -> torch.nn.Module:
        """``timm.create_model`` with the model's keywords; ``overlay`` changes the pretrained config."""
        import timm

        kwargs = dict(self.model_kwargs)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        try:
            return timm.create_model(self.timm_name, pretrained=pretrained, **kwargs)
        except TypeError as exc:
            if overlay and not self.model_kwargs:  # the overlay, not a user's keyword: reported by the caller
                raise
            raise ConfigError(f"Model '{self.name}' has no parameter among {sorted(self.model_kwargs)}: "
                              f"timm.create_model('{self.timm_name}') rejected it ({exc}). Remove it, or use a "
                              "declared one (`framework list models` describes them) or a keyword the timm "
                              "network accepts.") from None

    def _build(self) -> torch.nn.Module:
        return self._create(pretrained=False)

    def _architecture(self) -> torch.nn.Module:
        """The built network if any, else a parameter-free build on the meta device (for configs)."""
        if self._module is not None:
            return self._module
        import torch

        try:
            with torch.device("meta"):
                return self._create(pretrained=False)
        except ConfigError:
            raise
        except Exception:  # a network that cannot be built on the meta device
            return self._built()

    def data_config(self) -> dict[str, Any]:
        """``timm.data.resolve_data_config`` of the model's pretrained config plus the overrides."""
        if self._data_config is None:
            from timm.data import resolve_data_config

            self._data_config = resolve_data_config(dict(self.data_overrides), model=self._architecture())
        return self._data_config

    @property
    def _input_size(self) -> tuple[int, int, int]:  # type: ignore[override]
        return tuple(int(v) for v in self.data_config()["input_size"])  # type: ignore[return-value]

    def _make_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        from timm.data import create_transform

        return create_transform(**self.data_config(), is_training=False)

    def _special_taps(self, module: torch.nn.Module) -> dict[str, _Tap]:
        taps = {"logits": _Tap("")}
        get_classifier = getattr(module, "get_classifier", None)
        classifier = get_classifier() if callable(get_classifier) else None
        if classifier is not None:
            path = next((p for p, m in module.named_modules() if m is classifier and p), None)
            if path is not None:
                taps["pre_logits"] = _Tap(path, "input")
        return taps

    def _convention_layers(self) -> list[str]:
        """``pixels``, every block (:func:`block_layers`), ``pre_logits``, ``logits``; forward order."""
        module = self._architecture()
        known = self.layers()
        stages = block_layers(module)
        stages = [s for s in stages if s in known]
        if not stages:  # no feature_info: every top-level child before the head
            top = {p for p, _ in module.named_children()}
            stages = [layer for layer in known if layer in top]
        tail = [x for x in ("pre_logits", "logits") if x in known]
        ordered = [layer for layer in known if layer in set(stages)]
        return [PIXELS] + [s for s in ordered if s not in tail] + tail

    # -- weights ---------------------------------------------------------------------------------
    def _cached_file(self, cfg: dict[str, Any]) -> Path | None:
        """The weights file timm would read, if it is already on disk: the Hugging Face cache (repo
        ``hf_hub_id``, :func:`hf_candidates`), else the torch hub cache (``url``), else ``file``."""
        hub_id = cfg.get("hf_hub_id")
        if hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = str(hub_id).partition("@")
            for filename in [*hf_candidates(cfg), "model.safetensors", "pytorch_model.bin"]:
                hit = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
        if cfg.get("url"):
            path = self._hub_path(cfg["url"])
            if path.is_file():
                return path
        if cfg.get("file") and os.path.isfile(cfg["file"]):
            return Path(cfg["file"])
        return None

    @staticmethod
    def _hub_path(url: str) -> Path:
        """Where timm keeps a file downloaded from ``url``: ``<torch hub dir>/checkpoints/<file name>``."""
        return hub_cache_path(url)

    def _download(self, cfg: dict[str, Any], hint: str) -> Path:
        """Fetch the pretrained file into timm's cache (nothing is read as weights here).

        A quick offline probe first (:func:`host_unreachable`, at most 5 s); then
        ``huggingface_hub.hf_hub_download`` (which checks the download) for ``hf_hub_id``, or a
        download to the torch hub cache kept only if it matches the hash in its name.
        """
        hub_id = str(cfg.get("hf_hub_id") or "")
        if hub_id:
            from huggingface_hub import constants

            where = f"{constants.ENDPOINT}/{hub_id.partition('@')[0]}"
            cache = f"the Hugging Face cache folder '{hf_cache_folder(hub_id)}'"
        else:
            where, cache = cfg["url"], f"'{self._hub_path(cfg['url'])}'"
        offline = ("HF_HUB_OFFLINE is set" if hub_id and os.environ.get("HF_HUB_OFFLINE", "").lower()
                   not in ("", "0", "false", "no", "off") else _host_reachable(where))
        if offline is not None:
            raise DataError(f"Pretrained weights of model '{self.name}' ({where}) are not in the Hugging Face or "
                            f"torch hub cache and the machine is offline ({offline}). Copy {cache} from a machine "
                            f"that has it, or {hint}")
        try:
            if not hub_id:
                path = self._hub_path(cfg["url"])
                download_file(cfg["url"], path, hash_prefix=hash_prefix_in_name(path.name))
                return path
            from huggingface_hub import hf_hub_download

            repo, _, revision = hub_id.partition("@")
            last: Exception | None = None
            for filename in hf_candidates(cfg):
                try:
                    return Path(hf_hub_download(repo, filename, revision=revision or None))
                except Exception as exc:  # EntryNotFoundError (no such file in the repo), network errors
                    last = exc
            assert last is not None
            raise last
        except Exception as exc:
            raise DataError(f"Pretrained weights of model '{self.name}' could not be downloaded from {where} "
                            f"({type(exc).__name__}: {one_line(exc, 200)}). Go online, or {hint}") from None

    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        """timm's pretrained weights, from a cache file checked before timm reads it.

        1. The file timm would read is found in the Hugging Face / torch hub cache, or downloaded
           there (:meth:`_download`; offline: a :class:`DataError` after a probe of at most 5 s).
        2. Its SHA-256 is checked against its name (:func:`check_cached_file`: a Hugging Face blob
           is named by its SHA-256, a torch hub file carries a prefix); a mismatch is refused.
        3. A pickle-based file (``.bin``, ``.pth``) is first read with ``torch.load(weights_only=True)``:
           one holding anything but tensors and plain containers is refused, never unpickled.
        4. ``timm.create_model(pretrained=True)`` then loads exactly that file (``pretrained_cfg_overlay``),
           with timm's own key remapping, classifier and input-channel adaptation.
        """
        cfg = dict(getattr(module, "pretrained_cfg", None) or {})
        hint = (f"pass a local file with --weights-file {self.name}=PATH (.safetensors/.pt/.pth), or use "
                "--weights random.")
        if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
            raise DataError(f"timm has no pretrained weights for '{self.timm_name}'; {hint}")
        cached = self._cached_file(cfg)
        if cached is None:
            if not (cfg.get("hf_hub_id") or cfg.get("url")):
                raise DataError(f"The pretrained weights file '{cfg['file']}' of model '{self.name}' does not exist; "
                                f"{hint}")
            cached = self._download(cfg, hint)
        what = f"pretrained weights of model '{self.name}'"
        digest = check_cached_file(cached, what=what, fix=hint)
        if cached.suffix.lower() not in SAFE_FORMATS:
            try:
                read_weights_object(cached)
            except ValueError as exc:
                raise DataError(f"Cached file '{cached}' ({what}) cannot be loaded safely: {exc}. Delete it (it "
                                f"will be downloaded again), or {hint}") from None
        # timm reads exactly the checked file; a network with its own reader (e.g. .npz) keeps it
        overlay = {"file": str(cached), "source": "file", "custom_load": cfg.get("custom_load", False)}
        try:
            new_module = seeded(lambda: self._create(pretrained=True, overlay=overlay), self.seed)
        except ConfigError:
            raise
        except Exception as exc:  # a file timm cannot map onto the network, ...
            raise DataError(f"Cached file '{cached}' ({what}) could not be loaded by timm ({type(exc).__name__}: "
                            f"{one_line(exc, 300)}). Delete it (it will be downloaded again), or {hint}") from None
        tag = cfg.get("tag") or ""
        label = f"pretrained (timm {cfg.get('architecture', self.timm_name)}{'.' + tag if tag else ''})"
        info = WeightsInfo(source="pretrained", label=label, digest=digest, seed=None,
                           detail=f"timm.create_model(pretrained=True) from cached file {cached}; digest of that "
                                  f"file; hub {cfg.get('hf_hub_id') or cfg.get('url')}")
        return new_module, info

    # -- description -------------------------------------------------------------------------------
    def preprocessing(self) -> dict[str, Any]:
        """timm's resolved data config: sizes in px, mean/std per RGB channel, and the resize it implies."""
        dc = self.data_config()
        size = [int(v) for v in dc["input_size"]]
        crop_pct = float(dc.get("crop_pct") or 1.0)
        return {
            "library": "timm",
            "transforms": "timm.data.create_transform(**resolve_data_config(...), is_training=False)",
            "input_size": size,
            "resize": [resize_for_crop(size[1], crop_pct)] if size[1] == size[2] else
                      [resize_for_crop(size[1], crop_pct), resize_for_crop(size[2], crop_pct)],
            "crop": size[1:],
            "crop_pct": crop_pct,
            "crop_mode": str(dc.get("crop_mode", "center")),
            "interpolation": interpolation_name(dc["interpolation"]),
            "mean": [float(v) for v in dc["mean"]],
            "std": [float(v) for v in dc["std"]],
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_overrides.items()},
            "color": "RGB (grey replicated, alpha composited on white)",
        }
