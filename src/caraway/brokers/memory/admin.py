"""Administration of the in-process broker: queue sizes and purges, the schedule listing
and the dead-letter store.

Works on the same :class:`~caraway.brokers.memory.transport.Broker` as every transport
on its ``memory://`` URL in this process, under the same lock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from caraway.brokers.contracts import Binding, DeadLetter, QueueAdmin
from caraway.brokers.memory.transport import broker_for
from caraway.protocol.message import Message


class MemoryAdmin(QueueAdmin):
    """The admin of ``memory://`` brokers; nothing to declare, nothing to close."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self._broker = broker_for(url)

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
        """Fanout bindings for publish_fanout, the others for publish_routed."""
        with self._broker.cond:
            if exchange_type == "fanout":
                self._broker.fanout.setdefault(exchange, set()).add(queue)
            else:
                self._broker.bindings.setdefault(exchange, set()).add(Binding(queue, routing_key))

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:
        with self._broker.cond:
            self._broker.fanout.get(exchange, set()).discard(queue)
            self._broker.bindings.get(exchange, set()).discard(Binding(queue, routing_key))

    def size(self, queue: str) -> int:
        # ready entries, plus parked ones and expired claims the next claim promotes
        now = time.time()
        with self._broker.cond:
            return sum(
                1
                for entry in self._broker.entries.values()
                if entry.queue == queue and entry.visible_at <= now
            )

    def purge(self, queue: str) -> int:
        broker = self._broker
        with broker.cond:
            broker.promote(time.time())
            doomed = [
                e.id for e in broker.entries.values() if e.queue == queue and not e.visible_at
            ]
            for entry_id in doomed:
                del broker.entries[entry_id]
            broker.ready.pop(queue, None)
            return len(doomed)

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        now = time.time()
        with self._broker.cond:
            parked = [
                entry
                for entry in self._broker.entries.values()
                if entry.owner is None and entry.visible_at > now
            ]
        parked.sort(key=lambda entry: (entry.visible_at, entry.id))
        return [(entry.visible_at, entry.queue, entry.message) for entry in parked[:limit]]

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        with self._broker.cond:
            return [self._broker.dead[key] for key in sorted(self._broker.dead)[:limit]]

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        broker = self._broker
        with broker.cond:
            chosen = sorted(broker.dead) if ids is None else sorted({int(i) for i in ids})
            letters = [broker.dead.pop(key) for key in chosen if key in broker.dead]
            for letter in letters:
                broker.add(letter.message, letter.queue, "", letter.queue)
            return len(letters)

    def purge_dead_letters(self) -> int:
        with self._broker.cond:
            count = len(self._broker.dead)
            self._broker.dead.clear()
            return count
