"""Band power relative to baseline per stimulus (Kuzovkin et al. 2018).

For every trial and site: Morlet power (MNE wavelets, :mod:`plugins.signals._power`)
averaged over the samples of a post-onset window, divided frequency by
frequency by the power averaged over the baseline, then reduced over the band's
frequencies (``"max-subband"``: the largest mean ratio among ~10 Hz sub-bands,
as published; ``"mean"``: the mean ratio over the band). Trials of one image are
averaged; single trials are kept as repetitions (noise ceilings).

One plugin expands into ``<band>@<start>-<stop>`` signals (15 by default). All
requested signals are computed in one pass over each subject; subjects are
loaded one at a time. A signal's values are a function of its own band, window,
parameters and the dataset, bit for bit: computing it alone, with the other
windows of its band or with every band gives the same arrays (each wavelet's
power is computed on a time-block grid fixed by the wavelet and the epochs,
:mod:`plugins.signals._power`), as the cell keys assume.

Plan-time checks
    :meth:`BandPowerSignal.check` runs, on the declared ``Dataset.epochs_meta``,
    the same checks ``compute`` runs on each subject's loaded epochs (bands below
    Nyquist, baseline and windows inside the epochs, wavelets no longer than the
    epochs allow, a notch MNE accepts, declared channels in the site table and
    pairable for ``bipolar``): one-line errors naming the signal, subject, what
    the epochs allow and the ``--signal-param`` that fixes it. Suspicious but
    valid settings are logged as warnings; ``compute`` warns about sites whose
    median trial ratio is beyond :data:`EXTREME_RATIO` (near-zero baselines).

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

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from framework.contracts import SignalPlugin
from framework.errors import ConfigError, DataError, unknown_name_error
from framework.params import PluginParams, param
from framework.types import DataKind, Dataset, EpochsMeta, Responses, SiteTable, epochs_stimulus_ids
from plugins.signals import _preprocessing as preprocessing
from plugins.signals._power import longest_half_length, wavelet_half_lengths, window_power
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
#: A site whose median trial power ratio (window / baseline) is above this, or below its inverse,
#: makes :meth:`BandPowerSignal.compute` warn. 100x is +20 dB: two orders of magnitude, far beyond
#: evoked band-power changes (broadband gamma responses are a few-fold over baseline), and met by
#: a near-zero baseline (a flat, blanked or clipped pre-stimulus stretch, ratios ~1000) or an
#: artefact. The median over trials makes it a property of the site, not of one bad trial.
EXTREME_RATIO = 100.0
#: Slack (ms) when comparing a range's edges with sample times (float rounding of the times).
_TOL_MS = 1e-6


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def _num(x: float) -> str:
    """A number as typed on a command line: up to 12 significant digits, no trailing zeros."""
    return f"{float(x):.12g}"


def _ceil3(x: float) -> float:
    """``x`` rounded up to 0.001 (ms) so that a suggested start stays inside a span."""
    return math.ceil(x * 1000.0 - 1e-6) / 1000.0


def _floor3(x: float) -> float:
    """``x`` rounded down to 0.001 (ms) so that a suggested stop stays inside a span."""
    return math.floor(x * 1000.0 + 1e-6) / 1000.0


def _toml(value: Any) -> str:
    """``value`` as the TOML the command line parses (``--signal-param band-power.X=<value>``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)}={_toml(v)}"
                              for k, v in value.items()) + "}"
    return "[" + ",".join(_toml(v) for v in value) + "]"


def _signals_text(names: Sequence[str]) -> str:
    """``"Signal 'a'"`` or ``"Signals 'a', 'b' (+3 more)"``."""
    head = ", ".join(f"'{n}'" for n in names[:2])
    more = f" (+{len(names) - 2} more)" if len(names) > 2 else ""
    return f"Signal{'s' if len(names) > 1 else ''} {head}{more}"


