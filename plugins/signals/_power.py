"""Vectorised Morlet power, reduced on the fly to mean power in time windows.

The wavelets are MNE's (:func:`mne.time_frequency.morlet`, ``zero_mean=True``),
so the power equals :func:`mne.time_frequency.tfr_array_morlet` with
``output="power"`` sample for sample; the convolution is done here by batched
FFTs over all (trial, channel) signals and several frequencies at once instead of
MNE's Python loop over signals and wavelets, and the full time-frequency array is
never kept: only the mean power inside each requested time range. Each group of
wavelets of similar length gets its own (short) FFT over just the stretch of
signal that the requested ranges need.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
from threadpoolctl import threadpool_limits

log = logging.getLogger("framework.signals.power")

#: Bytes of complex scratch memory (signals x wavelets x FFT length) one batch may use.
DEFAULT_BATCH_BYTES = 2 * 2**20  # small batches stay in cache: ~3x faster than 96 MiB


def morlet_wavelets(sfreq: float, freqs: np.ndarray, n_cycles: np.ndarray) -> list[np.ndarray]:
    """MNE's zero-mean complex Morlet wavelets.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    freqs : ndarray, (n_freqs,) float64
        Centre frequencies in Hz.
    n_cycles : ndarray, (n_freqs,) float64
        Cycles per wavelet; the Gaussian's standard deviation is
        ``n_cycles / (2 pi f)`` s and the wavelet spans +/- 5 of them.

    Returns
    -------
    wavelets : list of ndarray, each (odd length,) complex128
    """
    from mne.time_frequency import morlet

    return list(morlet(sfreq, np.asarray(freqs, float), np.asarray(n_cycles, float), zero_mean=True))


def window_power(data: np.ndarray, sfreq: float, freqs: np.ndarray, n_cycles: np.ndarray,
                 ranges: Sequence[tuple[int, int]], *, pad: int = 0,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, workers: int = 1) -> np.ndarray:
    """Mean Morlet power of every signal and frequency inside sample ranges.

    Parameters
    ----------
    data : ndarray, (n_signals, n_times) float
        Signals (e.g. trials x channels flattened), in any unit U.
    sfreq : float
        Sampling rate in Hz.
    freqs : ndarray, (n_freqs,) float64
        Frequencies in Hz (duplicates allowed, e.g. with different cycles).
    n_cycles : ndarray, (n_freqs,) float64
    ranges : sequence of (start, stop) int
        Sample ranges (slice convention, indices into ``data``'s time axis)
        over which power is averaged, e.g. the baseline and each window.
    pad : int
        Samples of mirror padding (``numpy.pad(mode="reflect")``) added on each
        side before the transform, to keep the convolution's zero-padding edge
        artefact away from the epoch's ends. 0 gives exactly
        ``tfr_array_morlet`` (which zero-pads).
    batch_bytes : int
        Scratch memory per batch of (signals x frequencies x FFT length), bytes.
    workers : int
        Threads, each computing whole batches of signals (results do not depend on it).

    Returns
    -------
    power : ndarray, (n_signals, n_freqs, n_ranges) float64
        Mean of ``|x * w_f|^2`` over each range, in U^2 (MNE's wavelet scaling);
        computed in float32 (relative error ~1e-6).
    """
    data = np.asarray(data)
    n_signals, n_times = data.shape
    freqs = np.asarray(freqs, float)
    n_cycles = np.broadcast_to(np.asarray(n_cycles, float), freqs.shape)
    out = np.empty((n_signals, len(freqs), len(ranges)), dtype=np.float64)
    if n_signals == 0 or len(freqs) == 0:
        return out
    wavelets = morlet_wavelets(sfreq, freqs, n_cycles)
    halves = np.array([(w.size - 1) // 2 for w in wavelets])
    if 2 * halves.max() + 1 > n_times + 2 * pad:
        f = freqs[np.argmax(halves)]
        raise ValueError(f"The {f:g} Hz wavelet has {2 * halves.max() + 1} samples, longer than the "
                         f"{n_times + 2 * pad}-sample signal.")
    lo = min(a for a, _ in ranges)
    hi = max(b for _, b in ranges)
    span = hi - lo  # power is only needed on samples [lo, hi) of the unpadded signal
    # Averaging matrix: power (s, span) @ avg (span, n_ranges) gives the range means.
    avg = np.zeros((span, len(ranges)), dtype=np.float32)
    for r, (a, b) in enumerate(ranges):
        avg[a - lo:b - lo, r] = 1.0 / (b - a)
    # Original sample i sits at i + pad + zpad in the padded signal. The zero padding (zpad)
    # reproduces MNE's "same" convolution wherever the mirror padding is shorter than a wavelet.
    zpad = int(halves.max())
    groups = _group_by_length(halves, span)
    per_row = max(nfft * 8 * len(idx) for idx, nfft in groups)
    s_batch = int(max(1, min(n_signals, batch_bytes // per_row)))
    ffts = [np.stack([scipy.fft.fft(wavelets[i], nfft) for i in idx]).astype(np.complex64) for idx, nfft in groups]

    def run_batch(s0: int) -> None:
        x = np.asarray(data[s0:s0 + s_batch], dtype=np.float32)
        if pad:
            x = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
        x = np.pad(x, ((0, 0), (zpad, zpad)))
        for (idx, nfft), fw in zip(groups, ffts):
            half_g = int(halves[idx].max())
            start = pad + zpad + lo - half_g  # segment holding every input the outputs need
            fx = scipy.fft.fft(x[:, start:start + span + 2 * half_g], nfft, axis=-1)
            conv = scipy.fft.ifft(fx[:, None, :] * fw[None], axis=-1, overwrite_x=True)
            for j, i in enumerate(idx):
                # "same" output at padded index p is full[p + half_i]; p = start + half_g + k, k in [0, span)
                first = half_g + int(halves[i])
                c = conv[:, j, first:first + span]
                pw = np.abs(c)
                pw *= pw
                out[s0:s0 + s_batch, i, :] = pw @ avg

    # Batches write disjoint rows of ``out`` and are computed identically whatever the thread
    # count (FFTs release the GIL; BLAS is single-threaded in every batch), so results are
    # bit-identical for any ``workers``.
    starts = range(0, n_signals, s_batch)
    with threadpool_limits(1, user_api="blas"):
        if workers <= 1:
            for s0 in starts:
                run_batch(s0)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(run_batch, s0) for s0 in starts]:
                    future.result()
    return out


def _group_by_length(halves: np.ndarray, span: int) -> list[tuple[np.ndarray, int]]:
    """Group wavelets whose FFT lengths are within a quarter octave, one FFT size per group.

    Returns ``[(indices, nfft), ...]``; a wavelet of half-length h needs
    ``nfft >= span + 4 h`` (segment ``span + 2 h`` plus wavelet ``2 h + 1``, minus one).
    """
    need = span + 4 * halves
    ladder = np.ceil(np.log2(need) * 4) / 4
    groups = []
    for level in np.unique(ladder):
        idx = np.flatnonzero(ladder == level)
        groups.append((idx, scipy.fft.next_fast_len(int(need[idx].max()))))
    return groups
