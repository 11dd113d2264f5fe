"""Band power relative to baseline per stimulus (Kuzovkin et al. 2018).

For every trial and site: Morlet power (MNE wavelets, :mod:`plugins.signals._power`)
averaged over the samples of a post-onset window, divided frequency by
frequency by the power averaged over the baseline, then reduced over the band's
frequencies (``"max-subband"``: the largest mean ratio among ~10 Hz sub-bands,
as published; ``"mean"``: the mean ratio over the band). Trials of one image are
averaged; single trials are kept as repetitions (noise ceilings).

One plugin expands into ``<band>@<start>-<stop>`` signals (15 by default). All
requested signals are computed from one transform per subject; subjects are
loaded one at a time.

Responsive sites
    Per site, the stimulus-averaged mean power over the band's wavelet
    frequencies in the window is compared with the same in the baseline by a
    one-sided Wilcoxon signed-rank test over stimuli (increases only), with
    Benjamini-Hochberg FDR at ``fdr_q`` pooled over all sites of the signal
    (:mod:`plugins.signals._responsiveness`).

Channels
    sEEG, ECoG, EEG and DBS channels not marked bad (``info["bads"]``) are used;
    each must appear in the dataset's site table as ``"<subject>/<channel>"``.

Missing data policy
    A stimulus with no trial in a subject is NaN for that subject's sites; a
    stimulus of the stimulus set with no trial in any subject is a
    :class:`DataError` (restrict the stimulus set). Trials rejected by the
    amplitude rule are NaN for that (trial, site) and left out of the averages.
    Trials whose stimulus is not in the stimulus set are a :class:`DataError`.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from framework.contracts import SignalPlugin
from framework.errors import ConfigError, DataError, unknown_name_error
from framework.params import PluginParams, param
from framework.types import DataKind, Dataset, Responses, SiteTable, epochs_stimulus_ids
from plugins.signals import _preprocessing as preprocessing
from plugins.signals._power import window_power
from plugins.signals._responsiveness import responsive_sites

log = logging.getLogger("framework.signals.band_power")

#: Kuzovkin et al. 2018 bands, Hz (low, high), inclusive.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "theta": (5.0, 8.0), "alpha": (9.0, 14.0), "beta": (15.0, 30.0),
    "lowgamma": (30.0, 70.0), "highgamma": (70.0, 150.0)}
#: Post-onset windows, ms.
DEFAULT_WINDOWS: tuple[tuple[float, float], ...] = ((50.0, 250.0), (150.0, 350.0), (250.0, 450.0))
#: Wavelet cycles per named band (``n_cycles="default"``): about 0.1 s or less of
#: Gaussian standard deviation at the band's low edge, so the wavelet stays inside
#: a 200 ms window; 5 cycles for any other band name.
DEFAULT_N_CYCLES: dict[str, float] = {"theta": 3.0, "alpha": 4.0, "beta": 5.0, "lowgamma": 7.0, "highgamma": 7.0}
OTHER_BAND_N_CYCLES = 5.0
REDUCTIONS = ("max-subband", "mean")


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def _pair(value: Any, what: str) -> tuple[float, float]:
    """``(start, stop)`` floats from a 2-item sequence with start < stop; ValueError otherwise."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair [start, stop] of numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a >= b:
        raise ValueError(f"{what} must have start < stop, got [{a:g}, {b:g}]")
    return a, b


