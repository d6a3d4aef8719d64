"""The pidbox on the PostgreSQL broker: a broadcast table read by sequence number, and reply
rows per waiting client, announced on NOTIFY ``caraway_pidbox``.

``caraway_pidbox`` rows get an ever-growing ``seq``; a broadcast takes an advisory lock
before its ``seq`` is drawn and holds it to its commit, so rows commit in ``seq`` order and
a node that read up to ``seq`` n can never miss a later-committing row below it. Replies go
to ``caraway_pidbox_replies`` only for an ``oid`` a client registered; the client waits for
the NOTIFY whose payload is its oid. Rows are kept in kombu's JSON envelope. Expiry:
broadcasts are swept after a minute, waiters (and their replies) after an hour.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from caraway.brokers.contracts import PIDBOX_EXCHANGE, Mailbox
from caraway.brokers.postgres.schema import PIDBOX_CHANNEL
from caraway.brokers.postgres.transport import broker_database, ensure_broker_tables
from caraway.clients.sql import SQLDatabase
from caraway.clients.sql_listen import listener_for
from caraway.protocol import envelope
from caraway.protocol.message import Message

#: a broadcast older than this is gone (requests expire long before; see ``expires``)
_KEEP_BROADCASTS = 60.0
#: a client that crashed without closing its reply queue leaves it behind this long
_WAITER_LIFETIME = 3600.0
#: the payload of a broadcast's NOTIFY (replies carry their oid)
_BROADCAST = "*"

_PUBLISH = sa.text(
    "WITH ins AS (INSERT INTO caraway_pidbox (created, envelope) SELECT :now, :envelope "
    "FROM (SELECT pg_advisory_xact_lock(hashtext('caraway_pidbox'))) l RETURNING seq), "
    "swept AS (DELETE FROM caraway_pidbox WHERE created < :old) "
    f"SELECT pg_notify('{PIDBOX_CHANNEL}', '{_BROADCAST}') FROM ins"
)
_REPLY = sa.text(
    # INSERT ... SELECT: only a registered waiter gets the row, so a late reply to a
    # client that gave up leaves nothing behind
    "WITH ins AS (INSERT INTO caraway_pidbox_replies (oid, envelope) "
    "SELECT oid, :envelope FROM caraway_pidbox_waiters WHERE oid = :oid RETURNING oid) "
    f"SELECT pg_notify('{PIDBOX_CHANNEL}', oid) FROM ins"
)
_POP_REPLY = sa.text(
    "DELETE FROM caraway_pidbox_replies WHERE id = (SELECT id FROM caraway_pidbox_replies "
    "WHERE oid = :oid ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING envelope"
)


def _pack(message: Message, exchange: str, routing_key: str) -> bytes:
    return envelope.pack(
        message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
    )


logger = logging.getLogger("caraway.brokers.postgres.mailbox")


class PostgresMailbox(Mailbox):
    """The pidbox of ``postgresql://`` brokers, in the broker's own database."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.db = broker_database(url, self.options)
        self._read_up_to: int | None = None

    def _ready(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.db

    # -- node side ---------------------------------------------------------------------
    def listen(self, hostname: str) -> None:
        statement = sa.text("SELECT COALESCE(MAX(seq), 0) FROM caraway_pidbox")
        self._read_up_to = int(
            self._ready().autocommit(lambda conn: conn.execute(statement).scalar_one())
        )

    def receive(self) -> list[Message]:
        after = self._read_up_to
        if after is None:
            return []
        statement = sa.text(
            "SELECT seq, envelope FROM caraway_pidbox WHERE seq > :after ORDER BY seq"
        )
        rows = self._ready().autocommit(
            lambda conn: conn.execute(statement, {"after": after}).all()
        )
        if rows:
            self._read_up_to = int(rows[-1][0])
        messages, errors = envelope.unpack_all(bytes(raw) for _, raw in rows)
        for error in errors:
            logger.warning("dropped an unreadable remote-control envelope: %s", error)
        return messages

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        params = {"envelope": _pack(message, exchange, routing_key), "oid": routing_key}
        self._ready().autocommit(lambda conn: conn.execute(_REPLY, params).all())

    # -- client side -------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        now = time.time()
        params = {
            "now": now,
            "envelope": _pack(message, PIDBOX_EXCHANGE, ""),
            "old": now - _KEEP_BROADCASTS,
        }
        self._ready().autocommit(lambda conn: conn.execute(_PUBLISH, params).all())

    def open_replies(self, oid: str) -> None:
        now = time.time()

        def register(conn: Connection) -> None:
            conn.execute(
                sa.text(
                    "INSERT INTO caraway_pidbox_waiters (oid, expires) VALUES (:oid, :expires) "
                    "ON CONFLICT (oid) DO UPDATE SET expires = excluded.expires"
                ),
                {"oid": oid, "expires": now + _WAITER_LIFETIME},
            )
            stale = "SELECT oid FROM caraway_pidbox_waiters WHERE expires < :now"
            conn.execute(
                sa.text(f"DELETE FROM caraway_pidbox_replies WHERE oid IN ({stale})"), {"now": now}
            )
            conn.execute(
                sa.text("DELETE FROM caraway_pidbox_waiters WHERE expires < :now"), {"now": now}
            )

        self._ready().transaction(register)

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        raw = self._pop_reply(oid)
        if raw is not None or timeout <= 0:
            return None if raw is None else envelope.unpack(raw).message
        deadline = time.monotonic() + timeout
        with listener_for(self.db.engine).subscribe(PIDBOX_CHANNEL, [oid]) as sub:
            while True:
                sub.clear()
                raw = self._pop_reply(oid)
                if raw is not None:
                    return envelope.unpack(raw).message
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sub.wait(left)

    def _pop_reply(self, oid: str) -> bytes | None:
        raw = self._ready().autocommit(lambda conn: conn.execute(_POP_REPLY, {"oid": oid}).scalar())
        return None if raw is None else bytes(raw)

    def close_replies(self, oid: str) -> None:
        def forget(conn: Connection) -> None:
            params = {"oid": oid}
            conn.execute(sa.text("DELETE FROM caraway_pidbox_waiters WHERE oid = :oid"), params)
            conn.execute(sa.text("DELETE FROM caraway_pidbox_replies WHERE oid = :oid"), params)

        self._ready().transaction(forget)

    def close(self) -> None:
        self._read_up_to = None
        self.db.close()
