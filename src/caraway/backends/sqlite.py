"""The embedded default result store: tables in the same SQLite file as the SQLite broker.

``caraway_results`` holds one row per task (state, document, expires_at) and
``caraway_groups`` one per saved group. A final state is never overwritten: ``store`` is one
upsert whose update clause refuses rows already in a final state (unless expired). Waiting
uses ``PRAGMA data_version`` and a 1-50 ms backoff, see ``SQLiteFile.wait_for_change``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from caraway.backends.base import READY, Backend
from caraway.exceptions import BackendError
from caraway.transports.sqlite import SQLiteFile, chunks, placeholders, sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_results (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    document BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS caraway_results_expiry
    ON caraway_results (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS caraway_groups (
    group_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    expires_at REAL
);
"""

_FINAL = ", ".join(f"'{state}'" for state in sorted(READY))
_STORE = (
    "INSERT INTO caraway_results (task_id, state, document, expires_at) VALUES (?,?,?,?) "
    "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
    "document = excluded.document, expires_at = excluded.expires_at "
    f"WHERE caraway_results.state NOT IN ({_FINAL}) "
    "OR caraway_results.expires_at <= ?"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _expires_at(expires: float | None) -> float | None:
    return None if expires is None else time.time() + expires


class SQLiteBackend(Backend):
    """Results in a SQLite file (default: ``caraway.sqlite3``, shared with the broker).

    Option ``busy_timeout`` (s, default 5): how long SQLite waits for the write lock.
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.path = sqlite_path(url)
        self._db = SQLiteFile(
            self.path,
            schema=_SCHEMA,
            error=BackendError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )

    def store(self, task_id: str, document: bytes, *, state: str, expires: float | None) -> bool:
        args = (task_id, state, document, _expires_at(expires), time.time())
        changed = self._db.write(lambda conn: conn.execute(_STORE, args).rowcount, notify=True)
        return bool(changed)

    def load(self, task_id: str) -> bytes | None:
        sql = f"SELECT document FROM caraway_results WHERE task_id = ? AND {_LIVE}"
        args = (task_id, time.time())
        row = self._db.read(lambda conn: conn.execute(sql, args).fetchone())
        return None if row is None else bytes(row[0])

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        now = time.time()

        def load(conn: sqlite3.Connection) -> None:
            for part in chunks(task_ids):
                sql = (
                    "SELECT task_id, document FROM caraway_results "
                    f"WHERE task_id IN ({placeholders(len(part))}) AND {_LIVE}"
                )
                found.update((row[0], bytes(row[1])) for row in conn.execute(sql, (*part, now)))

        self._db.read(load)
        return [found.get(task_id) for task_id in task_ids]

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        while True:
            # the token is taken before reading, so a store in between is never missed
            token = self._db.change_token()
            document = self.load(task_id)
            if document is not None and until(document):
                return document
            if time.monotonic() >= deadline:
                return None
            self._db.wait_for_change(token, deadline=deadline)

    def forget(self, task_id: str) -> None:
        sql = "DELETE FROM caraway_results WHERE task_id = ?"
        self._db.write(lambda conn: conn.execute(sql, (task_id,)), notify=True)

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        sql = (
            "INSERT OR REPLACE INTO caraway_groups (group_id, document, expires_at) VALUES (?,?,?)"
        )
        args = (group_id, document, _expires_at(expires))
        self._db.write(lambda conn: conn.execute(sql, args), notify=True)

    def load_group(self, group_id: str) -> bytes | None:
        sql = f"SELECT document FROM caraway_groups WHERE group_id = ? AND {_LIVE}"
        args = (group_id, time.time())
        row = self._db.read(lambda conn: conn.execute(sql, args).fetchone())
        return None if row is None else bytes(row[0])

    def forget_group(self, group_id: str) -> None:
        sql = "DELETE FROM caraway_groups WHERE group_id = ?"
        self._db.write(lambda conn: conn.execute(sql, (group_id,)))

    def cleanup(self) -> int:
        def cleanup(conn: sqlite3.Connection) -> int:
            now = time.time()
            removed = conn.execute("DELETE FROM caraway_results WHERE expires_at <= ?", (now,))
            groups = conn.execute("DELETE FROM caraway_groups WHERE expires_at <= ?", (now,))
            return int(removed.rowcount) + int(groups.rowcount)

        return self._db.write(cleanup)

    def close(self) -> None:
        self._db.close()