class BandPowerParams(PluginParams):
    """Parameters of the band-power signal (defaults: Kuzovkin et al. 2018)."""

    bands: dict[str, list[float]] = param(
        {k: list(v) for k, v in DEFAULT_BANDS.items()},
        "band name -> [low, high] Hz (Kuzovkin et al. 2018: theta, alpha, beta, lowgamma, highgamma)")
    windows: list[list[float]] = param([list(w) for w in DEFAULT_WINDOWS],
                                       "post-onset windows [start, stop] in ms", min_length=1)
    baseline: list[float] = param([-500.0, -100.0], "baseline [start, stop] in ms, relative to onset")
    n_cycles: Literal["default"] | float | dict[str, float] = param(
        "default", "Morlet cycles: 'default' (3/4/5/7/7 for the named bands, 5 otherwise), one number, "
        "or a table per band")
    reduction: Literal["max-subband", "mean"] = param(
        "max-subband", "over the band's frequencies: the largest sub-band mean ratio (published) or the mean")
    subband_width: float = param(10.0, "sub-band width in Hz for reduction='max-subband'", gt=0)
    freq_step: float = param(2.0, "approximate spacing of the wavelet frequencies in Hz", gt=0)
    log: bool = param(False, "natural log of each trial's power ratio before averaging trials")
    zscore: bool = param(False, "z-score each site over stimuli")
    responsive_only: bool = param(False, "keep only responsive sites (Wilcoxon window > baseline, BH-FDR fdr_q)")
    fdr_q: float = param(0.05, "FDR level of the responsiveness test", gt=0, lt=1)
    bipolar: bool = param(False, "re-reference each contact to the next one on its shaft")
    reject_trials: bool = param(False, "drop (trial, site) pairs whose peak amplitude exceeds "
                                "reject_threshold x the channel's mean within-trial SD")
    reject_threshold: float = param(10.0, "amplitude rejection threshold in SDs (published: 10)", gt=0)
    notch: float | None = param(None, "line frequency in Hz (50 or 60) to notch out with its harmonics", gt=0)
    notch_width: float = param(4.0, "notch stop-band width in Hz", gt=0)
    pad: Literal["reflect", "none"] = param(
        "reflect", "mirror-pad trials before the transform ('none' reproduces mne tfr_array_morlet exactly)")
    n_jobs: int | None = param(None, "threads for batches of trials; unset = every core (results are identical)",
                               key=False, ge=1)

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, bands: dict[str, list[float]]) -> dict[str, list[float]]:
        if not bands:
            raise ValueError("bands must name at least one band")
        for name, rng in bands.items():
            if not name or "@" in name or name != name.strip():
                raise ValueError(f"band name {name!r} must be a non-empty string without '@' or blanks")
            lo, _ = _pair(rng, f"band '{name}'")
            if lo <= 0:
                raise ValueError(f"band '{name}' must start above 0 Hz, got {lo:g} Hz")
        return bands

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, windows: list[list[float]]) -> list[list[float]]:
        names = [f"{_fmt(a)}-{_fmt(b)}" for a, b in (_pair(w, "window") for w in windows)]
        if len(set(names)) != len(names):
            raise ValueError(f"windows {names} contain duplicates")
        return windows

    @field_validator("baseline")
    @classmethod
    def _check_baseline(cls, baseline: list[float]) -> list[float]:
        _pair(baseline, "baseline")
        return baseline

    @field_validator("n_cycles")
    @classmethod
    def _check_cycles(cls, n_cycles: Any) -> Any:
        values = n_cycles.values() if isinstance(n_cycles, dict) else [] if n_cycles == "default" else [n_cycles]
        if any(not v > 0 for v in values):
            raise ValueError(f"n_cycles must be > 0, got {n_cycles!r}")
        return n_cycles

    @model_validator(mode="after")
    def _check_cycle_bands(self) -> BandPowerParams:
        if isinstance(self.n_cycles, dict):
            unknown = [b for b in self.n_cycles if b not in self.bands]
            if unknown:
                raise ValueError(f"n_cycles names band '{unknown[0]}', which is not in bands "
                                 f"({', '.join(self.bands)})")
        return self


