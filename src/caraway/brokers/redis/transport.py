"""Redis broker transport with Celery 5.7/kombu 5.7's key layout (docs/design/protocol.md §2).

Queues are lists of kombu JSON envelopes (``LPUSH`` to publish, consumed from the right),
one list per priority bucket (``<queue>``, ``<queue>\\x06\\x163`` ...; lower bucket first).
Delivery guarantee: at least once. A claim moves a message atomically (Lua) from its list
into kombu's ``unacked``/``unacked_index`` plus caraway's owner bookkeeping, so a message is
always in Redis; Celery's visibility sweep and ours restore each other's stale claims.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import (
    Binding,
    Capabilities,
    Delivery,
    Fanout,
    FetchAhead,
    Routing,
    Scheduling,
    Transport,
)
from caraway.brokers.redis import scripts as lua
from caraway.brokers.redis.keys import (
    Command,
    Keys,
    bound_queue,
    fanout_key,
    kombu_matches,
    priority_of,
)
from caraway.clients.redis import (
    RETRYABLE,
    HeldConnection,
    KeyWatch,
    WatchUnsupported,
    connect,
    parse_redis_url,
    reply_spin_option,
    retrying,
    text,
    to_int,
    to_list,
)
from caraway.exceptions import BrokerConnectionError, BrokerError, ProtocolError
from caraway.protocol.envelope import mark_redelivered, pack, unpack
from caraway.protocol.message import Message
from caraway.utils.ids import new_id

T = TypeVar("T")

logger = logging.getLogger("caraway.brokers.redis.transport")

#: how many due parked messages one claim promotes; the rest follow on the next fetch
_PROMOTE_BATCH = 100
#: a claim this soon after an empty one from the same lists is skipped by a fetch that may
#: wait: it would find what the last found (a message that came meanwhile to the first list
#: ends the wait at once; one on another list or bucket waits at most polling_interval)
BACK_TO_BACK = 0.02
#: a fetch from several lists, on a connection that found messages in the last
#: ACTIVE_WINDOW s, waits at most ACTIVE_POLL s on its first list before claiming them all
#: again (Redis can wait without taking on one list only); an idle worker goes back to
#: polling_interval, so an idle fleet stays cheap
ACTIVE_WINDOW = 5.0
ACTIVE_POLL = 0.02
#: an idle fetch that watches its lists (KeyWatch) reads them again at least this often (s):
#: a connection gone silent without an error is noticed, and replaced, within it
WATCH_REARM = 30.0
_SWEEP_BATCH = 1000


@dataclass(frozen=True, slots=True)
class _Held:
    """What a Redis delivery needs to be acked, requeued, parked or dead-lettered."""

    raw: bytes
    owner: str
    key: str  # unprefixed list key the message was claimed from


class RedisTransport(Transport, Scheduling, Fanout, Routing, FetchAhead):
    """Celery-compatible Redis broker (``redis://``, ``rediss://``, ``redis+socket://``, sentinel).

    ``options`` are Celery's ``broker_transport_options``: ``visibility_timeout`` (3600 s),
    ``global_keyprefix``, ``priority_steps``, ``sep``, ``socket_timeout``,
    ``socket_connect_timeout``, ``health_check_interval``, ``ssl`` (``broker_use_ssl``),
    ``master_name`` (sentinel), plus caraway's ``polling_interval`` (1 s, the longest an idle
    fetch goes without checking every queue, priority bucket and the schedule) and
    ``max_retries`` (3; connection errors are retried with backoff, then raised as
    :class:`~caraway.exceptions.BrokerConnectionError` so the worker can reconnect) and
    ``reply_spin`` (0.0002 s: how long a publish, claim or ack polls for its reply before
    sleeping on it; 0 turns it off; see :class:`~caraway.clients.redis.ReplySpin`).

    Latency: an idle fetch watches every list it claims from and the schedule of parked
    messages (:class:`~caraway.clients.redis.KeyWatch`: Redis tells a connection that read
    a key when it changes), so a message on any queue or priority bucket, or a sibling's
    give-back, ends the wait at once, a parked message is promoted when it falls due, and
    an idle worker sends no command while nothing changes. Where the server or connection
    cannot (RESP2, Redis < 6, an ACL without ``CLIENT``) the fetch polls: it blocks on one
    list only (the one claims found most messages on lately; at first bucket 0 of the first
    queue, rotated between calls), on a connection of its own whose wait a sibling's
    :meth:`give_back_waking` ends; a message arriving on another queue or priority bucket,
    or a parked message falling due, is picked up within ``polling_interval``, and within
    ``ACTIVE_POLL`` while the connection found messages in the last ``ACTIVE_WINDOW`` s
    (a worker of several queues in use: a short task sent to one queue must not wait a
    second while the worker blocks on another).
    """

    capabilities = Capabilities(
        leases=True, priorities=True, priority_low_first=True, delivery_count=True
    )

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        self.visibility_timeout = float(opts.get("visibility_timeout", 3600))
        self.keys = Keys.from_options(opts)
        self.prefix = self.keys.prefix
        self.polling_interval = float(opts.get("polling_interval", 1.0))
        #: (queues, when, next due) of this connection's last claim that found nothing
        self._empty_claim: tuple[tuple[str, ...], float, float | None] | None = None
        #: when a claim on this connection last found messages (monotonic)
        self._found_at = float("-inf")
        self.max_retries = int(opts.get("max_retries", 3))
        self.sweep_interval = float(
            opts.get("visibility_sweep_interval", min(60.0, max(1.0, self.visibility_timeout / 4)))
        )
        self._mutex_expire_ms = int(float(opts.get("unacked_mutex_expire", 300)) * 1000)
        self._where = parse_redis_url(url).redacted()
        self.client = connect(url, opts)
        self._held = HeldConnection(self.client, reply_spin=reply_spin_option(opts))
        self._claim = self._held.script(lua.CLAIM)
        self._ack = self._held.script(lua.ACK)
        self._restore = self.client.register_script(lua.RESTORE)
        self._give_back = self._held.script(lua.GIVE_BACK)
        self._park = self.client.register_script(lua.PARK)
        self._bury = self.client.register_script(lua.DEAD_LETTER)
        self._renew = self.client.register_script(lua.RENEW)
        self._unlock = self.client.register_script(lua.RELEASE_MUTEX)
        self._declared: set[tuple[str, str, str]] = set()
        #: the prefixed list of each (queue, priority) publish_packed pushed to
        self._list_keys: dict[tuple[str, int], str] = {}
        self._doubtful: set[tuple[str, str]] = set()  # (owner, fetch id) whose reply was lost
        self._next_sweep = 0.0
        self._rotation = 0
        self._keys_by_order: dict[tuple[tuple[str, ...], int], list[str]] = {}
        #: how many messages claims found on each list lately (halved now and then), and
        #: the list with most: the one an idle fetch blocks on
        self._found_on: dict[str, int] = {}
        self._found_count = 0
        self._busiest: str | None = None
        #: the connection a fetch blocks on (its own, so that its CLIENT ID stays put) and
        #: that id, for a sibling's give-back to end the wait (None until asked)
        self._waiter: redis.Redis | None = None
        self._waiter_id: int | None = None
        #: what an idle fetch waits on (None where the server cannot: it polls instead)
        self._watch: KeyWatch | None = KeyWatch(self.client)
        #: armings in this fetch that found a list holding messages the claim before did
        #: not (counted per fetch: a send racing each of many fetches is no loop)
        self._restless = 0
        socket_timeout = opts.get("socket_timeout")
        if socket_timeout:
            # a blocking read must return before the socket gives up on it
            self.polling_interval = min(self.polling_interval, float(socket_timeout) * 0.8)

    # -- retries -----------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying connection errors with backoff; map redis errors to ours."""
        return retrying(what, fn, where=self._where, retries=self.max_retries)

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
        """Publish ``(message, queue, exchange, routing_key)`` items in one round trip.

        Queues not yet declared by this transport get their binding-table entries in the
        same MULTI (section 2.4), as Celery 5.7's publisher writes them. One message to a
        declared queue is a bare LPUSH: there is nothing for a MULTI to make atomic.
        """
        keys = self.keys
        commands: list[Command] = []
        declared: list[tuple[str, str, str]] = []
        for message, queue, given, routing_key in items:
            exchange, rkey, priority = self.envelope_route(
                message, queue=queue, exchange=given, routing_key=routing_key
            )
            declared += self._declare_into(commands, queue, exchange, rkey)
            raw = pack(
                message,
                exchange=exchange,
                routing_key=rkey,
                delivery_tag=new_id(),
                priority=priority,
            )
            commands.append(("LPUSH", keys.k(keys.queue_key(queue, priority)), raw))
        self._send("publish", commands, transaction=len(commands) > 1)
        self._declared.update(declared)

    @staticmethod
    def envelope_route(
        message: Message, *, queue: str, exchange: str = "", routing_key: str | None = None
    ) -> tuple[str, str, int]:
        """The exchange, routing key and priority :meth:`publish` writes into ``message``'s
        envelope (what a publisher packing it ahead, for :meth:`publish_packed`, uses)."""
        return exchange, routing_key or queue, priority_of(message)

    def publish_packed(
        self, raw: bytes, *, queue: str, exchange: str, routing_key: str, priority: int
    ) -> None:
        """:meth:`publish` for an envelope already packed (``protocol.envelope.pack`` or a
        ``Template`` of it) with a fresh UUID4 delivery tag and what :meth:`envelope_route`
        gave: the same commands, without packing again."""
        where = (queue, priority)
        key = self._list_keys.get(where)
        if key is None:
            key = self._list_keys[where] = self.keys.k(self.keys.queue_key(queue, priority))
        if (exchange or queue, routing_key if exchange else queue, queue) in self._declared:
            self._send("publish", [("LPUSH", key, raw)], transaction=False)
            return
        commands: list[Command] = []
        declared = self._declare_into(commands, queue, exchange, routing_key)
        commands.append(("LPUSH", key, raw))
        self._send("publish", commands, transaction=True)
        self._declared.update(declared)

    def publish_fanout(self, message: Message, *, exchange: str) -> None:
        """A copy on each node queue bound to ``exchange`` (keys.fanout_key): two round
        trips, the set's members then the pushes."""
        members = self._send(
            "fanout", [("SMEMBERS", fanout_key(self.keys, exchange))], transaction=False
        )
        queues = sorted(text(member) for member in to_list(members[0]))
        if queues:
            self.publish_batch([(message, queue, exchange, "") for queue in queues])

    def publish_routed(
        self,
        message: Message,
        *,
        exchange: str,
        exchange_type: str,
        routing_key: str,
        declare: Sequence[Binding] = (),
    ) -> None:
        """kombu's routing: the exchange's binding table (``_kombu.binding.<exchange>``, what
        Celery's workers and producers write) read with the bindings to declare, then a copy
        pushed to each matching queue. Each copy's delivery tag ends with ``>`` and its queue,
        so restoring it puts it back on that queue (kombu's restore would copy it to every
        matching one)."""
        commands: list[Command] = []
        declared: list[tuple[str, str, str]] = []
        for bound in declare:
            entry = (exchange, bound.key, bound.queue)
            if entry not in self._declared:
                commands += self.keys.binding(bound.queue, exchange, bound.key, exchange_type)
                declared.append(entry)
        commands.append(("SMEMBERS", self.keys.k(f"_kombu.binding.{exchange}")))
        replies = self._send("route", commands, transaction=len(commands) > 1)
        self._declared.update(declared)
        queues = self._matching(replies[-1], exchange_type, routing_key)
        priority = priority_of(message)
        pushes: list[Command] = []
        for queue in queues:
            tag = f"{new_id()}>{queue}"
            raw = pack(
                message,
                exchange=exchange,
                routing_key=routing_key,
                delivery_tag=tag,
                priority=priority,
            )
            pushes.append(("LPUSH", self.keys.k(self.keys.queue_key(queue, priority)), raw))
        if pushes:
            self._send("publish", pushes, transaction=len(pushes) > 1)

    def _matching(self, members: Any, exchange_type: str, routing_key: str) -> list[str]:
        """The queues of binding-table ``members`` that ``routing_key`` reaches, each once."""
        queues = set()
        for member in to_list(members):
            key, _pattern, queue = text(member).split(self.keys.sep, 2)
            if queue and kombu_matches(exchange_type, key, routing_key):
                queues.add(queue)
        return sorted(queues)

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        """Publish straight into ``caraway.schedule`` (the zset :meth:`park` uses), due at
        ``eta``; a claim promotes it to its list once due, as it does a parked delivery."""
        priority = priority_of(message)
        key = self.keys.queue_key(queue, priority)
        raw = pack(
            message,
            exchange="",
            routing_key=queue,
            delivery_tag=new_id(),
            priority=priority,
        )
        commands: list[Command] = []
        declared = self._declare_into(commands, queue, "", queue)
        member = f"{len(key.encode())}:{key}".encode() + raw
        commands.append(("ZADD", self.keys.schedule, repr(float(eta)), member))
        self._send("publish_parked", commands, transaction=len(commands) > 1)
        self._declared.update(declared)

    def _send(self, what: str, commands: list[Command], *, transaction: bool) -> list[Any]:
        """Run ``commands`` in one round trip (in a MULTI when ``transaction``); raw replies."""
        return self._call(what, lambda: self._held.run(commands, transaction=transaction))

    def _declare_into(
        self, commands: list[Command], queue: str, exchange: str, routing_key: str
    ) -> list[tuple[str, str, str]]:
        entry = (exchange or queue, routing_key if exchange else queue, queue)
        if entry in self._declared:
            return []
        commands += self.keys.binding(queue, exchange, routing_key)
        return [entry]

    def declare(self, queue: str, *, exchange: str = "", routing_key: str | None = None) -> None:
        """Write ``queue``'s binding-table entries (once per queue per transport)."""
        commands: list[Command] = []
        new = self._declare_into(commands, queue, exchange, routing_key or queue)
        if new:
            self._send("declare", commands, transaction=True)
            self._declared.update(new)

    # -- fetching ----------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        return self.ack_then_fetch((), queues, limit=limit, timeout=timeout, owner=owner)

    def ack_then_fetch(
        self,
        acks: Sequence[Delivery],
        queues: Sequence[str],
        *,
        limit: int,
        timeout: float,
        owner: str,
    ) -> list[Delivery]:
        """The acks travel in the claim's round trip (its pipeline, ahead of the script)."""
        if not queues or limit <= 0:
            self.ack_many(acks)
            return []
        deadline = time.monotonic() + max(0.0, timeout)
        self._restless = 0
        order, keys, before, claimed_empty = self._prepare_claim(acks, queues)
        just_claimed = self._empty_claim
        if (
            timeout > 0
            and not before
            and just_claimed is not None
            and claimed_empty
            and (
                time.monotonic() - just_claimed[1] < BACK_TO_BACK
                or self._quiet(order, just_claimed[2])
            )
        ):
            # these lists were claimed from a moment ago and were empty (an idle worker's
            # loop ends one wait and starts the next), or nothing changed in them since
            # (watched): wait first instead of claiming again
            found: list[Delivery] = []
            next_due = just_claimed[2]
        else:
            found, next_due = self._claim_once(
                keys, limit, owner, before, expect_empty=claimed_empty
            )
        poll = self.polling_interval
        if len(keys) > 1 and time.monotonic() - self._found_at < ACTIVE_WINDOW:
            poll = min(poll, ACTIVE_POLL)
        while True:
            if self._claimed(order, found, next_due):
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return found
            armed = self._arm(order, keys, next_due)
            if armed is not None:
                changed, next_due = armed
                if not changed:
                    changed = self._wait_watched(remaining, next_due)
                if changed or _due(next_due):
                    found, next_due = self._claim_once(keys, limit, owner, [])
                continue  # else the fetch's time is up, nothing changed: no claim
            arrived = self._wait_polled(keys, min(remaining, poll), next_due)
            found, next_due = self._claim_once(keys, limit, owner, [], expect_empty=not arrived)

    def begin_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], *, limit: int, owner: str
    ) -> Callable[[], list[Delivery]]:
        """The acks and the claim go now, in one write; the reply is read when asked for.
        A reply lost with the connection is handled as in a claim that waits for it: the
        claim is released by its fetch id, then the acks and a claim go again."""
        if not queues or limit <= 0:
            self.ack_many(acks)
            return list
        order, keys, before, claimed_empty = self._prepare_claim(acks, queues)
        if self._doubtful:
            self._call("fetch", self._release_doubtful)
        fetch_id = uuid.uuid4().hex
        claim = self._claim_command(keys, limit, owner, fetch_id, claimed_empty)
        try:
            read = self._held.send([*before, claim], raise_errors=False)
        except RETRYABLE:
            self._doubtful.add((owner, fetch_id))  # it may have gone out before the error
            found = self.ack_then_fetch(acks, queues, limit=limit, timeout=0.0, owner=owner)
            return lambda: found
        except redis.RedisError as exc:
            raise BrokerError(f"Redis fetch failed at {self._where}: {exc}") from exc

        def finish() -> list[Delivery]:
            try:
                reply = self._claim_reply(read(), owner, fetch_id)
            except RETRYABLE:
                self._doubtful.add((owner, fetch_id))
                return self.ack_then_fetch(acks, queues, limit=limit, timeout=0.0, owner=owner)
            except redis.RedisError as exc:
                raise BrokerError(f"Redis fetch failed at {self._where}: {exc}") from exc
            found, next_due = self._deliveries(reply, owner)
            self._claimed(order, found, next_due)
            return found

        return finish

    def _prepare_claim(
        self, acks: Sequence[Delivery], queues: Sequence[str]
    ) -> tuple[tuple[str, ...], list[str], list[Command], bool]:
        """What a claim from ``queues`` needs: their order, the lists in claim order (the
        first list rotates between claims), the acks' commands, and whether the last claim
        from the same lists found them empty."""
        for queue in queues:
            self.declare(queue)
        self._maybe_sweep()
        shift = self._rotation % len(queues)
        self._rotation += 1
        order = tuple(queues)
        just_claimed = self._empty_claim
        claimed_empty = just_claimed is not None and just_claimed[0] == order
        return order, self._claim_keys(order, shift), self._ack_commands(acks), claimed_empty

    def _claimed(
        self, order: tuple[str, ...], found: list[Delivery], next_due: float | None
    ) -> bool:
        """Note what a claim from ``order`` found; True if anything."""
        now = time.monotonic()
        if found:
            self._empty_claim, self._found_at = None, now
            if self._watch is not None:
                self._watch.disarm()  # the next arming reads past the pushes of this claim
            self._count_found(found)
            return True
        self._empty_claim = (order, now, next_due)
        return False

    def _wait_polled(self, keys: list[str], wait: float, next_due: float | None) -> bool:
        """Block on one of ``keys`` (no watch here) up to ``wait`` s or ``next_due``; True if
        a message came to it."""
        if next_due is not None:
            wait = min(wait, max(0.0, next_due - time.time()))
        if wait < 0.01:  # 0 would block forever in Redis
            return False
        busiest = self._busiest
        watch = self.on_wait
        if watch is not None:
            watch(True)
        try:
            return self._block(busiest if busiest in keys else keys[0], wait)
        finally:
            if watch is not None:
                watch(False)

    def _quiet(self, order: tuple[str, ...], next_due: float | None) -> bool:
        """Whether the lists of ``order`` are watched and nothing changed in them since
        their last (empty) claim: the fetch need not claim before it waits."""
        watch = self._watch
        return (
            watch is not None
            and watch.watching(order, WATCH_REARM)
            and not _due(next_due)
            and not watch.changed(0)
        )

    def _arm(
        self, order: tuple[str, ...], keys: list[str], next_due: float | None
    ) -> tuple[bool, float | None] | None:
        """Watch ``keys`` and the schedule for an idle wait: (whether a list holds messages
        after all, the soonest due time), or None to poll instead (no watch here)."""
        watch = self._watch
        if watch is None:
            return None
        if watch.watching(order, WATCH_REARM):
            return False, next_due
        lists = [self.keys.k(k) for k in keys] if self.prefix else keys
        try:
            count, first = watch.arm(lists, self.keys.schedule, armed_for=order)
        except WatchUnsupported as exc:
            logger.info("idle fetches at %s poll every list: %s", self._where, exc)
            self._watch = None
            return None
        except redis.RedisError as exc:  # poll this time; the next arming reconnects
            logger.debug("could not watch the lists at %s: %s", self._where, exc)
            return None
        if first:
            entry = first[0] if isinstance(first[0], list) else first
            soonest = float(entry[1])
            next_due = soonest if next_due is None else min(next_due, soonest)
        if count:
            # a message came between the claim and the arming: claim again, but not in a
            # loop if a list holds something claims cannot take (then wait, watched, for
            # the rest of this fetch)
            self._restless += 1
            if self._restless <= 3:
                watch.disarm()
                return True, next_due
        self._restless = 0
        return False, next_due

    def _wait_watched(self, remaining: float, next_due: float | None) -> bool:
        """Wait until a watched key changes, ``next_due`` or ``remaining`` s; True if one did."""
        assert self._watch is not None
        wait = remaining if next_due is None else min(remaining, next_due - time.time())
        watch = self.on_wait
        if watch is not None:
            watch(True)
        try:
            return self._watch.changed(max(0.0, wait))
        finally:
            if watch is not None:
                watch(False)

    def _count_found(self, found: list[Delivery]) -> None:
        """Keep :attr:`_busiest`: the list most messages came from lately. Not the last
        one: a worker of a busy queue and a quiet one that just took a message from the
        quiet one would wait there while the busy one fills (measured on W11: a short task
        after each long one waited for the 20 ms poll)."""
        counts = self._found_on
        for delivery in found:
            key = delivery.state.key  # a _Held: this fetch just made it
            counts[key] = counts.get(key, 0) + 1
        self._found_count += len(found)
        if self._found_count > 64:  # forget slowly, so that a shift of traffic is followed
            self._found_on = counts = {k: n // 2 for k, n in counts.items() if n > 1}
            self._found_count = sum(counts.values())
        self._busiest = max(counts, key=counts.__getitem__) if counts else None

    def _claim_keys(self, queues: tuple[str, ...], shift: int) -> list[str]:
        """The (unprefixed) lists a claim reads, bucket by bucket, starting with queue
        ``shift``. Kept per (queues, shift): a consumer asks for the same few on every fetch,
        and building them each time was most of the Python cost of a claim from 50 queues
        (four keys per queue, 150 calls per task)."""
        keys = self._keys_by_order.get((queues, shift))
        if keys is None:
            if len(self._keys_by_order) >= 4096:  # queues added and cancelled many times
                self._keys_by_order.clear()
            order = queues[shift:] + queues[:shift]
            steps = self.keys.priority_steps
            keys = [self.keys.queue_key(queue, step) for step in steps for queue in order]
            self._keys_by_order[(queues, shift)] = keys
        return keys

    def _block(self, key: str, wait: float) -> bool:
        """Wait on ``key``: the list claims found most messages on lately (a worker of a busy
        queue and a quiet one waits where the next message most likely comes; another list
        is looked at every ``poll``), ended early by a sibling's :meth:`give_back_waking`.

        A no-op move (tail back to tail) blocks until the list has a message without
        taking it out of Redis, so waiting can never lose one. True if one came."""
        full = self.keys.k(key)
        waiter = self._waiting_client()

        def block() -> Any:
            try:
                # redis-py's stub says int; Redis >= 6 takes fractional seconds
                return waiter.blmove(full, full, wait, "RIGHT", "RIGHT")  # type: ignore[arg-type]
            except RETRYABLE:
                # a new connection from the pool next time, with another id: redis-py
                # redials a held connection's old address, where a sentinel's pool's
                # checkout asks the sentinels for the master again
                self._drop_waiter()
                raise

        return self._call("fetch", block) is not None

    def _waiting_client(self) -> redis.Redis:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = redis.Redis(
                connection_pool=self.client.connection_pool, single_connection_client=True
            )
        return waiter

    def _drop_waiter(self) -> None:
        waiter, self._waiter, self._waiter_id = self._waiter, None, None
        if waiter is not None:
            waiter.close()

    def wake_id(self) -> int | None:
        """The waiting connection's CLIENT ID (one round trip the first time; None if the
        server would not say, so that the wait is left to end at its poll). None too while
        the fetch waits watched: the give-back's own pushes to the lists end that wait."""
        if self._watch is not None and self._watch.armed_for is not None:
            return None
        if self._waiter_id is None:
            try:
                self._waiter_id = int(self._waiting_client().client_id())
            except redis.RedisError as exc:
                logger.debug("no CLIENT ID from %s: %s", self._where, exc)
        return self._waiter_id

    def give_back_waking(self, deliveries: Sequence[Delivery], wake: Sequence[int]) -> None:
        """The give-back script and ``CLIENT UNBLOCK`` of each waiting sibling in one round
        trip: an unblocked fetch claims from every list at once (a wait ended by UNBLOCK
        reads as a timeout). A sentinel's master is one server, so the ids are its own."""
        commands = self._give_back_commands(deliveries)
        given = len(commands)
        commands += [("CLIENT", "UNBLOCK", client) for client in wake]
        if not commands:
            return
        replies = self._call("give back", lambda: self._held.run(commands, raise_errors=False))
        failed = [reply for reply in replies[:given] if isinstance(reply, Exception)]
        if failed:
            raise BrokerError(f"Redis give back failed at {self._where}: {failed[0]}")
        refused = [reply for reply in replies[given:] if isinstance(reply, Exception)]
        if refused:
            # given back all the same (an ACL without CLIENT UNBLOCK): the sibling's wait
            # ends at its poll, and the messages are not kept here too
            logger.debug("could not wake a waiting sibling at %s: %s", self._where, refused[0])

    def _claim_once(
        self,
        keys: list[str],
        limit: int,
        owner: str,
        before: list[Command],
        *,
        expect_empty: bool = False,
    ) -> tuple[list[Delivery], float | None]:
        """One claim; ``expect_empty`` (the last found nothing and no wait saw a message
        come) has the script ask every list at once before taking from any."""
        attempts = 0
        while True:
            fetch_id = uuid.uuid4().hex
            try:
                if self._doubtful:
                    self._release_doubtful()
                reply = self._run_claim(keys, limit, owner, fetch_id, before, expect_empty)
                break
            except RETRYABLE as exc:
                # The script may have run with its reply lost: its claims are released
                # (by fetch id) before the next claim, so none stay stranded with us.
                self._doubtful.add((owner, fetch_id))
                attempts += 1
                if attempts > self.max_retries:
                    raise BrokerConnectionError(
                        f"Redis at {self._where} unreachable during fetch after "
                        f"{attempts} attempts: {exc}; the worker should reconnect"
                    ) from exc
                time.sleep(min(0.1 * 2 ** (attempts - 1), 2.0))
            except redis.RedisError as exc:
                raise BrokerError(f"Redis fetch failed at {self._where}: {exc}") from exc
        return self._deliveries(reply, owner)

    def _deliveries(self, reply: Any, owner: str) -> tuple[list[Delivery], float | None]:
        """A claim script's reply: the deliveries, and when the soonest parked one is due."""
        next_due = float(reply[0]) if reply[0] else None
        if reply[1]:
            logger.error(
                "set aside unusable message(s) from %s as dead letter(s) %s (no parsable "
                "envelope or delivery_tag); see `caraway dead-letters list`",
                self._where,
                text(reply[1]),
            )
        deliveries = []
        for index in range(2, len(reply), 4):
            key, raw, count, tag = reply[index : index + 4]
            delivery = self._delivery(text(key), raw, int(count), text(tag), owner)
            if delivery is not None:
                deliveries.append(delivery)
        return deliveries, next_due

    def _run_claim(
        self,
        keys: list[str],
        limit: int,
        owner: str,
        fetch_id: str,
        before: Sequence[tuple[Any, ...]] = (),
        expect_empty: bool = False,
    ) -> Any:
        claim = self._claim_command(keys, limit, owner, fetch_id, expect_empty)
        # acks are idempotent: if the reply is lost they are simply sent again
        replies = self._held.run([*before, claim], raise_errors=False)
        return self._claim_reply(replies, owner, fetch_id)

    def _claim_command(
        self, keys: list[str], limit: int, owner: str, fetch_id: str, expect_empty: bool
    ) -> Command:
        bookkeeping = [
            *self.keys.bookkeeping(),
            self.keys.owner(owner),
            self.keys.deliveries,
            self.keys.schedule,
            *self.keys.dead_keys(),
        ]
        args: list[Any] = [
            limit,
            repr(time.time()),
            fetch_id + owner,
            self.prefix,
            _PROMOTE_BATCH,
            "1" if expect_empty else "0",
            *keys,
        ]
        lists = [self.keys.k(k) for k in keys] if self.prefix else keys
        return self._held.evalsha(self._claim, bookkeeping + lists, args)

    def _claim_reply(self, replies: list[Any], owner: str, fetch_id: str) -> Any:
        """The claim's reply from the replies of the acks before it and the claim."""
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            if not isinstance(replies[-1], Exception):
                # the claim went through but an ack did not: hand the claim back
                self._doubtful.add((owner, fetch_id))
            raise failed[0]
        return replies[-1]

    def _delivery(self, key: str, raw: bytes, count: int, tag: str, owner: str) -> Delivery | None:
        held = _Held(raw=raw, owner=owner, key=key)
        try:
            unpacked = unpack(raw)
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            # claimed but unusable: set aside with the reason rather than handed out
            queue = self.keys.queue_of(key)
            self._bury_claim(tag, held, queue, f"cannot unpack envelope: {exc}")
            logger.error(
                "message %s on queue %r is not a usable envelope (%s); moved to the "
                "dead-letter store",
                tag,
                queue,
                exc,
            )
            return None
        return Delivery(
            message=unpacked.message,
            queue=self.keys.queue_of(key),
            tag=unpacked.delivery_tag,
            transport=self,
            redelivered=unpacked.redelivered,
            delivery_count=count,
            state=held,
            exchange=unpacked.exchange,
            routing_key=unpacked.routing_key,
        )

    # -- settling deliveries ------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        self.ack_many([delivery])

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._send("ack", self._ack_commands(deliveries), transaction=False)

    def _ack_commands(self, deliveries: Sequence[Delivery]) -> list[Command]:
        """One ACK script per owner for the whole batch, not five commands per delivery."""
        unacked, index, claims = self.keys.bookkeeping()
        by_owner: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_owner.setdefault(_held(delivery).owner, []).append(delivery.tag)
        deliveries_key = self.keys.deliveries
        return [
            self._held.evalsha(
                self._ack, [unacked, index, claims, deliveries_key, self.keys.owner(owner)], tags
            )
            for owner, tags in by_owner.items()
        ]

    def requeue(self, delivery: Delivery) -> None:
        held = _held(delivery)
        entry = [delivery.tag, held.owner, held.key, mark_redelivered(held.raw)]
        self._call("requeue", lambda: self._run_restore(entry, cutoff="+inf"))

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """One script per owner (one, in a worker): back to the head of their lists with
        their envelopes as claimed, the claim's count taken back. A retry after a lost
        reply finds them no longer held and gives back nothing twice."""
        commands = self._give_back_commands(deliveries)
        if commands:
            self._call("give back", lambda: self._held.run(commands))

    def _give_back_commands(self, deliveries: Sequence[Delivery]) -> list[Command]:
        by_owner: dict[str, list[Any]] = {}
        for delivery in deliveries:
            held = _held(delivery)
            by_owner.setdefault(held.owner, []).extend([delivery.tag, held.key, held.raw])
        keys = [*self.keys.bookkeeping(), self.keys.deliveries]
        return [
            self._held.evalsha(self._give_back, keys, [self.prefix, owner, *entries])
            for owner, entries in by_owner.items()
        ]

    def park(self, delivery: Delivery, eta: float) -> None:
        """Move the delivery to ``caraway.schedule`` until ``eta``; its envelope is kept intact
        (with its ``eta`` header) so whichever worker gets it after promotion, Celery's too,
        sees the same message."""
        held = _held(delivery)
        key = held.key.encode()
        member = f"{len(key)}:".encode() + key + held.raw
        self._call(
            "park",
            lambda: self._park(
                keys=[
                    *self.keys.bookkeeping(),
                    self.keys.deliveries,
                    self.keys.schedule,
                ],
                args=[self.prefix, delivery.tag, held.owner, repr(float(eta)), member],
            ),
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._bury_claim(delivery.tag, _held(delivery), delivery.queue, reason)

    def _bury_claim(self, tag: str, held: _Held, queue: str, reason: str) -> None:
        now = time.time()
        record = json.dumps(
            {
                "queue": queue,
                "reason": reason,
                "failed_at": now,
                "envelope": held.raw.decode(errors="replace"),
            }
        )
        keys = [*self.keys.bookkeeping(), self.keys.deliveries, *self.keys.dead_keys()]
        self._call(
            "dead_letter",
            lambda: self._bury(keys=keys, args=[self.prefix, tag, record, repr(now)]),
        )

    # -- owners, recovery and the visibility sweep --------------------------------------

    def renew(self, owner: str) -> None:
        keys = [self.keys.unacked_index, self.keys.claims, self.keys.owner(owner)]
        self._call("renew", lambda: self._renew(keys=keys, args=[owner, repr(time.time())]))

    def recover(self, owner: str) -> int:
        return self._call("recover", lambda: self._recover_owner(owner))

    def _recover_owner(self, owner: str, fetch_id: str = "") -> int:
        """Restore ``owner``'s claims (only those of ``fetch_id`` when given)."""
        tags = [text(t) for t in self.client.smembers(self.keys.owner(owner))]
        if not tags:
            return 0
        holders = self.client.hmget(self.keys.claims, tags)
        mine = [
            tag
            for tag, holder in zip(tags, holders, strict=True)
            if holder is not None
            and text(holder)[32:] == owner
            and text(holder).startswith(fetch_id)
        ]
        # Redelivered only when a consumer may have seen it; a lost claim reply was not seen.
        return self._restore_tags(mine, owner=owner, cutoff="+inf", mark=not fetch_id)

    def _release_doubtful(self) -> None:
        for owner, fetch_id in sorted(self._doubtful):
            self._recover_owner(owner, fetch_id)
            self._doubtful.discard((owner, fetch_id))

    def restore_visible(self) -> int:
        """Restore claims not renewed within ``visibility_timeout`` (kombu's sweep, same mutex)."""
        return self._call("visibility sweep", self._sweep)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            self.restore_visible()

    def _sweep(self) -> int:
        token = uuid.uuid4().hex
        mutex = self.keys.unacked_mutex
        if not self.client.set(mutex, token, nx=True, px=self._mutex_expire_ms):
            return 0  # another consumer (ours or Celery's) is sweeping
        try:
            cutoff = time.time() - self.visibility_timeout
            stale = self.client.zrange(
                self.keys.unacked_index,
                cutoff,
                0,
                desc=True,
                byscore=True,
                offset=0,
                num=_SWEEP_BATCH,
            )
            tags = [text(tag) for tag in to_list(stale)]
            return self._restore_tags(tags, owner="", cutoff=repr(cutoff), mark=True)
        finally:
            self._unlock(keys=[mutex], args=[token])

    def _restore_tags(self, tags: list[str], *, owner: str, cutoff: str, mark: bool) -> int:
        if not tags:
            return 0
        records: list[Any] = self.client.hmget(self.keys.unacked, tags)
        entries: list[Any] = []
        orphans: list[str] = []
        for tag, record in zip(tags, records, strict=True):
            if record is None:
                orphans.append(tag)
                continue
            key, envelope = self._restore_target(record, tag)
            entries += [tag, owner, key, mark_redelivered(envelope) if mark else envelope]
        if orphans:
            # index entries without a record (kombu drops them the same way)
            self.client.zrem(self.keys.unacked_index, *orphans)
        return self._run_restore(entries, cutoff=cutoff) if entries else 0

    def _run_restore(self, entries: list[Any], *, cutoff: str) -> int:
        restored = self._restore(keys=self.keys.bookkeeping(), args=[self.prefix, cutoff, *entries])
        return int(restored)

    def _restore_target(self, record: bytes, tag: str) -> tuple[str, bytes]:
        """The list key and envelope bytes for an ``unacked`` record written by anyone."""
        envelope, exchange, routing_key = json.loads(record)
        routed = tag[37:] if len(tag) > 37 and tag[36] == ">" else ""  # see publish_routed
        queue = routed or self._lookup(str(exchange), str(routing_key))
        priority = to_int(envelope.get("properties", {}).get("priority"))
        return self.keys.queue_key(queue, priority), json.dumps(envelope).encode()

    def _lookup(self, exchange: str, routing_key: str) -> str:
        """The queue a message goes back to, as kombu resolves it (a member with a pattern is
        a topic binding); the first of several, so a restore never makes copies."""
        if not exchange:
            return routing_key
        members = self.client.smembers(self.keys.k(f"_kombu.binding.{exchange}"))
        return bound_queue(self.keys, members, routing_key)

    def close(self) -> None:
        self._held.close()
        self._drop_waiter()
        if self._watch is not None:
            self._watch.drop()
        self.client.close()


def _due(next_due: float | None) -> bool:
    return next_due is not None and next_due <= time.time()


def _held(delivery: Delivery) -> _Held:
    if not isinstance(delivery.state, _Held):
        raise BrokerError(f"delivery {delivery.tag!r} was not handed out by a RedisTransport")
    return delivery.state
