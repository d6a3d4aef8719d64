"""The dead-letter store of the Redis Cluster broker, in one slot (``{dead}``): a hash of
letters (id -> JSON: queue, reason, failed_at, delivery count, envelope) and a sorted set of
ids by when they failed, so the oldest are listed first."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from caraway.brokers.contracts import DeadLetter, Delivery
from caraway.brokers.rediscluster.keys import dead_keys
from caraway.clients.redis import text
from caraway.clients.rediscluster import retrying
from caraway.protocol import envelope

#: KEYS: letters, order. ARGV: id, letter, failed at.
_RECORD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""


def record_dead_letter(
    client: Any, prefix: str, delivery: Delivery, reason: str, *, where: str
) -> None:
    """Set ``delivery``'s message aside with ``reason`` (idempotent per call's id)."""
    letters, order = dead_keys(prefix)
    failed_at = time.time()
    raw = envelope.pack(
        delivery.message,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key or delivery.queue,
        delivery_tag=delivery.tag,
    )
    letter = json.dumps(
        {
            "queue": delivery.queue,
            "reason": reason,
            "failed_at": failed_at,
            "delivery_count": delivery.delivery_count,
            "envelope": raw.decode(),
        }
    )
    letter_id = uuid.uuid4().hex
    script = client.register_script(_RECORD)
    retrying(
        "dead_letter",
        lambda: script(keys=[letters, order], args=[letter_id, letter, failed_at]),
        where=where,
        retries=3,
    )


def read_letters(client: Any, prefix: str, limit: int | None) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters (all for None), oldest first."""
    letters, order = dead_keys(prefix)
    ids = [text(i) for i in client.zrange(order, 0, -1 if limit is None else limit - 1)]
    if not ids:
        return []
    found = client.hmget(letters, ids)
    return [_letter(letter_id, raw) for letter_id, raw in zip(ids, found, strict=True) if raw]


def _letter(letter_id: str, raw: Any) -> DeadLetter:
    data = json.loads(raw)
    return DeadLetter(
        id=letter_id,
        queue=str(data["queue"]),
        reason=str(data["reason"]),
        message=envelope.unpack(data["envelope"]).message,
        failed_at=float(data["failed_at"]),
    )


def forget_letters(client: Any, prefix: str, ids: list[str]) -> int:
    letters, order = dead_keys(prefix)
    if not ids:
        return 0
    pipe = client.pipeline(transaction=False)
    pipe.hdel(letters, *ids)
    pipe.zrem(order, *ids)
    removed = pipe.execute()
    return int(removed[0])


def purge_letters(client: Any, prefix: str) -> int:
    letters, order = dead_keys(prefix)
    count = int(client.hlen(letters))
    pipe = client.pipeline(transaction=False)
    pipe.delete(letters)
    pipe.delete(order)
    pipe.execute()
    return count


__all__ = ["forget_letters", "purge_letters", "read_letters", "record_dead_letter"]
