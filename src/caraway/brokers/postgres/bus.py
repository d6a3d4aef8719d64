"""Events on the PostgreSQL broker: one table read by sequence number, woken by NOTIFY.

``caraway_events`` rows get an ever-growing ``seq`` (drawn under an advisory lock held to
commit, so rows commit in ``seq`` order) and an ``expires`` time (``event_queue_ttl`` after
publishing); a receiver starts at the newest row when it subscribes and reads past the last
``seq`` it saw, waking on NOTIFY ``caraway_events``. Publishers sweep expired rows, so a
receiver that falls more than the TTL behind loses events, as on RabbitMQ.
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from caraway.brokers.contracts import EventBus, topic_matches
from caraway.brokers.postgres.schema import EVENTS_CHANNEL
from caraway.brokers.postgres.transport import broker_database, ensure_broker_tables
from caraway.clients.sql import SQLDatabase
from caraway.clients.sql_listen import Subscription, listener_for
from caraway.protocol import envelope
from caraway.protocol.message import Message

#: rows read per query
_PAGE = 1000
#: sweeping on every publish would double the writes; once a second is plenty
_SWEEP_EVERY = 1.0

_PUBLISH = sa.text(
    "WITH ins AS (INSERT INTO caraway_events (exchange, routing_key, expires, envelope) "
    "SELECT :exchange, :routing_key, :expires, :envelope "
    "FROM (SELECT pg_advisory_xact_lock(hashtext('caraway_events'))) l RETURNING seq) "
    f"SELECT pg_notify('{EVENTS_CHANNEL}', '') FROM ins"
)
_SWEEP = sa.text("DELETE FROM caraway_events WHERE expires < :now")
_FRESH = sa.text(
    "SELECT seq, routing_key, expires, envelope FROM caraway_events "
    f"WHERE seq > :after AND exchange = :exchange ORDER BY seq LIMIT {_PAGE}"
)


class PostgresBus(EventBus):
    """The event bus of ``postgresql://`` brokers, in the broker's own database."""

    def _prepare(self) -> None:
        self.db: SQLDatabase = broker_database(self.url, self.options)
        self._read_up_to: int | None = None
        self._binding = "#"
        self._next_sweep = 0.0
        self._sub: Subscription | None = None

    def _ready(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.db

    def publish(self, message: Message, *, routing_key: str) -> None:
        exchange = self.settings.exchange
        params = {
            "exchange": exchange,
            "routing_key": routing_key,
            "expires": time.time() + self.settings.queue_ttl,
            "envelope": envelope.pack(
                message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
            ),
        }
        db = self._ready()
        db.autocommit(lambda conn: conn.execute(_PUBLISH, params).all())
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + _SWEEP_EVERY
            db.autocommit(lambda conn: conn.execute(_SWEEP, {"now": time.time()}))

    def subscribe(self, binding: str = "#") -> None:
        self._binding = binding
        if self._sub is None:
            # listening before reading the newest seq: nothing published after it is missed
            self._sub = listener_for(self.db.engine).subscribe(EVENTS_CHANNEL)
        statement = sa.text("SELECT COALESCE(MAX(seq), 0) FROM caraway_events")
        self._read_up_to = int(
            self._ready().autocommit(lambda conn: conn.execute(statement).scalar_one())
        )

    def _fresh(self) -> list[Message]:
        after = self._read_up_to
        if after is None:
            return []
        now = time.time()
        params = {"after": after, "exchange": self.settings.exchange}
        rows = self._ready().autocommit(lambda conn: conn.execute(_FRESH, params).all())
        if rows:
            self._read_up_to = int(rows[-1][0])
        messages = [
            envelope.unpack(bytes(raw)).message
            for _, key, expires, raw in rows
            if expires >= now and topic_matches(self._binding, key)
        ]
        if not messages and len(rows) == _PAGE:
            # a full page of expired or unmatched rows: the next page is already there
            return self._fresh()
        return messages

    def receive(self, timeout: float) -> list[Message]:
        sub = self._sub
        if self._read_up_to is None or sub is None:
            return []
        deadline = time.monotonic() + timeout
        while True:
            sub.clear()
            messages = self._fresh()
            left = deadline - time.monotonic()
            if messages or left <= 0:
                return messages
            sub.wait(left)

    def close(self) -> None:
        self._read_up_to = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self.db.close()
