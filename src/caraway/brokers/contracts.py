"""The plug-in contracts: what a broker's transport, admin, result backend, mailbox and event
bus each promise. Nothing here knows a task; messages and documents are bytes to them.

What a broker *is* (leases, priorities, durable...) is a :class:`Capabilities` flag; what it
can *do* beyond the hot path is an optional interface that callers test with ``isinstance``
(:class:`Scheduling`, :class:`Revocations`, :class:`GroupStore`, :class:`ChordStore`), or a
plug-in of its own the registry opens (:class:`BeatStore`).
No method raises NotImplementedError to say "cannot".
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caraway.protocol.events import EXCHANGE
from caraway.protocol.message import Message

# -- messages on the broker -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker is; callers branch on these, never on the class."""

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
        """:meth:`Scheduling.park`; raises TypeError when the transport cannot schedule
        (callers check ``isinstance(transport, Scheduling)`` before deciding to park)."""
        transport = self.transport
        if not isinstance(transport, Scheduling):
            raise TypeError(f"{type(transport).__name__} keeps no schedule: cannot park")
        transport.park(self, eta)

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
    """The hot path: one connection that publishes, claims and settles messages.

    Ownership: every fetch names an ``owner`` (``<node>/<pid>``). A live owner renews its
    claims (:meth:`renew`); the supervisor of a dead child calls :meth:`recover` so its
    claims come back at once; claims of an owner that died with its whole node come back
    when their visibility timeout passes (``capabilities.leases``). A transport is used by
    one process; a fork opens its own. Failures raise
    :class:`~caraway.exceptions.BrokerConnectionError` when the broker stays unreachable
    after the transport's retries, :class:`~caraway.exceptions.BrokerError` otherwise.
    """

    capabilities: Capabilities = Capabilities()
    #: set by a worker: called with True just before a fetch blocks on an empty broker and
    #: with False when it wakes, so that a busy sibling process gives it what waits there
    #: (``worker/handoff.py``). A transport that never calls it only loses that speed-up.
    on_wait: Callable[[bool], None] | None = None
    #: messages come unasked (RabbitMQ's prefetch), so a consumer seen waiting may only be
    #: between two pushes: a worker then hands over what waits behind a task once that task
    #: has run a moment, never before it starts (a drain would hand over back and forth)
    pushes = False

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
        """Put ``message`` on ``queue``; returns once the broker has it.

        Not idempotent: publishing again after an error may deliver the message twice.
        """

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """Publish ``(message, queue)`` pairs in order; transports batch them into one
        round trip. Not atomic: after an error, a prefix may have been published."""
        for message, queue in items:
            self.publish(message, queue=queue)

    @abc.abstractmethod
    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        """Claim up to ``limit`` ready messages, blocking up to ``timeout`` s for the first.

        Claims are atomic: a message is either on its queue or recorded as held by
        ``owner``, never only in this process's memory. Due parked messages are promoted
        first. Returns an empty list on timeout; may return fewer than ``limit``.
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
        that can do both in one round trip override. The acks are idempotent, so a retry
        after a lost reply is safe."""
        self.ack_many(acks)
        return self.fetch(queues, limit=limit, timeout=timeout, owner=owner)

    @abc.abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """Forget a delivery for good; idempotent. Cheap: where the broker allows, a frame
        sent rather than a round trip waited for (``capabilities.free_acks``)."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """:meth:`ack` each delivery; transports do it in one round trip."""
        for delivery in deliveries:
            self.ack(delivery)

    @abc.abstractmethod
    def requeue(self, delivery: Delivery) -> None:
        """Give a delivery back to its queue so any consumer can take it, as a redelivery.

        Only while its owner still holds it: a stale owner's requeue does nothing.
        """

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Return deliveries claimed and never started, as though never handed out.

        A worker gives back what it holds but cannot start soon (its process is busy with a
        long task, or stopping), so that an idle consumer takes it. Unlike :meth:`requeue`
        it is no failed attempt: the delivery count is not raised (nor the message marked
        redelivered where the broker lets it be), so giving back never brings a message
        nearer to ``worker_delivery_cap``. The first of ``deliveries`` is served first,
        ahead of what is queued (as far as the broker keeps an order); only what the owner
        still holds goes back, and a retry after a lost reply gives back nothing twice.
        A transport that receives messages unasked (RabbitMQ's prefetch) gives back what it
        received and did not hand out too, and receives no more until the next fetch.
        This default requeues each (counted as a redelivery); the built-in brokers do better.
        """
        for delivery in deliveries:
            self.requeue(delivery)

    def wake_id(self) -> int | None:
        """What a sibling passes to :meth:`give_back_waking` to end this transport's present
        wait at once (Redis: the waiting connection's ``CLIENT ID``); None where a waiting
        consumer learns of a given-back message by itself (RabbitMQ pushes it, PostgreSQL
        notifies) or cannot be woken. Asked only just before a fetch blocks."""
        return None

    def give_back_waking(self, deliveries: Sequence[Delivery], wake: Sequence[int]) -> None:
        """:meth:`give_back`, then end the waits of the consumers whose :meth:`wake_id` are
        ``wake`` (on the same broker), so that they claim what came back now rather than
        at their next poll. Waking one that no longer waits does nothing."""
        self.give_back(deliveries)

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set a delivery aside in the dead-letter store with ``reason``; it is acked.

        The store is read through :class:`QueueAdmin`.
        """

    @abc.abstractmethod
    def renew(self, owner: str) -> None:
        """Extend the claims held by ``owner`` (a heartbeat from a live consumer).

        Idempotent; a broker that holds deliveries for the life of a connection has
        nothing to renew.
        """

    @abc.abstractmethod
    def recover(self, owner: str) -> int:
        """Hand back everything ``owner`` holds (it died); returns how many.

        Idempotent: a second call finds nothing. 0 where the broker itself hands back
        what a closed connection held.
        """

    def close(self) -> None:  # noqa: B027 - nothing to close for some transports
        """Release the connection; idempotent."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Scheduling(abc.ABC):
    """A transport that keeps messages due later on the broker (every built-in one does).

    Callers test ``isinstance(transport, Scheduling)`` before parking.
    """

    @abc.abstractmethod
    def park(self, delivery: Delivery, eta: float) -> None:
        """Move a held delivery to the broker's schedule until ``eta`` (unix time).

        Parking is not a delivery attempt: the promoted message arrives as a first
        delivery. A past ``eta`` makes it ready at once; a delivery its owner no longer
        holds is left alone.
        """

    @abc.abstractmethod
    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        """Publish straight into the broker's schedule, due at ``eta`` (unix time).

        For fleets that are all caraway (``producer_parks_eta``): a Celery worker only
        sees the message once it is due. Not idempotent, as :meth:`Transport.publish`.
        """


