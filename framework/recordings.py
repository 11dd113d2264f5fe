"""Which channels of MNE epochs are recording sites, and the checks on their samples.

Shared by every source of epochs: the ``file`` dataset's ``-epo.fif`` files
(:mod:`plugins.datasets._readers`) and epochs handed over in Python
(:func:`framework.memory_datasets.epochs_dataset`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.errors import DataError

#: MNE channel types that are recording sites; other channels (stim, misc, eog, ...) are ignored.
SITE_CHANNEL_TYPES: tuple[str, ...] = ("seeg", "ecog", "eeg", "dbs")
#: Columns a sites table must have; ``x, y, z`` (mm) are optional, as a group.
SITE_COLUMNS: tuple[str, ...] = ("name", "subject", "area")


def few(items: Sequence[Any], n: int = 5) -> str:
    """``'a', 'b', 'c' (and 7 more)`` for error messages."""
    shown = ", ".join(repr(str(i)) for i in list(items)[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def coordinate_columns(columns: Sequence[str], *, what: str, layout: str, unknown: str,
                       error: type[Exception] = DataError) -> list[str]:
    """Check a sites table's columns; return its coordinate columns (``["x", "y", "z"]`` or ``[]``).

    Parameters
    ----------
    columns : sequence of str
        The table's column names.
    what : str
        Names the table in messages (``"Sites table 'sites.tsv'"``, ``"sites"``).
    layout : str
        The sentence saying how the table must look, ending the missing-column message.
    unknown : str
        How an unknown coordinate is written (``"n/a"``, ``"NaN"``).
    error : exception class
        Raised with one line when :data:`SITE_COLUMNS` are missing or x, y, z are incomplete.
    """
    from framework.errors import did_you_mean

    columns = [str(c) for c in columns]
    missing = [c for c in SITE_COLUMNS if c not in columns]
    if missing:
        raise error(f"{what} lacks column(s) {', '.join(missing)}; columns found: {few(columns, 20) or 'none'}."
                    f"{did_you_mean(missing[0], columns)} {layout}")
    xyz = [c for c in ("x", "y", "z") if c in columns]
    if xyz and len(xyz) != 3:
        raise error(f"{what} has coordinate column(s) {', '.join(xyz)} but not all of x, y, z; give all three "
                    f"({unknown} when unknown) or none.")
    return xyz


def site_channels(ch_names: Sequence[str], ch_types: Sequence[str], bads: Sequence[str]) -> list[str]:
    """Names of the good channels whose type is in :data:`SITE_CHANNEL_TYPES`, in recording order."""
    bad = set(bads)
    return [c for c, t in zip(ch_names, ch_types) if t in SITE_CHANNEL_TYPES and c not in bad]


def check_channels_finite(data: np.ndarray, ch_names: Sequence[str], path: Path | str, *,
                          where: str | None = None, save_hint: str = " and save the file again") -> None:
    """Raise :class:`DataError` for channels with NaN/inf samples or a constant signal.

    Parameters
    ----------
    data : ndarray, (n_epochs, n_channels, n_times)
    ch_names : sequence of str, (n_channels,)
    path : Path or str
        The file the data came from (for the message: "Epochs file '<path>'").
    where : str, optional
        Names the data instead of the file, e.g. "The epochs of subject 'S1'".
    save_hint : str
        How the fix ends ("and save the file again" for files).
    """
    what = where or f"Epochs file '{path}'"
    fix = f"Mark it bad (epochs.info['bads'].append(name)) or drop it (epochs.drop_channels){save_hint}."
    nonfinite = ~np.isfinite(data).all(axis=(0, 2))
    if nonfinite.any():
        bad = [ch_names[i] for i in np.flatnonzero(nonfinite)]
        raise DataError(f"{what}: channel(s) {few(bad)} contain NaN or infinite samples. {fix}")
    if data.shape[0] and data.shape[2]:
        flat = data.max(axis=(0, 2)) == data.min(axis=(0, 2))
        if flat.any():
            bad = [ch_names[i] for i in np.flatnonzero(flat)]
            raise DataError(f"{what}: channel(s) {few(bad)} are flat (the same value in every "
                            f"sample of every epoch). {fix}")
