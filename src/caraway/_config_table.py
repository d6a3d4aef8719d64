"""The option table: every setting's name, type, default, one-line doc and pre-4.0 aliases.

Celery 5's settings plus caraway's own, declared as typed descriptors on
:class:`OptionTable`, which ``caraway.config.Settings`` extends with validation on write and
loading; nothing here reads a value from anywhere. The one thing to know: the table is the
whole list, so a setting Celery configurations use must be declared here, even when caraway
does not act on it (``_COMPAT``), or loading them fails with UnknownSetting.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar, cast, overload

from caraway.exceptions import ImproperlyConfigured

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
_QUEUES: _Kind[Any, Any] = _nullable(
    _Kind("a list or dict of queues", _exactly(Mapping, list, tuple, set), json.loads)
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
        return cast(G, obj._values[self.name])

    def __set__(self, obj: _Store, value: S) -> None:
        obj[self.name] = value

    def __repr__(self) -> str:
        return f"<Option {self.name}: {self.kind.label} = {self.default!r}>"


_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)
_COMPAT = "Celery's; accepted so Celery configurations load."
_EXPIRES_DOC = "Seconds results are kept (timedelta accepted); None or 0 = forever."


class OptionTable:
    """The settings as typed class attributes; ``Settings`` adds the behaviour and the storage."""

    __slots__ = ()

    # -- general ---------------------------------------------------------------------------
    accept_content = Option(
        _STRS, ["json"], "Serializers workers accept.", old="CELERY_ACCEPT_CONTENT"
    )
    result_accept_content = Option(
        _OPT_STRS, None, "For results; None = accept_content.", old="RESULT_ACCEPT_CONTENT"
    )
    enable_utc = Option(
        _BOOL, True, "Dates in messages are UTC.", old=("CELERY_ENABLE_UTC", "ENABLE_UTC")
    )
    timezone = Option(
        _OPT_STR, None, "Zone name; None = UTC (local if not enable_utc).", old="CELERY_TIMEZONE"
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
    broker_pool_limit = Option(_OPT_INT, 10, "Producer pool size.", old="BROKER_POOL_LIMIT")
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
    result_serializer = Option(_STR, "json", "", old="CELERY_RESULT_SERIALIZER")
    result_extended = Option(
        _BOOL, False, "Store name, args, worker...", old="CELERY_RESULT_EXTENDED"
    )
    result_persistent = Option(
        _OPT_BOOL, None, "Durable rpc results.", old="CELERY_RESULT_PERSISTENT"
    )
    result_chord_ordered = Option(_BOOL, False, "Chord results in call order.")
    # Celery's database backend settings, read by the SQL result store (db+... URLs)
    database_engine_options = Option(
        _DICT, {}, "SQLAlchemy create_engine options (pool_size, pool_recycle...)."
    )
    database_engine_callback = Option(
        _ANY, None, "Called with each new engine (a callable or 'module:function')."
    )
    database_short_lived_sessions = Option(
        _BOOL,
        False,
        "caraway's SQL store holds no session between calls, so every session is short-lived.",
        old="CELERY_RESULT_DB_SHORT_LIVED_SESSIONS",
    )
    database_table_names = Option(
        _DICT, {}, "{'task': ..., 'group': ...}.", old="CELERY_RESULT_DB_TABLENAMES"
    )
    database_table_schemas = Option(_DICT, {}, "{'task': ..., 'group': ...}.")
    database_create_tables_at_setup = Option(
        _BOOL, True, "Create/upgrade the tables when the store opens (else on first use)."
    )
    result_cache_max = Option(_INT, -1, "-1 disables.", old="CELERY_MAX_CACHED_RESULTS")

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
    worker_async_concurrency = Option(_INT, 100, "caraway: async tasks at once per child.")

    # -- events and remote control ---------------------------------------------------------
    event_serializer = Option(_STR, "json", "", old="CELERY_EVENT_SERIALIZER")
    event_queue_ttl = Option(_OPT_FLOAT, 5.0, "Seconds.", old="CELERY_EVENT_QUEUE_TTL")
    event_queue_expires = Option(_OPT_FLOAT, 60.0, "Seconds.", old="CELERY_EVENT_QUEUE_EXPIRES")
    event_queue_prefix = Option(_STR, "celeryev", "", old="CELERY_EVENT_QUEUE_PREFIX")
    event_exchange = Option(_STR, "celeryev", "")
    control_exchange = Option(_STR, "celery", "Mailboxes are <name>.pidbox.")
    control_queue_ttl = Option(_OPT_FLOAT, 300.0, "Seconds.")
    control_queue_expires = Option(_OPT_FLOAT, 10.0, "Seconds.")

    # -- Celery's, accepted so Celery configurations load; caraway does not act on them ------
    beat_schedule = Option(_DICT, {}, _COMPAT, old="CELERYBEAT_SCHEDULE")
    beat_scheduler = Option(
        _STR, "celery.beat:PersistentScheduler", _COMPAT, old="CELERYBEAT_SCHEDULER"
    )
    beat_schedule_filename = Option(
        _STR, "celerybeat-schedule", _COMPAT, old="CELERYBEAT_SCHEDULE_FILENAME"
    )
    beat_sync_every = Option(_INT, 0, _COMPAT, old="CELERYBEAT_SYNC_EVERY")
    beat_max_loop_interval = Option(_FLOAT, 0, _COMPAT, old="CELERYBEAT_MAX_LOOP_INTERVAL")
    broker_read_url = Option(_OPT_STR, None, _COMPAT)
    broker_write_url = Option(_OPT_STR, None, _COMPAT)
    broker_transport = Option(_OPT_STR, None, _COMPAT, old="BROKER_TRANSPORT")
    broker_channel_error_retry = Option(_BOOL, False, _COMPAT)
    broker_failover_strategy = Option(_ANY, None, _COMPAT, old="BROKER_FAILOVER_STRATEGY")
    broker_login_method = Option(_OPT_STR, None, _COMPAT, old="BROKER_LOGIN_METHOD")
    cache_backend = Option(_ANY, None, _COMPAT, old="CELERY_CACHE_BACKEND")
    cache_backend_options = Option(_DICT, {}, _COMPAT, old="CELERY_CACHE_BACKEND_OPTIONS")
    redis_max_connections = Option(_OPT_INT, None, _COMPAT, old="CELERY_REDIS_MAX_CONNECTIONS")
    redis_socket_timeout = Option(_OPT_FLOAT, 120.0, _COMPAT)
    redis_socket_connect_timeout = Option(_OPT_FLOAT, None, _COMPAT)
    redis_retry_on_timeout = Option(_BOOL, False, _COMPAT)
    redis_socket_keepalive = Option(_BOOL, False, _COMPAT)
    result_compression = Option(_OPT_STR, None, _COMPAT, old="CELERY_MESSAGE_COMPRESSION")
    result_exchange = Option(_STR, "celeryresults", _COMPAT, old="CELERY_RESULT_EXCHANGE")
    result_exchange_type = Option(_STR, "direct", _COMPAT, old="CELERY_RESULT_EXCHANGE_TYPE")
    result_chord_join_timeout = Option(_FLOAT, 3.0, _COMPAT)
    result_chord_retry_interval = Option(_FLOAT, 1.0, _COMPAT)
    result_backend_always_retry = Option(_BOOL, False, _COMPAT)
    result_backend_max_retries = Option(_FLOAT, float("inf"), _COMPAT)
    task_compression = Option(_OPT_STR, None, _COMPAT, old="CELERY_COMPRESSION")
    task_default_delivery_mode = Option(_ANY, 2, _COMPAT, old="CELERY_DEFAULT_DELIVERY_MODE")
    task_default_exchange_type = Option(_STR, "direct", _COMPAT, old="CELERY_DEFAULT_EXCHANGE_TYPE")
    task_default_queue_type = Option(_STR, "classic", _COMPAT, old="CELERY_DEFAULT_QUEUE_TYPE")
    task_inherit_parent_priority = Option(_BOOL, False, _COMPAT)
    task_remote_tracebacks = Option(_BOOL, False, _COMPAT)
    task_store_eager_result = Option(_BOOL, False, _COMPAT)
    task_allow_error_cb_on_chord_header = Option(
        _BOOL, False, _COMPAT, old="CELERY_ALLOW_ERROR_CB_ON_CHORD_HEADER"
    )
    worker_direct = Option(_BOOL, False, _COMPAT, old="CELERY_WORKER_DIRECT")
    worker_enable_remote_control = Option(_BOOL, True, _COMPAT, old="CELERY_ENABLE_REMOTE_CONTROL")
    worker_lost_wait = Option(_FLOAT, 10.0, _COMPAT, old="CELERYD_WORKER_LOST_WAIT")
    worker_redirect_stdouts = Option(
        _BOOL, True, _COMPAT, old=("CELERY_REDIRECT_STDOUTS", "CELERYD_REDIRECT_STDOUTS")
    )
    worker_redirect_stdouts_level = Option(
        _STR,
        "WARNING",
        _COMPAT,
        old=("CELERY_REDIRECT_STDOUTS_LEVEL", "CELERYD_REDIRECT_STDOUTS_LEVEL"),
    )
    worker_log_color = Option(_OPT_BOOL, None, _COMPAT, old="CELERYD_LOG_COLOR")
    worker_cancel_long_running_tasks_on_connection_loss = Option(_BOOL, False, _COMPAT)
    worker_soft_shutdown_timeout = Option(_FLOAT, 0.0, _COMPAT)
    worker_enable_soft_shutdown_on_idle = Option(_BOOL, False, _COMPAT)
    worker_deduplicate_successful_tasks = Option(_BOOL, False, _COMPAT)
    worker_proc_alive_timeout = Option(_FLOAT, 4.0, _COMPAT)
    worker_enable_prefetch_count_reduction = Option(_BOOL, True, _COMPAT)
    worker_timer_precision = Option(_FLOAT, 1.0, _COMPAT, old="CELERYD_TIMER_PRECISION")


OPTIONS: Mapping[str, Option[Any, Any]] = types.MappingProxyType(
    {name: value for name, value in vars(OptionTable).items() if isinstance(value, Option)}
)
#: old (uppercase) name -> setting name
ALIASES: Mapping[str, str] = {old: option.name for option in OPTIONS.values() for old in option.old}

__all__ = ["ALIASES", "OPTIONS", "Option", "OptionTable"]
