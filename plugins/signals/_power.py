"""Vectorised Morlet power, reduced on the fly to mean power in time windows.

The wavelets are MNE's (:func:`mne.time_frequency.morlet`, ``zero_mean=True``),
so the power equals :func:`mne.time_frequency.tfr_array_morlet` with
``output="power"`` sample for sample; the convolution is done here by batched
FFTs over all (trial, channel) signals and several frequencies at once instead of
MNE's Python loop over signals and wavelets, and the full time-frequency array is
never kept: only the mean power inside each requested time range.

Same bits whatever else is requested
    A mean power is a function of its own wavelet, range and signal only, never
    of the other wavelets or ranges computed in the same call (a cell's value
    depends on its key alone). Each wavelet's power is computed by overlap-save
    on a fixed grid of time blocks starting at the epoch's first sample; the block
    length, FFT length, padding and batch size follow from the wavelet's
    half-length, the sampling rate and the epoch length alone (:func:`block_layout`),
    and a range's mean is a pairwise sum over exactly its own samples. Only the
    blocks that some requested range touches are transformed.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.fft

#: Bytes of complex scratch memory (signals x wavelets x FFT length) one batch may use.
DEFAULT_BATCH_BYTES = 2 * 2**20  # small batches stay in cache: ~3x faster than 96 MiB
#: Target block length in seconds: 1 s holds the usual baseline and post-onset windows of a
#: -500 ms epoch (Kuzovkin et al. 2018: -500 to 450 ms) in one block, so one FFT per wavelet.
BLOCK_SECONDS = 1.0
#: A block is at least this many wavelet margins long, so the overlap (2 margins per block)
#: costs at most a third of each FFT.
MIN_BLOCK_MARGINS = 4
#: Wavelets transformed together (one scratch array); it bounds memory, results do not depend on it.
WAVELET_CHUNK = 8

PadMode = Literal["reflect", "none"]


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


def wavelet_half_lengths(sfreq: float, freqs: np.ndarray, n_cycles: np.ndarray) -> np.ndarray:
    """Half-length ``h`` of each wavelet in samples (the wavelet has ``2 h + 1``), (n_freqs,) int64.

    Exact (MNE's own wavelets are built): about ``5 n_cycles sfreq / (2 pi f)``.
    """
    return np.array([(w.size - 1) // 2 for w in morlet_wavelets(sfreq, freqs, n_cycles)], dtype=np.int64)


def longest_half_length(n_times: int, pad: PadMode) -> int:
    """The largest wavelet half-length (samples) the transform accepts for epochs of ``n_times`` samples.

    As MNE's ``tfr_array_morlet``, a wavelet may not be longer than the signal: ``2 h + 1 <= n_times``
    without padding; with ``pad="reflect"`` the signal is mirrored by up to ``n_times - 1`` samples on
    each side first, so ``2 h + 1 <= 3 n_times - 2``.
    """
    n = int(n_times)
    return (n - 1) // 2 if pad == "none" else max(0, (3 * n - 3) // 2)


def _margin(h: int) -> int:
    """Canonical margin >= ``h``: the next power of two (wavelets sharing it share FFTs of the signal).

    An octave ladder: on Kuzovkin-sized data 4 margins for the 77 default wavelets, ~20 % faster than
    a quarter-octave ladder (fewer forward FFTs outweigh the slightly longer inverse ones).
    """
    return 0 if h <= 0 else 1 << (int(h) - 1).bit_length()


def block_layout(h: int, sfreq: float, n_times: int) -> tuple[int, int, int]:
    """Margin, block length and FFT length (samples) for a wavelet of half-length ``h``.

    A function of ``h``, ``sfreq`` and ``n_times`` only, so that a wavelet's power does not
    depend on what else is computed. The block holds :data:`BLOCK_SECONDS` of data (at least
    :data:`MIN_BLOCK_MARGINS` margins, at most the epoch); the FFT length ``nfft = block + 2 margin``
    is a fast length for :func:`scipy.fft.fft`.

    Returns
    -------
    margin, block, nfft : int
    """
    m = _margin(int(h))
    target = min(int(n_times), max(int(round(BLOCK_SECONDS * sfreq)), MIN_BLOCK_MARGINS * m, 1))
    nfft = scipy.fft.next_fast_len(target + 2 * m)
    return m, nfft - 2 * m, nfft


def window_power(data: np.ndarray, sfreq: float, freqs: np.ndarray, n_cycles: np.ndarray,
                 ranges: Sequence[tuple[int, int]], *, pad: PadMode = "none",
                 batch_bytes: int = DEFAULT_BATCH_BYTES, workers: int = 1) -> np.ndarray:
    """Mean Morlet power of every signal and frequency inside sample ranges.

    Each output value depends only on its signal, its wavelet (frequency, cycles,
    ``sfreq``), its range, ``pad``, ``batch_bytes`` and the epoch length: never on the
    other frequencies or ranges requested (bit for bit).

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
        Sample ranges (slice convention, ``0 <= start < stop <= n_times``) over which
        power is averaged, e.g. the baseline and each window.
    pad : {"none", "reflect"}
        "none": zeros beyond the epoch, exactly ``tfr_array_morlet``. "reflect": the
        epoch is mirrored (``numpy.pad(mode="reflect")``) by the wavelet's half-length
        (at most ``n_times - 1`` samples) on each side, keeping the zero-padding edge
        artefact away from the epoch's ends.
    batch_bytes : int
        Scratch memory per batch of (signals x wavelets x FFT length), bytes.
    workers : int
        Threads, each computing whole batches of signals (results do not depend on it).

    Returns
    -------
    power : ndarray, (n_signals, n_freqs, n_ranges) float64
        Mean of ``|x * w_f|^2`` over each range, in U^2 (MNE's wavelet scaling);
        computed in float32 (relative error ~1e-6).

    Raises
    ------
    ValueError
        A wavelet longer than :func:`longest_half_length` allows, a range outside the
        epoch, or an unknown ``pad``.
    """
    if pad not in ("none", "reflect"):
        raise ValueError(f"pad must be 'none' or 'reflect', got {pad!r}")
    data = np.asarray(data)
    n_signals, n_times = data.shape
    freqs = np.asarray(freqs, float)
    n_cycles = np.broadcast_to(np.asarray(n_cycles, float), freqs.shape)
    ranges = [(int(a), int(b)) for a, b in ranges]
    bad = [(a, b) for a, b in ranges if not 0 <= a < b <= n_times]
    if bad:
        raise ValueError(f"Range {bad[0]} is not inside the {n_times}-sample epoch (0 <= start < stop <= n_times).")
    out = np.empty((n_signals, len(freqs), len(ranges)), dtype=np.float64)
    if n_signals == 0 or len(freqs) == 0 or not ranges:
        return out
    wavelets = morlet_wavelets(sfreq, freqs, n_cycles)
    halves = np.array([(w.size - 1) // 2 for w in wavelets])
    limit = longest_half_length(n_times, pad)
    if halves.max() > limit:
        i = int(np.argmax(halves))
        raise ValueError(f"The {freqs[i]:g} Hz wavelet has {2 * halves[i] + 1} samples, longer than the "
                         f"{n_times}-sample signal{' mirrored on both sides' if pad == 'reflect' else ''} allows.")
    # Wavelets sharing a margin share block grid, FFT length and the signal's FFTs.
    layouts = [block_layout(int(h), sfreq, n_times) for h in halves]
    levels: dict[tuple[int, int, int], list[int]] = {}
    for i, lay in enumerate(layouts):
        levels.setdefault(lay, []).append(i)
    work = []
    for (m, block, nfft), idx in levels.items():
        needed = sorted({k for a, b in ranges for k in range(a // block, (b - 1) // block + 1)})
        fw = np.stack([scipy.fft.fft(wavelets[i], nfft) for i in idx]).astype(np.complex64)
        s_batch = int(max(1, min(n_signals, batch_bytes // (nfft * 8 * WAVELET_CHUNK))))
        for s0 in range(0, n_signals, s_batch):
            work.append((m, block, nfft, np.array(idx), fw, needed, s0, min(s0 + s_batch, n_signals)))

    def run(item) -> None:
        m, block, nfft, idx, fw, needed, s0, s1 = item
        # Padded signal: sample t of the epoch at index t + m, mirrored (numpy.pad's "reflect") by up to
        # m samples when asked, zeros beyond.
        n_blocks = (n_times - 1) // block + 1
        xp = np.zeros((s1 - s0, n_blocks * block + 2 * m), dtype=np.float32)
        xp[:, m:m + n_times] = data[s0:s1]
        reflect = min(m, n_times - 1) if pad == "reflect" else 0
        if reflect:
            xp[:, m - reflect:m] = xp[:, m + reflect:m:-1]
            xp[:, m + n_times:m + n_times + reflect] = xp[:, m + n_times - 2:m + n_times - 2 - reflect:-1]
        power = np.empty((s1 - s0, len(idx), n_times), dtype=np.float32)  # filled in the needed blocks
        for k in needed:
            t0 = k * block
            keep = min(block, n_times - t0)
            fx = scipy.fft.fft(xp[:, t0:t0 + nfft], axis=-1)  # segment = block + 2 margins = nfft samples
            for c0 in range(0, len(idx), WAVELET_CHUNK):
                conv = scipy.fft.ifft(fx[:, None, :] * fw[None, c0:c0 + WAVELET_CHUNK], axis=-1, overwrite_x=True)
                pw = np.square(conv.real)  # re^2 + im^2: exactly rounded operations, the same bits anywhere
                pw += np.square(conv.imag)
                for j in range(conv.shape[1]):
                    # "same" output for epoch sample t0 + q is the linear convolution's index q + m + h
                    first = m + int(halves[idx[c0 + j]])
                    power[:, c0 + j, t0:t0 + keep] = pw[:, j, first:first + keep]
        for r, (a, b) in enumerate(ranges):
            # pairwise sum over exactly the range's samples (float32, contiguous): same bits for any request
            out[s0:s1, idx, r] = np.add.reduce(power[:, :, a:b], axis=-1) / np.float32(b - a)

    # Work items write disjoint entries of ``out`` and are computed identically whatever the thread
    # count (FFTs release the GIL), so results are bit-identical for any ``workers``.
    if workers <= 1:
        for item in work:
            run(item)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(run, item) for item in work]:
                future.result()
    return out
