"""The plug-in registry: a broker or backend URL -> the plug-in class that serves it.

Built-in plug-ins are found by scheme in the alias tables (Celery's spellings included),
third-party ones under the ``caraway.transports``, ``caraway.admins``, ``caraway.backends``,
``caraway.mailboxes``, ``caraway.event_buses`` and ``caraway.beat_stores`` entry points.
The one thing to know: a plug-in module is imported only when its scheme is asked for, so
``import caraway`` never needs redis or amqp, and a missing client library is reported as
the extra to install.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from caraway.brokers.contracts import (
    Backend,
    BeatStore,
    BusSettings,
    EventBus,
    Mailbox,
    QueueAdmin,
    Transport,
)
from caraway.clients.urls import mask_url, url_scheme
from caraway.exceptions import ImproperlyConfigured

logger = logging.getLogger("caraway.brokers.registry")

#: broker URL scheme -> broker folder (``caraway.brokers.<folder>``)
BROKER_SCHEMES: dict[str, str] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "redis+socket": "redis",
    "sentinel": "redis",
    "amqp": "amqp",
    "pyamqp": "amqp",
    "amqps": "amqp",
    "postgresql": "postgres",
    "postgres": "postgres",
    "redis+cluster": "rediscluster",
    "rediss+cluster": "rediscluster",
}
#: result backend URL scheme -> broker folder; ``rpc://`` results travel on the AMQP broker
#: (over other brokers, on their transport: see open_backend)
BACKEND_SCHEMES: dict[str, str] = {
    "memory": "memory",
    "cache+memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "redis+socket": "redis",
    "sentinel": "redis",
    "rpc": "amqp",
    # Celery's database backend (a SQLAlchemy URL after "db+"), in Celery's table layout
    "db+postgresql": "postgres",
    "db+postgres": "postgres",
    "db+sqlite": "postgres",
    "db+mysql": "postgres",
    "db+mariadb": "postgres",
    "postgresql": "postgres",
    "postgres": "postgres",
    "redis+cluster": "rediscluster",
    "rediss+cluster": "rediscluster",
}
#: broker folder -> kind of plug-in -> "module:Class"
_PLUGINS: dict[str, dict[str, str]] = {
    "memory": {
        "admin": "caraway.brokers.memory.admin:MemoryAdmin",
        "transport": "caraway.brokers.memory.transport:MemoryTransport",
        "backend": "caraway.brokers.memory.backend:MemoryBackend",
        "mailbox": "caraway.brokers.memory.mailbox:MemoryMailbox",
        "bus": "caraway.brokers.memory.bus:MemoryBus",
        "beat": "caraway.brokers.memory.beat:MemoryBeatStore",
    },
    "sqlite": {
        "admin": "caraway.brokers.sqlite.admin:SQLiteAdmin",
        "transport": "caraway.brokers.sqlite.transport:SQLiteTransport",
        "backend": "caraway.brokers.sqlite.backend:SQLiteBackend",
        "mailbox": "caraway.brokers.sqlite.mailbox:SQLiteMailbox",
        "bus": "caraway.brokers.sqlite.bus:SQLiteBus",
        "beat": "caraway.brokers.sqlite.beat:SQLiteBeatStore",
    },
    "redis": {
        "admin": "caraway.brokers.redis.admin:RedisAdmin",
        "transport": "caraway.brokers.redis.transport:RedisTransport",
        "backend": "caraway.brokers.redis.backend:RedisBackend",
        "mailbox": "caraway.brokers.redis.mailbox:RedisMailbox",
        "bus": "caraway.brokers.redis.bus:RedisBus",
        "beat": "caraway.brokers.redis.beat:RedisBeatStore",
    },
    "amqp": {
        "admin": "caraway.brokers.amqp.admin:AMQPAdmin",
        "transport": "caraway.brokers.amqp.transport:AMQPTransport",
        "backend": "caraway.brokers.amqp.backend:RPCBackend",
        "mailbox": "caraway.brokers.amqp.mailbox:AMQPMailbox",
        "bus": "caraway.brokers.amqp.bus:AMQPBus",
        "beat": "caraway.brokers.amqp.beat:AMQPBeatStore",
    },
    "postgres": {
        "admin": "caraway.brokers.postgres.admin:PostgresAdmin",
        "transport": "caraway.brokers.postgres.transport:PostgresTransport",
        "backend": "caraway.brokers.postgres.backend:SQLBackend",
        "mailbox": "caraway.brokers.postgres.mailbox:PostgresMailbox",
        "bus": "caraway.brokers.postgres.bus:PostgresBus",
        "beat": "caraway.brokers.postgres.beat:PostgresBeatStore",
    },
    "rediscluster": {
        "admin": "caraway.brokers.rediscluster.admin:RedisClusterAdmin",
        "transport": "caraway.brokers.rediscluster.transport:RedisClusterTransport",
        "backend": "caraway.brokers.rediscluster.backend:RedisClusterBackend",
        "mailbox": "caraway.brokers.rediscluster.mailbox:RedisClusterMailbox",
        "bus": "caraway.brokers.rediscluster.bus:RedisClusterBus",
        "beat": "caraway.brokers.rediscluster.beat:RedisClusterBeatStore",
    },
}


def _aliases(schemes: dict[str, str], kind: str) -> dict[str, str]:
    return {scheme: _PLUGINS[folder][kind] for scheme, folder in schemes.items()}


#: scheme -> "module:Class", one table per kind of plug-in
TRANSPORT_ALIASES = _aliases(BROKER_SCHEMES, "transport")
ADMIN_ALIASES = _aliases(BROKER_SCHEMES, "admin")
MAILBOX_ALIASES = _aliases(BROKER_SCHEMES, "mailbox")
BUS_ALIASES = _aliases(BROKER_SCHEMES, "bus")
BACKEND_ALIASES = _aliases(BACKEND_SCHEMES, "backend")
BEAT_ALIASES = _aliases(BROKER_SCHEMES, "beat")

#: top-level client package -> the extra that installs it
_EXTRAS = {"redis": "redis", "amqp": "amqp", "sqlalchemy": "sql", "psycopg": "postgres"}


def open_transport(url: str, *, options: dict[str, Any] | None = None) -> Transport:
    """Open the transport for broker ``url`` (the caller closes it).

    Raises ImproperlyConfigured for an unknown scheme (listing the known ones) or when the
    transport's client library is not installed (naming the extra to install).
    """
    cls: type[Transport] = _plugin(
        url, TRANSPORT_ALIASES, "caraway.transports", "transport", Transport
    )
    return cls(url, options=options)


def open_admin(url: str, *, options: dict[str, Any] | None = None) -> QueueAdmin:
    """Open the queue admin of broker ``url`` (the caller closes it); it connects on first
    use. Raises ImproperlyConfigured as open_transport."""
    cls: type[QueueAdmin] = _plugin(url, ADMIN_ALIASES, "caraway.admins", "queue admin", QueueAdmin)
    return cls(url, options=options)


#: ``rpc://`` over a broker other than RabbitMQ: results travel through its transport
REPLY_BACKEND = "caraway.brokers.rpc:ReplyBackend"


def open_backend(url: str, *, options: dict[str, Any] | None = None) -> Backend:
    """Open the result backend for ``url``; raises ImproperlyConfigured as open_transport.

    ``rpc://`` follows the broker (``options['broker_url']``): RabbitMQ's own reply-queue
    backend, else the transport-generic one, as Celery's rpc backend works over any broker.
    """
    aliases = BACKEND_ALIASES
    broker = str((options or {}).get("broker_url") or "")
    if url_scheme(url) == "rpc" and broker and BROKER_SCHEMES.get(url_scheme(broker)) != "amqp":
        aliases = {**BACKEND_ALIASES, "rpc": REPLY_BACKEND}
    cls: type[Backend] = _plugin(url, aliases, "caraway.backends", "result backend", Backend)
    return cls(url, options=options)


def open_mailbox(url: str, options: dict[str, Any] | None = None) -> Mailbox:
    """Open the remote-control mailbox of broker ``url`` (same schemes as the broker)."""
    cls: type[Mailbox] = _plugin(url, MAILBOX_ALIASES, "caraway.mailboxes", "mailbox", Mailbox)
    return cls(url, options=options)


def open_bus(
    url: str, options: dict[str, Any] | None = None, *, settings: BusSettings | None = None
) -> EventBus:
    """Open the event bus of broker ``url`` (same schemes as the broker)."""
    cls: type[EventBus] = _plugin(url, BUS_ALIASES, "caraway.event_buses", "event bus", EventBus)
    return cls(url, options=options, settings=settings)


def open_beat_store(
    url: str,
    *,
    options: dict[str, Any] | None = None,
    namespace: str,
    holder: str,
    node: str,
    lease_seconds: float = 5.0,
) -> BeatStore:
    """Open the periodic-task store of broker ``url`` for the schedule ``namespace`` (the
    caller closes it); ``holder`` names this beat instance, ``node`` is shown as leader."""
    cls: type[BeatStore] = _plugin(
        url, BEAT_ALIASES, "caraway.beat_stores", "beat store", BeatStore
    )
    return cls(
        url,
        options=options,
        namespace=namespace,
        holder=holder,
        node=node,
        lease_seconds=lease_seconds,
    )


def preload(url: str, *, backend_url: str | None = None) -> None:
    """Import the mailbox and event bus of broker ``url`` and the backend of ``backend_url``.

    For a worker about to fork: what its parent opens only after forking is imported now,
    so the children share those pages. A plug-in that cannot load is left for the open
    that follows to report.
    """
    wanted = [
        (url, MAILBOX_ALIASES, "caraway.mailboxes", "mailbox"),
        (url, BUS_ALIASES, "caraway.event_buses", "event bus"),
    ]
    if backend_url:
        wanted.append((backend_url, BACKEND_ALIASES, "caraway.backends", "result backend"))
    for plugin_url, aliases, group, kind in wanted:
        try:
            resolve(plugin_url, aliases, group=group, kind=kind)
        except Exception as exc:  # opening it after the fork reports the error
            logger.debug("not preloading the %s for %s: %s", kind, mask_url(plugin_url), exc)


def _plugin(url: str, aliases: dict[str, str], group: str, kind: str, base: type[Any]) -> type[Any]:
    cls = resolve(url, aliases, group=group, kind=kind)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ImproperlyConfigured(
            f"{cls!r} for {url_scheme(url)}:// is not a {base.__name__} subclass"
        )
    return cls


def resolve(url: str, aliases: dict[str, str], *, group: str, kind: str) -> Any:
    """Import the class registered for ``url``'s scheme in ``aliases`` or entry-point ``group``.

    ``kind`` only words the error messages.
    """
    scheme = url_scheme(url)
    target = aliases.get(scheme)
    if target is None:
        plugins = _entry_points(group)
        if scheme in plugins:
            return plugins[scheme].load()
        if "+" in scheme:
            # a SQLAlchemy driver after the dialect: db+postgresql+psycopg, db+mysql+pymysql
            target = aliases.get(scheme.rpartition("+")[0])
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted({*aliases, *plugins}))
        raise ImproperlyConfigured(
            f"unknown {kind} scheme {scheme!r} in {mask_url(url)!r}; known schemes: {known} "
            f"(third-party {kind}s register under the {group!r} entry-point group)"
        )
    module_name, _, attr = target.partition(":")
    try:
        # the one dynamic import: a plug-in found by its URL, at the edge
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _missing_module(exc, module_name, scheme, kind) from exc
    return getattr(module, attr)


def _missing_module(
    exc: ModuleNotFoundError, module_name: str, scheme: str, kind: str
) -> ImproperlyConfigured:
    missing = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(missing)
    if extra is not None:
        return ImproperlyConfigured(
            f"the {scheme}:// {kind} needs the {missing!r} package, which is not installed; "
            f"run: pip install 'caraway[{extra}]'"
        )
    if exc.name == module_name:
        return ImproperlyConfigured(
            f"the {scheme}:// {kind} ({module_name}) is not available in this version of caraway"
        )
    return ImproperlyConfigured(f"cannot load the {scheme}:// {kind}: {exc}")


def _entry_points(group: str) -> dict[str, Any]:
    """Third-party plug-ins of ``group``, by lower-cased name."""
    # importlib.metadata brings email, csv, zipfile and more (about 100 modules): every
    # worker process would hold them for a lookup that only unknown schemes make
    from importlib import metadata  # noqa: PLC0415 - only for third-party schemes, see above

    return {entry.name.lower(): entry for entry in metadata.entry_points(group=group)}


__all__ = [
    "ADMIN_ALIASES",
    "BACKEND_ALIASES",
    "BEAT_ALIASES",
    "BUS_ALIASES",
    "MAILBOX_ALIASES",
    "TRANSPORT_ALIASES",
    "open_admin",
    "open_backend",
    "open_beat_store",
    "open_bus",
    "open_mailbox",
    "open_transport",
    "preload",
    "resolve",
]
