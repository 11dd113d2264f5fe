"""Shared machinery of the PyTorch model plugins (torchvision, timm).

* image -> tensor: any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) becomes RGB, any size is
  accepted (the library's own resize / centre crop does the rest);
* weights files: ``.safetensors``, ``.pt``, ``.pth`` (and ``.bin``) read into a state dict and
  loaded strictly, with one :class:`~framework.errors.DataError` naming the file and what is wrong;
* seeded random initialisation that does not disturb the caller's global RNG;
* SHA-256 digests of files and of state dicts;
* :class:`HookedTorchModel`, the base of both plugins: layer discovery by a dry forward pass,
  forward-hook extraction under ``eval()`` and ``torch.inference_mode()`` with the hooks removed
  in ``finally``, and the weights policy ("pretrained" / "random" / "auto" / a local file).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.contracts import ModelPlugin, WeightsInfo
from framework.errors import ConfigError, DataError, PluginError, unknown_name_error
from framework.types import StimulusSet
from framework.validation import check_option

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

log = logging.getLogger("framework.models")

#: The special layer holding the preprocessed (normalised) input image.
PIXELS = "pixels"
#: Weights policies accepted by every model plugin.
WEIGHTS_POLICIES = ("auto", "pretrained", "random")
#: File suffixes accepted as weights files.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: Background the alpha channel of RGBA / LA / transparent-palette images is composited onto.
ALPHA_BACKGROUND = (255, 255, 255)


# ----------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------
def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image.

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode and size. Grey levels are replicated into three channels; an alpha channel
        (RGBA, LA, palette with transparency) is composited onto white
        (:data:`ALPHA_BACKGROUND`); 16-bit integer images (``I;16*``) are divided by 257;
        32-bit integer (``I``) and float (``F``) images are clipped to 0..255 (``F`` images
        whose maximum is at most 1 are first multiplied by 255).

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, same width and height.
    """
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        arr = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr, nan=0.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# ----------------------------------------------------------------------------------------
# digests and seeds
# ----------------------------------------------------------------------------------------
def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 hex digest of the bytes of ``path``, read in chunks of ``chunk_bytes``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_digest(state: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 hex digest of a state dict: every entry's name, dtype, shape and bytes, in order.

    Bit-identical weights give identical digests; used for randomly initialised networks.
    """
    import torch

    sd = state.state_dict() if isinstance(state, torch.nn.Module) else state
    h = hashlib.sha256()
    for key, tensor in sd.items():
        t = tensor.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():  # hashed through the buffer protocol: no copy of large tensors
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        h.update(b"\x1f")
    return h.hexdigest()


def seeded(build: Callable[[], Any], seed: int) -> Any:
    """Call ``build()`` with torch's CPU generator seeded by ``seed``; the caller's RNG state is restored.

    The same seed gives bit-identical parameters across processes and runs.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------------------
# weights files
# ----------------------------------------------------------------------------------------
def _file_fix(model: str) -> str:
    return (f"Pass a complete weights file saved from the same architecture "
            f"(--weights-file {model}=PATH, a .safetensors/.pt/.pth state dict), or drop the option.")


def read_state_dict(path: str | Path, *, model: str) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` state dict on the CPU.

    Parameters
    ----------
    path : str or Path
        ``.safetensors`` (read with :mod:`safetensors`), or ``.pt`` / ``.pth`` / ``.bin``
        (``torch.load(weights_only=True)``). A checkpoint dict holding the weights under
        ``"state_dict"``, ``"model"`` or ``"model_state_dict"`` is unwrapped, and a common
        ``"module."`` prefix (DataParallel) is stripped.
    model : str
        Model name, used in error messages.

    Raises
    ------
    DataError
        The file is missing, has an unsupported suffix, is truncated or corrupt, or holds no
        tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Weights file '{path}' for model '{model}' does not exist. {_file_fix(model)}")
    suffix = path.suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise DataError(f"Weights file '{path}' for model '{model}' has suffix '{path.suffix}'; expected one of "
                        f"{', '.join(WEIGHTS_SUFFIXES)}. Save the state dict with safetensors.torch.save_file "
                        "or torch.save.")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / pickle / zip raise many kinds for damaged files
        size = path.stat().st_size
        raise DataError(f"Weights file '{path}' for model '{model}' cannot be read ({size} bytes; "
                        f"{type(exc).__name__}: {str(exc)[:200]}); it is probably truncated or corrupt. "
                        f"{_file_fix(model)}") from None
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"Weights file '{path}' for model '{model}' does not hold a state dict "
                        f"(got {type(obj).__name__}). {_file_fix(model)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, path: str | Path,
                           model: str) -> None:
    """Load ``state`` into ``module`` with ``strict=True`` after checking keys and shapes.

    The check runs before anything is copied, so a failing file leaves ``module`` untouched.

    Raises
    ------
    DataError
        Naming the file, the counts of missing and unexpected keys (with examples) and the
        first shape mismatches.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:2])})")
        raise DataError(f"Weights file '{path}' does not fit model '{model}' ({len(expected)} tensors expected, "
                        f"{len(state)} in file): {'; '.join(parts)}. It was probably saved from another "
                        f"architecture or with other model options. {_file_fix(model)}")
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------
# downloads and the torch hub cache
# ----------------------------------------------------------------------------------------
#: Seconds a weights download waits for the server (to connect, or for any block of data)
#: before giving up; ``$FRAMEWORK_DOWNLOAD_TIMEOUT`` overrides it. A firewalled machine
#: therefore falls back (``weights="auto"``) or fails (``"pretrained"``) instead of hanging.
DOWNLOAD_TIMEOUT = 20.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def download_timeout() -> float:
    """The download timeout in seconds: ``$FRAMEWORK_DOWNLOAD_TIMEOUT`` if a positive number, else the default."""
    try:
        value = float(os.environ.get("FRAMEWORK_DOWNLOAD_TIMEOUT", ""))
    except ValueError:
        return DOWNLOAD_TIMEOUT
    return value if math.isfinite(value) and value > 0 else DOWNLOAD_TIMEOUT


def hash_prefix_in_name(name: str) -> str | None:
    """The SHA-256 prefix a hub file name carries (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``), if any."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def download_file(url: str, dst: str | Path, *, hash_prefix: str | None = None,
                  timeout: float | None = None) -> None:
    """Download ``url`` to ``dst`` atomically.

    The bytes go to a temporary ``.partial`` file next to ``dst`` that is renamed only once
    complete and, when ``hash_prefix`` is given, once its SHA-256 starts with it; the
    temporary file is removed on any failure. Every socket operation times out after
    ``timeout`` seconds (default :func:`download_timeout`).

    Raises
    ------
    OSError
        Network errors (``urllib.error.URLError``, ``TimeoutError``) and file errors.
    ValueError
        The download does not match ``hash_prefix``.
    """
    import urllib.request

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{uuid.uuid4().hex}.partial")
    digest = hashlib.sha256()
    log.info("Downloading %s to %s ...", url, dst)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "torch.hub"})
        with urllib.request.urlopen(request, timeout=timeout or download_timeout()) as response, \
                open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(1 << 20), b""):
                fh.write(block)
                digest.update(block)
        if hash_prefix and not digest.hexdigest().startswith(hash_prefix):
            raise ValueError(f"the downloaded file's SHA-256 ({digest.hexdigest()[:16]}...) does not start with "
                             f"'{hash_prefix}' as its name says; the download is damaged")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save`` state dict with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a file crafted to run code when unpickled is refused, never executed.

    Raises
    ------
    ValueError
        The file cannot be read that way (corrupt, or holds other objects) or is not a state dict;
        the message is one line.
    """
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (forbidden global), RuntimeError (damaged zip), EOFError ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"torch.load(weights_only=True) refused it: {type(exc).__name__}: {first[:200]}") from None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"it holds a {type(obj).__name__}, not a state dict of tensors")
    return obj


# ----------------------------------------------------------------------------------------
# the base plugin
# ----------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised from a hook once every requested layer is captured (skips the rest of the net)."""


@dataclass(frozen=True)
class _Tap:
    """Where a layer is read: the output (or the input) of the module at ``path`` ("" = whole net)."""

    path: str
    kind: str = "output"  # "output" | "input"


def _first_tensor(value: Any) -> torch.Tensor | None:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


class HookedTorchModel(ModelPlugin):
    """Base of the PyTorch model plugins: layers by forward hooks, lazy weights, seeded init.

    Subclasses implement :meth:`_build` (the architecture, randomly initialised),
    :meth:`_load_pretrained`, :meth:`_make_transform`, :meth:`_special_taps`,
    :meth:`_convention_layers` and set ``_input_size``.

    Laziness: construction only validates the options. The network is built (seeded random
    init) on the first call that needs it (:meth:`layers`, :meth:`layer_shapes`, ...), and
    the weights are resolved on the first :meth:`weights_info` or :meth:`extract`.
    """

    plugin_version = "1"
    library = "torch"
    #: Whether a failed pretrained load may have modified the module passed to
    #: :meth:`_load_pretrained` (then ``weights="auto"`` rebuilds it before falling back
    #: to random init). Loaders that raise before touching it set this to False.
    pretrained_failure_may_touch_module: bool = True

    def __init__(self, *, name: str, weights: str = "auto", weights_file: str | Path | None = None,
                 seed: int = 0, layers: Sequence[str] | None = None, **params: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Model name must be a non-empty string, got {name!r}.")
        self.name = name
        self._init_params(params, name)
        self.weights = check_option(f"{name}: weights", weights, WEIGHTS_POLICIES)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"{name}: seed must be a non-negative integer, got {seed!r}; e.g. seed=0.")
        self.seed = int(seed)
        if weights_file is not None:
            weights_file = Path(weights_file).expanduser()
            if not weights_file.is_file():
                raise DataError(f"Weights file '{weights_file}' for model '{name}' does not exist. "
                                f"{_file_fix(name)}")
        self.weights_file: Path | None = weights_file
        if layers is not None and (isinstance(layers, str) or not all(isinstance(x, str) for x in layers)
                                   or not layers):
            raise ConfigError(f"{name}: layers must be a non-empty list of layer names, got {layers!r}.")
        self._layer_choice = None if layers is None else list(layers)
        self._module: torch.nn.Module | None = None
        self._info: WeightsInfo | str | None = None  # str: random init, digest pending
        self._graph: tuple[list[str], dict[str, _Tap], dict[str, tuple[int, ...]]] | None = None
        self._transform: Callable[[Image.Image], torch.Tensor] | None = None

    # -- subclass hooks -------------------------------------------------------------------
    _input_size: tuple[int, int, int] = (3, 224, 224)

    @abstractmethod
    def _build(self) -> torch.nn.Module:
        """Build the architecture with the current (already seeded) torch RNG."""

    @abstractmethod
    def _load_pretrained(self, module: torch.nn.Module) -> tuple[torch.nn.Module, WeightsInfo]:
        """Load the library's pretrained weights; raise :class:`DataError` when unavailable."""

    @abstractmethod
    def _make_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The library's evaluation transform (RGB PIL image -> (3, H, W) float tensor)."""

    def _special_taps(self, module: torch.nn.Module) -> dict[str, _Tap]:
        """Friendly layer names -> taps (aliases, ``pre_logits``, ``logits``)."""
        return {}

    @abstractmethod
    def _convention_layers(self) -> list[str]:
        """The field's default layer list for this network, in forward order."""

    # -- building and weights ---------------------------------------------------------------
    def _built(self) -> torch.nn.Module:
        if self._module is None:
            module = seeded(self._build, self.seed)
            module.eval()
            self._module = module
        return self._module

    def _ready(self) -> torch.nn.Module:
        """The network with its weights resolved (the weights policy applied once)."""
        if self._info is None:
            self._info = self._resolve_weights()
        assert self._module is not None  # set by _resolve_weights
        return self._module

    def _random_info(self, detail: str) -> str:
        """Random init: the digest (hashing every tensor) is computed on the first weights_info()."""
        self._built()
        return detail

    def _resolve_weights(self) -> WeightsInfo | str:
        module = self._built()
        if self.weights_file is not None:
            state = read_state_dict(self.weights_file, model=self.name)
            load_state_dict_strict(module, state, path=self.weights_file, model=self.name)
            module.eval()
            return WeightsInfo(source="file", label=f"file {self.weights_file.name}",
                               digest=sha256_file(self.weights_file), seed=None,
                               detail=f"loaded strictly from {self.weights_file.resolve()}")
        if self.weights == "random":
            return self._random_info(f"torch.manual_seed({self.seed}) before building; {self.library} init")
        try:
            new_module, info = self._load_pretrained(module)
        except DataError as exc:
            if self.weights == "pretrained":
                raise
            log.warning("Model '%s': pretrained weights unavailable, using random init (seed %d). %s",
                        self.name, self.seed, exc)
            if self.pretrained_failure_may_touch_module:
                self._module = None  # a failed load may have touched the parameters: rebuild
            return self._random_info(f"weights='auto' fell back to random init: {exc}")
        new_module.eval()
        self._module = new_module
        return info

    def weights_info(self) -> WeightsInfo:
        """Describe the weights in use, resolving them on first call (may download)."""
        module = self._ready()
        if isinstance(self._info, str):  # random init: digest of the state dict, computed once
            self._info = WeightsInfo(source="random", label=f"random init (seed {self.seed})",
                                     digest=state_dict_digest(module), seed=self.seed, detail=self._info)
        assert isinstance(self._info, WeightsInfo)
        return self._info

    # -- preprocessing ----------------------------------------------------------------------
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The evaluation transform (RGB PIL image -> (3, H, W) float32 tensor), built once."""
        if self._transform is None:
            self._transform = self._make_transform()
        return self._transform

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Turn PIL images of any mode and size into one batch.

        Returns
        -------
        torch.Tensor, (n_images, 3, height, width) float32
            Resized, centre-cropped and normalised as :meth:`preprocessing` describes.
        """
        import torch

        tf = self.transform()
        return torch.stack([tf(to_rgb(img)) for img in images]).to(torch.float32)

    def _batch(self, stimuli: StimulusSet, start: int, stop: int) -> torch.Tensor:
        return self.preprocess([stimuli.image(i) for i in range(start, stop)])

    # -- layers -----------------------------------------------------------------------------
    def _discover(self) -> tuple[list[str], dict[str, _Tap], dict[str, tuple[int, ...]]]:
        """Dry forward pass on one zero image at the input size: layer order, taps and shapes.

        Every module that returns a tensor and runs exactly once per forward pass is a layer,
        listed in the order modules finish. Modules run several times (shared activations)
        are left out because their output is ambiguous.
        """
        if self._graph is not None:
            return self._graph
        import torch

        try:  # shapes and order only: a parameter-free build on the meta device is instant
            with torch.device("meta"):
                meta_module = self._build()
            meta_module.eval()
            found = self._dry_run(meta_module, torch.device("meta"))
        except Exception as exc:  # some networks call .item()/.tolist() while building
            log.debug("Model '%s': meta-device dry run failed (%s); using the real network.", self.name, exc)
            found = None
        if found is None:
            try:
                found = self._dry_run(self._built(), torch.device("cpu"))
            except Exception as exc:
                raise PluginError(f"Model '{self.name}' failed a dry forward pass on a {self._input_size} "
                                  f"input ({type(exc).__name__}: {exc}); check the model options.") from None
        special, order, calls, shapes, in_shapes = found
        names: list[str] = [PIXELS]
        taps: dict[str, _Tap] = {PIXELS: _Tap("<input>", "pixels")}
        layer_shapes: dict[str, tuple[int, ...]] = {PIXELS: tuple(self._input_size)}
        before: dict[str, list[str]] = {}
        for alias, tap in special.items():
            before.setdefault(tap.path, []).append(alias)
        for path in order:
            if path == "" or calls.get(path) != 1:
                continue
            for alias in before.get(path, []):
                tap = special[alias]
                shape = in_shapes.get(path) if tap.kind == "input" else shapes[path]
                if shape is not None:
                    names.append(alias)
                    taps[alias] = tap
                    layer_shapes[alias] = shape
            names.append(path)
            taps[path] = _Tap(path)
            layer_shapes[path] = shapes[path]
        for alias in before.get("", []):  # whole-network output goes last
            names.append(alias)
            taps[alias] = special[alias]
            layer_shapes[alias] = shapes[""]
        self._graph = (names, taps, layer_shapes)
        return self._graph

    def _dry_run(self, module: torch.nn.Module, device: torch.device) -> tuple:
        """Forward one zero image through ``module`` with hooks on every module; record order and shapes."""
        import torch

        special = self._special_taps(module)
        input_paths = {t.path for t in special.values() if t.kind == "input"}
        order: list[str] = []
        calls: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        in_shapes: dict[str, tuple[int, ...]] = {}
        handles = []

        def post(path: str):
            def hook(_mod, _inp, out):
                calls[path] = calls.get(path, 0) + 1
                t = _first_tensor(out) if path == "" else (out if isinstance(out, torch.Tensor) else None)
                if t is not None and path not in shapes:
                    order.append(path)
                    shapes[path] = tuple(int(v) for v in t.shape[1:])
            return hook

        def pre(path: str):
            def hook(_mod, inp):
                t = _first_tensor(inp)
                if t is not None:
                    in_shapes[path] = tuple(int(v) for v in t.shape[1:])
            return hook

        try:
            for path, sub in module.named_modules():
                handles.append(sub.register_forward_hook(post(path)))
                if path in input_paths:
                    handles.append(sub.register_forward_pre_hook(pre(path)))
            with torch.inference_mode():
                module(torch.zeros((1, *self._input_size), dtype=torch.float32, device=device))
        finally:
            for h in handles:
                h.remove()
        return special, order, calls, shapes, in_shapes

    def layers(self) -> list[str]:
        """Every extractable layer in forward order.

        ``"pixels"`` first, then every module path (``"features.1"``) in the order modules
        finish; friendly names (``"conv1"``, ``"pre_logits"``, ``"logits"``) are listed just
        before the module they read.
        """
        return list(self._discover()[0])

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape of each layer for one stimulus (no batch axis), in forward order."""
        return dict(self._discover()[2])

    def default_layers(self) -> list[str]:
        """The ``layers`` option when given, else the field's convention for this network."""
        chosen = self._layer_choice if self._layer_choice is not None else self._convention_layers()
        self._check_layers(chosen, option="layers")
        return list(chosen)

    def _check_layers(self, layers: Sequence[str], *, option: str) -> list[str]:
        if isinstance(layers, str) or not layers or not all(isinstance(x, str) for x in layers):
            raise ConfigError(f"{self.name}: {option} must be a non-empty list of layer names, got {layers!r}.")
        known = self._discover()[1]
        for layer in layers:
            if layer not in known:
                raise unknown_name_error("layer", layer, known, option=f"{self.name} {option}",
                                         error_cls=ConfigError)
        dup = sorted({x for x in layers if list(layers).count(x) > 1})
        if dup:
            raise ConfigError(f"{self.name}: {option} lists {', '.join(map(repr, dup))} more than once; "
                              "give each layer once.")
        return list(layers)

    # -- extraction -------------------------------------------------------------------------
    def extract(self, stimuli: StimulusSet, layers: Sequence[str], *,
                batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Yield, per batch in stimulus order, ``{layer: (batch, n_features) float32}``.

        Parameters
        ----------
        stimuli : StimulusSet, (n_stimuli,)
        layers : sequence of str
            Names from :meth:`layers`; the yielded dicts follow this order.
        batch_size : int
            Stimuli per forward pass.

        Notes
        -----
        Validation and weight resolution happen at call time, not on the first ``next()``.
        Each batch runs under ``eval()`` and ``torch.inference_mode()`` with forward hooks that
        are removed in ``finally`` before the batch is yielded (no hook or grad mode leaks into
        the consumer). The forward pass stops as soon as every requested layer is captured.
        Preprocessing of the next batch overlaps the forward pass of the current one.
        """
        if not isinstance(stimuli, StimulusSet):
            raise ConfigError(f"{self.name}: extract() needs a StimulusSet, got {type(stimuli).__name__}.")
        layers = self._check_layers(layers, option="layers")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be a positive integer, got {batch_size!r}.")
        module = self._ready()
        return self._iterate(module, stimuli, layers, int(batch_size))

    def _iterate(self, module: torch.nn.Module, stimuli: StimulusSet, layers: list[str],
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:

        taps = self._discover()[1]
        groups: dict[_Tap, list[str]] = {}
        for layer in layers:
            if layer != PIXELS:
                groups.setdefault(taps[layer], []).append(layer)
        by_path = dict(module.named_modules())
        n = len(stimuli)
        starts = list(range(0, n, batch_size))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="framework-preprocess")
        try:
            pending = pool.submit(self._batch, stimuli, 0, min(batch_size, n)) if n else None
            for k in range(len(starts)):
                assert pending is not None
                x = pending.result()
                pending = (pool.submit(self._batch, stimuli, starts[k + 1], min(starts[k + 1] + batch_size, n))
                           if k + 1 < len(starts) else None)
                yield self._forward(module, by_path, x, layers, groups)
        finally:
            if pending is not None:
                pending.cancel()
            pool.shutdown(wait=True)

    def _forward(self, module: torch.nn.Module, by_path: dict[str, torch.nn.Module], x: torch.Tensor,
                 layers: list[str], groups: dict[_Tap, list[str]]) -> dict[str, np.ndarray]:
        import torch

        b = x.shape[0]
        captured: dict[_Tap, np.ndarray] = {}
        n_taps = len(groups)

        def grab(tap: _Tap, t: Any) -> None:
            t = _first_tensor(t)
            if t is None:
                raise PluginError(f"Model '{self.name}': layer '{tap.path}' returned no tensor.")
            # copy: later in-place ops (ReLU(inplace=True)) must not change what was captured
            captured[tap] = t.detach().reshape(b, -1).to(device="cpu", dtype=torch.float32, copy=True).numpy()
            if len(captured) == n_taps:
                raise _StopForward

        def post(tap: _Tap):
            return lambda _m, _i, out: grab(tap, out)

        def pre(tap: _Tap):
            return lambda _m, inp: grab(tap, inp)

        out: dict[str, np.ndarray] = {}
        if PIXELS in layers:  # copied before the forward pass in case a network writes to its input
            out[PIXELS] = x.reshape(b, -1).to(torch.float32).numpy().copy()
        handles = []
        module.eval()
        try:
            with torch.inference_mode():
                for tap in groups:
                    sub = by_path[tap.path]
                    handles.append(sub.register_forward_pre_hook(pre(tap)) if tap.kind == "input"
                                   else sub.register_forward_hook(post(tap)))
                if groups:
                    with contextlib.suppress(_StopForward):
                        module(x)
        finally:
            for h in handles:
                h.remove()
        missing = [t.path for t in groups if t not in captured]
        if missing:
            raise PluginError(f"Model '{self.name}': layers at {missing} did not run in the forward pass.")
        for tap, names in groups.items():
            for name in names:
                out[name] = captured[tap]
        return {layer: out[layer] for layer in layers}

    # -- description -------------------------------------------------------------------------
    def __repr__(self) -> str:
        src = f"weights_file='{self.weights_file}'" if self.weights_file else f"weights='{self.weights}'"
        return f"{type(self).__name__}(name='{self.name}', {src}, seed={self.seed})"


def interpolation_name(value: Any) -> str:
    """Lower-case name of a torchvision ``InterpolationMode`` or a timm interpolation string."""
    return str(getattr(value, "value", value)).lower()


def resize_for_crop(crop: int, crop_pct: float) -> int:
    """Shorter-side resize that timm uses for a centre crop of ``crop`` px at ``crop_pct``."""
    return int(math.floor(crop / crop_pct))
