"""Benchmark the content checksums of the caches (not run by pytest).

Writes a float32 file of ``--size-mb`` MB (default 1024) and hashes it, read in
:data:`framework.fileio.CHUNK_BYTES` chunks as :func:`framework.fileio.file_checksum` does,
with each candidate: ``xxhash.xxh3_128`` (if installed), ``hashlib.blake2b``,
``hashlib.sha256`` and ``zlib.crc32``. Prints MB/s (1 MB = 10**6 bytes) with the file in the
page cache ("warm", the best of ``--repeats``) and, for the chosen hash and sha256, after
``posix_fadvise(DONTNEED)`` has dropped the file's pages ("cold": includes reading the disk).
The last line is the cost of verifying the demo's activation cache (``--cache-gb``, 5.1 GB
for the 9 demo models) with the chosen hash.

Usage::

    python benchmarks/bench_cache_checksum.py [--size-mb 1024] [--repeats 3] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.fileio import CHECKSUM_ALGORITHM, CHUNK_BYTES, file_checksum, forget_checksums, hash_file  # noqa: E402


class _Crc32:
    """hashlib-like wrapper of ``zlib.crc32``."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


def _candidates() -> dict:
    out = {}
    try:
        import xxhash

        out["xxh3_128"] = xxhash.xxh3_128
    except ImportError:
        print("xxhash not installed: skipping xxh3_128")
    out["blake2b"] = hashlib.blake2b
    out["sha256"] = hashlib.sha256
    out["crc32"] = _Crc32
    return out


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the test file (default: the system temp)")
    parser.add_argument("--cache-gb", type=float, default=5.1, help="size of the demo's activation cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "layer.npy"
        n = args.size_mb * 10**6 // 4
        rng = np.random.default_rng(0)
        with open(path, "wb") as fh:
            for start in range(0, n, 1 << 24):
                fh.write(rng.standard_normal(min(1 << 24, n - start), dtype=np.float32).tobytes())
        size = path.stat().st_size
        print(f"file: {size / 1e6:.0f} MB float32; chunk {CHUNK_BYTES >> 20} MiB; chosen: {CHECKSUM_ALGORITHM}")
        hash_file(path, hashlib.sha256)  # warm the page cache
        rates = {}
        for name, new in _candidates().items():
            best = min(_timed(hash_file, path, new) for _ in range(args.repeats))
            rates[name] = size / 1e6 / best
            print(f"warm  {name:9s} {rates[name]:8.0f} MB/s")
        for name, fn, fn_args in ((f"{CHECKSUM_ALGORITHM} (framework)", file_checksum, (path,)),
                                  ("sha256", hash_file, (path, hashlib.sha256))):
            _drop_cache(path)
            forget_checksums()
            print(f"cold  {name:9s} {size / 1e6 / _timed(fn, *fn_args):8.0f} MB/s (disk read included)")
        file_checksum(path)  # warm again
        rate = size / 1e6 / min(_timed(_fresh_checksum, path) for _ in range(args.repeats))
        gb = args.cache_gb
        print(f"framework.fileio.file_checksum (warm): {rate:.0f} MB/s; verifying a {gb} GB cache costs "
              f"{gb * 1e3 / rate:.1f} s (sha256 would: {gb * 1e3 / rates['sha256']:.1f} s)")


def _fresh_checksum(path: Path) -> str:
    forget_checksums()  # else the remembered hash of the unchanged file is returned at once
    return file_checksum(path)


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
