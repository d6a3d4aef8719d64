"""The pidbox on a Redis Cluster: broadcasts by cluster-wide PUBLISH, replies in lists.

Requests are PUBLISHed in kombu's envelope on ``<prefix>caraway.pidbox`` (a cluster carries
plain pub/sub to every node, so a node subscribed anywhere gets it). A client registers its
reply box ``caraway-reply:{<oid>}`` with a flag key in the same slot; a node's reply is
pushed only while the flag exists, and the client BRPOPs the box (one key: any node).
Nothing is persisted: a node not subscribed at that moment misses the request, as in Celery.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import PIDBOX_EXCHANGE, Mailbox
from caraway.clients.rediscluster import (
    connect_cluster,
    hash_tag,
    key_prefix,
    parse_cluster_url,
    retrying,
)
from caraway.protocol import envelope
from caraway.protocol.message import Message

T = TypeVar("T")

#: a client that crashed without closing its box leaves it behind this long
_BOX_LIFETIME = 3600
#: KEYS: box, flag. ARGV: reply. Only a box still open gets the reply.
_REPLY = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""


logger = logging.getLogger("caraway.brokers.rediscluster.mailbox")


class RedisClusterMailbox(Mailbox):
    """The pidbox of ``redis+cluster://`` brokers."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = key_prefix(url, self.options)
        self.channel = f"{self.prefix}caraway.{PIDBOX_EXCHANGE}"
        self._where = parse_cluster_url(url).redacted()
        self.client: Any = connect_cluster(url, self.options)
        self._reply = self.client.register_script(_REPLY)
        self._pubsub: Any = None

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(
            what, fn, where=self._where, retries=int(self.options.get("max_retries", 3))
        )

    def _box(self, oid: str) -> tuple[str, str]:
        base = f"{self.prefix}caraway-reply:{{{hash_tag(oid)}}}"
        return base, f"{base}:open"

    # -- node side ---------------------------------------------------------------------
    def listen(self, hostname: str) -> None:
        self._run("subscribe to the pidbox", self._subscribe)

    def _subscribe(self) -> None:
        pubsub = self.client.pubsub()
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            event = pubsub.get_message(timeout=0.1)
            if event is not None and event.get("type") == "subscribe":
                break
        self._pubsub = pubsub

    def receive(self) -> list[Message]:
        if self._pubsub is None:
            return []
        messages: list[Message] = []
        try:
            while (event := self._pubsub.get_message(timeout=0.0)) is not None:
                if event.get("type") == "message":
                    found, errors = envelope.unpack_all([event["data"]])
                    messages += found
                    for error in errors:
                        logger.warning("dropped an unreadable remote-control envelope: %s", error)
        except redis.RedisError:
            self._drop()
            self._run("subscribe to the pidbox", self._subscribe)  # after a failover
        return messages

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        raw = envelope.pack(
            message, exchange=exchange, routing_key=routing_key, delivery_tag=str(uuid.uuid4())
        )
        keys = list(self._box(routing_key))
        self._run("reply", lambda: self._reply(keys=keys, args=[raw]))

    # -- client side -------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        raw = envelope.pack(
            message, exchange=PIDBOX_EXCHANGE, routing_key="", delivery_tag=str(uuid.uuid4())
        )
        self._run("broadcast", lambda: self.client.publish(self.channel, raw))

    def open_replies(self, oid: str) -> None:
        _, flag = self._box(oid)
        self._run("open_replies", lambda: self.client.set(flag, 1, ex=_BOX_LIFETIME))

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        box, _ = self._box(oid)
        wait = max(timeout, 0.0)
        if wait <= 0:
            raw: Any = self._run("next_reply", lambda: self.client.rpop(box))
        else:
            # BRPOP takes whole seconds on old servers; fractions work on Redis 6+
            found = self._run(
                "next_reply", lambda: self.client.brpop([box], timeout=max(wait, 0.01))
            )
            raw = None if found is None else found[1]
        return None if raw is None else envelope.unpack(raw).message

    def close_replies(self, oid: str) -> None:
        box, flag = self._box(oid)
        self._run("close_replies", lambda: self.client.delete(box, flag))

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._drop()
        with contextlib.suppress(Exception):
            self.client.close()