class FetchAhead(abc.ABC):
    """A transport whose claim can be sent now and its reply read later (Redis).

    A one-slot consumer claims its next batch as the last task in hand starts, so the
    claim's round trip (the broker running its script) overlaps the task instead of
    following it: in a drain a child waited on that round trip for 40% of its time.
    """

    @abc.abstractmethod
    def begin_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], *, limit: int, owner: str
    ) -> Callable[[], list[Delivery]]:
        """Send ``acks`` and a claim of up to ``limit`` messages without waiting for a
        message (:meth:`Transport.ack_then_fetch` with no timeout); the returned function
        reads the reply (once). What it claimed is held from the moment the broker ran the
        claim, read or not: a consumer reads it before it gives back or stops."""


class Fanout(abc.ABC):
    """A transport that copies a message to every queue bound to a fanout exchange (kombu's
    ``Broadcast``). Callers test ``isinstance(transport, Fanout)``."""

    @abc.abstractmethod
    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        """Put a copy of ``message`` on each queue bound to ``exchange`` now (by
        :meth:`QueueAdmin.bind`); with none bound, the message is dropped (AMQP's rule)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue bound to an exchange with a binding key (kombu's ``Queue`` declaration)."""

    queue: str
    key: str


class Routing(abc.ABC):
    """A transport that routes through direct and topic exchanges: a message goes to every
    queue bound to the exchange whose binding key matches its routing key, as RabbitMQ
    routes. Callers test ``isinstance(transport, Routing)``; a transport without it
    publishes to the queue the router chose."""

    @abc.abstractmethod
    def publish_routed(
        self,
        message: Message,
        *,
        exchange: str,
        exchange_type: str,
        routing_key: str,
        declare: Sequence[Binding] = (),
    ) -> None:
        """Bind ``declare`` to ``exchange`` first (Celery's producer declares the queue it
        routes to, so the message is not lost before a worker binds it; once per binding per
        connection), then put a copy of ``message`` on each matching queue, each queue once.
        With no binding matching, the message is dropped (AMQP's rule)."""


