"""The embedded default broker: one SQLite file (WAL) shared by every process of a project.

Table ``caraway_messages`` holds one row per message. Its ``visible_at`` says when the row may
be claimed: 0 = ready now, an ETA = parked, a lease end = claimed by ``owner``. So a parked
row falls due and a dead owner's claim expires by the same test (``0 < visible_at <= now``),
and both are promoted back to ready inside the claim transaction. At-least-once: a claim is a
committed row update, and ack deletes the row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson

from caraway.brokers.contracts import (
    Binding,
    Capabilities,
    Delivery,
    Fanout,
    Routing,
    Scheduling,
    Transport,
    binding_matches,
)
from caraway.clients.sqlite import SQLiteFile, chunks, placeholders, sqlite_path
from caraway.exceptions import BrokerError
from caraway.protocol.message import Message

#: UPDATE ... RETURNING arrived in SQLite 3.35; older libraries claim with SELECT + UPDATE.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

SCHEMA = """
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
-- fanout exchanges (Broadcast queues): the queues each one copies a message to
CREATE TABLE IF NOT EXISTS caraway_fanout (
    exchange TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, queue)
);
-- direct and topic exchanges: each queue's binding keys (publish_routed matches them)
CREATE TABLE IF NOT EXISTS caraway_bindings (
    exchange TEXT NOT NULL,
    binding_key TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, binding_key, queue)
);
"""

MESSAGE_FIELDS = "headers, properties, body, content_type, content_encoding, exchange, routing_key"
_INSERT = (
    "INSERT INTO caraway_messages (queue, priority, enqueued_at, "
    f"{MESSAGE_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_CLAIMED = f"id, queue, priority, delivery_count, {MESSAGE_FIELDS}"
PROMOTE = (
    "UPDATE caraway_messages SET visible_at = 0, owner = NULL "
    "WHERE visible_at > 0 AND visible_at <= ?"
)
BIND = "INSERT OR IGNORE INTO caraway_bindings (exchange, binding_key, queue) VALUES (?, ?, ?)"
_BOUND = "SELECT binding_key, queue FROM caraway_bindings WHERE exchange = ?"
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
    value = message.properties.get("priority") if isinstance(message.properties, dict) else None
    return _as_int(value)


def _as_int(value: Any) -> int:
    """A priority read back from a row: anything but a number from 0 to 255 sorts as 0."""
    try:
        number = int(value) if value is not None else 0
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if 0 <= number <= 255 else 0


def _as_text(value: Any) -> str:
    """A column of a dead letter, whatever the message held: JSON if it can be, else repr."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:10_000]


def _dead_values(message: Message) -> tuple[str, str, bytes, str, str]:
    """:func:`_message_values` for a message that may be malformed in any part."""
    body = message.body
    return (
        _as_text(message.headers),
        _as_text(message.properties),
        bytes(body)
        if isinstance(body, (bytes, bytearray, memoryview))
        else _as_text(body).encode(),
        _as_text(message.content_type),
        _as_text(message.content_encoding),
    )


def _column(text: Any) -> Any:
    """A headers/properties column as written (a JSON object); what another writer put
    there is handed on as it is, for the worker's decode to refuse."""
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return text


def message_from(row: Sequence[Any]) -> Message:
    """``row`` starts with the ``MESSAGE_FIELDS`` columns."""
    body = row[2]
    return Message(
        body=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body or b""),
        headers=_column(row[0]),
        properties=_column(row[1]),
        content_type=row[3],
        content_encoding=row[4],
    )


class SQLiteTransport(Transport, Scheduling, Fanout, Routing):
    """The embedded default broker; see the module docstring for the table layout.

    Options: ``visibility_timeout`` (s, default 30): how long a claim lasts without renewal.
    It is short, unlike Redis' 3600, because a live worker renews its claims with every
    heartbeat; the timeout only bounds how long a node that died whole keeps its messages
    hidden. ``busy_timeout`` (s, default 5): how long SQLite itself waits for the write lock.
    """

    capabilities = Capabilities(leases=True, priorities=True, durable=True, delivery_count=True)

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.path = sqlite_path(url)
        self.visibility_timeout = float(self.options.get("visibility_timeout", 30.0))
        self._db = SQLiteFile(
            self.path,
            schema=SCHEMA,
            error=BrokerError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )
        #: bindings this connection declared (publish_routed declares each once)
        self._bound: set[Binding] = set()

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

    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> None:
            sql = "SELECT queue FROM caraway_fanout WHERE exchange = ? ORDER BY queue"
            queues = [row[0] for row in conn.execute(sql, (exchange,))]
            rows = [self._row(message, queue, exchange, "", now) for queue in queues]
            conn.executemany(_INSERT, rows)

        self._db.write(insert, notify=True)

    def publish_routed(
        self,
        message: Message,
        *,
        exchange: str,
        exchange_type: str,
        routing_key: str,
        declare: Sequence[Binding] = (),
    ) -> None:
        """One transaction: the bindings to declare, the exchange's bindings read, a row per
        matching queue."""
        now = time.time()
        new = [(exchange, bound.key, bound.queue) for bound in declare if bound not in self._bound]

        def insert(conn: sqlite3.Connection) -> None:
            if new:
                conn.executemany(BIND, new)
            found = conn.execute(_BOUND, (exchange,)).fetchall()
            queues = sorted(
                {queue for key, queue in found if binding_matches(exchange_type, key, routing_key)}
            )
            rows = [self._row(message, queue, exchange, routing_key, now) for queue in queues]
            conn.executemany(_INSERT, rows)

        self._db.write(insert, notify=True)
        self._bound.update(declare)

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        row = self._row(message, queue, "", None, time.time())

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(_INSERT, row)
            conn.execute(
                "UPDATE caraway_messages SET visible_at = ? WHERE id = last_insert_rowid()",
                (eta,),
            )

        self._db.write(insert, notify=True)

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
        conn.execute(PROMOTE, (now,))
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
            rows.sort(key=lambda row: (-_as_int(row[2]), row[0]))
            return rows, None
        return rows, conn.execute(_NEXT_DUE).fetchone()[0]

    def _delivery(self, row: Sequence[Any], owner: str) -> Delivery:
        count = int(row[3])
        return Delivery(
            message=message_from(row[4:]),
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

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again in one transaction, the claim's count taken back; ready rows are
        served by priority then id, so the order they were claimed in holds."""
        by_owner: dict[str, list[int]] = {}
        for delivery in deliveries:
            by_owner.setdefault(delivery.state, []).append(int(delivery.tag))
        if not by_owner:
            return

        def hand_back(conn: sqlite3.Connection) -> None:
            for owner, ids in by_owner.items():
                for part in chunks(ids):
                    conn.execute(
                        "UPDATE caraway_messages SET visible_at = 0, owner = NULL, "
                        "delivery_count = max(delivery_count - 1, 0) "
                        f"WHERE id IN ({placeholders(len(part))}) AND owner = ?",
                        (*part, owner),
                    )

        self._db.write(hand_back, notify=True)

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
            *_dead_values(message),
            delivery.exchange,
            delivery.routing_key,
        )
        insert = (
            "INSERT INTO caraway_dead_letters (queue, reason, failed_at, priority, "
            f"delivery_count, {MESSAGE_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
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
