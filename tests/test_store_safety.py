"""Results store safety: concurrent first opens, read-only stores, full disk, corruption and locks.

Read-only and full-disk cases are made real where the machine allows it, and skip with the reason
otherwise: a tmpfs mounted read-only or filled up (root only), or write permission taken away (as
root, the checks then run in a child process with the capabilities that bypass permissions dropped).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import LEGACY_SCHEMA
from framework.errors import DataError
from framework.store import (
    DB_NAME,
    LOCK_NAME,
    RESCUE_NAME,
    Cell,
    ResultsStore,
    StoreError,
    StoreWriteError,
    rescue_journals,
)

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _record(store, key, value=0.5, *, model="net", details=None):
    from framework.types import Score

    store.record_score(Cell(key, "ds", model, "sig", "met"), Score(value, details=details or {}), run_id="r1",
                       weights_source="random", weights_label="random init (seed 0)", provenance={"note": key},
                       started_at=0.0, seconds=0.1)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """``tempfile.gettempdir()`` inside the test folder (where the store's last-resort journal goes)."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


# ------------------------------------------------------------------------------------------
# many processes opening the same new store at once
# ------------------------------------------------------------------------------------------
def _race_worker(store_cls, directory, barrier, index, results):
    try:
        barrier.wait(timeout=60)
        store = store_cls(directory)
        try:
            _record(store, f"k{index}", float(index))
        finally:
            store.close()
        results.put((index, None))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put((index, f"{type(exc).__name__}: {exc}"))


def race(directory: Path, n: int, store_cls=ResultsStore) -> list[str]:
    """``n`` forked processes open the new store ``directory`` at once (a barrier) and write a row each.

    Returns the errors (empty when every process succeeded).
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(store_cls, directory, barrier, i, results)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return [f"process {i}: {err}" for i, err in sorted(out) if err]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_many_processes_open_a_new_store_at_once(tmp_path):
    """Five rounds of 16 processes on a new store, each followed by eight rounds of a pair.

    The race is narrow: two processes must both be between reading the new file and locking it for
    the switch to WAL. A multiprocessing barrier wakes its waiters one after another, so of 16 few get
    there together (the old store failed about one round of 16 in ten here), while the two processes of
    a pair start within microseconds (the old store failed 10-75 % of pair rounds, fewer on a loaded
    machine). The next test makes the same failure certain.
    """
    sizes = [16, *[2] * 8] * 5
    for round_, n in enumerate(sizes):
        directory = tmp_path / f"round{round_}"
        errors = race(directory, n)
        assert errors == [], f"round {round_}: {len(errors)} of {n} processes failed: {errors[:3]}"
        with ResultsStore(directory) as store:
            assert store.count() == n
            assert store.done_keys() == {f"k{i}" for i in range(n)}
        con = sqlite3.connect(directory / DB_NAME)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_switch_to_wal_waits_while_another_process_holds_the_new_file(tmp_path):
    """The race made certain: another process writes to the new file (still in rollback mode) while 16
    processes open the store; switching to WAL answers "locked" at once there, so it must be retried."""
    directory = tmp_path / "store"
    directory.mkdir()
    # the holder is a separate program: a connection open in this process would be inherited by the fork
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sqlite3, sys, time
        con = sqlite3.connect(sys.argv[1], isolation_level=None)
        con.execute("BEGIN IMMEDIATE")                     # the write lock on the empty file
        print("locked", flush=True)
        time.sleep(0.5)
        con.execute("ROLLBACK")
    """), str(directory / DB_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        errors = race(directory, 16)
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    assert errors == [], f"{len(errors)} of 16 processes failed: {errors[:3]}"
    assert time.monotonic() - t0 >= 0.4                   # they waited for the holder
    with ResultsStore(directory) as store:
        assert store.count() == 16


def test_setup_lock_held_too_long_is_a_lock_error(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    ResultsStore(tmp_path).close()
    with open(tmp_path / LOCK_NAME) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            ResultsStore(tmp_path, timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
    text = _one_line(info.value)
    assert info.value.reason == "locked"
    assert "locked by another process" in text and LOCK_NAME in text and "corrupt" not in text
    ResultsStore(tmp_path, timeout=0.3).close()   # free again once released


# ------------------------------------------------------------------------------------------
# read-only stores
# ------------------------------------------------------------------------------------------
def test_readonly_open_reads_and_changes_nothing(tmp_path):
    source = tmp_path / "source"
    with ResultsStore(source) as store:
        _record(store, "k1", 0.25)
        _record(store, "k2", 0.75)
    directory = tmp_path / "copy"                   # the database alone: no lock file, no journal
    directory.mkdir()
    shutil.copy2(source / DB_NAME, directory / DB_NAME)
    before = (directory / DB_NAME).read_bytes()
    with ResultsStore(directory, readonly=True) as store:
        assert store.readonly
        assert store.count() == 2 and store.done_keys() == {"k1", "k2"} and store.status("k1") == "ok"
        assert [r["value"] for r in store.rows()] == [0.25, 0.75]
    assert (directory / DB_NAME).read_bytes() == before
    # only SQLite's own WAL companions may appear: no lock file, no journal
    assert {p.name for p in directory.iterdir()} <= {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"}


def test_readonly_open_of_missing_store(tmp_path):
    with pytest.raises(StoreError, match=r"No results store at .*run `framework run --store") as info:
        ResultsStore(tmp_path / "nothing", readonly=True)
    assert info.value.reason == "missing"
    assert not (tmp_path / "nothing").exists()


def test_writing_to_a_readonly_open_store_rescues_the_row(tmp_path, private_tmp):
    ResultsStore(tmp_path).close()
    with ResultsStore(tmp_path, readonly=True) as store, pytest.raises(StoreWriteError) as info:
        _record(store, "k1", 0.4)
    text = _one_line(info.value)
    assert info.value.reason == "readonly"
    assert text.startswith(f"Results store '{tmp_path / DB_NAME}' is read-only (opened with readonly=True)")
    assert text.endswith("choose a writable --store or fix the permissions.")
    assert info.value.rescue_file == tmp_path / RESCUE_NAME and str(tmp_path / RESCUE_NAME) in text
    with ResultsStore(tmp_path) as store:            # the next writable open imports the row
        assert [r["value"] for r in store.rows()] == [0.4]
    assert not (tmp_path / RESCUE_NAME).exists()


_LEGACY_ROWS = LEGACY_SCHEMA + """
INSERT INTO scores (cell_key, run_id, dataset, model, signal, metric, status, value, provenance, finished_at)
VALUES ('old-key', 'r0', 'ds', 'net', 'sig', 'met', 'ok', 0.3, '{}', 1.0);
"""


def test_readonly_open_of_a_store_that_needs_migration(tmp_path):
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.executescript(_LEGACY_ROWS)
    con.close()
    before = (tmp_path / DB_NAME).read_bytes()
    with ResultsStore(tmp_path, readonly=True) as store:
        (row,) = store.rows()
        assert (row["cell_key"], row["plan_key"], row["value"]) == ("old-key", "old-key", 0.3)
        assert store.done_keys() == store.done_plan_keys() == {"old-key"}
    assert (tmp_path / DB_NAME).read_bytes() == before          # not migrated on disk
    with ResultsStore(tmp_path) as store:                        # a writable open migrates it
        assert [r["plan_key"] for r in store.rows()] == ["old-key"]


@dataclass
class ReadOnlyStore:
    """A store with two rows that this process's children cannot write to."""

    directory: Path
    how: str
    prefix: list[str]   # runs a command without the right to bypass permissions (as root), or nothing

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.run("-c", textwrap.dedent(code), str(self.directory))


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture(params=["read-only mount", "no write permission"])
def readonly_store(request, tmp_path):
    directory = tmp_path / "store"
    directory.mkdir()
    if request.param == "read-only mount":
        if not IS_ROOT or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        done = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory))
        if done.returncode:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        try:
            with ResultsStore(directory) as store:
                _record(store, "k1", 0.25, model="net-a")
                _record(store, "k2", 0.75, model="net-b")
            done = _mount("-o", "remount,ro", str(directory))
            if done.returncode:
                pytest.skip(f"remounting read-only is not permitted here: {done.stderr.strip()}")
            yield ReadOnlyStore(directory, request.param, [])
        finally:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
        return
    with ResultsStore(directory) as store:
        _record(store, "k1", 0.25, model="net-a")
        _record(store, "k2", 0.75, model="net-b")
    prefix: list[str] = []
    if IS_ROOT:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, permissions are checked in a child without CAP_DAC_OVERRIDE: needs setpriv(1)")
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
        if probe.returncode:
            pytest.skip(f"cannot drop capabilities here: {probe.stderr.strip()}")
    (directory / DB_NAME).chmod(0o444)
    directory.chmod(0o555)
    try:
        yield ReadOnlyStore(directory, request.param, prefix)
    finally:
        directory.chmod(0o755)
        (directory / DB_NAME).chmod(0o644)


def test_readonly_store_is_readable(readonly_store):
    before = sorted(p.name for p in readonly_store.directory.iterdir())
    done = readonly_store.python("""
        import json, sys
        from framework.store import ResultsStore
        with ResultsStore(sys.argv[1], readonly=True) as store:
            print(json.dumps({"count": store.count(), "done": sorted(store.done_keys()),
                              "values": [r["value"] for r in store.rows(status="ok")]}))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"count": 2, "done": ["k1", "k2"], "values": [0.25, 0.75]}
    assert sorted(p.name for p in readonly_store.directory.iterdir()) == before


def test_readonly_store_refuses_a_run_in_one_line(readonly_store):
    done = readonly_store.python("""
        import sys
        from framework.store import ResultsStore, StoreError
        try:
            ResultsStore(sys.argv[1])
        except StoreError as exc:
            print(exc.reason)
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    reason, message = done.stdout.splitlines()
    assert reason == "readonly"
    db = readonly_store.directory / DB_NAME
    assert message.startswith(f"Results store '{db}' is read-only (")
    assert message.endswith("; choose a writable --store or fix the permissions.")
    assert "corrupt" not in message


def test_leaderboard_cli_reads_a_readonly_store(readonly_store):
    done = readonly_store.run("-m", "framework.cli", "leaderboard", "--store", str(readonly_store.directory))
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert "net-a" in done.stdout and "net-b" in done.stdout


# ------------------------------------------------------------------------------------------
# full disk
# ------------------------------------------------------------------------------------------
def _fill_until_full(store, prefix, *, details=None):
    """Write rows until the store is full; returns the keys written before the failure and the error."""
    written = []
    for i in range(10_000):
        key = f"{prefix}{i}"
        try:
            _record(store, key, 1.0 + i, details=details)
        except StoreWriteError as exc:
            return written, key, 1.0 + i, exc
        written.append(key)
    raise AssertionError("the store never filled up")


def test_full_disk_keeps_the_row_and_the_next_open_imports_it(tmp_path, private_tmp):
    store = ResultsStore(tmp_path)
    for i in range(3):
        _record(store, f"a{i}", 0.1 * i)
    n_pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={n_pages + 2}")   # SQLITE_FULL, as on a full disk
    written, lost_key, lost_value, exc = _fill_until_full(store, "b", details={"pad": "x" * 600})
    text = _one_line(exc)
    journal = tmp_path / RESCUE_NAME
    assert exc.reason == "full" and exc.rescue_file == journal
    assert text.startswith(f"Results database '{tmp_path / DB_NAME}': the disk is full (SQLITE_FULL")
    assert f"the row is kept in '{journal}'" in text and "free space" in text and "are kept" in text
    # earlier rows intact; the store still reads
    assert store.done_keys() == {"a0", "a1", "a2", *written}
    # a failed cell hitting the full disk is kept too (same journal, one line per row)
    with pytest.raises(StoreWriteError, match="disk is full"):
        store.record_error(Cell("e1", "ds", "net", "sig", "met"), "model failed: " + "z" * 3000, run_id="r1")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [e["row"]["cell_key"] for e in lines] == [lost_key, "e1"]
    assert lines[0]["row"]["value"] == lost_value
    store.close()

    with ResultsStore(tmp_path) as store:   # limit lifted (a new connection), rows imported in one go
        assert lost_key in store.done_keys() and store.status("e1") == "error"
        row = next(r for r in store.rows() if r["cell_key"] == lost_key)
        assert row["value"] == lost_value and row["details"] == {"pad": "x" * 600}
        assert row["provenance"] == {"note": lost_key}
        assert store.count() == 3 + len(written) + 2
    assert not journal.exists()


def test_rescue_falls_back_to_the_temporary_folder(tmp_path, private_tmp, caplog):
    store = ResultsStore(tmp_path)
    (tmp_path / RESCUE_NAME).mkdir()                     # the journal beside the database cannot be written
    store._conn.execute(f"PRAGMA max_page_count={store._conn.execute('PRAGMA page_count').fetchone()[0]}")
    _, lost_key, _, exc = _fill_until_full(store, "b", details={"pad": "x" * 600})
    store.close()
    (fallback,) = private_tmp.iterdir()
    assert exc.rescue_file == fallback and f"'{fallback}'" in _one_line(exc)
    with caplog.at_level(logging.WARNING, logger="framework"), ResultsStore(tmp_path) as store:
        assert lost_key in store.done_keys()
    assert not fallback.exists()
    assert f"Rescue journal '{tmp_path / RESCUE_NAME}'" in caplog.text and "cannot be read" in caplog.text


@pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root")
def test_rescue_journal_of_another_user_is_not_imported(tmp_path, private_tmp, caplog):
    ResultsStore(tmp_path).close()
    row = {"cell_key": "planted", "plan_key": "planted", "run_id": "r", "dataset": "ds", "model": "net",
           "signal": "sig", "metric": "met", "status": "ok", "value": 1.0, "finished_at": 1.0}
    (fallback,) = [p for p in rescue_journals(tmp_path) if p.parent == private_tmp]
    fallback.write_text(json.dumps({"table": "scores", "row": row}) + "\n")
    os.chown(fallback, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger="framework"), ResultsStore(tmp_path) as store:
        assert store.count() == 0
    assert "belongs to another user" in caplog.text and fallback.exists()


def test_rescued_row_older_than_the_stored_one_does_not_replace_it(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.9)
        row = dict(next(store.rows()))
    row.update(value=0.1, finished_at=row["finished_at"] - 100)
    for col in ("summary", "details", "provenance"):
        row[col] = json.dumps(row[col])
    journal = tmp_path / RESCUE_NAME
    journal.write_text("not json at all\n" + json.dumps({"table": "scores", "op": "replace", "row": row}) + "\n"
                       + json.dumps({"table": "scores", "row": dict(row, cell_key="k2")}) + "\n")
    with ResultsStore(tmp_path) as store:
        assert {r["cell_key"]: r["value"] for r in store.rows()} == {"k1": 0.9, "k2": 0.1}
    assert not journal.exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    if done.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk(tiny_tmpfs, private_tmp):
    directory = tiny_tmpfs / "store"
    store = ResultsStore(directory)
    for i in range(3):
        _record(store, f"a{i}", 0.1 * i)
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)     # take every free block of the file system
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    written, lost_key, lost_value, exc = _fill_until_full(store, "b", details={"pad": "y" * 2000})
    text = _one_line(exc)
    assert exc.reason == "full", text
    assert str(directory / DB_NAME) in text and "corrupt" not in text
    assert exc.rescue_file is not None and exc.rescue_file.parent == private_tmp   # beside: no space either
    assert f"'{exc.rescue_file}'" in text
    store.close()
    filler.unlink()
    with ResultsStore(directory) as store:
        assert store.done_keys() == {"a0", "a1", "a2", *written, lost_key}
        assert next(r["value"] for r in store.rows() if r["cell_key"] == lost_key) == lost_value
    assert not exc.rescue_file.exists()


# ------------------------------------------------------------------------------------------
# corrupt files and locks
# ------------------------------------------------------------------------------------------
def _corrupt_middle_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    n_pages = len(data) // page
    assert n_pages >= 8, n_pages
    rng = random.Random(0)
    for p in range(1, n_pages - 1):                     # every page but the header page and the last
        data[p * page:(p + 1) * page] = rng.randbytes(page)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("readonly", [False, True])
def test_corrupt_pages_are_a_data_error_with_the_fix(tmp_path, readonly):
    with ResultsStore(tmp_path) as store:
        for i in range(200):
            _record(store, f"k{i:03d}", i / 200)
    _corrupt_middle_pages(tmp_path / DB_NAME)
    with pytest.raises(DataError) as info, ResultsStore(tmp_path, readonly=readonly) as store:
        store.done_keys()
    exc = info.value
    text = _one_line(exc)
    assert isinstance(exc, StoreError) and exc.reason == "corrupt", text
    assert not isinstance(exc, sqlite3.Error)
    assert f"'{tmp_path / DB_NAME}'" in text and "not a usable SQLite file" in text
    assert "SQLITE_CORRUPT" in text or "SQLITE_NOTADB" in text
    assert "restore it from a backup" in text and "move it aside" in text


@pytest.mark.parametrize("readonly", [False, True])
def test_file_that_is_not_a_database(tmp_path, readonly):
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match=r"not a usable SQLite file.*SQLITE_NOTADB.*move it aside") as info:
        ResultsStore(tmp_path, readonly=readonly)
    assert info.value.reason == "corrupt" and f"'{tmp_path / DB_NAME}'" in _one_line(info.value)


def test_locked_database_is_reported_as_locked_not_corrupt(tmp_path, private_tmp):
    writer = ResultsStore(tmp_path, timeout=0.3)         # opened before the lock is taken
    _record(writer, "k1", 0.1)
    other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")                      # holds the write lock
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            ResultsStore(tmp_path, timeout=0.3)
        assert time.monotonic() - t0 >= 0.25
        text = _one_line(info.value)
        assert info.value.reason == "locked"
        assert f"Results database '{tmp_path / DB_NAME}' is locked by another process beyond the 0.3 s timeout" \
            in text and "corrupt" not in text and "move it" not in text

        with pytest.raises(StoreWriteError) as info:     # a write meanwhile: locked, row rescued
            _record(writer, "k2", 0.2)
        assert info.value.reason == "locked" and info.value.rescue_file == tmp_path / RESCUE_NAME
        assert "locked by another process" in _one_line(info.value)
        assert writer.done_keys() == {"k1"}              # reading goes on while another process writes
    finally:
        other.execute("ROLLBACK")
        other.close()
    writer.close()
    with ResultsStore(tmp_path) as store:
        assert store.done_keys() == {"k1", "k2"}


# ------------------------------------------------------------------------------------------
# schema version, stores from a newer version, damaged or foreign schemas
# ------------------------------------------------------------------------------------------
def _user_version(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def _alter(db: Path, *statements: str) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def _scores_with_column(db: Path, column: str) -> None:
    """Rebuild the ``scores`` table of ``db`` with an extra ``column`` (a declaration), rows kept."""
    con = sqlite3.connect(db)
    cols = ", ".join(r[1] for r in con.execute("PRAGMA table_info(scores)"))
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name='scores'").fetchone()
    con.close()
    fill = "'x'" if "NOT NULL" in column else "NULL"
    _alter(db, "ALTER TABLE scores RENAME TO scores_old", sql.rstrip().rstrip(")") + f", {column})",
           f"INSERT INTO scores ({cols}, {column.split()[0]}) SELECT {cols}, {fill} FROM scores_old",
           "DROP TABLE scores_old")


def test_new_and_migrated_stores_carry_the_schema_version(tmp_path):
    from framework.store import SCHEMA_VERSION

    ResultsStore(tmp_path / "new").close()
    assert _user_version(tmp_path / "new" / DB_NAME) == SCHEMA_VERSION >= 1
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    con = sqlite3.connect(legacy / DB_NAME)
    con.executescript(_LEGACY_ROWS)
    con.close()
    assert _user_version(legacy / DB_NAME) == 0
    with ResultsStore(legacy) as store:
        assert [r["plan_key"] for r in store.rows()] == ["old-key"]
    assert _user_version(legacy / DB_NAME) == SCHEMA_VERSION


def test_store_of_a_newer_version_is_refused_for_writing_before_any_change(tmp_path, private_tmp, caplog):
    from framework.store import SCHEMA_VERSION

    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.25)
    db = tmp_path / DB_NAME
    _scores_with_column(db, "new_field TEXT NOT NULL")     # as the audit's repro: a column we cannot fill
    _alter(db, "PRAGMA journal_mode=DELETE", "PRAGMA user_version=99")
    (tmp_path / RESCUE_NAME).write_text(json.dumps({"table": "runs", "row": {"run_id": "x", "started_at": 1}}) + "\n")
    before = db.read_bytes()
    with pytest.raises(StoreError) as info:
        ResultsStore(tmp_path)
    text = _one_line(info.value)
    assert info.value.reason == "newer" and isinstance(info.value, DataError)
    assert text == (f"Results database '{db}' was written by a newer version of the framework (schema 99, this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade the framework or choose another --store.")
    assert db.read_bytes() == before                          # not switched to WAL, not migrated
    assert (tmp_path / RESCUE_NAME).exists()                  # rescued rows left for a version that can take them
    with caplog.at_level(logging.WARNING, logger="framework.store"), \
            ResultsStore(tmp_path, readonly=True) as store:   # reading goes on: the columns it reads exist
        assert [r["value"] for r in store.rows()] == [0.25]
    assert "newer version of the framework (schema 99" in caplog.text


def test_store_of_a_newer_version_without_a_column_we_read_is_one_line(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.25)
    db = tmp_path / DB_NAME
    _alter(db, "ALTER TABLE scores DROP COLUMN ci_low", "PRAGMA user_version=99")
    with pytest.raises(StoreError) as info:
        ResultsStore(tmp_path, readonly=True)
    text = _one_line(info.value)
    assert info.value.reason == "newer"
    assert "written by a newer version of the framework (schema 99" in text and "'ci_low'" in text
    assert text.endswith("upgrade the framework or choose another --store.")


def test_unknown_not_null_column_is_refused_at_open_and_nullable_ones_are_kept(tmp_path, private_tmp):
    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.25)
    db = tmp_path / DB_NAME
    _scores_with_column(db, "new_field TEXT NOT NULL")       # same schema version: known only by its columns
    with pytest.raises(StoreError) as info:
        ResultsStore(tmp_path)
    text = _one_line(info.value)
    assert info.value.reason == "schema"
    assert "'new_field'" in text and "NOT NULL without a default" in text
    assert text.endswith("upgrade the framework or choose another --store.")
    with ResultsStore(tmp_path, readonly=True) as store:       # still readable
        assert store.count() == 1

    other = tmp_path / "other"
    with ResultsStore(other) as store:
        _record(store, "k1", 0.25)
    _scores_with_column(other / DB_NAME, "note TEXT")           # NULLable, and NOT NULL with a default
    _scores_with_column(other / DB_NAME, "flag INTEGER NOT NULL DEFAULT 0")
    with ResultsStore(other) as store:
        _record(store, "k2", 0.5)
        assert store.done_keys() == {"k1", "k2"}


