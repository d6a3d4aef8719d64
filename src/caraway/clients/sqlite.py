"""One SQLite file shared by the processes of a project: the per-process connection and
change waiting that the SQLite broker's transport, admin, backend, mailbox and bus all use.

Owns connecting (WAL, busy retries, reopening after fork) and waking waiters on a commit;
knows no table but the one the caller's schema creates. The one thing to know: a
connection inherited through fork() is never used or closed in the child (SQLite's rule),
so one :class:`SQLiteFile` may be created before a worker forks.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from caraway.clients.urls import default_sqlite_path
from caraway.exceptions import ImproperlyConfigured

T = TypeVar("T")

#: waiting for a change backs off from 1 ms to this, so an idle consumer costs ~20 cheap
#: ``PRAGMA data_version`` reads a second and a new message waits at most this long
_MAX_PAUSE = 0.05
_MIN_PAUSE = 0.001
#: SQL variables per statement; far below every SQLite build's limit
_CHUNK = 500

# Connections inherited through fork() must never be used or closed in the child (SQLite's
# rule: closing would drop the parent's POSIX locks); keep them referenced so they are
# never finalised.
_ABANDONED: list[sqlite3.Connection] = []


def sqlite_path(url: str) -> str:
    """The absolute file path a ``sqlite://`` URL names.

    ``sqlite://`` (no path) is the default ``caraway.sqlite3`` in the current directory;
    like SQLAlchemy (and Celery's ``db+sqlite://``), ``sqlite:///rel.db`` is relative to it
    and ``sqlite:////abs/path.db`` is absolute.
    """
    parts = urlsplit(url)
    if parts.netloc:
        raise ImproperlyConfigured(
            f"{url!r}: a SQLite URL has no host; write 'sqlite:///relative.db' or "
            "'sqlite:////absolute/path.db'"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        return default_sqlite_path()
    return os.path.abspath(path)


class _Signal:
    """Wakes waiters in this process at once when this process commits a change."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.counter = 0

    def notify(self) -> None:
        with self.cond:
            self.counter += 1
            self.cond.notify_all()


class _Signals:
    """This process's signals, one per file path."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # after fork() a lock copied while held would stay held forever in the child
        self.lock = threading.Lock()
        self.by_path: dict[str, _Signal] = {}

    def get(self, path: str) -> _Signal:
        with self.lock:
            signal = self.by_path.get(path)
            if signal is None:
                signal = self.by_path[path] = _Signal()
            return signal


_SIGNALS = _Signals()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SIGNALS.reset)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteFile:
    """One process's connection to a caraway SQLite file.

    Opened lazily and reopened after fork (detected by pid), so one object may be created
    before a worker forks its children. Thread-safe: one connection behind a lock, released
    while waiting. ``error`` is the exception class failures are reported as.
    """

    def __init__(
        self,
        path: str,
        *,
        schema: str,
        error: type[Exception],
        busy_timeout: float = 5.0,
        retry_for: float = 60.0,
    ) -> None:
        self.path = path
        self.schema = schema
        self.error = error
        self.busy_timeout = busy_timeout
        self.retry_for = retry_for
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """Caller holds ``self._lock`` (taken through ``_locked``)."""
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _locked(self) -> threading.RLock:
        pid = os.getpid()
        if pid != self._pid:
            if self._conn is not None:
                _ABANDONED.append(self._conn)
            self._conn = None
            self._lock = threading.RLock()
            self._pid = pid
        return self._lock

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self.error(f"cannot open SQLite file {self.path!r}: {exc}") from exc
        try:
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            # NORMAL in WAL mode survives any process crash; only an OS crash or power loss
            # can drop the last commits, which is the usual trade for a local queue.
            conn.execute("PRAGMA synchronous=NORMAL")
            # executescript commits any open transaction itself, so the schema is created
            # statement by statement; IF NOT EXISTS makes a retry or a racing process harmless.
            self._retry(lambda: conn.executescript(self.schema))
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._locked():
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- statements -----------------------------------------------------------------------

    def write(self, work: Callable[[sqlite3.Connection], T], *, notify: bool = False) -> T:
        """Run ``work`` in one BEGIN IMMEDIATE transaction, retrying while the file is busy.

        ``work`` may run more than once (a busy COMMIT rolls back and retries), so it must
        only touch the database. ``notify`` wakes this process's waiters after the commit.
        """
        with self._locked():
            conn = self._connection()
            result = self._retry(lambda: self._transaction(conn, work))
        if notify:
            _SIGNALS.get(self.path).notify()
        return result

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` outside a transaction (each statement sees the latest commit)."""
        with self._locked():
            conn = self._connection()
            return self._retry(lambda: work(conn))

    @staticmethod
    def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _retry(self, attempt: Callable[[], T]) -> T:
        # busy_timeout already waits inside SQLite; this covers what it cannot (a busy
        # COMMIT, a WAL reset) so that a message is never lost to contention.
        deadline = time.monotonic() + self.retry_for
        pause = _MIN_PAUSE
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise self.error(f"SQLite file {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise self.error(f"SQLite file {self.path!r}: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    # -- waiting --------------------------------------------------------------------------

    def change_token(self) -> tuple[int, int]:
        """Changes whenever anyone commits: another connection or this process."""
        counter = _SIGNALS.get(self.path).counter
        version = self.read(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))
        return (version, counter)

    def wait_for_change(
        self, token: tuple[int, int], *, deadline: float, wake_at: float | None = None
    ) -> None:
        """Sleep until the file changed since ``token``, ``deadline`` (monotonic) passed,
        or ``wake_at`` (unix time, e.g. the next parked message's ETA) arrived.
        """
        signal = _SIGNALS.get(self.path)
        pause = _MIN_PAUSE
        while True:
            left = deadline - time.monotonic()
            if wake_at is not None:
                left = min(left, wake_at - time.time())
            if left <= 0:
                return
            with signal.cond:
                if signal.counter == token[1]:
                    signal.cond.wait(min(pause, left))
            if self.change_token() != token:
                return
            pause = min(pause * 2, _MAX_PAUSE)


def chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough to bind as one statement's variables."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int) -> str:
    """``?,?,?`` for an ``IN (...)`` of ``count`` values."""
    return ",".join("?" * count)
