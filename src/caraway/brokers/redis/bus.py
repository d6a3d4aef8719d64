"""Celery's events on Redis (docs/design/protocol.md §2.6, §5.1): pub/sub in kombu's envelope.

Senders PUBLISH the envelope (base64 body, ``delivery_info`` naming ``celeryev`` and the
routing key) on ``<prefix>/<db>.celeryev/<routing_key>``; receivers PSUBSCRIBE to the
binding with ``#`` replaced by ``*`` (a monitor: ``/<db>.celeryev/*``). Nothing is kept:
a receiver that is not subscribed at that moment misses the event, as with Celery.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import EventBus
from caraway.clients.redis import connect, parse_redis_url
from caraway.exceptions import BrokerError
from caraway.protocol import envelope
from caraway.protocol.message import Message

T = TypeVar("T")

logger = logging.getLogger("caraway.brokers.redis.bus")


class RedisBus(EventBus):
    """The event bus of ``redis://`` brokers, on the channels Celery 5.7 uses."""

    def _prepare(self) -> None:
        target = parse_redis_url(self.url)
        prefix = str(self.options.get("global_keyprefix", "") or "")
        self.channel_base = f"{prefix}/{target.db}.{self.settings.exchange}"
        self.client = connect(self.url, self.options)
        self._where = target.redacted()
        self._pubsub: Any = None
        self._binding: str | None = None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            self._drop_pubsub()
            raise BrokerError(f"Redis at {self._where}: cannot {what}: {exc}") from exc

    def channel(self, routing_key: str) -> str:
        """The pub/sub channel of ``routing_key`` (``/9.celeryev/worker.heartbeat``)."""
        return f"{self.channel_base}/{routing_key}" if routing_key else self.channel_base

    def publish(self, message: Message, *, routing_key: str) -> None:
        raw = envelope.pack(
            message,
            exchange=self.settings.exchange,
            routing_key=routing_key,
            delivery_tag=str(uuid.uuid4()),
        )
        channel = self.channel(routing_key)
        self._call("publish an event", lambda: self.client.publish(channel, raw))

    def subscribe(self, binding: str = "#") -> None:
        self._binding = binding
        self._call("subscribe to events", self._subscribe)

    def _subscribe(self) -> None:
        assert self._binding is not None
        pattern = self.channel(self._binding.replace("#", "*"))
        pubsub = self.client.pubsub()
        pubsub.psubscribe(pattern)
        self._pubsub = pubsub
        # Wait for the confirmation so that events sent right after subscribe() arrive.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            event = pubsub.get_message(timeout=0.5)
            if event is not None and event.get("type") == "psubscribe":
                return

    def receive(self, timeout: float) -> list[Message]:
        if self._binding is None:
            return []
        return self._call("receive events", lambda: self._receive(timeout))

    def _receive(self, timeout: float) -> list[Message]:
        if self._pubsub is None:
            self._subscribe()  # after a connection loss
        messages: list[Message] = []
        wait = max(timeout, 0.0)
        while True:
            event = self._pubsub.get_message(timeout=wait)
            if event is None:
                return messages
            if event.get("type") == "pmessage":
                messages.append(envelope.unpack(event["data"]).message)
                wait = 0.0

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # the connection is already broken; only its socket is left to release
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._binding = None
        self._drop_pubsub()
        try:
            self.client.close()
        except redis.RedisError as exc:
            logger.debug("closing the Redis event bus at %s: %s", self._where, exc)
