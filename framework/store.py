"""The results store: one SQLite file per store directory.

One row per cell (dataset, model, signal, metric and everything that changes the
number, hashed into ``cell_key``). Each row is written in its own transaction
the moment its cell finishes, so an interrupted run loses nothing already
scored and a re-run skips what is done. Rows are never duplicated: the cell key
is the primary key.

A cell's identity is settled in two steps. Planning hashes what was *asked for*
(names, parameters, the requested weights mode, ...) into the ``plan_key``;
execution adds the weights *actually used* (source and digest, see
:func:`final_cell_key`), which gives the ``cell_key``. So a model asked for with
``weights=auto`` that fell back to random init and later loads its pretrained
weights makes new cells instead of being skipped.

Safety
------
* Many processes may open the same new store at once (an array job): the set-up
  (WAL mode, tables, migration) runs under an exclusive lock on
  ``results.sqlite.lock`` beside the database, and switching to WAL is retried
  while another process holds the file.
* Every SQLite error is reported as one line (:class:`StoreError`, a
  :class:`~framework.errors.DataError`) naming the file, what happened (disk
  full, read-only, locked beyond the timeout, corrupt, I/O error) and the fix;
  a busy database is never called corrupt.
* A row that cannot be written (disk full, ...) is not lost: it is appended as
  one JSON line to the rescue journal ``unsaved-rows.jsonl`` beside the
  database (or, when that fails too, to a file in the temporary folder named
  after the store, see :func:`rescue_journals`), :class:`StoreWriteError` names
  it, and the next writable open imports it and deletes the journal.
* ``ResultsStore(directory, readonly=True)`` reads a store in a read-only
  folder, file or mount without creating, migrating or writing anything.
* The schema version is kept in ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`).
  A store written by a newer version of the framework, or whose tables hold
  columns this version cannot fill (``NOT NULL`` without a default), is refused
  for writing at open, before any work; it is still read where the columns this
  version reads exist. A file with tables but no ``scores`` table is refused as
  not a results store (or damaged).
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import math
import os
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from framework.errors import DataError
from framework.target_io import json_default
from framework.types import Score, digest_of

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: the set-up relies on retries alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("framework.store")

DB_NAME = "results.sqlite"
LOCK_NAME = DB_NAME + ".lock"
RESCUE_NAME = "unsaved-rows.jsonl"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)   # a journal in the shared temporary folder is never a symlink

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    cell_key TEXT PRIMARY KEY,
    plan_key TEXT,
    run_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    signal TEXT NOT NULL,
    metric TEXT NOT NULL,
    weights_source TEXT,
    weights_label TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    value REAL,
    ceiling REAL,
    ci_low REAL,
    ci_high REAL,
    p_value REAL,
    higher_is_better INTEGER,
    summary TEXT,
    details TEXT,
    error TEXT,
    provenance TEXT,
    started_at REAL,
    finished_at REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS scores_by_name ON scores (dataset, metric, signal, model);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    config TEXT,
    n_done INTEGER,
    n_failed INTEGER,
    n_skipped INTEGER
);
"""

#: The schema version this code writes (``PRAGMA user_version``). 0: a store from before versioning
#: (with or without ``plan_key``, migrated at a writable open); 1: with ``plan_key``.
SCHEMA_VERSION = 1