def test_store_lacking_a_column_we_write_is_refused(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.25)
    _alter(tmp_path / DB_NAME, "ALTER TABLE scores DROP COLUMN seconds")
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            ResultsStore(tmp_path, readonly=readonly)
        assert info.value.reason == "schema" and "'seconds'" in _one_line(info.value)


def test_store_without_scores_table_is_not_read_as_empty(tmp_path):
    with ResultsStore(tmp_path) as store:
        _record(store, "k1", 0.25)
    _alter(tmp_path / DB_NAME, "DROP TABLE scores")
    for readonly in (True, False):
        with pytest.raises(StoreError) as info:
            ResultsStore(tmp_path, readonly=readonly)
        text = _one_line(info.value)
        assert info.value.reason == "schema"
        assert "is not a results store or it is damaged" in text and "no 'scores' table" in text
    done = subprocess.run([sys.executable, "-m", "framework.cli", "leaderboard", "--store", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "No scores in the store yet" not in done.stdout and "no 'scores' table" in done.stderr


def test_empty_database_file_is_still_an_empty_store(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"")
    with ResultsStore(tmp_path, readonly=True) as store:
        assert store.count() == 0 and list(store.rows()) == []


def test_no_scores_message_ends_its_line():
    from framework.leaderboard import render_terminal

    assert render_terminal([]) == "No scores in the store yet.\n"


@pytest.mark.parametrize("readonly", [False, True])
def test_database_path_that_is_a_directory(tmp_path, readonly):
    (tmp_path / DB_NAME).mkdir()
    with pytest.raises(StoreError) as info:
        ResultsStore(tmp_path, readonly=readonly)
    text = _one_line(info.value)
    assert info.value.reason == "directory"
    assert f"'{tmp_path / DB_NAME}' is a directory" in text and "move that directory away" in text
