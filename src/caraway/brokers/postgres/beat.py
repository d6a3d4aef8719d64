"""Periodic-task state on the PostgreSQL broker, in the broker's own database.

``caraway_beat_lease`` holds one row per namespace: the leader and its lease end, taken and
renewed with the row locked (so two beat instances can never both hold it).
``caraway_beat_entries`` keeps each entry's last scheduled instant and run count,
``caraway_beat_runs`` one row per claimed run (primary key: namespace, entry, scheduled
instant; kept an hour), ``caraway_beat_runtime`` the runtime entries. Lease ends are the
database server's clock (``now()``), so beat instances on machines whose clocks differ
still agree on who leads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from caraway.brokers.contracts import (
    BeatAdvance,
    BeatEntryState,
    BeatLeader,
    BeatRun,
    BeatState,
    BeatStore,
)
from caraway.brokers.postgres.transport import broker_database, ensure_broker_tables
from caraway.clients.sql import SQLDatabase

#: run rows are kept this long (ms): past it, an entry's last_ms alone fences the run
RUN_KEY_MS = 3_600_000
#: seconds between sweeps of old run rows
_PRUNE_EVERY = 60.0
_NOW = "extract(epoch from clock_timestamp())"

_LEASE = sa.text(
    f"SELECT holder, node, since, renewed, expires, {_NOW} FROM caraway_beat_lease "
    "WHERE namespace = :namespace"
)


def _run_json(run: BeatRun | None) -> str | None:
    if run is None:
        return None
    return json.dumps([run.scheduled_ms, run.task_id, run.holder, run.sent_at])


def _run_of(text: str | None) -> BeatRun | None:
    if not text:
        return None
    scheduled_ms, task_id, holder, sent_at = json.loads(text)
    return BeatRun(int(scheduled_ms), str(task_id), str(holder), float(sent_at))


class PostgresBeatStore(BeatStore):
    """The beat store of ``postgresql://`` brokers (options as the transport's)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.db = broker_database(url, self.options)
        self._pruned_at = 0.0

    def _ready(self) -> SQLDatabase:
        ensure_broker_tables(self.db)
        return self.db

    def _leads(self, conn: Connection, *, lock: bool = False) -> bool:
        statement = f"{_LEASE.text}{' FOR UPDATE' if lock else ''}"
        row = conn.execute(sa.text(statement), {"namespace": self.namespace}).first()
        return row is not None and row[0] == self.holder and float(row[4]) > float(row[5])

    def lead(self) -> bool:
        params = {
            "namespace": self.namespace,
            "holder": self.holder,
            "node": self.node,
            "lease": self.lease_seconds,
        }

        def take(conn: Connection) -> bool:
            # the row exists before it is locked, so two first leaders cannot both insert
            conn.execute(
                sa.text(
                    "INSERT INTO caraway_beat_lease (namespace, holder, node, since, renewed, "
                    "expires) VALUES (:namespace, '', '', 0, 0, 0) ON CONFLICT DO NOTHING"
                ),
                params,
            )
            row = conn.execute(sa.text(f"{_LEASE.text} FOR UPDATE"), params).one()
            holder, expires, now = row[0], float(row[4]), float(row[5])
            if holder not in ("", self.holder) and expires > now:
                return False
            since = "since" if holder == self.holder else _NOW
            conn.execute(
                sa.text(
                    f"UPDATE caraway_beat_lease SET holder = :holder, node = :node, "
                    f"since = {since}, renewed = {_NOW}, expires = {_NOW} + :lease "
                    "WHERE namespace = :namespace"
                ),
                params,
            )
            return True

        return self._ready().transaction(take)

    def resign(self) -> None:
        statement = sa.text(
            "UPDATE caraway_beat_lease SET holder = '', expires = 0 "
            "WHERE namespace = :namespace AND holder = :holder"
        )
        params = {"namespace": self.namespace, "holder": self.holder}
        self._ready().transaction(lambda conn: conn.execute(statement, params))

    def state(self) -> BeatState:
        def read(conn: Connection) -> BeatState:
            namespace = {"namespace": self.namespace}
            lease = conn.execute(_LEASE, namespace).first()
            leader = None
            if lease is not None and lease[0] and float(lease[4]) > float(lease[5]):
                leader = BeatLeader(
                    lease[0], lease[1], since=float(lease[2]), renewed=float(lease[3])
                )
            entries = {
                str(name): BeatEntryState(int(last_ms), int(count), _run_of(last_run))
                for name, last_ms, count, last_run in conn.execute(
                    sa.text(
                        "SELECT name, last_ms, count, last_run FROM caraway_beat_entries "
                        "WHERE namespace = :namespace"
                    ),
                    namespace,
                )
            }
            runtime = {
                str(name): bytes(spec)
                for name, spec in conn.execute(
                    sa.text(
                        "SELECT name, spec FROM caraway_beat_runtime WHERE namespace = :namespace"
                    ),
                    namespace,
                )
            }
            return BeatState(leader, entries, runtime)

        return self._ready().transaction(read)

    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        prune = time.monotonic() - self._pruned_at > _PRUNE_EVERY
        if prune:
            self._pruned_at = time.monotonic()

        def apply(conn: Connection) -> list[bool]:
            # the lease row stays locked to the commit: a new leader waits for it
            if not self._leads(conn, lock=True):
                return [False] * len(changes)
            applied = [self._apply(conn, change) for change in changes]
            if prune:
                conn.execute(
                    sa.text(
                        "DELETE FROM caraway_beat_runs WHERE namespace = :namespace "
                        "AND scheduled_ms < :oldest"
                    ),
                    {"namespace": self.namespace, "oldest": int(time.time() * 1000) - RUN_KEY_MS},
                )
            return applied

        return self._ready().transaction(apply) if changes else []

    def _apply(self, conn: Connection, change: BeatAdvance) -> bool:
        key = {"namespace": self.namespace, "name": change.name}
        row = conn.execute(
            sa.text(
                "SELECT last_ms, count, last_run FROM caraway_beat_entries "
                "WHERE namespace = :namespace AND name = :name FOR UPDATE"
            ),
            key,
        ).first()
        if (int(row[0]) if row else None) != change.expected_ms:
            return False
        scheduled = [run.scheduled_ms for run in change.runs]
        if scheduled:
            taken = conn.execute(
                sa.text(
                    "SELECT 1 FROM caraway_beat_runs WHERE namespace = :namespace AND "
                    "name = :name AND scheduled_ms = ANY(CAST(:scheduled AS bigint[]))"
                ),
                {**key, "scheduled": scheduled},
            ).first()
            if taken:
                return False
            conn.execute(
                sa.text(
                    "INSERT INTO caraway_beat_runs (namespace, name, scheduled_ms, task_id) "
                    "VALUES (:namespace, :name, :scheduled_ms, :task_id)"
                ),
                [
                    {**key, "scheduled_ms": run.scheduled_ms, "task_id": run.task_id}
                    for run in change.runs
                ],
            )
        count = (int(row[1]) if row else 0) + len(change.runs)
        last_run = _run_json(change.runs[-1]) if change.runs else (row[2] if row else None)
        conn.execute(
            sa.text(
                "INSERT INTO caraway_beat_entries (namespace, name, last_ms, count, last_run) "
                "VALUES (:namespace, :name, :last_ms, :count, :last_run) "
                "ON CONFLICT (namespace, name) DO UPDATE SET last_ms = excluded.last_ms, "
                "count = excluded.count, last_run = excluded.last_run"
            ),
            {**key, "last_ms": change.to_ms, "count": count, "last_run": last_run},
        )
        return True

    def forget(self, names: Sequence[str]) -> None:
        def drop(conn: Connection) -> None:
            if names and self._leads(conn, lock=True):
                conn.execute(
                    sa.text(
                        "DELETE FROM caraway_beat_entries WHERE namespace = :namespace "
                        "AND name = ANY(CAST(:names AS text[]))"
                    ),
                    {"namespace": self.namespace, "names": list(names)},
                )

        self._ready().transaction(drop)

    def put_entry(self, name: str, spec: bytes) -> None:
        statement = sa.text(
            "INSERT INTO caraway_beat_runtime (namespace, name, spec) VALUES "
            "(:namespace, :name, :spec) ON CONFLICT (namespace, name) DO UPDATE "
            "SET spec = excluded.spec"
        )
        params = {"namespace": self.namespace, "name": name, "spec": bytes(spec)}
        self._ready().transaction(lambda conn: conn.execute(statement, params))

    def remove_entry(self, name: str) -> bool:
        statement = sa.text(
            "DELETE FROM caraway_beat_runtime WHERE namespace = :namespace AND name = :name"
        )
        params = {"namespace": self.namespace, "name": name}
        removed = self._ready().transaction(lambda conn: conn.execute(statement, params).rowcount)
        return bool(removed)

    def close(self) -> None:
        self.db.close()
