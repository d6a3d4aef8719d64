"""RabbitMQ (AMQP 0-9-1) broker transport, declared and used as Celery 5 does (protocol.md s3).

Entities: per queue a durable direct exchange and a durable queue of the same name bound
with routing key = queue; tasks go to the default exchange "" with routing key = queue,
persistent, with publisher confirms. Delivery guarantee: at least once -- a delivery stays
unacked on the broker until acked, and RabbitMQ itself requeues whatever a closed
connection held (so ``recover`` has nothing to do). Far ETAs park in ``delay``'s ladder;
with ``queue_type='quorum'`` they go through Celery 5.5's native delayed delivery tree
instead (``native_delay``), producers' countdowns too, as Celery's producers send them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import amqp

from caraway.brokers.amqp import delay as ladder
from caraway.brokers.amqp import native_delay
from caraway.brokers.contracts import (
    Binding,
    Capabilities,
    Delivery,
    Fanout,
    Routing,
    Scheduling,
    Transport,
)
from caraway.clients.amqp import (
    CHANNEL_ERRORS,
    CONNECTION_ERRORS,
    Link,
    parse_amqp_url,
)
from caraway.exceptions import BrokerConnectionError, BrokerError
from caraway.protocol.message import Message

T = TypeVar("T")
logger = logging.getLogger("caraway.brokers.amqp.transport")

DEAD_QUEUE = "caraway.dead"
#: a fetch that received nothing for this long tells ``on_wait`` it waits on an empty broker
#: (in a drain of a full queue an inbox is empty for a moment between batches; a sibling that
#: took that for idleness before every task gave back 10 times a drain of 10,000). A long
#: task's sibling hands over this long after it goes idle: 3 ms keeps W11's short tasks
#: under Celery's p99, and with nothing handed over before a task a drain gives nothing back
EMPTY_AFTER = 0.003
#: basic properties copied between :class:`Message` and AMQP (content type/encoding apart)
_PROPERTIES = (
    "correlation_id",
    "reply_to",
    "delivery_mode",
    "priority",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)
#: what a dead letter carries besides its message (read back by the admin)
DEAD_HEADERS = ("x-caraway-dead-id", "x-caraway-reason", "x-caraway-queue", "x-caraway-failed-at")


@dataclass(slots=True)
class _Held:
    """What settling an AMQP delivery needs: the link it came on and its delivery tag."""

    generation: int
    delivery_tag: int
    settled: bool = False


class AMQPTransport(Transport, Scheduling, Fanout, Routing):
    """Celery-compatible RabbitMQ broker (``amqp://``, ``pyamqp://``, ``amqps://``).

    ``options`` (``broker_transport_options``): ``heartbeat`` (120 s; 0 = off),
    ``connect_timeout`` (4 s), ``ssl`` (``broker_use_ssl``), ``max_retries`` (3; connection
    errors are retried with backoff on a new connection, then raised as
    BrokerConnectionError), ``confirm_publish`` (True), ``prefetch_count`` (default: the
    first fetch's ``limit``, see :meth:`fetch`), ``max_priority`` (adds
    ``x-max-priority``), ``queue_type`` (``"classic"`` or ``"quorum"``), ``exchange_type``
    (of each queue's own exchange: Celery's ``task_default_exchange_type``, ``direct``),
    ``delivery_limit`` (quorum queues: ``x-delivery-limit``, and what goes over it is
    dead-lettered by RabbitMQ to ``caraway.dead``; Celery declares neither, so set it on
    both sides or through a RabbitMQ policy).

    Quorum queues count deliveries (``x-delivery-count``), so a quorum transport reports
    ``delivery_count`` and the worker's ``worker_delivery_cap`` applies; they have no
    priorities (RabbitMQ 3.x) and no global QoS, so the prefetch is per consumer.
    """

    capabilities = Capabilities(priorities=True, durable=True, free_acks=True)
    pushes = True

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        self.params = parse_amqp_url(url, opts)
        self.max_retries = int(opts.get("max_retries", 3))
        self.confirm_publish = bool(opts.get("confirm_publish", True))
        prefetch = opts.get("prefetch_count")
        self.prefetch_count: int | None = int(prefetch) if prefetch else None
        self._queue_arguments = queue_arguments(opts)
        self.quorum = self._queue_arguments.get("x-queue-type") == "quorum"
        self.exchange_type = str(opts.get("exchange_type") or "direct")
        if self.quorum:
            self.capabilities = Capabilities(durable=True, free_acks=True, delivery_count=True)
        self._where = self.params.redacted()
        self._link: Link | None = None
        self._generation = 0
        self._connect_lock = threading.Lock()
        self._arrived = threading.Condition()
        self._inbox: deque[tuple[int, str, Any]] = deque()
        self._reset_link_state()

    def _reset_link_state(self) -> None:
        self._declared: set[str] = set()
        self._consuming: set[str] = set()
        #: queue -> consumer tag of this connection's basic.consume (to cancel it)
        self._consumer_tags: dict[str, str] = {}
        self._qos_set = False
        self._ladder_ready = False
        self._delay_bound: set[Any] = set()
        self._tree_ready = False
        #: exchanges and bindings publish_routed declared on this connection
        self._routes_declared: set[tuple[str, ...]] = set()

    # -- the connection ----------------------------------------------------------------
    def _ensure_link(self) -> Link:
        with self._connect_lock:
            link = self._link
            if link is not None and link.broken is None:
                return link
            if link is not None:
                self._drop(link)
            self._generation += 1
            self._link = Link(
                self.params,
                generation=self._generation,
                confirms=self.confirm_publish,
            )
            return self._link

    def _drop(self, link: Link | None) -> None:
        """Forget a dead link; RabbitMQ requeues whatever it held unacked."""
        if link is None:
            return
        if link.broken is None:
            link.broken = ConnectionResetError("dropped by the transport")
        link.close()
        if self._link is link:
            self._link = None
            self._reset_link_state()
        with self._arrived:
            self._inbox = deque(entry for entry in self._inbox if entry[0] != link.generation)

    def _run(self, what: str, fn: Callable[[Link], T]) -> T:
        """Run ``fn`` on a live link; reconnect with backoff on connection errors."""
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            link: Link | None = None
            try:
                link = self._ensure_link()
                with link.lock:
                    link.check()
                    return fn(link)
            except CHANNEL_ERRORS as exc:
                assert link is not None
                self._after_channel_error(link)
                raise BrokerError(f"AMQP {what} failed at {self._where}: {exc}") from exc
            except CONNECTION_ERRORS as exc:
                with self._connect_lock:
                    self._drop(link)
                if attempt == self.max_retries:
                    raise BrokerConnectionError(
                        f"RabbitMQ at {self._where} unreachable during {what} after "
                        f"{attempt + 1} attempts: {exc!r}; check the server and broker_url"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_channel_error(self, link: Link) -> None:
        # A closed consume channel loses its consumers: start over on a new connection.
        if not link.consume_channel.is_open:
            with self._connect_lock:
                self._drop(link)
        elif not link.publish_channel.is_open:
            link.reopen_publish_channel()

    # -- declaring ---------------------------------------------------------------------
    def _declare(self, link: Link, queue: str) -> None:
        if queue in self._declared:
            return
        declare_queue(link, queue, self._queue_arguments, exchange_type=self.exchange_type)
        self._declared.add(queue)

    def declare(self, queue: str) -> None:
        """Declare ``queue`` with its exchange and binding as Celery does."""
        self._run("declare", lambda link: self._declare(link, queue))

    # -- publishing --------------------------------------------------------------------
    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        self.publish_batch([(message, queue, exchange, routing_key)])

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        self.publish_batch([(message, queue, "", None) for message, queue in items])

    def publish_batch(self, items: Sequence[tuple[Message, str, str, str | None]]) -> None:
        """Publish ``(message, queue, exchange, routing_key)`` items; one confirm wait."""
        if not items:
            return

        now = time.time()

        def run(link: Link) -> None:
            wire = []
            for message, queue, exchange, routing_key in items:
                self._declare(link, queue)
                eta = _due(message) if self.quorum else None
                if eta is not None and eta - now >= 1:
                    # as Celery 5.5's producer sends a countdown when its queues are quorum
                    wire.append(self._into_tree(link, message, queue, routing_key, eta, now))
                else:
                    wire.append((to_amqp(message), exchange, routing_key or queue))
            link.publish(wire, mandatory=True)

        self._run("publish", run)

    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        """Publish to the fanout exchange (kombu's Broadcast: durable, declared here too);
        RabbitMQ copies it to every bound queue, Celery workers' included."""

        def run(link: Link) -> None:
            link.publish_channel.exchange_declare(
                exchange, "fanout", durable=True, auto_delete=False
            )
            link.publish([(to_amqp(message), exchange, "")], mandatory=False)

        self._run("publish", run)

    def publish_routed(
        self,
        message: Message,
        *,
        exchange: str,
        exchange_type: str,
        routing_key: str,
        declare: Sequence[Binding] = (),
    ) -> None:
        """Declare the exchange and bind ``declare`` as Celery's producer does (so no worker
        need have started), each once per connection, then publish: RabbitMQ routes."""

        def run(link: Link) -> None:
            done = self._routes_declared
            if (exchange,) not in done:
                link.publish_channel.exchange_declare(
                    exchange, exchange_type, durable=True, auto_delete=False
                )
                done.add((exchange,))
            for bound in declare:
                if (exchange, bound.key, bound.queue) not in done:
                    bind_queue(
                        link,
                        bound.queue,
                        self._queue_arguments,
                        exchange=exchange,
                        exchange_type=exchange_type,
                        routing_key=bound.key,
                    )
                    self._declared.add(bound.queue)
                    done.add((exchange, bound.key, bound.queue))
            # not mandatory: a key no queue is bound for is dropped, as Celery's publish does
            link.publish([(to_amqp(message), exchange, routing_key)], mandatory=False)

        self._run("publish", run)

    # -- consuming ---------------------------------------------------------------------
    def _on_message(self, generation: int, queue: str, message: Any) -> None:
        with self._arrived:
            self._inbox.append((generation, queue, message))
            self._arrived.notify()

    def _consume(self, link: Link, queues: Sequence[str], limit: int) -> Link:
        channel = link.consume_channel
        if not self._qos_set:
            # Once per channel: the worker's later fetches ask only for the room left.
            self.prefetch_count = self.prefetch_count or limit
            channel.basic_qos(0, self.prefetch_count, False)
            self._qos_set = True
        for queue in queues:
            if queue in self._consuming:
                continue
            self._declare(link, queue)
            if self.quorum:
                # as Celery's worker does: a Celery producer's countdown leaves the native
                # delay tree through the delivery exchange and must find this queue there
                self._bind_to_tree(link, queue, queue)

            def callback(message: Any, queue: str = queue, link: Link = link) -> None:
                link.unsettled.add(message.delivery_info["delivery_tag"])
                self._on_message(link.generation, queue, message)

            def cancelled(tag: str, queue: str = queue) -> None:
                # The queue was deleted under us: the next fetch declares it again.
                logger.warning("RabbitMQ cancelled the consumer of queue %r", queue)
                self._consuming.discard(queue)
                self._declared.discard(queue)
                self._consumer_tags.pop(queue, None)

            self._consumer_tags[queue] = channel.basic_consume(
                queue, callback=callback, no_ack=False, on_cancel=cancelled
            )
            self._consuming.add(queue)
        return link

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        """Deliveries received (up to ``limit``), waiting up to ``timeout`` for the first.

        The consumer prefetch is set once, from ``prefetch_count`` or this first ``limit``;
        RabbitMQ pushes up to that many and they wait here, unacked, until fetched. The
        worker acks an early-ack task as it starts (``capabilities.free_acks``), as Celery
        does, so the window refills while a batch runs and holds what Celery's would.
        """
        if not queues or limit <= 0:
            return []
        link = self._link
        consuming = self._consuming
        if link is None or link.broken is not None or any(q not in consuming for q in queues):
            link = self._run("consume", lambda link: self._consume(link, queues, limit))
        deadline = time.monotonic() + max(0.0, timeout)
        batch: list[tuple[int, str, Any]] = []
        waited = 0.0  # how long this fetch has waited with nothing arriving
        while True:
            with link.lock:
                link.read_arrived()  # in this thread: see Link.read_arrived
            with self._arrived:
                while self._inbox and len(batch) < limit:
                    entry = self._inbox.popleft()
                    if entry[0] == link.generation:
                        batch.append(entry)
            remaining = deadline - time.monotonic()
            if batch or link.broken is not None or remaining <= 0:
                break
            watch = self.on_wait
            if watch is None or waited < EMPTY_AFTER:
                # RabbitMQ pushes: an inbox empty for a moment is no empty queue (a drain's
                # next batch is on its way once acks made room), so say so only after a while
                wait = min(remaining, 0.5 if watch is None else EMPTY_AFTER)
                began = time.monotonic()
                link.wait_readable(wait)
                waited += time.monotonic() - began
                continue
            # a sibling giving back now has RabbitMQ push it here at once
            watch(True)
            try:
                link.wait_readable(min(remaining, 0.5))
            finally:
                watch(False)
        return [self._delivery(generation, queue, raw) for generation, queue, raw in batch]

    def _delivery(self, generation: int, queue: str, raw: Any) -> Delivery:
        info = raw.delivery_info
        message = from_amqp(raw)
        count = 0
        if self.quorum:
            # a quorum queue counts the deliveries that were returned (absent the first time)
            count = int(message.headers.pop("x-delivery-count", 0) or 0) + 1
        return Delivery(
            message=message,
            queue=queue,
            tag=str(info["delivery_tag"]),
            transport=self,
            redelivered=bool(info.get("redelivered")) or count > 1,
            delivery_count=count,
            state=_Held(generation, int(info["delivery_tag"])),
            exchange=str(info.get("exchange") or ""),
            routing_key=native_delay.original_routing_key(str(info.get("routing_key") or queue)),
        )

    # -- settling ----------------------------------------------------------------------
    def _settle(self, delivery: Delivery, what: str, op: Callable[[Link, int], None]) -> None:
        held = _held(delivery)
        if held.settled:
            return  # a second ack of one tag would close the channel (PRECONDITION_FAILED)
        held.settled = True
        link = self._link
        if link is None or link.generation != held.generation or link.broken is not None:
            logger.warning(
                "cannot %s delivery %s: its connection closed, so RabbitMQ already requeued it",
                what,
                delivery.tag,
            )
            return
        try:
            with link.lock:
                op(link, held.delivery_tag)
                link.unsettled.discard(held.delivery_tag)
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS) as exc:
            logger.warning(
                "%s of delivery %s failed (%r); RabbitMQ requeues it", what, delivery.tag, exc
            )
            with self._connect_lock:
                self._drop(link)

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, "ack", Link.ack_tag)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack a batch, with one ``multiple`` basic.ack where RabbitMQ's rule allows.

        ``multiple`` acks every unsettled tag up to the one given, so it covers the tags
        below the lowest unsettled one left out of the batch (a task still running or
        waiting); those above it are acked one by one, all in one hold of the lock.
        """
        link = self._link
        tags: list[int] = []
        for delivery in deliveries:
            held = _held(delivery)
            if held.settled:
                continue
            if link is None or link.generation != held.generation or link.broken is not None:
                self.ack(delivery)  # logs that RabbitMQ has it back already
                continue
            held.settled = True
            tags.append(held.delivery_tag)
        if not tags or link is None:
            return
        try:
            with link.lock:
                link.ack_tags(tags)
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS) as exc:
            logger.warning(
                "ack of %d deliveries failed (%r); RabbitMQ requeues them", len(tags), exc
            )
            with self._connect_lock:
                self._drop(link)

    def requeue(self, delivery: Delivery) -> None:
        self._settle(
            delivery, "requeue", lambda link, tag: link.consume_channel.basic_reject(tag, True)
        )

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Stop consuming, then reject (requeue) ``deliveries`` and whatever RabbitMQ pushed
        here that no fetch took yet: a busy consumer would otherwise be sent more as fast as
        it gives back (each reject frees prefetch room). The next :meth:`fetch` consumes again.

        RabbitMQ puts a rejected message back at its place in the queue, marked redelivered;
        a classic queue counts nothing, a quorum queue counts the return in
        ``x-delivery-count``, which the worker's delivery cap reads (RabbitMQ has no way
        to return a message uncounted over AMQP 0-9-1).
        """
        link = self._link
        if link is None or link.broken is not None:
            for delivery in deliveries:
                _held(delivery).settled = True  # its connection's end gave it back
            return
        try:
            with link.lock:
                channel = link.consume_channel
                for consumer_tag in self._consumer_tags.values():
                    # deliveries sent before its cancel-ok land in the inbox, read below
                    channel.basic_cancel(consumer_tag)
                self._consumer_tags.clear()
                self._consuming.clear()
                link.read_arrived()
                with self._arrived:
                    unfetched = [e for e in self._inbox if e[0] == link.generation]
                    self._inbox.clear()
                tags = [int(raw.delivery_info["delivery_tag"]) for _, _, raw in unfetched]
                for delivery in deliveries:
                    held = _held(delivery)
                    if not held.settled and held.generation == link.generation:
                        held.settled = True
                        tags.append(held.delivery_tag)
                for tag in sorted(tags):
                    channel.basic_reject(tag, True)
                    link.unsettled.discard(tag)
            logger.debug(
                "stopped consuming; gave back %d message(s), %d of them received unfetched",
                len(tags),
                len(unfetched),
            )
        except (*CONNECTION_ERRORS, *CHANNEL_ERRORS) as exc:
            logger.warning("giving back deliveries failed (%r); RabbitMQ requeues them", exc)
            with self._connect_lock:
                self._drop(link)

    def _still_held(self, delivery: Delivery) -> bool:
        held = _held(delivery)
        link = self._link
        return (
            not held.settled
            and link is not None
            and link.broken is None
            and link.generation == held.generation
        )

    def park(self, delivery: Delivery, eta: float) -> None:
        """Send the message through the delay ladder, then ack it (see ``delay``).

        It comes back to its queue with its headers (``eta`` included) and properties
        intact, minus ``expiration``: a TTL would let it leave a level early.
        """
        if not self._still_held(delivery):
            self.ack(delivery)  # logs that the broker has it back already
            return
        self._run(
            "park", lambda link: self._publish_delayed(link, delivery.message, delivery.queue, eta)
        )
        self.ack(delivery)

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        """Publish into the delay ladder, due at ``eta``, as :meth:`park` sends a delivery."""

        def run(link: Link) -> None:
            self._declare(link, queue)
            self._publish_delayed(link, message, queue, eta)

        self._run("publish_parked", run)

    def _publish_delayed(self, link: Link, message: Message, queue: str, eta: float) -> None:
        now = time.time()
        if eta <= now:
            # due already: straight to its queue, as Scheduling promises (the ladder's
            # shortest wait is a whole second)
            link.publish([(to_amqp(message), "", queue)], mandatory=True)
            return
        if self.quorum:
            link.publish([self._into_tree(link, message, queue, None, eta, now)], mandatory=True)
            return
        seconds = ladder.delay_seconds(eta, now)
        headers = {**message.headers, **ladder.bit_headers(seconds)}
        properties = {k: v for k, v in message.properties.items() if k != "expiration"}
        parked = Message(
            message.body, headers, message.content_type, message.content_encoding, properties
        )
        if not self._ladder_ready:
            ladder.declare_ladder(link.publish_channel)
            self._ladder_ready = True
        if queue not in self._delay_bound:
            link.publish_channel.queue_bind(queue, exchange=ladder.DELIVER, routing_key=queue)
            self._delay_bound.add(queue)
        link.publish([(to_amqp(parked), ladder.entry_exchange(), queue)], mandatory=True)

    def _into_tree(
        self,
        link: Link,
        message: Message,
        queue: str,
        routing_key: str | None,
        eta: float,
        now: float,
    ) -> tuple[Any, str, str]:
        """What to publish so ``message`` waits in Celery's native delay tree until ``eta``
        and then reaches ``queue`` (declaring the tree and the queue's binding once)."""
        key = native_delay.original_routing_key(routing_key or queue)
        self._bind_to_tree(link, queue, key)
        seconds = native_delay.delay_seconds(eta, now)
        properties = {k: v for k, v in message.properties.items() if k != "expiration"}
        waiting = Message(
            message.body, message.headers, message.content_type, message.content_encoding,
            properties,
        )  # fmt: skip
        return to_amqp(waiting), native_delay.TOP, native_delay.routing_key(seconds, key)

    def _bind_to_tree(self, link: Link, queue: str, key: str) -> None:
        """Declare the native delay tree and route its ``key`` messages to ``queue`` (once)."""
        if not self._tree_ready:
            native_delay.declare_tree(link.publish_channel)
            self._tree_ready = True
        if (queue, key) not in self._delay_bound:
            native_delay.bind_queue(link.publish_channel, queue, key)
            self._delay_bound.add((queue, key))

    # -- dead letters ------------------------------------------------------------------
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish a copy to the durable ``caraway.dead`` queue with the reason, then ack."""
        if not self._still_held(delivery):
            self.ack(delivery)
            return
        message = delivery.message
        headers = {
            **message.headers,
            "x-caraway-dead-id": uuid.uuid4().hex,
            "x-caraway-reason": reason,
            "x-caraway-queue": delivery.queue,
            "x-caraway-failed-at": time.time(),
        }
        copy = Message(
            message.body,
            headers,
            message.content_type,
            message.content_encoding,
            {k: v for k, v in message.properties.items() if k != "expiration"},
        )
        self._run("dead_letter", lambda link: self._publish_dead(link, copy))
        self.ack(delivery)

    def _publish_dead(self, link: Link, message: Message) -> None:
        if DEAD_QUEUE not in self._declared:
            declare_dead_queue(link)
            self._declared.add(DEAD_QUEUE)
        link.publish([(to_amqp(message), "", DEAD_QUEUE)], mandatory=True)

    # -- owners ------------------------------------------------------------------------
    def renew(self, owner: str) -> None:
        """Nothing to renew: RabbitMQ holds a delivery for as long as its connection lives."""

    def recover(self, owner: str) -> int:
        """0: a dead child's connection died with it, and RabbitMQ requeued its deliveries."""
        return 0

    def close(self) -> None:
        with self._connect_lock:
            self._drop(self._link)


