"""Apply :class:`~caraway.lifecycle.Effects`: the worker's only I/O after a task runs.

Order matters for at-least-once delivery: results are stored and follow-ups published
before the delivery is acked, so a crash in between repeats work rather than losing it
(and a repeated run is caught by the stored final state). The one exception is the ack of
an early-ack task (Celery acks those before running them): it may travel with the next
fetch while the result is still being written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from caraway.brokers.contracts import Backend, Delivery, Transport
from caraway.chords import join_chords, join_chords_begin
from caraway.execution import fire_errbacks
from caraway.lifecycle import ChordJoin, Effects, Errbacks
from caraway.protocol import results as docs
from caraway.publish import Outgoing, Publisher, follow_up
from caraway.taskbase import AppLike

logger = logging.getLogger("caraway.worker")
FetchT = TypeVar("FetchT")


class EffectApplier:
    """Carries out effects with one consumer's connections, batching what it can.

    Result writes, follow-up publishes and acks are queued and written together by
    ``flush()`` (one round trip each), results before acks. Anything that must see them
    (errbacks, chord joins, requeues, dead letters, ``now=True``) flushes first.
    """

    def __init__(
        self,
        app: AppLike,
        transport: Transport,
        backend: Backend | None,
        publisher: Publisher,
    ) -> None:
        self.app = app
        self.transport = transport
        self.backend = backend
        self.publisher = publisher
        self.expires = app.conf.result_expires_seconds()
        self._results: list[tuple[str, bytes, str, str | None]] = []
        self._publish: list[Outgoing] = []
        self._acks: list[Delivery] = []
        #: acks that need not wait for their results (early-ack tasks)
        self._loose_acks: list[Delivery] = []
        #: finished chord header tasks to count
        self._joins: list[ChordJoin] = []

    @property
    def pending(self) -> int:
        # asked several times per task: no generator, and no len() of the lists that are
        # empty (most of them, most of the time)
        count = 0
        for part in (self._acks, self._loose_acks, self._results, self._publish, self._joins):
            if part:
                count += len(part)
        return count

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
        self._publish.extend(effects.publish)
        if effects.chord_join is not None:
            # counted with the batch, after its results and before its acks
            self._joins.append(effects.chord_join)
        urgent = effects.errbacks is not None
        if urgent or now or effects.settle in ("requeue", "dead_letter"):
            self.flush()
        if effects.errbacks is not None:
            self.run_errbacks(effects.errbacks)
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
        self._send()
        acks = self._acks + self._loose_acks
        if acks:
            self.transport.ack_many(acks)
            self._acks, self._loose_acks = [], []

    def flush_then_fetch(self, fetch: Callable[[Sequence[Delivery]], FetchT]) -> FetchT:
        """Write what is queued and run ``fetch(acks)`` in as few round trips as order allows.

        The results are sent first and their replies read last, so the write overlaps the
        fetch; acks go with the fetch (``Transport.ack_then_fetch``). Finished chord header
        tasks are counted behind their results on the same connection, in the same round
        trip, before the fetch (which may wait): a chord they complete sends its body first.
        Only when an ack must follow its result (late acks) or a follow-up must be published
        do the results get waited for before the fetch. A failed result write after a good
        fetch is kept for the next flush rather than losing the fetched deliveries.
        """
        return self.flush_then_begin(lambda acks: _done(fetch(acks)))()

    def flush_then_begin(
        self, begin: Callable[[Sequence[Delivery]], Callable[[], FetchT]]
    ) -> Callable[[], FetchT]:
        """:meth:`flush_then_fetch` in two halves: ``begin(acks)`` sends the fetch and
        returns what reads its reply (``FetchAhead.begin_fetch``); the function returned
        here reads it, then the results' replies. What finishes in between is queued apart
        from what was sent."""
        sent: list[tuple[str, bytes, str, str | None]] = []
        wait = _noop
        if self._results:
            assert self.backend is not None
            wait = self.backend.store_many_begin(self._results, expires=self.expires)
            sent, self._results = self._results, []
        try:
            if self._joins and not self._acks and not self._publish:
                # counted in the results' round trip; a chord they complete sends its body
                # before the fetch, which may wait
                self._count_joins()
            if self._acks or self._publish:
                wait, waiting = _noop, wait
                waiting()
                sent = []
                self._join_chords()
                self._send()
            acks = self._acks + self._loose_acks
            read = begin(acks)
            self._acks, self._loose_acks = [], []
        except BaseException:
            with contextlib.suppress(Exception):
                wait()  # read the replies so the connection stays in step
            self._results[:0] = sent  # written again with the next flush (idempotent)
            raise

        def finish() -> FetchT:
            try:
                found = read()
            except BaseException:
                with contextlib.suppress(Exception):
                    wait()
                self._results[:0] = sent
                # the acks went with the fetch: sent again (their results, if they had to
                # come first, were written before it)
                self._loose_acks[:0] = acks
                raise
            try:
                wait()
            except Exception as exc:
                self._results[:0] = sent
                logger.error(
                    "could not write results: %s; they are written with the next batch", exc
                )
            return found

        return finish

    def _count_joins(self) -> None:
        """Send the counts behind the results being written and read them; counts that
        fail are sent again with the next batch (a part is counted once however often)."""
        try:
            self._publish.extend(join_chords_begin(self.app, self.backend, self._joins)())
        except Exception as exc:
            logger.error(
                "could not count finished chord header tasks: %s; counted with the next batch",
                exc,
            )
        else:
            self._joins = []

    def _join_chords(self) -> None:
        if self._joins:
            self._publish.extend(join_chords(self.app, self.backend, self._joins))
            self._joins = []

    def _send(self) -> None:
        """Publish the queued follow-ups through the one publish path, on this connection."""
        if self._publish:
            self.publisher.send(self.transport, self._publish)
            self._publish = []

    def run_errbacks(self, errbacks: Errbacks) -> None:
        """Fire a failed task's errbacks; those sent as tasks go out with the next flush."""

        def send(signature: Mapping[str, Any], value: Any) -> None:
            self._publish.append(follow_up(signature, value, errbacks.failed, self.app.conf))

        fire_errbacks(self.app, errbacks, send=send)

    @staticmethod
    def settle(delivery: Delivery, effects: Effects) -> None:
        if effects.settle == "ack":
            delivery.ack()
        elif effects.settle == "requeue":
            delivery.requeue()
        elif effects.settle == "dead_letter":
            delivery.dead_letter(effects.reason or "set aside by the worker")


def _done(value: FetchT) -> Callable[[], FetchT]:
    return lambda: value


def _noop() -> None:
    """Nothing to wait for."""