def binding_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """AMQP's rule: a direct binding matches an equal key, a topic binding by words."""
    if exchange_type == "topic":
        return topic_matches(binding_key, routing_key)
    return binding_key == routing_key


# -- administration --------------------------------------------------------------------------


class QueueAdmin(abc.ABC):
    """Administration of a broker's queues and dead letters, off the hot path (CLI, remote
    control, the supervisor, the dashboard). Opens a connection of its own, lazily.

    Failures raise BrokerError (BrokerConnectionError when the broker is unreachable).
    """

    #: :meth:`scheduled` can list the broker's schedule (False on RabbitMQ, whose delay
    #: queues cannot be read without taking the messages out of them)
    lists_schedule: bool = True

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abc.abstractmethod
    def size(self, queue: str) -> int:
        """Count the ready messages on ``queue`` (0 for a queue that does not exist)."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message on ``queue``; returns how many.

        Claimed and parked messages are kept.
        """

    def unacked(self, queues: Sequence[str]) -> dict[str, int] | None:
        """How many messages of each of ``queues`` consumers hold and have not acked
        (claimed, prefetched or running); None where the broker cannot count them without
        taking messages (RabbitMQ: only its management API knows). The dashboard's
        queue page shows it beside :meth:`size`."""
        return None

    @abc.abstractmethod
    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        """Parked messages, soonest first, as ``(eta, queue, message)``.

        Always empty where the broker cannot list its schedule (``lists_schedule``).
        """

    @abc.abstractmethod
    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters first; reading leaves them in the store."""

    @abc.abstractmethod
    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        """Publish dead letters back to their queues and drop them from the store;
        all of them when ``ids`` is None. Unknown ids are skipped; returns how many."""

    @abc.abstractmethod
    def purge_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        """Delete the dead letters ``ids`` (every one when None); unknown ids are skipped;
        returns how many. (``ids`` is what the dashboard's discard needs: one or many.)"""

    def declare(self, queue: str) -> None:  # noqa: B027 - most brokers declare nothing
        """Make ``queue`` exist with the entities Celery declares for it; idempotent.

        Brokers whose queues exist once written to have nothing to declare.
        """

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
        """Declare ``queue`` and bind it to ``exchange`` (of ``exchange_type``) with
        ``routing_key``; idempotent. Brokers that route by queue name alone record only
        what a fanout publish needs; the default declares the queue."""
        self.declare(queue)

    def unbind(self, queue: str, *, exchange: str, routing_key: str = "") -> None:  # noqa: B027
        """Undo :meth:`bind` (a node's broadcast queue at shutdown); idempotent."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some admins
        """Release the connection; idempotent."""


class Revocations(abc.ABC):
    """An admin that records revoked task ids on the broker, so a node that was away (or
    starts later) still refuses them. Callers test ``isinstance(admin, Revocations)``."""

    @abc.abstractmethod
    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        """Remember ``task_ids`` as revoked for ``expires`` seconds; idempotent (a second
        record only moves the expiry). Expired ids are dropped along the way."""

    @abc.abstractmethod
    def revoked_ids(self) -> list[str]:
        """The revoked ids recorded and not yet expired, in no particular order."""


class Migrations(abc.ABC):
    """An admin or backend whose store has a schema to create or upgrade (SQL tables):
    ``caraway migrate`` runs it ahead of deployment. Callers test ``isinstance``."""

    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Create or upgrade the schema now; idempotent. Returns what was done (empty when
        it was up to date)."""

    @abc.abstractmethod
    def migration_sql(self) -> list[str]:
        """The statements of a fresh schema, for a DBA to read or run by hand."""


# -- result backends -------------------------------------------------------------------------


class Backend(abc.ABC):
    """One process's handle on a result store: documents in, documents out.

    Each task's result document is bytes (built and read by ``caraway.protocol.results``),
    keyed by task id, with an expiry. The one thing a store knows of a document is its
    ``state``, passed alongside: a final state is never overwritten by a late or
    duplicate write. Forked children open their own. Failures raise
    :class:`~caraway.exceptions.BackendError` (the rpc:// store: BrokerError for the
    broker it rides on).
    """

    #: any process can read a result (False for rpc://, where only the caller can)
    shared: bool = True
    #: :meth:`load` returns the very bytes stored; False where the store keeps a
    #: document's fields in columns (SQL, in Celery's table layout) and builds an equal
    #: document back (same fields and values, in the protocol's field order)
    keeps_bytes: bool = True

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
        """Write ``document`` for ``task_id`` and wake its waiters; True when written.

        Skipped (False) when the stored state is already final (SUCCESS, FAILURE,
        REVOKED), so a redelivered duplicate cannot clobber an outcome: idempotent for a
        final state. ``expires`` is seconds from now, or None to keep it forever.
        ``reply_to`` is the calling client's reply queue (the message's ``reply_to``),
        which only stores that send results back to the caller (rpc://) need.
        """

    def store_many(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> None:
        """:meth:`store` each ``(task_id, document, state, reply_to)``; stores do it in one
        round trip."""
        for task_id, document, state, reply_to in items:
            self.store(task_id, document, state=state, expires=expires, reply_to=reply_to)

    def store_many_begin(
        self, items: Sequence[tuple[str, bytes, str, str | None]], *, expires: float | None
    ) -> Callable[[], None]:
        """Start :meth:`store_many`; the returned function blocks until it is done and
        raises what it raised.

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
        """:meth:`load` for each id, in the order asked."""
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

    async def await_ready(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        """:meth:`wait` for a coroutine (``await result``): stores that can be woken on an
        event loop override it (Redis pub/sub, SQLite's change counter); this default runs
        :meth:`wait` on a worker thread so the loop is never blocked."""
        return await asyncio.to_thread(self.wait, task_id, until=until, timeout=timeout)

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the stored document; idempotent."""

    def cleanup(self) -> int:
        """Delete expired documents where the store does not expire them itself; returns
        how many."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections; idempotent."""


def _done() -> None:
    """A store that finished before it was waited for."""


class GroupStore(abc.ABC):
    """A backend that keeps saved group results (``GroupResult.save()``/``restore``).

    Callers test ``isinstance(backend, GroupStore)``.
    """

    @abc.abstractmethod
    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        """Store (or replace) the group's document; ``expires`` as :meth:`Backend.store`."""

    @abc.abstractmethod
    def load_group(self, group_id: str) -> bytes | None:
        """The saved document, or None (never saved, forgotten or expired)."""

    @abc.abstractmethod
    def forget_group(self, group_id: str) -> None:
        """Delete the saved document; idempotent."""


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One finished header task of a chord, to be counted by :meth:`ChordStore.chord_join_many`."""

    group_id: str
    task_id: str
    #: the task's ``group_index``; None sorts after every index
    index: int | None
    state: str
    #: the task's result (or exception document) already encoded as JSON
    result_json: str


class ChordStore(abc.ABC):
    """A backend that counts chord joins atomically (a Lua script, a transaction, a lock).

    Exactly one caller completes each chord, across caraway and (on Redis) Celery 5.7
    workers. Members are Celery's ``[1, task_id, state, result]``, encoded by
    :func:`caraway.protocol.results.chord_member`. Callers test ``isinstance(backend,
    ChordStore)``.
    """

    @abc.abstractmethod
    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        """Record the header size; called before the chord's last header task is published.

        Idempotent. Header tasks that finished before it are counted all the same.
        """

    @abc.abstractmethod
    def chord_extend(self, group_id: str, count: int) -> None:
        """Expect ``count`` more header results (a header task was replaced by more tasks)."""

    @abc.abstractmethod
    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        """Count each part (one round trip where the store can); one answer per part.

        An answer is None, or for the one part that completes its chord the ordered
        members (``group_index`` order). That caller must publish the body (or fail it)
        and then call :meth:`chord_done`. A part counted before (a redelivered header
        task) counts once. Counters expire ``expires`` seconds after the last join.
        """

    def chord_join_many_begin(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> Callable[[], list[list[Any] | None]]:
        """Start :meth:`chord_join_many`; the returned function blocks until it is done
        and gives its answers (or raises what it raised).

        Sent after the batch's results (:meth:`Backend.store_many_begin`) on the same
        connection, the counts travel with them while the worker claims its next batch;
        stores that cannot overlap a round trip count here and return the answers.
        """
        answers = self.chord_join_many(parts, expires=expires)
        return lambda: answers

    @abc.abstractmethod
    def chord_done(self, group_id: str) -> bool:
        """Drop the chord's counters and mark it done, so late duplicates stop at once.

        True only for the caller that completed the chord.
        """


# -- periodic tasks --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BeatLeader:
    """The beat instance that holds the lease."""

    #: unique per beat process (``<node>/<pid>/<random>``): a restart is a new holder
    holder: str
    #: the node name users see (``w1@host`` for ``worker -B``, ``celerybeat@host``)
    node: str
    #: unix times: when it took the lease, and when it last renewed it
    since: float
    renewed: float


@dataclass(frozen=True, slots=True)
class BeatRun:
    """One run sent (or about to be): its entry's scheduled instant and the task id."""

    scheduled_ms: int
    task_id: str
    holder: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class BeatEntryState:
    """What the broker remembers of one entry."""

    #: the latest scheduled instant consumed (sent or skipped), unix milliseconds; a new
    #: entry's is the moment beat first saw it
    last_ms: int
    #: runs sent so far
    count: int = 0
    last_run: BeatRun | None = None


@dataclass(frozen=True, slots=True)
class BeatState:
    """Everything a beat instance or a reader needs: who leads, where each entry is, and
    the entries added at runtime (JSON specs, built and read by ``caraway.schedules``)."""

    leader: BeatLeader | None = None
    entries: dict[str, BeatEntryState] = field(default_factory=dict)
    runtime: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BeatAdvance:
    """Move an entry from ``expected_ms`` (None: never seen) to ``to_ms``, claiming ``runs``."""

    name: str
    expected_ms: int | None
    to_ms: int
    runs: tuple[BeatRun, ...] = ()


class BeatStore(abc.ABC):
    """The broker side of periodic tasks for one schedule (``namespace``): a leader lease,
    each entry's state, and entries added at runtime. Opened by the registry
    (``open_beat_store``) for brokers whose folder has one.

    Any number of beat instances open one each; at most one leads at a time, and a
    standby calling :meth:`lead` takes over within ``lease_seconds`` of the leader's death
    (sooner where the broker sees a connection die). :meth:`advance` is the fence: it
    writes only for the current leader and only from the state the caller read, and each
    run it claims is keyed by entry and scheduled instant, so a run can never be claimed
    twice, whatever the timing of a failover. A beat sends a run only after claiming it:
    a crash between the two loses that one run rather than doubling it.

    Methods raise BrokerError when the broker fails; a leader that saw one must call
    :meth:`lead` again before it advances anything.
    """

    def __init__(
        self,
        url: str,
        *,
        options: dict[str, Any] | None = None,
        namespace: str,
        holder: str,
        node: str,
        lease_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.namespace = namespace
        self.holder = holder
        self.node = node
        self.lease_seconds = lease_seconds

    @abc.abstractmethod
    def lead(self) -> bool:
        """Take the lease if nobody holds it, or renew it if this holder does; True while
        this holder leads. Standbys call it to take over; the leader calls it at least
        every ``lease_seconds / 3``."""

    @abc.abstractmethod
    def resign(self) -> None:
        """Give the lease up (a standby can take it at once); idempotent."""

    @abc.abstractmethod
    def state(self) -> BeatState:
        """The leader, every entry's state and the runtime entries, as the broker has them.

        Readers (``caraway inspect beat``, the dashboard) call it too; where only the
        leader can read the state (RabbitMQ), others get the leader's latest snapshot.
        """

    @abc.abstractmethod
    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        """Apply each change, atomically on its own, only while this holder leads, only if
        the entry's ``last_ms`` is still ``expected_ms`` and no run in it was claimed
        before. Returns, per change, whether it was applied (all False for a holder that
        does not lead)."""

    @abc.abstractmethod
    def forget(self, names: Sequence[str]) -> None:
        """Drop the state of entries that no longer exist (only while this holder leads)."""

    @abc.abstractmethod
    def put_entry(self, name: str, spec: bytes) -> None:
        """Store a runtime entry (JSON spec), replacing one of that name; any process may
        call it. The leader picks it up within a tick."""

    @abc.abstractmethod
    def remove_entry(self, name: str) -> bool:
        """Delete a runtime entry; whether one of that name was known."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some stores
        """Release the connection (a leader that did not resign loses its lease when the
        broker notices, or when it expires)."""


# -- remote control --------------------------------------------------------------------------

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
    """One connection's view of the pidbox (docs/design/protocol.md §6): a node side and a client
    side. It moves pidbox messages and never reads a command.

    A node calls :meth:`listen` once, then :meth:`receive` and :meth:`reply`; a client
    calls :meth:`open_replies`, :meth:`publish`, :meth:`next_reply` until its deadline,
    then :meth:`close_replies`. Broadcasts reach only nodes listening at that moment
    (Celery's rule on every broker). One object is used by one thread at a time; failures
    raise BrokerError.
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
        """The broadcasts that arrived since the last call; never blocks (a worker polls
        it from its main loop)."""

    def fileno(self) -> int | None:
        """A descriptor that turns readable when a broadcast may have arrived, for the
        worker's loop to wait on beside its children (a request is then answered at once,
        not at the next poll); None where the mailbox can only be polled."""
        return None

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
        """Make the reply queue for ``oid`` exist before a request names it; idempotent."""

    @abc.abstractmethod
    def next_reply(self, oid: str, timeout: float) -> Message | None:
        """The next reply for ``oid``, blocking up to ``timeout`` s; None on timeout."""

    def close_replies(self, oid: str) -> None:  # noqa: B027 - optional clean-up
        """Forget ``oid``'s reply queue; replies arriving later are dropped."""

    def close(self) -> None:  # noqa: B027 - nothing to close for some mailboxes
        """Stop listening and release the connection."""


# -- events ----------------------------------------------------------------------------------


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
    """One connection's view of the event exchange; it moves event messages built by
    ``caraway.protocol.events`` and never reads one.

    Events are fire-and-forget on every broker, as in Celery: a receiver sees only what
    was sent while it was subscribed, and a slow receiver loses events older than
    ``queue_ttl``. Senders call :meth:`publish`; receivers call :meth:`subscribe` once,
    then :meth:`receive` in a loop. Failures raise BrokerError; after one, the next call
    reconnects (a receiver subscribes again). One object is used by one thread at a time.
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
        self._prepare()

    def _prepare(self) -> None:  # noqa: B027 - a hook: most buses keep some state
        """Set up what the bus keeps (no I/O: it connects on first use)."""

    @abc.abstractmethod
    def publish(self, message: Message, *, routing_key: str) -> None:
        """Send ``message`` to everyone subscribed now; nobody subscribed = dropped."""

    @abc.abstractmethod
    def subscribe(self, binding: str = "#") -> None:
        """Start receiving events whose routing key matches ``binding`` (AMQP topic syntax)."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> list[Message]:
        """The messages that arrived, blocking up to ``timeout`` s for the first one."""

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
