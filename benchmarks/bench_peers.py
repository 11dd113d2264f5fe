"""Benchmark: the project's numerics against the peer packages, on identical inputs, in one run.

Every row gives each contender the same arrays and prints the median wall time of
``--repeats`` interleaved runs (contender A, B, C, then A, B, C again ...), the
ratio ``fastest peer time / project time`` (>= 1.0: the project is at least as
fast) and, per peer, the largest absolute difference from the project's result.
Peers come from the ``bench`` extra (``pip install -e ".[test,bench]"``).

Rows
    RDMs
        Euclidean and correlation distance of float32 features (activations are
        stored as float32), narrow (1,000 stimuli x 50,000 features) and wide
        (100 x 800,000): :func:`framework.numerics.rdm.rdm` against
        ``scipy.spatial.distance.pdist``, rsatoolbox ``calc_rdm`` (whose
        "euclidean" is the squared distance divided by the number of features:
        compared as ``sqrt(d * n_features)``; it multiplies float32 features in
        float32) and mne-rsa ``compute_rdm``. One more row repeats the wide
        correlation RDM the way a cached layer is read: a float32 memory map, with
        BLAS allowed every core (the setting in which multithreaded BLAS updates
        of a small Gram matrix used to spin on a busy machine).
    RDM comparison
        One model RDM against 10,000 data RDMs of 250 stimuli (31,125 pairs),
        float64, Spearman, Pearson and Kendall tau-a:
        :func:`framework.numerics.rdm.compare` against rsatoolbox ``compare``
        ("spearman", "corr", "tau-a"), mne-rsa ``rsa`` and SciPy (``rankdata`` +
        ``pearsonr`` along an axis; ``kendalltau``, whose tau-b equals tau-a on data
        without ties). The project is given the transposed view of the same
        (n_rdms, n_pairs) array. Peers are timed on a subset of the data RDMs and
        scaled to the full count (the row's note says so): 2,000 for Spearman
        (``--spearman-subset``), 300 for tau-a (``--subset``).
    Ridge
        640 stimuli x 4,096 features x 200 sites (float64), 19 penalties
        (``logspace(-3, 6, 19)``), 10 outer folds. GCV row: the project's
        :func:`framework.numerics.ridge.fit_predict` (exact leave-one-out choice
        of a penalty per site) against scikit-learn ``RidgeCV(alpha_per_target=True)``
        (also exact leave-one-out). Inner-CV row: ``fit_predict(selection="inner-cv")``
        (5 inner folds) against himalaya ``RidgeCV`` and ``KernelRidgeCV`` given
        the same inner folds (himalaya's primal ``RidgeCV``, ~13 s a fold, is timed
        on ``--ridge-folds`` 2 outer folds and scaled). Agreement: held-out
        predictions of the outer test folds; the fraction of (fold, site) penalties
        equal to the project's is shown as "same alpha" (himalaya averages the
        inner folds' mean squared errors, the project pools the squared errors of
        all inner folds, so near-ties can choose differently).
    Band power
        250 epochs x 100 channels x 1 s at 1000 Hz (float64), the 21 wavelets of
        the low-gamma band (30-70 Hz, 7 cycles), mean power in the baseline and
        three windows: the project's :func:`plugins.signals._power.window_power`
        (one thread) against MNE's ``tfr_array_morlet(output="power")`` followed by
        the same window means (run on chunks of 10 epochs so the full time-frequency
        array never has to fit in memory; timed on ``--power-subset`` 50 epochs and
        scaled). Agreement is relative: max |difference| / max |MNE power| (the
        project computes in float32).

BLAS runs on ``--threads`` threads (default 1) for every contender; every package is
imported before the limit is set (a BLAS library loaded later keeps its default thread
count and, on a busy machine, can run ~30x slower). The machine may be shared: times
are medians, still indicative.

Run: ``python benchmarks/bench_peers.py [--rows rdm,compare,ridge,power] [--repeats 3]``
(the full run takes ~15-25 minutes; ``--quick`` shrinks every size for a smoke test).
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rsatoolbox
import scipy.linalg  # noqa: F401  (loaded before threadpool_limits so that the limit reaches its BLAS)
import scipy.stats
from himalaya.kernel_ridge import KernelRidgeCV
from himalaya.ridge import RidgeCV as HRidgeCV
from mne.time_frequency import tfr_array_morlet
from mne_rsa import compute_rdm, rsa
from rsatoolbox.rdm import RDMs
from rsatoolbox.rdm import compare as tb_compare
from scipy.spatial.distance import pdist
from sklearn.linear_model import RidgeCV
from threadpoolctl import threadpool_limits

from framework.numerics.rdm import compare, rdm
from framework.numerics.ridge import DEFAULT_ALPHAS, fit_predict
from framework.numerics.splits import kfold_splits
from plugins.signals._power import window_power


@dataclass
class Contender:
    """One implementation of a row: ``run()`` returns its result; ``scale`` multiplies its time."""

    name: str
    run: Callable[[], object]
    scale: float = 1.0
    note: str = ""


@dataclass
class Row:
    """A timed row: the project's time and result, and each peer's (time, max |diff|, note)."""

    name: str
    project: float
    peers: list[tuple[str, float, float, str]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return min(t for _, t, _, _ in self.peers) / self.project


def time_row(name: str, project: Contender, peers: list[Contender], agree: Callable[[object, object, str], float]
             | None, repeats: int, notes: dict[str, Callable[[object, object], str]] | None = None) -> Row:
    """Median time of ``repeats`` interleaved runs of every contender; agreement from the last run."""
    contenders = [project, *peers]
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for c in contenders:
            results.pop(c.name, None)
            gc.collect()
            t0 = time.perf_counter()
            results[c.name] = c.run()
            times[c.name].append((time.perf_counter() - t0) * c.scale)
    row = Row(name, float(np.median(times[project.name])))
    for c in peers:
        diff = agree(results[project.name], results[c.name], c.name) if agree else float("nan")
        note = c.note
        if notes and c.name in notes:
            note = "; ".join(s for s in (note, notes[c.name](results[project.name], results[c.name])) if s)
        row.peers.append((c.name, float(np.median(times[c.name])), diff, note))
    print(f"  {name}: project {row.project:.3f} s, " + ", ".join(f"{n} {t:.3f} s" for n, t, _, _ in row.peers),
          flush=True)
    return row


# -- RDMs ------------------------------------------------------------------------------------------
def rdm_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    shapes = [("narrow", 1000, 50_000), ("wide", 100, 800_000)]
    if args.quick:
        shapes = [("narrow", 200, 5_000), ("wide", 30, 80_000)]
    for label, n, p in shapes:
        x = np.random.default_rng(0).standard_normal((n, p), dtype=np.float32)
        for metric in ("euclidean", "correlation"):
            def tb(x=x, metric=metric, p=p) -> np.ndarray:
                d = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method=metric).get_vectors()[0]
                return np.sqrt(np.maximum(d, 0.0) * p) if metric == "euclidean" else d

            tb_note = "float32 BLAS" + ("; sqrt(d * n_features)" if metric == "euclidean" else "")
            rows.append(time_row(
                f"rdm {metric} {label} {n}x{p} f32",
                Contender("project", lambda x=x, metric=metric: rdm(x, metric)),
                [Contender("scipy pdist", lambda x=x, metric=metric: pdist(x, metric)),
                 Contender("rsatoolbox calc_rdm", tb, note=tb_note),
                 Contender("mne-rsa compute_rdm", lambda x=x, metric=metric: compute_rdm(x, metric))],
                lambda a, b, _: float(np.abs(np.asarray(a) - np.asarray(b)).max()), args.repeats))
        if label == "wide":
            rows.append(_wide_memmap_row(x, args))
        del x
        gc.collect()
    return rows


def _wide_memmap_row(x: np.ndarray, args: argparse.Namespace) -> Row:
    """The wide correlation RDM as a cached layer is read: a float32 memory map, BLAS on every core."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.npy")
        np.save(path, x)
        mm = np.load(path, mmap_mode="r")

        def threads(f: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with threadpool_limits(cores):
                    return f()
            return run

        def tb() -> np.ndarray:
            return rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(mm), method="correlation").get_vectors()[0]

        n, p = x.shape
        return time_row(
            f"rdm correlation wide {n}x{p} f32 memmap, {cores} BLAS threads",
            Contender("project", threads(lambda: rdm(mm, "correlation"))),
            [Contender("scipy pdist", threads(lambda: pdist(mm, "correlation"))),
             Contender("rsatoolbox calc_rdm", threads(tb), note="float32"),
             Contender("mne-rsa compute_rdm", threads(lambda: compute_rdm(mm, "correlation")))],
            lambda a, b, _: float(np.abs(np.asarray(a) - np.asarray(b)).max()), args.repeats)


