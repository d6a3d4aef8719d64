"""Celery's events on RabbitMQ (docs/design/protocol.md §3.1, §5.1), with py-amqp.

Senders publish to the durable topic exchange ``celeryev`` with the event's routing key
(delivery mode 1, header ``hostname``). A receiver declares its own non-durable,
exclusive, auto-delete queue ``celeryev.<uuid4>`` with ``x-message-ttl`` 5000 and
``x-expires`` 60000 (Celery's flags: a mismatch would be PRECONDITION_FAILED) and binds
it with ``#``; a receiver gone for a minute leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import amqp

from caraway.brokers.contracts import EventBus
from caraway.clients.amqp import connect, parse_amqp_url
from caraway.exceptions import BrokerError
from caraway.protocol.message import Message

T = TypeVar("T")


def _to_amqp(message: Message) -> amqp.Message:
    return amqp.Message(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        application_headers=dict(message.headers),
        delivery_mode=message.properties.get("delivery_mode", 1),
    )


def _from_amqp(raw: Any) -> Message:
    body = raw.body
    props = raw.properties
    if isinstance(body, str):
        body = body.encode(props.get("content_encoding") or "utf-8")
    return Message(
        body=bytes(body),
        headers=dict(props.get("application_headers") or {}),
        content_type=props.get("content_type") or "application/json",
        content_encoding=props.get("content_encoding") or "utf-8",
        properties={"delivery_mode": props.get("delivery_mode", 1)},
    )


class AMQPBus(EventBus):
    """The event bus of ``amqp://`` brokers, with Celery's entities."""

    def _prepare(self) -> None:
        self._params = parse_amqp_url(self.url, self.options)
        self._where = f"{self._params.host}:{self._params.port}"
        self._conn: Any = None
        self._channel: Any = None
        self._binding: str | None = None
        self._queue: str | None = None
        self._inbox: deque[Message] = deque()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (amqp.exceptions.AMQPError, OSError) as exc:
            # a failed channel is unusable: reconnect (and re-declare) on next use
            self._drop_connection()
            raise BrokerError(f"RabbitMQ at {self._where}: cannot {what}: {exc!r}") from exc

    def _chan(self) -> Any:
        if self._channel is None:
            conn = connect(self._params)
            self._conn = conn
            self._channel = conn.channel()
            # publishing to a missing exchange closes the channel, so declare it first
            self._channel.exchange_declare(
                self.settings.exchange, "topic", durable=True, auto_delete=False
            )
        return self._channel

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self._queue = None
        if conn is not None:
            # the connection is broken already; only its socket is left to release
            with contextlib.suppress(Exception):
                conn.collect()

    def publish(self, message: Message, *, routing_key: str) -> None:
        self._call(
            "publish an event",
            lambda: self._chan().basic_publish(
                _to_amqp(message), self.settings.exchange, routing_key
            ),
        )

    def subscribe(self, binding: str = "#") -> None:
        self._binding = binding
        self._call("subscribe to events", self._declare)

    def _declare(self) -> None:
        assert self._binding is not None
        chan = self._chan()
        queue = f"{self.settings.queue_prefix}.{uuid.uuid4()}"
        arguments: dict[str, Any] = {}
        if self.settings.queue_ttl:
            arguments["x-message-ttl"] = int(self.settings.queue_ttl * 1000)
        if self.settings.queue_expires:
            arguments["x-expires"] = int(self.settings.queue_expires * 1000)
        chan.queue_declare(
            queue, durable=False, exclusive=True, auto_delete=True, arguments=arguments
        )
        chan.queue_bind(queue, self.settings.exchange, self._binding)
        inbox = self._inbox
        chan.basic_consume(queue, no_ack=True, callback=lambda raw: inbox.append(_from_amqp(raw)))
        self._queue = queue

    def receive(self, timeout: float) -> list[Message]:
        if self._binding is None:
            return []
        return self._call("receive events", lambda: self._receive(timeout))

    def _receive(self, timeout: float) -> list[Message]:
        if self._queue is None:
            self._declare()  # after a connection loss: a new exclusive queue
        conn = self._chan().connection
        wait = max(timeout, 0.001)
        while True:
            try:
                conn.drain_events(timeout=wait)
            except TimeoutError:
                break
            if self._inbox:
                wait = 0.001  # take what is already buffered, without waiting again
        messages = list(self._inbox)
        self._inbox.clear()
        return messages

    @property
    def queue(self) -> str | None:
        """The receiver's queue name while subscribed."""
        return self._queue

    def close(self) -> None:
        self._binding = None
        self._queue = None
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except (amqp.exceptions.AMQPError, OSError):
                conn.collect()
