"""Apply :class:`~caraway.worker.lifecycle.Effects`: the lifecycle's only I/O.

Order matters for at-least-once delivery: results are stored and follow-ups published
before the delivery is acked, so a crash in between repeats work rather than losing it
(and a repeated run is caught by the stored final state). The one exception is the ack of
an early-ack task (Celery acks those before running them): it may travel with the next
fetch while the result is still being written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from caraway.brokers.contracts import Backend, Delivery, Transport
from caraway.protocol import message as protocol
from caraway.protocol import results as docs
from caraway.protocol.message import Message, TaskMessage
from caraway.worker.execute import build_request
from caraway.worker.lifecycle import Effects, errback_follow_up

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.task import Task

logger = logging.getLogger("caraway.worker")
FetchT = TypeVar("FetchT")


class EffectApplier:
    """Carries out effects with one consumer's connections, batching what it can.

    Result writes, follow-up publishes and acks are queued and written together by
    ``flush()`` (one round trip each), results before acks. Anything that must see them
    (errbacks, chord joins, requeues, dead letters, ``now=True``) flushes first.
    """

    def __init__(self, app: Caraway, transport: Transport, backend: Backend | None) -> None:
        self.app = app
        self.transport = transport
        self.backend = backend
        self.expires = app.result_expires_seconds()
        self.serializer = str(app.conf.task_serializer)
        self._results: list[tuple[str, bytes, str, str | None]] = []
        self._publish: list[tuple[Message, str]] = []
        self._acks: list[Delivery] = []
        #: acks that need not wait for their results (early-ack tasks)
        self._loose_acks: list[Delivery] = []
        #: finished chord header tasks to count
        self._joins: list[tuple[Any, ...]] = []

    @property
    def pending(self) -> int:
        # asked several times per task: plain additions, not a generator
        return (
            len(self._acks)
            + len(self._loose_acks)
            + len(self._results)
            + len(self._publish)
            + len(self._joins)
        )

    def apply(
        self, delivery: Delivery, effects: Effects, *, now: bool = False, ordered: bool = True
    ) -> None:
        """Queue (or carry out) ``effects``; ``ordered=False`` lets the ack overtake results."""
        if self.backend is not None:
            own_id = delivery.message.headers.get("id")
            reply_to = delivery.message.properties.get("reply_to")
            for task_id, state, document in effects.results:
                target = reply_to if task_id == own_id else None
                self._results.append((task_id, docs.encode_document(document), state, target))
        for follow in effects.publish:
            wire = protocol.encode(follow.message, serializer=self.serializer)
            route = follow.route
            if route.exchange or (route.routing_key not in (None, route.queue)):
                self.flush()
                self.transport.publish(
                    wire, queue=route.queue, exchange=route.exchange, routing_key=route.routing_key
                )
            else:
                self._publish.append((wire, route.queue))
        if effects.chord_join is not None:
            # counted with the batch, after its results and before its acks
            self._joins.append(effects.chord_join)
        urgent = effects.errbacks is not None
        if urgent or now or effects.settle in ("requeue", "dead_letter"):
            self.flush()
        if effects.errbacks is not None:
            self.run_errbacks(*effects.errbacks)
        if effects.settle == "ack":
            (self._acks if ordered else self._loose_acks).append(delivery)
            if now:
                self.flush()
        else:
            self.settle(delivery, effects)

    def flush(self) -> None:
        """Write queued results, then publishes, then acks (at-least-once order)."""
        # Each part is dropped from the queue only once written: a broker or store that
        # fails keeps the rest queued for the next flush (writes are idempotent).
        if self._results:
            assert self.backend is not None
            self.backend.store_many(self._results, expires=self.expires)
            self._results = []
        self._join_chords()
        if self._publish:
            self.transport.publish_many(self._publish)
            self._publish = []
        acks = self._acks + self._loose_acks
        if acks:
            self.transport.ack_many(acks)
            self._acks, self._loose_acks = [], []

    def flush_then_fetch(self, fetch: Callable[[Sequence[Delivery]], FetchT]) -> FetchT:
        """Write what is queued and run ``fetch(acks)`` in as few round trips as order allows.

        The results are sent first and their replies read last, so the write overlaps the
        fetch; acks go with the fetch (``Transport.ack_then_fetch``). Only when an ack must
        follow its result (late acks) or a follow-up must be published do the results get
        waited for before the fetch. A failed result write after a good fetch is kept for
        the next flush rather than losing the fetched deliveries.
        """
        wait = _noop
        if self._results:
            assert self.backend is not None
            wait = self.backend.store_many_begin(self._results, expires=self.expires)
        try:
            if self._acks or self._publish or self._joins:
                wait, waiting = _noop, wait
                waiting()
                self._results = []
                self._join_chords()
                if self._publish:
                    self.transport.publish_many(self._publish)
                    self._publish = []
            found = fetch(self._acks + self._loose_acks)
            self._acks, self._loose_acks = [], []
        except BaseException:
            with contextlib.suppress(Exception):
                wait()  # read the replies so the connection stays in step
            raise
        try:
            wait()
            self._results = []
        except Exception as exc:
            logger.error("could not write results: %s; they are written with the next batch", exc)
        return found

    def _join_chords(self) -> None:
        if self._joins:
            from caraway.worker.chords import join_chords

            join_chords(self.app, self.transport, self.backend, self._joins)
            self._joins = []

    def run_errbacks(
        self,
        signatures: list[dict[str, Any]],
        failed: TaskMessage,
        exc: BaseException,
        traceback: str | None,
    ) -> None:
        """Celery's rule: an errback taking more than one argument is called here as
        ``errback(request, exc, traceback)``; any other is published with the task id."""
        for signature in signatures:
            task = self.app._tasks.get(str(signature.get("task")))
            if task is not None and _takes_request(task):
                request = build_request(task, failed, hostname="", delivery_info={})
                try:
                    task(request, exc, traceback, *(signature.get("args") or ()))
                except Exception:
                    logger.exception("errback %s for task %s raised", task.name, failed.id)
                continue
            follow = errback_follow_up(signature, failed, self.app.conf)
            wire = protocol.encode(follow.message, serializer=self.serializer)
            self.transport.publish(
                wire,
                queue=follow.route.queue,
                exchange=follow.route.exchange,
                routing_key=follow.route.routing_key,
            )

    @staticmethod
    def settle(delivery: Delivery, effects: Effects) -> None:
        if effects.settle == "ack":
            delivery.ack()
        elif effects.settle == "requeue":
            delivery.requeue()
        elif effects.settle == "dead_letter":
            delivery.dead_letter(effects.reason or "set aside by the worker")


def _noop() -> None:
    """Nothing to wait for."""


def _takes_request(task: Task) -> bool:
    """True when the errback task accepts (request, exc, traceback)."""
    signature = task._signature()
    if signature is None:
        return False
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(params) > 1 or any(p.kind is p.VAR_POSITIONAL for p in params)
