"""Benchmark: all 15 band x window signals for a Kuzovkin-sized recording.

Kuzovkin et al. 2018: 100 subjects, ~110 sites each, 250 trials (images), 768
samples (512 Hz, -500..1000 ms). Subjects are simulated on the fly (1/f noise,
one at a time, as the band-power plugin loads them); ``--n-subjects`` runs a
subset and the total is extrapolated linearly. Baseline: MNE's
``tfr_array_morlet`` (same wavelets, same frequencies) on a slice of one subject,
extrapolated to a subject.

Usage: python benchmarks/bench_band_power.py [--n-subjects 2] [--sites 110] [--trials 250]
"""
from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np


def _subject_loader(seed: int, n_trials: int, n_sites: int, stim_ids: list[str]):
    def load():
        import mne

        rng = np.random.default_rng(seed)
        spec = np.fft.rfft(rng.standard_normal((n_trials, n_sites, 768)), axis=-1)
        f = np.fft.rfftfreq(768, 1 / 512.0)
        spec[..., 1:] /= np.sqrt(f[1:])
        spec[..., 0] = 0
        x = np.fft.irfft(spec, n=768, axis=-1) * 1e-5
        info = mne.create_info([f"E{k + 1}" for k in range(n_sites)], 512.0, "seeg")
        order = rng.permutation(n_trials)
        events = np.column_stack([np.arange(n_trials) * 1000, np.zeros(n_trials, int), order + 1])
        return mne.EpochsArray(x, info, events=events, event_id={s: i + 1 for i, s in enumerate(stim_ids)},
                               tmin=-0.5, verbose="error")
    return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-subjects", type=int, default=2)
    ap.add_argument("--total-subjects", type=int, default=100)
    ap.add_argument("--sites", type=int, default=110)
    ap.add_argument("--trials", type=int, default=250)
    ap.add_argument("--n-jobs", type=int, default=None, help="threads of the band-power signal (default: every core)")
    ap.add_argument("--trace-memory", action="store_true", help="second, traced run for peak numpy memory")
    ap.add_argument("--baseline-trials", type=int, default=10, help="trials of one subject given to tfr_array_morlet")
    args = ap.parse_args()

    from framework.types import Dataset, SiteTable, StimulusSet
    from plugins.signals.band_power import BandPowerSignal

    stim_ids = [f"img{k:03d}" for k in range(args.trials)]
    subjects = [f"p{k:03d}" for k in range(args.n_subjects)]
    names = [f"{s}/E{k + 1}" for s in subjects for k in range(args.sites)]
    sites = SiteTable(tuple(names), tuple(n.split("/")[0] for n in names), ("17",) * len(names))
    ds = Dataset("bench", StimulusSet(tuple(stim_ids)), "bench",
                 epochs={s: _subject_loader(i, args.trials, args.sites, stim_ids) for i, s in enumerate(subjects)},
                 sites=sites)
    sig = BandPowerSignal(n_jobs=args.n_jobs)
    signals = sig.names("epochs")
    n_freqs = sum(g["freqs"].size for g in sig._grid.values())

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = sig.compute(ds, signals)  # timed without tracemalloc (its per-allocation cost skews timings)
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.trace_memory:
        tracemalloc.start()
        sig.compute(ds, signals[:1] if args.n_subjects > 1 else signals)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    per_subject = elapsed / args.n_subjects
    n_signals = args.trials * args.sites

    # Baseline: MNE's tfr_array_morlet on a slice, then window means (same frequencies and cycles).
    from mne.time_frequency import tfr_array_morlet

    freqs = np.concatenate([sig._grid[b]["freqs"] for b in sig.bands])
    cycles = np.concatenate([np.full(sig._grid[b]["freqs"].size, sig.n_cycles[b]) for b in sig.bands])
    x = ds.epochs[subjects[0]]().get_data()[: args.baseline_trials]
    t1 = time.perf_counter()
    p = tfr_array_morlet(x, 512.0, freqs, n_cycles=cycles, output="power", verbose="error")
    _ = p[..., :205].mean(-1)
    mne_slice = time.perf_counter() - t1
    mne_subject = mne_slice * args.trials / x.shape[0]

    print(f"band-power benchmark (machine shared with other jobs; n_jobs={sig.n_jobs})")
    print(f"  recording per subject: {args.sites} sites x {args.trials} trials x 768 samples "
          f"= {n_signals} signals; {n_freqs} wavelets; {len(signals)} signals out")
    print(f"  subjects run: {args.n_subjects}; wall time {elapsed:.1f} s ({per_subject:.1f} s per subject, "
          f"{1e3 * per_subject / n_signals:.2f} ms per trial x site)")
    print(f"  extrapolated to {args.total_subjects} subjects: {per_subject * args.total_subjects / 60:.1f} min")
    print(f"  process max RSS {rss:.0f} MiB ({rss0:.0f} MiB before compute); bounded by one subject")
    if args.trace_memory:
        print(f"  peak traced numpy memory during compute: {peak / 2**20:.0f} MiB")
    print(f"  baseline mne.time_frequency.tfr_array_morlet on {x.shape[0]} trials: {mne_slice:.1f} s -> "
          f"{mne_subject:.0f} s per subject (full TFR array {n_signals * n_freqs * 768 * 8 / 2**30:.1f} GiB "
          "per subject if done at once)")
    print(f"  speed-up vs baseline: {mne_subject / per_subject:.1f}x")
    r = out["lowgamma@150-350"]
    print(f"  output check: lowgamma@150-350 data {r.data.shape} {r.data.dtype}, median ratio "
          f"{float(np.nanmedian(r.data)):.3f} (1/f noise, no response)")


if __name__ == "__main__":
    main()
