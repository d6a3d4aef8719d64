"""Administration of the SQLite broker: queue sizes and purges, the schedule listing, the
dead-letter store and the revocation record, on a connection of its own to the same file.

Parked rows are ``caraway_messages`` rows with no owner and a ``visible_at`` in the future;
dead letters are ``caraway_dead_letters`` rows; revoked ids live in ``caraway_revoked`` with
an expiry (the table is created on first record, so reading never writes).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from caraway.brokers.contracts import DeadLetter, QueueAdmin, Revocations
from caraway.brokers.sqlite.transport import BIND, MESSAGE_FIELDS, PROMOTE, SCHEMA, message_from
from caraway.clients.sqlite import SQLiteFile, chunks, placeholders, sqlite_path
from caraway.exceptions import BrokerError
from caraway.protocol.message import Message

_REVOKED = (
    "CREATE TABLE IF NOT EXISTS caraway_revoked "
    "(task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
)


class SQLiteAdmin(QueueAdmin, Revocations):
    """The admin of ``sqlite://`` brokers. Option ``busy_timeout`` as the transport's."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.path = sqlite_path(url)
        self._db = SQLiteFile(
            self.path,
            schema=SCHEMA,
            error=BrokerError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )

    # -- queues ---------------------------------------------------------------------------

    def size(self, queue: str) -> int:
        # ready rows, plus parked rows and expired claims that the next claim will promote
        sql = (
            "SELECT (SELECT count(*) FROM caraway_messages WHERE queue = ? AND visible_at = 0)"
            " + (SELECT count(*) FROM caraway_messages WHERE visible_at > 0 "
            "AND visible_at <= ? AND queue = ?)"
        )
        args = (queue, time.time(), queue)
        return int(self._db.read(lambda conn: conn.execute(sql, args).fetchone()[0]))

    def bind(
        self,
        queue: str,
        *,
        exchange: str,
        exchange_type: str = "direct",
        routing_key: str = "",
        durable: bool = True,
        auto_delete: bool = False,
    ) -> None:
        """Fanout bindings for publish_fanout, the others for publish_routed."""
        if exchange_type != "fanout":
            self._db.write(lambda conn: conn.execute(BIND, (exchange, routing_key, queue)))
            return
        sql = "INSERT OR IGNORE INTO caraway_fanout (exchange, queue) VALUES (?, ?)"
        self._db.write(lambda conn: conn.execute(sql, (exchange, queue)))

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM caraway_fanout WHERE exchange = ? AND queue = ?", (exchange, queue)
            )
            conn.execute(
                "DELETE FROM caraway_bindings WHERE exchange = ? AND binding_key = ? AND queue = ?",
                (exchange, routing_key, queue),
            )

        self._db.write(delete)

    def purge(self, queue: str) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            conn.execute(PROMOTE, (time.time(),))
            sql = "DELETE FROM caraway_messages WHERE queue = ? AND visible_at = 0"
            return int(conn.execute(sql, (queue,)).rowcount)

        return self._db.write(purge)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        sql = (
            f"SELECT visible_at, queue, {MESSAGE_FIELDS} FROM caraway_messages "
            "WHERE owner IS NULL AND visible_at > ? ORDER BY visible_at LIMIT ?"
        )
        rows = self._db.read(lambda conn: conn.execute(sql, (time.time(), limit)).fetchall())
        return [(float(row[0]), str(row[1]), message_from(row[2:])) for row in rows]

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        sql = (
            f"SELECT {MESSAGE_FIELDS}, id, queue, reason, failed_at "
            "FROM caraway_dead_letters ORDER BY id LIMIT ?"
        )
        rows = self._db.read(lambda conn: conn.execute(sql, (limit,)).fetchall())
        return [
            DeadLetter(
                id=row[7],
                queue=row[8],
                reason=row[9],
                message=message_from(row),
                failed_at=row[10],
            )
            for row in rows
        ]

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        move = (
            "INSERT INTO caraway_messages (queue, priority, enqueued_at, "
            f"{MESSAGE_FIELDS}) SELECT queue, priority, ?, {MESSAGE_FIELDS} "
            "FROM caraway_dead_letters"
        )

        def requeue(conn: sqlite3.Connection) -> int:
            now = time.time()
            if ids is None:
                conn.execute(f"{move} ORDER BY id", (now,))
                return int(conn.execute("DELETE FROM caraway_dead_letters").rowcount)
            moved = 0
            for part in chunks([int(value) for value in ids]):
                where = f" WHERE id IN ({placeholders(len(part))})"
                conn.execute(f"{move}{where} ORDER BY id", (now, *part))
                moved += conn.execute(f"DELETE FROM caraway_dead_letters{where}", part).rowcount
            return moved

        return self._db.write(requeue, notify=True)

    def purge_dead_letters(self) -> int:
        sql = "DELETE FROM caraway_dead_letters"
        return int(self._db.write(lambda conn: conn.execute(sql).rowcount))

    # -- revocations ----------------------------------------------------------------------

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        deadline = time.time() + expires
        rows = [(task_id, deadline) for task_id in task_ids]

        def record(conn: sqlite3.Connection) -> None:
            conn.execute(_REVOKED)
            conn.execute("DELETE FROM caraway_revoked WHERE expires_at <= ?", (time.time(),))
            conn.executemany("INSERT OR REPLACE INTO caraway_revoked VALUES (?, ?)", rows)

        self._db.write(record)

    def revoked_ids(self) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'caraway_revoked'"
            ).fetchone()
            if not exists:
                return []
            found = conn.execute(
                "SELECT task_id FROM caraway_revoked WHERE expires_at > ?", (time.time(),)
            )
            return [str(row[0]) for row in found]

        return self._db.read(read)

    def close(self) -> None:
        self._db.close()
