"""Administration of the AMQP broker: queue sizes, purges and declarations, and the
dead-letter store, on a connection of its own (opened on first use).

Dead letters are messages on the durable ``caraway.dead`` queue carrying their reason in
``x-caraway-*`` headers; listing takes them with basic.get and rejects them back in order.
RabbitMQ cannot list the delay ladder, so :meth:`AMQPAdmin.scheduled` is always empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import amqp

from caraway.brokers.amqp.transport import (
    DEAD_HEADERS,
    DEAD_QUEUE,
    bind_queue,
    declare_dead_queue,
    declare_queue,
    from_amqp,
    queue_arguments,
    to_amqp,
)
from caraway.brokers.contracts import DeadLetter, QueueAdmin
from caraway.clients.amqp import CHANNEL_ERRORS, CONNECTION_ERRORS, Link, parse_amqp_url
from caraway.exceptions import BrokerConnectionError, BrokerError
from caraway.protocol.message import Message

T = TypeVar("T")


class AMQPAdmin(QueueAdmin):
    """The admin of ``amqp://`` brokers; ``options`` as the transport's (connection options,
    ``max_retries``, and the ``max_priority``/``queue_type`` queues are declared with)."""

    lists_schedule = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.params = parse_amqp_url(url, self.options)
        self.max_retries = int(self.options.get("max_retries", 3))
        self._queue_arguments = queue_arguments(self.options)
        self._where = self.params.redacted()
        self._link: Link | None = None
        self._generation = 0
        self._declared: set[str] = set()  # on the current link
        self._lock = threading.Lock()

    def _run(self, what: str, fn: Callable[[Link], T]) -> T:
        """Run ``fn`` on a live link; reconnect with backoff on connection errors."""
        delay = 0.2
        with self._lock:
            for attempt in range(self.max_retries + 1):
                try:
                    link = self._ensure_link()
                    with link.lock:
                        link.check()
                        return fn(link)
                except CHANNEL_ERRORS as exc:
                    # a channel error closes the channel it happened on (the publish one)
                    if self._link is not None and not self._link.publish_channel.is_open:
                        self._link.reopen_publish_channel()
                    raise BrokerError(f"AMQP {what} failed at {self._where}: {exc}") from exc
                except CONNECTION_ERRORS as exc:
                    self._drop()
                    if attempt == self.max_retries:
                        raise BrokerConnectionError(
                            f"RabbitMQ at {self._where} unreachable during {what} after "
                            f"{attempt + 1} attempts: {exc!r}; check the server and broker_url"
                        ) from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_link(self) -> Link:
        if self._link is not None and self._link.broken is None:
            return self._link
        self._drop()
        self._generation += 1
        self._link = Link(self.params, generation=self._generation, confirms=True)
        return self._link

    def _drop(self) -> None:
        link, self._link = self._link, None
        self._declared.clear()
        if link is not None:
            if link.broken is None:
                link.broken = ConnectionResetError("dropped by the admin")
            link.close()

    # -- queues --------------------------------------------------------------------------

    def size(self, queue: str) -> int:
        def run(link: Link) -> int:
            try:
                _, count, _ = link.publish_channel.queue_declare(queue, passive=True)
            except amqp.exceptions.NotFound:
                link.reopen_publish_channel()
                return 0
            return int(count)

        return self._run("size", run)

    def purge(self, queue: str) -> int:
        return self._run("purge", lambda link: _purge(link, queue))

    def declare(self, queue: str) -> None:
        """Declare ``queue`` with its exchange and binding as Celery does."""
        self._run("declare", lambda link: self._declare(link, queue, again=True))

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
        """Declare ``queue`` as the transport does and bind it to ``exchange``; a node's
        broadcast queue is durable here (the transport's declaration must match it)."""

        def run(link: Link) -> None:
            bind_queue(
                link,
                queue,
                self._queue_arguments,
                exchange=exchange,
                exchange_type=exchange_type,
                routing_key=routing_key,
            )
            self._declared.add(queue)

        self._run("bind", run)

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:
        """Stop ``queue`` receiving from ``exchange`` (a node's broadcast queue, at its
        warm shutdown); the queue itself is kept for the node's next start."""

        def run(link: Link) -> None:
            link.publish_channel.queue_unbind(queue, exchange=exchange, routing_key=routing_key)

        self._run("unbind", run)

    def _declare(self, link: Link, queue: str, *, again: bool = False) -> None:
        if again or queue not in self._declared:
            declare_queue(link, queue, self._queue_arguments)
            self._declared.add(queue)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        return []

    # -- dead letters --------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        def run(link: Link) -> list[DeadLetter]:
            taken = _drain_dead(link, lambda letter: True, limit)
            for _, raw in taken:
                link.publish_channel.basic_reject(int(raw.delivery_info["delivery_tag"]), True)
            return [letter for letter, _ in taken]

        return self._run("dead_letters", run)

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        wanted = None if ids is None else {str(i) for i in ids}

        def run(link: Link) -> int:
            taken = _drain_dead(
                link, lambda letter: wanted is None or str(letter.id) in wanted, None
            )
            for letter, raw in taken:
                self._declare(link, letter.queue)
                link.publish([(to_amqp(letter.message), "", letter.queue)], mandatory=True)
                link.publish_channel.basic_ack(int(raw.delivery_info["delivery_tag"]))
            return len(taken)

        return self._run("requeue_dead_letters", run)

    def purge_dead_letters(self) -> int:
        return self._run("purge_dead_letters", lambda link: _purge(link, DEAD_QUEUE))

    def close(self) -> None:
        with self._lock:
            self._drop()


def _purge(link: Link, queue: str) -> int:
    try:
        return int(link.publish_channel.queue_purge(queue) or 0)
    except amqp.exceptions.NotFound:
        link.reopen_publish_channel()
        return 0


def _drain_dead(
    link: Link, keep: Callable[[DeadLetter], bool], limit: int | None
) -> list[tuple[DeadLetter, Any]]:
    """Take up to ``limit`` dead letters on the publish channel; return those ``keep``
    accepts unacked (the caller settles them), rejecting the rest back in order."""
    declare_dead_queue(link)
    channel = link.publish_channel
    taken: list[tuple[DeadLetter, Any]] = []
    others: list[int] = []
    while limit is None or len(taken) + len(others) < limit:
        raw = channel.basic_get(DEAD_QUEUE, no_ack=False)
        if raw is None:
            break
        letter = _dead_letter(raw)
        if keep(letter):
            taken.append((letter, raw))
        else:
            others.append(int(raw.delivery_info["delivery_tag"]))
    for tag in others:
        channel.basic_reject(tag, True)
    return taken


def _dead_letter(raw: Any) -> DeadLetter:
    message = from_amqp(raw)
    headers = message.headers
    letter = DeadLetter(
        id=str(headers.get("x-caraway-dead-id") or raw.delivery_info["delivery_tag"]),
        queue=str(headers.get("x-caraway-queue") or "celery"),
        reason=str(headers.get("x-caraway-reason") or ""),
        message=message,
        failed_at=float(headers.get("x-caraway-failed-at") or 0.0),
    )
    for name in DEAD_HEADERS:
        headers.pop(name, None)
    return letter
