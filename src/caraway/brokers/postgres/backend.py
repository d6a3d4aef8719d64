"""The SQL result store (``db+postgresql://``, ``db+sqlite://``, ``db+mysql://``, and the
PostgreSQL broker's ``postgresql://``): Celery's database-backend tables, read and written
so a Celery client on the same database sees caraway's results and the reverse.

Layout: ``schema.py``; documents <-> rows: ``rows.py``. A final state is never overwritten:
``store`` is one upsert whose update clause refuses rows already final (unless expired).
Chords count in ``caraway_chords``/``caraway_chord_parts``, one transaction per batch with
the chord's row locked. The one thing to know: waiting is LISTEN/NOTIFY on PostgreSQL (a
trigger announces every write, Celery's too) and a short adaptive poll elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from caraway.brokers.contracts import Backend, ChordPart, ChordStore, GroupStore, Migrations
from caraway.brokers.postgres import rows as docs
from caraway.brokers.postgres.schema import (
    RESULTS_CHANNEL,
    migrate_results,
    result_tables,
    results_sql,
)
from caraway.clients.sql import SQLDatabase, chunks
from caraway.clients.sql_listen import Listener, listener_for
from caraway.exceptions import BackendError, BrokerConnectionError
from caraway.protocol.results import chord_member
from caraway.protocol.serializers import loads_json_plain
from caraway.states import READY_STATES

_FINAL = tuple(sorted(READY_STATES))
#: the adaptive poll where there are no notifications: from 5 ms up to this
_MAX_POLL = 0.25
#: a waiter on notifications still looks again this often (a missed NOTIFY costs this)
_RECHECK = 5.0
#: a completer that died holding the chord for this long is replaced (Redis: the .c TTL)
_CHORD_CLAIM_STALE = 21.0
#: a header task without an index sorts last, as Redis' "+inf" score does
_LAST = 1e308


class SQLBackend(Backend, GroupStore, ChordStore, Migrations):
    """Results in a SQL database through SQLAlchemy; see the module docstring.

    Options (the app fills them from Celery's ``database_*`` settings): ``table_names``,
    ``table_schemas``, ``engine_options``, ``engine_callback``, ``create_tables_at_setup``
    (migrate when opened rather than on first use), ``result_expires`` (seconds: ``cleanup``
    also drops rows Celery wrote that are older, as Celery's own cleanup does) and
    ``create_tables`` (default True; False: tables are made by ``caraway migrate`` only).
    """

    keeps_bytes = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        engine_options = dict(self.options.get("engine_options") or {})
        engine_options.setdefault("max_retries", self.options.get("max_retries", 3))
        if self.options.get("engine_callback") is not None:
            engine_options["engine_callback"] = self.options["engine_callback"]
        self.db = SQLDatabase(url, error=BackendError, options=engine_options)
        self.tables = result_tables(
            self.options.get("table_names"), self.options.get("table_schemas")
        )
        self.result_expires = self.options.get("result_expires")
        self._create = bool(self.options.get("create_tables", True))
        self._listener: Listener | None = None
        self._listener_pid = -1
        self._pg_store: sa.TextClause | None = None
        if self._create and self.options.get("create_tables_at_setup"):
            self._ready()

    # -- schema --------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Create or upgrade the tables now; returns what was done."""
        return self.db.transaction(lambda conn: migrate_results(conn, self.tables))

    def migration_sql(self) -> list[str]:
        return results_sql(self.tables, self.db.engine.dialect)

    def _ready(self) -> SQLDatabase:
        if self._create:
            self.db.prepare("results", lambda conn: _quiet(migrate_results(conn, self.tables)))
        return self.db

    # -- results -------------------------------------------------------------------------

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        row = self._row(task_id, document, state, expires)
        return bool(self._write([row]))

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """All documents in one statement (the last state of each task in the batch, or
        its first final one, as storing them one by one would leave)."""
        if not items:
            return
        rows = [self._row(task_id, doc, state, expires) for task_id, doc, state, _ in items]
        self._write(_one_per_task(rows))

    @staticmethod
    def _row(task_id: str, document: bytes, state: str, expires: float | None) -> dict[str, Any]:
        row = docs.task_row(task_id, document)
        row["status"] = state
        row["caraway_expires"] = None if expires is None else time.time() + expires
        return row

    def _write(self, rows: list[dict[str, Any]]) -> int:
        """Write ``rows`` (one per task) in one statement; returns how many were written."""
        db = self._ready()
        if db.dialect == "postgresql":
            # the hot path: one fixed statement (prepared by the server after a few runs),
            # committed on its own in one round trip
            statement = self._pg_store
            if statement is None:
                statement = self._pg_store = _pg_store_sql(self.tables.tasks, db.engine.dialect)
            params = _pg_store_params(rows)
            return int(db.autocommit(lambda conn: conn.execute(statement, params).rowcount))
        table = self.tables.tasks
        return int(
            db.transaction(lambda conn: conn.execute(_store_statement(conn, table, rows)).rowcount)
        )

    def load(self, task_id: str) -> bytes | None:
        found = self.load_many([task_id])
        return found[0]

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        table = self.tables.tasks
        columns = [table.c[name] for name in docs.TASK_COLUMNS]
        now = time.time()

        def read(conn: Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for part in chunks(list(dict.fromkeys(task_ids))):
                query = sa.select(*columns).where(table.c.task_id.in_(part), _live(table, now))
                for row in conn.execute(query):
                    found[row[0]] = docs.document_from_row(tuple(row))
            return found

        found = self._ready().transaction(read)
        return [found.get(task_id) for task_id in task_ids]

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        listener = self._notifications()
        if listener is None:
            return self._poll(task_id, until, deadline)
        try:
            sub = listener.subscribe(RESULTS_CHANNEL, [task_id])
        except BrokerConnectionError:  # no notifications now: wait the way other stores do
            return self._poll(task_id, until, deadline)
        with sub:
            while True:
                sub.clear()
                document = self.load(task_id)
                if document is not None and until(document):
                    return document
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sub.wait(min(left, _RECHECK))

    def _poll(self, task_id: str, until: Callable[[bytes], bool], deadline: float) -> bytes | None:
        pause = 0.005
        while True:
            document = self.load(task_id)
            if document is not None and until(document):
                return document
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, _MAX_POLL)

    def _notifications(self) -> Listener | None:
        if self.db.dialect != "postgresql" or self.db.engine.dialect.driver != "psycopg":
            return None
        if self._listener_pid != os.getpid():
            self._ready()
            self._listener = listener_for(self.db.engine)
            self._listener_pid = os.getpid()
        return self._listener

    def forget(self, task_id: str) -> None:
        table = self.tables.tasks
        self._ready().transaction(
            lambda conn: conn.execute(sa.delete(table).where(table.c.task_id == task_id))
        )

    def cleanup(self) -> int:
        """Drop expired rows; with ``result_expires``, also rows without caraway's expiry
        (Celery's) whose ``date_done`` is older, as Celery's ``backend_cleanup`` does."""
        now = time.time()
        tables = self.tables

        def clean(conn: Connection) -> int:
            removed = 0
            for table in (tables.tasks, tables.groups):
                expired = table.c.caraway_expires <= now
                if self.result_expires is not None:
                    cutoff = _utc_naive(now - float(self.result_expires))
                    expired = sa.or_(
                        expired,
                        sa.and_(table.c.caraway_expires.is_(None), table.c.date_done < cutoff),
                    )
                removed += conn.execute(sa.delete(table).where(expired)).rowcount
            stale = sa.select(tables.chords.c.group_id).where(tables.chords.c.expires_at <= now)
            conn.execute(
                sa.delete(tables.chord_parts).where(tables.chord_parts.c.group_id.in_(stale))
            )
            removed += conn.execute(
                sa.delete(tables.chords).where(tables.chords.c.expires_at <= now)
            ).rowcount
            return removed

        return self._ready().transaction(clean)

    # -- groups --------------------------------------------------------------------------

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        row = docs.group_row(group_id, document)
        row["caraway_expires"] = None if expires is None else time.time() + expires
        table = self.tables.groups

        def save(conn: Connection) -> None:
            conn.execute(sa.delete(table).where(table.c.taskset_id == group_id))
            conn.execute(sa.insert(table).values(**row))

        self._ready().transaction(save)

    def load_group(self, group_id: str) -> bytes | None:
        table = self.tables.groups
        query = sa.select(table.c.result, table.c.caraway_meta).where(
            table.c.taskset_id == group_id, _live(table, time.time())
        )
        row = self._ready().transaction(lambda conn: conn.execute(query).first())
        return None if row is None else docs.document_from_group_row(row[0], row[1])

    def forget_group(self, group_id: str) -> None:
        table = self.tables.groups
        self._ready().transaction(
            lambda conn: conn.execute(sa.delete(table).where(table.c.taskset_id == group_id))
        )

    # -- chords: each batch counted in one transaction, each chord's row locked ------------

    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        chords = self.tables.chords
        values = {"size": int(size), "expires_at": time.time() + expires}

        def set_size(conn: Connection) -> None:
            _ensure_chord(conn, chords, group_id, values["expires_at"])
            conn.execute(sa.update(chords).where(chords.c.group_id == group_id).values(**values))

        self._ready().transaction(set_size)

    def chord_extend(self, group_id: str, count: int) -> None:
        chords = self.tables.chords
        statement = (
            sa.update(chords)
            .where(chords.c.group_id == group_id)
            .values(extra=chords.c.extra + int(count))
        )
        self._ready().transaction(lambda conn: conn.execute(statement))

    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        if not parts:
            return []
        # chords locked in one order by every joiner, so two batches cannot deadlock
        order = sorted(range(len(parts)), key=lambda i: parts[i].group_id)
        deadline = time.time() + expires

        def join(conn: Connection) -> dict[int, list[Any] | None]:
            return {i: self._join(conn, parts[i], deadline) for i in order}

        answers = self._ready().transaction(join)
        return [answers[i] for i in range(len(parts))]

    def _join(self, conn: Connection, part: ChordPart, expires_at: float) -> list[Any] | None:
        chords, parts = self.tables.chords, self.tables.chord_parts
        _ensure_chord(conn, chords, part.group_id, expires_at)
        row = conn.execute(
            sa.select(
                chords.c.size, chords.c.extra, chords.c.joined, chords.c.state, chords.c.claimed_at
            )
            .where(chords.c.group_id == part.group_id)
            .with_for_update()
        ).one()
        size, extra, joined, state, claimed_at = row
        if state == "done":
            return None
        member = chord_member(part.task_id, part.state, part.result_json).encode()
        values = {
            "group_id": part.group_id,
            "marker": f"{part.task_id}:{part.index}",
            "score": _LAST if part.index is None else float(part.index),
            "member": member,
        }
        added = conn.execute(_insert_ignore(conn, parts, values)).rowcount
        joined += max(added, 0)
        now = time.time()
        stale = state == "claimed" and (claimed_at or 0) < now - _CHORD_CLAIM_STALE
        complete = size is not None and joined >= size + extra and (state == "open" or stale)
        update: dict[str, Any] = {"joined": joined, "expires_at": expires_at}
        if complete:
            update.update(state="claimed", claimed_at=now)
        conn.execute(sa.update(chords).where(chords.c.group_id == part.group_id).values(**update))
        if not complete:
            return None
        members = conn.execute(
            sa.select(parts.c.member)
            .where(parts.c.group_id == part.group_id)
            .order_by(parts.c.score, parts.c.id)
        )
        return [loads_json_plain(bytes(item[0])) for item in members]

    def chord_done(self, group_id: str) -> bool:
        chords, parts = self.tables.chords, self.tables.chord_parts

        def done(conn: Connection) -> bool:
            changed = conn.execute(
                sa.update(chords)
                .where(chords.c.group_id == group_id, chords.c.state == "claimed")
                .values(state="done")
            ).rowcount
            conn.execute(sa.delete(parts).where(parts.c.group_id == group_id))
            return bool(changed)

        return self._ready().transaction(done)

    def close(self) -> None:
        self.db.close()


# -- statements, per dialect -----------------------------------------------------------------


def _quiet(_done: list[str]) -> None:
    """Migrations on first use report nothing; ``caraway migrate`` prints what it did."""


def _utc_naive(moment: float) -> Any:
    from datetime import datetime, timezone  # noqa: PLC0415 - cleanup only

    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None)


def _live(table: sa.Table, now: float) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.caraway_expires.is_(None), table.c.caraway_expires > now)


