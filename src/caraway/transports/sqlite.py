"""The embedded default broker: one SQLite file (WAL) shared by every process of a project.

Table ``caraway_messages`` holds one row per message. Its ``visible_at`` says when the row may
be claimed: 0 = ready now, an ETA = parked, a lease end = claimed by ``owner``. So a parked
row falls due and a dead owner's claim expires by the same test (``0 < visible_at <= now``),
and both are promoted back to ready inside the claim transaction. At-least-once: a claim is a
committed row update, and ack deletes the row. ``SQLiteFile`` (the per-process, fork-aware
connection with busy retries and change waiting) is shared with ``caraway.backends.sqlite``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from caraway.exceptions import BrokerError, ImproperlyConfigured
from caraway.protocol.message import Message
from caraway.transports import default_sqlite_path
from caraway.transports._sqlite_extras import QueuesAndDeadLetters, ScheduleAndRevocations
from caraway.transports.base import Capabilities, Delivery, Transport

T = TypeVar("T")

#: UPDATE ... RETURNING arrived in SQLite 3.35; older libraries claim with SELECT + UPDATE.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

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
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int) -> str:
    return ",".join("?" * count)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    owner TEXT,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    exchange TEXT NOT NULL DEFAULT '',
    routing_key TEXT NOT NULL DEFAULT '',
    enqueued_at REAL NOT NULL
);
-- the claim: ready rows of one queue, higher priority first, then FIFO
CREATE INDEX IF NOT EXISTS caraway_messages_ready
    ON caraway_messages (queue, priority DESC, id) WHERE visible_at = 0;
-- promotion and the next wake-up: parked rows and claims, by when they come due
CREATE INDEX IF NOT EXISTS caraway_messages_timed
    ON caraway_messages (visible_at) WHERE visible_at > 0;
CREATE INDEX IF NOT EXISTS caraway_messages_owner
    ON caraway_messages (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS caraway_dead_letters (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    exchange TEXT NOT NULL DEFAULT '',
    routing_key TEXT NOT NULL DEFAULT ''
);
"""

