"""The embedded default result store: tables in the same SQLite file as the SQLite broker.

``caraway_results`` holds one row per task (state, document, expires_at) and
``caraway_groups`` one per saved group. A final state is never overwritten: ``store`` is one
upsert whose update clause refuses rows already in a final state (unless expired). Waiting
uses ``PRAGMA data_version`` and a 1-50 ms backoff, see ``SQLiteFile.wait_for_change``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from caraway.brokers.contracts import Backend, ChordPart, ChordStore, GroupStore
from caraway.clients.sqlite import SQLiteFile, chunks, placeholders, sqlite_path
from caraway.exceptions import BackendError
from caraway.protocol.results import chord_member
from caraway.states import READY_STATES

#: how an awaiting coroutine paces its looks at the file's change counter (seconds)
_ASYNC_MIN_PAUSE = 0.002
_ASYNC_MAX_PAUSE = 0.1

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

_FINAL = ", ".join(f"'{state}'" for state in sorted(READY_STATES))
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


class _ChangeWatcher:
    """Reads the file's change counter for every coroutine of one loop awaiting a result,
    pausing longer while nothing changes, and wakes them all when it moves."""

    def __init__(self, db: SQLiteFile) -> None:
        self.db = db
        self.waiters = 0
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def wait(self, token: tuple[int, int], timeout: float) -> None:
        """Return once the file changed since ``token`` (or after ``timeout``)."""
        if self.db.change_token() != token:
            return
        self.waiters += 1
        changed = self.changed
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._watch(token))
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self.waiters -= 1

    async def _watch(self, token: tuple[int, int]) -> None:
        pause = _ASYNC_MIN_PAUSE
        while self.waiters:
            await asyncio.sleep(pause)
            now = self.db.change_token()
            if now == token:
                pause = min(pause * 2, _ASYNC_MAX_PAUSE)
                continue
            token, pause = now, _ASYNC_MIN_PAUSE
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()


class SQLiteBackend(Backend, GroupStore, ChordStore):
    """Results in a SQLite file (default: ``caraway.sqlite3``, shared with the broker).

    Option ``busy_timeout`` (s, default 5): how long SQLite waits for the write lock.
    """

    _chord_pid = -1

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.path = sqlite_path(url)
        self._db = SQLiteFile(
            self.path,
            schema=_SCHEMA,
            error=BackendError,
            busy_timeout=float(self.options.get("busy_timeout", 5.0)),
        )
        #: await result: one change watcher per event loop
        self._watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ChangeWatcher] = (
            weakref.WeakKeyDictionary()
        )

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        args = (task_id, state, document, _expires_at(expires), time.time())
        changed = self._db.write(lambda conn: conn.execute(_STORE, args).rowcount, notify=True)
        return bool(changed)

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """All documents in one transaction."""
        if not items:
            return
        now, deadline = time.time(), _expires_at(expires)
        rows = [(task_id, state, document, deadline, now) for task_id, document, state, _ in items]
        self._db.write(lambda conn: conn.executemany(_STORE, rows), notify=True)

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

    async def await_ready(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """:meth:`wait` on the event loop, no thread: one watcher per loop reads the file's
        change counter between growing pauses for every awaiting coroutine, and each reads
        its document only once the file changed."""
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        watcher = self._watchers.get(asyncio.get_running_loop())
        if watcher is None:
            watcher = self._watchers[asyncio.get_running_loop()] = _ChangeWatcher(self._db)
        while True:
            token = self._db.change_token()
            document = self.load(task_id)
            if document is not None and until(document):
                return document
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await watcher.wait(token, left)

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

    # -- chords: each join counted in one transaction -------------------------------------

    def _chord_tables(self) -> None:
        if self._chord_pid == os.getpid():
            return

        def create(conn: sqlite3.Connection) -> None:
            for statement in _CHORD_SCHEMA:
                conn.execute(statement)

        self._db.write(create)
        self._chord_pid = os.getpid()

    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        self._chord_tables()
        sql = (
            "INSERT INTO caraway_chords (group_id, size, expires_at) VALUES (?,?,?) "
            "ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, "
            "expires_at = excluded.expires_at"
        )
        args = (group_id, int(size), time.time() + expires)
        self._db.write(lambda conn: conn.execute(sql, args))

    def chord_extend(self, group_id: str, count: int) -> None:
        self._chord_tables()
        sql = "UPDATE caraway_chords SET extra = extra + ? WHERE group_id = ?"
        self._db.write(lambda conn: conn.execute(sql, (int(count), group_id)))

    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        self._chord_tables()
        return [self._join(part, expires) for part in parts]

    def _join(self, part: ChordPart, expires: float) -> list[Any] | None:
        score = _LAST if part.index is None else float(part.index)
        member = chord_member(part.task_id, part.state, part.result_json)
        marker = f"{part.task_id}:{part.index}"
        deadline = time.time() + expires
        found = self._db.write(
            lambda conn: _chord_join(conn, part.group_id, marker, score, member, deadline)
        )
        return None if found is None else [json.loads(item) for item in found]

    def chord_done(self, group_id: str) -> bool:
        self._chord_tables()

        def done(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE caraway_chords SET state = 'done' WHERE group_id = ? AND state = 'claimed'",
                (group_id,),
            ).rowcount
            conn.execute("DELETE FROM caraway_chord_parts WHERE group_id = ?", (group_id,))
            return bool(changed)

        return self._db.write(done)

    def close(self) -> None:
        self._db.close()


# -- chord helpers ------------------------------------------------------------------------

_CHORD_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS caraway_chords (group_id TEXT PRIMARY KEY, size INTEGER, "
    "extra INTEGER NOT NULL DEFAULT 0, joined INTEGER NOT NULL DEFAULT 0, "
    "state TEXT NOT NULL DEFAULT 'open', claimed_at REAL, expires_at REAL)",
    "CREATE TABLE IF NOT EXISTS caraway_chord_parts (group_id TEXT NOT NULL, "
    "marker TEXT NOT NULL, score REAL NOT NULL, member TEXT NOT NULL, "
    "PRIMARY KEY (group_id, marker))",
)
#: a completer that died holding the claim for this long is replaced (Redis: the .c TTL)
_CHORD_CLAIM_STALE = 21.0
#: a header task without an index sorts last, as Redis' "+inf" score does
_LAST = 1e308


def _chord_join(
    conn: sqlite3.Connection,
    group_id: str,
    marker: str,
    score: float,
    member: str,
    expires_at: float,
) -> list[str] | None:
    row = conn.execute(
        "SELECT size, extra, joined, state, claimed_at FROM caraway_chords WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is not None and row[3] == "done":
        return None
    added = conn.execute(
        "INSERT OR IGNORE INTO caraway_chord_parts (group_id, marker, score, member) "
        "VALUES (?,?,?,?)",
        (group_id, marker, score, member),
    ).rowcount
    if row is None:
        conn.execute(
            "INSERT INTO caraway_chords (group_id, joined, expires_at) VALUES (?,?,?)",
            (group_id, added, expires_at),
        )
        return None
    size, extra, joined, state, claimed_at = row
    joined += added
    conn.execute("UPDATE caraway_chords SET joined = ? WHERE group_id = ?", (joined, group_id))
    now = time.time()
    stale = state == "claimed" and (claimed_at or 0) < now - _CHORD_CLAIM_STALE
    if size is None or joined < size + extra or not (state == "open" or stale):
        return None
    conn.execute(
        "UPDATE caraway_chords SET state = 'claimed', claimed_at = ? WHERE group_id = ?",
        (now, group_id),
    )
    rows = conn.execute(
        "SELECT member FROM caraway_chord_parts WHERE group_id = ? ORDER BY score, rowid",
        (group_id,),
    )
    return [str(item[0]) for item in rows]
