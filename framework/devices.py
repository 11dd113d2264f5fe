"""Where and in which arithmetic a network runs: the ``--device`` and ``--precision`` options.

* :func:`check_device_name` checks the spelling of a device option without importing torch;
* :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device``, with one
  :class:`~framework.errors.ConfigError` line when the device is not there;
* :data:`PRECISIONS` and :func:`check_precision`: ``fp32`` is the network's own float32 arithmetic;
  ``fp16`` and ``bf16`` run the forward pass under ``torch.autocast``, probed once per device so a
  precision the device cannot run fails at plan time, not in the middle of a run;
* :func:`autocast_context` for the forward pass;
* :func:`device_info` describes the device for provenance;
* :func:`check_run_options` combines them for the run configuration.

Only feature extraction runs on the device. The numerics (:mod:`framework.numerics`: RDMs, Gram
matrices, permutation tests, ridge paths) are numpy/SciPy and always run on the CPU in float64 or
float32, and features always come back from the device as float32 numpy arrays.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from framework.errors import ConfigError, did_you_mean
from framework.validation import check_option

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Device names the options accept (``cuda:N`` with N = 0, 1, ...).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
#: Arithmetic of the forward pass: float32, or float16 / bfloat16 autocast.
PRECISIONS = ("fp32", "fp16", "bf16")
#: torch dtype names of the autocast precisions.
_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: Any, *, option: str = "--device") -> str:
    """Return ``name`` stripped and lower-cased if it spells a device; raise :class:`ConfigError` otherwise.

    Does not import torch and does not look at the hardware (:func:`resolve_device` does).
    """
    if not isinstance(name, str) or not _DEVICE_RE.match(name.strip().lower()):
        hint = did_you_mean(str(name), [d for d in DEVICES if d != "cuda:N"]) if isinstance(name, str) else ""
        raise ConfigError(f"Invalid value {name!r} for {option}; expected one of 'auto', 'cpu', 'cuda', 'cuda:N' "
                          f"(N = 0, 1, ...) or 'mps'.{hint}")
    return name.strip().lower()


def _torch_build() -> str:
    import torch

    cuda = torch.version.cuda
    return f"torch {torch.__version__}, " + (f"built for CUDA {cuda}" if cuda else "a CPU-only build")


def resolve_device(name: str, *, option: str = "--device") -> torch.device:
    """The ``torch.device`` a device option names.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "cuda:N", "mps"}
        ``auto`` is ``cuda`` when ``torch.cuda.is_available()``, else ``mps`` when
        ``torch.backends.mps.is_available()``, else ``cpu``.
    option : str
        How the option is named in messages.

    Raises
    ------
    ConfigError
        One line naming the option, why the device is not usable here and the fix
        (an unknown name, no CUDA device visible, ``cuda:N`` beyond the visible devices, no MPS).
    """
    import torch

    name = check_device_name(name, option=option)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it" if torch.version.cuda
                   else "install a CUDA build of torch on a machine with an NVIDIA GPU")
            raise ConfigError(f"{option} {name}: no CUDA device is visible to torch (torch.cuda.is_available() is "
                              f"False; {_torch_build()}: {why}); use {option} cpu or {option} auto.")
        index = int(name.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"{option} {name}: torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); "
                              f"use one of them, or {option} cuda for the current one.")
        return torch.device(name)
    # mps
    if not torch.backends.mps.is_available():
        why = ("this torch build has no MPS support" if not torch.backends.mps.is_built()
               else "MPS needs an Apple-silicon Mac with macOS 12.3 or later")
        raise ConfigError(f"{option} mps: no MPS device is available to torch (torch.backends.mps.is_available() is "
                          f"False; {why}); use {option} cpu or {option} auto.")
    return torch.device("mps")


def _dtype(precision: str) -> torch.dtype:
    import torch

    return getattr(torch, _DTYPES[precision])


@contextlib.contextmanager
def _ieee_fp32() -> Iterator[None]:
    """cuDNN convolutions and cuBLAS matrix products in IEEE float32 (no TF32), restored after.

    torch computes float32 convolutions on Ampere and later GPUs in TF32 by default (10-bit mantissa,
    about 1e-3 relative), which is not what ``fp32`` promises. Uses the ``fp32_precision`` settings of
    torch >= 2.9 (mixing them with the legacy ``allow_tf32`` flags is an error there), else the flags.
    """
    import torch

    knobs = [k for k in (getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul)
             if k is not None and hasattr(k, "fp32_precision")]
    if knobs:
        saved = [(k, k.fp32_precision) for k in knobs]
        try:
            for k, _ in saved:
                k.fp32_precision = "ieee"
            yield
        finally:
            for k, value in saved:
                k.fp32_precision = value
        return
    saved_flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_flags


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the forward pass runs in.

    ``fp32``: no autocast, the network's own float32 arithmetic: on the CPU (and MPS) nothing is
    changed (bit-identical to a plain forward pass); on CUDA, TF32 is switched off for the pass
    (:func:`_ieee_fp32`) so that fp32 means IEEE float32 there too. ``fp16`` / ``bf16``:
    ``torch.autocast(device_type=device.type, dtype=float16 / bfloat16)``, which runs convolutions
    and matrix products in half precision and keeps the weights in float32.
    """
    precision = check_option("--precision", precision, PRECISIONS)
    if precision == "fp32":
        return _ieee_fp32() if device.type == "cuda" else contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=_dtype(precision))


