"""Optional preprocessing of intracranial epochs before band power.

* :func:`bipolar_pairs` / :func:`bipolar_reference`: each contact minus its
  next contact on the same electrode shaft;
* :func:`amplitude_rejection`: per (trial, channel) amplitude outlier rule;
* :func:`notch`: line-noise removal with :func:`mne.filter.notch_filter`
  (:func:`notch_harmonics`, :func:`notch_problem` and :func:`widest_notch` say
  beforehand which settings it accepts).

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


def checked_bipolar_pairs(channels: Sequence[str], *, subject: str = "") -> list[tuple[int, int, str]]:
    """:func:`bipolar_pairs`, raising :class:`DataError` (naming ``subject``) when there is none."""
    pairs = bipolar_pairs(channels)
    if not pairs:
        raise DataError(f"Subject '{subject}': bipolar re-referencing found no neighbouring contacts among "
                        f"channels {list(channels)[:6]}...; expected names like 'A1', 'A2' (shaft letters "
                        "then contact number). Rename the channels or set --signal-param band-power.bipolar=false.")
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
    pairs = checked_bipolar_pairs(channels, subject=subject)
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


#: Transition band MNE adds on each side of a notch stop band, Hz
#: (:func:`mne.filter.notch_filter`'s ``trans_bandwidth=1`` split in two halves).
NOTCH_TRANSITION_HZ = 0.5


def notch_harmonics(sfreq: float, line_freq: float) -> np.ndarray:
    """The frequencies :func:`notch` removes: ``line_freq`` and its harmonics below Nyquist - 1 Hz, (k,) float64."""
    return np.arange(line_freq, sfreq / 2.0 - 1.0, line_freq)


def notch_problem(sfreq: float, line_freq: float, width: float) -> str | None:
    """Why :func:`notch` would reject these settings, or None when it accepts them.

    The line frequency must lie in (0, Nyquist); every stop band ``f +/- (width / 2 + 0.5)`` Hz
    (MNE's IIR notch, 0.5 Hz transition on each side) of a removed harmonic ``f`` must lie
    strictly between 0 Hz and the Nyquist frequency (:func:`mne.filter.notch_filter` raises
    otherwise).

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    line_freq : float
        Line frequency in Hz.
    width : float
        Stop-band width in Hz.
    """
    nyq = sfreq / 2.0
    if not 0 < line_freq < nyq:
        return f"the line frequency {line_freq:g} Hz is not below the Nyquist frequency ({nyq:g} Hz)"
    harmonics = notch_harmonics(sfreq, line_freq)
    if harmonics.size == 0:
        return None
    edge = width / 2.0 + NOTCH_TRANSITION_HZ
    if harmonics[0] - edge <= 0:
        return (f"the {harmonics[0]:g} Hz stop band (notch_width {width:g} Hz plus {2 * NOTCH_TRANSITION_HZ:g} Hz "
                f"of transition) starts at {harmonics[0] - edge:g} Hz, not above 0 Hz")
    if harmonics[-1] + edge >= nyq:
        return (f"the {harmonics[-1]:g} Hz harmonic's stop band (notch_width {width:g} Hz plus "
                f"{2 * NOTCH_TRANSITION_HZ:g} Hz of transition) reaches {harmonics[-1] + edge:g} Hz, not below "
                f"the Nyquist frequency ({nyq:g} Hz)")
    return None


def widest_notch(sfreq: float, line_freq: float) -> float:
    """The stop-band widths (Hz) :func:`notch` accepts are those below this; <= 0: none, inf: no harmonic."""
    nyq = sfreq / 2.0
    if not 0 < line_freq < nyq:
        return 0.0
    harmonics = notch_harmonics(sfreq, line_freq)
    if harmonics.size == 0:
        return float("inf")
    return 2.0 * (min(harmonics[0], nyq - harmonics[-1]) - NOTCH_TRANSITION_HZ)


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

    Raises
    ------
    ConfigError
        Settings :func:`notch_problem` rejects.
    """
    import mne

    problem = notch_problem(sfreq, line_freq, width)
    if problem is not None:
        widest = widest_notch(sfreq, line_freq)
        fix = (f"use notch_width below {widest:g} Hz" if widest > 0 and 0 < line_freq < sfreq / 2.0
               else "use notch=50 or 60, or no notch")
        raise ConfigError(f"Cannot notch-filter at {line_freq:g} Hz for subject '{subject}' ({sfreq:g} Hz): "
                          f"{problem}; {fix}.")
    x = np.asarray(data, np.float64)
    for f in notch_harmonics(sfreq, line_freq):  # IIR designs one stop band at a time; a handful of harmonics
        x = mne.filter.notch_filter(x, sfreq, [f], notch_widths=width, method="iir", verbose="error")
    return x
