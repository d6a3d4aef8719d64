"""One consumer: fetch with prefetch, decide, run, apply effects, report to the parent.

A prefork child runs one of these with one slot; ``-P threads`` runs one with N slots,
``-P solo`` one with one slot, both inside the supervisor's process. The consumer owns
its broker and result connections and does their I/O on its own thread; a one-slot consumer
lends them to its hand-off thread only while a task runs (``handoff.py``: what waits behind
a long task goes back to the broker for an idle process). Messages it holds but has not
started go back to the queue on a warm shutdown.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from caraway import exceptions, lifecycle, signals
from caraway.brokers.contracts import Delivery, FetchAhead, Scheduling
from caraway.effects import EffectApplier
from caraway.execution import (
    build_request,
    run_task,
    run_task_async,
    soft_limit_of,
    started_meta,
)
from caraway.lifecycle import Outcome, build_policy
from caraway.protocol import message as protocol
from caraway.protocol.message import REPR_MAX, TaskMessage
from caraway.protocol.results import decode_document
from caraway.worker.buckets import SharedBuckets
from caraway.worker.handoff import HandOff, SiblingView
from caraway.worker.ipc import (
    AddConsumer,
    CancelConsumer,
    Command,
    Holding,
    Rejected,
    Report,
    Revoke,
    RevokeStamps,
    SetRateLimit,
    SetTaskEvents,
    SetTimeLimit,
    TaskFinished,
    TaskStarted,
)
from caraway.worker.monitor import TaskEvents
from caraway.worker.policy import _info, _log_outcome, _rss_kib, protocol_accept
from caraway.worker.pools import (
    AsyncLoop,
    HardTimeLimit,
    InlinePool,
    ThreadPool,
    green_time_limits,
    patched,
)

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.request import Request
    from caraway.taskbase import TaskBase


class FlushReports(Protocol):
    """Write the reports queued for the supervisor; ``busy``: task counts may wait a little."""

    def __call__(self, *, busy: bool = False) -> None: ...


def _no_reports(*, busy: bool = False) -> None:
    """Threads and solo: the supervisor gets each record in-process, as it is reported."""


logger = logging.getLogger("caraway.worker")


#: a task slower than this makes the consumer write pending results before the next one
FLUSH_BEFORE_SLOW = 0.005
#: how often a consumer tells the supervisor what it holds (``inspect reserved``)
QUEUE_REPORT_INTERVAL = 0.5


@dataclass(slots=True)
class _Job:
    delivery: Delivery
    message: TaskMessage
    task: TaskBase
    policy: lifecycle.Policy
    outcome: Outcome | None = None
    is_async: bool = False
    acked: bool = False


class Consumer:
    """The fetch-run-settle loop of one process (or of the threads pool)."""

    def __init__(
        self,
        app: Caraway,
        *,
        queues: Sequence[str],
        slots: int,
        hostname: str,
        report: Callable[[Report], None] | None = None,
        stop: threading.Event | None = None,
        commands: Callable[[], list[Command]] | None = None,
        flush_reports: FlushReports | None = None,
        buckets: SharedBuckets | None = None,
        max_tasks: int | None = None,
        max_memory_kib: int | None = None,
        siblings: SiblingView | None = None,
    ) -> None:
        self.app = app
        self.queues = list(queues)
        self.slots = slots
        self.hostname = hostname
        self.owner = f"{hostname}/{os.getpid()}"
        self.report = report or (lambda record: None)
        self.stop_event = stop or threading.Event()
        self.commands = commands or (lambda: [])
        self.flush_reports: FlushReports = flush_reports or _no_reports
        self._next_queue_report = 0.0
        self.buckets = buckets
        self.max_tasks = max_tasks
        self.max_memory_kib = max_memory_kib
        self._rate_waiting: set[int] = set()
        self.events = TaskEvents(app, hostname, enabled=bool(app.conf.worker_send_task_events))
        self._reported = Holding()
        conf = app.conf
        self.prefetch = max(1, slots * int(conf.worker_prefetch_multiplier or 1))
        self.park_horizon = float(conf.broker_park_horizon)
        self.delivery_cap = int(conf.worker_delivery_cap or 0)
        self.max_message_size = int(conf.worker_max_message_size or 0) or None
        #: messages set aside undecoded or unhandled (for ``inspect stats``' counts)
        self.rejected = 0
        self.accept = protocol_accept(conf.accept_content)
        self.revoked: set[str] = set()
        #: stamp name -> revoked values (revoke_by_stamped_headers)
        self.revoked_stamps: dict[str, list[Any]] = {}
        self._policies: dict[str, lifecycle.Policy] = {}
        self._buffer: deque[Delivery] = deque()
        #: the claim of the next batch, sent as the last task in hand started (FetchAhead):
        #: what reads its reply, or None
        self._ahead: Callable[[], list[Delivery]] | None = None
        self._ahead_limit = 0
        #: whether this consumer claims ahead (a one-slot consumer on a FetchAhead broker)
        self._fetches_ahead = False
        #: the last claim took all it asked for: more likely wait (claim ahead only then)
        self._backlog = False
        self._held: list[tuple[float, int, Delivery, TaskMessage]] = []
        self._inflight = 0
        self._last_runtime = 0.0
        self._async_inflight = 0
        self.async_limit = int(conf.worker_async_concurrency or 100)
        self._async_loop: AsyncLoop | None = None
        self._async_tasks: dict[str, bool] = {}
        #: decoded jobs waiting for a free sync slot or async place
        self._ready: deque[_Job] = deque()
        self._done: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.processed = 0
        #: one slot run inline: a helper thread gives back what waits behind a long task
        #: (not on green pools, where a thread is a greenlet the task would have to yield to)
        #: patched for gevent/eventlet (which happens before a consumer is made)
        self._green = patched() is not None
        after = conf.worker_hand_off_after
        #: a prefork child's view of which siblings wait on an empty broker: what it holds
        #: goes to one of them at once rather than after ``after`` (handoff.py)
        self.siblings = siblings
        self.handoff = (
            HandOff(
                self._hand_off,
                after=float(after),
                siblings=siblings,
                at_start=self._hand_off_at_start,
            )
            if slots == 1 and after is not None and not self._green
            else None
        )
        #: messages given back (behind a long task, or at once to an idle sibling)
        self.given_back = 0

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        self.transport = self.app.connection()
        if self.siblings is not None and self.handoff is not None:
            self.siblings.wake_id = self.transport.wake_id
            self.transport.on_wait = self.siblings.waiting
            if self.transport.pushes:
                self.handoff.at_start = None
        # by type, once: an ABC isinstance per message would cost more than the lookup did
        self.can_park = isinstance(self.transport, Scheduling)
        self._fetches_ahead = (
            isinstance(self.transport, FetchAhead) and self.slots == 1 and not self._green
        )
        self.backend = self.app.new_backend()
        self.effects = EffectApplier(self.app, self.transport, self.backend, self.app.publisher)
        pool: InlinePool | ThreadPool = (
            InlinePool(self._done) if self.slots == 1 else ThreadPool(self.slots, self._done)
        )
        self.pool = pool
        logger.debug(
            "consumer pid %d: queues %s, %d slot(s), prefetch %d",
            os.getpid(),
            ",".join(self.queues),
            self.slots,
            self.prefetch,
        )
        if self.handoff is not None:
            self.handoff.start()  # this thread owns the transport and buffers from now on
        try:
            outage = 0
            while not self.stop_event.is_set():
                try:
                    self._step()
                    outage = 0
                except (exceptions.BrokerError, exceptions.BackendError) as exc:
                    outage += 1
                    pause = min(0.5 * 2 ** (outage - 1), 10.0)
                    logger.error(
                        "broker or result store unreachable: %s; retrying in %.1fs "
                        "(unwritten results and acks are kept)",
                        exc,
                        pause,
                    )
                    self.stop_event.wait(pause)
        finally:
            if self.handoff is not None:
                self.handoff.stop()
            pool.stop()
            self._wait_for_async_tasks()
            if self._async_loop is not None:
                self._async_loop.stop()
            self._take_ahead_at_stop()  # before the flush: a failed read's acks go with it
            self._final_flush()
            self.events.close()
            self.flush_reports()
            self._give_back_unstarted()
            self.transport.close()
            if self.backend is not None:
                self.backend.close()

    def _step(self) -> None:
        """One turn of the loop: settle, start, fetch, dispatch, write."""
        self._apply_commands()
        self._settle_finished()
        self._start_due_held()
        self._fill_buffer()
        self._apply_commands()  # a command may have come in while the fetch waited
        self._dispatch_buffer()
        if (self._inflight and self.slots > 1) or self._async_inflight:
            self._wait_for_completion(0.05)
        self._settle_finished()  # the one slot's task ran inline: settle it with the batch
        if not self._buffer and not self._ready:
            # the next fetch carries what is queued unless nothing will fetch right away
            if self.effects.pending and (self._inflight or not self._fetch_room()):
                self.effects.flush()
            self.flush_reports(busy=True)  # and at once before a fetch that waits
        self._report_queue_state()

    def _wait_for_async_tasks(self) -> None:
        while self._async_inflight:
            try:
                self._wait_for_completion(0.1)
            except (exceptions.BrokerError, exceptions.BackendError) as exc:
                logger.error("could not settle async tasks at shutdown: %s", exc)
                return

    def _final_flush(self) -> None:
        try:
            self._settle_finished()
            self.effects.flush()
        except (exceptions.BrokerError, exceptions.BackendError) as exc:
            logger.error(
                "could not write the last results and acks: %s; their messages "
                "come back when their lease runs out",
                exc,
            )

    def _fetch_room(self) -> int:
        """How many messages to fetch now: 0 while enough are in hand."""
        waiting = len(self._buffer) + len(self._ready) + len(self._rate_waiting)
        room = self.prefetch - waiting - self._inflight
        if room <= 0 or self._buffer or self._ready:
            # enough in hand: refill only once the buffer is spent, so each claim carries
            # a full batch (a claim per task or two doubled Redis's CPU per task)
            return 0
        return room

    def _fill_buffer(self) -> None:
        if self._ahead is not None:
            try:
                self._take_ahead()
            except exceptions.BrokerConnectionError as exc:
                self._fetch_failed(exc)
                return
        room = self._fetch_room()
        if not room:
            return
        busy = bool(self._buffer or self._ready) or self._inflight or self._async_inflight
        timeout = 0.0 if busy else self._idle_timeout()
        if timeout > 0:
            self.flush_reports()  # the counts held back while busy, before a wait
        # with nothing to write, an idle consumer's one call claims and then waits: a claim
        # and then a fetch that claims again cost an idle node two claims a wait for nothing
        pending = self.effects.pending
        first = 0.0 if pending else timeout
        if self.siblings is not None:
            # a wait of this fetch holds no claim: the supervisor need not renew any
            self.siblings.empty_handed = not (busy or pending or self._held or self._rate_waiting)

        def fetch(acks: Sequence[Delivery]) -> list[Delivery]:
            return self.transport.ack_then_fetch(
                acks, self.queues, limit=room, timeout=first, owner=self.owner
            )

        try:
            # results, acks and the claim of the next batch in one round trip
            deliveries = self.effects.flush_then_fetch(fetch)
            if not deliveries and timeout > 0 and pending:
                deliveries = self.transport.fetch(
                    self.queues, limit=room, timeout=timeout, owner=self.owner
                )
        except exceptions.BrokerConnectionError as exc:
            self._fetch_failed(exc)
            return
        self._backlog = len(deliveries) >= room
        self._buffer.extend(deliveries)

    def _fetch_failed(self, exc: exceptions.BrokerConnectionError) -> None:
        logger.error("broker connection lost while fetching: %s; retrying in 1s", exc)
        self.stop_event.wait(1.0)

    def _take_ahead(self) -> None:
        """Read the claim sent ahead (if any) into the buffer."""
        read, self._ahead = self._ahead, None
        if read is not None:
            found = read()
            self._backlog = len(found) >= self._ahead_limit
            self._buffer.extend(found)

    def _fetch_ahead(self, job: _Job) -> None:
        """As the last task in hand starts inline, send the claim of the next batch (with
        the acks and results queued), so its round trip overlaps the task. The running task
        counts against the prefetch limit only when its ack waits for it (late acks), as a
        task acked at its start does not count in Celery's prefetch."""
        if (
            not self._backlog
            or self._ahead is not None
            or self._buffer
            or self._ready
            or self._async_inflight
            or self.stop_event.is_set()
        ):
            # a claim ahead is for a drain: a worker taking tasks as they come would pay
            # one empty claim per task (W3's round trip, W9's commands)
            return
        if self.siblings is not None and self.siblings.any_waiting():
            return  # what it claimed would go back to that sibling at once (handoff.py)
        limit = self.prefetch - len(self._rate_waiting) - (1 if job.policy.acks_late else 0)
        if limit <= 0:
            return
        self._ahead_limit = limit
        transport = self.transport
        assert isinstance(transport, FetchAhead)
        try:
            self._ahead = self.effects.flush_then_begin(
                lambda acks: transport.begin_fetch(acks, self.queues, limit=limit, owner=self.owner)
            )
        except Exception as exc:  # the task runs all the same; the next fetch tries again
            logger.warning("could not claim the next batch ahead: %s", exc)

    def _idle_timeout(self) -> float:
        if not self._held:
            return 1.0
        return max(0.0, min(1.0, self._held[0][0] - time.time()))

    def _dispatch_buffer(self) -> None:
        for _ in range(len(self._ready)):
            # a task run inline may have seen the rest of _ready given back
            if self.stop_event.is_set() or not self._ready:
                return
            self._try_start(self._ready.popleft())
        while self._buffer and not self.stop_event.is_set():
            sync_full = self._inflight >= self.slots
            if sync_full and self._async_inflight >= self.async_limit:
                return
            if sync_full and self._ready and any(not job.is_async for job in self._ready):
                return
            delivery = self._buffer.popleft()
            if self.slots == 1:
                # the one slot runs it inline, which may take long: say what waits behind it
                # (throttled, but at once when the countdown tasks held here changed)
                held, scheduled = self._held, self._reported.scheduled
                self._report_queue_state(
                    force=bool(held or scheduled) and len(held) != len(scheduled)
                )
            self._receive(delivery)

    def _wait_for_completion(self, timeout: float) -> None:
        if self.effects.pending:
            self.effects.flush()
        self.flush_reports()
        try:
            job = self._done.get(timeout=timeout)
        except queue.Empty:
            return
        self._finish(job)

    def _settle_finished(self) -> None:
        done = self._done
        # empty() first, not get_nowait()'s queue.Empty: this runs twice a turn, and an
        # exception costs more than the call. Only this thread takes from the queue, so
        # what empty() saw is still there for get_nowait().
        while not done.empty():
            self._finish(done.get_nowait())

    # -- receiving -------------------------------------------------------------------------
    def _receive(self, delivery: Delivery) -> None:
        """The decode boundary: every delivery is decoded, settled or run, and nothing in
        it (what it holds, how often it came back) gets past here as an exception."""
        cap = self.delivery_cap
        if cap and delivery.delivery_count > cap + 1:
            # the capped decode below had its turn at cap + 1 and the process died anyway:
            # reading this message is what kills, so it is set aside unread
            self._reject(
                delivery,
                f"delivered {delivery.delivery_count} times and never settled, more than "
                f"worker_delivery_cap={cap}; not decoded again",
            )
            return
        try:
            message = protocol.decode(
                delivery.message, accept=self.accept, max_size=self.max_message_size
            )
        except exceptions.ProtocolError as exc:
            self._reject(delivery, f"{type(exc).__name__}: {exc}", exc)
            return
        try:
            self._received(delivery, message)
        except (exceptions.BrokerError, exceptions.BackendError):
            raise  # an outage, not the message: the loop retries with the message kept
        except Exception as exc:
            # a well-formed message this worker still cannot handle (a bug, or input no
            # check foresaw): account for it and go on, never take the process down
            logger.exception("internal error receiving task %s[%s]", message.task, message.id)
            self._reject(delivery, f"internal error on receipt: {type(exc).__name__}: {exc}", exc)

    def _reject(self, delivery: Delivery, reason: str, exc: Exception | None = None) -> None:
        """Set ``delivery`` aside in the dead-letter store with ``reason``; log it once."""
        task_id = _shown_id(delivery)
        logger.error(
            "cannot run message %s from queue %r: %s; moved to the dead-letter store",
            task_id,
            delivery.queue,
            reason,
        )
        self.rejected += 1
        self.report(Rejected(task_id, reason[:REPR_MAX]))
        try:
            delivery.dead_letter(reason)
        except (exceptions.BrokerError, exceptions.BackendError):
            raise
        except Exception:
            # the store cannot hold what this message is made of: dropping it, said loudly,
            # ends a loop that redelivering it forever would not
            logger.exception(
                "the dead-letter store refused message %s; acked and dropped instead", task_id
            )
            delivery.ack()
        error = exc if exc is not None else exceptions.ProtocolError(reason)
        signals.task_rejected.send(sender=self, message=delivery.message, exc=error)

    def _received(self, delivery: Delivery, message: TaskMessage) -> None:
        task = self.app._tasks.get(message.task)
        policy = self._policy(task)
        # a message delivered before may have run: its stored result says
        duplicate = delivery.redelivered or delivery.delivery_count > 1
        document = self._stored(message.id) if duplicate else None
        stored = None if document is None else str(document.get("status"))
        receipt = lifecycle.on_receipt(
            message,
            now=time.time(),
            park_horizon=self.park_horizon,
            can_park=self.can_park,
            delivery_count=(
                delivery.delivery_count  # what deliveries_seen says with nothing stored
                if document is None
                else lifecycle.deliveries_seen(delivery.delivery_count, document)
            ),
            delivery_cap=self.delivery_cap,
            stored_state=stored,
            registered=task is not None,
            revoked=bool(self.revoked or self.revoked_stamps) and self._revoked(message),
            # only an unregistered task's error names them: not worth a sort per message
            registered_names="" if task else ", ".join(sorted(self._user_task_names())),
            policy=policy,
        )
        self.events.received(message)
        if task is not None and receipt.verdict != "settle":
            logger.info("Task %s[%s] received", message.task, message.id)  # as Celery logs it
        if signals.task_received.receivers and receipt.verdict != "settle":
            request = self._request(_Job(delivery, message, task, policy))  # type: ignore[arg-type]
            signals.task_received.send(sender=self, request=request)
        if receipt.verdict == "run":
            assert task is not None
            self._try_start(_Job(delivery, message, task, policy, is_async=self._is_async(task)))
        elif receipt.verdict == "park":
            assert receipt.eta is not None
            delivery.park(receipt.eta)
        elif receipt.verdict == "hold":
            assert receipt.eta is not None
            heapq.heappush(self._held, (receipt.eta, id(delivery), delivery, message))
        else:
            assert receipt.effects is not None
            if task is None:
                logger.error(
                    "received unregistered task %r (id %s): %s",
                    message.task,
                    message.id,
                    "stored as FAILURE NotRegistered, kept in the dead-letter store",
                )
                signals.task_unknown.send(
                    sender=self,
                    message=delivery.message,
                    exc=exceptions.NotRegistered(message.task),
                    name=message.task,
                    id=message.id,
                )
            elif receipt.effects.reason:
                logger.info(
                    "task %s[%s] not run: %s", message.task, message.id, receipt.effects.reason
                )
            if receipt.effects.results and receipt.effects.results[0][1] == "REVOKED":
                expired = not self._revoked(message)
                self.events.revoked(message, expired=expired)
                signals.task_revoked.send(
                    sender=task,
                    request=self._request(_Job(delivery, message, task, policy)),  # type: ignore[arg-type]
                    terminated=False,
                    signum=None,
                    expired=expired,
                )
            self.effects.apply(delivery, receipt.effects)

    def _revoked(self, message: TaskMessage) -> bool:
        if message.id in self.revoked:
            return True
        if not self.revoked_stamps:
            return False
        return lifecycle.revoked_by_stamps(message, self.revoked_stamps) is not None

    def _stored(self, task_id: str) -> dict[str, Any] | None:
        if self.backend is None:
            return None
        raw = self.backend.load(task_id)
        if raw is None:
            return None
        try:
            return decode_document(raw)
        except exceptions.BackendError as exc:
            # not an outage (the loop would retry this message for ever): an unreadable
            # document says nothing about the task, which runs as if none were stored
            logger.warning("stored result of task %s is unreadable (%s); running it", task_id, exc)
            return None

    def _user_task_names(self) -> list[str]:
        return [name for name in self.app._tasks if not name.startswith("celery.")]

    def _start_due_held(self) -> None:
        now = time.time()
        while self._held and self._held[0][0] <= now:
            _, key, delivery, message = heapq.heappop(self._held)
            self._rate_waiting.discard(key)
            task = self.app._tasks.get(message.task)
            expired = message.expires is not None and message.expires.timestamp() <= now
            if task is None or self._revoked(message) or expired:
                self._buffer.appendleft(delivery)  # received again: settled, not run
                continue
            job = _Job(delivery, message, task, self._policy(task), is_async=self._is_async(task))
            self._try_start(job)

    def _is_async(self, task: TaskBase) -> bool:
        found = self._async_tasks.get(task.name)
        if found is None:
            found = self._async_tasks[task.name] = task.is_async()
        return found

    def _try_start(self, job: _Job) -> None:
        """Start ``job`` unless its task's rate limit says wait; then hold it, not block."""
        full = (
            self._async_inflight >= self.async_limit
            if job.is_async
            else self._inflight >= self.slots
        )
        if full:
            self._ready.append(job)
            return
        wait = self.buckets.take(job.task.name) if self.buckets is not None else 0.0
        if wait <= 0:
            self._start(job)
            return
        key = id(job.delivery)
        self._rate_waiting.add(key)
        heapq.heappush(self._held, (time.time() + wait, key, job.delivery, job.message))

    # -- running ---------------------------------------------------------------------------
    def _start(self, job: _Job) -> None:
        message, policy = job.message, job.policy
        if not policy.acks_late and (self.backend is None or policy.ignore_result):
            # nothing stored could stop a rerun if this child dies: ack before running
            self.effects.flush()
            job.delivery.ack()
            job.acked = True
        elif not policy.acks_late and self.transport.capabilities.free_acks:
            # Celery's early ack, where it costs a frame rather than a round trip (AMQP):
            # the broker refills the prefetch window while the batch runs
            job.delivery.ack()
            job.acked = True
        # Otherwise the ack is written after the run, with the result. Early-ack semantics
        # hold all the same: if this child dies mid-task the supervisor stores FAILURE
        # WorkerLostError, and the redelivered message is acked without running.
        if policy.track_started and not policy.ignore_result and self.backend is not None:
            started = lifecycle.started_effects(message, started_meta(self.hostname))
            self.effects.apply(job.delivery, started, now=True)
        elif (pending := self.effects.pending) and (
            self._last_runtime > FLUSH_BEFORE_SLOW or pending >= self.prefetch * 3
        ):
            self.effects.flush()
        self.events.started(message)
        if job.is_async:
            # many run at once and cancel themselves at their limits: not the supervisor's
            self._async_inflight += 1
            if self._async_loop is None:
                self._async_loop = AsyncLoop(self._done)
            self._async_loop.submit(lambda: self._execute_async(job))
            return
        # reported before it runs (the supervisor must know what a dying child took along)
        self.report(
            TaskStarted(
                task_id=message.id,
                name=message.task,
                delivery_tag=job.delivery.tag,
                acks_late=policy.acks_late,
                reject_on_worker_lost=policy.reject_on_worker_lost,
                time_limit=message.time_limit,
                soft_time_limit=message.soft_time_limit,
                argsrepr=message.argsrepr,
                kwargsrepr=message.kwargsrepr,
                queue=job.delivery.queue,
                stamps=message.stamps or None,
            )
        )
        self._inflight += 1
        if self._fetches_ahead:
            self._fetch_ahead(job)
        handoff = self.handoff
        if handoff is not None:
            self.pool.submit(lambda: handoff.run(self._execute, job))
        else:
            self.pool.submit(lambda: self._execute(job))

    async def _execute_async(self, job: _Job) -> _Job:
        job.outcome = await run_task_async(job.task, self._request(job))
        return job

    def _execute(self, job: _Job) -> _Job:
        request = self._request(job)
        if not self._green:
            job.outcome = run_task(job.task, request)
            return job
        # gevent/eventlet: time limits raised in the greenlet (prefork's parent kills)
        hard = job.message.time_limit or job.task.time_limit or self.app.conf.task_time_limit
        try:
            with green_time_limits(soft_limit_of(job.task, request), hard):
                job.outcome = run_task(job.task, request)
        except HardTimeLimit as limit:
            error = exceptions.TimeLimitExceeded(
                f"task {job.message.task}[{job.message.id}] exceeded its hard time limit "
                f"({limit.seconds}s)"
            )
            job.outcome = Outcome("failure", exc=error, traceback=None)
        return job

    def _request(self, job: _Job) -> Request:
        return build_request(
            job.message,
            hostname=self.hostname,
            delivery_info={
                "exchange": job.delivery.exchange,
                "routing_key": job.delivery.routing_key or job.delivery.queue,
                "priority": job.message.priority,
                "redelivered": job.delivery.redelivered,
            },
            properties=job.delivery.message.properties,
        )

    def _finish(self, job: _Job) -> None:
        if job.is_async:
            self._async_inflight -= 1
        else:
            self._inflight -= 1
        outcome = job.outcome
        assert outcome is not None
        try:
            effects = lifecycle.on_outcome(
                job.message,
                outcome,
                policy=job.policy,
                conf=self.app.conf,
                hostname=self.hostname,
                queue=job.delivery.queue,
            )
        except Exception as exc:
            # the worker's own handling failed, not the task: say so, keep the message
            # (unless acked already) in the dead-letter store, and keep the process going
            self._internal_error(job, exc)
            logger.exception(
                "internal error settling task %s[%s]", job.message.task, job.message.id
            )
            effects = lifecycle.Effects(
                settle="dead_letter", reason=f"internal error after the run: {exc!r:.500}"
            )
            if job.acked:
                effects.settle = "none"
        if job.acked and effects.settle == "ack":
            effects.settle = "none"
        if not job.is_async:
            self._last_runtime = outcome.runtime
        # an early-ack task's ack need not wait for its result (Celery acks before running)
        self.effects.apply(job.delivery, effects, ordered=job.policy.acks_late)
        self.events.finished(job.message, outcome)
        if not job.is_async:
            self.report(TaskFinished(job.message.id, job.message.task, outcome.kind))
        self.processed += 1
        _log_outcome(job.message, outcome)
        if self.max_tasks or self.max_memory_kib:
            self._maybe_retire()

    def _internal_error(self, job: _Job, exc: Exception) -> None:
        """task_internal_error: the worker's own handling of a task failed, not the task."""
        signals.task_internal_error.send(
            sender=job.task,
            task_id=job.message.id,
            args=job.message.args,
            kwargs=job.message.kwargs,
            request=self._request(job),
            exception=exc,
            traceback=exc.__traceback__,
            einfo=None,
        )

    def _maybe_retire(self) -> None:
        """Stop after ``max_tasks`` or above ``max_memory_kib``; the supervisor forks anew."""
        if self.max_tasks and self.processed >= self.max_tasks:
            logger.info(
                "child pid %d ran %d tasks (max per child); replacing it",
                os.getpid(),
                self.processed,
            )
            self.stop_event.set()
        elif self.max_memory_kib and _rss_kib() > self.max_memory_kib:
            logger.info(
                "child pid %d uses %d KiB, above the %d KiB per child; replacing it",
                os.getpid(),
                _rss_kib(),
                self.max_memory_kib,
            )
            self.stop_event.set()

    # -- remote control --------------------------------------------------------------------
    def _apply_commands(self) -> None:
        for command in self.commands():
            if isinstance(command, (Revoke, RevokeStamps)):
                self._apply_revoke(command)
            elif isinstance(command, AddConsumer):
                if command.queue not in self.queues:
                    self.queues.append(command.queue)
            elif isinstance(command, CancelConsumer):
                if command.queue in self.queues:
                    self.queues.remove(command.queue)
            elif isinstance(command, SetTimeLimit):
                task = self.app._tasks.get(command.task)
                if task is not None:
                    task.soft_time_limit, task.time_limit = command.soft, command.hard
            elif isinstance(command, SetRateLimit):
                task = self.app._tasks.get(command.task)
                if task is not None:
                    task.rate_limit = command.rate
            elif isinstance(command, SetTaskEvents):
                self.events.enabled = command.enabled

    def _apply_revoke(self, command: Revoke | RevokeStamps) -> None:
        if isinstance(command, Revoke):
            self.revoked.update(command.task_ids)
            return
        for name, values in command.headers.items():
            self.revoked_stamps.setdefault(name, []).extend(values)

    def _report_queue_state(self, *, force: bool = False) -> None:
        """Tell the supervisor which messages wait here (for ``inspect reserved/scheduled``)."""
        now = time.monotonic()
        if now < self._next_queue_report and not force:
            return
        self._next_queue_report = now + QUEUE_REPORT_INTERVAL
        holding = Holding(
            reserved=tuple(
                [_info(d) for d in self._buffer] + [_info(job.delivery) for job in self._ready]
            ),
            scheduled=tuple((eta, _info(d)) for eta, _, d, _ in self._held),
        )
        if holding != self._reported:
            self._reported = holding
            self.report(holding)
            self.flush_reports()

    # -- giving back -----------------------------------------------------------------------
    def _hand_off(self, first: bool) -> float | None:
        """On the hand-off thread, with ``io`` held, while a task has run long: give back
        what waits here (everything unstarted; countdowns only once due) so that an idle
        process runs it. Returns when to look again (monotonic), None if never this run.

        Kept where it was if the broker fails: never both given back and kept here.
        """
        self._give_back_waiting(first, "behind a long task")
        if not self._held:
            return None
        return time.monotonic() + max(0.0, self._held[0][0] - time.time())

    def _hand_off_at_start(self) -> None:
        """On the main thread as a task starts while a sibling waits on an empty broker:
        what waits here goes to that sibling now, and its wait is ended (Redis) rather than
        left to its next poll. Kept here (and given back later) if the broker fails."""
        if not (self._buffer or self._ready or self._held):
            return
        try:
            self._give_back_waiting(False, "to an idle sibling")
        except Exception as exc:
            logger.warning("could not give back the messages behind a task: %s", exc)

    def _give_back_waiting(self, first: bool, why: str) -> None:
        """Give back everything unstarted (countdowns only once due), waking the siblings
        that wait; ``first`` gives back even nothing (it stops a broker that pushes)."""
        self._take_ahead()  # claimed ahead is held here too
        now = time.time()
        due = [entry for entry in self._held if entry[0] <= now]
        pending = (
            [entry[2] for entry in sorted(due)]
            + [job.delivery for job in self._ready]
            + list(self._buffer)
        )
        if not (pending or first):
            return
        wake = self.siblings.waiting_ids() if pending and self.siblings is not None else []
        if wake:
            self.transport.give_back_waking(pending, wake)
        else:
            self.transport.give_back(pending)
        if pending:
            self._ready.clear()
            self._buffer.clear()
            if due:
                self._held = [entry for entry in self._held if entry[0] > now]
                heapq.heapify(self._held)
                self._rate_waiting.difference_update(entry[1] for entry in due)
            self.given_back += len(pending)
            logger.debug(
                "gave back %d message(s) %s (waking %d waiting sibling(s))",
                len(pending),
                why,
                len(wake),
            )
            self._report_queue_state(force=True)

    def _take_ahead_at_stop(self) -> None:
        """What was claimed ahead joins the buffer, given back with the rest unstarted."""
        try:
            self._take_ahead()
        except Exception as exc:
            logger.warning(
                "could not read the claim sent ahead on shutdown: %s; its messages return "
                "when their lease runs out (or when the supervisor recovers this process's)",
                exc,
            )

    def _give_back_unstarted(self) -> None:
        pending = (
            [job.delivery for job in self._ready]
            + list(self._buffer)
            + [entry[2] for entry in sorted(self._held)]
        )
        self._ready.clear()
        self._buffer.clear()
        self._held.clear()
        if not pending:
            return
        try:
            self.transport.give_back(pending)
        except Exception:
            logger.exception(
                "could not give back %d unstarted message(s) on shutdown; they return when "
                "their lease runs out (or when the supervisor recovers this process's)",
                len(pending),
            )

    def _policy(self, task: TaskBase | None) -> lifecycle.Policy:
        name = task.name if task is not None else ""
        policy = self._policies.get(name)
        if policy is None:
            policy = build_policy(self.app.conf, task)
            self._policies[name] = policy
        return policy


def _shown_id(delivery: Delivery) -> str:
    """The task id for a log line, from headers that may be anything; else the tag."""
    try:
        task_id = protocol.peek_id(delivery.message)
    except Exception:  # headers not even a mapping: the tag names the message
        task_id = None
    if task_id is None or len(task_id) > protocol.MAX_IDENT:
        return str(delivery.tag)[: protocol.MAX_IDENT]
    return task_id


__all__ = ["Consumer"]
