"""The plug-in seams: what every transport, result backend, mailbox and event bus does.

Transports:

A transport moves :class:`~caraway.protocol.message.Message` objects between queues: it
publishes, hands out :class:`Delivery` objects that a consumer owns until it acks them,
parks messages that are due later, and hands back what a dead consumer held. It never
reads args or canvas; the only header it may look at is ``eta`` (via the caller) and the
``id`` (for logs). What a broker cannot do is declared on :class:`Capabilities`.

Ownership: every fetch names an ``owner`` (``<node>/<pid>``). A live owner renews its
claims (:meth:`Transport.renew`); the supervisor of a dead child calls
:meth:`Transport.recover` so its claims come back at once; claims of an owner that died
with its whole node come back when their visibility timeout passes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caraway.protocol.events import EXCHANGE
from caraway.protocol.message import Message


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do; callers branch on these, never on the class."""

    #: messages due later can be parked on the broker and promoted when due
    parking: bool = False
    #: a claimed message comes back by itself when its owner stops renewing it
    leases: bool = False
    #: ``priority`` is honoured (higher number served first unless ``priority_low_first``)
    priorities: bool = False
    priority_low_first: bool = False
    #: fanout to every connected consumer (remote control, events)
    broadcast: bool = False
    #: messages survive a broker restart
    durable: bool = False
    #: each delivery knows how many times it was handed out
    delivery_count: bool = False
    #: revoked task ids can be recorded on the broker, with an expiry
    revocations: bool = False
    #: an ack is a frame sent, not a round trip waited for: the worker acks an early-ack
    #: task as it starts, as Celery does, instead of batching the ack with its result
    free_acks: bool = False


