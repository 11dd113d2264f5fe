"""Shared machinery of the PyTorch model plugins (torchvision, timm).

* image -> tensor: any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) becomes RGB, any size is
  accepted (the library's own resize / centre crop does the rest);
* weights files: ``.safetensors``, ``.pt``, ``.pth`` read into a state dict without running code
  (safetensors, or ``torch.load(weights_only=True)``) and loaded strictly, with one
  :class:`~framework.errors.DataError` line naming the file, what is wrong and the fix;
* cached hub files checked against the SHA-256 their name carries before they are read;
* seeded random initialisation that does not disturb the caller's global RNG;
* one warning per model when stimuli are much smaller than the network input (upsampled > 4x);
* SHA-256 digests of files and of state dicts;
* :class:`HookedTorchModel`, the base of both plugins: layer discovery by a dry forward pass,
  forward-hook extraction under ``eval()`` and ``torch.inference_mode()`` with the hooks removed
  in ``finally``, on any torch device and in fp32 or fp16/bf16 autocast (:mod:`framework.devices`),
  and the weights policy ("pretrained" / "random" / "auto" / a local file).
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
from urllib.parse import urlparse

import numpy as np

from framework import downloads as _downloads
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
#: File suffixes accepted as weights files (``--weights-file``): safetensors, or torch.save.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")
#: Background the alpha channel of RGBA / LA / transparent-palette images is composited onto.
ALPHA_BACKGROUND = (255, 255, 255)
#: A stimulus whose shorter side is below this fraction of the network input's shorter side is
#: "small" (upsampled more than 4x; e.g. below 56 px for a 224 px crop): extraction warns once.
SMALL_IMAGE_FRACTION = 0.25


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


#: Half precisions on the CPU announced in this process (slow there: one warning per precision).
_CPU_HALF_ANNOUNCED: set[str] = set()

#: Models whose random-init fallback was announced in this process (a run over several datasets builds a
#: model once per dataset; the warning is given once).
_FALLBACK_ANNOUNCED: set[str] = set()
#: Characters of the reason kept in the one-line fallback warning (the whole reason is logged at debug level).
FALLBACK_REASON_CHARS = 110


def warn_fallback(name: str, seed: int, exc: BaseException) -> None:
    """Announce once per process and model, in one line, that pretrained weights were unavailable and
    seeded random init is used; the full reason and fix go to the debug log (``-v``)."""
    reason = one_line(str(exc).split(". ")[0], FALLBACK_REASON_CHARS)
    log.debug("Model '%s': pretrained weights unavailable: %s", name, exc)
    if name in _FALLBACK_ANNOUNCED:
        return
    _FALLBACK_ANNOUNCED.add(name)
    log.warning("Model '%s': pretrained weights unavailable (%s); using random init (seed %d), labelled 'random "
                "init (fallback)' (-v for the fix).", name, reason, seed)


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
#: Entries of a training checkpoint that may hold the state dict, tried in this order.
CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")
#: A Hugging Face cache blob is named by the SHA-256 of its bytes (large files).
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
#: What the file starts with, by format: a torch.save zip, a legacy torch.save / plain pickle.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def one_line(text: Any, limit: int = 200) -> str:
    """``str(text)`` as one line: terminal colour codes dropped, whitespace collapsed, at most ``limit`` characters."""
    flat = " ".join(_ANSI.sub("", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class WeightsFileProblem(ValueError):
    """A weights file that cannot be used. ``str()`` is one line ("it is empty (0 bytes)"); ``fix`` says what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.fix = fix


_FIX_DAMAGED = "Copy or download the file again (it looks incomplete or damaged)"
_FIX_PICKLE = ("Save only the tensors, from a source you trust: torch.save(model.state_dict(), PATH) "
               "or safetensors.torch.save_file(model.state_dict(), PATH)")
_FIX_NOT_STATE_DICT = "Save model.state_dict() (a dict of named tensors) instead"


def _file_fix(model: str) -> str:
    return (f"Pass a complete weights file saved from the same architecture "
            f"(--weights-file {model}=PATH, a .safetensors/.pt/.pth state dict), or drop the option.")