class BandPowerSignal(SignalPlugin):
    """Morlet band power in post-onset windows relative to a baseline, per stimulus and site.

    Parameters
    ----------
    bands : dict of str to (float, float), optional
        Band name -> (low, high) Hz; default :data:`DEFAULT_BANDS`.
    windows : list of (float, float), optional
        Post-onset windows in ms; default :data:`DEFAULT_WINDOWS`.
    baseline : (float, float)
        Baseline in ms, default (-500, -100).
    n_cycles : "default", float or dict of str to float
        Wavelet cycles: per band (:data:`DEFAULT_N_CYCLES`), one value for all,
        or a dict per band (missing bands take the default).
    reduction : {"max-subband", "mean"}
        Over the band's frequencies of the per-frequency ratio: the largest mean
        ratio among sub-bands ``subband_width`` Hz wide (published), or the mean.
    subband_width : float
        Sub-band width in Hz (10); a band narrower than this is one sub-band.
    freq_step : float
        Approximate spacing of the wavelet frequencies in Hz (2): each band gets
        ``max(2, round((high - low) / freq_step) + 1)`` evenly spaced frequencies
        including both edges.
    log : bool
        Natural log of each trial's ratio (before averaging trials).
    zscore : bool
        Z-score each site over stimuli (mean and population SD of the averaged
        responses; repetitions get the same transform).
    responsive_only : bool
        Keep only the responsive sites (one-sided Wilcoxon window > baseline over
        stimuli, BH-FDR ``fdr_q`` over all sites of the signal). The counts are
        always in ``Responses.info["responsive"]``.
    fdr_q : float
        FDR level (0.05).
    bipolar : bool
        Re-reference each contact to the next one on its shaft
        (:func:`plugins.signals._preprocessing.bipolar_reference`).
    reject_trials : bool
        Drop (trial, site) pairs whose peak amplitude exceeds ``reject_threshold``
        times the channel's mean within-trial SD
        (:func:`plugins.signals._preprocessing.amplitude_rejection`).
    reject_threshold : float
        10 (published).
    notch : float, optional
        Line frequency (50 or 60 Hz) to notch out with its harmonics; None: off.
    notch_width : float
        Notch stop-band width in Hz (4).
    pad : {"reflect", "none"}
        Mirror-pad each trial by the longest wavelet half-length before the
        transform so that its zero-padding edge artefact does not reach the
        baseline; "none" reproduces ``tfr_array_morlet`` exactly.
    n_jobs : int or None
        Threads computing batches of trials; None (default) uses every core. Results are
        bit-identical for any value, so it is not part of the signal's parameters.
    """

    accepts = frozenset({"epochs"})
    plugin_version = "1"

    Params = BandPowerParams
    name = "band-power"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.bands: dict[str, tuple[float, float]] = {b: _pair(r, f"band '{b}'") for b, r in p.bands.items()}
        self.windows = [_pair(w, "window") for w in p.windows]
        self.window_names = [f"{_fmt(a)}-{_fmt(b)}" for a, b in self.windows]
        self.baseline = _pair(p.baseline, "baseline")
        self.n_cycles = self._resolve_cycles(p.n_cycles)
        self.n_jobs = p.n_jobs if p.n_jobs is not None else (os.cpu_count() or 1)
        self._grid = {b: self._band_grid(b) for b in self.bands}

    # -- set-up -------------------------------------------------------------------------
    def _resolve_cycles(self, n_cycles: Any) -> dict[str, float]:
        """Cycles per band from the declared ``n_cycles`` (validated by :class:`BandPowerParams`)."""
        def default(b: str) -> float:
            return DEFAULT_N_CYCLES.get(b, OTHER_BAND_N_CYCLES)

        if n_cycles == "default":
            return {b: default(b) for b in self.bands}
        if isinstance(n_cycles, Mapping):
            return {b: float(n_cycles.get(b, default(b))) for b in self.bands}
        return {b: float(n_cycles) for b in self.bands}

    def _band_grid(self, band: str) -> dict[str, Any]:
        lo, hi = self.bands[band]
        n = max(2, int(round((hi - lo) / self.params.freq_step)) + 1)
        freqs = np.linspace(lo, hi, n)
        n_sub = max(1, int(math.ceil((hi - lo) / self.params.subband_width - 1e-9)))
        edges = [lo + k * self.params.subband_width for k in range(n_sub)] + [hi]
        subs = [np.flatnonzero((freqs >= a - 1e-9) & (freqs <= b + 1e-9)) for a, b in zip(edges[:-1], edges[1:])]
        if any(s.size == 0 for s in subs):
            raise ConfigError(f"band-power: band '{band}' ({lo:g}-{hi:g} Hz) has a sub-band without wavelet "
                              f"frequencies at freq_step={self.params.freq_step:g} Hz; lower freq_step or raise "
                              "subband_width.")
        return {"freqs": freqs, "subbands": subs, "edges": edges}

    def _parse(self, name: str) -> tuple[str, int]:
        band, sep, window = str(name).partition("@")
        if not sep:
            raise unknown_name_error("signal", str(name), self.names("epochs"), option="signals", error_cls=ConfigError)
        if band not in self.bands:
            raise unknown_name_error("band", band, self.bands, option=f"signal '{name}'", error_cls=ConfigError)
        if window not in self.window_names:
            raise unknown_name_error("window", window, self.window_names, option=f"signal '{name}'",
                                     error_cls=ConfigError)
        return band, self.window_names.index(window)

    # -- contract -----------------------------------------------------------------------
    def names(self, dataset_kind: DataKind) -> list[str]:
        """``"<band>@<start>-<stop>"`` for every band and window (bands outer), for epochs only."""
        if dataset_kind != "epochs":
            return []
        return [f"{b}@{w}" for b in self.bands for w in self.window_names]

    def parameters(self, name: str) -> dict[str, Any]:
        """Everything that defines signal ``name`` (JSON-serialisable).

        The declared parameters (:meth:`BandPowerParams.key`) with the plugin-wide
        ``bands``, ``windows`` and ``n_cycles`` narrowed to this signal's band and window
        (so adding a band does not change the other signals' keys), the wavelet
        frequencies, and settings that do not apply (``subband_width`` without
        max-subband, ``reject_threshold`` without rejection, ``notch_width`` without a
        notch) set to None.
        """
        band, wi = self._parse(name)
        key = self.params.key()
        for plugin_wide in ("bands", "windows", "n_cycles"):
            key.pop(plugin_wide)
        key.update(band=band, band_hz=list(self.bands[band]), window_ms=list(self.windows[wi]),
                   n_cycles=self.n_cycles[band], freqs_hz=[round(float(f), 6) for f in self._grid[band]["freqs"]],
                   method="morlet (mne.time_frequency.morlet, zero_mean)")
        if self.params.reduction != "max-subband":
            key["subband_width"] = None
        if not self.params.reject_trials:
            key["reject_threshold"] = None
        if not self.params.notch:
            key["notch_width"] = None
        return key

    def compute(self, dataset: Dataset, names: Sequence[str]) -> dict[str, Responses]:
        """Compute the requested signals, one subject at a time, one transform per subject.

        Parameters
        ----------
        dataset : Dataset
            Kind ``"epochs"``.
        names : sequence of str
            Signals from :meth:`names`.

        Returns
        -------
        responses : dict of str to Responses
            ``data`` (n_stimuli, n_sites) float32 in ``dataset.stimuli`` order and
            ``dataset.sites`` order (bipolar sites: order of their first contact),
            ``repetitions`` (n_reps, n_stimuli, n_sites) float32 with NaN where a
            stimulus was shown fewer times, ``info["responsive"]``.
        """
        if dataset.kind != "epochs" or dataset.epochs is None:
            raise DataError(f"Signal 'band-power' needs a dataset with epochs; '{dataset.name}' has {dataset.kind}. "
                            "Use the 'precomputed' signal for it.")
        parsed = {n: self._parse(n) for n in dict.fromkeys(names)}
        if not parsed:
            return {}
        used_bands = list(dict.fromkeys(b for b, _ in parsed.values()))
        used_windows = sorted({w for _, w in parsed.values()})
        freqs = np.concatenate([self._grid[b]["freqs"] for b in used_bands])
        cycles = np.concatenate([np.full(self._grid[b]["freqs"].size, self.n_cycles[b]) for b in used_bands])
        offsets = np.cumsum([0] + [self._grid[b]["freqs"].size for b in used_bands])
        band_slice = {b: slice(offsets[i], offsets[i + 1]) for i, b in enumerate(used_bands)}
        stim_pos = {s: i for i, s in enumerate(dataset.stimuli.ids)}
        site_pos = {s: i for i, s in enumerate(dataset.sites.names)}
        n_stim = len(dataset.stimuli)
        seen = np.zeros(n_stim, dtype=bool)
        per_name: dict[str, dict[str, list]] = {n: {"reps": [], "wp": [], "bp": []} for n in parsed}
        tables: list[SiteTable] = []
        keys: list[np.ndarray] = []
        n_rejected = 0
        for subject, loader in dataset.epochs.items():
            ep = loader()
            data, channels, sfreq, times_ms, stims = self._read(ep, subject, dataset, freqs)
            del ep  # only the (n_trials, n_channels, n_times) array is needed from here on
            pos = np.array([stim_pos[s] for s in stims], dtype=np.int64)
            seen[pos] = True
            table, key, data = self._sites(data, channels, subject, dataset, site_pos, sfreq)
            rejected = (preprocessing.amplitude_rejection(data, threshold=self.params.reject_threshold)
                        if self.params.reject_trials else np.zeros(data.shape[:2], dtype=bool))
            n_rejected += int(rejected.sum())
            ranges = [self._range(self.baseline, times_ms, "baseline", subject)]
            ranges += [self._range(self.windows[w], times_ms, f"window {self.window_names[w]}", subject)
                       for w in used_windows]
            n_trials, n_ch, n_times = data.shape
            pad = 0 if self.params.pad == "none" else min(n_times - 1, self._half_longest(sfreq, freqs, cycles))
            log.info("band-power: subject %s, %d trials x %d sites, %d wavelets", subject, n_trials, n_ch, freqs.size)
            power = window_power(data.reshape(n_trials * n_ch, n_times), sfreq, freqs, cycles, ranges,
                                 pad=pad, workers=self.n_jobs).reshape(n_trials, n_ch, freqs.size, len(ranges))
            base = power[..., 0]
            if np.any(base <= 0):
                t, c = np.argwhere((base <= 0).any(axis=-1))[0]
                raise DataError(f"Subject '{subject}', channel '{channels[c]}': zero baseline power in trial {t}; "
                                "the channel is flat in the baseline. Mark it bad (info['bads']) or drop the trial.")
            rep_idx = self._repetition_index(pos)
            n_reps = int(rep_idx.max()) + 1 if rep_idx.size else 1
            for name, (band, w) in parsed.items():
                sl = band_slice[band]
                win = power[:, :, sl, 1 + used_windows.index(w)]
                bas = base[:, :, sl]
                value = self._reduce(win / bas, band)
                if self.params.log:
                    value = np.log(value)
                value[rejected] = np.nan
                wp = np.where(rejected, np.nan, win.mean(-1))
                bp = np.where(rejected, np.nan, bas.mean(-1))
                per_name[name]["reps"].append(self._scatter(value, pos, rep_idx, n_reps, n_stim))
                per_name[name]["wp"].append(self._scatter(wp, pos, rep_idx, n_reps, n_stim))
                per_name[name]["bp"].append(self._scatter(bp, pos, rep_idx, n_reps, n_stim))
            tables.append(table)
            keys.append(key)
            del data, power
        if not seen.all():
            missing = [dataset.stimuli.ids[i] for i in np.flatnonzero(~seen)]
            raise DataError(f"Dataset '{dataset.name}': {len(missing)} stimuli have no trial in any subject "
                            f"(e.g. {missing[:5]}); remove them from the stimulus set or add their trials.")
        order = np.argsort(np.concatenate(keys), kind="stable")
        sites = tables[0]
        for t in tables[1:]:
            sites = sites.concat(t)
        sites = sites.select(order)
        out = {}
        for name, parts in per_name.items():
            reps = self._stack_sites(parts["reps"])[:, :, order]
            wp = _nanmean(self._stack_sites(parts["wp"])[:, :, order], axis=0)
            bp = _nanmean(self._stack_sites(parts["bp"])[:, :, order], axis=0)
            out[name] = self._finish(name, reps, wp, bp, sites, dataset, n_rejected)
        return out

    # -- helpers ------------------------------------------------------------------------
    def _read(self, ep: Any, subject: str, dataset: Dataset, freqs: np.ndarray):
        import mne

        sfreq = float(ep.info["sfreq"])
        nyq = sfreq / 2.0
        if freqs.max() >= nyq:
            band = next(b for b, (lo, hi) in self.bands.items() if hi >= nyq)
            raise DataError(f"Cannot compute band '{band}' of subject '{subject}' above Nyquist ({nyq:.1f} Hz), "
                            f"got {self.bands[band][1]:.1f} Hz; lower the band or use data sampled above "
                            f"{2 * self.bands[band][1]:g} Hz.")
        picks = mne.pick_types(ep.info, meg=False, eeg=True, seeg=True, ecog=True, dbs=True, exclude="bads")
        if len(picks) == 0:
            raise DataError(f"Epochs of subject '{subject}' have no good sEEG/ECoG/EEG channel; check channel "
                            "types (set_channel_types) and info['bads'].")
        channels = [ep.ch_names[i] for i in picks]
        stims = epochs_stimulus_ids(ep, f"subject '{subject}'")
        known = set(dataset.stimuli.ids)
        unknown = sorted(set(stims) - known)
        if unknown:
            raise DataError(f"Epochs of subject '{subject}' contain trials of stimuli not in the stimulus set of "
                            f"'{dataset.name}': {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                            f"({len(unknown)} ids). "
                            "Fix metadata['stimulus'] or add these stimuli.")
        data = ep.get_data(picks=picks)  # (n_trials, n_ch, n_times) float64
        finite = np.isfinite(data)
        if not finite.all():
            t, c, _ = np.argwhere(~finite)[0]
            raise DataError(f"Subject '{subject}', channel '{channels[c]}': {int((~finite[:, c]).sum())} NaN/inf "
                            f"samples (first in trial {t}). Mark the channel bad (info['bads']) or repair the data.")
        flat = data.reshape(-1, data.shape[1], data.shape[2]).std(axis=(0, 2)) == 0
        if flat.any():
            names = [channels[i] for i in np.flatnonzero(flat)]
            raise DataError(f"Subject '{subject}': channel(s) {names[:5]} are flat (zero variance); mark them bad "
                            "(info['bads']) or remove them.")
        if self.params.notch is not None:
            data = preprocessing.notch(data, sfreq, self.params.notch, width=self.params.notch_width, subject=subject)
        return data, channels, sfreq, ep.times * 1000.0, stims

    def _sites(self, data, channels, subject, dataset, site_pos, sfreq):
        full = [f"{subject}/{c}" for c in channels]
        missing = [n for n in full if n not in site_pos]
        if missing:
            raise DataError(f"Channels {missing[:5]} of subject '{subject}' are not in the site table of "
                            f"'{dataset.name}'; add them (name '<subject>/<channel>') or mark them bad.")
        idx = np.array([site_pos[n] for n in full])
        table = dataset.sites.select(idx)
        if not self.params.bipolar:
            return table, idx.astype(np.float64), data
        data, pairs = preprocessing.bipolar_reference(data, channels, subject=subject)
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        areas = tuple(table.areas[i] if table.areas[i] == table.areas[j] else "n/a" for i, j in zip(a, b))
        coords = None if table.coords is None else (table.coords[a] + table.coords[b]) / 2.0
        bip = SiteTable(tuple(f"{subject}/{p[2]}" for p in pairs), (subject,) * len(pairs), areas, coords)
        key = idx[a] + idx[b] / (len(site_pos) + 1.0)
        return bip, key.astype(np.float64), data

    @staticmethod
    def _range(ms: tuple[float, float], times_ms: np.ndarray, what: str, subject: str) -> tuple[int, int]:
        half = (times_ms[1] - times_ms[0]) / 2.0 if times_ms.size > 1 else 0.0  # half a sample, ms
        if ms[0] < times_ms[0] - half or ms[1] > times_ms[-1] + half:
            raise DataError(f"The {what} ({ms[0]:g} to {ms[1]:g} ms) is outside the epochs of subject '{subject}' "
                            f"({times_ms[0]:g} to {times_ms[-1]:g} ms); choose a range inside the epoch or re-epoch.")
        inside = np.flatnonzero((times_ms >= ms[0] - 1e-6) & (times_ms <= ms[1] + 1e-6))
        if inside.size == 0:
            raise DataError(f"The {what} ({ms[0]:g} to {ms[1]:g} ms) contains no sample of subject '{subject}'.")
        return int(inside[0]), int(inside[-1]) + 1

    @staticmethod
    def _half_longest(sfreq: float, freqs: np.ndarray, cycles: np.ndarray) -> int:
        sigma = cycles / (2.0 * np.pi * freqs)
        return int(np.ceil(5.0 * sigma.max() * sfreq))

    def _reduce(self, ratio: np.ndarray, band: str) -> np.ndarray:
        """(n_trials, n_ch, n_freqs) per-frequency ratio -> (n_trials, n_ch)."""
        if self.params.reduction == "mean":
            return ratio.mean(axis=-1)
        subs = self._grid[band]["subbands"]
        return np.max(np.stack([ratio[..., s].mean(axis=-1) for s in subs], axis=-1), axis=-1)

    @staticmethod
    def _repetition_index(pos: np.ndarray) -> np.ndarray:
        """0 for a stimulus's first trial, 1 for its second, ... (trial order), (n_trials,) int64."""
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        start = np.r_[True, sorted_pos[1:] != sorted_pos[:-1]]
        first = np.maximum.accumulate(np.where(start, np.arange(pos.size), 0))
        rep = np.empty_like(pos)
        rep[order] = np.arange(pos.size) - first
        return rep

    @staticmethod
    def _scatter(values: np.ndarray, pos: np.ndarray, rep: np.ndarray, n_reps: int, n_stim: int) -> np.ndarray:
        out = np.full((n_reps, n_stim, values.shape[1]), np.nan)
        out[rep, pos] = values
        return out

    @staticmethod
    def _stack_sites(parts: list[np.ndarray]) -> np.ndarray:
        n_reps = max(p.shape[0] for p in parts)
        padded = [np.concatenate([p, np.full((n_reps - p.shape[0],) + p.shape[1:], np.nan)]) if p.shape[0] < n_reps
                  else p for p in parts]
        return np.concatenate(padded, axis=2)

    def _finish(self, name, reps, wp, bp, sites, dataset, n_rejected) -> Responses:
        data = _nanmean(reps, axis=0)
        if self.params.zscore:
            mu = _nanmean(data, axis=0)
            sd = np.sqrt(_nanmean((data - mu) ** 2, axis=0))
            sd = np.where(sd > 0, sd, 1.0)
            data = (data - mu) / sd
            reps = (reps - mu) / sd
        test = responsive_sites(wp, bp, q=self.params.fdr_q)
        mask = test["responsive"]
        info = {"signal": name, "parameters": self.parameters(name),
                "responsive": {"n_sites": int(mask.size), "n_responsive": int(mask.sum()),
                               "filter_applied": self.params.responsive_only, "q": self.params.fdr_q,
                               "test": "one-sided Wilcoxon signed-rank (window > baseline power over stimuli), "
                                       "Benjamini-Hochberg over sites",
                               "mask": [bool(m) for m in mask]},
                "n_rejected_trial_sites": n_rejected, "n_missing": int(np.isnan(data).sum())}
        if self.params.responsive_only:
            keep = np.flatnonzero(mask)
            data, reps, sites = data[:, keep], reps[:, :, keep], sites.select(keep)
            info["responsive"]["mask"] = [True] * keep.size
        return Responses(data=data.astype(np.float32), sites=sites, stimulus_ids=dataset.stimuli.ids,
                         repetitions=reps.astype(np.float32), area_order=dataset.area_order, info=info)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN, NaN (no warning) where everything is NaN."""
    ok = ~np.isnan(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
