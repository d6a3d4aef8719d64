"""The SQLite broker's schedule listing, producer-side parking, revocation record, queue
sizes and purges, and dead-letter store.

Kept apart from ``sqlite.py`` so that module stays about claiming and settling messages.
Parked rows are ``caraway_messages`` rows with no owner and a ``visible_at`` in the future;
revoked ids live in ``caraway_revoked`` with an expiry (created on first use); dead letters
are ``caraway_dead_letters`` rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from caraway.brokers.contracts import DeadLetter
from caraway.protocol.message import Message

if TYPE_CHECKING:
    from caraway.clients.sqlite import SQLiteFile

_REVOKED = (
    "CREATE TABLE IF NOT EXISTS caraway_revoked "
    "(task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
)


class ScheduleAndRevocations:
    """Mixin for SQLiteTransport (needs ``_db`` and ``_row``)."""

    _db: SQLiteFile

    def _row(
        self, message: Message, queue: str, exchange: str, routing_key: str | None, now: float
    ) -> tuple[Any, ...]:
        raise NotImplementedError

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        from caraway.brokers.sqlite.transport import _INSERT

        row = self._row(message, queue, "", None, time.time())

        def insert(conn: Any) -> None:
            conn.execute(_INSERT, row)
            conn.execute(
                "UPDATE caraway_messages SET visible_at = ? WHERE id = last_insert_rowid()",
                (eta,),
            )

        self._db.write(insert, notify=True)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        from caraway.brokers.sqlite.transport import _MESSAGE_FIELDS, _message_from

        sql = (
            f"SELECT visible_at, queue, {_MESSAGE_FIELDS} FROM caraway_messages "
            "WHERE owner IS NULL AND visible_at > ? ORDER BY visible_at LIMIT ?"
        )
        rows = self._db.read(lambda conn: conn.execute(sql, (time.time(), limit)).fetchall())
        return [(float(row[0]), str(row[1]), _message_from(row[2:])) for row in rows]

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        deadline = time.time() + expires
        rows = [(task_id, deadline) for task_id in task_ids]

        def record(conn: Any) -> None:
            conn.execute(_REVOKED)
            conn.execute("DELETE FROM caraway_revoked WHERE expires_at <= ?", (time.time(),))
            conn.executemany("INSERT OR REPLACE INTO caraway_revoked VALUES (?, ?)", rows)

        self._db.write(record)

    def revoked_ids(self) -> list[str]:
        def read(conn: Any) -> list[str]:
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


class QueuesAndDeadLetters:
    """Mixin for SQLiteTransport (needs ``_db``)."""

    _db: SQLiteFile

    # -- queues ---------------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        from caraway.brokers.sqlite.transport import _PROMOTE

        def purge(conn: sqlite3.Connection) -> int:
            conn.execute(_PROMOTE, (time.time(),))
            sql = "DELETE FROM caraway_messages WHERE queue = ? AND visible_at = 0"
            return int(conn.execute(sql, (queue,)).rowcount)

        return self._db.write(purge)

    def size(self, queue: str) -> int:
        # ready rows, plus parked rows and expired claims that the next claim will promote
        sql = (
            "SELECT (SELECT count(*) FROM caraway_messages WHERE queue = ? AND visible_at = 0)"
            " + (SELECT count(*) FROM caraway_messages WHERE visible_at > 0 "
            "AND visible_at <= ? AND queue = ?)"
        )
        args = (queue, time.time(), queue)
        return int(self._db.read(lambda conn: conn.execute(sql, args).fetchone()[0]))

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        from caraway.brokers.sqlite.transport import _MESSAGE_FIELDS, _message_from

        sql = (
            f"SELECT {_MESSAGE_FIELDS}, id, queue, reason, failed_at "
            "FROM caraway_dead_letters ORDER BY id LIMIT ?"
        )
        rows = self._db.read(lambda conn: conn.execute(sql, (limit,)).fetchall())
        return [
            DeadLetter(
                id=row[7],
                queue=row[8],
                reason=row[9],
                message=_message_from(row),
                failed_at=row[10],
            )
            for row in rows
        ]

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        from caraway.brokers.sqlite.transport import _MESSAGE_FIELDS
        from caraway.clients.sqlite import chunks, placeholders

        move = (
            "INSERT INTO caraway_messages (queue, priority, enqueued_at, "
            f"{_MESSAGE_FIELDS}) SELECT queue, priority, ?, {_MESSAGE_FIELDS} "
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