@functools.cache
def _known_columns() -> dict[str, tuple[str, ...]]:
    """The columns of each table of :data:`_SCHEMA`, in order."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(_SCHEMA)
        return {t: tuple(r[1] for r in con.execute(f"PRAGMA table_info({t})")) for t in ("scores", "runs")}
    finally:
        con.close()


# SQLite primary result codes (the low byte of an extended code)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_READONLY = 3, 5, 6, 7, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_CONSTRAINT, _SQLITE_AUTH, _SQLITE_NOTADB = 19, 23, 26
_REASONS = {_SQLITE_PERM: "readonly", _SQLITE_AUTH: "readonly", _SQLITE_READONLY: "readonly",
            _SQLITE_BUSY: "locked", _SQLITE_LOCKED: "locked", _SQLITE_NOMEM: "memory", _SQLITE_IOERR: "io",
            _SQLITE_CORRUPT: "corrupt", _SQLITE_NOTADB: "corrupt", _SQLITE_FULL: "full",
            _SQLITE_CANTOPEN: "cantopen"}
# for errors that carry no result code (raised by the sqlite3 module itself)
_MESSAGE_REASONS = (("database is locked", "locked"), ("disk is full", "full"), ("readonly", "readonly"),
                    ("malformed", "corrupt"), ("not a database", "corrupt"), ("disk i/o error", "io"),
                    ("unable to open", "cantopen"))
# reasons that stop importing rescued rows (the next open retries); others skip the one row
_FATAL_REASONS = frozenset({"full", "readonly", "locked", "memory", "io", "corrupt", "cantopen"})


class StoreError(DataError):
    """The results database cannot be opened, read or written.

    ``reason`` says what happened: ``"full"`` (disk full), ``"readonly"``, ``"locked"`` (by another
    process, beyond the timeout), ``"corrupt"`` (damaged or not a database), ``"io"`` (I/O error),
    ``"memory"``, ``"missing"``, ``"cantopen"``, ``"directory"`` (the database path is a folder),
    ``"newer"`` (written by a newer version of the framework), ``"schema"`` (tables this version
    cannot use: not a results store, damaged, or changed by hand) or ``"other"``; ``path`` is the
    database file.
    """

    def __init__(self, message: str, *, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class StoreWriteError(StoreError):
    """A row could not be written; a run should stop (the next cells would fail the same way).

    ``rescue_file`` is the journal the unwritten row was appended to (the next writable
    :class:`ResultsStore` imports it into the database), or ``None`` if it could not be saved.
    """

    def __init__(self, message: str, *, path: Path, reason: str, rescue_file: Path | None = None) -> None:
        super().__init__(message, path=path, reason=reason)
        self.rescue_file = rescue_file


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, allow_nan=True)


def final_cell_key(plan_key: str, weights_source: str, weights_digest: str) -> str:
    """The key of a cell once the weights actually used are known.

    ``plan_key`` hashes everything the run asked for; the weights source
    (``pretrained`` / ``random`` / ``file``) and digest make the cell of a
    random-init fallback differ from the cell scored with pretrained weights.
    """
    return digest_of("cell-weights-v1", plan_key, str(weights_source), str(weights_digest))


def rescue_journals(directory: Path) -> tuple[Path, Path]:
    """The two rescue journals of the store in ``directory``: beside the database, then the fallback.

    The fallback lies in :func:`tempfile.gettempdir` and is named after the database's real
    path (``framework-unsaved-rows-<16 hex digits>.jsonl``), so that the next open of the same
    store finds it.
    """
    db = os.path.realpath(Path(directory) / DB_NAME)
    digest = hashlib.sha256(db.encode()).hexdigest()[:16]
    return Path(directory) / RESCUE_NAME, Path(tempfile.gettempdir()) / f"framework-unsaved-rows-{digest}.jsonl"


@dataclass(frozen=True)
class Cell:
    """Identity of one score: names plus the key hashing everything that changes it.

    ``plan_key`` is the key planned before the weights were known (``None``: same as
    ``key``, i.e. not finalised yet); :meth:`with_weights` gives the final cell.
    """

    key: str
    dataset: str
    model: str
    signal: str
    metric: str
    plan_key: str | None = None

    def with_weights(self, weights_source: str, weights_digest: str) -> Cell:
        """This cell keyed by the weights actually used (see :func:`final_cell_key`)."""
        plan_key = self.plan_key or self.key
        return replace(self, key=final_cell_key(plan_key, weights_source, weights_digest), plan_key=plan_key)


# -- errors -------------------------------------------------------------------------------
def _reason(exc: sqlite3.Error) -> tuple[str, str]:
    """``(reason, code name)`` of a SQLite error (see :class:`StoreError` for the reasons)."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if code is not None:
        return _REASONS.get(code & 0xFF, "other"), name
    text = str(exc).lower()
    for pattern, reason in _MESSAGE_REASONS:
        if pattern in text:
            return reason, name
    return "other", name


def _is_programming_error(exc: sqlite3.Error) -> bool:
    """Misuse of the sqlite3 module (closed connection, wrong parameters): a bug, not the file's state."""
    return (isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError)
            and getattr(exc, "sqlite_errorcode", None) is None)