def _text_head(path: Path, n_bytes: int = 64) -> str | None:
    """The first characters of ``path`` if it looks like text (printable UTF-8), else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n_bytes)
    except OSError:
        return None
    if not head or head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # may be a character cut in two at the end
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not text or any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    return one_line(text, 30)


def _other_format(path: Path) -> WeightsFileProblem | None:
    """A file whose bytes are the other accepted format than its suffix says (safetensors vs torch.save)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return None
    if path.suffix.lower() == ".safetensors" and head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return WeightsFileProblem("it is a torch.save file, not a safetensors file",
                                  f"Rename it to '{path.stem}.pt'")
    if (path.suffix.lower() != ".safetensors" and len(head) == 9 and head[8:9] == b"{"
            and int.from_bytes(head[:8], "little") < size):
        return WeightsFileProblem("it is a safetensors file, not a torch.save file",
                                  f"Rename it to '{path.stem}.safetensors'")
    return None


def _torch_load_failure(path: Path, exc: BaseException) -> WeightsFileProblem:
    """Describe why ``torch.load(path, weights_only=True)`` failed, in one line and without torch's advice
    (it suggests ``weights_only=False``, which would run whatever code the file holds)."""
    head = _text_head(path)
    if head is not None:
        return WeightsFileProblem(f"it is a text file (it starts with {head!r}), not weights saved by torch.save",
                                  "Give the weights file itself, not a text file")
    text = _ANSI.sub("", str(exc))
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe is not None:
        name = unsafe.group(1)
        if name.startswith("torch.nn.") or ".modules." in name:
            return WeightsFileProblem(f"it holds a pickled Python object ({name}; e.g. a whole model saved with "
                                      "torch.save(model)), not only tensors; it was refused without unpickling it",
                                      _FIX_NOT_STATE_DICT)
        return WeightsFileProblem(f"it holds pickled Python objects other than tensors ({name}), which can run code "
                                  "when loaded; it was refused without running them", _FIX_PICKLE)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].split(". ", 1)[0]
        return WeightsFileProblem(f"it holds pickled data other than plain tensors ({one_line(detail, 120)}); it "
                                  "was refused without unpickling it", _FIX_PICKLE)
    lines = [ln for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    first = f": {one_line(lines[0].split('. ', 1)[0].rstrip('.'), 150)}" if lines else ""
    return WeightsFileProblem(f"torch.load cannot read it ({type(exc).__name__}{first}); it is probably truncated or "
                              "corrupt", _FIX_DAMAGED)


def read_weights_object(path: str | Path) -> Any:
    """Read a weights file without running code: ``.safetensors`` with :mod:`safetensors`, anything else
    with ``torch.load(weights_only=True)`` (tensors and plain containers only).

    Returns
    -------
    object
        What the file holds: for safetensors a ``{name: tensor}`` dict; for torch.save files any
        container of tensors and plain values, on the CPU.

    Raises
    ------
    WeightsFileProblem
        The file is empty, cannot be opened, is text, is truncated or corrupt, or holds pickled
        objects other than tensors (refused, never unpickled); the message is one line.
    """
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsFileProblem(f"it cannot be opened ({one_line(exc, 150)})",
                                 "Check the path and its permissions") from None
    if size == 0:
        raise WeightsFileProblem("it is empty (0 bytes)", _FIX_DAMAGED)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (PermissionError, IsADirectoryError) as exc:
        raise WeightsFileProblem(f"it cannot be opened ({one_line(exc, 150)})",
                                 "Check the path and its permissions") from None
    except Exception as exc:  # safetensors / pickle / zip raise many kinds for damaged or unsafe files
        other = _other_format(path)
        if other is not None:
            raise other from None
        if path.suffix.lower() != ".safetensors":
            raise _torch_load_failure(path, exc) from None
        head = _text_head(path)
        if head is not None:
            raise WeightsFileProblem(f"it is a text file (it starts with {head!r}), not a safetensors file",
                                     "Give the weights file itself, not a text file") from None
        raise WeightsFileProblem(f"safetensors cannot read it ({type(exc).__name__}: {one_line(exc, 150)}, "
                                 f"{size} bytes); it is probably truncated or corrupt", _FIX_DAMAGED) from None


def as_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` state dict in what a weights file holds.

    A checkpoint dict holding the weights under one of :data:`CHECKPOINT_WRAPPERS` is
    unwrapped, and a ``"module."`` prefix common to every name (DataParallel) is stripped.

    Raises
    ------
    WeightsFileProblem
        ``obj`` is a bare tensor, not a dict, an empty dict, or has entries that are not tensors.
    """
    import torch

    where = ""
    if isinstance(obj, dict):
        for wrapper in CHECKPOINT_WRAPPERS:
            if isinstance(obj.get(wrapper), dict):
                obj, where = obj[wrapper], f" (under '{wrapper}')"
                break
    if isinstance(obj, torch.Tensor):
        raise WeightsFileProblem(f"it holds a single tensor of shape {tuple(obj.shape)}{where}, not a state dict "
                                 "(a dict of named tensors)", _FIX_NOT_STATE_DICT)
    if not isinstance(obj, dict):
        raise WeightsFileProblem(f"it holds a {type(obj).__name__}{where}, not a state dict (a dict of named "
                                 "tensors)", _FIX_NOT_STATE_DICT)
    if not obj:
        raise WeightsFileProblem(f"it holds an empty dict{where}, no tensors", _FIX_NOT_STATE_DICT)
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        wrappers = "/".join(f"'{w}'" for w in CHECKPOINT_WRAPPERS)
        raise WeightsFileProblem(f"it holds a dict{where} with {len(bad)} of {len(obj)} entries that are not "
                                 f"named tensors (e.g. {', '.join(bad[:3])})"
                                 + ("" if where else f" and no {wrappers} entry holding the weights"),
                                 _FIX_NOT_STATE_DICT)
    if all(k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def check_weights_path(path: str | Path, *, model: str) -> Path:
    """Check what a weights file's path says without reading the file (cheap; used at construction).

    Raises
    ------
    DataError
        ``path`` does not exist, is a directory, does not end in one of
        :data:`WEIGHTS_SUFFIXES`, or is empty.
    """
    path = Path(path).expanduser()
    what = f"Weights file '{path}' for model '{model}'"
    if path.is_dir():
        inside: list[str] = []
        with contextlib.suppress(OSError):
            inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in WEIGHTS_SUFFIXES)[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise DataError(f"{what} is a directory, not a file{hint}. Give the path of the weights file itself: "
                        f"--weights-file {model}=DIR/FILE.safetensors (or .pt/.pth).")
    if not path.is_file():
        raise DataError(f"{what} does not exist. {_file_fix(model)}")
    suffix = path.suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise DataError(f"{what} has suffix '{path.suffix}'; expected one of {', '.join(WEIGHTS_SUFFIXES)}. "
                        "Save the state dict with safetensors.torch.save_file (.safetensors) or torch.save (.pt) "
                        "(a torch.save file under another name, e.g. pytorch_model.bin, can be renamed to .pt) "
                        f"and pass it with --weights-file {model}=PATH.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{what} cannot be opened ({one_line(exc, 150)}). Check the path and its permissions, or "
                        "drop the option.") from None
    if size == 0:
        raise DataError(f"{what} is empty (0 bytes). {_FIX_DAMAGED}, or drop the option.")
    return path


def read_state_dict(path: str | Path, *, model: str) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` state dict on the CPU, without running code.

    Parameters
    ----------
    path : str or Path
        ``.safetensors`` (read with :mod:`safetensors`), or ``.pt`` / ``.pth``
        (``torch.load(weights_only=True)``: tensors and plain containers only). A checkpoint dict
        holding the weights under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` is
        unwrapped, and a ``"module."`` prefix common to every name (DataParallel) is stripped.
    model : str
        Model name, used in error messages.

    Raises
    ------
    DataError
        One line naming the file and the model, what is wrong and the fix: the file is missing,
        a directory, has an unsupported suffix, is empty, text, truncated or corrupt, holds
        pickled objects other than tensors (refused unread), or holds no state dict.
    """
    path = check_weights_path(path, model=model)
    try:
        state = as_state_dict(read_weights_object(path))
    except WeightsFileProblem as exc:
        raise DataError(f"Weights file '{path}' for model '{model}' cannot be used: {exc}. {exc.fix}; pass it with "
                        f"--weights-file {model}=PATH (a .safetensors/.pt/.pth state dict), or drop the "
                        "option.") from None
    check_state_values(state, path=path, model=model)
    return state


def check_state_values(state: dict[str, torch.Tensor], *, path: str | Path, model: str) -> None:
    """Refuse non-finite weights and warn about weights that cannot be a trained network.

    Raises
    ------
    DataError
        A floating-point tensor holds NaN or inf: one line naming the file, the first such
        tensor, how many there are and the fix.

    A file whose floating-point tensors are all zero, or each a single repeated value, is
    loaded with a warning: every feature of such a network is constant, so no metric can
    score it.
    """
    import torch

    floats = {k: v for k, v in state.items() if v.is_floating_point() or v.is_complex()}
    bad = [k for k, v in floats.items() if v.numel() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (and {len(bad) - 1} more of {len(floats)} tensors)" if len(bad) > 1 else ""
        raise DataError(f"Weights file '{path}' for model '{model}' holds NaN/inf values in tensor '{bad[0]}'"
                        f"{more}; it is damaged or was saved from a diverged training run. Give a checkpoint "
                        f"with finite weights (--weights-file {model}=PATH), or drop the option.")
    sized = [v for v in floats.values() if v.numel()]
    if not sized:
        return
    if all(not bool(v.any()) for v in sized):
        log.warning("Weights file '%s' for model '%s': every tensor is zero — is this a real checkpoint? The "
                    "network's features will be constant and no metric can score them.", path, model)
    elif all(bool((v == v.reshape(-1)[0]).all()) for v in sized if v.numel() > 1) and any(
            v.numel() > 1 for v in sized):
        log.warning("Weights file '%s' for model '%s': every tensor holds a single repeated value — is this a real "
                    "checkpoint? The network's features will be (nearly) constant.", path, model)


#: Missing entries that ``load_state_dict`` fills itself (batch-norm counters absent from old checkpoints).
_OPTIONAL_KEYS = ("num_batches_tracked",)


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, path: str | Path,
                           model: str) -> None:
    """Load ``state`` into ``module`` with ``strict=True`` after checking keys and shapes.

    The check runs before anything is copied, so a failing file leaves ``module`` untouched.
    Batch-norm ``num_batches_tracked`` counters may be missing (checkpoints from before they existed).

    Raises
    ------
    DataError
        One line naming the file and the model, the counts of missing and unexpected keys (with
        up to three examples each) and of shape mismatches (with up to two).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_KEYS)]
    # examples: parameters before batch-norm counters, which say little about what the file is
    unexpected = sorted((k for k in state if k not in expected), key=lambda k: k.endswith(_OPTIONAL_KEYS))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    # a floating-point parameter read from integer or boolean values (truncated, not a checkpoint of it)
    mismatched += [f"{k}: file dtype {state[k].dtype} vs model {expected[k].dtype}"
                   for k in expected if k in state and expected[k].is_floating_point()
                   and not state[k].is_floating_point()]
    fix = f"It was probably saved from another architecture or with other model options. {_file_fix(model)}"
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape or dtype mismatches (e.g. {'; '.join(mismatched[:2])})")
        raise DataError(f"Weights file '{path}' does not fit model '{model}' ({len(expected)} tensors expected, "
                        f"{len(state)} in file): {'; '.join(parts)}. {fix}")
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # e.g. a dtype that cannot be copied, a counter torch does not fill
        raise DataError(f"Weights file '{path}' does not fit model '{model}': load_state_dict failed "
                        f"({type(exc).__name__}: {one_line(exc, 200)}). {fix}") from None


# ----------------------------------------------------------------------------------------
# downloads and the torch hub cache
# ----------------------------------------------------------------------------------------
#: Seconds a weights download waits for the server (to connect, or for any block of data) before
#: giving up, and the offline probe's limit: those of :mod:`framework.downloads`, the one
#: implementation (``$FRAMEWORK_DOWNLOAD_TIMEOUT`` overrides the first). A firewalled machine
#: therefore falls back (``weights="auto"``) or fails (``"pretrained"``) instead of hanging.
DOWNLOAD_TIMEOUT = _downloads.DOWNLOAD_TIMEOUT_S
PROBE_TIMEOUT_S = _downloads.PROBE_TIMEOUT_S
#: torchvision / torch hub file names end in ``-<first hex digits of the file's SHA-256>.<ext>``.
_HASH_IN_NAME = re.compile(r".*-([0-9a-f]{6,64})\.[A-Za-z0-9]+")


download_timeout = _downloads.download_timeout


def hash_prefix_in_name(name: str) -> str | None:
    """The SHA-256 prefix a hub file name carries after its last '-' (``alexnet-owt-7be5be79.pth`` ->
    ``7be5be79``), or None (fewer than 6 lower-case hex digits there)."""
    match = _HASH_IN_NAME.fullmatch(os.path.basename(name))
    return match.group(1) if match else None


def expected_sha256_prefix(path: str | Path) -> str | None:
    """What the name of a cached weights file says its SHA-256 starts with, or None if it says nothing.

    A torch hub file carries a prefix in its name (:func:`hash_prefix_in_name`); a Hugging Face
    cache entry is a link to a blob named by the file's whole SHA-256.
    """
    path = Path(path)
    link = path
    with contextlib.suppress(OSError):
        for _ in range(8):  # snapshots/<commit>/<file> -> ../../blobs/<sha256>; follow a few links only
            if _SHA256_NAME.fullmatch(link.name):
                return link.name
            if not link.is_symlink():
                break
            link = link.parent / os.readlink(link)
    return hash_prefix_in_name(path.name)


def check_cached_file(path: str | Path, *, what: str, fix: str) -> str:
    """SHA-256 of a cached weights file, checked against what its name says BEFORE anything reads it as weights.

    Parameters
    ----------
    path : str or Path
        A file in the torch hub or Hugging Face cache.
    what : str
        Its description in messages ("pretrained weights AlexNet_Weights.IMAGENET1K_V1 for model 'alexnet'").
    fix : str
        The alternatives to offer besides deleting the file.

    Returns
    -------
    str
        The file's SHA-256 hex digest (64 characters).

    Raises
    ------
    DataError
        The digest does not start with the hash in the name (the file is not the published one:
        damaged, or planted), or the file cannot be read; one line with both prefixes and the fix.
    """
    path = Path(path)
    expected = expected_sha256_prefix(path)
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise DataError(f"Cached file '{path}' ({what}) cannot be read ({one_line(exc, 150)}). Check its "
                        f"permissions or delete it (it will be downloaded again), or {fix}") from None
    if expected and not digest.startswith(expected):
        n = min(len(expected), 16)
        raise DataError(f"Cached file '{path}' ({what}) is not the published file: its SHA-256 starts with "
                        f"'{digest[:n]}' but its name says '{expected[:n]}'; it was not loaded. Delete it (it will "
                        f"be downloaded again), or {fix}")
    return digest


host_unreachable = _downloads.host_unreachable


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


def hub_cache_path(url: str) -> Path:
    """Where torch hub (and torchvision, timm) keep a file downloaded from ``url``:
    ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_hub_checkpoint(module: torch.nn.Module, url: str, *, model: str, what: str,
                        cached: str | Path | None = None) -> tuple[Path, str]:
    """Load the state dict published at ``url`` into ``module`` through the torch hub cache, never unpickling.

    1. Missing from the cache: a quick offline probe (:func:`host_unreachable`, at most
       :data:`PROBE_TIMEOUT_S`), then a download that times out (:func:`download_timeout`) and
       is kept only if its SHA-256 starts with the hash in the file name.
    2. The cached file's SHA-256 is checked against the hash in its name BEFORE it is read
       (:func:`check_cached_file`): a damaged or planted file is refused, not loaded.
    3. It is read with ``torch.load(weights_only=True)`` (tensors only: a file that would run
       code is refused, never executed) and loaded strictly (:func:`load_state_dict_strict`).

    Parameters
    ----------
    module : torch.nn.Module
        The network, left untouched when anything fails.
    url : str
        Where the file is published; its name should end in ``-<SHA-256 prefix>.<ext>``.
    model : str
        Model name, for messages and the ``--weights-file`` hint.
    what : str
        The weights in messages ("pretrained weights AlexNet_Weights.IMAGENET1K_V1 for model 'alexnet'").
    cached : str or Path, optional
        The cache file; default :func:`hub_cache_path`.

    Returns
    -------
    (Path, str)
        The cache file and its SHA-256 hex digest.

    Raises
    ------
    DataError
        One line naming the URL or file and the fix (delete the file, ``--weights-file``,
        ``--weights random``).
    """
    cached = Path(cached) if cached is not None else hub_cache_path(url)
    fix = f"pass a local file with --weights-file {model}=PATH (.safetensors/.pt/.pth), or use --weights random."
    if not cached.is_file():
        reason = host_unreachable(url)
        if reason is None:
            try:
                download_file(url, cached, hash_prefix=hash_prefix_in_name(cached.name))
            except Exception as exc:  # URLError, timeout, hash mismatch, disk full ...
                reason = f"{type(exc).__name__}: {one_line(exc, 150)}"
        if reason is not None:
            raise DataError(f"The {what} are not in the torch hub cache and cannot be downloaded from {url} "
                            f"({reason}). Place that file at '{cached}' (e.g. copied from an online machine), "
                            f"or {fix}")
    digest = check_cached_file(cached, what=what, fix=fix)
    try:
        state = load_checkpoint_tensors(cached)
    except WeightsFileProblem as exc:
        raise DataError(f"Torch hub cache file '{cached}' ({what}) cannot be loaded safely: {exc}. Delete it "
                        f"(it will be downloaded again), or {fix}") from None
    load_state_dict_strict(module, state, path=cached, model=model)
    return cached, digest


def load_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a cached state dict without running code (:func:`read_weights_object`, :func:`as_state_dict`).

    Raises
    ------
    ValueError
        (:class:`WeightsFileProblem`) The file cannot be read that way (empty, corrupt, or holds
        objects other than tensors: refused, never unpickled) or is not a state dict; one line.
    """
    return as_state_dict(read_weights_object(path))

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
    #: :meth:`extract` takes ``device`` and ``precision`` (:attr:`framework.contracts.ModelPlugin.supports_devices`).
    supports_devices = True
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
            if not isinstance(weights_file, (str, os.PathLike)):
                raise ConfigError(f"{name}: weights_file must be a path, got {weights_file!r}. {_file_fix(name)}")
            weights_file = check_weights_path(weights_file, model=name)
        self.weights_file: Path | None = weights_file
        if layers is not None and (isinstance(layers, str) or not all(isinstance(x, str) for x in layers)
                                   or not layers):
            raise ConfigError(f"{name}: layers must be a non-empty list of layer names, got {layers!r}.")
        self._layer_choice = None if layers is None else list(layers)
        self._module: torch.nn.Module | None = None
        self._info: WeightsInfo | str | None = None  # str: random init, digest pending
        self._graph: tuple[list[str], dict[str, _Tap], dict[str, tuple[int, ...]]] | None = None
        self._transform: Callable[[Image.Image], torch.Tensor] | None = None
        self._warned_small = False

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
            try:
                digest = sha256_file(self.weights_file)
            except OSError as exc:  # removed or made unreadable since it was read
                raise DataError(f"Weights file '{self.weights_file}' for model '{self.name}' cannot be read "
                                f"({one_line(exc, 150)}). {_file_fix(self.name)}") from None
            return WeightsInfo(source="file", label=f"file {self.weights_file.name}", digest=digest, seed=None,
                               detail=f"loaded strictly from {self.weights_file.resolve()}")
        if self.weights == "random":
            return self._random_info(f"torch.manual_seed({self.seed}) before building; {self.library} init")
        download_timeout()  # a bad $FRAMEWORK_DOWNLOAD_TIMEOUT is a ConfigError, never a silent default
        try:
            new_module, info = self._load_pretrained(module)
        except DataError as exc:
            if self.weights == "pretrained":
                raise
            warn_fallback(self.name, self.seed, exc)
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

    def small_image_px(self) -> int:
        """Images whose shorter side (px) is below this are reported as "small": a quarter of the
        input's shorter side (56 px for a 224 px crop), i.e. upsampled more than 4x, so that the
        network sees mostly interpolation (see :data:`SMALL_IMAGE_FRACTION`)."""
        return max(1, math.ceil(min(self._input_size[1:]) * SMALL_IMAGE_FRACTION))

    def _sized_batch(self, stimuli: StimulusSet, start: int, stop: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Stimuli ``start:stop`` preprocessed, and their (width, height) in px as decoded."""
        images = [stimuli.image(i) for i in range(start, stop)]
        return self.preprocess(images), [tuple(img.size) for img in images]

    def _batch(self, stimuli: StimulusSet, start: int, stop: int) -> torch.Tensor:
        return self._sized_batch(stimuli, start, stop)[0]

    def _warn_small(self, sizes: list[tuple[int, int]], n_stimuli: int) -> None:
        """Warn once per model (i.e. once per run) about the stimuli smaller than :meth:`small_image_px`."""
        limit = self.small_image_px()
        small = [s for s in sizes if min(s) < limit]
        if not small or self._warned_small:
            return
        self._warned_small = True
        w, h = min(small, key=lambda s: (min(s), s[0] * s[1]))
        log.warning("Model '%s': %d of %d stimuli are smaller than %d px on their shorter side (a quarter of the "
                    "%dx%d px input; smallest %dx%d px) and were upsampled to the input size, so the network sees "
                    "mostly interpolation. Use larger images if that was not intended.", self.name, len(small),
                    n_stimuli, limit, self._input_size[2], self._input_size[1], w, h)

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
        seen: dict[_Tap, str] = {}
        for layer in layers:
            first = seen.setdefault(known[layer], layer)
            if first != layer:
                raise ConfigError(f"{self.name}: {option} names the same layer twice: '{first}' and '{layer}' both "
                                  f"read {self._tap_text(known[layer])}, so it would be scored twice and shift the "
                                  f"layer index; keep one of them.")
        return list(layers)

    def check_layers(self, layers: Sequence[str], *, option: str = "layers") -> list[str]:
        """Check a layer list (known names, each once, no two names of one module); returns it as a list.

        Raises
        ------
        ConfigError
            One line naming the offending layer(s) and the fix.
        """
        return self._check_layers(layers, option=option)

    @staticmethod
    def _tap_text(tap: _Tap) -> str:
        if tap.kind == "pixels":
            return "the input image"
        where = f"module '{tap.path}'" if tap.path else "the whole network"
        return f"the {tap.kind} of {where}"

    # -- extraction -------------------------------------------------------------------------
    def extract(self, stimuli: StimulusSet, layers: Sequence[str], *, batch_size: int = 32,
                device: torch.device | str | None = None,
                precision: str = "fp32") -> Iterator[dict[str, np.ndarray]]:
        """Yield, per batch in stimulus order, ``{layer: (batch, n_features) float32}``.

        Parameters
        ----------
        stimuli : StimulusSet, (n_stimuli,)
        layers : sequence of str
            Names from :meth:`layers`; the yielded dicts follow this order.
        batch_size : int
            Stimuli per forward pass.
        device : torch.device or str, optional
            Where the network runs (a name is resolved by :func:`framework.devices.resolve_device`);
            None: the CPU. The network is moved there for the extraction and back to the CPU after
            it; batches are preprocessed on the CPU (pinned for CUDA) and copied over.
        precision : {"fp32", "fp16", "bf16"}
            ``fp32``: the network's float32 arithmetic (on the CPU bit-identical to an extraction
            without these options); ``fp16``/``bf16``: the forward pass under ``torch.autocast``
            (:func:`framework.devices.autocast_context`). Either way every layer comes back as float32
            numpy on the CPU; the ``pixels`` layer is the preprocessed input, never rounded.

        Notes
        -----
        Validation and weight resolution happen at call time, not on the first ``next()``.
        Each batch runs under ``eval()`` and ``torch.inference_mode()`` with forward hooks that
        are removed in ``finally`` before the batch is yielded (no hook or grad mode leaks into
        the consumer). The forward pass stops as soon as every requested layer is captured.
        Preprocessing of the next batch overlaps the forward pass of the current one. Stimuli
        smaller than :meth:`small_image_px` are counted as they are decoded and reported in one
        warning per model, before the last batch is yielded.
        """
        if not isinstance(stimuli, StimulusSet):
            raise ConfigError(f"{self.name}: extract() needs a StimulusSet, got {type(stimuli).__name__}.")
        layers = self._check_layers(layers, option="layers")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be a positive integer, got {batch_size!r}.")
        import torch

        from framework.devices import check_precision, resolve_device

        if device is None:
            device = torch.device("cpu")
        elif isinstance(device, str):
            device = resolve_device(device)
        elif not isinstance(device, torch.device):
            raise ConfigError(f"{self.name}: device must be a torch.device or a name such as 'cpu' or 'cuda', "
                              f"got {device!r}.")
        precision = check_precision(device, precision, option=f"{self.name}: precision")
        module = self._ready()
        if device.type == "cpu" and precision != "fp32" and precision not in _CPU_HALF_ANNOUNCED:
            _CPU_HALF_ANNOUNCED.add(precision)
            log.warning("Precision %s on the CPU: torch emulates it on CPUs without native half-precision units "
                        "(AMX, AVX512-BF16/FP16), so extraction is usually much slower than fp32 there (cpu "
                        "capability: %s); use a GPU (--device cuda) or fp32.", precision,
                        torch.backends.cpu.get_cpu_capability())
        return self._iterate(module, stimuli, layers, int(batch_size), device=device, precision=precision)

    def _iterate(self, module: torch.nn.Module, stimuli: StimulusSet, layers: list[str],
                 batch_size: int, *, device: torch.device | None = None,
                 precision: str = "fp32") -> Iterator[dict[str, np.ndarray]]:
        import torch

        device = torch.device("cpu") if device is None else device
        pin = device.type == "cuda"  # page-locked batches: the copy to the GPU runs asynchronously

        def prepared(start: int, stop: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
            x, batch_sizes = self._sized_batch(stimuli, start, stop)
            return (x.pin_memory() if pin else x), batch_sizes

        taps = self._discover()[1]
        groups: dict[_Tap, list[str]] = {}
        for layer in layers:
            if layer != PIXELS:
                groups.setdefault(taps[layer], []).append(layer)
        by_path = dict(module.named_modules())
        n = len(stimuli)
        starts = list(range(0, n, batch_size))
        sizes: list[tuple[int, int]] = []
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="framework-preprocess")
        moved = False
        pending = None
        try:
            if device.type != "cpu":  # in place; moved back in finally (GPU memory freed for the next model)
                moved = True
                module.to(device)
            pending = pool.submit(prepared, 0, min(batch_size, n)) if n else None
            for k in range(len(starts)):
                assert pending is not None
                x, batch_sizes = pending.result()
                sizes.extend(batch_sizes)
                pending = (pool.submit(prepared, starts[k + 1], min(starts[k + 1] + batch_size, n))
                           if k + 1 < len(starts) else None)
                if k + 1 == len(starts):  # every image decoded: one warning with the full count
                    self._warn_small(sizes, n)
                yield self._forward(module, by_path, x, layers, groups, device=device, precision=precision)
        finally:
            if pending is not None:
                pending.cancel()
            pool.shutdown(wait=True)
            if moved:
                module.to("cpu")

    def _forward(self, module: torch.nn.Module, by_path: dict[str, torch.nn.Module], x: torch.Tensor,
                 layers: list[str], groups: dict[_Tap, list[str]], *, device: torch.device | None = None,
                 precision: str = "fp32") -> dict[str, np.ndarray]:
        """One batch ``x`` (on the CPU) through ``module`` (on ``device``) under ``precision``; float32 numpy out."""
        import torch

        from framework.devices import autocast_context

        on_cpu = device is None or device.type == "cpu"
        b = x.shape[0]
        captured: dict[_Tap, Any] = {}
        n_taps = len(groups)

        def grab(tap: _Tap, t: Any) -> None:
            t = _first_tensor(t)
            if t is None:
                raise PluginError(f"Model '{self.name}': layer '{tap.path}' returned no tensor.")
            # copy: later in-place ops (ReLU(inplace=True)) must not change what was captured
            if on_cpu:
                captured[tap] = t.detach().reshape(b, -1).to(device="cpu", dtype=torch.float32, copy=True).numpy()
            else:  # kept on the device (no synchronisation per layer); copied to the CPU after the pass
                captured[tap] = t.detach().reshape(b, -1).to(dtype=torch.float32, copy=True)
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
                    xd = x if on_cpu else x.to(device, non_blocking=x.is_pinned())
                    with contextlib.suppress(_StopForward), autocast_context(device or x.device, precision):
                        module(xd)
                if not on_cpu:
                    captured = {tap: t.cpu().numpy() for tap, t in captured.items()}
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
