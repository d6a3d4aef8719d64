"""The SQLite broker's schedule listing, producer-side parking and revocation record.

Kept apart from ``sqlite.py`` so that module stays about moving messages. Parked rows are
``caraway_messages`` rows with no owner and a ``visible_at`` in the future; revoked ids
live in ``caraway_revoked`` with an expiry (created on first use).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from caraway.protocol.message import Message

if TYPE_CHECKING:
    from caraway.transports.sqlite import SQLiteFile

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
        from caraway.transports.sqlite import _INSERT

        row = self._row(message, queue, "", None, time.time())

        def insert(conn: Any) -> None:
            conn.execute(_INSERT, row)
            conn.execute(
                "UPDATE caraway_messages SET visible_at = ? WHERE id = last_insert_rowid()",
                (eta,),
            )

        self._db.write(insert, notify=True)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        from caraway.transports.sqlite import _MESSAGE_FIELDS, _message_from

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