def queue_arguments(options: dict[str, Any]) -> dict[str, Any]:
    """The arguments task queues are declared with (must match Celery's exactly): from the
    ``max_priority``, ``queue_type`` and ``delivery_limit`` options."""
    if str(options.get("queue_type") or "classic") == "quorum":
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        limit = options.get("delivery_limit")
        if limit:
            # a message returned this many times is dead-lettered by RabbitMQ itself
            arguments.update(
                {
                    "x-delivery-limit": int(limit),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": DEAD_QUEUE,
                }
            )
        return arguments
    max_priority = options.get("max_priority")
    if max_priority:
        return {"x-max-priority": int(max_priority)}
    return {}


def declare_queue(
    link: Link, queue: str, arguments: dict[str, Any], *, exchange_type: str = "direct"
) -> None:
    """Declare ``queue`` with its exchange and binding as Celery does (idempotent)."""
    if arguments.get("x-dead-letter-routing-key") == DEAD_QUEUE:
        declare_dead_queue(link)  # RabbitMQ drops what it dead-letters to no queue
    channel = link.publish_channel
    try:
        channel.queue_declare(
            queue, durable=True, exclusive=False, auto_delete=False, arguments=arguments
        )
    except amqp.exceptions.PreconditionFailed as exc:
        # Declared by someone else with other arguments: use it as it is, loudly.
        link.reopen_publish_channel()
        channel = link.publish_channel
        channel.queue_declare(queue, passive=True)
        logger.warning(
            "queue %r exists with arguments other than %r (%s); using it as it is",
            queue,
            arguments,
            exc,
        )
    channel.exchange_declare(queue, exchange_type, durable=True, auto_delete=False)
    channel.queue_bind(queue, exchange=queue, routing_key=queue)