@dataclass(slots=True)
class Delivery:
    """A message handed to one consumer, which must ack, requeue, park or dead-letter it."""

    message: Message
    queue: str
    tag: str
    transport: Transport
    redelivered: bool = False
    #: 1 on the first hand-out; 0 when the broker does not count
    delivery_count: int = 0
    #: broker-specific bookkeeping (e.g. the raw envelope on Redis)
    state: Any = None
    exchange: str = ""
    routing_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def ack(self) -> None:
        self.transport.ack(self)

    def requeue(self) -> None:
        self.transport.requeue(self)

    def park(self, eta: float) -> None:
        self.transport.park(self, eta)

    def dead_letter(self, reason: str) -> None:
        self.transport.dead_letter(self, reason)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside because it could not be run; kept for inspection or requeue."""

    id: int | str
    queue: str
    reason: str
    message: Message
    failed_at: float


class Transport(abc.ABC):
    """One connection to a broker. Not shared between processes; forks open their own."""

    capabilities: Capabilities = Capabilities()

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abc.abstractmethod
    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        """Put ``message`` on ``queue``; returns once the broker has it."""

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """Publish ``(message, queue)`` pairs; transports batch them into one round trip."""
        for message, queue in items:
            self.publish(message, queue=queue)

    @abc.abstractmethod
    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        """Claim up to ``limit`` ready messages, waiting up to ``timeout`` s for the first.

        Claims are atomic: a message is either on its queue or recorded as held by
        ``owner``, never only in this process's memory. Due parked messages are promoted
        first. Returns an empty list on timeout.
        """

    def ack_then_fetch(
        self,
        acks: Sequence[Delivery],
        queues: Sequence[str],
        *,
        limit: int,
        timeout: float,
        owner: str,
    ) -> list[Delivery]:
        """Ack ``acks``, then :meth:`fetch`: the worker's steady state, which transports
        that can do both in one round trip override."""
        self.ack_many(acks)
        return self.fetch(queues, limit=limit, timeout=timeout, owner=owner)

    @abc.abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """Forget a delivery for good; idempotent."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self.ack(delivery)

    @abc.abstractmethod
    def requeue(self, delivery: Delivery) -> None:
        """Give a delivery back to its queue so any consumer can take it."""

    def park(self, delivery: Delivery, eta: float) -> None:
        """Move a delivery to the broker's schedule until ``eta`` (unix time)."""
        raise NotImplementedError(f"{type(self).__name__} cannot park messages")

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        """Publish straight into the broker's schedule, due at ``eta`` (unix time).

        For fleets that are all caraway (``producer_parks_eta``): a Celery worker only
        sees the message once it is due. Only called when ``capabilities.parking``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot park messages")

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        """Parked messages, soonest first, as ``(eta, queue, message)``."""
        return []

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:  # noqa: B027
        """Remember revoked ids on the broker for ``expires`` seconds (capabilities.revocations)."""

    def revoked_ids(self) -> list[str]:
        """Revoked ids recorded on the broker and not yet expired."""
        return []

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set a delivery aside in the dead-letter store with ``reason``; it is acked."""

    def renew(self, owner: str) -> None:  # noqa: B027 - optional for lease-less brokers
        """Extend the claims held by ``owner`` (a heartbeat from a live consumer)."""

    def recover(self, owner: str) -> int:
        """Hand back everything ``owner`` holds (it died); returns how many."""
        return 0

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message on ``queue``; returns how many."""

    @abc.abstractmethod
    def size(self, queue: str) -> int:
        """Count the ready messages on ``queue``."""

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        return []

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        return 0

    def purge_dead_letters(self) -> int:
        return 0

    def close(self) -> None:  # noqa: B027 - nothing to close for some transports
        """Release the connection."""


# -- result backends ------------------------------------------------------------

READY = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Backend(abc.ABC):
    """One process's handle on the result store. Forked children open their own."""

    #: chord joins can be counted atomically here (see ``chord_*`` in the canvas issue)
    supports_chords: bool = False
    #: any process can read a result (False for rpc://, where only the caller can)
    shared: bool = True

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abc.abstractmethod
    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        """Write ``document`` for ``task_id``; wake its waiters.

        Skipped (returns False) when the stored state is already final (SUCCESS,
        FAILURE, REVOKED), so a redelivered duplicate cannot clobber an outcome.
        ``expires`` is seconds from now, or None to keep it forever. ``reply_to`` is the
        calling client's reply queue (the message's ``reply_to``), which only stores that
        send results back to the caller (rpc://) need.
        """

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """Store ``(task_id, document, state, reply_to)``; backends do it in one round trip."""
        for task_id, document, state, reply_to in items:
            self.store(task_id, document, state=state, expires=expires, reply_to=reply_to)

    def chord_join_many(
        self, joins: Sequence[tuple[str, str, int | None, str, str]], *, expires: float = 86400
    ) -> list[list[Any] | None]:
        """``chord_join`` for each ``(group_id, task_id, index, state, result_json)``, in
        order (only for ``supports_chords`` backends); one round trip where the store can."""
        join = getattr(self, "chord_join")  # noqa: B009 - defined by supports_chords backends
        return [
            join(group_id, task_id, index, state, result_json, expires=expires)
            for group_id, task_id, index, state, result_json in joins
        ]

    def store_many_begin(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> Callable[[], None]:
        """Start :meth:`store_many`; the returned function waits for it to be done.

        Lets the worker write results while its broker connection claims the next batch;
        stores that cannot overlap a round trip simply finish here.
        """
        self.store_many(items, expires=expires)
        return _done

    def on_task_call(self, task_id: str) -> None:  # noqa: B027 - most stores need nothing
        """Called by the producer before it publishes a task whose result it will read."""

    @abc.abstractmethod
    def load(self, task_id: str) -> bytes | None:
        """The stored document, or None (PENDING: never written, or expired)."""

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        return [self.load(task_id) for task_id in task_ids]

    @abc.abstractmethod
    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """Block until the document satisfies ``until``; None when ``timeout`` runs out.

        Wakes on the store's notification where it has one (pub/sub, reply queue),
        never by a tight poll.
        """

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the stored document."""

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def load_group(self, group_id: str) -> bytes | None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def forget_group(self, group_id: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot save groups")

    def cleanup(self) -> int:
        """Delete expired documents where the store does not expire them itself."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def _done() -> None:
    """A store that finished before it was waited for."""


# -- remote control -------------------------------------------------------------

#: the fanout exchange requests are broadcast on, and the direct exchange replies go to
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"


def node_queue(hostname: str) -> str:
    """The name of a node's own mailbox queue (``w1@host.celery.pidbox``)."""
    return f"{hostname}.{PIDBOX_EXCHANGE}"


def reply_queue(oid: str) -> str:
    """The name of a client's reply queue (``<oid>.reply.celery.pidbox``)."""
    return f"{oid}.{REPLY_EXCHANGE}"


class Mailbox(abc.ABC):
    """One connection's view of the pidbox: a node side and a client side.

    A node calls :meth:`listen` once, then :meth:`receive` and :meth:`reply`; a client
    calls :meth:`open_replies`, :meth:`publish`, :meth:`next_reply` until its deadline,
    then :meth:`close_replies`. One object is used by one thread at a time.
    """

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    # -- node side ---------------------------------------------------------------------
    @abc.abstractmethod
    def listen(self, hostname: str) -> None:
        """Start receiving broadcasts as node ``hostname``."""

    @abc.abstractmethod
    def receive(self) -> list[Message]:
        """The broadcasts that arrived since the last call; returns at once."""

    @abc.abstractmethod
    def reply(self, message: Message, *, exchange: str, routing_key: str) -> None:
        """Send ``message`` to the reply queue bound to ``exchange`` with ``routing_key``.

        A reply whose queue is gone (the client stopped waiting) is dropped.
        """

    # -- client side -------------------------------------------------------------------
    @abc.abstractmethod
    def publish(self, message: Message) -> None:
        """Broadcast ``message`` to every node listening now."""

    @abc.abstractmethod
    def open_replies(self, oid: str) -> None:
        """Make the reply queue for ``oid`` exist before a request names it."""

    @abc.abstractmethod
    def next_reply(self, oid: str, timeout: float) -> Message | None:
        """The next reply for ``oid``, waiting up to ``timeout`` s; None on timeout."""

    def close_replies(self, oid: str) -> None:  # noqa: B027 - optional clean-up
        """Forget ``oid``'s reply queue; replies arriving later are dropped."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some mailboxes
        """Stop listening and release the connection."""


# -- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Celery's event settings (``event_exchange``, ``event_queue_*``)."""

    exchange: str = EXCHANGE
    queue_prefix: str = "celeryev"
    #: seconds an event waits for a receiver before it is dropped
    queue_ttl: float = 5.0
    #: seconds an abandoned receiver queue lives on (AMQP)
    queue_expires: float = 60.0


class EventBus(abc.ABC):
    """One connection's view of the event exchange.

    Senders call :meth:`publish`; receivers call :meth:`subscribe` once, then
    :meth:`receive` in a loop. Failures raise :class:`~caraway.exceptions.BrokerError`;
    after one, the next call reconnects (a receiver subscribes again).
    """

    def __init__(
        self,
        url: str,
        *,
        options: dict[str, Any] | None = None,
        settings: BusSettings | None = None,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.settings = settings or BusSettings()

    @abc.abstractmethod
    def publish(self, message: Message, *, routing_key: str) -> None:
        """Send ``message`` to everyone subscribed now; nobody subscribed = dropped."""

    @abc.abstractmethod
    def subscribe(self, binding: str = "#") -> None:
        """Start receiving events whose routing key matches ``binding`` (AMQP topic syntax)."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> list[Message]:
        """The messages that arrived, waiting up to ``timeout`` s for the first one."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some buses
        """Stop receiving and release the connection."""


def topic_matches(binding: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more (``task.#``)."""
    return _match(binding.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])
