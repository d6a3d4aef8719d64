"""Queues and exchanges as values: ``Queue``, ``Exchange`` and ``Broadcast`` with kombu's
constructor shapes, and :func:`as_queue` that also reads kombu's own objects.

Owns what a declaration says (names, exchange type, binding key, durability, arguments);
routing decides with them and each broker's admin declares them (``QueueAdmin.bind``).
The one thing to know: a :class:`Broadcast` is consumed by each worker through a queue of
its own (:meth:`Queue.for_node`), bound to a fanout exchange, so every worker gets a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.brokers.contracts import QueueAdmin

__all__ = [
    "EXCHANGE_TYPES",
    "Broadcast",
    "Exchange",
    "Queue",
    "as_exchange",
    "as_queue",
    "declare_on",
]

EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


@dataclass(frozen=True)
class Exchange:
    """``Exchange(name='', type='direct', durable=True, auto_delete=False, ...)``, as kombu."""

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    delivery_mode: int | None = None
    arguments: Mapping[str, Any] | None = None
    passive: bool = False
    no_declare: bool = False
    internal: bool = False

    def __post_init__(self) -> None:
        if not self.type:
            object.__setattr__(self, "type", "direct")  # kombu's Exchange('x') is direct
        if self.type not in EXCHANGE_TYPES:
            raise ValueError(
                f"exchange {self.name!r}: unknown type {self.type!r}; "
                f"use one of {', '.join(EXCHANGE_TYPES)}"
            )

    def __bool__(self) -> bool:
        return bool(self.name)  # kombu: the default exchange '' is falsy

    def __str__(self) -> str:
        return f"Exchange {self.name}({self.type})"


@dataclass(frozen=True)
class Queue:
    """``Queue(name, exchange=None, routing_key='', durable=True, ...)``, as kombu.

    ``exchange`` may be an :class:`Exchange`, its name (a direct exchange), or None (bound
    by the app's defaults: Celery's default exchange, else one named like the queue).
    """

    name: str = ""
    exchange: Exchange | str | None = None
    routing_key: str = ""
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    queue_arguments: Mapping[str, Any] | None = None
    binding_arguments: Mapping[str, Any] | None = None
    consumer_arguments: Mapping[str, Any] | None = None
    no_ack: bool = False
    alias: str | None = None
    expires: float | None = None
    message_ttl: float | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    max_priority: int | None = None
    no_declare: bool = False
    #: kombu's ``bindings=`` (several exchanges); kept for declaring, routing uses the first
    bindings: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.exchange, str):
            object.__setattr__(self, "exchange", Exchange(self.exchange))
        if self.bindings and not isinstance(self.bindings, tuple):
            object.__setattr__(self, "bindings", tuple(self.bindings))

    @property
    def exchange_entity(self) -> Exchange | None:
        return self.exchange if isinstance(self.exchange, Exchange) else None

    @property
    def is_broadcast(self) -> bool:
        exchange = self.exchange_entity
        return exchange is not None and exchange.type == "fanout"

    def for_node(self, hostname: str) -> Queue:
        """The queue one worker consumes this one through: itself, or for a broadcast
        (fanout) queue, a queue of the node's own bound to the same exchange."""
        if not self.is_broadcast:
            return self
        return replace(self, name=f"{self.name}.bcast.{hostname}", alias=self.name)

    def arguments(self) -> dict[str, Any]:
        """The queue arguments AMQP declares it with (x-expires, x-max-priority...)."""
        arguments = dict(self.queue_arguments or {})
        extra = {
            "x-expires": None if self.expires is None else int(self.expires * 1000),
            "x-message-ttl": None if self.message_ttl is None else int(self.message_ttl * 1000),
            "x-max-length": self.max_length,
            "x-max-length-bytes": self.max_length_bytes,
            "x-max-priority": self.max_priority,
        }
        arguments.update({key: value for key, value in extra.items() if value is not None})
        return arguments


def Broadcast(name: str, queue: str | None = None, unique: bool = False, **options: Any) -> Queue:
    """kombu's ``Broadcast('name')``: a queue on a fanout exchange named ``name``; each
    worker consuming it gets its own copy of every message."""
    exchange = options.pop("exchange", None) or Exchange(name, type="fanout")
    options.setdefault("auto_delete", True)
    options.setdefault("durable", False)
    return Queue(queue or name, exchange=as_exchange(exchange), alias=name, **options)


def as_exchange(value: Any) -> Exchange | None:
    """An :class:`Exchange` from ours, a name, None, or kombu's ``Exchange``."""
    if value is None or isinstance(value, Exchange):
        return value
    if isinstance(value, str):
        return Exchange(value) if value else None
    name = getattr(value, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"not an exchange: {value!r}")
    return Exchange(
        name,
        type=str(getattr(value, "type", None) or "direct"),
        durable=bool(getattr(value, "durable", True)),
        auto_delete=bool(getattr(value, "auto_delete", False)),
        delivery_mode=getattr(value, "delivery_mode", None),
        arguments=getattr(value, "arguments", None),
        no_declare=bool(getattr(value, "no_declare", False)),
    )


_KOMBU_QUEUE_FIELDS = (
    "durable",
    "exclusive",
    "auto_delete",
    "queue_arguments",
    "binding_arguments",
    "consumer_arguments",
    "no_ack",
    "alias",
    "expires",
    "message_ttl",
    "max_length",
    "max_length_bytes",
    "max_priority",
    "no_declare",
)


def as_queue(value: Any, name: str | None = None) -> Queue:
    """A :class:`Queue` from ours, a name, a ``task_queues`` dict entry, or kombu's ``Queue``
    (kombu's ``Broadcast`` included: its unique name is replaced by its alias)."""
    if isinstance(value, Queue):
        return value
    if isinstance(value, str):
        return Queue(value)
    if isinstance(value, Mapping):
        options = dict(value)
        options.setdefault("routing_key", options.pop("binding_key", None) or name or "")
        exchange_type = options.pop("exchange_type", None)
        exchange = as_exchange(options.pop("exchange", None))
        if exchange is not None and exchange_type:
            exchange = replace(exchange, type=exchange_type)
        return Queue(name or options.pop("name", ""), exchange=exchange, **options)
    queue_name = getattr(value, "name", None)
    if not isinstance(queue_name, str):
        raise TypeError(f"not a queue: {value!r}")
    options = {key: getattr(value, key, None) for key in _KOMBU_QUEUE_FIELDS}
    options = {key: item for key, item in options.items() if item is not None}
    exchange = as_exchange(getattr(value, "exchange", None))
    if exchange is not None and exchange.type == "fanout" and options.get("alias"):
        queue_name = str(options["alias"])  # kombu's Broadcast names its queue bcast.<uuid>
    return Queue(
        queue_name,
        exchange=exchange,
        routing_key=str(getattr(value, "routing_key", "") or ""),
        **options,
    )


def declare_on(admin: QueueAdmin, queue: Queue) -> None:
    """Make ``queue`` exist on ``admin``'s broker: bound to its exchange with its binding key
    when it names one, else declared alone (reached through the default exchange)."""
    exchange = queue.exchange_entity
    if exchange is None or not exchange.name:
        admin.declare(queue.name)
        return
    admin.bind(
        queue.name,
        exchange=exchange.name,
        exchange_type=exchange.type,
        routing_key=queue.routing_key,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
    )
