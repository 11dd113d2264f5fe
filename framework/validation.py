"""Tiny checkers used at public boundaries (plugin parameters, loaded arrays).

Each raises a :class:`framework.errors.FrameworkError` subclass whose message
names the input, what was expected, what came, and the fix.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from framework.errors import ConfigError, DataError, did_you_mean


def check_option(name: str, value: Any, allowed: Iterable[Any], *, error_cls: type = ConfigError) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise with "Did you mean ...".

    Parameters
    ----------
    name : str
        The parameter name shown to the user (e.g. ``"rsa: distance"``).
    """
    allowed = list(allowed)
    if value in allowed:
        return value
    hint = did_you_mean(str(value), [str(a) for a in allowed])
    raise error_cls(f"Invalid value {value!r} for {name}; expected one of "
                    f"{', '.join(repr(a) for a in allowed)}.{hint}")


def check_array(array: Any, name: str, *, ndim: int | None = None, shape: tuple[int | None, ...] | None = None,
                finite: bool = True, dtype: Any = None, fix: str = "") -> np.ndarray:
    """Convert ``array`` to ndarray and check its rank, shape and finiteness.

    ``shape`` entries that are None match any length. Raises :class:`DataError`.
    """
    arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
    tail = f" {fix}" if fix else ""
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimensions, got shape {arr.shape}.{tail}")
    if shape is not None and (arr.ndim != len(shape)
                              or any(s is not None and s != a for s, a in zip(shape, arr.shape))):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"{name} must have shape {want}, got {arr.shape}.{tail}")
    if finite and arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{name} contains {int(bad.sum())} NaN/inf values (first at index {first}).{tail}")
    return arr