def _sample_times_ms(meta: EpochsMeta) -> np.ndarray:
    """Times of an epoch's samples in ms, (n_times,) float64, from its first and last sample and sfreq."""
    step = 1000.0 / meta.sfreq
    n = int(round((meta.tmax_ms - meta.tmin_ms) / step)) + 1
    return meta.tmin_ms + np.arange(max(n, 1)) * step


def _locate(ms: tuple[float, float], times: np.ndarray) -> tuple[int, int] | str:
    """Sample range (start, stop) of the samples within ``ms`` (ms), or ``"outside"`` / ``"empty"``.

    A range may reach half a sample beyond the first and last sample, and must hold one.
    """
    half = (times[1] - times[0]) / 2.0 if times.size > 1 else 0.0
    if ms[0] < times[0] - half - _TOL_MS or ms[1] > times[-1] + half + _TOL_MS:
        return "outside"
    inside = np.flatnonzero((times >= ms[0] - _TOL_MS) & (times <= ms[1] + _TOL_MS))
    if inside.size == 0:
        return "empty"
    return int(inside[0]), int(inside[-1]) + 1


def _missing_sites_error(missing: Sequence[str], subject: str, dataset: Dataset) -> DataError:
    names = [f"{subject}/{c}" for c in missing]
    return DataError(f"Channels {names[:5]} of subject '{subject}' are not in the site table of "
                     f"'{dataset.name}'; add them (name '<subject>/<channel>') or mark them bad.")


def _describe(meta: EpochsMeta) -> str:
    return (f"{meta.sfreq:g} Hz, {meta.tmin_ms:g} to {meta.tmax_ms:g} ms, {meta.n_epochs} epochs, "
            f"{len(meta.channels)} channels")


