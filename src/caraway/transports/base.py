"""The broker seam: what every transport does, and nothing about tasks.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
