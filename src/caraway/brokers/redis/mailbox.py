"""Celery's pidbox on Redis (docs/design/protocol.md §2.4, §2.6, §6): pub/sub out, lists back.

Requests are PUBLISHed in kombu's envelope on ``<prefix>/<db>.celery.pidbox``; nodes
PSUBSCRIBE to it and record their mailbox in ``_kombu.binding.celery.pidbox``. Replies are
LPUSHed to every queue bound in ``_kombu.binding.reply.celery.pidbox`` under the reply's
routing key, which the client records (with a sweep deadline) before it publishes and
BRPOPs. Nothing is persisted: a node that is not subscribed at that moment misses it.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import (
    PIDBOX_EXCHANGE,
    REPLY_EXCHANGE,
    Mailbox,
    node_queue,
    reply_queue,
)
from caraway.clients.redis import connect, parse_redis_url
from caraway.exceptions import BrokerError
from caraway.protocol import envelope
from caraway.protocol.message import Message

T = TypeVar("T")

logger = logging.getLogger("caraway.brokers.redis.mailbox")

SEP = "\x06\x16"
#: kombu's priority buckets: a queue is four lists, all polled (§2.3)
_STEPS = (0, 3, 6, 9)
#: lifetime kombu 5.7 gives the binding table of an expiring queue: max(2 x-expires, 1 h)
_DEADLINE_MS = 3_600_000
_REFRESH_EVERY = 600.0

# Add a binding and push its exchange's sweep deadline forward, as kombu 5.7 does, so a
# kombu peer's sweep never deletes a table that a live caraway node or client relies on.
_BIND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[2])
return 1
"""


class RedisMailbox(Mailbox):
    """The pidbox of ``redis://`` brokers, exactly where Celery 5.7 puts it."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = str(self.options.get("global_keyprefix", "") or "")
        self.db = parse_redis_url(url).db
        self.channel = f"{self.prefix}/{self.db}.{PIDBOX_EXCHANGE}"
        self.client = connect(url, self.options)
        self._bind = self.client.register_script(_BIND)
        self._pubsub: Any = None
        self._hostname: str | None = None
        self._next_refresh = 0.0
        self._where = parse_redis_url(url).redacted()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise BrokerError(f"Redis at {self._where}: cannot {what}: {exc}") from exc

    def _k(self, name: str) -> str:
        return self.prefix + name

    def _list_keys(self, queue: str) -> list[str]:
        return [self._k(queue if step == 0 else f"{queue}{SEP}{step}") for step in _STEPS]

    def _declare(self, exchange: str, member: str) -> None:
        keys = [self._k(f"_kombu.binding.{exchange}"), self._k("_kombu.binding_deadlines")]
        self._bind(keys=keys, args=[member, exchange, _DEADLINE_MS])

    def _undeclare(self, exchange: str, member: str, queue: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(self._k(f"_kombu.binding.{exchange}"), member)
        pipe.srem(self._k(f"_kombu.binding_permanent.{exchange}"), member)
        pipe.delete(*self._list_keys(queue))
        pipe.execute()

    # -- node side ---------------------------------------------------------------------
    def _node_member(self) -> str:
        assert self._hostname is not None
        return f"{SEP}{SEP}{node_queue(self._hostname)}"

    def listen(self, hostname: str) -> None:
        self._hostname = hostname

        def subscribe() -> None:
            self._declare(PIDBOX_EXCHANGE, self._node_member())
            pubsub = self.client.pubsub()
            pubsub.psubscribe(self.channel)
            self._pubsub = pubsub
            # Wait for the confirmation: a request published before Redis registered
            # the subscription would be lost, and callers expect to be reachable now.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                event = pubsub.get_message(timeout=0.5)
                if event is not None and event.get("type") == "psubscribe":
                    return

        self._call("subscribe to the pidbox", subscribe)
        self._next_refresh = time.monotonic() + _REFRESH_EVERY

    def fileno(self) -> int | None:
        """The subscription's socket (requests arrive on it as published messages); None
        before listen() or while it reconnects."""
        connection = getattr(self._pubsub, "connection", None)
        sock = getattr(connection, "_sock", None)  # redis-py keeps no public handle on it
        return sock.fileno() if sock is not None else None

    def receive(self) -> list[Message]:
        if self._pubsub is None:
            return []
        if time.monotonic() >= self._next_refresh:
            self._call(
                "refresh the pidbox binding",
                lambda: self._declare(PIDBOX_EXCHANGE, self._node_member()),
            )
            self._next_refresh = time.monotonic() + _REFRESH_EVERY
        return self._call("read the pidbox", self._drain)

    def _drain(self) -> list[Message]:
        messages: list[Message] = []
        while True:
            event = self._pubsub.get_message(timeout=0.0)
            if event is None:
                return messages
            if event.get("type") == "pmessage":
                found, errors = envelope.unpack_all([event["data"]])
                messages += found
                for error in errors:
                    logger.warning("dropped an unreadable remote-control envelope: %s", error)

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        raw = envelope.pack(
            message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
        )

        def send() -> None:
            # Resolve the queue like kombu's direct exchange does (§6.2): a client that
            # already gave up has removed its binding, so its late reply goes nowhere.
            members = self.client.smembers(self._k(f"_kombu.binding.{exchange}"))
            for member in members:
                text = member.decode() if isinstance(member, bytes) else str(member)
                key, _, rest = text.partition(SEP)
                queue = rest.partition(SEP)[2]
                if key == routing_key and queue:
                    self.client.lpush(self._k(queue), raw)

        self._call("send a remote-control reply", send)

    # -- client side -------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        raw = envelope.pack(
            message, exchange=PIDBOX_EXCHANGE, routing_key="", delivery_tag=str(uuid.uuid4())
        )
        self._call(
            "broadcast a remote-control request", lambda: self.client.publish(self.channel, raw)
        )

    def open_replies(self, oid: str) -> None:
        member = f"{oid}{SEP}{SEP}{reply_queue(oid)}"
        self._call("bind the reply queue", lambda: self._declare(REPLY_EXCHANGE, member))

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        keys = self._list_keys(reply_queue(oid))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # short blocking reads keep us under any socket_timeout the user set
            wait = max(0.01, min(left, 1.0))
            found = self._call(
                "wait for replies", functools.partial(self.client.brpop, keys, timeout=wait)
            )
            if found is not None:
                return envelope.unpack(found[1]).message

    def close_replies(self, oid: str) -> None:
        member = f"{oid}{SEP}{SEP}{reply_queue(oid)}"
        self._call(
            "remove the reply queue",
            lambda: self._undeclare(REPLY_EXCHANGE, member, reply_queue(oid)),
        )

    def close(self) -> None:
        try:
            if self._pubsub is not None and self._hostname is not None:
                # what a Celery worker does on warm shutdown (§2.4)
                self._undeclare(PIDBOX_EXCHANGE, self._node_member(), node_queue(self._hostname))
                self._pubsub.close()
        except redis.RedisError as exc:
            # the binding is swept after its deadline; nothing else is left behind
            logger.warning("cannot remove the pidbox binding at %s: %s", self._where, exc)
        finally:
            self._pubsub = None
            self.client.close()
