"""Optional preprocessing of intracranial epochs before band power.

* :func:`bipolar_pairs` / :func:`bipolar_reference`: each contact minus its
  next contact on the same electrode shaft;
* :func:`amplitude_rejection`: per (trial, channel) amplitude outlier rule;
* :func:`notch`: line-noise removal with :func:`mne.filter.notch_filter`.

All functions take plain arrays ``(n_trials, n_channels, n_times)``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from framework.errors import ConfigError, DataError

log = logging.getLogger("framework.signals.preprocessing")

_CONTACT = re.compile(r"^(?P<shaft>.*?[^\d])(?P<number>\d+)$")


def parse_contact(name: str) -> tuple[str, int] | None:
    """Split a contact name into shaft and contact number.

    The shaft is everything before the trailing digits (``"LA10"`` -> ``("LA", 10)``,
    ``"OF'3"`` -> ``("OF'", 3)``); a name without trailing digits gives None.
    """
    m = _CONTACT.match(name.strip())
    if m is None:
        return None
    return m.group("shaft"), int(m.group("number"))


def bipolar_pairs(channels: Sequence[str]) -> list[tuple[int, int, str]]:
    """Pairs of neighbouring contacts on the same shaft.

    Contacts ``n`` and ``n + 1`` of the same shaft (both present) form the
    derivation ``"<shaft><n>-<shaft><n+1>"`` = contact n minus contact n + 1.
    Channels without a trailing contact number, and contacts whose next
    number is missing, yield no pair.

    Parameters
    ----------
    channels : sequence of str, (n_channels,)

    Returns
    -------
    pairs : list of (index_a, index_b, name)
        In the order of the first contact in ``channels``.
    """
    lookup: dict[tuple[str, int], int] = {}
    for i, ch in enumerate(channels):
        parsed = parse_contact(ch)
        if parsed is not None:
            lookup[parsed] = i
    pairs = []
    for i, ch in enumerate(channels):
        parsed = parse_contact(ch)
        if parsed is None:
            continue
        j = lookup.get((parsed[0], parsed[1] + 1))
        if j is not None:
            pairs.append((i, j, f"{ch}-{channels[j]}"))
    return pairs


def bipolar_reference(data: np.ndarray, channels: Sequence[str], *, subject: str = ""
                      ) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Bipolar re-referencing along electrode shafts.

    Parameters
    ----------
    data : ndarray, (n_trials, n_channels, n_times) float
    channels : sequence of str, (n_channels,)
    subject : str
        Named in the error message.

    Returns
    -------
    derived : ndarray, (n_trials, n_pairs, n_times) float64
    pairs : list of (index_a, index_b, name), (n_pairs,)
    """
    pairs = bipolar_pairs(channels)
    if not pairs:
        raise DataError(f"Subject '{subject}': bipolar re-referencing found no neighbouring contacts among "
                        f"channels {list(channels)[:6]}...; expected names like 'A1', 'A2' (shaft letters "
                        "then contact number). Rename the channels or set bipolar=False.")
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    return np.asarray(data, np.float64)[:, a] - np.asarray(data, np.float64)[:, b], pairs


def amplitude_rejection(data: np.ndarray, *, threshold: float = 10.0) -> np.ndarray:
    """Trials whose amplitude is an outlier, per channel.

    Rule: for channel c let ``s_c`` be the mean over trials of the standard
    deviation over time of each trial (after removing the trial's mean). Trial t
    is rejected on channel c when ``max_time |x_tc - mean_time(x_tc)| >
    threshold * s_c``. Rejection is per (trial, channel): the trial is kept on
    the other channels.

    Parameters
    ----------
    data : ndarray, (n_trials, n_channels, n_times) float
    threshold : float
        Multiple of the channel's mean within-trial standard deviation, > 0.

    Returns
    -------
    rejected : ndarray, (n_trials, n_channels) bool
    """
    if not threshold > 0:
        raise ConfigError(f"reject_threshold must be > 0, got {threshold}; the published rule uses 10.")
    x = np.asarray(data, np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    s = centred.std(axis=-1).mean(axis=0)  # (n_channels,)
    peak = np.abs(centred).max(axis=-1)  # (n_trials, n_channels)
    return peak > threshold * s[None, :]


def notch(data: np.ndarray, sfreq: float, line_freq: float, *, width: float = 4.0,
          subject: str = "") -> np.ndarray:
    """Remove line noise at ``line_freq`` and its harmonics below Nyquist.

    Uses :func:`mne.filter.notch_filter` with a zero-phase IIR (4th-order
    Butterworth band-stop of ``width`` Hz, forward-backward) so that it works
    on short epochs. On a 1.5 s epoch the filter's transient leaves residual line
    noise in roughly the first and last 100 ms (the start of the baseline);
    notch filtering continuous data before epoching is better when possible.

    Parameters
    ----------
    data : ndarray, (n_trials, n_channels, n_times) float
    sfreq : float
        Sampling rate in Hz.
    line_freq : float
        Line frequency in Hz (50 or 60).
    width : float
        Stop-band width in Hz at each harmonic.

    Returns
    -------
    filtered : ndarray, (n_trials, n_channels, n_times) float64
    """
    import mne

    nyq = sfreq / 2.0
    if not 0 < line_freq < nyq:
        raise ConfigError(f"Cannot notch-filter at {line_freq} Hz for subject '{subject}': it must be in "
                          f"(0, Nyquist = {nyq} Hz); use notch=50 or 60 or None.")
    freqs = np.arange(line_freq, nyq - 1.0, line_freq)
    x = np.asarray(data, np.float64)
    for f in freqs:  # IIR designs one stop band at a time; a handful of harmonics
        x = mne.filter.notch_filter(x, sfreq, [f], notch_widths=width, method="iir", verbose="error")
    return x