def _readonly_why(directory: Path) -> str | None:
    """Why ``directory`` cannot be written to (read-only mount or no permission), or ``None``."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"read-only file system at '{directory}'"
    except OSError:
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"no write permission on folder '{directory}'"
    return None


def _flock(fd: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``fd`` within ``timeout`` seconds; ``False`` when it stays taken.

    A file system without ``flock`` (some network mounts) counts as locked by nobody.
    """
    if fcntl is None:
        return True
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 0.005)
        except OSError as exc:   # e.g. ENOLCK: no locks on this mount
            log.debug("flock unavailable (%s); going on without it.", exc.strerror)
            return True


def _append_line(path: Path, data: bytes, *, timeout: float) -> None:
    """Append ``data`` (one line) to ``path`` under its ``flock``; all of it or nothing."""
    for _ in range(20):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW, 0o666)
        try:
            if not _flock(fd, timeout):
                raise OSError(errno.EAGAIN, "locked by another process", str(path))
            if os.fstat(fd).st_nlink == 0:   # imported and deleted while we waited: start a new one
                continue
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                with suppress(OSError):
                    os.ftruncate(fd, size)   # no half line left behind
                raise
            return
        finally:
            os.close(fd)
    raise OSError(errno.EAGAIN, "kept being replaced while appending", str(path))


