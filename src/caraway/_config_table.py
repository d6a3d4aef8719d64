"""The option table: every setting's name, type, default, one-line doc and pre-4.0 aliases.

Celery 5's settings plus caraway's own, declared as typed descriptors on
:class:`OptionTable`, which ``caraway.config.Settings`` extends with validation on write and
loading; nothing here reads a value from anywhere. The one thing to know: every Celery 5
setting is here, either as an option caraway acts on or in :data:`REFUSED`, which says why
caraway refuses it and what to use instead; none is accepted and ignored.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar, overload

from caraway.exceptions import ImproperlyConfigured
from caraway.schedules.base import InvalidSchedule
from caraway.schedules.entries import check_beat_schedule

G = TypeVar("G")  # the type an option reads back as
S = TypeVar("S")  # what an option accepts on assignment (a wider type where we coerce)
T = TypeVar("T")
U = TypeVar("U")
_Strs = list[str] | tuple[str, ...] | set[str] | frozenset[str]


@dataclass(frozen=True)
class _Kind(Generic[G, S]):
    """How one type of setting is checked (and coerced) and parsed from an env string."""

    label: str
    check: Callable[[object], G]  # raises TypeError or ValueError when the value won't do
    parse: Callable[[str], object]


def _nullable(kind: _Kind[T, U]) -> _Kind[T | None, U | None]:
    def check(value: object) -> T | None:
        return None if value is None else kind.check(value)

    def parse(text: str) -> object:
        return None if text.strip().lower() in ("", "none", "null") else kind.parse(text)

    return _Kind(f"{kind.label} or None", check, parse)


def _exactly(*accepted: type) -> Callable[[object], Any]:
    """A check for these types; bool never passes for int since True is no count or port."""

    def check(value: object) -> Any:
        if isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool)):
            return value
        raise TypeError

    return check


def _check_float(value: object) -> float:
    return float(_exactly(int, float)(value))  # int -> float is harmless


def _check_seconds(value: object) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return None if value is None else _check_float(value)


def _check_dict(value: object) -> dict[str, Any]:
    return dict(_exactly(Mapping)(value))


def _check_strs(value: object) -> list[str]:
    # A bare str is refused: ('myapp.tasks') without its comma is a common slip.
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise TypeError


def _check_beat_schedule(value: object) -> dict[str, Any]:
    try:
        return check_beat_schedule(_check_dict(value))
    except InvalidSchedule as exc:  # its own message names the entry, field and value
        raise ImproperlyConfigured(f"setting 'beat_schedule': {exc}") from None


def _check_ssl(value: object) -> bool | dict[str, Any]:
    return value if isinstance(value, bool) else _check_dict(value)


def _check_rate(value: object) -> str | float:
    return value if isinstance(value, str) else _check_float(value)


def _check_routes(value: object) -> Any:
    return value if callable(value) else _exactly(Mapping, list, tuple, str)(value)


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parse_strs(text: str) -> object:
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_first(*parsers: Callable[[str], object]) -> Callable[[str], object]:
    """Try each parser in turn; the last one's error stands."""

    def parse(text: str) -> object:
        for parser in parsers[:-1]:
            try:
                return parser(text)
            except ValueError:
                continue
        return parsers[-1](text)

    return parse


_STR: _Kind[str, str] = _Kind("a string", _exactly(str), str)
_BOOL: _Kind[bool, bool] = _Kind("a bool", _exactly(bool), _parse_bool)
_INT: _Kind[int, int] = _Kind("an int", _exactly(int), int)
_FLOAT: _Kind[float, float] = _Kind("a number", _check_float, float)
_DICT: _Kind[dict[str, Any], Mapping[str, Any]] = _Kind("a dict", _check_dict, json.loads)
_STRS: _Kind[list[str], _Strs] = _Kind("a list of strings", _check_strs, _parse_strs)
_OPT_STR, _OPT_BOOL, _OPT_INT = _nullable(_STR), _nullable(_BOOL), _nullable(_INT)
_OPT_FLOAT, _OPT_STRS = _nullable(_FLOAT), _nullable(_STRS)
_SECONDS: _Kind[float | None, float | timedelta | None] = _Kind(
    "a number of seconds, a timedelta or None", _check_seconds, _OPT_FLOAT.parse
)
_BEAT_SCHEDULE: _Kind[dict[str, Any], Mapping[str, Any]] = _Kind(
    "a dict of beat entries", _check_beat_schedule, json.loads
)
_SSL: _Kind[bool | dict[str, Any], bool | Mapping[str, Any]] = _Kind(
    "a bool or a dict of SSL options", _check_ssl, _parse_first(_parse_bool, json.loads)
)
_OPT_SSL = _nullable(_SSL)
_RATE_TEXT: _Kind[str | float, str | float] = _Kind(
    "a rate limit like '10/m' or a number", _check_rate, _parse_first(float, str)
)
_RATE = _nullable(_RATE_TEXT)
_ROUTES: _Kind[Any, Any] = _nullable(
    _Kind("a dict, a router, or a list of those", _check_routes, json.loads)
)
_DELIVERY_MODE: _Kind[Any, Any] = _Kind(
    "1, 2, 'transient' or 'persistent'",
    lambda value: {"transient": 1, "persistent": 2, 1: 1, 2: 2}[value],
    _parse_first(int, str),
)


