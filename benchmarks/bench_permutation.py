"""Benchmark: the RSA permutation test at the scale of Kuzovkin et al. 2018.

250 stimuli, 1,000 sites (``--sites 12845`` for the 12,845 site-signals of the
published study, run in full), 9 layers, 10,000 permutations, Spearman on
Euclidean RDMs, one-sided, alpha = 0.001, early stopping on, through the path of
``site_rsa``: site RDMs ranked block by block by
:func:`framework.numerics.rdm.site_rdm_blocks` (``RANK_THREADS`` threads, up to
``PERMUTATION_PREFETCH`` blocks ranked ahead while the test runs), then
:func:`permutation_test`.
Prints the wall time split into the time the test waited for ranked blocks and the
rest, the ranking alone (timed again afterwards, without the test), peak memory
(``resource.getrusage``), the time per 1,000 sites, and the speed-up over the
straightforward approach (per permutation and cell: permute the site RDM, take its
upper triangle and call ``scipy.stats.spearmanr``), timed on a subset of 200
permutations of one cell and extrapolated, both to the full test and to the
permutations early stopping actually used. Also prints the machine load
(``os.getloadavg``): the machine may be shared.

``--reference FILE --save-reference`` stores the results (observed values,
p-values, counts); ``--reference FILE`` alone compares the results with that file
and prints whether the decisions (p <= alpha per site x layer), the p-values and
the counts are identical, and the largest difference of the observed values.

Run: ``python benchmarks/bench_permutation.py [--sites 1000] [--signal-fraction 0.05] [--reference FILE]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import scipy.stats

from framework.numerics import rdm
from framework.numerics.permutation import draw_permutations, permutation_test
from framework.numerics.rsa import PERMUTATION_BLOCK_BYTES, PERMUTATION_PREFETCH, RANK_THREADS

N_STIMULI, N_LAYERS, N_PERM, PUBLISHED_SITES = 250, 9, 10_000, 12_845


def make_data(n_sites: int, signal_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Layer RDMs (n_pairs, 9) and responses (250, n_sites); a fraction of sites follow a layer."""
    rng = np.random.default_rng(seed)
    feats = [rng.normal(size=(N_STIMULI, 512)).astype(np.float32)]
    for _ in range(N_LAYERS - 1):
        w = rng.normal(size=(512, 512)).astype(np.float32) / np.sqrt(512)
        feats.append(np.maximum(feats[-1] @ w, 0) + 0.5 * rng.normal(size=(N_STIMULI, 512)).astype(np.float32))
    layers = np.column_stack([rdm.rdm(f, "euclidean") for f in feats])
    resp = rng.normal(size=(N_STIMULI, n_sites))
    n_sig = int(round(signal_fraction * n_sites))
    for s in range(n_sig):                       # signal sites: a noisy readout of one layer's first PC-ish axis
        f = feats[s % N_LAYERS]
        resp[:, s] = (f @ rng.normal(size=f.shape[1])) / np.sqrt(f.shape[1]) * 0.6 + resp[:, s]
    return layers, resp.astype(np.float32)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def baseline_seconds_per_cell_perm(layers: np.ndarray, resp: np.ndarray, n_perm: int = 200) -> float:
    """Straightforward approach on one cell: permute, take upper triangle, spearmanr."""
    perms = draw_permutations(0, N_STIMULI, n_perm)
    iu, ju = np.triu_indices(N_STIMULI, 1)
    r = resp[:, 0].astype(np.float64)
    d = np.abs(r[:, None] - r[None, :])
    t0 = time.perf_counter()
    for p in perms:
        dp = d[np.ix_(p, p)]
        scipy.stats.spearmanr(dp[iu, ju], layers[:, 0])
    return (time.perf_counter() - t0) / n_perm


