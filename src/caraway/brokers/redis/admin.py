"""The Redis broker's off-hot-path operations: producer-side parking, revocations, queue
sizes and purges, and the dead-letter store.

Kept apart from ``redis.py`` so that module stays about claiming and settling messages.
Keys: ``caraway.schedule`` (zset of ``<len>:<list key><envelope>`` by ETA),
``caraway.revoked`` (zset of task ids by expiry) and ``caraway.dead``/``caraway.dead.index``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis
from redis.commands.core import Script

from caraway.brokers.contracts import DeadLetter
from caraway.exceptions import ProtocolError
from caraway.protocol.envelope import pack, unpack
from caraway.protocol.message import Message

T = TypeVar("T")


class RedisHost(Protocol):
    """What :class:`RedisAdmin` needs of the transport it is mixed into."""

    client: redis.Redis
    prefix: str
    _declared: set[tuple[str, str, str]]
    _unbury: Script

    def _k(self, name: str) -> str: ...
    def queue_key(self, queue: str, priority: int = 0) -> str: ...
    def _queue_keys(self, queue: str) -> list[str]: ...
    def _queue_of(self, key: str) -> str: ...
    def _dead_keys(self) -> list[str]: ...
    def _call(self, what: str, fn: Callable[[], T]) -> T: ...
    def _send(
        self, what: str, commands: list[tuple[Any, ...]], *, transaction: bool
    ) -> list[Any]: ...
    def _declare_into(
        self, commands: list[tuple[Any, ...]], queue: str, exchange: str, routing_key: str
    ) -> list[tuple[str, str, str]]: ...
    def _dead_target(self, record: bytes | None) -> tuple[str, str] | None: ...


class RedisAdmin:
    """Mixin for RedisTransport; its methods take the transport as a :class:`RedisHost`."""

    # -- producer-side parking and revocations -----------------------------------------

    def publish_parked(self: RedisHost, message: Message, *, queue: str, eta: float) -> None:
        """Publish straight into ``caraway.schedule`` (the zset :meth:`park` uses), due at
        ``eta``; a claim promotes it to its list once due, as it does a parked delivery."""
        priority = _priority_of(message)
        key = self.queue_key(queue, priority)
        raw = pack(
            message,
            exchange="",
            routing_key=queue,
            delivery_tag=str(uuid.uuid4()),
            priority=priority,
        )
        commands: list[tuple[Any, ...]] = []
        declared = self._declare_into(commands, queue, "", queue)
        member = f"{len(key.encode())}:{key}".encode() + raw
        commands.append(("ZADD", self._k("caraway.schedule"), repr(float(eta)), member))
        self._send("publish_parked", commands, transaction=len(commands) > 1)
        self._declared.update(declared)

    def scheduled(self: RedisHost, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        """Parked messages, soonest first, as ``(eta, queue, message)``; unreadable ones are
        left out (the claim that promotes them sets them aside)."""
        schedule = self._k("caraway.schedule")
        found = self._call(
            "scheduled", lambda: self.client.zrange(schedule, 0, limit - 1, withscores=True)
        )
        listed: list[tuple[float, str, Message]] = []
        for member, eta in _list(found):
            head, colon, rest = _bytes(member).partition(b":")
            if not colon or not head.isdigit():
                continue
            size = int(head)
            try:
                message = unpack(rest[size:]).message
            except (ProtocolError, ValueError, KeyError, TypeError):
                continue
            listed.append((float(eta), self._queue_of(rest[:size].decode()), message))
        return listed

    def record_revoked(self: RedisHost, task_ids: Sequence[str], *, expires: float) -> None:
        """Add ids to ``caraway.revoked`` scored by their expiry; expired ids go on write."""
        now = time.time()
        key = self._k("caraway.revoked")
        commands: list[tuple[Any, ...]] = [("ZREMRANGEBYSCORE", key, "-inf", repr(now))]
        if task_ids:
            deadline = repr(now + expires)
            commands.append(("ZADD", key, *(x for i in task_ids for x in (deadline, i))))
        self._send("record_revoked", commands, transaction=True)

    def revoked_ids(self: RedisHost) -> list[str]:
        key = self._k("caraway.revoked")
        found = self._call(
            "revoked_ids",
            lambda: self.client.zrange(key, f"({time.time()!r}", "+inf", byscore=True),
        )
        return [_text(task_id) for task_id in _list(found)]

    # -- queues and dead letters -------------------------------------------------------

    def size(self: RedisHost, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self._queue_keys(queue):
            pipe.llen(self._k(key))
        return sum(self._call("size", pipe.execute))

    def purge(self: RedisHost, queue: str) -> int:
        pipe = self.client.pipeline(transaction=True)
        keys = [self._k(key) for key in self._queue_keys(queue)]
        for key in keys:
            pipe.llen(key)
        pipe.delete(*keys)
        replies = self._call("purge", pipe.execute)
        return int(sum(replies[: len(keys)]))

    def dead_letters(self: RedisHost, *, limit: int = 100) -> list[DeadLetter]:
        dead, index, _seq = self._dead_keys()

        def read() -> list[DeadLetter]:
            ids = [_text(i) for i in _list(self.client.zrange(index, 0, limit - 1))]
            records: list[Any] = self.client.hmget(dead, ids) if ids else []
            return [
                _dead_letter(i, record)
                for i, record in zip(ids, records, strict=True)
                if record is not None
            ]

        return self._call("dead_letters", read)

    def requeue_dead_letters(self: RedisHost, ids: Sequence[int | str] | None = None) -> int:
        dead, index, _seq = self._dead_keys()

        def run() -> int:
            wanted = (
                [str(i) for i in ids]
                if ids is not None
                else [_text(i) for i in _list(self.client.zrange(index, 0, -1))]
            )
            if not wanted:
                return 0
            args: list[Any] = [self.prefix]
            records: list[Any] = self.client.hmget(dead, wanted)
            for dead_id, record in zip(wanted, records, strict=True):
                target = self._dead_target(record)
                if target is not None:
                    args += [dead_id, *target]
            return int(self._unbury(keys=[dead, index], args=args)) if len(args) > 1 else 0

        return self._call("requeue_dead_letters", run)

    def _dead_target(self: RedisHost, record: bytes | None) -> tuple[str, str] | None:
        if record is None:
            return None
        data = json.loads(record)
        envelope = str(data["envelope"])
        try:
            priority = _int(json.loads(envelope)["properties"].get("priority"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # not a usable envelope: stays in the store for a human
        return self.queue_key(str(data["queue"]), priority), envelope

    def purge_dead_letters(self: RedisHost) -> int:
        dead, index, _seq = self._dead_keys()
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(index)
        pipe.delete(dead, index)
        return int(self._call("purge_dead_letters", pipe.execute)[0])


# -- reply coercion, shared with redis.py ----------------------------------------------


def _priority_of(message: Message) -> int:
    priority = message.properties.get("priority")
    if priority is None:
        return 0  # most messages: no exception to raise and catch in _int
    return max(0, min(9, _int(priority)))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _list(value: Any) -> list[Any]:
    return list(value or [])


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dead_letter(dead_id: str, record: bytes) -> DeadLetter:
    data = json.loads(record)
    envelope = str(data.get("envelope", ""))
    try:
        message = unpack(envelope).message
    except (ProtocolError, ValueError, KeyError, TypeError):
        # what could not be decoded is shown as its raw bytes
        message = Message(
            body=envelope.encode(), headers={}, content_type="application/octet-stream"
        )
    return DeadLetter(
        id=dead_id,
        queue=str(data.get("queue", "")),
        reason=str(data.get("reason", "")),
        message=message,
        failed_at=float(data.get("failed_at", 0.0)),
    )
