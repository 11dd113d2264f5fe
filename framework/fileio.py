"""Files the framework writes and later trusts: atomic writes, content checksums, temporary folders.

Atomic writes
    :func:`atomic_file`: a temporary file in the target's folder, then ``os.replace``.
    Readers never see a half-written file, and an interrupted write leaves the old
    file (or none) behind. The result gets the usual permissions (``0o666 & ~umask``).

Content checksums of a cache folder
    :func:`write_checksums` records the size and :data:`CHECKSUM_ALGORITHM` hash of every
    file directly in a folder (its ``meta.json`` included) in :data:`CHECKSUMS_FILE`;
    :func:`verify_checksums` raises :class:`ChecksumError` naming each file that is missing,
    has another size or other content. A file's hash is remembered per process, keyed by its
    path and ``(device, inode, size, mtime, ctime)``, so a folder is read in full once per
    process and a later change to a file (new mtime / ctime) is caught by the next check.
    A hash taken less than :data:`RACY_NS` after the file's last change is not reused (file
    times are coarse, so a change within that tick could keep the same times; this is git's
    "racily clean" rule).

Temporary folders
    :func:`make_temp_dir` names a folder ``<prefix><tag>-<host>-<pid>-<random>``;
    :func:`clean_stale_temp_dirs` removes those of dead processes of this host or older than
    :data:`STALE_AGE_S`; :func:`discard_dir` moves a folder aside and deletes it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from framework.errors import DataError

log = logging.getLogger("framework.fileio")

#: File of a folder's checksums (written by :func:`write_checksums`).
CHECKSUMS_FILE = "checksums.json"
#: Hash of the checksums: 128-bit XXH3 (``xxhash`` package), ~10 GB/s here against ~1.3 GB/s for
#: SHA-256 (``benchmarks/bench_cache_checksum.py``). It detects accidental corruption and edits,
#: not deliberate forgery (nor would any hash stored beside the data).
CHECKSUM_ALGORITHM = "xxh3_128"
#: Bytes read per call when hashing (1 MiB stays in the CPU cache: fastest in the benchmark).
CHUNK_BYTES = 1 << 20
#: A remembered hash is reused only if taken more than this many ns after the file's last change.
RACY_NS = 2_000_000_000
#: A temporary folder older than this (seconds) is stale even if its process may live.
STALE_AGE_S = 24 * 3600.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------
# checksums
# ----------------------------------------------------------------------------------------
class ChecksumError(DataError):
    """A checked folder has no usable checksums, or its files differ from them.

    ``problems`` lists one short sentence per file (``"layer_000.npy: content differs ..."``).
    """

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = Path(folder)
        self.problems = list(problems)
        super().__init__(f"'{self.folder}' does not match its checksums: {'; '.join(self.problems)}")


def new_hasher() -> Any:
    """A fresh hash object of :data:`CHECKSUM_ALGORITHM` (``update(bytes)``, ``hexdigest()``)."""
    try:
        import xxhash
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("Cache checksums need the 'xxhash' package, which is missing; "
                        "install it with `pip install xxhash`.") from None
    return xxhash.xxh3_128()


_memo: dict[str, tuple[tuple[int, ...], str, int]] = {}  # path -> (stat fingerprint, hex, hashed at ns)
_memo_lock = threading.Lock()


def _fingerprint(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def forget_checksums() -> None:
    """Forget the hashes remembered in this process (the next checks read every file again)."""
    with _memo_lock:
        _memo.clear()


def hash_file(path: str | Path, new: Callable[[], Any]) -> str:
    """Hex digest of the bytes of ``path`` with a fresh hasher ``new()`` (hashlib / xxhash
    interface), read in :data:`CHUNK_BYTES` chunks into one reused buffer; nothing remembered."""
    h = new()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def file_checksum(path: Path) -> str:
    """The :data:`CHECKSUM_ALGORITHM` hex digest of the bytes of ``path``.

    Remembered per process (see the module docstring): an unchanged file is hashed once.
    """
    key = os.path.abspath(path)
    st = os.stat(key)
    fp = _fingerprint(st)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None and hit[0] == fp and hit[2] - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
        return hit[1]
    hashed_at = time.time_ns()
    digest = hash_file(key, new_hasher)
    if _fingerprint(os.stat(key)) == fp:  # not changed while being read
        with _memo_lock:
            _memo[key] = (fp, digest, hashed_at)
    return digest


def write_checksums(folder: Path, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Record the size and hash of files of ``folder`` in its :data:`CHECKSUMS_FILE` (atomically).

    Parameters
    ----------
    folder : Path
    names : iterable of str, optional
        File names inside ``folder``; default every regular file directly in it except
        :data:`CHECKSUMS_FILE` and hidden files (names starting with ``"."``).

    Returns
    -------
    dict
        ``{name: {"size": bytes, "hash": hex}}`` as written.
    """
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith("."))
    files = {name: {"size": (folder / name).stat().st_size, "hash": file_checksum(folder / name)}
             for name in names}
    with atomic_file(folder / CHECKSUMS_FILE, "w") as fh:
        json.dump({"algorithm": CHECKSUM_ALGORITHM, "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    return files


def verify_checksums(folder: Path, names: Iterable[str] | None = None) -> None:
    """Check files of ``folder`` against its :data:`CHECKSUMS_FILE`.

    Parameters
    ----------
    folder : Path
    names : iterable of str, optional
        Check only these recorded files; default every recorded file.

    Raises
    ------
    ChecksumError
        When the checksums file is missing or unreadable (e.g. written by an older version:
        nothing can be verified), or a file is missing, has another size or other content.
    """
    folder = Path(folder)
    try:
        record = json.loads((folder / CHECKSUMS_FILE).read_text())
        algorithm, files = record["algorithm"], record["files"]
        if not isinstance(files, dict):
            raise TypeError(f"'files' is {type(files).__name__}, expected a mapping")
    except FileNotFoundError:
        raise ChecksumError(folder, [f"no {CHECKSUMS_FILE} (written by an older version, so its content "
                                     "cannot be verified)"]) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChecksumError(folder, [f"{CHECKSUMS_FILE} is unreadable ({type(exc).__name__}: {exc})"]) from None
    if algorithm != CHECKSUM_ALGORITHM:
        raise ChecksumError(folder, [f"{CHECKSUMS_FILE} uses hash '{algorithm}', expected '{CHECKSUM_ALGORITHM}'"])
    wanted = list(files) if names is None else list(names)
    problems = []
    for name in wanted:
        path = folder / name
        entry = files.get(name)
        if entry is None:
            problems.append(f"{name}: not recorded in {CHECKSUMS_FILE}")
            continue
        try:
            size = path.stat().st_size
            if size != entry["size"]:
                problems.append(f"{name}: {size} bytes, recorded {entry['size']} (truncated or replaced)")
            elif file_checksum(path) != entry["hash"]:
                problems.append(f"{name}: content differs from the recorded {CHECKSUM_ALGORITHM} hash "
                                "(bytes changed after it was written)")
        except FileNotFoundError:
            problems.append(f"{name}: missing")
        except OSError as exc:
            problems.append(f"{name}: unreadable ({exc})")
    if problems:
        raise ChecksumError(folder, problems)


# ----------------------------------------------------------------------------------------
# temporary folders
# ----------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_temp_dir(root: Path, prefix: str, tag: str) -> Path:
    """Create ``root/<prefix><tag>-<host>-<pid>-<8 hex>`` (``tag`` without ``"-"``) and return it."""
    if "-" in tag:
        raise ValueError(f"Temporary folder tag '{tag}' must not contain '-'.")
    tmp = Path(root) / f"{prefix}{tag}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def clean_stale_temp_dirs(root: Path, prefix: str, *, max_age_s: float = STALE_AGE_S) -> list[Path]:
    """Remove folders of :func:`make_temp_dir` under ``root`` whose process is dead or that are old.

    A folder named by this host whose pid no longer runs, or older than ``max_age_s`` seconds
    (modification time; any host, and names in another pattern, e.g. of older versions), is
    deleted. Returns the removed folders.
    """
    removed = []
    host = socket.gethostname()
    now = time.time()
    for tmp in Path(root).glob(prefix + "*"):
        try:
            age = now - tmp.stat().st_mtime
        except OSError:
            continue
        parts = tmp.name[len(prefix):].split("-")
        try:
            dead = "-".join(parts[1:-2]) == host and not pid_alive(int(parts[-2]))
        except (ValueError, IndexError):
            dead = False
        if tmp.is_dir() and (dead or age > max_age_s):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log.info("Removed stale temporary folder '%s'.", tmp)
    return removed


def discard_dir(path: Path, prefix: str, tag: str) -> None:
    """Move folder ``path`` aside (a temporary name of this process) and delete it; never raises.

    The move is atomic, so the folder's name is free at once even if deleting is slow or
    interrupted (the leftover is then a stale temporary folder). Missing ``path``: nothing.
    Where the move is impossible (e.g. no write access), the folder is deleted in place as far
    as possible.
    """
    path = Path(path)
    try:
        trash = make_temp_dir(path.parent, prefix, tag)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        os.replace(path, trash)  # replaces the empty folder just made
    shutil.rmtree(trash, ignore_errors=True)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
