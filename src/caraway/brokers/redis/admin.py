"""Administration of the Redis broker: queue sizes and purges, the schedule listing, the
dead-letter store and the revocation record, on a client of its own.

Keys: ``caraway.schedule`` (zset of ``<len>:<list key><envelope>`` by ETA, written by the
transport), ``caraway.revoked`` (zset of task ids by expiry) and ``caraway.dead`` /
``caraway.dead.index`` (records by id, ids by failure time); queues as in ``keys.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from caraway.brokers.contracts import DeadLetter, QueueAdmin, Revocations
from caraway.brokers.redis import scripts as lua
from caraway.brokers.redis.keys import Command, Keys, bound_queue, fanout_key
from caraway.clients.redis import (
    connect,
    parse_redis_url,
    retrying,
    text,
    to_bytes,
    to_int,
    to_list,
)
from caraway.exceptions import ProtocolError
from caraway.protocol.envelope import unpack
from caraway.protocol.message import Message

T = TypeVar("T")


class RedisAdmin(QueueAdmin, Revocations):
    """The admin of ``redis://`` brokers; ``options`` as the transport's (the key prefix,
    ``sep``, ``priority_steps``, connection options, ``max_retries``)."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.keys = Keys.from_options(self.options)
        self.max_retries = int(self.options.get("max_retries", 3))
        self._where = parse_redis_url(url).redacted()
        self.client = connect(url, self.options)
        self._unbury = self.client.register_script(lua.REQUEUE_DEAD)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        # every command here may run twice: reads, purges, and scripts keyed by id
        return retrying(what, fn, where=self._where, retries=self.max_retries)

    def _pipeline(self, what: str, commands: list[Command], *, transaction: bool) -> list[Any]:
        """``commands`` in one round trip, retried whole: redis-py empties a pipeline when
        it executes, so a retry must build it again."""

        def run() -> list[Any]:
            pipe: Any = self.client.pipeline(transaction=transaction)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())

        return self._call(what, run)

    # -- queues --------------------------------------------------------------------------

    def size(self, queue: str) -> int:
        keys = [self.keys.k(key) for key in self.keys.queue_keys(queue)]
        lengths = self._pipeline("size", [("LLEN", key) for key in keys], transaction=False)
        return int(sum(lengths))

    def purge(self, queue: str) -> int:
        keys = [self.keys.k(key) for key in self.keys.queue_keys(queue)]
        commands: list[Command] = [("LLEN", key) for key in keys]
        replies = self._pipeline("purge", [*commands, ("DEL", *keys)], transaction=True)
        return int(sum(replies[: len(keys)]))

    def declare(self, queue: str) -> None:
        """Write ``queue``'s binding-table entries, as Celery 5.7 does when it declares it."""
        self._pipeline("declare", self.keys.binding(queue, "", queue), transaction=True)

    def bind(
        self,
        queue: str,
        *,
        exchange: str,
        exchange_type: str = "direct",
        routing_key: str = "",
        durable: bool = True,
        auto_delete: bool = False,
    ) -> None:
        """kombu's binding-table entries; for a fanout exchange, caraway's fanout set."""
        if exchange_type == "fanout":
            key = fanout_key(self.keys, exchange)
            self._call("bind", lambda: self.client.sadd(key, queue))
            return
        commands = self.keys.binding(queue, exchange, routing_key, exchange_type)
        self._pipeline("bind", commands, transaction=True)

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:
        commands: list[Command] = [("SREM", fanout_key(self.keys, exchange), queue)]
        commands += self.keys.unbinding(queue, exchange, routing_key)
        self._pipeline("unbind", commands, transaction=True)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        """Unreadable entries are left out (the claim that promotes them sets them aside)."""
        schedule = self.keys.schedule
        found = self._call(
            "scheduled", lambda: self.client.zrange(schedule, 0, limit - 1, withscores=True)
        )
        listed: list[tuple[float, str, Message]] = []
        for member, eta in to_list(found):
            head, colon, rest = to_bytes(member).partition(b":")
            if not colon or not head.isdigit():
                continue
            size = int(head)
            try:
                message = unpack(rest[size:]).message
            except (ProtocolError, ValueError, KeyError, TypeError):
                continue
            listed.append((float(eta), self.keys.queue_of(rest[:size].decode()), message))
        return listed

    def unacked(self, queues: Sequence[str]) -> dict[str, int] | None:
        """Counted from kombu's ``unacked`` hash (records of every consumer, Celery's
        too), each record's exchange and routing key resolved to its queue."""

        def count() -> dict[str, int]:
            held: dict[str, int] = dict.fromkeys(queues, 0)
            routes: dict[tuple[str, str], str] = {}
            for _, record in self.client.hscan_iter(self.keys.unacked, count=500):
                try:
                    _, exchange, routing_key = json.loads(record)
                except (ValueError, TypeError):
                    continue  # not a kombu record: nothing to count it against
                route = (str(exchange or ""), str(routing_key or ""))
                if route not in routes:
                    routes[route] = self._queue_of(*route)
                if routes[route] in held:
                    held[routes[route]] += 1
            return held

        return self._call("unacked", count)

    def _queue_of(self, exchange: str, routing_key: str) -> str:
        if not exchange:
            return routing_key
        members = self.client.smembers(self.keys.k(f"_kombu.binding.{exchange}"))
        return bound_queue(self.keys, members, routing_key)

    # -- dead letters --------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        dead, index = self.keys.dead, self.keys.dead_index

        def read() -> list[DeadLetter]:
            ids = [text(i) for i in to_list(self.client.zrange(index, 0, limit - 1))]
            records: list[Any] = self.client.hmget(dead, ids) if ids else []
            return [
                _dead_letter(i, record)
                for i, record in zip(ids, records, strict=True)
                if record is not None
            ]

        return self._call("dead_letters", read)

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        dead, index = self.keys.dead, self.keys.dead_index

        def run() -> int:
            wanted = (
                [str(i) for i in ids]
                if ids is not None
                else [text(i) for i in to_list(self.client.zrange(index, 0, -1))]
            )
            if not wanted:
                return 0
            args: list[Any] = [self.keys.prefix]
            records: list[Any] = self.client.hmget(dead, wanted)
            for dead_id, record in zip(wanted, records, strict=True):
                target = self._dead_target(record)
                if target is not None:
                    args += [dead_id, *target]
            return int(self._unbury(keys=[dead, index], args=args)) if len(args) > 1 else 0

        return self._call("requeue_dead_letters", run)

    def _dead_target(self, record: bytes | None) -> tuple[str, str] | None:
        if record is None:
            return None
        data = json.loads(record)
        envelope = str(data["envelope"])
        try:
            priority = to_int(json.loads(envelope)["properties"].get("priority"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # not a usable envelope: stays in the store for a human
        return self.keys.queue_key(str(data["queue"]), priority), envelope

    def purge_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        dead, index = self.keys.dead, self.keys.dead_index
        if ids is None:
            commands = [("ZCARD", index), ("DEL", dead, index)]
            return int(self._pipeline("purge_dead_letters", commands, transaction=True)[0])
        wanted = [str(i) for i in ids]
        if not wanted:
            return 0
        commands = [("HDEL", dead, *wanted), ("ZREM", index, *wanted)]
        return int(self._pipeline("purge_dead_letters", commands, transaction=True)[0])

    # -- revocations ---------------------------------------------------------------------

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        """Add ids to ``caraway.revoked`` scored by their expiry; expired ids go on write."""
        now = time.time()
        key = self.keys.revoked
        commands: list[Command] = [("ZREMRANGEBYSCORE", key, "-inf", repr(now))]
        if task_ids:
            deadline = repr(now + expires)
            commands.append(("ZADD", key, *(x for i in task_ids for x in (deadline, i))))
        self._pipeline("record_revoked", commands, transaction=True)

    def revoked_ids(self) -> list[str]:
        key = self.keys.revoked
        found = self._call(
            "revoked_ids",
            lambda: self.client.zrange(key, f"({time.time()!r}", "+inf", byscore=True),
        )
        return [text(task_id) for task_id in to_list(found)]

    def close(self) -> None:
        self.client.close()


def _dead_letter(dead_id: str, record: bytes) -> DeadLetter:
    # the claim script copies a buried envelope's bytes as they were, UTF-8 or not
    data = json.loads(record.decode("utf-8", "surrogateescape"))
    envelope = str(data.get("envelope", ""))
    try:
        message = unpack(envelope).message
    except (ProtocolError, ValueError, KeyError, TypeError):
        # what could not be decoded is shown as its raw bytes
        message = Message(
            body=envelope.encode("utf-8", "surrogateescape"),
            headers={},
            content_type="application/octet-stream",
        )
    return DeadLetter(
        id=dead_id,
        queue=str(data.get("queue", "")),
        reason=str(data.get("reason", "")),
        message=message,
        failed_at=float(data.get("failed_at", 0.0)),
    )