#: the stored columns and their PostgreSQL array types, in the order the store binds them
_PG_COLUMNS = (
    ("task_id", "varchar"),
    ("status", "varchar"),
    ("result", "bytea"),
    ("date_done", "timestamp"),
    ("traceback", "text"),
    ("children", "bytea"),
    ("name", "varchar"),
    ("args", "bytea"),
    ("kwargs", "bytea"),
    ("worker", "varchar"),
    ("retries", "int"),
    ("queue", "varchar"),
    ("stamps", "bytea"),
    ("caraway_meta", "bytea"),
    ("caraway_expires", "float8"),
)


def _pg_store_sql(table: sa.Table, dialect: Any) -> sa.TextClause:
    """The PostgreSQL upsert of many rows, bound as one array per column (see _store_statement
    for what it refuses)."""
    preparer = dialect.identifier_preparer
    sequence = table.c.id.default
    assert isinstance(sequence, sa.Sequence)
    names = ", ".join(preparer.quote(name) for name, _ in _PG_COLUMNS)
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _PG_COLUMNS)
    updates = ", ".join(
        f"{preparer.quote(name)} = excluded.{preparer.quote(name)}"
        for name, _ in _PG_COLUMNS
        if name != "task_id"
    )
    final = ", ".join(f"'{state}'" for state in _FINAL)
    return sa.text(
        f"INSERT INTO {preparer.format_table(table)} AS t (id, {names}) "
        f"SELECT nextval('{preparer.format_sequence(sequence)}'), * FROM unnest({arrays}) "
        f"ON CONFLICT (task_id) DO UPDATE SET {updates} WHERE NOT (t.status IN ({final}) "
        "AND (t.caraway_expires IS NULL OR t.caraway_expires > :now))"
    )


