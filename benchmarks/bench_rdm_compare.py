"""Benchmark: Spearman comparison of one model RDM with many data RDMs.

250 stimuli (31,125 pairs), one model RDM against ``--rdms`` data RDMs (default 2,000;
the audit's scale is 10,000), through :func:`framework.numerics.rdm.prepare` and one
matrix product, the path every rsa comparison takes. The baseline in the same run is
the same computation with the ranks from ``scipy.stats.rankdata(axis=0)`` (what
``prepare`` used before :func:`framework.numerics.rdm.average_ranks`). Prints medians
of ``--repeats`` interleaved runs, the ratio, and that both agree bit for bit.

Run: ``python benchmarks/bench_rdm_compare.py [--rdms 2000] [--repeats 3] [--ties]``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.stats

from framework.numerics import rdm


def _compare(model: np.ndarray, data: np.ndarray, ranks) -> np.ndarray:
    def prep(v: np.ndarray) -> np.ndarray:
        r = ranks(v)
        z = r - r.mean(axis=0)
        return z / np.sqrt(np.einsum("ij,ij->j", z, z))

    return prep(model[:, None])[:, 0] @ prep(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rdms", type=int, default=2000)
    ap.add_argument("--stimuli", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ties", action="store_true", help="round the data to 1 decimal (many ties)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_pairs = args.stimuli * (args.stimuli - 1) // 2
    model = rng.random(n_pairs)
    data = rng.random((n_pairs, args.rdms))
    if args.ties:
        data = np.round(data, 1)
    ours = lambda v: rdm.average_ranks(v)  # noqa: E731
    scipys = lambda v: scipy.stats.rankdata(v, axis=0, method="average")  # noqa: E731
    times: dict[str, list[float]] = {"framework": [], "scipy rankdata": []}
    results = {}
    for _ in range(args.repeats):
        for name, ranks in (("framework", ours), ("scipy rankdata", scipys)):
            t0 = time.perf_counter()
            results[name] = _compare(model, data, ranks)
            times[name].append(time.perf_counter() - t0)
    print(f"{args.rdms} data RDMs x {n_pairs} pairs ({args.stimuli} stimuli), ties={args.ties}, "
          f"load {os.getloadavg()[0]:.2f}")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, t in med.items():
        print(f"  {name:15s} {t:7.2f} s (median of {args.repeats})")
    print(f"  speed-up over scipy rankdata: {med['scipy rankdata'] / med['framework']:.2f}x; identical: "
          f"{np.array_equal(results['framework'], results['scipy rankdata'])}")


if __name__ == "__main__":
    main()
