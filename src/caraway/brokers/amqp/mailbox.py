"""Celery's pidbox on RabbitMQ (docs/design/protocol.md §3.1, §6), with py-amqp.

Entities exactly as Celery declares them (a mismatch is PRECONDITION_FAILED): fanout
exchange ``celery.pidbox`` and direct ``reply.celery.pidbox``, both non-durable; a node's
exclusive auto-delete queue ``<hostname>.celery.pidbox`` (x-expires 10 s, x-message-ttl
300 s) bound with key ``""``; a client's auto-delete ``<oid>.reply.celery.pidbox``
(x-expires 10 s) bound with key ``<oid>``. A node consumes its queue (no ack, as Celery
does) and ``receive`` only reads what has already arrived: the supervisor calls it on
every wake-up, often once per task, so it must not cost a round trip (basic.get did).
"""

from __future__ import annotations

import contextlib
import functools
import select
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import amqp

from caraway.brokers.contracts import (
    PIDBOX_EXCHANGE,
    REPLY_EXCHANGE,
    Mailbox,
    node_queue,
    reply_queue,
)
from caraway.clients.amqp import connect, parse_amqp_url
from caraway.exceptions import BrokerError
from caraway.protocol.message import Message

T = TypeVar("T")

_NODE_QUEUE_ARGS = {"x-expires": 10000, "x-message-ttl": 300000}
_REPLY_QUEUE_ARGS = {"x-expires": 10000}
#: basic properties other than headers that travel with a pidbox message
_PROPERTIES = ("delivery_mode", "priority", "correlation_id", "reply_to", "expiration")


def _to_amqp(message: Message) -> amqp.Message:
    properties = {k: v for k, v in message.properties.items() if k in _PROPERTIES}
    return amqp.Message(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        application_headers=dict(message.headers),
        **properties,
    )


def _from_amqp(raw: Any) -> Message:
    body = raw.body
    if isinstance(body, str):
        body = body.encode(raw.properties.get("content_encoding") or "utf-8")
    props = raw.properties
    return Message(
        body=bytes(body),
        headers=dict(props.get("application_headers") or {}),
        content_type=props.get("content_type") or "application/json",
        content_encoding=props.get("content_encoding") or "utf-8",
        properties={k: props[k] for k in _PROPERTIES if props.get(k) is not None},
    )


class AMQPMailbox(Mailbox):
    """The pidbox of ``amqp://`` brokers, as Celery lays it out."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self._params = parse_amqp_url(url, self.options)
        self._where = f"{self._params.host}:{self._params.port}"
        self._conn: Any = None
        self._channel: Any = None
        self._queue: str | None = None
        self._requests: deque[Message] = deque()
        self._replies: dict[str, deque[Message]] = {}
        self._consumers: dict[str, str] = {}

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (amqp.exceptions.AMQPError, OSError) as exc:
            # a failed channel is unusable; reconnect on next use
            self._drop_connection()
            raise BrokerError(f"RabbitMQ at {self._where}: cannot {what}: {exc!r}") from exc

    def _chan(self) -> Any:
        if self._channel is None:
            conn = connect(self._params)
            self._conn = conn
            self._channel = conn.channel()
            # Both exchanges exist before anyone publishes to them: publishing to a
            # missing exchange closes the channel.
            for name, kind in ((PIDBOX_EXCHANGE, "fanout"), (REPLY_EXCHANGE, "direct")):
                self._channel.exchange_declare(name, kind, durable=False, auto_delete=False)
        return self._channel

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self._consumers.clear()
        if conn is not None:
            # best effort: the connection is already broken, only its socket is left
            with contextlib.suppress(Exception):
                conn.collect()

    # -- node side ---------------------------------------------------------------------
    def listen(self, hostname: str) -> None:
        queue = node_queue(hostname)

        def declare() -> None:
            chan = self._chan()
            chan.queue_declare(
                queue,
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments=dict(_NODE_QUEUE_ARGS),
            )
            chan.queue_bind(queue, PIDBOX_EXCHANGE, "")
            requests = self._requests
            chan.basic_consume(
                queue, no_ack=True, callback=lambda raw: requests.append(_from_amqp(raw))
            )

        self._call("declare the pidbox queue", declare)
        self._queue = queue

    def receive(self) -> list[Message]:
        queue = self._queue
        if queue is None:
            return []

        def drain() -> list[Message]:
            if self._channel is None:
                # reconnected after a failure: the exclusive queue died with the connection
                self._queue = None
                self.listen(queue[: -len(PIDBOX_EXCHANGE) - 1])
            self._read_arrived(self._chan().connection)
            messages = list(self._requests)
            self._requests.clear()
            return messages

        return self._call("read the pidbox", drain)

    @staticmethod
    def _read_arrived(conn: Any) -> None:
        """Dispatch every frame already on the socket, without waiting for more.

        py-amqp reads no further than the frame it parses, so a socket with nothing to
        read (TLS: nothing decrypted and pending either) holds nothing but the rest of a
        partial frame, which the next call reads.
        """
        sock = conn.sock
        pending = getattr(sock, "pending", None)
        while (pending is not None and pending()) or select.select([sock], [], [], 0)[0]:
            try:
                conn.drain_events(timeout=0)
            except TimeoutError:
                return

    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        self._call(
            "send a remote-control reply",
            lambda: self._chan().basic_publish(_to_amqp(message), exchange, routing_key),
        )

    # -- client side -------------------------------------------------------------------
    def publish(self, message: Message) -> None:
        self._call(
            "broadcast a remote-control request",
            lambda: self._chan().basic_publish(_to_amqp(message), PIDBOX_EXCHANGE, ""),
        )

    def open_replies(self, oid: str) -> None:
        queue = reply_queue(oid)
        inbox = self._replies.setdefault(oid, deque())

        def declare() -> None:
            chan = self._chan()
            if oid in self._consumers:
                return
            chan.queue_declare(
                queue, durable=False, auto_delete=True, arguments=dict(_REPLY_QUEUE_ARGS)
            )
            chan.queue_bind(queue, REPLY_EXCHANGE, oid)
            tag = chan.basic_consume(
                queue, no_ack=True, callback=lambda raw: inbox.append(_from_amqp(raw))
            )
            self._consumers[oid] = tag

        self._call("declare the reply queue", declare)

    def next_reply(self, oid: str, timeout: float) -> Message | None:
        inbox = self._replies.setdefault(oid, deque())
        deadline = time.monotonic() + timeout

        def wait(left: float) -> None:
            # a timeout means nothing arrived; the loop checks the deadline
            with contextlib.suppress(TimeoutError):
                self._chan().connection.drain_events(timeout=left)

        while not inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._call("wait for replies", functools.partial(wait, left))
        return inbox.popleft()

    def close_replies(self, oid: str) -> None:
        tag = self._consumers.pop(oid, None)
        self._replies.pop(oid, None)
        if tag is not None and self._channel is not None:
            # cancelling the only consumer deletes the auto-delete reply queue
            self._call("cancel the reply consumer", lambda: self._channel.basic_cancel(tag))

    def close(self) -> None:
        self._queue = None
        conn, self._conn, self._channel = self._conn, None, None
        self._consumers.clear()
        if conn is not None:
            try:
                conn.close()
            except (amqp.exceptions.AMQPError, OSError):
                conn.collect()
