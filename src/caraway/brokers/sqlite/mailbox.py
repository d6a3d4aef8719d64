"""The pidbox on the embedded SQLite broker: a broadcast table read by sequence number.

``caraway_pidbox`` rows get an ever-growing ``seq``; a node remembers the highest it has
read (starting at the newest row when it begins listening) and reads past it on each
poll. Replies go to ``caraway_pidbox_replies`` only for an ``oid`` that a client has
registered in ``caraway_pidbox_waiters``; rows are kept in kombu's JSON envelope.
Expiry: broadcasts are swept after a minute, waiters (and their replies) after an hour.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from typing import Any

from caraway.brokers.contracts import PIDBOX_EXCHANGE, Mailbox
from caraway.clients.sqlite import SQLiteFile, sqlite_path
from caraway.exceptions import BrokerError
from caraway.protocol import envelope
from caraway.protocol.message import Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_pidbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    envelope BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_pidbox_waiters (
    oid TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_pidbox_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    oid TEXT NOT NULL,
    envelope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS caraway_pidbox_replies_oid ON caraway_pidbox_replies (oid, id);
"""

#: a broadcast older than this is gone (requests expire long before; see ``expires``)
_KEEP_BROADCASTS = 60.0
#: a client that crashed without closing its reply queue leaves it behind this long
_WAITER_LIFETIME = 3600.0


def _pack(message: Message, exchange: str, routing_key: str) -> bytes:
    return envelope.pack(
        message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
    )


logger = logging.getLogger("caraway.brokers.sqlite.mailbox")


class SQLiteMailbox(Mailbox):
    """The pidbox of ``sqlite://`` brokers, in the broker's own file."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.file = SQLiteFile(sqlite_path(url), schema=_SCHEMA, error=BrokerError)
        self._read_up_to: int | None = None

    # -- node side ---------------------------------------------------------------------
    def listen(self, hostname: str) -> None:
        def newest(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM caraway_pidbox").fetchone()
            return int(row[0])

        self._read_up_to = self.file.read(newest)

    def receive(self) -> list[Message]:
        after = self._read_up_to
        if after is None:
            return []

        def fresh(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            sql = "SELECT seq, envelope FROM caraway_pidbox WHERE seq > ? ORDER BY seq"
            return [(int(seq), bytes(raw)) for seq, raw in conn.execute(sql, (after,))]

        rows = self.file.read(fresh)
        if rows:
            self._read_up_to = rows[-1][0]
        messages, errors = envelope.unpack_all(raw for _, raw in rows)
        for error in errors:
            logger.warning("dropped an unreadable remote-control envelope: %s", error)
        return messages

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        raw = _pack(message, exchange, routing_key)

        def store(conn: sqlite3.Connection) -> None:
            # INSERT ... SELECT: only a registered waiter gets the row, so a late reply
            # to a client that gave up leaves nothing behind.
            conn.execute(
                "INSERT INTO caraway_pidbox_replies (oid, envelope) "
                "SELECT oid, ? FROM caraway_pidbox_waiters WHERE oid = ?",
                (raw, routing_key),
            )

        self.file.write(store, notify=True)

    # -- client side -------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        raw = _pack(message, PIDBOX_EXCHANGE, "")
        now = time.time()

        def store(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO caraway_pidbox (created, envelope) VALUES (?, ?)", (now, raw))
            conn.execute("DELETE FROM caraway_pidbox WHERE created < ?", (now - _KEEP_BROADCASTS,))

        self.file.write(store, notify=True)

    def open_replies(self, oid: str) -> None:
        now = time.time()

        def register(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO caraway_pidbox_waiters (oid, expires) VALUES (?, ?)",
                (oid, now + _WAITER_LIFETIME),
            )
            stale = "SELECT oid FROM caraway_pidbox_waiters WHERE expires < ?"
            conn.execute(f"DELETE FROM caraway_pidbox_replies WHERE oid IN ({stale})", (now,))
            conn.execute("DELETE FROM caraway_pidbox_waiters WHERE expires < ?", (now,))

        self.file.write(register)

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            token = self.file.change_token()
            raw = self._pop_reply(oid)
            if raw is not None:
                return envelope.unpack(raw).message
            if time.monotonic() >= deadline:
                return None
            self.file.wait_for_change(token, deadline=deadline)

    def _pop_reply(self, oid: str) -> bytes | None:
        def first(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute(
                "SELECT id, envelope FROM caraway_pidbox_replies WHERE oid = ? ORDER BY id LIMIT 1",
                (oid,),
            ).fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]))

        found = self.file.read(first)
        if found is None:
            return None
        row_id, raw = found
        # only this client reads its oid, so deleting what it just read is race-free
        self.file.write(
            lambda conn: conn.execute("DELETE FROM caraway_pidbox_replies WHERE id = ?", (row_id,))
        )
        return raw

    def close_replies(self, oid: str) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM caraway_pidbox_waiters WHERE oid = ?", (oid,))
            conn.execute("DELETE FROM caraway_pidbox_replies WHERE oid = ?", (oid,))

        self.file.write(forget)

    def close(self) -> None:
        self._read_up_to = None
        self.file.close()
