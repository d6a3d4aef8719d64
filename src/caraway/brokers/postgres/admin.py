"""Administration of the PostgreSQL broker: queue sizes and purges, the schedule listing, the
dead-letter store, revoked ids and the migration, on the process's pool for the database.

Parked rows are ``caraway_messages`` rows with no owner and a ``visible_at`` in the future;
dead letters are ``caraway_dead_letters`` rows; revoked ids live in ``caraway_revoked`` with
an expiry. Requeued dead letters are announced as any publish is, so waiting consumers wake.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from caraway.brokers.contracts import DeadLetter, Migrations, QueueAdmin, Revocations
from caraway.brokers.postgres.schema import BROKER_DDL, migrate_broker
from caraway.brokers.postgres.transport import (
    MESSAGE_FIELDS,
    broker_database,
    ensure_broker_tables,
    message_from,
    notifying,
)
from caraway.clients.sql import SQLDatabase
from caraway.protocol.message import Message

_SIZE = sa.text(
    "SELECT count(*) FROM caraway_messages WHERE queue = :queue "
    "AND visible_at <= :now"  # ready (0), and due rows the next claim takes
)
_PURGE = sa.text("DELETE FROM caraway_messages WHERE queue = :queue AND visible_at <= :now")
_SCHEDULED = sa.text(
    f"SELECT visible_at, queue, {MESSAGE_FIELDS} FROM caraway_messages "
    "WHERE owner IS NULL AND visible_at > :now ORDER BY visible_at LIMIT :limit"
)
_DEAD_LETTERS = sa.text(
    f"SELECT {MESSAGE_FIELDS}, id, queue, reason, failed_at "
    "FROM caraway_dead_letters ORDER BY id LIMIT :limit"
)
_REQUEUE = notifying(
    f"INSERT INTO caraway_messages (queue, priority, enqueued_at, {MESSAGE_FIELDS}) "
    f"SELECT queue, priority, :now, {MESSAGE_FIELDS} FROM gone ORDER BY id",
    before="gone AS (DELETE FROM caraway_dead_letters "
    "WHERE id = ANY(CAST(:ids AS bigint[])) RETURNING *), ",
)


class PostgresAdmin(QueueAdmin, Revocations, Migrations):
    """The admin of ``postgresql://`` brokers (options as the transport's)."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.db = broker_database(url, self.options)

    def _ready(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.db

    # -- queues ---------------------------------------------------------------------------

    def size(self, queue: str) -> int:
        params = {"queue": queue, "now": time.time()}
        return int(self._ready().transaction(lambda conn: conn.execute(_SIZE, params).scalar_one()))

    def purge(self, queue: str) -> int:
        params = {"queue": queue, "now": time.time()}
        return int(self._ready().transaction(lambda conn: conn.execute(_PURGE, params).rowcount))

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
        """Queues are routed by name; only fanout bindings are kept (for publish_fanout)."""
        if exchange_type != "fanout":
            return
        statement = sa.text(
            "INSERT INTO caraway_fanout (exchange, queue) VALUES (:exchange, :queue) "
            "ON CONFLICT DO NOTHING"
        )
        params = {"exchange": exchange, "queue": queue}
        self._ready().transaction(lambda conn: conn.execute(statement, params))

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:
        statement = sa.text(
            "DELETE FROM caraway_fanout WHERE exchange = :exchange AND queue = :queue"
        )
        params = {"exchange": exchange, "queue": queue}
        self._ready().transaction(lambda conn: conn.execute(statement, params))

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        params = {"now": time.time(), "limit": limit}
        rows = self._ready().transaction(lambda conn: conn.execute(_SCHEDULED, params).all())
        return [(float(row[0]), str(row[1]), message_from(row[2:])) for row in rows]

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        rows = self._ready().transaction(
            lambda conn: conn.execute(_DEAD_LETTERS, {"limit": limit}).all()
        )
        return [
            DeadLetter(
                id=int(row[7]),
                queue=row[8],
                reason=row[9],
                message=message_from(row),
                failed_at=float(row[10]),
            )
            for row in rows
        ]

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        def requeue(conn: Connection) -> int:
            wanted = ids
            if wanted is None:
                wanted = list(
                    conn.execute(sa.text("SELECT id FROM caraway_dead_letters")).scalars()
                )
            numbers = [int(value) for value in wanted if str(value).isdigit()]
            params = {"ids": numbers, "now": time.time()}
            return int(conn.execute(_REQUEUE, params).one()[0])

        return self._ready().transaction(requeue)

    def purge_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        if ids is None:
            statement = sa.text("DELETE FROM caraway_dead_letters")
            return int(self._ready().transaction(lambda conn: conn.execute(statement).rowcount))
        wanted = [int(value) for value in ids]
        if not wanted:
            return 0
        chosen = sa.text("DELETE FROM caraway_dead_letters WHERE id = ANY(:ids)")
        return int(
            self._ready().transaction(lambda conn: conn.execute(chosen, {"ids": wanted}).rowcount)
        )

    # -- revocations ----------------------------------------------------------------------

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        now = time.time()
        rows = [{"task_id": task_id, "expires_at": now + expires} for task_id in task_ids]

        def record(conn: Connection) -> None:
            conn.execute(
                sa.text("DELETE FROM caraway_revoked WHERE expires_at <= :now"), {"now": now}
            )
            if rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO caraway_revoked (task_id, expires_at) VALUES "
                        "(:task_id, :expires_at) ON CONFLICT (task_id) DO UPDATE "
                        "SET expires_at = excluded.expires_at"
                    ),
                    rows,
                )

        self._ready().transaction(record)

    def revoked_ids(self) -> list[str]:
        statement = sa.text("SELECT task_id FROM caraway_revoked WHERE expires_at > :now")
        found = self._ready().transaction(
            lambda conn: conn.execute(statement, {"now": time.time()}).scalars().all()
        )
        return [str(task_id) for task_id in found]

    # -- migrations -----------------------------------------------------------------------

    def migrate(self) -> list[str]:
        return self.db.transaction(migrate_broker)

    def migration_sql(self) -> list[str]:
        return list(BROKER_DDL)

    def close(self) -> None:
        self.db.close()