def _pg_store_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {name: [row[name] for row in rows] for name, _ in _PG_COLUMNS}
    params["now"] = time.time()
    return params


def _one_per_task(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task (an upsert may touch a row once): the last, or the first final."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        previous = chosen.get(row["task_id"])
        if previous is None or previous["status"] not in _FINAL:
            chosen[row["task_id"]] = row
    return list(chosen.values())


def _store_statement(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> Any:
    """Insert, or update rows that are not final (or have expired): one statement."""
    refused = sa.and_(
        table.c.status.in_(_FINAL),
        sa.or_(table.c.caraway_expires.is_(None), table.c.caraway_expires > time.time()),
    )
    if conn.dialect.name == "mysql":
        return _mysql_store(table, rows, refused)
    # rowcount is only kept for INSERTs when asked: it says whether the upsert wrote
    statement = _on_conflict_insert(conn, table, rows)
    columns = [column for column in rows[0] if column not in ("task_id", "id")]
    changes = {column: statement.excluded[column] for column in columns}
    return statement.on_conflict_do_update(
        index_elements=[table.c.task_id], set_=changes, where=sa.not_(refused)
    ).execution_options(preserve_rowcount=True)


def _on_conflict_insert(
    conn: Connection, table: sa.Table, values: dict[str, Any] | list[dict[str, Any]]
) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).values(values)
    return sqlite.insert(table).values(values)


def _mysql_store(
    table: sa.Table, rows: list[dict[str, Any]], refused: sa.ColumnElement[bool]
) -> Any:
    """MySQL's upsert: ON DUPLICATE KEY UPDATE assigns left to right, each assignment
    seeing the ones before it, so the refusal is decided once, by the first assignment,
    into a session variable the others read."""
    statement = mysql.insert(table).values(rows)
    new = statement.inserted
    decided = refused.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True})
    columns = [column for column in rows[0] if column not in ("task_id", "id")]
    updates: list[tuple[str, Any]] = []
    for position, column in enumerate(columns):
        test: Any = sa.literal_column(
            f"(@caraway_refused := ({decided}))" if position == 0 else "@caraway_refused"
        )
        updates.append((column, sa.func.if_(test, table.c[column], new[column])))
    return statement.on_duplicate_key_update(updates).execution_options(preserve_rowcount=True)


def _insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> Any:
    """INSERT unless the key exists; its rowcount says which."""
    if conn.dialect.name == "mysql":
        statement: Any = mysql.insert(table).values(**values).prefix_with("IGNORE")
    else:
        statement = _on_conflict_insert(conn, table, values).on_conflict_do_nothing()
    return statement.execution_options(preserve_rowcount=True)


def _ensure_chord(conn: Connection, chords: sa.Table, group_id: str, expires_at: float) -> None:
    conn.execute(_insert_ignore(conn, chords, {"group_id": group_id, "expires_at": expires_at}))
