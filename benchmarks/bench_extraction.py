"""Benchmark activation extraction (not run by pytest).

(a) Throughput of ``ActivationCache.load`` (preprocessing, hooks, scratch files, the per-layer
    statistics the default metric needs: the centred Gram matrix for rsa) against a bare
    ``torch`` forward loop over the same already-preprocessed batches (baseline), and against
    the same bare loop plus preprocessing; also with ``keep_features`` (the raw features become a
    durable cache entry). Interleaved repeats, best of each. Target: within 10 % of the baseline.
(b) Peak resident memory (``resource.getrusage``, in a fresh subprocess) of extracting every
    default layer of VGG-16 (random init) for ``--n-stimuli`` stimuli at 224 px and computing the
    statistics of rsa (Euclidean and correlation distances) and cka, against the bytes an
    all-in-RAM approach would need (sum of layer widths x n_stimuli x 4). Target: < 3 GB.

Usage::

    python benchmarks/bench_extraction.py [--n-stimuli 1000] [--n-throughput 128] [--model alexnet]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stimuli(n: int, size: int, seed: int = 0):
    from framework.types import StimulusSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return StimulusSet(ids=tuple(f"s{i:05d}" for i in range(n)), images=images)


def throughput(arch: str, n: int, batch_size: int, repeats: int = 5) -> dict[str, float]:
    import torch

    from framework.activation_cache import ActivationCache
    from framework.layer_stats import Need
    from plugins.models.torchvision_models import TorchvisionModel

    model = TorchvisionModel(name=arch, arch=arch, weights="random", seed=0)
    layers = model.default_layers()
    stimuli = _stimuli(n, 256)
    net = model._ready()
    model.weights_info()
    # warm-up (allocator, thread pool)
    with torch.inference_mode():
        net(model.preprocess([stimuli.image(0), stimuli.image(1)]))

    t_pre, t_bare, t_stats, t_keep = [], [], [], []
    needs = [Need.gram(centered=True)]
    for _ in range(repeats):  # interleaved repeats, best of each (the machine is shared)
        t0 = time.perf_counter()
        batches = [model.preprocess([stimuli.image(i) for i in range(s, min(s + batch_size, n))])
                   for s in range(0, n, batch_size)]
        t_pre.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                net(x)
        t_bare.append(time.perf_counter() - t0)
        del batches

        for keep, times in ((False, t_stats), (True, t_keep)):
            with tempfile.TemporaryDirectory(prefix="bench-acts-") as root:
                cache = ActivationCache(Path(root))
                key = cache.key(model.name, {"arch": arch}, model.weights_info(), layers, model.preprocessing(),
                                stimuli.digest(), None)
                t0 = time.perf_counter()
                cache.load(model, stimuli, layers, key=key, needs=needs, keep_features=keep, batch_size=batch_size)
                times.append(time.perf_counter() - t0)
    t_pre, t_bare, t_stats, t_keep = min(t_pre), min(t_bare), min(t_stats), min(t_keep)
    return {"n": n, "bare_forward_s": t_bare, "preprocess_s": t_pre, "bare_plus_preprocess_s": t_bare + t_pre,
            "stats_s": t_stats, "keep_s": t_keep,
            "ratio_vs_bare": t_stats / t_bare, "ratio_vs_bare_plus_preprocess": t_stats / (t_bare + t_pre),
            "keep_ratio_vs_bare_plus_preprocess": t_keep / (t_bare + t_pre)}


def _peak_child(n: int, batch_size: int, root: str) -> None:
    """Run in a subprocess: extract VGG-16 default layers, print JSON with ru_maxrss figures."""
    from framework.activation_cache import ActivationCache
    from framework.layer_stats import Need
    from plugins.models.torchvision_models import TorchvisionModel

    model = TorchvisionModel(name="vgg16", arch="vgg16", weights="random", seed=0)
    layers = model.default_layers()
    shapes = model.layer_shapes()
    stimuli = _stimuli(n, 96)
    info = model.weights_info()
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cache = ActivationCache(Path(root))
    key = cache.key(model.name, {"arch": "vgg16"}, info, layers, model.preprocessing(), stimuli.digest(), None)
    needs = [Need.gram(centered=True), Need.gram(centered=False)]   # rsa (both distances), cka, alignment
    t0 = time.perf_counter()
    acts, _ = cache.load(model, stimuli, layers, key=key, needs=needs, batch_size=batch_size)
    elapsed = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    naive = sum(int(np.prod(shapes[x])) for x in layers) * n * 4
    on_disk = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
    print(json.dumps({"n": n, "batch_size": batch_size, "peak_rss_bytes": rss_peak, "rss_after_model_bytes": rss_model,
                      "naive_bytes": naive, "on_disk_bytes": on_disk, "seconds": elapsed,
                      "layers": {x: acts.n_features(x) for x in layers}}))


def peak_memory(n: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-acts-") as root:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), str(batch_size), root],
                             check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-stimuli", type=int, default=1000, help="stimuli for the VGG-16 memory run")
    parser.add_argument("--n-throughput", type=int, default=128, help="stimuli for the throughput run")
    parser.add_argument("--model", default="alexnet", help="torchvision arch for the throughput run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _peak_child(int(args.child[0]), int(args.child[1]), args.child[2])
        return
    gb = 1024 ** 3
    t = throughput(args.model, args.n_throughput, args.batch_size)
    print(f"(a) {args.model}, {t['n']} stimuli, batch {args.batch_size}, all default layers")
    print(f"    bare forward over preprocessed batches (baseline): {t['bare_forward_s']:.2f} s "
          f"({t['n'] / t['bare_forward_s']:.1f} img/s)")
    print(f"    preprocessing alone: {t['preprocess_s']:.2f} s")
    print(f"    ActivationCache.load, statistics of rsa (default): {t['stats_s']:.2f} s "
          f"({t['n'] / t['stats_s']:.1f} img/s)")
    print(f"    ActivationCache.load, raw features kept as well: {t['keep_s']:.2f} s")
    print(f"    ratio vs bare forward: {t['ratio_vs_bare']:.3f}; vs bare forward + preprocessing: "
          f"{t['ratio_vs_bare_plus_preprocess']:.3f} (target <= 1.10); keeping the features: "
          f"{t['keep_ratio_vs_bare_plus_preprocess']:.3f}")
    m = peak_memory(args.n_stimuli, args.batch_size)
    print(f"(b) vgg16 random init, {m['n']} stimuli at 224 px, 9 default layers, batch {m['batch_size']}: "
          f"{m['seconds']:.1f} s")
    print(f"    peak RSS {m['peak_rss_bytes'] / gb:.2f} GB (model alone {m['rss_after_model_bytes'] / gb:.2f} GB); "
          f"target < 3 GB")
    print(f"    naive all-in-RAM would need {m['naive_bytes'] / gb:.2f} GB of activations; "
          f"left in the cache {m['on_disk_bytes'] / 2**20:.1f} MB (statistics)")


if __name__ == "__main__":
    main()
