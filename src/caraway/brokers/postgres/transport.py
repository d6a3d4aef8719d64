"""The PostgreSQL broker's hot path: one row per message in ``caraway_messages``.

A row's ``visible_at`` says when it may be claimed: 0 = ready, an ETA = parked, a lease end
= claimed by ``owner``; a parked row falls due and a dead owner's claim expires by the same
test (``0 < visible_at <= now``), so a claim takes due rows as it takes ready ones. Claims
are one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`` statement (consumers never
wait on each other's rows), acks a DELETE that rides in the next claim's statement, and
every write that makes a row claimable NOTIFYs ``caraway_messages`` with the queue's name,
which wakes waiting consumers (no polling). At-least-once: a claim is a committed update.
Publishes commit synchronously (on disk when ``publish`` returns), each row with a
``publish_key`` that makes a retried publish store nothing twice; claims, acks and the
other settling writes commit asynchronously, since losing the last of them to a server
crash can only hand a message out again, never lose one: one WAL flush per task batch
(its results) instead of two.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache, partial
from typing import Any

import orjson
import sqlalchemy as sa

from caraway.brokers.contracts import Capabilities, Delivery, Fanout, Scheduling, Transport
from caraway.brokers.postgres.schema import MESSAGES_CHANNEL, migrate_broker
from caraway.clients.sql import SQLDatabase
from caraway.clients.sql_listen import Listener, listener_for
from caraway.exceptions import BrokerConnectionError, BrokerError, ImproperlyConfigured
from caraway.protocol.message import Message

MESSAGE_FIELDS = "headers, properties, body, content_type, content_encoding, exchange, routing_key"
_RETURNED = "m.id, m.queue, m.priority, m.delivery_count, " + ", ".join(
    f"m.{name}" for name in MESSAGE_FIELDS.split(", ")
)
# ON CONFLICT: the client retries a statement whose reply was lost (clients/sql.py); when
# the first attempt had committed, its rows' publish keys are there and nothing is stored twice
_INSERT_MANY = sa.text(
    "WITH ins AS (INSERT INTO caraway_messages (queue, priority, visible_at, enqueued_at, "
    f"{MESSAGE_FIELDS}, publish_key) SELECT * FROM unnest(CAST(:queues AS text[]), "
    "CAST(:priorities AS int[]), CAST(:visible AS float8[]), CAST(:enqueued AS float8[]), "
    "CAST(:headers AS text[]), CAST(:properties AS text[]), CAST(:bodies AS bytea[]), "
    "CAST(:types AS text[]), CAST(:encodings AS text[]), CAST(:exchanges AS text[]), "
    "CAST(:keys AS text[]), CAST(:publish_keys AS uuid[])) "
    "ON CONFLICT (publish_key) DO NOTHING RETURNING queue) "
    f"SELECT pg_notify('{MESSAGES_CHANNEL}', queue) FROM (SELECT DISTINCT queue FROM ins) q"
)
# one message (every delay()): plain values, since psycopg quotes every element of a text
# array with regular expressions (about 400 us of a delay()'s CPU for the one-element arrays)
_INSERT_ONE = sa.text(
    "WITH ins AS (INSERT INTO caraway_messages (queue, priority, visible_at, enqueued_at, "
    f"{MESSAGE_FIELDS}, publish_key) VALUES (:queue, :priority, :visible, :enqueued, "
    ":headers, :properties, :body, :content_type, :content_encoding, :exchange, :key, "
    "CAST(:publish_key AS uuid)) ON CONFLICT (publish_key) DO NOTHING RETURNING queue) "
    f"SELECT pg_notify('{MESSAGES_CHANNEL}', queue) FROM ins"
)
_FANOUT = sa.text(
    "WITH ins AS (INSERT INTO caraway_messages (queue, priority, enqueued_at, "
    f"{MESSAGE_FIELDS}) SELECT f.queue, :priority, :now, :headers, :properties, :body, "
    ":content_type, :content_encoding, :exchange, '' FROM caraway_fanout f "
    "WHERE f.exchange = :exchange ORDER BY f.queue RETURNING queue) "
    f"SELECT pg_notify('{MESSAGES_CHANNEL}', queue) FROM ins"
)
_NEXT_DUE = sa.text(
    "SELECT min(visible_at) FROM caraway_messages "
    "WHERE visible_at > 0 AND queue = ANY(CAST(:queues AS text[]))"
)


def notifying(statement: str, *, before: str = "") -> sa.TextClause:
    """``statement`` (an UPDATE/INSERT ending where RETURNING would go, after the CTEs in
    ``before``) run so that each queue it touched is announced once; the result row is
    (rows touched, queues announced)."""
    return sa.text(
        f"WITH {before}r AS ({statement} RETURNING queue), n AS (SELECT pg_notify("
        f"'{MESSAGES_CHANNEL}', queue) FROM (SELECT DISTINCT queue FROM r) d) "
        "SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM n)"
    )


_HAND_BACK = notifying(
    "UPDATE caraway_messages SET visible_at = 0, owner = NULL WHERE id = :id AND owner = :owner"
)
_GIVE_BACK = notifying(
    "UPDATE caraway_messages SET visible_at = 0, owner = NULL, "
    "delivery_count = greatest(delivery_count - 1, 0) "
    "WHERE id = ANY(CAST(:ids AS bigint[])) AND owner = :owner"
)
_RECOVER = notifying(
    "UPDATE caraway_messages SET visible_at = 0, owner = NULL WHERE owner = :owner"
)
_PARK = notifying(
    "UPDATE caraway_messages SET visible_at = :visible, owner = NULL, "
    "delivery_count = greatest(delivery_count - 1, 0) WHERE id = :id AND owner = :owner"
)
_DEAD_LETTER = sa.text(
    "WITH gone AS (DELETE FROM caraway_messages WHERE id = :id) "
    "INSERT INTO caraway_dead_letters (queue, reason, failed_at, priority, delivery_count, "
    f"{MESSAGE_FIELDS}) VALUES (:queue, :reason, :failed_at, :priority, :delivery_count, "
    ":headers, :properties, :body, :content_type, :content_encoding, :exchange, :routing_key)"
)
_ACK = sa.text("DELETE FROM caraway_messages WHERE id = ANY(CAST(:ids AS bigint[]))")
_RENEW = sa.text("UPDATE caraway_messages SET visible_at = :lease WHERE owner = :owner")


@lru_cache(maxsize=64)
def _claim_sql(queue_count: int) -> sa.TextClause:
    """Ack ``:acks`` and claim the best ``:limit`` claimable rows of ``queue_count`` queues.

    One index-ordered arm per queue (an ``IN`` over the queues would sort every ready row
    of them), plus the due rows (parked, or a dead owner's), merged by priority then age.
    Acked ids are kept out of the due arm: a row deleted and updated by one statement
    would be updated only once.
    """
    # one CTE per arm: FOR UPDATE is not allowed inside a UNION, but is in a WITH query
    arms = [
        f"a{i} AS (SELECT id, priority FROM caraway_messages WHERE queue = :q{i} "
        "AND visible_at = 0 ORDER BY priority DESC, id LIMIT :limit FOR UPDATE SKIP LOCKED)"
        for i in range(queue_count)
    ]
    arms.append(
        "due AS (SELECT id, priority FROM caraway_messages WHERE visible_at > 0 "
        "AND visible_at <= :now AND queue = ANY(CAST(:queues AS text[])) "
        "AND id <> ALL(CAST(:acks AS bigint[])) ORDER BY visible_at LIMIT :limit "
        "FOR UPDATE SKIP LOCKED)"
    )
    union = " UNION ALL ".join(
        [f"SELECT id, priority FROM a{i}" for i in range(queue_count)]
        + ["SELECT id, priority FROM due"]
    )
    return sa.text(
        "WITH acked AS (DELETE FROM caraway_messages WHERE id = ANY(CAST(:acks AS bigint[]))), "
        f"{', '.join(arms)}, "
        f"picked AS (SELECT id FROM ({union}) c ORDER BY priority DESC, id LIMIT :limit) "
        "UPDATE caraway_messages m SET owner = :owner, visible_at = :lease, "
        "delivery_count = m.delivery_count + 1 FROM picked WHERE m.id = picked.id "
        f"RETURNING {_RETURNED}"
    )


def _run_all(statement: sa.TextClause, params: dict[str, Any], conn: sa.Connection) -> Any:
    return conn.execute(statement, params).all()


def _priority(message: Message) -> int:
    value = message.properties.get("priority")
    return int(value) if value is not None else 0


def message_from(row: Sequence[Any]) -> Message:
    """``row`` starts with the ``MESSAGE_FIELDS`` columns."""
    return Message(
        body=bytes(row[2]),
        headers=orjson.loads(row[0]),
        properties=orjson.loads(row[1]),
        content_type=row[3],
        content_encoding=row[4],
    )


def message_values(message: Message) -> dict[str, Any]:
    """The ``MESSAGE_FIELDS`` of ``message`` but exchange and routing key, as bind values."""
    return {
        "headers": orjson.dumps(message.headers).decode(),
        "properties": orjson.dumps(message.properties).decode(),
        "body": message.body,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
    }


def broker_database(url: str, options: dict[str, Any]) -> SQLDatabase:
    """The broker's client: psycopg 3 on PostgreSQL, tables made on first use."""
    db = SQLDatabase(
        url, error=BrokerError, connection_error=BrokerConnectionError, options=options
    )
    if db.dialect != "postgresql" or db.engine.dialect.driver != "psycopg":
        raise ImproperlyConfigured(
            f"the PostgreSQL broker runs on psycopg 3; {url.partition('://')[0]}:// names "
            "another driver: write postgresql://user:password@host/dbname"
        )
    return db


def ensure_broker_tables(db: SQLDatabase) -> None:
    """Create the broker's tables once per process (``caraway migrate`` does it ahead)."""
    db.prepare("broker", _migrate_quietly)


def _migrate_quietly(conn: sa.Connection) -> None:
    migrate_broker(conn)


class PostgresTransport(Transport, Scheduling, Fanout):
    """The ``postgresql://`` broker; see the module docstring for the table layout.

    Options (``broker_transport_options``): ``visibility_timeout`` (s, default 30): how long
    a claim lasts without renewal; short, as on SQLite, because a live worker renews its
    claims with every heartbeat. Celery's ``database_engine_options`` keys (``pool_size``,
    ``connect_args``...) and ``max_retries`` go to the SQL client.
    """

    capabilities = Capabilities(leases=True, priorities=True, durable=True, delivery_count=True)

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.visibility_timeout = float(self.options.get("visibility_timeout", 30.0))
        self.db = broker_database(url, self.options)
        #: the settling writes' client (see the module docstring), on a pool of its own
        self.settle_db = broker_database(url, {**self.options, "synchronous_commit": "off"})
        self._listener: Listener | None = None
        self._listener_pid = -1

    def _ready(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.db

    def _settling(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.settle_db

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        key = queue if routing_key is None else routing_key
        self._insert([(message, queue, exchange, key, 0.0)])

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """One statement for the batch, one NOTIFY per queue."""
        if items:
            self._insert([(message, queue, "", queue, 0.0) for message, queue in items])

    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        """A copy for each queue bound to ``exchange`` (``PostgresAdmin.bind``), one statement."""
        params = {
            "exchange": exchange,
            "priority": _priority(message),
            "now": time.time(),
            **message_values(message),
        }
        self._ready().autocommit(lambda conn: conn.execute(_FANOUT, params).all())

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        visible = eta if eta > time.time() else 0.0
        self._insert([(message, queue, "", queue, visible)])

    def _insert(self, rows: Sequence[tuple[Message, str, str, str, float]]) -> None:
        now = time.time()
        if len(rows) == 1:
            [(message, queue, exchange, key, visible)] = rows
            one = {
                "queue": queue,
                "priority": _priority(message),
                "visible": visible,
                "enqueued": now,
                **message_values(message),
                "exchange": exchange,
                "key": key,
                # drawn once, outside the retries: a retry sends the same key
                "publish_key": str(uuid.uuid4()),
            }
            self._ready().autocommit(lambda conn: conn.execute(_INSERT_ONE, one).all())
            return
        values = [message_values(message) for message, *_ in rows]
        params = {
            "queues": [row[1] for row in rows],
            "priorities": [_priority(row[0]) for row in rows],
            "visible": [row[4] for row in rows],
            "enqueued": [now] * len(rows),
            "headers": [value["headers"] for value in values],
            "properties": [value["properties"] for value in values],
            "bodies": [value["body"] for value in values],
            "types": [value["content_type"] for value in values],
            "encodings": [value["content_encoding"] for value in values],
            "exchanges": [row[2] for row in rows],
            "keys": [row[3] for row in rows],
            # drawn once, outside the retries: a retry sends the same keys
            "publish_keys": [str(uuid.uuid4()) for _ in rows],
        }
        self._ready().autocommit(lambda conn: conn.execute(_INSERT_MANY, params).all())

    # -- claiming -------------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        return self.ack_then_fetch([], queues, limit=limit, timeout=timeout, owner=owner)

    def ack_then_fetch(
        self,
        acks: Sequence[Delivery],
        queues: Sequence[str],
        *,
        limit: int,
        timeout: float,
        owner: str,
    ) -> list[Delivery]:
        """The acks are deleted by the claim's own statement: one round trip for both."""
        tags = [int(delivery.tag) for delivery in acks]
        if limit <= 0 or not queues:
            self._ack_ids(tags)
            return []
        rows = self._claim(tags, queues, limit, owner)
        if rows or timeout <= 0:
            return [self._delivery(row, owner) for row in rows]
        return self._wait_and_claim(queues, limit, timeout, owner)

    def _wait_and_claim(
        self, queues: Sequence[str], limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        # subscribed before the claim that may find nothing, so a publish in between wakes us
        with self._notifications().subscribe(MESSAGES_CHANNEL, queues) as sub:
            while True:
                sub.clear()
                rows = self._claim([], queues, limit, owner)
                if rows:
                    return [self._delivery(row, owner) for row in rows]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                due = self._next_due(queues)
                if due is not None:
                    left = min(left, max(due - time.time(), 0.0) + 0.002)
                sub.wait(left)

    def _notifications(self) -> Listener:
        if self._listener_pid != os.getpid() or self._listener is None:
            self._listener = listener_for(self.db.engine)
            self._listener_pid = os.getpid()
        return self._listener

    def _claim(self, acks: list[int], queues: Sequence[str], limit: int, owner: str) -> list[Any]:
        now = time.time()
        params: dict[str, Any] = {
            "acks": acks,
            "queues": list(queues),
            "limit": limit,
            "now": now,
            "owner": owner,
            "lease": now + self.visibility_timeout,
        }
        params.update({f"q{i}": queue for i, queue in enumerate(queues)})
        statement = _claim_sql(len(queues))
        rows = self._settling().autocommit(lambda conn: conn.execute(statement, params).all())
        # RETURNING gives rows in no promised order
        return sorted(rows, key=lambda row: (-row[2], row[0]))

    def _next_due(self, queues: Sequence[str]) -> float | None:
        params = {"queues": list(queues)}
        value = self._ready().autocommit(lambda conn: conn.execute(_NEXT_DUE, params).scalar())
        return None if value is None else float(value)

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
        self._ack_ids([int(delivery.tag)])

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        self._ack_ids([int(delivery.tag) for delivery in deliveries])

    def _ack_ids(self, ids: list[int]) -> None:
        if ids:
            self._settling().autocommit(lambda conn: conn.execute(_ACK, {"ids": ids}))

    def requeue(self, delivery: Delivery) -> None:
        # only the current owner may hand back: after a lease expired another may hold it
        params = {"id": int(delivery.tag), "owner": delivery.state}
        self._settling().autocommit(lambda conn: conn.execute(_HAND_BACK, params).all())

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again with the claim's count taken back, one statement per owner (one, in
        a worker); ready rows are served by priority then id, so their order holds.

        Committed synchronously, unlike the other settling writes: a give-back lost to a
        server crash would leave rows claimed by a live owner, which renews them and no
        longer holds them in memory, until that process exits."""
        by_owner: dict[str, list[int]] = {}
        for delivery in deliveries:
            by_owner.setdefault(delivery.state, []).append(int(delivery.tag))
        for owner, ids in by_owner.items():
            self._ready().autocommit(partial(_run_all, _GIVE_BACK, {"ids": ids, "owner": owner}))

    def park(self, delivery: Delivery, eta: float) -> None:
        # parking is not a delivery attempt: the count is given back, and the NOTIFY makes
        # waiting consumers look again for the new due time
        visible = eta if eta > time.time() else 0.0
        params = {"visible": visible, "id": int(delivery.tag), "owner": delivery.state}
        self._settling().autocommit(lambda conn: conn.execute(_PARK, params).all())

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        params = {
            "id": int(delivery.tag),
            "queue": delivery.queue,
            "reason": reason,
            "failed_at": time.time(),
            "priority": _priority(delivery.message),
            "delivery_count": delivery.delivery_count,
            "exchange": delivery.exchange,
            "routing_key": delivery.routing_key,
            **message_values(delivery.message),
        }
        self._settling().autocommit(lambda conn: conn.execute(_DEAD_LETTER, params))

    def renew(self, owner: str) -> None:
        params = {"lease": time.time() + self.visibility_timeout, "owner": owner}
        self._settling().autocommit(lambda conn: conn.execute(_RENEW, params))

    def recover(self, owner: str) -> int:
        rows = self._settling().autocommit(
            lambda conn: conn.execute(_RECOVER, {"owner": owner}).one()
        )
        return int(rows[0])

    def close(self) -> None:
        self.db.close()
