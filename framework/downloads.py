"""Fetch public data files into the user cache, checked against pinned SHA-256 digests.

Built on `pooch <https://www.fatiando.org/pooch>`_ (as MNE-Python fetches its sample data):
a file is downloaded to a temporary name beside its destination and moved into place only
when its SHA-256 matches the pinned one, so a truncated, corrupted or changed download never
lands in the cache. Files go to ``<user cache>/downloads/<dataset>/``
(:func:`downloads_dir`; the user cache is :func:`framework.paths.user_cache_dir`).

* :func:`fetch` - one file (:class:`RemoteFile`); a file already in the cache is re-hashed and
  used without touching the network; a damaged one is replaced.
* :func:`fetch_members` - files inside a ZIP archive whose own digest is not known: the archive
  is fetched unchecked, and each wanted member is extracted and checked against its pinned digest.

Failure policy: a download that fails (network error, wrong digest, unreadable archive) is
retried once, then reported as one :class:`~framework.errors.DataError` line naming the URL,
the cache path and the caller's hint (how to use a local copy instead). Before the first
download a TCP connection to the host is tried with a short timeout
(:data:`PROBE_TIMEOUT_S`), so a firewalled or offline machine fails within seconds instead
of hanging; every socket operation of a download times out after :func:`download_timeout`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from framework.errors import ConfigError, DataError
from framework.paths import user_cache_dir

__all__ = ["RemoteFile", "downloads_dir", "download_timeout", "fetch", "fetch_members", "host_unreachable",
           "sha256_of"]

log = logging.getLogger("framework.downloads")

#: Seconds every socket operation of a download may take (``$FRAMEWORK_DOWNLOAD_TIMEOUT`` overrides it).
DOWNLOAD_TIMEOUT_S = 20.0
#: Seconds the offline probe waits for a TCP connection to the host.
PROBE_TIMEOUT_S = 5.0
#: Attempts per file: the first download and one retry.
ATTEMPTS = 2
#: Seconds a successful probe of a host is trusted (a dataset fetches many files from one host).
_PROBE_TTL_S = 60.0
_probed: dict[tuple[str, int], float] = {}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One public file: where it is published and what its bytes hash to.

    Parameters
    ----------
    url : str
        Download address (``https://...``; ``http://`` for local test servers).
    name : str
        Path relative to the dataset's download folder, ``/``-separated (e.g.
        ``"92images/fmri_IT_RDMs.npz"``).
    sha256 : str or None
        Hex SHA-256 of the file's bytes. None only for an archive whose digest is not
        known; its members are then checked instead (:func:`fetch_members`).
    """

    url: str
    name: str
    sha256: str | None


def downloads_dir(dataset: str) -> Path:
    """``<user cache>/downloads/<dataset>``: where :func:`fetch` puts the files of ``dataset`` (not created)."""
    return user_cache_dir() / "downloads" / dataset


