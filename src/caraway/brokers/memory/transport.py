"""In-process broker for eager mode and tests: queues live in this process's memory.

Every transport and admin opened on the same URL (``memory://name``) in one process shares
one :class:`Broker`; nothing crosses a process boundary (a fork gets a frozen copy). It keeps
the SQLite transport's rules so the contract suite holds both alike: an entry's
``visible_at`` is 0 when ready, its ETA when parked, its lease end when claimed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caraway.brokers.contracts import (
    Binding,
    Capabilities,
    DeadLetter,
    Delivery,
    Fanout,
    Routing,
    Scheduling,
    Transport,
    binding_matches,
)
from caraway.protocol.message import Message


@dataclass(slots=True)
class Entry:
    """One message on the broker."""

    id: int
    queue: str
    priority: int
    message: Message
    exchange: str
    routing_key: str
    visible_at: float = 0.0
    owner: str | None = None
    delivery_count: int = 0


class Broker:
    """The queues of one ``memory://`` URL; every method is called with ``cond`` held."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ids = itertools.count(1)
        self.entries: dict[int, Entry] = {}
        #: per queue, a heap of (-priority, id) of ready entries
        self.ready: dict[str, list[tuple[int, int]]] = {}
        #: heap of (visible_at, id) of parked and claimed entries; stale pairs are skipped
        self.timed: list[tuple[float, int]] = []
        self.dead: dict[int, DeadLetter] = {}
        #: fanout exchange -> the queues bound to it
        self.fanout: dict[str, set[str]] = {}
        #: direct or topic exchange -> its bindings
        self.bindings: dict[str, set[Binding]] = {}

    def route(self, exchange: str, exchange_type: str, routing_key: str) -> list[str]:
        """The queues bound to ``exchange`` whose binding matches, each once, in order."""
        found = {
            bound.queue
            for bound in self.bindings.get(exchange, ())
            if binding_matches(exchange_type, bound.key, routing_key)
        }
        return sorted(found)

    def add(
        self,
        message: Message,
        queue: str,
        exchange: str,
        routing_key: str,
        *,
        visible_at: float = 0.0,
    ) -> None:
        """A copy of ``message`` on ``queue``: ready, or parked until ``visible_at``."""
        priority = message.properties.get("priority")
        # copies: a consumer editing its message must not edit the producer's
        copy = Message(
            body=message.body,
            headers=dict(message.headers),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            properties=dict(message.properties),
        )
        entry = Entry(
            id=next(self.ids),
            queue=queue,
            priority=int(priority) if priority is not None else 0,
            message=copy,
            exchange=exchange,
            routing_key=routing_key,
        )
        self.entries[entry.id] = entry
        if visible_at > time.time():
            self.set_timed(entry, visible_at)
            self.cond.notify_all()  # a waiting fetch must learn of the earlier due time
        else:
            self.make_ready(entry)

    def make_ready(self, entry: Entry) -> None:
        entry.visible_at = 0.0
        entry.owner = None
        heapq.heappush(self.ready.setdefault(entry.queue, []), (-entry.priority, entry.id))
        self.cond.notify_all()

    def set_timed(self, entry: Entry, visible_at: float) -> None:
        entry.visible_at = visible_at
        heapq.heappush(self.timed, (visible_at, entry.id))

    def promote(self, now: float) -> float | None:
        """Ready every entry due by ``now``; returns when the next one falls due."""
        while self.timed:
            visible_at, entry_id = self.timed[0]
            entry = self.entries.get(entry_id)
            if entry is None or entry.visible_at != visible_at:
                heapq.heappop(self.timed)
            elif visible_at <= now:
                heapq.heappop(self.timed)
                self.make_ready(entry)
            else:
                return visible_at
        return None

    def pop_ready(self, queues: Sequence[str]) -> Entry | None:
        """The best ready entry over ``queues``: highest priority, then oldest."""
        best: tuple[tuple[int, int], list[tuple[int, int]]] | None = None
        for queue in queues:
            heap = self.ready.get(queue)
            while heap and not self._is_ready(heap[0][1]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = (heap[0], heap)
        if best is None:
            return None
        heapq.heappop(best[1])
        return self.entries[best[0][1]]

    def _is_ready(self, entry_id: int) -> bool:
        entry = self.entries.get(entry_id)
        return entry is not None and entry.visible_at == 0.0

    def held(self, delivery: Delivery) -> Entry | None:
        """The delivery's entry while its owner still holds it."""
        entry = self.entries.get(int(delivery.tag))
        if entry is None or entry.owner != delivery.state or entry.visible_at == 0.0:
            return None
        return entry


_BROKERS: dict[str, Broker] = {}
_BROKERS_LOCK = threading.Lock()


def broker_for(url: str) -> Broker:
    """The broker of ``url`` in this process, made on first use."""
    with _BROKERS_LOCK:
        broker = _BROKERS.get(url)
        if broker is None:
            broker = _BROKERS[url] = Broker()
        return broker


def reset(url: str | None = None) -> None:
    """Drop the queues of ``url`` (or of every memory URL) in this process; for tests."""
    with _BROKERS_LOCK:
        if url is None:
            _BROKERS.clear()
        else:
            _BROKERS.pop(url, None)


class MemoryTransport(Transport, Scheduling, Fanout, Routing):
    """Queues in this process's memory, shared by every transport opened on the same URL.

    Option ``visibility_timeout`` (s, default 30): how long a claim lasts without renewal.
    """

    capabilities = Capabilities(leases=True, priorities=True, delivery_count=True)

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.visibility_timeout = float(self.options.get("visibility_timeout", 30.0))
        self._broker = broker_for(url)

    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        key = queue if routing_key is None else routing_key
        with self._broker.cond:
            self._broker.add(message, queue, exchange, key)

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        broker = self._broker
        with broker.cond:
            for message, queue in items:
                broker.add(message, queue, "", queue)

    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        broker = self._broker
        with broker.cond:
            for queue in sorted(broker.fanout.get(exchange, ())):
                broker.add(message, queue, exchange, "")

    def publish_routed(
        self,
        message: Message,
        *,
        exchange: str,
        exchange_type: str,
        routing_key: str,
        declare: Sequence[Binding] = (),
    ) -> None:
        broker = self._broker
        with broker.cond:
            broker.bindings.setdefault(exchange, set()).update(declare)
            for queue in broker.route(exchange, exchange_type, routing_key):
                broker.add(message, queue, exchange, routing_key)

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        broker = self._broker
        deadline = time.monotonic() + max(timeout, 0.0)
        with broker.cond:
            while True:
                now = time.time()
                next_due = broker.promote(now)
                deliveries = self._claim(queues, limit, owner, now)
                left = deadline - time.monotonic()
                if deliveries or left <= 0:
                    return deliveries
                if next_due is not None:
                    left = min(left, next_due - now)
                broker.cond.wait(max(left, 0.0))

    def _claim(self, queues: Sequence[str], limit: int, owner: str, now: float) -> list[Delivery]:
        deliveries: list[Delivery] = []
        while len(deliveries) < limit:
            entry = self._broker.pop_ready(queues)
            if entry is None:
                break
            entry.owner = owner
            entry.delivery_count += 1
            self._broker.set_timed(entry, now + self.visibility_timeout)
            deliveries.append(
                Delivery(
                    message=entry.message,
                    queue=entry.queue,
                    tag=str(entry.id),
                    transport=self,
                    redelivered=entry.delivery_count > 1,
                    delivery_count=entry.delivery_count,
                    state=owner,
                    exchange=entry.exchange,
                    routing_key=entry.routing_key,
                )
            )
        return deliveries

    def ack(self, delivery: Delivery) -> None:
        with self._broker.cond:
            self._broker.entries.pop(int(delivery.tag), None)

    def requeue(self, delivery: Delivery) -> None:
        with self._broker.cond:
            entry = self._broker.held(delivery)
            if entry is not None:
                self._broker.make_ready(entry)

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Ready again, uncounted; ready entries are served by id, so the order holds."""
        broker = self._broker
        with broker.cond:
            for delivery in deliveries:
                entry = broker.held(delivery)
                if entry is not None:
                    entry.delivery_count = max(entry.delivery_count - 1, 0)
                    broker.make_ready(entry)

    def park(self, delivery: Delivery, eta: float) -> None:
        broker = self._broker
        with broker.cond:
            entry = broker.held(delivery)
            if entry is None:
                return
            # parking is not a delivery attempt (same rule as the SQLite transport)
            entry.delivery_count = max(entry.delivery_count - 1, 0)
            if eta <= time.time():
                broker.make_ready(entry)
                return
            entry.owner = None
            broker.set_timed(entry, eta)
            broker.cond.notify_all()

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        with self._broker.cond:
            self._broker.add(message, queue, "", queue, visible_at=eta)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        broker = self._broker
        with broker.cond:
            broker.entries.pop(int(delivery.tag), None)
            letter_id = next(broker.ids)
            broker.dead[letter_id] = DeadLetter(
                id=letter_id,
                queue=delivery.queue,
                reason=reason,
                message=delivery.message,
                failed_at=time.time(),
            )

    def renew(self, owner: str) -> None:
        broker = self._broker
        with broker.cond:
            lease = time.time() + self.visibility_timeout
            for entry in broker.entries.values():
                if entry.owner == owner and entry.visible_at > 0:
                    broker.set_timed(entry, lease)

    def recover(self, owner: str) -> int:
        broker = self._broker
        with broker.cond:
            held = [e for e in broker.entries.values() if e.owner == owner and e.visible_at > 0]
            for entry in sorted(held, key=lambda entry: entry.id):
                broker.make_ready(entry)
            return len(held)
