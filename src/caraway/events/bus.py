"""The event bus seam: publish event messages, and subscribe to everything sent after.

A bus carries :class:`Message` objects built by ``caraway.protocol.events``; it never
reads an event. Events are fire-and-forget on every broker, as in Celery: a receiver
sees only what was sent while it was subscribed, and a slow receiver loses events older
than ``queue_ttl``. One bus object is used by one thread at a time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from caraway.exceptions import ImproperlyConfigured
from caraway.protocol.events import EXCHANGE
from caraway.protocol.message import Message
from caraway.taskbase import AppLike
from caraway.transports import resolve

#: scheme -> "module:Class"
BUS_ALIASES: dict[str, str] = {
    "memory": "caraway.events.bus_memory:MemoryBus",
    "sqlite": "caraway.events.bus_sqlite:SQLiteBus",
    "redis": "caraway.events.bus_redis:RedisBus",
    "rediss": "caraway.events.bus_redis:RedisBus",
    "redis+socket": "caraway.events.bus_redis:RedisBus",
    "sentinel": "caraway.events.bus_redis:RedisBus",
    "amqp": "caraway.events.bus_amqp:AMQPBus",
    "pyamqp": "caraway.events.bus_amqp:AMQPBus",
    "amqps": "caraway.events.bus_amqp:AMQPBus",
}


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Celery's event settings (``event_exchange``, ``event_queue_*``)."""

    exchange: str = EXCHANGE
    queue_prefix: str = "celeryev"
    #: seconds an event waits for a receiver before it is dropped
    queue_ttl: float = 5.0
    #: seconds an abandoned receiver queue lives on (AMQP)
    queue_expires: float = 60.0


class EventBus(abc.ABC):
    """One connection's view of the event exchange.

    Senders call :meth:`publish`; receivers call :meth:`subscribe` once, then
    :meth:`receive` in a loop. Failures raise :class:`~caraway.exceptions.BrokerError`;
    after one, the next call reconnects (a receiver subscribes again).
    """

    def __init__(
        self,
        url: str,
        *,
        options: dict[str, Any] | None = None,
        settings: BusSettings | None = None,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.settings = settings or BusSettings()

    @abc.abstractmethod
    def publish(self, message: Message, *, routing_key: str) -> None:
        """Send ``message`` to everyone subscribed now; nobody subscribed = dropped."""

    @abc.abstractmethod
    def subscribe(self, binding: str = "#") -> None:
        """Start receiving events whose routing key matches ``binding`` (AMQP topic syntax)."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> list[Message]:
        """The messages that arrived, waiting up to ``timeout`` s for the first one."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some buses
        """Stop receiving and release the connection."""


def topic_matches(binding: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more (``task.#``)."""
    return _match(binding.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


def open_bus(
    url: str, options: dict[str, Any] | None = None, *, settings: BusSettings | None = None
) -> EventBus:
    """Open the event bus for broker ``url`` (same schemes as the broker).

    Raises ImproperlyConfigured for an unknown scheme or a missing client library.
    """
    cls = resolve(url, BUS_ALIASES, group="caraway.event_buses", kind="event bus")
    if not (isinstance(cls, type) and issubclass(cls, EventBus)):
        raise ImproperlyConfigured(f"{cls!r} for {url!r} is not an EventBus subclass")
    return cls(url, options=options, settings=settings)


def settings_of(app: AppLike) -> BusSettings:
    """The app's event settings, with Celery's defaults for unset ones."""
    conf = app.conf
    return BusSettings(
        exchange=str(conf.event_exchange or EXCHANGE),
        queue_prefix=str(conf.event_queue_prefix or "celeryev"),
        queue_ttl=float(conf.event_queue_ttl if conf.event_queue_ttl is not None else 5.0),
        queue_expires=float(
            conf.event_queue_expires if conf.event_queue_expires is not None else 60.0
        ),
    )


def bus_for(app: AppLike) -> EventBus:
    """A new event bus on ``app``'s broker (the caller closes it)."""
    options = dict(app.conf.broker_transport_options)
    if app.conf.broker_use_ssl:
        options.setdefault("ssl", app.conf.broker_use_ssl)
    return open_bus(app.broker_url, options, settings=settings_of(app))