def download_timeout() -> float:
    """Seconds per socket operation: ``$FRAMEWORK_DOWNLOAD_TIMEOUT`` if set, else :data:`DOWNLOAD_TIMEOUT_S`.

    Raises
    ------
    ConfigError
        The variable is set but is not a finite number of seconds > 0.
    """
    raw = os.environ.get("FRAMEWORK_DOWNLOAD_TIMEOUT")
    if raw is None or not raw.strip():
        return DOWNLOAD_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(f"$FRAMEWORK_DOWNLOAD_TIMEOUT is {raw!r}; expected a number of seconds > 0 (the "
                          f"download timeout). Set e.g. FRAMEWORK_DOWNLOAD_TIMEOUT={DOWNLOAD_TIMEOUT_S:g}, or unset "
                          "it for the default.")
    return value


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of the bytes of ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def host_unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` s, else why not.

    Parameters
    ----------
    url : str
    timeout : float, optional
        Seconds; default the smaller of :data:`PROBE_TIMEOUT_S` and :func:`download_timeout`.
    """
    import urllib.request

    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return f"no host in {url!r}"
    proxy = urllib.request.getproxies().get(parsed.scheme)
    via = ""
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            host, port, via = p.hostname, p.port or (443 if p.scheme == "https" else 80), " (proxy)"
    if time.monotonic() - _probed.get((host, port), -_PROBE_TTL_S) < _PROBE_TTL_S:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout or min(PROBE_TIMEOUT_S, download_timeout())):
            _probed[(host, port)] = time.monotonic()
            return None
    except OSError as exc:
        return f"{host}:{port}{via} unreachable: {_one_line(exc, 100)}"


def _failure(what: str, url: str, target: Path, reason: str, hint: str) -> DataError:
    """The one error line of a failed fetch."""
    return DataError(f"Cannot download {what} from {url} into '{target}' ({reason}).{' ' + hint if hint else ''}")


def _cached_ok(path: Path, sha256: str, hasher: Callable[[Path], str]) -> bool:
    """Whether ``path`` exists with the pinned digest; a damaged file is removed (and reported)."""
    if not path.is_file():
        return False
    got = hasher(path)
    if got == sha256:
        return True
    log.warning("Cached file '%s' has SHA-256 %s..., expected %s...; it is damaged or changed and is downloaded "
                "again.", path, got[:12], sha256[:12])
    path.unlink(missing_ok=True)
    return False


def _download(remote: RemoteFile, target: Path, timeout: float) -> None:
    """One pooch download of ``remote`` to ``target`` (checked against ``remote.sha256`` when known)."""
    import pooch

    target.parent.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout)
    known = f"sha256:{remote.sha256}" if remote.sha256 else None
    pooch_log = pooch.get_logger()
    level = pooch_log.level
    pooch_log.setLevel(logging.WARNING)  # our own log says what is downloaded; pooch's would add stderr lines
    try:
        pooch.retrieve(remote.url, known_hash=known, fname=target.name, path=target.parent, downloader=downloader)
    finally:
        pooch_log.setLevel(level)


def _attempts(remote: RemoteFile, target: Path, what: str, hint: str,
              step: Callable[[], None]) -> None:
    """Run ``step`` (download and check) up to :data:`ATTEMPTS` times; one DataError line if none succeeds."""
    reason = host_unreachable(remote.url)
    if reason is not None:
        raise _failure(what, remote.url, target, f"offline? {reason}", hint)
    download_timeout()  # a bad $FRAMEWORK_DOWNLOAD_TIMEOUT is reported before any download
    for attempt in range(1, ATTEMPTS + 1):
        log.info("Downloading %s from %s (attempt %d of %d).", what, remote.url, attempt, ATTEMPTS)
        try:
            step()
            return
        except ValueError as exc:  # pooch: the digest does not match (the temporary file is already removed)
            reason = ("the downloaded bytes do not match the pinned SHA-256 "
                      f"{(remote.sha256 or '')[:12]}... (corrupted or changed upstream)"
                      if "hash" in str(exc).lower() else _one_line(exc))
        except _BadMember as exc:
            reason = str(exc)
        except (OSError, zipfile.BadZipFile) as exc:
            reason = _one_line(exc)
        except Exception as exc:  # requests raises its own RequestException tree (HTTP 404, timeouts)
            if type(exc).__module__.split(".")[0] not in {"requests", "urllib3"}:
                raise
            reason = _one_line(exc)
        log.warning("Download of %s from %s failed (attempt %d of %d): %s.", what, remote.url, attempt,
                    ATTEMPTS, reason)
    raise _failure(what, remote.url, target, f"{ATTEMPTS} attempts; last: {reason}", hint)


def fetch(remote: RemoteFile, *, dataset: str, hint: str = "",
          hasher: Callable[[Path], str] | None = None) -> Path:
    """Return the cached copy of ``remote``, downloading it first if needed.

    Parameters
    ----------
    remote : RemoteFile
        With a pinned ``sha256``.
    dataset : str
        Name of the download folder (:func:`downloads_dir`).
    hint : str
        Appended to the error: how to use a local copy instead (environment variable,
        dataset parameter).
    hasher : callable, optional
        ``path -> hex SHA-256`` for files already in the cache (e.g. one that remembers
        digests by size and mtime); default :func:`sha256_of`.

    Returns
    -------
    Path
        ``downloads_dir(dataset) / remote.name``, whose bytes have the pinned SHA-256.

    Raises
    ------
    DataError
        The host is unreachable, or both attempts failed (network error, wrong digest).
    """
    if not remote.sha256:
        raise ValueError(f"fetch() needs a pinned sha256 for {remote.url}; use fetch_members() for archives.")
    target = downloads_dir(dataset) / remote.name
    if _cached_ok(target, remote.sha256, hasher or sha256_of):
        return target
    _attempts(remote, target, f"'{remote.name}' of dataset '{dataset}'", hint,
              lambda: _download(remote, target, download_timeout()))
    return target


class _BadMember(Exception):
    """An archive lacks a wanted member or a member has the wrong digest."""


def _extract(archive: Path, members: Mapping[str, str], dest: Path) -> None:
    """Extract each wanted member of ``archive`` to ``dest / member`` and check its digest.

    A member is found by its path inside the archive ending with ``/<member>`` (or equal
    to it), so an archive with or without a top-level folder works. Files are written to
    a temporary name and renamed once checked.
    """
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        for member, sha256 in members.items():
            found = [n for n in names if n == member or n.endswith("/" + member)]
            if not found:
                raise _BadMember(f"the archive has no member '{member}'")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")
            h = hashlib.sha256()
            with zf.open(min(found, key=len)) as src, open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != sha256:
                tmp.unlink(missing_ok=True)
                raise _BadMember(f"member '{member}' has SHA-256 {h.hexdigest()[:12]}..., expected the pinned "
                                 f"{sha256[:12]}... (corrupted or changed upstream)")
            os.replace(tmp, target)


def fetch_members(archive: RemoteFile, members: Mapping[str, str], *, dataset: str, hint: str = "",
                  hasher: Callable[[Path], str] | None = None) -> dict[str, Path]:
    """Files of a ZIP archive, each checked against its own pinned SHA-256.

    Parameters
    ----------
    archive : RemoteFile
        The ZIP file; ``sha256`` may be None when the archive's digest is not known (its
        members are what is pinned).
    members : mapping of str to str
        Member path (``/``-separated, relative to the archive's top folder) -> hex SHA-256.
        Each is stored at ``downloads_dir(dataset) / <archive name without .zip> / member``.
    dataset, hint, hasher
        As :func:`fetch`.

    Returns
    -------
    dict of str to Path
        Member -> checked local file. The archive itself is deleted once extracted.

    Raises
    ------
    DataError
        As :func:`fetch`; a wrong member digest or an unreadable archive counts as a
        failed attempt (the archive is deleted and fetched again once).
    """
    folder = downloads_dir(dataset)
    archive_path = folder / archive.name
    dest = folder / Path(archive.name).with_suffix("").as_posix()
    out = {m: dest / m for m in members}
    check = hasher or sha256_of
    missing = {m: h for m, h in members.items() if not _cached_ok(out[m], h, check)}
    if not missing:
        return out

    def step() -> None:
        try:
            _download(archive, archive_path, download_timeout())
            _extract(archive_path, missing, dest)
        finally:
            archive_path.unlink(missing_ok=True)  # extracted (or bad): fetched again next time if needed

    _attempts(archive, archive_path, f"'{archive.name}' of dataset '{dataset}'", hint, step)
    return out