@functools.cache
def _probe(device_text: str, precision: str) -> str | None:
    """Why ``precision`` autocast cannot run on ``device_text`` (None: it can): a tiny convolution and
    matrix product under autocast must run, without torch disabling autocast, and give the dtype asked for."""
    import torch

    device = torch.device(device_text)
    dtype = _dtype(precision)
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        return f"torch has no autocast for device type '{device.type}'"
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bfloat16 support (compute capability below 8.0)"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=dtype):
                x = torch.ones((1, 2, 4, 4), device=device)
                conv = torch.nn.functional.conv2d(x, torch.ones((2, 2, 3, 3), device=device))
                lin = torch.nn.functional.linear(conv.flatten(1), torch.ones((3, conv[0].numel()), device=device))
    except Exception as exc:  # an op without a half-precision kernel on this device
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    disabled = [str(w.message).splitlines()[0] for w in caught if "autocast" in str(w.message).lower()]
    if disabled:
        return disabled[0]
    if conv.dtype != dtype or lin.dtype != dtype:
        return f"autocast ran the probe in {conv.dtype}, not {dtype}"
    return None


def check_precision(device: torch.device, precision: str, *, option: str = "--precision") -> str:
    """Return ``precision`` if the forward pass can run in it on ``device``.

    ``fp32`` always can. ``fp16`` / ``bf16`` are probed once per device and precision (a tiny
    convolution and matrix product under ``torch.autocast``). On this project's CPU-only test machine
    (torch 2.14, AVX2) both half precisions run on the CPU, emulated: about 16 times slower than fp32.

    Raises
    ------
    ConfigError
        An unknown precision, or one the device cannot run, with the fix.
    """
    precision = check_option(option, precision, PRECISIONS)
    if precision == "fp32":
        return precision
    why = _probe(str(device), precision)
    if why is not None:
        other = "bf16" if precision == "fp16" else "fp16"
        raise ConfigError(f"{option} {precision} on device '{device}': {_torch_build()} cannot run "
                          f"{_DTYPES[precision]} autocast there ({why}); use {option} fp32, {option} {other}, or a "
                          f"device that supports it (--device cuda).")
    return precision


def check_run_options(device: str, precision: str) -> None:
    """Check a run's ``device`` and ``precision`` against this machine (plan time).

    ``cpu`` and ``auto`` with ``fp32`` always work and are not probed (torch is not even imported);
    otherwise the device is resolved (:func:`resolve_device`) and the precision probed on it
    (:func:`check_precision`). Raises :class:`ConfigError`.
    """
    if device in ("cpu", "auto") and precision == "fp32":
        return
    check_precision(resolve_device(device), precision)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    """JSON-serialisable description of ``device`` for provenance.

    Returns
    -------
    dict
        ``type`` ("cpu", "cuda", "mps"), ``index`` (None for the CPU and MPS), ``name`` (the GPU's
        name, or the CPU model), ``torch`` (version), ``cuda`` (the CUDA version torch is built for,
        or None); for CUDA also ``capability`` ("8.0"), for the CPU ``cpu_capability`` (the vector
        instructions torch's kernels use, e.g. "AVX2": float32 results can differ in the last bits
        between them).
    """
    import torch

    out: dict[str, Any] = {"type": device.type, "index": device.index, "name": None,
                           "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        out.update(index=index, name=torch.cuda.get_device_name(index), capability=f"{major}.{minor}")
    elif device.type == "cpu":
        out.update(name=_cpu_name(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    elif device.type == "mps":
        out.update(name=f"Apple MPS ({platform.machine()})")
    return out
