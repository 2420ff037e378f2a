"""Sharing one database file between a writing job and readers in other processes.

DuckDB lets one process open a file read-write, or any number open it read-only, never both at
once. A job that held its connection for hours would lock everyone out, so a `SharedConnection`
holds the file only while it is used: it opens the file for a statement (or a transaction) and
closes it again once it has been idle for `IDLE_SECONDS`. A reader (`circuits jobs`, `sql`,
`report`, `export`) that finds the file busy waits and tries again, for up to `WAIT_SECONDS`
($CIRCUITS_DB_WAIT); so
does a writer that finds a reader in it. Readers see what was committed so far.

A job that commits one small transaction after another (storing the records of thousands of
nodes) would still never be idle for IDLE_SECONDS, so a reader waiting for the file marks that it
waits (the mtime of `<file>.waiting`, touched at every try), and a writer that sees a fresh mark
after a commit closes the file for YIELD_SECONDS before its next statement. With nobody waiting
this costs one `stat` per commit.

Two writers must still never interleave: a read-write `Store` also holds an advisory lock
(`flock`) on the file for its whole life, and a second one (another process) gets one clear line.
Within one process the lock is shared, so nested stores of the same file keep working.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import duckdb

IDLE_SECONDS = 0.2  # close the file after this long without a statement
YIELD_SECONDS = 0.15  # a writer that sees a reader waiting closes the file for this long after a commit
WAITING_FRESH = 0.3  # a waiting-reader mark older than this is stale (the reader got in, or gave up)
WAIT_SECONDS = 10.0  # how long to wait for a busy file before giving up ($CIRCUITS_DB_WAIT overrides)
WAIT_ENV = "CIRCUITS_DB_WAIT"
_RETRY_EVERY = 0.05


def is_busy(e: BaseException) -> bool:
    """A DuckDB error that means another connection holds the file (another process's lock, or
    this process's connection in the other mode)."""
    msg = " ".join(str(e).split())
    return ("Conflicting lock" in msg or "Could not set lock" in msg
            or "different configuration" in msg or isinstance(e, duckdb.ConnectionException))


def wait_seconds() -> float:
    """How long to wait for a busy file: $CIRCUITS_DB_WAIT seconds, else WAIT_SECONDS."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, WAIT_SECONDS)))
    except ValueError:
        return WAIT_SECONDS


class _Result:
    """A statement's result, read before the connection may close."""

    def __init__(self, description, rows):
        self.description, self._rows = description, rows

    def fetchall(self) -> list[tuple]:
        return list(self._rows)

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None


class SharedConnection:
    """The subset of a DuckDB connection the store uses (execute, executemany, begin, commit,
    rollback, close), opening the file only while in use (see the module docstring)."""

    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], idle: float = IDLE_SECONDS,
                 wait: float | None = None, path: Path | str | None = None, reader: bool = False):
        self._connect, self.idle, self.wait = connect, idle, wait if wait is not None else wait_seconds()
        # where waiting readers leave their mark (None: nobody to share with); readers mark, writers yield
        self._waiting = Path(str(path) + ".waiting") if path is not None else None
        self._reader = reader
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._in_transaction = False
        self._last = 0.0
        self._closed = False
        self.opens = 0  # how many times the file was opened (for the benchmark)
        self._timer = threading.Thread(target=self._close_when_idle, daemon=True)
        self._timer.start()

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    self._con = self._connect()
                    self.opens += 1
                    break
                except duckdb.Error as e:
                    if not is_busy(e) or time.monotonic() > deadline:
                        raise
                    self._mark_waiting()
                    time.sleep(_RETRY_EVERY)
        self._last = time.monotonic()
        return self._con

    def _mark_waiting(self) -> None:
        """A reader waiting for the file says so (see the module docstring)."""
        if self._reader and self._waiting is not None:
            try:
                self._waiting.touch()
            except OSError:  # a read-only folder: the reader only waits longer
                pass

    def _yield_to_readers(self) -> None:
        """After a commit: if a reader is waiting, close the file and give it YIELD_SECONDS to get in
        (the lock is held, so no thread of this process reopens it meanwhile)."""
        if self._reader or self._waiting is None or self._con is None or self._in_transaction:
            return
        try:
            fresh = time.time() - self._waiting.stat().st_mtime < WAITING_FRESH
        except OSError:
            return
        if fresh:
            self._con.close()
            self._con = None
            time.sleep(YIELD_SECONDS)

    def _close_when_idle(self) -> None:
        while not self._closed:
            time.sleep(self.idle / 2)
            with self._lock:
                if self._con is not None and not self._in_transaction and time.monotonic() - self._last >= self.idle:
                    self._con.close()
                    self._con = None

    def execute(self, sql: str, params: Any = None) -> Any:
        with self._lock:
            cur = self._open().execute(sql, params)
            result = _Result(cur.description, cur.fetchall() if cur.description is not None else [])
            self._last = time.monotonic()
            self._yield_to_readers()
            return result

    def executemany(self, sql: str, rows: Any) -> None:
        with self._lock:
            self._open().executemany(sql, rows)
            self._last = time.monotonic()

    def begin(self) -> None:
        self._lock.acquire()  # held until commit or rollback: no other thread's statement slips in
        try:
            self._open().begin()
        except BaseException:
            self._lock.release()
            raise
        self._in_transaction = True

    def _end(self, how: str) -> None:
        try:
            getattr(self._con, how)()
            self._in_transaction = False
            self._yield_to_readers()
        finally:
            self._in_transaction = False
            self._last = time.monotonic()
            self._lock.release()

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._con is not None:
                self._con.close()
                self._con = None


# ---- the writers' advisory lock -------------------------------------------------------------------

_HELD: dict[str, list] = {}  # real path -> [fd, count]
_HELD_LOCK = threading.Lock()


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this machine (unknown: counted as alive)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def lock_for_writing(path: Path) -> bool:
    """Take this process's writer lock on `path` (shared by its stores); False if another process
    holds it."""
    key = os.path.realpath(path)
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key][1] += 1
            return True
        fd = os.open(key, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        _HELD[key] = [fd, 1]
        return True


def unlock_for_writing(path: Path) -> None:
    key = os.path.realpath(path)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            os.close(held[0])  # closing the descriptor drops the flock
            del _HELD[key]