def compare_or_save(res, args) -> None:
    """Write the result to ``args.reference`` or compare it with the one stored there (printed)."""
    fields = ("observed", "p", "n_exceed", "n_used", "stopped")
    if args.save_reference:
        np.savez(args.reference, sites=args.sites, signal_fraction=args.signal_fraction,
                 **{f: getattr(res, f) for f in fields})
        print(f"reference saved to {args.reference}")
        return
    ref = np.load(args.reference)
    if int(ref["sites"]) != args.sites or float(ref["signal_fraction"]) != args.signal_fraction:
        raise SystemExit(f"reference {args.reference} is for {int(ref['sites'])} sites, signal fraction "
                         f"{float(ref['signal_fraction'])}; got {args.sites}, {args.signal_fraction}")
    print(f"comparison with the reference {args.reference} (saved with --save-reference):")
    same_dec = np.array_equal(ref["p"] <= 0.001, res.p <= 0.001)
    print(f"  decisions (p <= 0.001)  {'IDENTICAL' if same_dec else 'DIFFERENT'}: "
          f"{int((ref['p'] <= 0.001).sum())} significant before, {int((res.p <= 0.001).sum())} now, "
          f"{int(((ref['p'] <= 0.001) != (res.p <= 0.001)).sum())} of {res.p.size} cells differ")
    for f in ("p", "n_exceed", "n_used", "stopped"):
        a, b = ref[f], getattr(res, f)
        same = np.array_equal(a, b, equal_nan=(f == "p"))
        print(f"  {f:<22s} {'IDENTICAL' if same else 'DIFFERENT'} (bitwise; "
              f"{int((~((a == b) | (np.isnan(a) & np.isnan(b)) if f == 'p' else a == b)).sum())} cells differ)")
    d = np.abs(ref["observed"] - res.observed)
    print(f"  observed r             max |difference| {np.nanmax(d):.3g} "
          f"({'bit-identical' if np.array_equal(ref['observed'], res.observed) else 'not bit-identical'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--signal-fraction", type=float, default=0.05)
    ap.add_argument("--no-early-stopping", action="store_true")
    ap.add_argument("--reference", default=None,
                    help="npz of results to compare with (written instead with --save-reference)")
    ap.add_argument("--save-reference", action="store_true")
    args = ap.parse_args()

    layers, resp = make_data(args.sites, args.signal_fraction)
    z_layers = rdm.prepare(layers, "spearman")
    load0 = os.getloadavg()
    rss0 = peak_rss_mb()
    prep_time = 0.0
    data = resp.astype(np.float64)                       # as check_responses gives it to site_rsa

    def blocks():
        return rdm.site_rdm_blocks(data, "spearman", PERMUTATION_BLOCK_BYTES, n_threads=RANK_THREADS,
                                   prefetch=PERMUTATION_PREFETCH)

    def timed_blocks():
        nonlocal prep_time
        gen = blocks()
        while True:
            t = time.perf_counter()
            block = next(gen, None)
            prep_time += time.perf_counter() - t
            if block is None:
                return
            yield block

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = permutation_test(z_layers, timed_blocks(), N_STIMULI, n_permutations=N_PERM, seed=0, alpha=0.001,
                           early_stopping=not args.no_early_stopping)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_user, cpu_sys = cpu1.ru_utime - cpu0.ru_utime, cpu1.ru_stime - cpu0.ru_stime
    rss1 = peak_rss_mb()
    load1 = os.getloadavg()
    t_rank = time.perf_counter()
    for _ in blocks():
        pass
    rank_alone = time.perf_counter() - t_rank
    n_cells = res.p.size
    sig = res.p <= 0.001
    per_1000 = elapsed * 1000 / args.sites
    print(f"permutation test: {N_STIMULI} stimuli, {args.sites} sites, {N_LAYERS} layers, {N_PERM} permutations, "
          f"signal fraction {args.signal_fraction}, early stopping {not args.no_early_stopping}")
    target = " (target < 40 s)" if args.sites == PUBLISHED_SITES else ""
    print(f"  wall time            {elapsed:8.2f} s{target} (waiting for ranked site RDMs {prep_time:.2f} s, "
          f"test {elapsed - prep_time:.2f} s; {RANK_THREADS} ranking threads, overlapping the test)")
    print(f"  CPU time             {cpu_user + cpu_sys:8.2f} s (user {cpu_user:.2f} s + system {cpu_sys:.2f} s, "
          "all threads, ranking and test)")
    print(f"  ranking alone        {rank_alone:8.2f} s (all {args.sites} site RDMs again, without the test)")
    print(f"  per 1,000 sites      {per_1000:8.2f} s (target 20 s)")
    print(f"  peak RSS             {rss1:8.0f} MB (process peak; {rss0:.0f} MB before the test; target < 2 GB)")
    print(f"  cells                {n_cells}; significant {int(sig.sum())}; stopped early {int(res.stopped.sum())}")
    print(f"  permutations used    mean {res.n_used.mean():.0f} per cell, total {int(res.n_used.sum()):,} "
          f"(of {n_cells * N_PERM:,}); sites run to the end {int((res.n_used.max(axis=1) == N_PERM).sum())}")
    if args.sites != PUBLISHED_SITES:
        full = PUBLISHED_SITES / 1000 * per_1000
        print(f"extrapolated to {PUBLISHED_SITES:,} site-signals: {full:,.0f} s = {full / 60:.1f} min "
              f"(run --sites {PUBLISHED_SITES} to measure it)")
    per = baseline_seconds_per_cell_perm(layers, resp)
    base = per * n_cells * N_PERM
    print(f"baseline (scipy.stats.spearmanr per permutation per cell): {per * 1e3:.2f} ms per call, "
          f"extrapolated {base:,.0f} s = {base / 3600:.1f} h for {n_cells} cells x {N_PERM} permutations")
    print(f"  speed-up             {base / elapsed:,.0f}x")
    print(f"  baseline, same early stopping (only the permutations used): {per * res.n_used.sum():,.0f} s; "
          f"speed-up {per * res.n_used.sum() / elapsed:,.0f}x")
    if args.reference:
        compare_or_save(res, args)
    print(f"machine load average (1 min) {load0[0]:.2f} before, {load1[0]:.2f} after, on {os.cpu_count()} cores "
          "(shared with other jobs)")


if __name__ == "__main__":
    main()