# -- RDM comparison ------------------------------------------------------------------------------
def compare_rows(args: argparse.Namespace) -> list[Row]:
    n_stimuli, n_rdms = (60, 400) if args.quick else (args.stimuli, args.rdms)
    n_pairs = n_stimuli * (n_stimuli - 1) // 2
    rng = np.random.default_rng(1)
    model = rng.random(n_pairs)
    data = rng.random((n_rdms, n_pairs))  # one data RDM per row; the project is given the transposed view
    rows = []

    def agree(a, b, _name) -> float:
        a = np.asarray(a).reshape(-1)
        b = np.asarray(b).reshape(-1)
        return float(np.abs(a[:b.size] - b).max())

    for comparison, tb_method, scipy_name in (("spearman", "spearman", "rankdata+pearsonr"),
                                              ("pearson", "corr", "pearsonr"),
                                              ("kendall-tau-a", "tau-a", "kendalltau")):
        full = comparison != "kendall-tau-a"
        sub = min(n_rdms, {"spearman": args.spearman_subset, "pearson": n_rdms}.get(comparison, args.subset))
        part = data[:sub]
        scale = n_rdms / sub
        note = "" if sub == n_rdms else f"{sub} RDMs x {scale:g}"

        def ours(comparison=comparison) -> np.ndarray:
            return compare(model, data.T, comparison)[0]

        def tb(tb_method=tb_method, part=part) -> np.ndarray:
            return tb_compare(RDMs(model[None, :]), RDMs(part), method=tb_method)[0]

        def mr(comparison=comparison, part=part) -> np.ndarray:
            return rsa(list(part), model, metric=comparison)

        def sp(comparison=comparison, part=part) -> np.ndarray:
            if comparison == "spearman":
                return scipy.stats.pearsonr(scipy.stats.rankdata(model), scipy.stats.rankdata(part, axis=1),
                                            axis=1).statistic
            if comparison == "pearson":
                return scipy.stats.pearsonr(model, part, axis=1).statistic
            # tau-b, which is tau-a when neither vector has ties (continuous data)
            return np.array([scipy.stats.kendalltau(model, r).statistic for r in part])

        rows.append(time_row(
            f"compare {comparison} 1 vs {n_rdms} ({n_stimuli} stim)",
            Contender("project", ours),
            [Contender(f"rsatoolbox compare {tb_method}", tb, scale, note),
             Contender(f"mne-rsa rsa {comparison}", mr, scale, note),
             Contender(f"scipy {scipy_name}", sp, scale,
                       "; ".join(s for s in (note, "tau-b (= tau-a: no ties)" if not full else "") if s))],
            agree, args.repeats))
        gc.collect()
    return rows


