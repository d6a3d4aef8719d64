"""Events on the embedded SQLite broker: one table read by sequence number.

``caraway_events`` rows get an ever-growing ``seq`` and an ``expires`` time
(``event_queue_ttl`` after publishing); a receiver starts at the newest row when it
subscribes and reads past the last ``seq`` it saw. Publishers sweep expired rows, so a
receiver that falls more than the TTL behind loses events, as on RabbitMQ.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

from caraway.brokers.contracts import EventBus, topic_matches
from caraway.clients.sqlite import SQLiteFile, sqlite_path
from caraway.exceptions import BrokerError
from caraway.protocol import envelope
from caraway.protocol.message import Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    expires REAL NOT NULL,
    envelope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS caraway_events_expires ON caraway_events (expires);
"""

#: rows read per query
_PAGE = 1000
#: sweeping on every publish would double the writes; once a second is plenty
_SWEEP_EVERY = 1.0


class SQLiteBus(EventBus):
    """The event bus of ``sqlite://`` brokers, in the broker's own file."""

    def _prepare(self) -> None:
        self.file = SQLiteFile(sqlite_path(self.url), schema=_SCHEMA, error=BrokerError)
        self._read_up_to: int | None = None
        self._binding = "#"
        self._next_sweep = 0.0

    def publish(self, message: Message, *, routing_key: str) -> None:
        exchange = self.settings.exchange
        raw = envelope.pack(
            message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
        )
        now = time.time()
        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + _SWEEP_EVERY

        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO caraway_events (exchange, routing_key, expires, envelope) "
                "VALUES (?, ?, ?, ?)",
                (exchange, routing_key, now + self.settings.queue_ttl, raw),
            )
            if sweep:
                conn.execute("DELETE FROM caraway_events WHERE expires < ?", (now,))

        self.file.write(store, notify=True)

    def subscribe(self, binding: str = "#") -> None:
        def newest(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM caraway_events").fetchone()
            return int(row[0])

        self._binding = binding
        self._read_up_to = self.file.read(newest)

    def _fresh(self) -> list[Message]:
        after = self._read_up_to
        if after is None:
            return []
        exchange = self.settings.exchange
        now = time.time()

        def fetch(conn: sqlite3.Connection) -> list[tuple[int, str, float, bytes]]:
            sql = (
                "SELECT seq, routing_key, expires, envelope FROM caraway_events "
                "WHERE seq > ? AND exchange = ? ORDER BY seq LIMIT " + str(_PAGE)
            )
            return [
                (int(seq), str(key), float(exp), bytes(raw))
                for seq, key, exp, raw in conn.execute(sql, (after, exchange))
            ]

        rows = self.file.read(fetch)
        if rows:
            self._read_up_to = rows[-1][0]
        messages = [
            envelope.unpack(raw).message
            for _, key, expires, raw in rows
            if expires >= now and topic_matches(self._binding, key)
        ]
        if not messages and len(rows) == _PAGE:
            # a full page of expired or unmatched rows: the next page is already there
            return self._fresh()
        return messages

    def receive(self, timeout: float) -> list[Message]:
        if self._read_up_to is None:
            return []
        deadline = time.monotonic() + timeout
        while True:
            token = self.file.change_token()
            messages = self._fresh()
            if messages or time.monotonic() >= deadline:
                return messages
            self.file.wait_for_change(token, deadline=deadline)

    def close(self) -> None:
        self._read_up_to = None
        self.file.close()