def bind_queue(
    link: Link,
    queue: str,
    arguments: dict[str, Any],
    *,
    exchange: str,
    exchange_type: str,
    routing_key: str,
) -> None:
    """Declare ``queue`` as :func:`declare_queue` does (so a consumer's declaration
    matches it) and bind it to ``exchange`` of ``exchange_type`` with ``routing_key``."""
    own = not exchange or exchange == queue
    # the queue's own exchange (named like it) is of the type asked for when it is the one
    declare_queue(link, queue, arguments, exchange_type=exchange_type if own else "direct")
    if own:
        return
    channel = link.publish_channel
    channel.exchange_declare(exchange, exchange_type, durable=True, auto_delete=False)
    channel.queue_bind(queue, exchange=exchange, routing_key=routing_key)


def declare_dead_queue(link: Link) -> None:
    """Declare the durable ``caraway.dead`` queue dead letters are published to."""
    link.publish_channel.queue_declare(DEAD_QUEUE, durable=True, exclusive=False, auto_delete=False)


def to_amqp(message: Message) -> Any:
    """The py-amqp message for ``message``: headers as a field table, Celery's properties."""
    properties = {
        key: message.properties[key]
        for key in _PROPERTIES
        if message.properties.get(key) is not None
    }
    return amqp.Message(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        application_headers=dict(message.headers),
        **properties,
    )


def from_amqp(raw: Any) -> Message:
    """A received py-amqp message as :class:`Message`, minus the ladder's routing headers."""
    props = raw.properties
    headers = ladder.without_ladder_headers(props.get("application_headers") or {})
    body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode()
    return Message(
        body=body,
        headers=headers,
        content_type=str(props.get("content_type") or ""),
        content_encoding=str(props.get("content_encoding") or ""),
        properties={key: props[key] for key in _PROPERTIES if props.get(key) is not None},
    )


def _due(message: Message) -> float | None:
    """The unix time of the message's ``eta`` header, None without one (or unreadable)."""
    eta = message.headers.get("eta")
    if not eta:
        return None
    try:
        moment = datetime.fromisoformat(str(eta).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _held(delivery: Delivery) -> _Held:
    if not isinstance(delivery.state, _Held):
        raise BrokerError(f"delivery {delivery.tag!r} was not handed out by an AMQPTransport")
    return delivery.state
