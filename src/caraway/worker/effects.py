"""Apply :class:`~caraway.worker.lifecycle.Effects`: the lifecycle's only I/O.

Order matters for at-least-once delivery: results are stored and follow-ups published
before the delivery is acked, so a crash in between repeats work rather than losing it
(and a repeated run is caught by the stored final state).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from caraway.backends.base import Backend
from caraway.protocol import message as protocol
from caraway.protocol import results as docs
from caraway.transports.base import Delivery, Transport
from caraway.worker.lifecycle import Effects

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")


class EffectApplier:
    """Carries out effects with one consumer's connections."""

    def __init__(self, app: Caraway, transport: Transport, backend: Backend | None) -> None:
        self.app = app
        self.transport = transport
        self.backend = backend
        self.expires = app.result_expires_seconds()
        self.serializer = str(app.conf.task_serializer)

    def apply(self, delivery: Delivery, effects: Effects) -> None:
        self.store(effects)
        for follow in effects.publish:
            wire = protocol.encode(follow.message, serializer=self.serializer)
            self.transport.publish(
                wire,
                queue=follow.route.queue,
                exchange=follow.route.exchange,
                routing_key=follow.route.routing_key,
            )
        if effects.chord_join is not None:
            from caraway.worker.chords import join_chord

            join_chord(self.app, self.transport, self.backend, effects.chord_join)
        self.settle(delivery, effects)

    def store(self, effects: Effects) -> None:
        if self.backend is None:
            return
        for task_id, state, document in effects.results:
            self.backend.store(
                task_id, docs.encode_document(document), state=state, expires=self.expires
            )

    @staticmethod
    def settle(delivery: Delivery, effects: Effects) -> None:
        if effects.settle == "ack":
            delivery.ack()
        elif effects.settle == "requeue":
            delivery.requeue()
        elif effects.settle == "dead_letter":
            delivery.dead_letter(effects.reason or "set aside by the worker")