def _extreme_sites(value: np.ndarray) -> tuple[int, int, float]:
    """Sites whose median trial ratio is beyond :data:`EXTREME_RATIO`: (count, worst site, its median).

    ``value`` is (n_trials, n_sites) float64, NaN for rejected trials.
    """
    med = np.full(value.shape[1], np.nan)
    cols = np.flatnonzero((~np.isnan(value)).any(axis=0))
    if cols.size:
        med[cols] = np.nanmedian(value[:, cols], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.abs(np.log(med))
    bad = np.flatnonzero(size > math.log(EXTREME_RATIO))
    if bad.size == 0:
        return 0, 0, float("nan")
    worst = int(bad[np.argmax(size[bad])])
    return int(bad.size), worst, float(med[worst])


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
        Mirror each trial by (about) the wavelet's half-length, at most the
        epoch length minus one sample, before the transform so that the
        zero-padding edge artefact does not reach the baseline; "none"
        reproduces ``tfr_array_morlet`` exactly (zeros beyond the epoch).
    n_jobs : int or None
        Threads computing batches of trials; None (default) uses every core. Results are
        bit-identical for any value, so it is not part of the signal's parameters.
    """

    accepts = frozenset({"epochs"})
    #: "2": values computed per wavelet on a fixed block grid (independent of the other signals
    #: computed with them; differ from "1" by ~1e-6 relative), so cells and caches of "1" are not reused.
    plugin_version = "2"

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
        self._half_cache: dict[tuple[str, float], np.ndarray] = {}

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

        Each signal's values depend on its own band, window and parameters only (bit for
        bit), never on the other signals computed with it (:func:`window_power`).

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

        Raises
        ------
        ConfigError, DataError
            The checks of :meth:`check`, run on each subject's epochs as loaded, then
            problems of the recordings themselves (NaN, flat channels, unknown stimuli,
            zero baseline power).
        """
        if dataset.kind != "epochs" or dataset.epochs is None:
            raise self._kind_error(dataset)
        parsed = {n: self._parse(n) for n in dict.fromkeys(names)}
        if not parsed:
            return {}
        used_bands, used_windows = self._used(parsed)
        # One column per distinct wavelet (70 Hz is in lowgamma and highgamma); a column's values do
        # not depend on the other columns (window_power), so neither does a band's.
        columns: dict[tuple[float, float], int] = {}
        band_cols = {b: np.array([columns.setdefault((float(f), self.n_cycles[b]), len(columns))
                                  for f in self._grid[b]["freqs"]]) for b in used_bands}
        freqs = np.array([f for f, _ in columns])
        cycles = np.array([c for _, c in columns])
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
            picks, meta = self._epochs_meta(ep, subject)
            self._compare_meta(subject, meta, dataset)
            # every subject's epochs shape the fixes the errors suggest (as in check())
            metas = {**{s: m for s, m in (dataset.epochs_meta or {}).items() if s in dataset.epochs}, subject: meta}
            ranges = self._subject_ranges(subject, meta, parsed, dataset, metas)
            data, stims = self._read(ep, picks, meta, subject, dataset)
            del ep  # only the (n_trials, n_channels, n_times) array is needed from here on
            pos = np.array([stim_pos[s] for s in stims], dtype=np.int64)
            seen[pos] = True
            table, key, data = self._sites(data, list(meta.channels), subject, dataset, site_pos)
            rejected = (preprocessing.amplitude_rejection(data, threshold=self.params.reject_threshold)
                        if self.params.reject_trials else np.zeros(data.shape[:2], dtype=bool))
            n_rejected += int(rejected.sum())
            n_trials, n_ch, n_times = data.shape
            log.info("band-power: subject %s, %d trials x %d sites, %d wavelets", subject, n_trials, n_ch, freqs.size)
            power = window_power(data.reshape(n_trials * n_ch, n_times), meta.sfreq, freqs, cycles, ranges,
                                 pad=self.params.pad, workers=self.n_jobs).reshape(n_trials, n_ch, freqs.size,
                                                                                   len(ranges))
            base = power[..., 0]
            if np.any(base <= 0):
                t, c = np.argwhere((base <= 0).any(axis=-1))[0]
                raise DataError(f"Subject '{subject}', channel '{table.names[c].split('/', 1)[-1]}': zero baseline "
                                f"power in trial {t}; "
                                "the channel is flat in the baseline. Mark it bad (info['bads']) or drop the trial.")
            rep_idx = self._repetition_index(pos)
            n_reps = int(rep_idx.max()) + 1 if rep_idx.size else 1
            extreme: dict[str, tuple[int, str, float]] = {}
            for name, (band, w) in parsed.items():
                # contiguous (n_trials, n_sites, n_freqs) copies: the same memory layout, hence the same
                # summation order and bits, whatever else was computed
                win = np.ascontiguousarray(power[:, :, band_cols[band], 1 + used_windows.index(w)])
                bas = np.ascontiguousarray(base[:, :, band_cols[band]])
                value = self._reduce(win / bas, band)
                value[rejected] = np.nan
                worst = _extreme_sites(value)
                if worst[0]:
                    extreme[name] = (worst[0], table.names[worst[1]], worst[2])
                if self.params.log:
                    value = np.log(value)
                wp = np.where(rejected, np.nan, win.mean(-1))
                bp = np.where(rejected, np.nan, bas.mean(-1))
                per_name[name]["reps"].append(self._scatter(value, pos, rep_idx, n_reps, n_stim))
                per_name[name]["wp"].append(self._scatter(wp, pos, rep_idx, n_reps, n_stim))
                per_name[name]["bp"].append(self._scatter(bp, pos, rep_idx, n_reps, n_stim))
            if extreme:
                self._warn_extreme(subject, extreme, n_ch)
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

    # -- plan-time checks ---------------------------------------------------------------
    def check(self, dataset: Dataset, names: Sequence[str]) -> None:
        """Check signals ``names`` against the dataset's epochs before any computation.

        Runs, on ``dataset.epochs_meta``, exactly the checks :meth:`compute` runs on each
        subject's epochs when it loads them (same code, same messages), so that compute
        cannot fail later on anything these settings and the declared epochs decide.
        Raised as one line naming the signal or parameter, the subject, what the epochs
        allow and the ``--signal-param band-power.X=...`` that fixes it:

        * :class:`ConfigError`: a band reaching the Nyquist frequency (``sfreq / 2``);
          the baseline or a window outside the epoch span (half a sample of slack) or
          holding no sample; a wavelet longer than the epochs allow
          (:func:`plugins.signals._power.longest_half_length`; a wavelet reaching past
          the epoch is fine: compute pads, mirroring by default); a notch MNE rejects
          (:func:`plugins.signals._preprocessing.notch_problem`);
        * :class:`DataError`: a dataset without epochs; when the channels are declared,
          channels missing from the site table, or no contact pairs for ``bipolar``.

        Subjects without ``epochs_meta`` (all of them when it is None) are checked by
        :meth:`compute` only. Warnings (logger ``framework.signals.band_power``) for
        settings that work but are suspicious: a window overlapping the baseline, a
        baseline ending after stimulus onset, and with ``pad="none"`` a wavelet reaching
        past the epochs from the baseline or a window (zero padding lowers power there).
        Near-zero baselines can only be seen in the data: :meth:`compute` warns about them.
        """
        if dataset.kind != "epochs" or dataset.epochs is None:
            raise self._kind_error(dataset)
        parsed = {n: self._parse(n) for n in dict.fromkeys(names)}
        if not parsed:
            return
        self._warn_parameters(parsed)
        metas = {s: m for s, m in (dataset.epochs_meta or {}).items() if s in dataset.epochs}
        if not metas:
            log.debug("band-power: dataset '%s' declares no epochs_meta; its epochs are checked when computed.",
                      dataset.name)
            return
        for subject, meta in metas.items():
            self._subject_ranges(subject, meta, parsed, dataset, metas)
        if self.params.pad == "none":
            self._warn_edges(parsed, metas)

    def _kind_error(self, dataset: Dataset) -> DataError:
        return DataError(f"Signal 'band-power' needs a dataset with epochs; '{dataset.name}' has {dataset.kind}. "
                         "Use the 'precomputed' signal for it.")

    def _used(self, parsed: Mapping[str, tuple[str, int]]) -> tuple[list[str], list[int]]:
        """Bands (first-use order) and window indices (ascending) of the parsed names."""
        return list(dict.fromkeys(b for b, _ in parsed.values())), sorted({w for _, w in parsed.values()})

    def _subject_ranges(self, subject: str, meta: EpochsMeta, parsed: Mapping[str, tuple[str, int]],
                        dataset: Dataset, metas: Mapping[str, EpochsMeta]) -> list[tuple[int, int]]:
        """Check the settings against one subject's epochs; the baseline's and windows' sample ranges.

        The one place both :meth:`check` (declared ``meta``) and :meth:`compute` (``meta`` of
        the loaded epochs) decide what the epochs allow. ``metas`` (every subject's) shape the
        suggested fixes so that they work for all subjects.

        Returns
        -------
        ranges : list of (start, stop) int
            Sample ranges (slice convention) of the baseline, then of each used window in
            ascending window order.
        """
        bands, windows = self._used(parsed)
        for band in bands:
            lo, hi = self.bands[band]
            if hi >= meta.nyquist:
                raise ConfigError(
                    f"{_signals_text([n for n, (b, _) in parsed.items() if b == band])}: band '{band}' reaches "
                    f"{hi:g} Hz (band-power parameter bands: {lo:g}-{hi:g} Hz), at or above the Nyquist frequency of "
                    f"subject '{subject}' ({meta.nyquist:g} Hz = {meta.sfreq:g} Hz / 2); band frequencies must stay "
                    f"below it. Fix: {self._nyquist_fix(band, metas)}.")
        if self.params.notch is not None:
            problem = preprocessing.notch_problem(meta.sfreq, self.params.notch, self.params.notch_width)
            if problem is not None:
                raise ConfigError(f"Signals of band-power with notch={self.params.notch:g} Hz and notch_width="
                                  f"{self.params.notch_width:g} Hz cannot be computed for subject '{subject}' "
                                  f"({meta.sfreq:g} Hz): {problem}. Fix: {self._notch_fix(metas)}.")
        times = _sample_times_ms(meta)
        ranges = []
        for wi in [None, *windows]:
            ms = self.baseline if wi is None else self.windows[wi]
            where = _locate(ms, times)
            if isinstance(where, str):
                raise ConfigError(self._range_message(wi, where, subject, meta, parsed, metas))
            ranges.append(where)
        limit = longest_half_length(times.size, self.params.pad)
        for band in bands:
            halves = self._halves(band, meta.sfreq)
            if halves.max() > limit:
                i = int(np.argmax(halves))
                f, h = float(self._grid[band]["freqs"][i]), int(halves[i])
                raise ConfigError(
                    f"{_signals_text([n for n, (b, _) in parsed.items() if b == band])}: the {f:g} Hz wavelet of band "
                    f"'{band}' ({self.n_cycles[band]:g} cycles, band-power parameter n_cycles) spans {2 * h + 1} "
                    f"samples ({2 * h * 1000.0 / meta.sfreq:g} ms), more than the {times.size}-sample epochs of "
                    f"subject '{subject}' allow with pad='{self.params.pad}' (at most {2 * limit + 1} samples). "
                    f"Fix: {self._cycles_fix(band, metas)}.")
        if meta.channels:
            known = set(dataset.sites.names)
            missing = [c for c in meta.channels if f"{subject}/{c}" not in known]
            if missing:
                raise _missing_sites_error(missing, subject, dataset)
            if self.params.bipolar:
                preprocessing.checked_bipolar_pairs(meta.channels, subject=subject)
        return ranges

    def _halves(self, band: str, sfreq: float) -> np.ndarray:
        """Half-lengths in samples of the band's wavelets at ``sfreq``, (n_freqs,) int64 (cached)."""
        key = (band, float(sfreq))
        if key not in self._half_cache:
            freqs = self._grid[band]["freqs"]
            self._half_cache[key] = wavelet_half_lengths(sfreq, freqs, np.full(freqs.size, self.n_cycles[band]))
        return self._half_cache[key]

    # -- messages and their fixes -------------------------------------------------------
    def _option(self, param: str, value: Any) -> str | None:
        """``--signal-param 'band-power.<param>=<value>'`` if the changed parameters are valid, else None."""
        values = {**self.params.model_dump(), param: value}
        try:
            type(self)(**values)
        except ConfigError:
            return None
        return f"--signal-param '{self.name}.{param}={_toml(value)}'"

    def _nyquist_fix(self, band: str, metas: Mapping[str, EpochsMeta]) -> str:
        """A ``bands`` value that fits every subject: every band reaching the lowest Nyquist frequency
        ends one whole Hz below it, or is removed when its low edge is already that high."""
        lo, hi = self.bands[band]
        nyq = min(m.nyquist for m in metas.values())
        top = math.ceil(nyq) - 1.0  # the largest whole number of Hz below every Nyquist frequency
        fixed: dict[str, list[float]] = {}
        clipped, removed = [], []
        for b, (b_lo, b_hi) in self.bands.items():
            if b_hi < nyq:
                fixed[b] = [b_lo, b_hi]
            elif top > b_lo:
                fixed[b] = [b_lo, top]
                clipped.append(b)
            else:
                removed.append(b)
        option = self._option("bands", fixed) if fixed else None
        if option:
            how = []
            if clipped:
                how.append(f"band(s) {', '.join(repr(b) for b in clipped)} end at {top:g} Hz")
            if removed:
                how.append(f"band(s) {', '.join(repr(b) for b in removed)} removed")
            return (f"{option} ({'; '.join(how)}: every band below the Nyquist frequency of every subject) "
                    f"or use recordings sampled above {2 * max(h for _, h in self.bands.values()):g} Hz")
        return f"use recordings sampled above {2 * hi:g} Hz or choose bands below {nyq:g} Hz"

    def _notch_fix(self, metas: Mapping[str, EpochsMeta]) -> str:
        line = float(self.params.notch)
        drop = "leave out --signal-param band-power.notch (no line-noise filter)"
        widest = min(preprocessing.widest_notch(m.sfreq, line) for m in metas.values())
        width = math.floor(min(widest, 1e6) * 10.0 - 1e-6) / 10.0  # one decimal, strictly below the limit
        if width > 0 and all(preprocessing.notch_problem(m.sfreq, line, width) is None for m in metas.values()):
            option = self._option("notch_width", width)
            if option:
                return f"{option} or {drop}"
        return drop

    def _range_message(self, wi: int | None, problem: str, subject: str, meta: EpochsMeta,
                       parsed: Mapping[str, tuple[str, int]], metas: Mapping[str, EpochsMeta]) -> str:
        ms = self.baseline if wi is None else self.windows[wi]
        signals = _signals_text([n for n, (_, w) in parsed.items() if wi is None or w == wi])
        what = "the baseline" if wi is None else f"window {self.window_names[wi]}"
        param = "baseline" if wi is None else "windows"
        step = 1000.0 / meta.sfreq
        head = f"{signals}: {what} ({ms[0]:g} to {ms[1]:g} ms, band-power parameter {param})"
        if problem == "outside":
            head += (f" is outside the epochs of subject '{subject}', which span {meta.tmin_ms:g} to {meta.tmax_ms:g} "
                     f"ms at {meta.sfreq:g} Hz (a range may reach half a sample, {step / 2:g} ms, beyond them)")
        else:
            head += (f" contains no sample of subject '{subject}' (one every {step:g} ms from {meta.tmin_ms:g} ms)")
        return f"{head}. Fix: {self._range_fix(wi, problem, metas)}."

    def _range_fix(self, wi: int | None, problem: str, metas: Mapping[str, EpochsMeta]) -> str:
        """A changed baseline or window that every subject's epochs hold, as the option to type."""
        a, b = self.baseline if wi is None else self.windows[wi]
        first = max(m.tmin_ms for m in metas.values())
        last = min(m.tmax_ms for m in metas.values())
        candidates: list[tuple[tuple[float, float], str]] = []
        if problem == "outside":
            clipped = (_ceil3(max(a, first)), _floor3(min(b, last)))
            candidates.append((clipped, "clipped to the epochs of every subject"))
            if wi is None and first < min(0.0, last):
                candidates.append(((_ceil3(first), _floor3(min(0.0, last))), "the pre-stimulus part of the epochs"))
        else:  # widen to the first sample at or after the start in every subject
            nxt = [t[t >= a - _TOL_MS] for t in (_sample_times_ms(m) for m in metas.values())]
            if all(t.size for t in nxt):
                candidates.append(((a, _ceil3(max(float(t[0]) for t in nxt))), "widened to hold a sample"))
        for (c, d), how in candidates:
            if not c < d or any(isinstance(_locate((c, d), _sample_times_ms(m)), str) for m in metas.values()):
                continue
            if wi is None:
                option = self._option("baseline", [c, d])
            else:
                option = self._option("windows", [[c, d] if i == wi else list(w) for i, w in enumerate(self.windows)])
            if option:
                return f"{option} ({how}) or re-epoch the recordings"
        if wi is not None and len(self.windows) > 1:
            option = self._option("windows", [list(w) for i, w in enumerate(self.windows) if i != wi])
            if option:
                return f"{option} (window removed) or re-epoch the recordings"
        return f"re-epoch the recordings to cover it, or choose a range inside {first:g} to {last:g} ms"

    def _cycles_fix(self, band: str, metas: Mapping[str, EpochsMeta]) -> str:
        """Fewer cycles for ``band`` (the most every subject allows, 0.01 steps) or mirror padding."""
        lo = float(self._grid[band]["freqs"][0])  # the longest wavelet
        fixes = []
        best = None
        for m in metas.values():
            limit = longest_half_length(_sample_times_ms(m).size, self.params.pad)
            c = math.floor(100.0 * 2.0 * math.pi * lo * (limit + 1) / (5.0 * m.sfreq)) / 100.0
            while c > 0 and wavelet_half_lengths(m.sfreq, np.array([lo]), np.array([c]))[0] > limit:
                c = round(c - 0.01, 2)
            best = c if best is None else min(best, c)
        if best is not None and best > 0:
            current = self.params.n_cycles
            if current == "default":
                table: dict[str, float] = {band: best}
            elif isinstance(current, Mapping):
                table = {**current, band: best}
            else:
                table = {b: (best if b == band else float(current)) for b in self.bands}
            option = self._option("n_cycles", table)
            if option:
                fixes.append(f"{option} (at most {best:g} cycles for band '{band}')")
        if self.params.pad == "none" and all(
                self._halves(band, m.sfreq).max() <= longest_half_length(_sample_times_ms(m).size, "reflect")
                for m in metas.values()):
            fixes.append(f"--signal-param {self.name}.pad=reflect")
        fixes.append("use longer epochs")
        return " or ".join(fixes)

    # -- warnings -----------------------------------------------------------------------
    def _warn_parameters(self, parsed: Mapping[str, tuple[str, int]]) -> None:
        """Warn about valid but suspicious ranges (no data needed)."""
        b0, b1 = self.baseline
        if b1 > 0:
            log.warning("band-power: the baseline (%g to %g ms) ends after stimulus onset, so it holds evoked "
                        "activity and %s compare the response with itself; set e.g. --signal-param "
                        "'band-power.baseline=[%s,%s]'.", b0, b1, _signals_text(list(parsed)).lower(),
                        _num(b0), _num(min(0.0, b1)) if b0 < 0 else "0")
        for wi in self._used(parsed)[1]:
            a, b = self.windows[wi]
            if a < b1 and b > b0:
                log.warning("band-power: window %s overlaps the baseline (%g to %g ms), so %s compare power "
                            "partly with itself (ratios pulled towards 1); choose a window after the baseline "
                            "(band-power parameters windows, baseline).", self.window_names[wi], b0, b1,
                            _signals_text([n for n, (_, w) in parsed.items() if w == wi]).lower())

    def _warn_edges(self, parsed: Mapping[str, tuple[str, int]], metas: Mapping[str, EpochsMeta]) -> None:
        """With pad="none": warn when a wavelet reaches past the epochs from the baseline or a window."""
        bands, windows = self._used(parsed)
        spans = [self.baseline] + [self.windows[w] for w in windows]
        hit_bands: list[str] = []
        hit_subjects: list[str] = []
        for band in bands:
            for subject, m in metas.items():
                reach = float(self._halves(band, m.sfreq).max()) * 1000.0 / m.sfreq
                if any(a - reach < m.tmin_ms or b + reach > m.tmax_ms for a, b in spans):
                    hit_bands += [band] if band not in hit_bands else []
                    hit_subjects += [subject] if subject not in hit_subjects else []
        if hit_bands:
            m = metas[hit_subjects[0]]
            log.warning("band-power: with pad='none' zeros stand for the data beyond the epochs, lowering power near "
                        "their edges: the wavelets of band(s) %s reach past the epochs of %d subject(s) (e.g. '%s', "
                        "%g to %g ms) from the baseline or a window (%s); use --signal-param band-power.pad=reflect "
                        "or ranges farther from the epoch edges.", ", ".join(hit_bands), len(hit_subjects),
                        hit_subjects[0], m.tmin_ms, m.tmax_ms,
                        _signals_text([n for n, (b, _) in parsed.items() if b in hit_bands]).lower())

    def _warn_extreme(self, subject: str, extreme: Mapping[str, tuple[int, str, float]], n_sites: int) -> None:
        """Warn about sites whose typical trial ratio is beyond :data:`EXTREME_RATIO` (see there why)."""
        parts = [f"{count} of {n_sites} sites for signal '{name}' (e.g. '{site}': {ratio:.3g})"
                 for name, (count, site, ratio) in list(extreme.items())[:3]]
        more = f" and {len(extreme) - 3} more signal(s)" if len(extreme) > 3 else ""
        log.warning("band-power: subject '%s': the median trial power ratio (window / baseline) is above %g or below "
                    "1/%g at %s%s; a near-zero baseline (a flat, blanked or clipped pre-stimulus stretch) or an "
                    "artefact gives such ratios, not a response. Check the channels (mark them bad in "
                    "info['bads']) and the baseline (band-power parameter baseline).", subject, EXTREME_RATIO,
                    EXTREME_RATIO, "; ".join(parts), more)

    def _compare_meta(self, subject: str, meta: EpochsMeta, dataset: Dataset) -> None:
        """Warn when the dataset's declared epochs_meta (used at plan time) differs from the epochs."""
        declared = (dataset.epochs_meta or {}).get(subject)
        if declared is None:
            return
        same = (abs(declared.sfreq - meta.sfreq) <= 1e-9 * meta.sfreq
                and abs(declared.tmin_ms - meta.tmin_ms) <= 1e-3 and abs(declared.tmax_ms - meta.tmax_ms) <= 1e-3
                and declared.n_epochs == meta.n_epochs
                and (not declared.channels or tuple(declared.channels) == tuple(meta.channels)))
        if not same:
            log.warning("band-power: dataset '%s' declares the epochs of subject '%s' as %s but they are %s; the "
                        "plan-time checks used the declaration. Fix the dataset plugin's epochs_meta.", dataset.name,
                        subject, _describe(declared), _describe(meta))

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _epochs_meta(ep: Any, subject: str) -> tuple[np.ndarray, EpochsMeta]:
        """Channel picks and :class:`EpochsMeta` of loaded epochs (good sEEG/ECoG/EEG/DBS channels)."""
        import mne

        picks = mne.pick_types(ep.info, meg=False, eeg=True, seeg=True, ecog=True, dbs=True, exclude="bads")
        if len(picks) == 0:
            raise DataError(f"Epochs of subject '{subject}' have no good sEEG/ECoG/EEG channel; check channel "
                            "types (set_channel_types) and info['bads'].")
        times = np.asarray(ep.times, dtype=np.float64)
        meta = EpochsMeta(sfreq=float(ep.info["sfreq"]), tmin_ms=float(times[0] * 1000.0),
                          tmax_ms=float(times[-1] * 1000.0), n_epochs=len(ep),
                          channels=tuple(ep.ch_names[i] for i in picks))
        return picks, meta

    def _read(self, ep: Any, picks: np.ndarray, meta: EpochsMeta, subject: str, dataset: Dataset):
        """The good channels' data (n_trials, n_channels, n_times) float64 (notch-filtered when asked) and
        each trial's stimulus id."""
        channels = meta.channels
        stims = epochs_stimulus_ids(ep, f"subject '{subject}'")
        known = set(dataset.stimuli.ids)
        unknown = sorted(set(stims) - known)
        if unknown:
            raise DataError(f"Epochs of subject '{subject}' contain trials of stimuli not in the stimulus set of "
                            f"'{dataset.name}': {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                            f"({len(unknown)} ids). "
                            "Fix metadata['stimulus'] or add these stimuli.")
        data = ep.get_data(picks=picks)  # (n_trials, n_ch, n_times) float64
        if data.shape[-1] != _sample_times_ms(meta).size:
            raise DataError(f"Epochs of subject '{subject}' have {data.shape[-1]} samples, but their times "
                            f"({meta.tmin_ms:g} to {meta.tmax_ms:g} ms at {meta.sfreq:g} Hz) imply "
                            f"{_sample_times_ms(meta).size}; the epochs are malformed.")
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
            data = preprocessing.notch(data, meta.sfreq, self.params.notch, width=self.params.notch_width,
                                       subject=subject)
        return data, stims

    def _sites(self, data, channels, subject, dataset, site_pos):
        full = [f"{subject}/{c}" for c in channels]
        missing = [c for c, n in zip(channels, full) if n not in site_pos]
        if missing:
            raise _missing_sites_error(missing, subject, dataset)
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