def _check_event_serializer(value: object) -> str:
    if value in ("json", "auth"):
        return str(value)
    raise ValueError(value)


_EVENT_SERIALIZER: _Kind[str, str] = _Kind("'json' or 'auth'", _check_event_serializer, str)
_QUEUES: _Kind[Any, Any] = _nullable(
    _Kind("a list or dict of queues", _exactly(Mapping, list, tuple, set), json.loads)
)


def _check_secret(value: object) -> str | bytes | None:
    # never echoes the value: the coerce error of other options shows it
    if value is None or isinstance(value, (str, bytes)):
        return value
    raise ImproperlyConfigured(
        f"a passphrase setting must be a str, bytes or None, got a {type(value).__name__}"
    )


_SECRET: _Kind[str | bytes | None, str | bytes | None] = _Kind(
    "a str, bytes or None", _check_secret, str
)
_ANY: _Kind[Any, Any] = _Kind("any value", lambda value: value, _parse_first(json.loads, str))


class _Store(Protocol):
    """What an option reads from and writes through: ``Settings``, which validates writes."""

    _values: dict[str, Any]

    def __setitem__(self, name: str, value: Any, /) -> None: ...


class Option(Generic[G, S]):
    """One setting: its type, default, one-line doc and pre-4.0 (uppercase) names.

    Declared as a class attribute of :class:`OptionTable`, it is also that typed attribute
    of every ``Settings``.
    """

    def __init__(
        self, kind: _Kind[G, S], default: G, doc: str, *, old: str | tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.default: G = kind.check(default)
        self.doc = doc
        self.old = (old,) if isinstance(old, str) else old
        self.name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @property
    def type_label(self) -> str:
        return self.kind.label

    def coerce(self, value: object) -> G:
        """The value as stored; raises ImproperlyConfigured naming setting, value and type."""
        try:
            return self.kind.check(value)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(
                f"setting {self.name!r} must be {self.kind.label}, "
                f"got {value!r} ({type(value).__name__})"
            ) from None

    def parse(self, text: str, *, variable: str) -> G:
        """Coerce an environment string; raises ImproperlyConfigured naming the variable."""
        try:
            return self.kind.check(self.kind.parse(text))
        except (TypeError, ValueError):
            raise ImproperlyConfigured(
                f"environment variable {variable}={text!r}: setting {self.name!r} "
                f"must be {self.kind.label}"
            ) from None

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Option[G, S]: ...
    @overload
    def __get__(self, obj: _Store, owner: type[Any]) -> G: ...
    def __get__(self, obj: _Store | None, owner: type[Any]) -> Option[G, S] | G:
        if obj is None:
            return self
        # no typing.cast: it is a call, and every settings read (several per delay()) ends here
        value: G = obj._values[self.name]
        return value

    def __set__(self, obj: _Store, value: S) -> None:
        obj[self.name] = value

    def __repr__(self) -> str:
        return f"<Option {self.name}: {self.kind.label} = {self.default!r}>"


_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)
_EXPIRES_DOC = "Seconds results are kept (timedelta accepted); None or 0 = forever."