# -- ridge ---------------------------------------------------------------------------------------
def ridge_rows(args: argparse.Namespace) -> list[Row]:
    n, p, j = (200, 800, 30) if args.quick else (640, 4096, 200)
    n_folds, inner = 10, 5
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, p))
    w = rng.standard_normal((p, j)) * rng.uniform(0, 0.05, j)
    y = x @ w + rng.standard_normal((n, j))
    alphas = DEFAULT_ALPHAS
    splits, _ = kfold_splits(n, n_splits=n_folds, seed=0)
    inner_splits = [kfold_splits(train.size, n_splits=inner, seed=1 + f)[0] for f, (train, _) in enumerate(splits)]

    def project(selection: str) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        def run() -> tuple[np.ndarray, np.ndarray]:
            pred = np.empty_like(y)
            chosen = np.empty((n_folds, j))
            for f, (train, test) in enumerate(splits):
                res = fit_predict(x[train], y[train], x[test], alphas=alphas, selection=selection,
                                  inner_splits=inner, seed=1 + f)
                pred[test] = res.test_predictions
                chosen[f] = res.alpha
            return pred, chosen
        return run

    def sk() -> tuple[np.ndarray, np.ndarray]:
        pred = np.empty_like(y)
        chosen = np.empty((n_folds, j))
        for f, (train, test) in enumerate(splits):
            model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x[train], y[train])
            pred[test] = model.predict(x[test])
            chosen[f] = model.alpha_
        return pred, chosen

    def hima(kernel: bool, folds: int = n_folds) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        def run() -> tuple[np.ndarray, np.ndarray]:
            pred = np.full_like(y, np.nan)
            chosen = np.full((n_folds, j), np.nan)
            for f, (train, test) in enumerate(splits[:folds]):
                cls = KernelRidgeCV(alphas=alphas, kernel="linear", cv=inner_splits[f], fit_intercept=True) \
                    if kernel else HRidgeCV(alphas=alphas, cv=inner_splits[f], fit_intercept=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = cls.fit(x[train], y[train])
                pred[test] = np.asarray(model.predict(x[test]))
                chosen[f] = np.asarray(model.best_alphas_)
            return pred, chosen
        return run

    def agree(a, b, _name) -> float:  # over the folds the peer ran
        return float(np.nanmax(np.abs(a[0] - b[0])))

    def same_alpha(a, b) -> str:
        ran = np.isfinite(b[1])
        return f"same alpha {np.mean(np.isclose(a[1][ran], b[1][ran], rtol=1e-6)):.1%}"

    n_sub = min(n_folds, args.ridge_folds)
    sub_note = "" if n_sub == n_folds else f"{n_sub} folds x {n_folds / n_sub:g}"

    shape = f"{n}x{p}x{j}, {alphas.size} alphas, {n_folds} folds"
    return [
        time_row(f"ridge GCV (LOO) {shape}", Contender("project", project("gcv")),
                 [Contender("sklearn RidgeCV (LOO)", sk)], agree, args.repeats,
                 {"sklearn RidgeCV (LOO)": same_alpha}),
        time_row(f"ridge inner-CV ({inner} folds) {shape}", Contender("project", project("inner-cv")),
                 [Contender("himalaya RidgeCV", hima(False, n_sub), n_folds / n_sub, sub_note),
                  Contender("himalaya KernelRidgeCV", hima(True))],
                 agree, args.repeats,
                 {"himalaya RidgeCV": same_alpha, "himalaya KernelRidgeCV": same_alpha}),
    ]


# -- band power ----------------------------------------------------------------------------------
def power_rows(args: argparse.Namespace) -> list[Row]:
    n_epochs, n_channels = (20, 10) if args.quick else (250, 100)
    sfreq, n_times = 1000.0, 1000  # -500 .. 500 ms
    freqs = np.linspace(30.0, 70.0, 21)
    n_cycles = np.full(freqs.size, 7.0)
    ranges = [(0, 400), (550, 750), (650, 850), (750, 950)]  # baseline -500..-100 ms; 50-250, 150-350, 250-450
    rng = np.random.default_rng(3)
    spec = np.fft.rfft(rng.standard_normal((n_epochs, n_channels, n_times)), axis=-1)
    f = np.fft.rfftfreq(n_times, 1 / sfreq)
    spec[..., 1:] /= np.sqrt(f[1:])
    spec[..., 0] = 0
    x = np.fft.irfft(spec, n=n_times, axis=-1) * 1e-5  # 1/f noise, volts
    del spec
    sub = min(n_epochs, args.power_subset)

    def ours() -> np.ndarray:
        return window_power(x.reshape(-1, n_times), sfreq, freqs, n_cycles, ranges).reshape(
            n_epochs, n_channels, freqs.size, len(ranges))

    def mne_run() -> np.ndarray:
        out = np.empty((sub, n_channels, freqs.size, len(ranges)))
        for e0 in range(0, sub, 10):
            p = tfr_array_morlet(x[e0:e0 + 10], sfreq, freqs, n_cycles=n_cycles, output="power",
                                 verbose="error")
            for r, (a, b) in enumerate(ranges):
                out[e0:e0 + 10, :, :, r] = p[..., a:b].mean(axis=-1)
        return out

    def agree(a, b, _name) -> float:
        return float(np.abs(a[:b.shape[0]] - b).max() / np.abs(b).max())

    note = "relative max|diff|" + ("" if sub == n_epochs else f"; {sub} epochs x {n_epochs / sub:g}")
    return [time_row(f"band power {n_epochs}x{n_channels}x{n_times} @1 kHz, {freqs.size} wavelets",
                     Contender("project", ours),
                     [Contender("mne tfr_array_morlet", mne_run, n_epochs / sub, note)], agree, args.repeats)]


def print_table(rows: list[Row]) -> None:
    w = max(len(r.name) for r in rows)
    wp = max(len(n) for r in rows for n, *_ in r.peers)
    head = f"{'row':{w}}  {'project s':>9}  {'ratio':>6}  {'peer':{wp}}  {'peer s':>8}  {'max|diff|':>9}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        for k, (name, t, diff, note) in enumerate(r.peers):
            lead = f"{r.name:{w}}  {r.project:9.3f}  {r.ratio:6.2f}" if k == 0 else f"{'':{w}}  {'':9}  {'':6}"
            print(f"{lead}  {name:{wp}}  {t:8.3f}  {diff:9.1e}  {note}")


ROWS = {"rdm": rdm_rows, "compare": compare_rows, "ridge": ridge_rows, "power": power_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads of every contender")
    ap.add_argument("--rdms", type=int, default=10_000, help="data RDMs of the comparison rows")
    ap.add_argument("--stimuli", type=int, default=250, help="stimuli of the comparison rows")
    ap.add_argument("--subset", type=int, default=300, help="data RDMs the peers' tau-a is timed on (scaled)")
    ap.add_argument("--spearman-subset", type=int, default=2000,
                    help="data RDMs the peers' Spearman is timed on (scaled)")
    ap.add_argument("--ridge-folds", type=int, default=2,
                    help="outer folds himalaya's primal RidgeCV is timed on (scaled to 10)")
    ap.add_argument("--power-subset", type=int, default=50, help="epochs MNE is timed on (scaled)")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = ap.parse_args()
    rows: list[Row] = []
    t0 = time.perf_counter()
    print(f"bench_peers: BLAS threads {args.threads}, repeats {args.repeats}, load {os.getloadavg()[0]:.2f}",
          flush=True)
    with threadpool_limits(args.threads):
        for key in args.rows.split(","):
            rows += ROWS[key.strip()](args)
    print(f"\nmedian of {args.repeats} interleaved repeats; ratio = fastest peer time / project time "
          f"(>= 1: project at least as fast); load {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s")
    print_table(rows)


if __name__ == "__main__":
    main()