class ResultsStore:
    """SQLite results database at ``<directory>/results.sqlite``.

    Parameters
    ----------
    directory : path
        The store folder (created when opened for writing).
    readonly : bool
        Open for reading only (``file:...?mode=ro``, or ``immutable=1`` when the WAL index cannot
        be created beside a read-only file): nothing is created, migrated or written, so a store
        in a read-only folder, file or mount can be read. A store from an older version is read
        as it is (``plan_key`` reads as the old cell key). Writing methods raise
        :class:`StoreWriteError`.
    timeout : float
        Seconds to wait for another process's lock (set-up lock, SQLite busy timeout) before
        giving up with a "locked" :class:`StoreError`.

    Raises
    ------
    StoreError
        When the database cannot be opened (read-only for writing, locked, corrupt, disk full, ...);
        the message names the file and the fix.
    """

    def __init__(self, directory: Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.readonly = bool(readonly)
        self.timeout = float(timeout)
        self._legacy = False        # read-only view of a store from before plan keys
        self._has_scores = True     # read-only view of a store whose set-up never finished
        self._conn = self._open_readonly() if self.readonly else self._open_writable()
        self._conn.row_factory = sqlite3.Row

    # -- errors -------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error | OSError, action: str, *, cls: type[StoreError] = StoreError,
               saved: str = "", **extra: Any) -> StoreError:
        """The one-line error for ``exc`` met while ``action``; ``saved`` tells where an unsaved row went."""
        if isinstance(exc, OSError):
            code_name = errno.errorcode.get(exc.errno or 0, "OSError")
            detail = f"{exc.strerror or exc}" + (f": '{exc.filename}'" if exc.filename else "")
            reason = {errno.EROFS: "readonly", errno.EACCES: "readonly", errno.EPERM: "readonly",
                      errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EIO: "io"}.get(exc.errno or 0, "other")
        else:
            reason, code_name = _reason(exc)
            detail = str(exc)
        if reason == "cantopen" or (isinstance(exc, OSError) and exc.errno == errno.EISDIR):
            why = _readonly_why(self.directory) if not self.readonly else None
            if self.path.is_dir():
                return self._directory_error()
            if why:
                reason, detail = "readonly", why
            elif not self.directory.is_dir():
                reason = "missing"
        saved = f"; {saved}" if saved else ""
        if reason == "readonly":
            why = "opened with readonly=True" if self.readonly else f"{code_name}: {detail}"
            return cls(f"Results store '{self.path}' is read-only ({why}) while {action}{saved}; choose a writable "
                       "--store or fix the permissions.", path=self.path, reason=reason, **extra)
        where = f"Results database '{self.path}'"
        done = "finished cells already written are kept"
        problem, fix = {
            "full": (f": the disk is full ({code_name}: {detail})",
                     f"free space on the disk holding '{self.directory}' and re-run ({done})"),
            "locked": (f" is locked by another process beyond the {self.timeout:g} s timeout ({code_name}: {detail})",
                       f"wait for the other process (another run?) to finish or stop it, then re-run ({done})"),
            "corrupt": (f" is not a usable SQLite file: "
                        f"{'not a database' if 'NOTADB' in code_name else 'it is damaged'} ({code_name}: {detail})",
                        "restore it from a backup, or move it aside (sqlite3's .recover command may save its rows) "
                        "and re-run to start a new store"),
            "io": (f": I/O error ({code_name}: {detail})",
                   f"check the disk and its mount (the kernel log tells) and re-run ({done})"),
            "memory": (f": out of memory ({code_name}: {detail})", f"free memory and re-run ({done})"),
            "missing": (f" cannot be opened: its folder '{self.directory}' does not exist ({code_name})",
                        "give the right --store"),
            "cantopen": (f" cannot be opened ({code_name}: {detail})",
                         f"check that '{self.directory}' and the file are readable and re-run"),
        }.get(reason, (f": SQLite error ({code_name}: {detail})",
                       "re-run; if it happens again, move the file aside and report the error"))
        return cls(f"{where}{problem} while {action}{saved}; {fix}.", path=self.path, reason=reason, **extra)

    def _directory_error(self) -> StoreError:
        return StoreError(f"Results database '{self.path}' is a directory, not a database file; move that "
                          "directory away (or choose another --store) and re-run.", path=self.path,
                          reason="directory")

    def _newer_error(self, version: int, lacking: str = "") -> StoreError:
        return StoreError(f"Results database '{self.path}' was written by a newer version of the framework "
                          f"(schema {version}, this version reads up to {SCHEMA_VERSION}){lacking}; upgrade the "
                          "framework or choose another --store.", path=self.path, reason="newer")

    def _check_schema(self, conn: sqlite3.Connection) -> tuple[bool, set[str]]:
        """Check that the file is a results store this version can use; ``(has scores, scores columns)``.

        A writable open refuses a newer schema version and tables with columns this version cannot
        fill (or lacks); a read-only open refuses only when the columns it reads are missing. A file
        without tables (new, or its set-up never finished) passes as an empty store.
        """
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not self.readonly and version > SCHEMA_VERSION:
            raise self._newer_error(version)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                  if not r[0].startswith("sqlite_")}
        if not tables:
            return False, set()
        if "scores" not in tables:
            raise StoreError(f"Results database '{self.path}' is not a results store or it is damaged: it has no "
                             f"'scores' table (tables: {', '.join(sorted(tables))}); give the right --store, or "
                             "restore the file from a backup or move it aside.", path=self.path, reason="schema")
        info = {}
        for table in ("scores", "runs") if not self.readonly else ("scores",):
            if table not in tables:
                continue   # 'runs' is created at the set-up
            info[table] = {r[1]: r for r in conn.execute(f"PRAGMA table_info({table})")}
            known = _known_columns()[table]
            # plan_key is added by the migration; a read-only open reads a store without it as legacy
            lacking = [c for c in known if c not in info[table] and c != "plan_key"]
            if lacking:
                cols = ", ".join(f"'{c}'" for c in lacking)
                if version > SCHEMA_VERSION:
                    raise self._newer_error(version, f" and its '{table}' table lacks column(s) {cols} this "
                                                     "version reads")
                raise StoreError(f"Results database '{self.path}' is not a results store of this framework or it "
                                 f"is damaged: its '{table}' table lacks column(s) {cols}; give the right --store, "
                                 "or restore the file from a backup or move it aside.", path=self.path,
                                 reason="schema")
            # (cid, name, type, notnull, dflt_value, pk): columns this version never writes must take NULL
            unfillable = [name for name, r in info[table].items()
                          if name not in known and r[3] and r[4] is None and not r[5]]
            if unfillable and not self.readonly:
                raise StoreError(f"Results database '{self.path}' has column(s) "
                                 f"{', '.join(repr(c) for c in unfillable)} in its '{table}' table that this version "
                                 "of the framework does not know and cannot fill (NOT NULL without a default): it was "
                                 "written by a newer version of the framework or changed by hand; upgrade the "
                                 "framework or choose another --store.", path=self.path, reason="schema")
        if version > SCHEMA_VERSION:
            log.warning("Results database '%s' was written by a newer version of the framework (schema %d, this "
                        "version reads up to %d); reading the columns this version knows.", self.path, version,
                        SCHEMA_VERSION)
        return True, set(info["scores"])

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn SQLite errors met while ``action`` into :class:`StoreError`."""
        try:
            yield
        except sqlite3.Error as exc:
            if _is_programming_error(exc):
                raise
            raise self._error(exc, action) from None

    # -- opening --------------------------------------------------------------------------
    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=uri)

    def _open_writable(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise self._error(exc, "creating its folder") from None
            raise StoreError(f"Store directory '{self.directory}' cannot be created ({exc.strerror}); "
                             "choose another --store.", path=self.path, reason="other") from None
        if self.path.is_dir():
            raise self._directory_error()
        with self._setup_lock():
            try:
                conn = self._connect(str(self.path))
            except sqlite3.Error as exc:
                raise self._error(exc, "opening it") from None
            self._conn = conn
            try:
                self._check_schema(conn)   # before changing anything (WAL, migration, rescued rows)
                self._enable_wal()
                conn.execute("PRAGMA synchronous=NORMAL")
                with self._claim_rescued() as rescued, self._transaction():
                    # one write transaction: fails at once (read-only) rather than at the first cell
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    self._migrate()
                    conn.execute("CREATE INDEX IF NOT EXISTS scores_by_plan ON scores (plan_key)")
                    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    self._import_rescued(rescued)
            except sqlite3.Error as exc:
                conn.close()
                if _is_programming_error(exc):
                    raise
                raise self._error(exc, "opening it") from None
            except BaseException:
                conn.close()
                raise
        return conn

    @contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """Hold the store's set-up lock (``results.sqlite.lock``): one process at a time sets the file up.

        Without the lock (no ``fcntl``, or a lock file this user cannot create or open) the set-up
        still is safe, through the retried switch to WAL and the set-up's write transaction; SQLite
        then reports a read-only store itself.
        """
        if fcntl is None:
            yield
            return
        lock_path = self.directory / LOCK_NAME
        try:   # read-only open is enough for flock, and works on a lock file another user created
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError as exc:
            log.debug("No set-up lock '%s' (%s); going on without it.", lock_path, exc.strerror)
            yield
            return
        try:
            if not _flock(fd, self.timeout):
                raise StoreError(f"Results database '{self.path}' is locked by another process beyond the "
                                 f"{self.timeout:g} s timeout (set-up lock '{lock_path}' held) while opening it; "
                                 "wait for the other process to finish or stop it, then re-run (finished cells "
                                 "already written are kept).", path=self.path, reason="locked")
            yield
        finally:
            os.close(fd)   # releases the lock

    def _enable_wal(self) -> None:
        """Switch to WAL, retrying while another process holds the file.

        Changing the journal mode does not wait through the busy timeout (SQLite answers
        ``SQLITE_BUSY`` at once), so this loop waits instead, up to ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if _reason(exc)[0] != "locked" or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)

    def _open_readonly(self) -> sqlite3.Connection:
        try:
            os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(f"No results store at '{self.directory}' (no {DB_NAME}); run `framework run --store "
                             f"{self.directory}` first or give the right --store.", path=self.path,
                             reason="missing") from None
        except OSError as exc:
            raise StoreError(f"Results database '{self.path}' cannot be read ({exc.strerror}); fix the "
                             "permissions or give the right --store.", path=self.path, reason="cantopen") from None
        if self.path.is_dir():
            raise self._directory_error()
        base = "file:" + urllib.parse.quote(str(self.path.absolute()))
        for params in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = self._connect(f"{base}?{params}", uri=True)
            except sqlite3.Error as exc:
                raise self._error(exc, "opening it read-only") from None
            try:
                has_scores, columns = self._check_schema(conn)
                break
            except StoreError:
                conn.close()
                raise
            except sqlite3.Error as exc:
                conn.close()
                reason = _reason(exc)[0]
                if params == "mode=ro" and reason in ("cantopen", "readonly", "io"):
                    # a WAL database whose index (-shm) cannot be created beside it: read the file as it is
                    self._warn_unseen_wal()
                    continue
                raise self._error(exc, "opening it read-only") from None
        self._has_scores = has_scores
        self._legacy = has_scores and "plan_key" not in columns
        for journal in rescue_journals(self.directory):
            if journal.is_file():
                log.warning("'%s' holds rows not yet in results database '%s'; open the store for writing "
                            "(e.g. `framework run --store %s`) to import them.", journal, self.path, self.directory)
        return conn

    def _warn_unseen_wal(self) -> None:
        wal = Path(f"{self.path}-wal")
        try:
            if wal.stat().st_size > 0:
                log.warning("Results database '%s' is read with its write-ahead log '%s' unseen (its index cannot "
                            "be created here); the newest rows may be missing until a writable open checkpoints "
                            "it.", self.path, wal)
        except OSError:
            pass

    def _columns(self) -> set[str]:
        return {row[1] for row in self._conn.execute("PRAGMA table_info(scores)")}

    def _migrate(self) -> None:
        """Bring a store written by an older version up to date (inside the set-up transaction, idempotent).

        Stores without ``plan_key`` keyed their cells by the plan alone: that key becomes the
        row's ``plan_key`` and the row is re-keyed by the weights its provenance records, so
        cells scored with the same weights are still found (and skipped) by a re-run.
        """
        if "plan_key" in self._columns():
            return
        self._conn.execute("ALTER TABLE scores ADD COLUMN plan_key TEXT")
        rows = self._conn.execute("SELECT cell_key, weights_source, provenance FROM scores").fetchall()
        for key, source, prov in rows:
            try:
                model = (json.loads(prov) if prov else {}).get("model") or {}
            except ValueError:
                model = {}
            source = model.get("weights_source") or source
            digest = model.get("weights_digest")
            new_key = final_cell_key(key, source, digest) if source and digest else key
            self._conn.execute("UPDATE scores SET plan_key=?, cell_key=? WHERE cell_key=?", (key, new_key, key))

    # -- rescued rows ---------------------------------------------------------------------
    @contextmanager
    def _claim_rescued(self) -> Iterator[list[dict[str, Any]]]:
        """Lock and read the rescue journals; they are deleted only if the body (the import) succeeds."""
        claimed: list[tuple[Path, int]] = []
        entries: list[dict[str, Any]] = []
        try:
            for journal in rescue_journals(self.directory):
                try:
                    fd = os.open(journal, os.O_RDONLY | _O_NOFOLLOW)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("Rescue journal '%s' of results database '%s' cannot be read (%s); its rows are "
                                "not imported.", journal, self.path, exc.strerror)
                    continue
                if hasattr(os, "getuid") and os.fstat(fd).st_uid != os.getuid():
                    os.close(fd)   # the temporary folder is shared: import only what this user saved
                    log.warning("Rescue journal '%s' of results database '%s' belongs to another user; not "
                                "imported.", journal, self.path)
                    continue
                if not _flock(fd, self.timeout) or os.fstat(fd).st_nlink == 0:
                    os.close(fd)
                    continue
                try:
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        data = fh.read()
                except OSError as exc:   # e.g. a folder of that name
                    os.close(fd)
                    log.warning("Rescue journal '%s' of results database '%s' cannot be read (%s); its rows are "
                                "not imported.", journal, self.path, exc.strerror)
                    continue
                claimed.append((journal, fd))
                for n, line in enumerate(data.splitlines(), 1):
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        entry = None
                    if isinstance(entry, dict) and isinstance(entry.get("row"), dict):
                        entries.append(entry)
                    elif line.strip():
                        log.warning("Line %d of rescue journal '%s' is not a saved row; skipped.", n, journal)
            yield entries
            for journal, _ in claimed:
                try:
                    journal.unlink()
                except OSError as exc:
                    log.warning("Rescue journal '%s' was imported but cannot be deleted (%s); delete it by hand "
                                "(importing it again is harmless).", journal, exc.strerror)
            if entries:
                log.info("Imported %d rescued row(s) into results database '%s' from %s.", len(entries), self.path,
                         ", ".join(f"'{j}'" for j, _ in claimed))
        finally:
            for _, fd in claimed:
                os.close(fd)

    def _import_rescued(self, entries: list[dict[str, Any]]) -> None:
        """Write rescued rows (inside the set-up transaction); a newer row of the same key wins."""
        known = {"scores": self._columns(),
                 "runs": {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}}
        for entry in entries:
            table, op, row = entry.get("table"), entry.get("op", "replace"), entry["row"]
            if table not in known or not row or not set(row) <= known[table]:
                log.warning("Rescued entry %s does not fit results database '%s'; skipped.", json.dumps(entry)[:200],
                            self.path)
                continue
            try:
                if table == "scores":
                    newer = self._conn.execute("SELECT 1 FROM scores WHERE cell_key=? AND finished_at>?",
                                               (row.get("cell_key"), row.get("finished_at") or 0.0)).fetchone()
                    if newer is None:
                        self._replace_row(row)
                elif op == "update":
                    sets = ", ".join(f"{col}=?" for col in row if col != "run_id")
                    self._conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?",
                                       (*(v for c, v in row.items() if c != "run_id"), row.get("run_id")))
                else:
                    self._conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(row)}) "
                                       f"VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))
            except sqlite3.Error as exc:
                if _is_programming_error(exc) or _reason(exc)[0] in _FATAL_REASONS:
                    raise
                log.warning("Rescued row %s cannot be written to results database '%s' (%s); skipped.",
                            json.dumps(entry)[:200], self.path, exc)

    def _rescue(self, entry: dict[str, Any]) -> tuple[Path | None, list[str]]:
        """Append ``entry`` to the first rescue journal that takes it; ``(journal or None, failures)``."""
        line = (json.dumps({"saved_at": time.time(), **entry}, default=str) + "\n").encode()
        failures = []
        for journal in rescue_journals(self.directory):
            try:
                _append_line(journal, line, timeout=self.timeout)
                return journal, failures
            except OSError as exc:
                failures.append(f"'{journal}': {exc.strerror or exc}")
        log.error("Unsaved row of results database '%s' (no rescue journal could be written): %s", self.path,
                  line.decode().rstrip())
        return None, failures

    def _write_failed(self, exc: sqlite3.Error, action: str, entry: dict[str, Any]) -> StoreError:
        """The error for a failed write, after saving ``entry`` to a rescue journal."""
        if _is_programming_error(exc) or (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_CONSTRAINT:
            raise exc   # a bug in the caller, not the file's state: nothing to rescue
        journal, failures = self._rescue(entry)
        if journal is not None:
            saved = f"the row is kept in '{journal}' and imported when the store is next opened for writing"
        else:
            saved = f"the row could NOT be saved ({'; '.join(failures)}); it is in the log above"
        return self._error(exc, action, cls=StoreWriteError, saved=saved, rescue_file=journal)

    # -- life cycle -----------------------------------------------------------------------
    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:   # e.g. the closing checkpoint on a full disk: the rows are in the WAL
            log.warning("Closing results database '%s': %s", self.path, exc)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, run_id: str, config: dict[str, Any]) -> None:
        """Record the start of run ``run_id`` with its ``config``.

        Raises
        ------
        StoreWriteError
            When the row cannot be written (it goes to the rescue journal).
        """
        row = {"run_id": run_id, "started_at": time.time(), "config": _dumps(config)}
        try:
            with self._transaction():
                self._conn.execute("INSERT OR REPLACE INTO runs (run_id, started_at, config) VALUES (?, ?, ?)",
                                   tuple(row.values()))
        except sqlite3.Error as exc:
            raise self._write_failed(exc, f"starting run {run_id}",
                                     {"table": "runs", "op": "replace", "row": row}) from None

    def finish_run(self, run_id: str, *, n_done: int, n_failed: int, n_skipped: int) -> None:
        """Record the end of run ``run_id`` and its cell counts.

        Raises
        ------
        StoreWriteError
            When the row cannot be written (it goes to the rescue journal).
        """
        row = {"run_id": run_id, "finished_at": time.time(), "n_done": n_done, "n_failed": n_failed,
               "n_skipped": n_skipped}
        try:
            with self._transaction():
                self._conn.execute("UPDATE runs SET finished_at=?, n_done=?, n_failed=?, n_skipped=? WHERE run_id=?",
                                   (row["finished_at"], n_done, n_failed, n_skipped, run_id))
        except sqlite3.Error as exc:
            raise self._write_failed(exc, f"finishing run {run_id}",
                                     {"table": "runs", "op": "update", "row": row}) from None

    # -- cells --------------------------------------------------------------------------
    def status(self, cell_key: str) -> str | None:
        """``"ok"``, ``"error"`` or ``None`` (no such cell)."""
        if not self._has_scores:
            return None
        with self._translated("reading a cell's status"):
            row = self._conn.execute("SELECT status FROM scores WHERE cell_key=?", (cell_key,)).fetchone()
        return None if row is None else row["status"]

    def done_keys(self) -> set[str]:
        """Keys of the finished cells (status ``ok``)."""
        if not self._has_scores:
            return set()
        with self._translated("reading the finished cells"):
            return {r[0] for r in self._conn.execute("SELECT cell_key FROM scores WHERE status='ok'")}

    def done_plan_keys(self) -> set[str]:
        """Plan keys with at least one finished cell, whatever weights it was scored with."""
        if not self._has_scores:
            return set()
        column = "cell_key" if self._legacy else "plan_key"   # old stores keyed cells by the plan
        with self._translated("reading the finished cells"):
            return {r[0] for r in self._conn.execute(
                f"SELECT DISTINCT {column} FROM scores WHERE status='ok' AND {column} IS NOT NULL")}

    def record_score(self, cell: Cell, score: Score, *, run_id: str, weights_source: str, weights_label: str,
                     provenance: dict[str, Any], started_at: float, seconds: float) -> None:
        """Write one finished cell (one transaction).

        Raises
        ------
        StoreWriteError
            When the row cannot be written (disk full, read-only, locked, ...); the row is then
            in the rescue journal named by the message (see :func:`rescue_journals`).
        """
        ci = score.ci or (None, None)
        self._write(cell, run_id=run_id, weights_source=weights_source, weights_label=weights_label, status="ok",
                    value=_finite_or_none(score.value), ceiling=_finite_or_none(score.ceiling),
                    ci_low=_finite_or_none(ci[0]), ci_high=_finite_or_none(ci[1]),
                    p_value=_finite_or_none(score.p_value), higher_is_better=int(score.higher_is_better),
                    summary=_dumps(score.summary), details=_dumps(score.details), error=None,
                    provenance=_dumps(provenance), started_at=started_at, seconds=seconds)

    def record_error(self, cell: Cell, error: str, *, run_id: str, weights_source: str = "", weights_label: str = "",
                     provenance: dict[str, Any] | None = None, started_at: float | None = None,
                     seconds: float = 0.0) -> None:
        """Write one failed cell; a later successful run replaces it.

        Raises
        ------
        StoreWriteError
            As :meth:`record_score`.
        """
        self._write(cell, run_id=run_id, weights_source=weights_source, weights_label=weights_label, status="error",
                    value=None, ceiling=None, ci_low=None, ci_high=None, p_value=None, higher_is_better=None,
                    summary=None, details=None, error=error, provenance=_dumps(provenance or {}),
                    started_at=started_at or time.time(), seconds=seconds)

    def _write(self, cell: Cell, **fields: Any) -> None:
        plan_key = cell.plan_key or cell.key
        row = {"cell_key": cell.key, "plan_key": plan_key, "dataset": cell.dataset, "model": cell.model,
               "signal": cell.signal, "metric": cell.metric, "finished_at": time.time(), **fields}
        try:
            with self._transaction():
                self._replace_row(row)
        except sqlite3.Error as exc:
            raise self._write_failed(exc, f"writing cell {cell.model} × {cell.signal} × {cell.metric}",
                                     {"table": "scores", "op": "replace", "row": row}) from None

    def _replace_row(self, row: dict[str, Any]) -> None:
        """Insert or replace one ``scores`` row; an ``ok`` row supersedes the errors of its planned cell."""
        self._conn.execute(f"INSERT OR REPLACE INTO scores ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                           tuple(row.values()))
        if row.get("status") == "ok":  # errors of the same planned cell (e.g. weights unresolved) are superseded
            self._conn.execute("DELETE FROM scores WHERE plan_key=? AND status='error' AND cell_key<>?",
                               (row.get("plan_key"), row.get("cell_key")))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the connection is in autocommit mode otherwise).

        On failure the transaction is rolled back if SQLite has not done so itself (it does
        after ``SQLITE_FULL``, for one), and the original error is raised.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):   # the original error is the one to report
                    self._conn.execute("ROLLBACK")
            raise

    # -- reading ------------------------------------------------------------------------
    def rows(self, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Every row as a dict (JSON columns decoded), oldest first."""
        if not self._has_scores:
            return
        query = "SELECT * FROM scores"
        args: tuple[Any, ...] = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        with self._translated("reading its rows"):
            for row in self._conn.execute(query + " ORDER BY finished_at", args):
                out = dict(row)
                for col in ("summary", "details", "provenance"):
                    out[col] = json.loads(out[col]) if out[col] else {}
                if self._legacy:
                    out["plan_key"] = out["cell_key"]
                yield out

    def count(self) -> int:
        """Number of rows (finished and failed cells)."""
        if not self._has_scores:
            return 0
        with self._translated("counting its rows"):
            return self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