class OptionTable:
    """The settings as typed class attributes; ``Settings`` adds the behaviour and the storage."""

    __slots__ = ()

    # -- general ---------------------------------------------------------------------------
    accept_content = Option(
        _STRS, ["json"], "Serializers workers accept.", old="CELERY_ACCEPT_CONTENT"
    )
    timezone = Option(
        _OPT_STR, None, "Zone name; None = UTC (local if not enable_utc).", old="CELERY_TIMEZONE"
    )
    enable_utc = Option(
        _BOOL,
        True,
        "False: with no timezone, the app's zone is the machine's (dates in messages carry "
        "its offset; naive dates are still read as UTC, as Celery reads them).",
        old=("CELERY_ENABLE_UTC", "ENABLE_UTC"),
    )
    imports = Option(_STRS, [], "Modules a worker imports at start-up.", old="CELERY_IMPORTS")
    include = Option(_STRS, [], "Like imports, imported after them.", old="CELERY_INCLUDE")

    # -- broker ----------------------------------------------------------------------------
    broker_url = Option(_OPT_STR, None, "None = the embedded SQLite broker.", old="BROKER_URL")
    broker_transport_options = Option(
        _DICT,
        {},
        "Transport options. 'visibility_timeout' defaults to 3600 s as in Celery on Redis; the"
        " SQLite transport uses a shorter lease that the worker's heartbeat renews.",
        old="BROKER_TRANSPORT_OPTIONS",
    )
    broker_connection_retry = Option(
        _BOOL, True, "Retry a lost connection.", old="BROKER_CONNECTION_RETRY"
    )
    broker_connection_retry_on_startup = Option(_OPT_BOOL, None, "None = broker_connection_retry.")
    broker_connection_max_retries = Option(
        _OPT_INT, 100, "None or 0 = forever.", old="BROKER_CONNECTION_MAX_RETRIES"
    )
    broker_connection_timeout = Option(_FLOAT, 4.0, "Seconds.", old="BROKER_CONNECTION_TIMEOUT")
    broker_heartbeat = Option(_OPT_FLOAT, 120.0, "AMQP heartbeat, seconds.", old="BROKER_HEARTBEAT")
    broker_use_ssl = Option(_SSL, False, "True or a dict of SSL options.", old="BROKER_USE_SSL")
    # 60 s: long enough that retry back-offs and short countdowns wait in the worker's own
    # timer (prompt, no broker round trip), short enough that a held message stays far inside
    # Redis's visibility timeout (3600 s) and RabbitMQ's consumer timeout (30 min), and that a
    # restart delays nothing by more than a minute.
    broker_park_horizon = Option(_FLOAT, 60.0, "caraway: park messages due later (seconds).")
    producer_parks_eta = Option(_BOOL, False, "caraway: producers park ETA messages themselves.")

    # -- results ---------------------------------------------------------------------------
    result_backend = Option(_OPT_STR, None, "Result store URL.", old="CELERY_RESULT_BACKEND")
    result_backend_transport_options = Option(
        _DICT, {}, "Result store client options.", old="CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"
    )
    redis_backend_use_ssl = Option(
        _OPT_SSL, None, "SSL options.", old="CELERY_REDIS_BACKEND_USE_SSL"
    )
    result_expires = Option(
        _SECONDS, 86400.0, _EXPIRES_DOC, old=("CELERY_TASK_RESULT_EXPIRES", "CELERY_RESULT_EXPIRES")
    )
    result_extended = Option(
        _BOOL, False, "Store name, args, worker...", old="CELERY_RESULT_EXTENDED"
    )
    result_persistent = Option(
        _OPT_BOOL, None, "Durable rpc results.", old="CELERY_RESULT_PERSISTENT"
    )
    # Celery's database backend settings, read by the SQL result store (db+... URLs)
    database_engine_options = Option(
        _DICT,
        {},
        "SQLAlchemy create_engine options (pool_size, pool_recycle...).",
        old="CELERY_RESULT_ENGINE_OPTIONS",
    )
    database_engine_callback = Option(
        _ANY, None, "Called with each new engine (a callable or 'module:function')."
    )
    database_table_names = Option(
        _DICT, {}, "{'task': ..., 'group': ...}.", old="CELERY_RESULT_DB_TABLENAMES"
    )
    database_table_schemas = Option(_DICT, {}, "{'task': ..., 'group': ...}.")
    database_create_tables_at_setup = Option(
        _BOOL, True, "Create/upgrade the tables when the store opens (else on first use)."
    )

    # -- tasks -----------------------------------------------------------------------------
    task_serializer = Option(_STR, "json", "", old="CELERY_TASK_SERIALIZER")
    task_protocol = Option(_INT, 2, "caraway speaks 2.", old="CELERY_TASK_PROTOCOL")
    task_default_queue = Option(_STR, "celery", "", old="CELERY_DEFAULT_QUEUE")
    task_default_exchange = Option(
        _OPT_STR, None, "None = the queue name.", old="CELERY_DEFAULT_EXCHANGE"
    )
    task_default_routing_key = Option(
        _OPT_STR, None, "None = the queue name.", old="CELERY_DEFAULT_ROUTING_KEY"
    )
    task_default_priority = Option(_OPT_INT, None, "", old="CELERY_DEFAULT_PRIORITY")
    task_default_rate_limit = Option(_RATE, None, "'10/m'.", old="CELERY_DEFAULT_RATE_LIMIT")
    task_queues = Option(_QUEUES, None, "None = the default queue only.", old="CELERY_QUEUES")
    task_routes = Option(_ROUTES, None, "See caraway.routing.", old="CELERY_ROUTES")
    task_create_missing_queues = Option(_BOOL, True, "", old="CELERY_CREATE_MISSING_QUEUES")
    task_queue_max_priority = Option(
        _OPT_INT, None, "AMQP x-max-priority.", old="CELERY_QUEUE_MAX_PRIORITY"
    )
    task_track_started = Option(
        _BOOL, False, "", old=("CELERY_TRACK_STARTED", "CELERY_TASK_TRACK_STARTED")
    )
    task_acks_late = Option(_BOOL, False, "Ack after running.", old="CELERY_ACKS_LATE")
    task_acks_on_failure_or_timeout = Option(
        _BOOL, True, "", old="CELERY_ACKS_ON_FAILURE_OR_TIMEOUT"
    )
    task_reject_on_worker_lost = Option(
        _BOOL,
        True,
        "With acks_late, redeliver a task whose process died. Departs from Celery, whose default"
        " is off: set False for Celery's behaviour. worker_delivery_cap bounds the loop.",
        old=("CELERY_REJECT_ON_WORKER_LOST", "CELERY_TASK_REJECT_ON_WORKER_LOST"),
    )
    task_always_eager = Option(
        _BOOL, False, "", old=("CELERY_ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER")
    )
    task_eager_propagates = Option(
        _BOOL, False, "", old=("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "CELERY_EAGER_PROPAGATES")
    )
    task_ignore_result = Option(_BOOL, False, "", old="CELERY_IGNORE_RESULT")
    task_store_errors_even_if_ignored = Option(
        _BOOL, False, "", old="CELERY_STORE_ERRORS_EVEN_IF_IGNORED"
    )
    task_time_limit = Option(
        _OPT_FLOAT, None, "Seconds.", old=("CELERYD_TASK_TIME_LIMIT", "CELERYD_TIME_LIMIT")
    )
    task_soft_time_limit = Option(
        _OPT_FLOAT,
        None,
        "Seconds.",
        old=("CELERYD_TASK_SOFT_TIME_LIMIT", "CELERYD_SOFT_TIME_LIMIT"),
    )
    task_publish_retry = Option(
        _BOOL, True, "", old=("CELERY_TASK_PUBLISH_RETRY", "CELERY_PUBLISH_RETRY")
    )
    task_publish_retry_policy = Option(
        _DICT,
        {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},
        "",
        old=("CELERY_TASK_PUBLISH_RETRY_POLICY", "CELERY_PUBLISH_RETRY_POLICY"),
    )
    task_send_sent_event = Option(
        _BOOL, False, "", old=("CELERY_SEND_TASK_SENT_EVENT", "CELERY_SEND_SENT_EVENT")
    )
    task_annotations = Option(_ANY, None, "{'name or *': {attr: value}}.", old="CELERY_ANNOTATIONS")

    # -- worker ----------------------------------------------------------------------------
    worker_concurrency = Option(_OPT_INT, None, "None or 0 = CPU count.", old="CELERYD_CONCURRENCY")
    worker_prefetch_multiplier = Option(_INT, 4, "Per slot.", old="CELERYD_PREFETCH_MULTIPLIER")
    worker_max_tasks_per_child = Option(_OPT_INT, None, "", old="CELERYD_MAX_TASKS_PER_CHILD")
    worker_max_memory_per_child = Option(_OPT_INT, None, "KiB.", old="CELERYD_MAX_MEMORY_PER_CHILD")
    worker_send_task_events = Option(_BOOL, False, "-E.", old="CELERY_SEND_EVENTS")
    worker_hijack_root_logger = Option(_BOOL, True, "", old="CELERYD_HIJACK_ROOT_LOGGER")
    worker_log_format = Option(
        _STR, _LOG_FORMAT, "", old=("CELERYD_LOG_FORMAT", "CELERY_WORKER_LOG_FORMAT")
    )
    worker_task_log_format = Option(
        _STR, _TASK_LOG_FORMAT, "", old=("CELERYD_TASK_LOG_FORMAT", "CELERY_WORKER_TASK_LOG_FORMAT")
    )
    worker_state_db = Option(_OPT_STR, None, "Keeps revoked ids.", old="CELERYD_STATE_DB")
    worker_disable_rate_limits = Option(_BOOL, False, "", old="CELERY_DISABLE_RATE_LIMITS")
    worker_pool = Option(_STR, "prefork", "prefork, threads or solo (-P).", old="CELERYD_POOL")
    worker_delivery_cap = Option(_INT, 5, "caraway: deliveries before the dead-letter store.")
    worker_max_message_size = Option(
        _INT,
        8 * 1024 * 1024,
        "caraway: bytes of a task message's body a worker reads; a larger one is set aside "
        "in the dead-letter store unread (0: no limit).",
    )
    worker_async_concurrency = Option(_INT, 100, "caraway: async tasks at once per child.")
    worker_hand_off_after = Option(
        _OPT_FLOAT,
        0.1,
        "caraway: seconds a process runs one task before giving back the messages it holds "
        "unstarted, so an idle process runs them (fair dispatch); while a sibling process "
        "waits on an empty broker, it gives them back at once; None: it keeps them.",
    )

    # -- events and remote control ---------------------------------------------------------
    event_queue_ttl = Option(_OPT_FLOAT, 5.0, "Seconds.", old="CELERY_EVENT_QUEUE_TTL")
    event_queue_expires = Option(_OPT_FLOAT, 60.0, "Seconds.", old="CELERY_EVENT_QUEUE_EXPIRES")
    event_queue_prefix = Option(_STR, "celeryev", "", old="CELERY_EVENT_QUEUE_PREFIX")
    event_exchange = Option(_STR, "celeryev", "")
    event_serializer = Option(
        _EVENT_SERIALIZER,
        "json",
        "'auth': events are signed as task messages are (app.setup_security()); receivers "
        "accept signed and JSON events. Other serializers are not supported for events.",
        old="CELERY_EVENT_SERIALIZER",
    )

    # -- periodic tasks (beat; docs/periodic-tasks.md) ----------------------------------------
    beat_schedule = Option(
        _BEAT_SCHEDULE, {}, "Periodic task entries, checked when set.", old="CELERYBEAT_SCHEDULE"
    )
    beat_scheduler = Option(
        _STR,
        "celery.beat:PersistentScheduler",
        "Only Celery's default: beat keeps its state on the broker, not in a class.",
        old="CELERYBEAT_SCHEDULER",
    )
    beat_schedule_filename = Option(
        _STR,
        "celerybeat-schedule",
        "Its base name (with the app's) names the schedule on the broker; no file is written.",
        old="CELERYBEAT_SCHEDULE_FILENAME",
    )
    beat_max_loop_interval = Option(
        _FLOAT, 0, "Longest sleep between ticks; 0 = 300 s.", old="CELERYBEAT_MAX_LOOP_INTERVAL"
    )
    beat_cron_starting_deadline = Option(
        _OPT_FLOAT, None, "Seconds: a crontab catch-up run later than this is not sent."
    )
    beat_enable_remote_control = Option(
        _BOOL, False, "Beat answers 'inspect ping' as celerybeat@host."
    )
    beat_remote_control_max_tick_age = Option(
        _OPT_FLOAT, None, "Seconds without a tick before beat stops answering ping."
    )
    beat_lease_seconds = Option(
        _FLOAT, 5.0, "caraway: a dead beat leader's lease lapses after this; a standby takes over."
    )

    # -- messages and routing --------------------------------------------------------------
    task_compression = Option(
        _OPT_STR, None, "gzip, bzip2, lzma, zstd or brotli.", old="CELERY_COMPRESSION"
    )
    task_default_delivery_mode = Option(
        _DELIVERY_MODE, 2, "2/'persistent' or 1/'transient'.", old="CELERY_DEFAULT_DELIVERY_MODE"
    )
    task_default_exchange_type = Option(_STR, "direct", "", old="CELERY_DEFAULT_EXCHANGE_TYPE")
    task_create_missing_queue_exchange_type = Option(
        _OPT_STR, None, "None = task_default_exchange_type."
    )
    task_default_queue_type = Option(
        _STR, "classic", "AMQP x-queue-type: classic or quorum.", old="CELERY_DEFAULT_QUEUE_TYPE"
    )
    task_inherit_parent_priority = Option(_BOOL, False, "Calls made in a task take its priority.")
    worker_enable_remote_control = Option(
        _BOOL, True, "Answer inspect/control commands.", old="CELERY_ENABLE_REMOTE_CONTROL"
    )
    worker_log_datefmt = Option(_OPT_STR, None, "strftime format of worker log lines.")
    worker_task_log_datefmt = Option(_OPT_STR, None, "strftime format of task log lines.")

    # -- message signing (read by app.setup_security(); docs/celery-compat.md) -------------
    security_key = Option(_OPT_STR, None, "PEM private key file.", old="CELERY_SECURITY_KEY")
    security_key_password = Option(
        _SECRET, None, "Passphrase of security_key.", old="CELERY_SECURITY_KEY_PASSWORD"
    )
    security_certificate = Option(
        _OPT_STR, None, "PEM certificate of security_key.", old="CELERY_SECURITY_CERTIFICATE"
    )
    security_cert_store = Option(
        _OPT_STR,
        None,
        "Directory or glob of the senders' PEM certificates.",
        old="CELERY_SECURITY_CERT_STORE",
    )
    security_digest = Option(
        _STR, "sha256", "Digest of the RSA-PSS signature.", old="CELERY_SECURITY_DIGEST"
    )

    # -- Celery's, met by how caraway works whatever their value ---------------------------
    broker_pool_limit = Option(
        _OPT_INT,
        10,
        "caraway keeps one broker connection per thread and process and never a shared "
        "pool, so there is no pool to bound.",
        old="BROKER_POOL_LIMIT",
    )
    result_chord_ordered = Option(
        _BOOL, False, "caraway always hands a chord body its results in call order."
    )
    worker_deduplicate_successful_tasks = Option(
        _BOOL,
        False,
        "caraway always acks a redelivered task that already has a final state, unrun.",
    )


@dataclass(frozen=True)
class Refusal:
    """A Celery setting caraway does not take: why, and what to use instead.

    ``allowed`` values are accepted (and change nothing) because caraway already behaves
    so; any other value raises ImproperlyConfigured when it is set.
    """

    reason: str
    allowed: tuple[Any, ...] = ()
    old: tuple[str, ...] = ()


def _backend(name: str) -> str:
    return (
        f"caraway has no {name} result backend; use result_backend="
        "'redis://...', 'sqlite:///...' or 'rpc://'"
    )


_IN_URL = "caraway reads it from the URL; put it in {}"
_CASSANDRA, _S3 = _backend("Cassandra"), _backend("S3")
_AZURE, _GCS, _COSMOS = (
    _backend("Azure Block Blob"),
    _backend("Google Cloud Storage"),
    _backend("CosmosDB"),
)
_ES = _backend("Elasticsearch")
_INTERNALS = "Celery's worker internals (bootsteps) have no caraway equivalent"
_WHOLE = "caraway's worker has no {} setting: {}"

#: Celery settings caraway refuses (see Refusal), with their pre-4.0 names
REFUSED: Mapping[str, Refusal] = types.MappingProxyType(
    {
        # results stored elsewhere
        "database_short_lived_sessions": Refusal(
            "caraway's SQL result store holds no session between calls: every session is "
            "short-lived already",
            allowed=(True, False),
            old=("CELERY_RESULT_DB_SHORT_LIVED_SESSIONS",),
        ),
        "database_url": Refusal(
            _IN_URL.format("result_backend='db+<SQLAlchemy URL>' (Celery's own spelling)"),
            old=("CELERY_RESULT_DBURI",),
        ),
        **dict.fromkeys(
            (
                "cassandra_entry_ttl",
                "cassandra_keyspace",
                "cassandra_port",
                "cassandra_read_consistency",
                "cassandra_servers",
                "cassandra_bundle_path",
                "cassandra_table",
                "cassandra_write_consistency",
                "cassandra_auth_provider",
                "cassandra_auth_kwargs",
                "cassandra_options",
            ),
            Refusal(_CASSANDRA),
        ),
        **dict.fromkeys(
            (
                "s3_access_key_id",
                "s3_secret_access_key",
                "s3_bucket",
                "s3_base_path",
                "s3_endpoint_url",
                "s3_region",
            ),
            Refusal(_S3),
        ),
        **dict.fromkeys(
            (
                "azureblockblob_container_name",
                "azureblockblob_retry_initial_backoff_sec",
                "azureblockblob_retry_increment_base",
                "azureblockblob_retry_max_attempts",
                "azureblockblob_base_path",
                "azureblockblob_connection_timeout",
                "azureblockblob_read_timeout",
            ),
            Refusal(_AZURE),
        ),
        **dict.fromkeys(("gcs_bucket", "gcs_project", "gcs_base_path", "gcs_ttl"), Refusal(_GCS)),
        **dict.fromkeys(
            (
                "cosmosdbsql_database_name",
                "cosmosdbsql_collection_name",
                "cosmosdbsql_consistency_level",
                "cosmosdbsql_max_retry_attempts",
                "cosmosdbsql_max_retry_wait_time",
            ),
            Refusal(_COSMOS),
        ),
        **dict.fromkeys(
            (
                "elasticsearch_retry_on_timeout",
                "elasticsearch_max_retries",
                "elasticsearch_timeout",
                "elasticsearch_save_meta_as_text",
            ),
            Refusal(_ES),
        ),
        "couchbase_backend_settings": Refusal(_backend("Couchbase")),
        "arangodb_backend_settings": Refusal(_backend("ArangoDB")),
        "mongodb_backend_settings": Refusal(_backend("MongoDB")),
        "cache_backend": Refusal(_backend("cache (memcached)"), old=("CELERY_CACHE_BACKEND",)),
        "cache_backend_options": Refusal(
            _backend("cache (memcached)"), old=("CELERY_CACHE_BACKEND_OPTIONS",)
        ),
        "result_exchange": Refusal(
            "the old amqp result backend is gone from Celery 5 too; use result_backend='rpc://'",
            allowed=("celeryresults",),
            old=("CELERY_RESULT_EXCHANGE",),
        ),
        "result_exchange_type": Refusal(
            "the old amqp result backend is gone from Celery 5 too; use result_backend='rpc://'",
            allowed=("direct",),
            old=("CELERY_RESULT_EXCHANGE_TYPE",),
        ),
        # parts of a URL
        **{
            name: Refusal(_IN_URL.format("broker_url ('amqp://user:password@host:port/vhost')"))
            for name in ("broker_host", "broker_port", "broker_user", "broker_password")
        },
        "broker_vhost": Refusal(_IN_URL.format("broker_url ('amqp://host/vhost')")),
        **{
            name: Refusal(
                _IN_URL.format("result_backend ('redis://:password@host:port/db')"),
                old=(f"CELERY_{name.upper()}",),
            )
            for name in ("redis_db", "redis_host", "redis_username", "redis_password", "redis_port")
        },
        "broker_transport": Refusal(
            _IN_URL.format("broker_url's scheme (redis://, amqp://, sqlite://)"),
            old=("BROKER_TRANSPORT",),
        ),
        "broker_read_url": Refusal(
            "caraway reads and writes through one broker_url; set broker_url only"
        ),
        "broker_write_url": Refusal(
            "caraway reads and writes through one broker_url; set broker_url only"
        ),
        "broker_failover_strategy": Refusal(
            "caraway connects to one broker; use a load balancer or Redis Sentinel "
            "(sentinel://) for failover",
            old=("BROKER_FAILOVER_STRATEGY",),
        ),
        "broker_login_method": Refusal(
            "caraway logs in to RabbitMQ with AMQPLAIN, py-amqp's default",
            allowed=(None, "AMQPLAIN"),
            old=("BROKER_LOGIN_METHOD",),
        ),
        "broker_channel_error_retry": Refusal(
            "caraway retries connection errors (broker_connection_retry) and reports channel "
            "errors at once",
            allowed=(False,),
        ),
        "broker_heartbeat_checkrate": Refusal(
            "caraway services AMQP heartbeats at broker_heartbeat / 2; set broker_heartbeat",
            allowed=(3.0, 3),
        ),
        "broker_native_delayed_delivery_queue_type": Refusal(
            "caraway delays messages with its own delay queues on RabbitMQ "
            "(broker_park_horizon), of task_default_queue_type",
        ),
        "broker_pool_acquire_timeout": Refusal(
            "caraway keeps one broker connection per thread and never waits for a pool"
        ),
        # redis result backend tuning
        **{
            name: Refusal(
                "caraway's Redis client takes socket options from "
                "result_backend_transport_options (socket_timeout, socket_connect_timeout, "
                "socket_keepalive, retry_on_timeout, max_connections)",
                allowed=(default,),
                old=old,
            )
            for name, default, old in (
                ("redis_max_connections", None, ("CELERY_REDIS_MAX_CONNECTIONS",)),
                ("redis_socket_timeout", 120.0, ()),
                ("redis_socket_connect_timeout", None, ()),
                ("redis_retry_on_timeout", False, ()),
                ("redis_socket_keepalive", False, ()),
            )
        },
        # results
        "result_compression": Refusal(
            "caraway stores results uncompressed; compress large values in the task",
            allowed=(None,),
            old=("CELERY_MESSAGE_COMPRESSION",),
        ),
        "result_serializer": Refusal(
            "caraway stores results as JSON (Celery's default)",
            allowed=("json",),
            old=("CELERY_RESULT_SERIALIZER",),
        ),
        "result_accept_content": Refusal(
            "caraway stores and reads results as JSON (Celery's default)",
            allowed=(None, ["json"], ["application/json"]),
            old=("RESULT_ACCEPT_CONTENT",),
        ),
        "result_cache_max": Refusal(
            "caraway keeps no client-side result cache; keep the AsyncResult to reuse it",
            allowed=(-1,),
            old=("CELERY_MAX_CACHED_RESULTS",),
        ),
        "result_chord_join_timeout": Refusal(
            "caraway joins chords atomically in the backend and never waits for a join",
            allowed=(3.0, 3),
        ),
        "result_chord_retry_interval": Refusal(
            "caraway joins chords atomically in the backend and never polls",
            allowed=(1.0, 1),
        ),
        "result_chord_expires": Refusal(
            "caraway's chord counters expire with result_expires; set result_expires"
        ),
        "result_failure_expires": Refusal(
            "caraway keeps every result for result_expires; set result_expires"
        ),
        **dict.fromkeys(
            (
                "result_backend_always_retry",
                "result_backend_max_retries",
                "result_backend_base_sleep_between_retries_ms",
                "result_backend_max_sleep_between_retries_ms",
            ),
            Refusal(
                "a caraway worker keeps results it could not write and retries the backend, "
                "backing off, until it answers; there is nothing to configure",
                allowed=(False,),
            ),
        ),
        "task_remote_tracebacks": Refusal(
            "caraway shows the worker's traceback as result.traceback; the raised exception "
            "carries the local one",
            allowed=(False,),
        ),
        "task_store_eager_result": Refusal(
            "caraway keeps eager results in the calling process (EagerResult) and stores none",
            allowed=(False,),
        ),
        "task_allow_error_cb_on_chord_header": Refusal(
            "caraway links errbacks to the chord body only (Celery's default); link_error "
            "each header task to be told of its failure",
            allowed=(False,),
            old=("CELERY_ALLOW_ERROR_CB_ON_CHORD_HEADER",),
        ),
        # serialization
        "task_repr_maxlevels": Refusal(
            "caraway cuts argsrepr/kwargsrepr at 1024 characters, not by depth", allowed=(3,)
        ),
        # tasks
        "task_acks_on_failure": Refusal("use task_acks_on_failure_or_timeout", allowed=(None,)),
        "task_acks_on_timeout": Refusal("use task_acks_on_failure_or_timeout", allowed=(None,)),
        "task_retry_on_worker_lost": Refusal(
            "use task_reject_on_worker_lost (with acks_late, caraway redelivers the task)",
            allowed=(False,),
        ),
        "task_create_missing_queue_type": Refusal(
            "caraway declares every queue with task_default_queue_type; set that",
            allowed=("classic",),
        ),
        # remote control and events
        "control_exchange": Refusal(
            "caraway's mailbox is Celery's default, celery.pidbox", allowed=("celery",)
        ),
        "control_queue_ttl": Refusal(
            "caraway's mailboxes use Celery's default control queue TTL", allowed=(300.0, 300)
        ),
        "control_queue_expires": Refusal(
            "caraway's mailboxes use Celery's default control queue expiry", allowed=(10.0, 10)
        ),
        "control_queue_exclusive": Refusal(
            "caraway's mailboxes use Celery's default control queues", allowed=(False,)
        ),
        "control_queue_durable": Refusal(
            "caraway's mailboxes use Celery's default control queues", allowed=(False,)
        ),
        "event_queue_exclusive": Refusal(
            "caraway's event receivers use Celery's default queues", allowed=(True,)
        ),
        "event_queue_durable": Refusal(
            "caraway's event receivers use Celery's default queues", allowed=(False,)
        ),
        # the worker
        **{
            name: Refusal(_INTERNALS, allowed=(default,), old=(f"CELERYD_{name[7:].upper()}",))
            for name, default in (
                ("worker_agent", None),
                ("worker_autoscaler", "celery.worker.autoscale:Autoscaler"),
                ("worker_consumer", "celery.worker.consumer:Consumer"),
                ("worker_timer", None),
                ("worker_pool_putlocks", True),
                ("worker_pool_start_method", "fork"),
            )
        },
        "worker_pool_restarts": Refusal(
            "caraway has no pool_restart command; restart the worker (caraway multi restart) "
            "to load new code",
            allowed=(False,),
        ),
        "worker_direct": Refusal(
            _WHOLE.format("worker_direct", "consume a node-specific queue with -Q name"),
            allowed=(False,),
            old=("CELERY_WORKER_DIRECT",),
        ),
        "worker_lost_wait": Refusal(
            "caraway records a lost task as soon as its child exits; nothing waits",
            allowed=(10.0, 10),
            old=("CELERYD_WORKER_LOST_WAIT",),
        ),
        "worker_redirect_stdouts": Refusal(
            "caraway leaves sys.stdout alone; use logging (get_task_logger) in tasks",
            allowed=(False,),
            old=("CELERY_REDIRECT_STDOUTS", "CELERYD_REDIRECT_STDOUTS"),
        ),
        "worker_redirect_stdouts_level": Refusal(
            "caraway leaves sys.stdout alone; use logging (get_task_logger) in tasks",
            allowed=("WARNING",),
            old=("CELERY_REDIRECT_STDOUTS_LEVEL", "CELERYD_REDIRECT_STDOUTS_LEVEL"),
        ),
        "worker_log_color": Refusal(
            "caraway's log lines are never coloured",
            allowed=(None, False),
            old=("CELERYD_LOG_COLOR",),
        ),
        "worker_cancel_long_running_tasks_on_connection_loss": Refusal(
            "caraway's running tasks finish through a lost connection; with acks_late their "
            "message comes back once its lease runs out",
            allowed=(False,),
        ),
        "worker_soft_shutdown_timeout": Refusal(
            "caraway's warm shutdown waits for running tasks; a second TERM is cold",
            allowed=(0, 0.0),
        ),
        "worker_enable_soft_shutdown_on_idle": Refusal(
            "caraway's warm shutdown waits for running tasks; a second TERM is cold",
            allowed=(False,),
        ),
        "worker_proc_alive_timeout": Refusal(
            "caraway's children need no start-up handshake", allowed=(4.0, 4)
        ),
        "worker_enable_prefetch_count_reduction": Refusal(
            "caraway's prefetch is worker_prefetch_multiplier per slot, never reduced",
            allowed=(True,),
        ),
        "worker_timer_precision": Refusal(
            "caraway's timers wake when due, not at a fixed precision",
            allowed=(1.0, 1),
            old=("CELERYD_TIMER_PRECISION",),
        ),
        "worker_eta_task_limit": Refusal(
            "caraway parks far ETA tasks on the broker (broker_park_horizon) instead of "
            "holding them",
            allowed=(None,),
        ),
        "worker_disable_prefetch": Refusal("set worker_prefetch_multiplier=1", allowed=(False,)),
        "beat_sync_every": Refusal(
            "caraway beat stores each run on the broker before it sends it, so there is no "
            "schedule file to sync",
            allowed=(0, 1),
            old=("CELERYBEAT_SYNC_EVERY",),
        ),
        "worker_detect_quorum_queues": Refusal(
            "caraway declares queues of task_default_queue_type and does not probe them",
            allowed=(True,),
        ),
    }
)

OPTIONS: Mapping[str, Option[Any, Any]] = types.MappingProxyType(
    {name: value for name, value in vars(OptionTable).items() if isinstance(value, Option)}
)
#: old (uppercase) name -> setting name
ALIASES: Mapping[str, str] = {old: option.name for option in OPTIONS.values() for old in option.old}
#: old (uppercase) name -> refused setting name
REFUSED_ALIASES: Mapping[str, str] = {
    old: name for name, refusal in REFUSED.items() for old in refusal.old
}

__all__ = ["ALIASES", "OPTIONS", "REFUSED", "REFUSED_ALIASES", "Option", "OptionTable", "Refusal"]