_MESSAGE_FIELDS = "headers, properties, body, content_type, content_encoding, exchange, routing_key"
_INSERT = (
    "INSERT INTO caraway_messages (queue, priority, enqueued_at, "
    f"{_MESSAGE_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_CLAIMED = f"id, queue, priority, delivery_count, {_MESSAGE_FIELDS}"
_PROMOTE = (
    "UPDATE caraway_messages SET visible_at = 0, owner = NULL "
    "WHERE visible_at > 0 AND visible_at <= ?"
)
_NEXT_DUE = "SELECT min(visible_at) FROM caraway_messages WHERE visible_at > 0"
_HAND_BACK = "UPDATE caraway_messages SET visible_at = 0, owner = NULL"


@lru_cache(maxsize=64)
def _ready_ids_sql(queue_count: int) -> str:
    """The ids to claim: best ``limit`` ready rows over ``queue_count`` queues.

    One index-ordered scan per queue, merged; an ``IN (...)`` over the queues would sort
    every ready row of them instead.
    """
    arm = (
        "SELECT * FROM (SELECT id, priority FROM caraway_messages "
        "WHERE queue = ? AND visible_at = 0 ORDER BY priority DESC, id LIMIT ?)"
    )
    if queue_count == 1:
        return "SELECT id FROM caraway_messages WHERE queue = ? AND visible_at = 0 " + (
            "ORDER BY priority DESC, id LIMIT ?"
        )
    union = " UNION ALL ".join([arm] * queue_count)
    return f"SELECT id FROM ({union}) ORDER BY priority DESC, id LIMIT ?"


def _message_values(message: Message) -> tuple[str, str, bytes, str, str]:
    return (
        orjson.dumps(message.headers).decode(),
        orjson.dumps(message.properties).decode(),
        message.body,
        message.content_type,
        message.content_encoding,
    )


def _priority(message: Message) -> int:
    value = message.properties.get("priority")
    return int(value) if value is not None else 0


def _message_from(row: Sequence[Any]) -> Message:
    """``row`` starts with the ``_MESSAGE_FIELDS`` columns."""
    return Message(
        body=bytes(row[2]),
        headers=orjson.loads(row[0]),
        properties=orjson.loads(row[1]),
        content_type=row[3],
        content_encoding=row[4],
    )


class SQLiteTransport(ScheduleAndRevocations, QueuesAndDeadLetters, Transport):
    """The embedded default broker; see the module docstring for the table layout.

    Options: ``visibility_timeout`` (s, default 30): how long a claim lasts without renewal.
    It is short, unlike Redis' 3600, because a live worker renews its claims with every
    heartbeat; the timeout only bounds how long a node that died whole keeps its messages
    hidden. ``busy_timeout`` (s, default 5): how long SQLite itself waits for the write lock.
    """

    capabilities = Capabilities(
        parking=True,
        leases=True,
        priorities=True,
        durable=True,
        delivery_count=True,
        revocations=True,
    )

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.path = sqlite_path(url)
        self.visibility_timeout = float(self.options.get("visibility_timeout", 30.0))
        self._db = SQLiteFile(
            self.path,
            schema=_SCHEMA,
            error=BrokerError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        row = self._row(message, queue, exchange, routing_key, time.time())
        self._db.write(lambda conn: conn.execute(_INSERT, row), notify=True)

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        now = time.time()
        rows = [self._row(message, queue, "", None, now) for message, queue in items]
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT, rows), notify=True)

    @staticmethod
    def _row(
        message: Message, queue: str, exchange: str, routing_key: str | None, now: float
    ) -> tuple[Any, ...]:
        key = queue if routing_key is None else routing_key
        return (queue, _priority(message), now, *_message_values(message), exchange, key)

    # -- claiming -------------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            # taken before the claim so that a commit racing it is never slept through;
            # a fetch that will not wait skips the read
            token = self._db.change_token() if timeout > 0 else (0, 0)
            rows, next_due = self._db.write(lambda conn: self._claim(conn, queues, limit, owner))
            if rows:
                return [self._delivery(row, owner) for row in rows]
            if time.monotonic() >= deadline:
                return []
            self._db.wait_for_change(token, deadline=deadline, wake_at=next_due)

    def ack_then_fetch(
        self,
        acks: Sequence[Delivery],
        queues: Sequence[str],
        *,
        limit: int,
        timeout: float,
        owner: str,
    ) -> list[Delivery]:
        """The acks are deleted in the claim's own transaction: one write instead of two."""
        tags = [int(delivery.tag) for delivery in acks]
        if not tags or limit <= 0 or not queues:
            self.ack_many(acks)
            return self.fetch(queues, limit=limit, timeout=timeout, owner=owner)

        def work(conn: sqlite3.Connection) -> tuple[list[Any], float | None]:
            self._delete_ids(conn, tags)
            return self._claim(conn, queues, limit, owner)

        rows, _next_due = self._db.write(work)
        if rows or timeout <= 0:
            return [self._delivery(row, owner) for row in rows]
        return self.fetch(queues, limit=limit, timeout=timeout, owner=owner)

    def _claim(
        self, conn: sqlite3.Connection, queues: Sequence[str], limit: int, owner: str
    ) -> tuple[list[Any], float | None]:
        now = time.time()
        conn.execute(_PROMOTE, (now,))
        params: list[Any] = []
        for queue in queues:
            params += [queue, limit]
        if len(queues) > 1:
            params.append(limit)
        ids_sql = _ready_ids_sql(len(queues))
        lease = now + self.visibility_timeout
        claim = (
            "UPDATE caraway_messages SET owner = ?, visible_at = ?, "
            "delivery_count = delivery_count + 1 WHERE id IN "
        )
        if HAS_RETURNING:
            sql = f"{claim} ({ids_sql}) RETURNING {_CLAIMED}"
            rows = conn.execute(sql, (owner, lease, *params)).fetchall()
        else:
            ids = [row[0] for row in conn.execute(ids_sql, params)]
            found = (
                f"SELECT {_CLAIMED} FROM caraway_messages WHERE id IN ({placeholders(len(ids))})"
            )
            rows = [(*row[:3], row[3] + 1, *row[4:]) for row in conn.execute(found, ids)]
            conn.execute(f"{claim} ({placeholders(len(ids))})", (owner, lease, *ids))
        if rows:
            # RETURNING gives rows in no promised order
            rows.sort(key=lambda row: (-row[2], row[0]))
            return rows, None
        return rows, conn.execute(_NEXT_DUE).fetchone()[0]

    def _delivery(self, row: Sequence[Any], owner: str) -> Delivery:
        count = int(row[3])
        return Delivery(
            message=_message_from(row[4:]),
            queue=row[1],
            tag=str(row[0]),
            transport=self,
            redelivered=count > 1,
            delivery_count=count,
            state=owner,
            exchange=row[9],
            routing_key=row[10],
        )

    # -- settling -------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        tag = int(delivery.tag)
        self._db.write(
            lambda conn: conn.execute("DELETE FROM caraway_messages WHERE id = ?", (tag,))
        )

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        tags = [int(delivery.tag) for delivery in deliveries]
        if tags:
            self._db.write(lambda conn: self._delete_ids(conn, tags))

    @staticmethod
    def _delete_ids(conn: sqlite3.Connection, tags: Sequence[int]) -> None:
        for part in chunks(tags):
            sql = f"DELETE FROM caraway_messages WHERE id IN ({placeholders(len(part))})"
            conn.execute(sql, part)

    def requeue(self, delivery: Delivery) -> None:
        # Only the current owner may hand back: after a lease expired someone else may hold it.
        args = (int(delivery.tag), delivery.state)
        sql = f"{_HAND_BACK} WHERE id = ? AND owner = ?"
        self._db.write(lambda conn: conn.execute(sql, args), notify=True)

    def park(self, delivery: Delivery, eta: float) -> None:
        # A due ETA goes straight back to ready; parking is not a delivery attempt, so the
        # count is given back and the promoted message arrives as a first delivery.
        visible_at = eta if eta > time.time() else 0.0
        args = (visible_at, int(delivery.tag), delivery.state)
        sql = (
            "UPDATE caraway_messages SET visible_at = ?, owner = NULL, "
            "delivery_count = max(delivery_count - 1, 0) WHERE id = ? AND owner = ?"
        )
        self._db.write(lambda conn: conn.execute(sql, args), notify=True)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = delivery.message
        row = (
            delivery.queue,
            reason,
            time.time(),
            _priority(message),
            delivery.delivery_count,
            *_message_values(message),
            delivery.exchange,
            delivery.routing_key,
        )
        insert = (
            "INSERT INTO caraway_dead_letters (queue, reason, failed_at, priority, "
            f"delivery_count, {_MESSAGE_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        )

        def move(conn: sqlite3.Connection) -> None:
            conn.execute(insert, row)
            conn.execute("DELETE FROM caraway_messages WHERE id = ?", (int(delivery.tag),))

        self._db.write(move)

    def renew(self, owner: str) -> None:
        lease = time.time() + self.visibility_timeout
        sql = "UPDATE caraway_messages SET visible_at = ? WHERE owner = ?"
        self._db.write(lambda conn: conn.execute(sql, (lease, owner)))

    def recover(self, owner: str) -> int:
        sql = f"{_HAND_BACK} WHERE owner = ?"
        return int(self._db.write(lambda conn: conn.execute(sql, (owner,)).rowcount, notify=True))

    def close(self) -> None:
        self._db.close()
