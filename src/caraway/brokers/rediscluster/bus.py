"""Events on a Redis Cluster: Celery's event channels, by cluster-wide pub/sub.

Senders PUBLISH kombu's envelope on ``<prefix>caraway.<exchange>/<routing_key>``; receivers
PSUBSCRIBE to the binding with ``#`` replaced by ``*``. A cluster carries plain pub/sub to
every node, so a receiver connected to any node sees every sender's events. Nothing is kept:
a receiver not subscribed at that moment misses the event, as with Celery.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import redis

from caraway.brokers.contracts import EventBus
from caraway.clients.rediscluster import connect_cluster, key_prefix, parse_cluster_url, retrying
from caraway.exceptions import BrokerError
from caraway.protocol import envelope
from caraway.protocol.message import Message


class RedisClusterBus(EventBus):
    """The event bus of ``redis+cluster://`` brokers."""

    def _prepare(self) -> None:
        prefix = key_prefix(self.url, self.options)
        self.channel_base = f"{prefix}caraway.{self.settings.exchange}"
        self._where = parse_cluster_url(self.url).redacted()
        self.client: Any = connect_cluster(self.url, self.options)
        self._pubsub: Any = None
        self._binding: str | None = None

    def channel(self, routing_key: str) -> str:
        return f"{self.channel_base}/{routing_key}" if routing_key else self.channel_base

    def publish(self, message: Message, *, routing_key: str) -> None:
        raw = envelope.pack(
            message,
            exchange=self.settings.exchange,
            routing_key=routing_key,
            delivery_tag=str(uuid.uuid4()),
        )
        channel = self.channel(routing_key)
        retrying(
            "publish an event",
            lambda: self.client.publish(channel, raw),
            where=self._where,
            retries=int(self.options.get("max_retries", 3)),
        )

    def subscribe(self, binding: str = "#") -> None:
        self._binding = binding
        self._subscribe()

    def _subscribe(self) -> None:
        assert self._binding is not None
        pattern = self.channel(self._binding.replace("#", "*"))
        try:
            pubsub = self.client.pubsub()
            pubsub.psubscribe(pattern)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                event = pubsub.get_message(timeout=0.1)
                if event is not None and event.get("type") == "psubscribe":
                    break
        except redis.RedisError as exc:
            raise BrokerError(f"Redis Cluster at {self._where}: cannot subscribe: {exc}") from exc
        self._pubsub = pubsub

    def receive(self, timeout: float) -> list[Message]:
        if self._binding is None:
            return []
        if self._pubsub is None:
            self._subscribe()  # after a failover dropped the connection
        messages: list[Message] = []
        wait = max(timeout, 0.0)
        try:
            while (event := self._pubsub.get_message(timeout=wait)) is not None:
                if event.get("type") == "pmessage":
                    messages.append(envelope.unpack(event["data"]).message)
                    wait = 0.0
        except redis.RedisError as exc:
            self._drop()
            raise BrokerError(f"Redis Cluster at {self._where}: events lost: {exc}") from exc
        return messages

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._binding = None
        self._drop()
        with contextlib.suppress(Exception):
            self.client.close()
