"""Celery 5.5+'s native delayed delivery on RabbitMQ, for quorum queues: the same exchanges,
queues and routing keys, so delayed messages cross between Celery and caraway both ways.

Layout (Celery's, kombu.transport.native_delayed_delivery): 28 levels; level ``n`` is topic
exchange ``celery_delayed_<n>`` and quorum queue ``celery_delayed_<n>`` (TTL 2**n s,
dead-lettered onward to level ``n - 1``, level 0 to topic exchange ``celery_delayed_delivery``).
A delayed message is published to ``celery_delayed_27`` with routing key = its delay in
whole seconds as 28 binary digits, dot-separated, most significant first, then ``.`` and its
own routing key; a level holds it only when its digit is 1. The delivery exchange routes it
by ``#.<routing key>``, so each task queue is bound there. The one thing to know: every
entity is declared with exactly Celery's arguments, so whoever declares first, the other's
declaration succeeds.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: levels 0..27: delays up to 2**28 - 1 s (8.5 years), as Celery's
BITS = 28
TOP = f"celery_delayed_{BITS - 1}"
DELIVERY = "celery_delayed_delivery"
#: a routing key that went through the tree before (a retry) starts with 28 digits
_PREFIX = re.compile(rf"^(?:[01]\.){{{BITS}}}")


def level_name(level: int) -> str:
    return f"celery_delayed_{level}"


def delay_seconds(eta: float, now: float) -> int:
    """Whole seconds to wait, rounded up so a message never arrives early; capped."""
    return max(1, min(math.ceil(eta - now), (1 << BITS) - 1))


def routing_key(seconds: int, key: str) -> str:
    """The routing key a message waiting ``seconds`` is published with (Celery's form)."""
    digits = ".".join(format(seconds, f"0{BITS}b"))
    return f"{digits}.{_PREFIX.sub('', key, count=1)}"


def original_routing_key(key: str) -> str:
    """``key`` without the delay digits a trip through the tree put in front of it."""
    return _PREFIX.sub("", key, count=1)


def queue_arguments(level: int, queue_type: str = "quorum") -> dict[str, Any]:
    onward = level_name(level - 1) if level > 0 else DELIVERY
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type,
        "x-overflow": "reject-publish",
        "x-message-ttl": (1 << level) * 1000,
        "x-dead-letter-exchange": onward,
    }
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
    return arguments


def declare_tree(channel: Any, queue_type: str = "quorum") -> None:
    """Declare every level's exchange, queue and bindings, and the delivery exchange
    (idempotent; Celery's worker declares the same)."""
    for level in range(BITS - 1, -1, -1):
        name = level_name(level)
        channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
        channel.queue_declare(
            name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=queue_arguments(level, queue_type),
        )
        channel.queue_bind(name, exchange=name, routing_key=_pattern(level, "1"))
    for level in range(BITS - 1, 0, -1):
        channel.exchange_bind(
            destination=level_name(level - 1),
            source=level_name(level),
            routing_key=_pattern(level, "0"),
        )
    channel.exchange_declare(DELIVERY, "topic", durable=True, auto_delete=False)
    channel.exchange_bind(destination=DELIVERY, source=level_name(0), routing_key=_pattern(0, "0"))


def _pattern(level: int, digit: str) -> str:
    """Matches a key whose digit for ``level`` is ``digit`` (digits run 27 down to 0)."""
    return "*." * (BITS - 1 - level) + f"{digit}.#"


def bind_queue(channel: Any, queue: str, key: str) -> None:
    """Route messages leaving the tree with routing key ``key`` to ``queue``.

    Bound to the delivery exchange itself, so it works whatever type the queue's own
    exchange has (Celery binds a topic exchange there; RabbitMQ delivers a message to a
    queue once, however many bindings match).
    """
    channel.queue_bind(queue, exchange=DELIVERY, routing_key=f"#.{key}")
