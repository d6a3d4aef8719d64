"""The broker-side schedule of the AMQP transport: a bounded ladder of fixed-delay queues.

Per-message TTL only expires at a queue's head, so one queue cannot hold mixed delays.
Level ``n`` is queue ``caraway.delay.<n>`` (TTL 2**n s) fed by headers exchange
``caraway.delay.<n>``: a message carries one header bit per level and waits only in the
levels whose bit is set, then reaches direct exchange ``caraway.delay.deliver``, which
routes it by its original routing key (= its queue name) back to its queue.
"""

from __future__ import annotations

import math
from typing import Any

#: levels 0..23: delays up to 2**24 - 1 s (194 days); longer ETAs are parked again on arrival
LEVELS = 24
PREFIX = "caraway.delay."
DELIVER = "caraway.delay.deliver"
_BIT = "caraway-delay-b"  # not "x-...": a headers exchange ignores x- headers when matching
_BIT0 = f"{_BIT}0"


def level_name(level: int) -> str:
    return f"{PREFIX}{level}"


def entry_exchange() -> str:
    """Where a parked message is published (the top level decides on its own bit)."""
    return level_name(LEVELS - 1)


def delay_seconds(eta: float, now: float) -> int:
    """Whole seconds to wait, rounded up so a message is never promoted early; capped."""
    return max(1, min(math.ceil(eta - now), (1 << LEVELS) - 1))


def bit_headers(seconds: int) -> dict[str, str]:
    """The header bits that route a message through the levels summing to ``seconds``."""
    return {f"{_BIT}{n}": "1" if seconds >> n & 1 else "0" for n in range(LEVELS)}


def is_ladder_header(name: str) -> bool:
    """Headers added by parking or by RabbitMQ's dead-lettering, dropped on receipt."""
    return name.startswith((_BIT, "x-death", "x-first-death-", "x-last-death-"))


def without_ladder_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` minus the ladder's and dead-lettering's; the same dict if it has none.

    A parked message carries every level's bit (``0`` included) and RabbitMQ adds
    ``x-death`` whenever it adds the other death headers, so two lookups tell.
    """
    if _BIT0 not in headers and "x-death" not in headers:
        return headers
    return {k: v for k, v in headers.items() if not is_ladder_header(k)}


def declare_ladder(channel: Any) -> None:
    """Declare every level's exchange, queue and bindings (idempotent, durable)."""
    channel.exchange_declare(DELIVER, "direct", durable=True, auto_delete=False)
    for level in range(LEVELS):
        channel.exchange_declare(level_name(level), "headers", durable=True, auto_delete=False)
    for level in range(LEVELS):
        name = level_name(level)
        onward = level_name(level - 1) if level else DELIVER
        channel.queue_declare(
            name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={"x-message-ttl": 1000 << level, "x-dead-letter-exchange": onward},
        )
        bit = f"{_BIT}{level}"
        channel.queue_bind(name, exchange=name, arguments={"x-match": "all", bit: "1"})
        channel.exchange_bind(
            destination=onward, source=name, arguments={"x-match": "all", bit: "0"}
        )
