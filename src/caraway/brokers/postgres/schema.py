"""The tables of the SQL result store (any dialect) and of the PostgreSQL broker, and the one
migration path that creates or upgrades them (``caraway migrate``, or on first use).

Results keep Celery's layout: ``celery_taskmeta`` and ``celery_tasksetmeta`` as Celery's
database backend creates them (names and schemas from ``database_table_names`` /
``database_table_schemas``), with Celery's extended columns and two nullable columns of
caraway's (``caraway_meta``: document fields Celery has no column for, such as
``group_id``; ``caraway_expires``: unix time the row expires) that Celery never reads.
The one thing to know: every step is idempotent (``IF NOT EXISTS``, missing columns
added), so a table Celery created is upgraded in place and a second run does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

#: the result store's schema version recorded in ``caraway_schema``
RESULTS_VERSION = 1
BROKER_VERSION = 1
#: NOTIFY channel a stored result is announced on (payload: the task id)
RESULTS_CHANNEL = "caraway_results"

_VERSIONS = sa.MetaData()
_SCHEMA_TABLE = sa.Table(
    "caraway_schema",
    _VERSIONS,
    sa.Column("component", sa.String(50), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class ResultTables:
    """Celery's two result tables and caraway's chord tables, for one naming."""

    metadata: sa.MetaData
    tasks: sa.Table
    groups: sa.Table
    chords: sa.Table
    chord_parts: sa.Table


def result_tables(
    names: Mapping[str, str] | None = None, schemas: Mapping[str, str] | None = None
) -> ResultTables:
    """The tables, named as Celery's ``database_table_names``/``..._schemas`` say."""
    names, schemas = names or {}, schemas or {}
    metadata = sa.MetaData()
    task_schema, group_schema = schemas.get("task"), schemas.get("group")
    tasks = sa.Table(
        names.get("task", "celery_taskmeta"),
        metadata,
        sa.Column(
            "id",
            sa.Integer,
            sa.Sequence("task_id_sequence", schema=task_schema),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.String(155), unique=True),
        sa.Column("status", sa.String(50)),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("children", sa.LargeBinary, nullable=True),
        # Celery's result_extended columns
        sa.Column("name", sa.String(155), nullable=True),
        sa.Column("args", sa.LargeBinary, nullable=True),
        sa.Column("kwargs", sa.LargeBinary, nullable=True),
        sa.Column("worker", sa.String(155), nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("queue", sa.String(155), nullable=True),
        sa.Column("stamps", sa.LargeBinary, nullable=True),
        # caraway's
        sa.Column("caraway_meta", sa.LargeBinary, nullable=True),
        sa.Column("caraway_expires", sa.Double, nullable=True, index=True),
        schema=task_schema,
        sqlite_autoincrement=True,
        # rowcount must say whether an upsert wrote (RETURNING would hide it)
        implicit_returning=False,
    )
    groups = sa.Table(
        names.get("group", "celery_tasksetmeta"),
        metadata,
        sa.Column(
            "id",
            sa.Integer,
            sa.Sequence("taskset_id_sequence", schema=group_schema),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("taskset_id", sa.String(155), unique=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        sa.Column("caraway_meta", sa.LargeBinary, nullable=True),
        sa.Column("caraway_expires", sa.Double, nullable=True),
        schema=group_schema,
        sqlite_autoincrement=True,
        implicit_returning=False,
    )
    chords = sa.Table(
        "caraway_chords",
        metadata,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("size", sa.Integer, nullable=True),
        sa.Column("extra", sa.Integer, nullable=False, server_default="0"),
        sa.Column("joined", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(10), nullable=False, server_default="open"),
        sa.Column("claimed_at", sa.Double, nullable=True),
        sa.Column("expires_at", sa.Double, nullable=True, index=True),
        schema=task_schema,
    )
    chord_parts = sa.Table(
        "caraway_chord_parts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(155), nullable=False),
        sa.Column("marker", sa.String(200), nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("member", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("group_id", "marker", name="caraway_chord_parts_marker"),
        schema=task_schema,
        implicit_returning=False,
    )
    return ResultTables(metadata, tasks, groups, chords, chord_parts)


# -- migrating the result store -------------------------------------------------------------


def migrate_results(conn: Connection, tables: ResultTables) -> list[str]:
    """Create what is missing of the result tables; returns what it did (empty: nothing)."""
    done: list[str] = []
    _lock(conn, "caraway-results-schema")
    inspector = sa.inspect(conn)
    for table in tables.metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            table.create(conn)
            done.append(f"created table {_qualified(table)}")
            continue
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                _add_column(conn, table, column)
                done.append(f"added column {_qualified(table)}.{column.name}")
    if conn.dialect.name == "postgresql" and _add_notify_trigger(conn, tables.tasks):
        done.append(f"created the NOTIFY trigger on {_qualified(tables.tasks)}")
    _record_version(conn, "results", RESULTS_VERSION)
    return done


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _add_column(conn: Connection, table: sa.Table, column: sa.Column[object]) -> None:
    preparer = conn.dialect.identifier_preparer
    kind = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(
        f"ALTER TABLE {preparer.format_table(table)} "
        f"ADD COLUMN {preparer.quote(column.name)} {kind}"
    )
    for index in table.indexes:
        if [col.name for col in index.columns] == [column.name]:
            index.create(conn, checkfirst=True)


def _notify_trigger_sql(table: sa.Table, dialect: Dialect) -> list[str]:
    """A row trigger that announces every write of a result, Celery's writes included."""
    target = dialect.identifier_preparer.format_table(table)
    name = f"caraway_notify_{table.name}"[:63]
    return [
        "CREATE OR REPLACE FUNCTION caraway_result_notify() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM pg_notify('{RESULTS_CHANNEL}', NEW.task_id); RETURN NULL; END $$",
        f'CREATE TRIGGER "{name}" AFTER INSERT OR UPDATE ON {target} '
        "FOR EACH ROW EXECUTE FUNCTION caraway_result_notify()",
    ]


def _add_notify_trigger(conn: Connection, table: sa.Table) -> bool:
    name = f"caraway_notify_{table.name}"[:63]
    target = conn.dialect.identifier_preparer.format_table(table)
    exists = conn.execute(
        sa.text("SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = CAST(:t AS regclass)"),
        {"name": name, "t": target},
    ).first()
    if exists:
        return False
    for statement in _notify_trigger_sql(table, conn.dialect):
        conn.exec_driver_sql(statement)
    return True


def results_sql(tables: ResultTables, dialect: Dialect) -> list[str]:
    """The DDL of a fresh result store, for a DBA to read or run by hand."""
    statements: list[str] = []
    for table in tables.metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        statements += [
            str(CreateIndex(index).compile(dialect=dialect)).strip() for index in table.indexes
        ]
    if dialect.name == "postgresql":
        statements += _notify_trigger_sql(tables.tasks, dialect)
    return statements


# -- the PostgreSQL broker -----------------------------------------------------------------

#: NOTIFY channels of the broker: payload = queue name / "b" or an oid / none
MESSAGES_CHANNEL = "caraway_messages"
PIDBOX_CHANNEL = "caraway_pidbox"
EVENTS_CHANNEL = "caraway_events"

_MESSAGE_COLUMNS = """
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BYTEA NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    exchange TEXT NOT NULL DEFAULT '',
    routing_key TEXT NOT NULL DEFAULT ''"""

#: one statement each, in order; all IF NOT EXISTS
BROKER_DDL = (
    # visible_at: 0 = ready; in the future = parked until then, or claimed by owner until
    # then; in the past and not 0 = due (a parked message, or an expired claim)
    f"""CREATE TABLE IF NOT EXISTS caraway_messages (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner TEXT,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    enqueued_at DOUBLE PRECISION NOT NULL,{_MESSAGE_COLUMNS}
)""",
    # a key each publish writes, so a publish retried after a lost reply (the INSERT had
    # committed) stores nothing the second time; NULL for rows written otherwise
    "ALTER TABLE caraway_messages ADD COLUMN IF NOT EXISTS publish_key UUID",
    "CREATE UNIQUE INDEX IF NOT EXISTS caraway_messages_publish_key "
    "ON caraway_messages (publish_key)",
    # the claim: ready rows of one queue, higher priority first, then FIFO
    "CREATE INDEX IF NOT EXISTS caraway_messages_ready "
    "ON caraway_messages (queue, priority DESC, id) WHERE visible_at = 0",
    # due parked rows and expired claims, by when they come due
    "CREATE INDEX IF NOT EXISTS caraway_messages_timed "
    "ON caraway_messages (visible_at) WHERE visible_at > 0",
    "CREATE INDEX IF NOT EXISTS caraway_messages_owner "
    "ON caraway_messages (owner) WHERE owner IS NOT NULL",
    f"""CREATE TABLE IF NOT EXISTS caraway_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at DOUBLE PRECISION NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    delivery_count INTEGER NOT NULL DEFAULT 0,{_MESSAGE_COLUMNS}
)""",
    # kombu's Broadcast: the queues bound to each fanout exchange
    """CREATE TABLE IF NOT EXISTS caraway_fanout (
    exchange TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, queue)
)""",
    """CREATE TABLE IF NOT EXISTS caraway_revoked (
    task_id TEXT PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS caraway_pidbox (
    seq BIGSERIAL PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    envelope BYTEA NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS caraway_pidbox_waiters (
    oid TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS caraway_pidbox_replies (
    id BIGSERIAL PRIMARY KEY,
    oid TEXT NOT NULL,
    envelope BYTEA NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS caraway_pidbox_replies_oid ON caraway_pidbox_replies (oid, id)",
    """CREATE TABLE IF NOT EXISTS caraway_events (
    seq BIGSERIAL PRIMARY KEY,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    envelope BYTEA NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS caraway_events_expires ON caraway_events (expires)",
    # periodic tasks (beat): the leader's lease, each entry's state, claimed runs, runtime
    """CREATE TABLE IF NOT EXISTS caraway_beat_lease (
    namespace TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    node TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    renewed DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS caraway_beat_entries (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    count BIGINT NOT NULL,
    last_run TEXT,
    PRIMARY KEY (namespace, name)
)""",
    """CREATE TABLE IF NOT EXISTS caraway_beat_runs (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    scheduled_ms BIGINT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (namespace, name, scheduled_ms)
)""",
    """CREATE TABLE IF NOT EXISTS caraway_beat_runtime (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec BYTEA NOT NULL,
    PRIMARY KEY (namespace, name)
)""",
)


def migrate_broker(conn: Connection) -> list[str]:
    """Create the broker's tables where missing; returns what it did."""
    _lock(conn, "caraway-broker-schema")
    before = set(sa.inspect(conn).get_table_names())
    for statement in BROKER_DDL:
        conn.exec_driver_sql(statement)
    created = sorted(set(sa.inspect(conn).get_table_names()) - before)
    _record_version(conn, "broker", BROKER_VERSION)
    return [f"created table {name}" for name in created]


# -- shared ------------------------------------------------------------------------------


def _lock(conn: Connection, name: str) -> None:
    """Serialise concurrent migrations (two workers starting at once) on PostgreSQL; SQLite
    serialises writers itself and MySQL's DDL is retried by the client."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


def _record_version(conn: Connection, component: str, version: int) -> None:
    _SCHEMA_TABLE.create(conn, checkfirst=True)
    row = conn.execute(
        sa.select(_SCHEMA_TABLE.c.version).where(_SCHEMA_TABLE.c.component == component)
    ).first()
    if row is None:
        conn.execute(sa.insert(_SCHEMA_TABLE).values(component=component, version=version))
    elif row[0] < version:
        conn.execute(
            sa.update(_SCHEMA_TABLE)
            .where(_SCHEMA_TABLE.c.component == component)
            .values(version=version)
        )


def schema_versions(conn: Connection) -> dict[str, int]:
    """The versions recorded in ``caraway_schema`` (empty before the first migration)."""
    if not sa.inspect(conn).has_table("caraway_schema"):
        return {}
    rows = conn.execute(sa.select(_SCHEMA_TABLE.c.component, _SCHEMA_TABLE.c.version))
    return {str(component): int(version) for component, version in rows}
