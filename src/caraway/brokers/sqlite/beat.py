"""Periodic-task state on the embedded SQLite broker, in the broker's own file.

``caraway_beat_lease`` holds one row per namespace: the leader and its lease end, taken
and renewed in a write transaction (so two processes can never both hold it).
``caraway_beat_entries`` keeps each entry's last scheduled instant and run count,
``caraway_beat_runs`` one row per claimed run (primary key: namespace, entry, scheduled
instant; kept an hour), ``caraway_beat_runtime`` the runtime entries. Lease ends are wall
times: every process sharing the file shares the machine's clock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from caraway.brokers.contracts import (
    BeatAdvance,
    BeatEntryState,
    BeatLeader,
    BeatRun,
    BeatState,
    BeatStore,
)
from caraway.clients.sqlite import SQLiteFile, sqlite_path
from caraway.exceptions import BrokerError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_beat_lease (
    namespace TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    node TEXT NOT NULL,
    since REAL NOT NULL,
    renewed REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_beat_entries (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_run TEXT,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS caraway_beat_runs (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    scheduled_ms INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (namespace, name, scheduled_ms)
);
CREATE TABLE IF NOT EXISTS caraway_beat_runtime (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec BLOB NOT NULL,
    PRIMARY KEY (namespace, name)
);
"""

#: run rows are kept this long (ms): past it, an entry's last_ms alone fences the run
RUN_KEY_MS = 3_600_000
#: seconds between sweeps of old run rows
_PRUNE_EVERY = 60.0


def _run_json(run: BeatRun | None) -> str | None:
    if run is None:
        return None
    return json.dumps([run.scheduled_ms, run.task_id, run.holder, run.sent_at])


def _run_of(text: str | None) -> BeatRun | None:
    if not text:
        return None
    scheduled_ms, task_id, holder, sent_at = json.loads(text)
    return BeatRun(int(scheduled_ms), str(task_id), str(holder), float(sent_at))


class SQLiteBeatStore(BeatStore):
    """The beat store of ``sqlite://`` brokers. Option ``busy_timeout`` as the transport's."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._db = SQLiteFile(
            sqlite_path(url),
            schema=_SCHEMA,
            error=BrokerError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )
        self._pruned_at = 0.0

    def _leads(self, conn: sqlite3.Connection, now: float) -> bool:
        row = conn.execute(
            "SELECT holder, expires FROM caraway_beat_lease WHERE namespace = ?",
            (self.namespace,),
        ).fetchone()
        return row is not None and row[0] == self.holder and row[1] > now

    def lead(self) -> bool:
        def take(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = conn.execute(
                "SELECT holder, expires FROM caraway_beat_lease WHERE namespace = ?",
                (self.namespace,),
            ).fetchone()
            if row is not None and row[0] != self.holder and row[1] > now:
                return False
            if row is not None and row[0] == self.holder:
                conn.execute(
                    "UPDATE caraway_beat_lease SET renewed = ?, expires = ? WHERE namespace = ?",
                    (now, now + self.lease_seconds, self.namespace),
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO caraway_beat_lease VALUES (?, ?, ?, ?, ?, ?)",
                    (self.namespace, self.holder, self.node, now, now, now + self.lease_seconds),
                )
            return True

        return self._db.write(take)

    def resign(self) -> None:
        self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM caraway_beat_lease WHERE namespace = ? AND holder = ?",
                (self.namespace, self.holder),
            )
        )

    def state(self) -> BeatState:
        def read(conn: sqlite3.Connection) -> BeatState:
            namespace = (self.namespace,)
            lease = conn.execute(
                "SELECT holder, node, since, renewed, expires FROM caraway_beat_lease "
                "WHERE namespace = ?",
                namespace,
            ).fetchone()
            leader = None
            if lease is not None and lease[4] > time.time():
                leader = BeatLeader(lease[0], lease[1], since=lease[2], renewed=lease[3])
            entries = {
                str(name): BeatEntryState(int(last_ms), int(count), _run_of(last_run))
                for name, last_ms, count, last_run in conn.execute(
                    "SELECT name, last_ms, count, last_run FROM caraway_beat_entries "
                    "WHERE namespace = ?",
                    namespace,
                )
            }
            runtime = {
                str(name): bytes(spec)
                for name, spec in conn.execute(
                    "SELECT name, spec FROM caraway_beat_runtime WHERE namespace = ?", namespace
                )
            }
            return BeatState(leader, entries, runtime)

        return self._db.read(read)

    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        def apply(conn: sqlite3.Connection) -> list[bool]:
            if not self._leads(conn, time.time()):
                return [False] * len(changes)
            applied = [self._apply(conn, change) for change in changes]
            if prune:
                oldest = int(time.time() * 1000) - RUN_KEY_MS
                conn.execute(
                    "DELETE FROM caraway_beat_runs WHERE namespace = ? AND scheduled_ms < ?",
                    (self.namespace, oldest),
                )
            return applied

        prune = time.monotonic() - self._pruned_at > _PRUNE_EVERY
        if prune:
            self._pruned_at = time.monotonic()
        return self._db.write(apply)

    def _apply(self, conn: sqlite3.Connection, change: BeatAdvance) -> bool:
        row = conn.execute(
            "SELECT last_ms, count, last_run FROM caraway_beat_entries "
            "WHERE namespace = ? AND name = ?",
            (self.namespace, change.name),
        ).fetchone()
        if (int(row[0]) if row else None) != change.expected_ms:
            return False
        for run in change.runs:
            taken = conn.execute(
                "SELECT 1 FROM caraway_beat_runs WHERE namespace = ? AND name = ? "
                "AND scheduled_ms = ?",
                (self.namespace, change.name, run.scheduled_ms),
            ).fetchone()
            if taken:
                return False
        conn.executemany(
            "INSERT INTO caraway_beat_runs VALUES (?, ?, ?, ?)",
            [(self.namespace, change.name, run.scheduled_ms, run.task_id) for run in change.runs],
        )
        count = (int(row[1]) if row else 0) + len(change.runs)
        last_run = _run_json(change.runs[-1]) if change.runs else (row[2] if row else None)
        conn.execute(
            "INSERT OR REPLACE INTO caraway_beat_entries VALUES (?, ?, ?, ?, ?)",
            (self.namespace, change.name, change.to_ms, count, last_run),
        )
        return True

    def forget(self, names: Sequence[str]) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            if self._leads(conn, time.time()):
                conn.executemany(
                    "DELETE FROM caraway_beat_entries WHERE namespace = ? AND name = ?",
                    [(self.namespace, name) for name in names],
                )

        self._db.write(drop)

    def put_entry(self, name: str, spec: bytes) -> None:
        self._db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO caraway_beat_runtime VALUES (?, ?, ?)",
                (self.namespace, name, bytes(spec)),
            )
        )

    def remove_entry(self, name: str) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            return bool(
                conn.execute(
                    "DELETE FROM caraway_beat_runtime WHERE namespace = ? AND name = ?",
                    (self.namespace, name),
                ).rowcount
            )

        return self._db.write(remove)

    def close(self) -> None:
        self._db.close()
