"""The Redis Cluster broker's hot path (``redis+cluster://``): each queue's keys share one hash
slot (``keys.py``), so every claim, ack and park is one Lua script on one master, and
queues spread over the cluster's masters.

Messages are kombu's JSON envelope (the format Celery's Redis transport uses); the layout
around them is caraway's own, as Celery has no Redis Cluster transport. At-least-once: a
claim moves a message into the queue's ``:held`` hash with a lease, in one script; a
consumer that stops renewing (its whole node died) has its claims taken back by the next
claim once the lease ends. Waiting consumers are woken by sharded pub/sub (``SPUBLISH`` on
the queue's own slot when a push finds the queue empty), never by polling the queue. The
one thing to know: replication is asynchronous, so a master lost before its replica got the
last writes loses them (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import Capabilities, Delivery, Scheduling, Transport
from caraway.brokers.rediscluster import scripts
from caraway.brokers.rediscluster.deadletters import record_dead_letter
from caraway.brokers.rediscluster.keys import TAG_LENGTH, QueueKeys, owner_key, queue_keys
from caraway.clients.redis import text
from caraway.clients.rediscluster import connect_cluster, key_prefix, parse_cluster_url, retrying
from caraway.protocol import envelope
from caraway.protocol.message import Message

T = TypeVar("T")
logger = logging.getLogger("caraway.brokers.rediscluster.transport")

#: Lua's unpack() takes this many values at most, safely
_CHUNK = 1000
#: how long an owner's list of queues is kept without a renewal
_OWNER_TTL = 7 * 86400


def item(message: Message, queue: str, *, exchange: str = "", routing_key: str = "") -> str:
    """A list item: the tag, then the envelope (its delivery tag is the same tag)."""
    tag = uuid.uuid4().hex
    priority = int(message.properties.get("priority") or 0)
    raw = envelope.pack(
        message,
        exchange=exchange,
        routing_key=routing_key or queue,
        delivery_tag=tag,
        priority=priority,
    )
    return tag + raw.decode()


class RedisClusterTransport(Transport, Scheduling):
    """``redis+cluster://`` brokers; see the module docstring for the layout.

    Options (``broker_transport_options``): ``visibility_timeout`` (s, default 30: how long a
    claim lasts unrenewed; a live worker renews with every heartbeat), ``global_keyprefix``,
    ``max_retries`` (3: retries of what a failover in progress raises, where a retry is
    safe), ``socket_timeout``, ``socket_connect_timeout``, ``ssl``.
    """

    capabilities = Capabilities(leases=True, durable=True, delivery_count=True)

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = key_prefix(url, self.options)
        self.visibility_timeout = float(self.options.get("visibility_timeout", 30.0))
        self.max_retries = int(self.options.get("max_retries", 3))
        self._where = parse_cluster_url(url).redacted()
        self.client: Any = connect_cluster(url, self.options)
        self._scripts = {
            name: self.client.register_script(getattr(scripts, name))
            for name in ("PUBLISH", "CLAIM", "ACK", "REQUEUE", "PARK", "PUBLISH_PARKED",
                         "RENEW", "RECOVER", "NEXT_DUE")
        }  # fmt: skip
        self._registered: set[tuple[str, str]] = set()
        self._pubsub: Any = None
        self._subscribed: tuple[str, ...] = ()
        self._next_queue = 0

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(what, fn, where=self._where, retries=self.max_retries)

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._scripts[name](keys=list(keys), args=list(args))

    def _run_script(self, what: str, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """:meth:`_script` under :meth:`_run` (retried: for scripts safe to run twice)."""
        return self._run(what, partial(self._script, name, keys, args))

    def keys(self, queue: str) -> QueueKeys:
        return queue_keys(self.prefix, queue)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        message: Message,
        *,
        queue: str,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> None:
        raw = item(message, queue, exchange=exchange, routing_key=routing_key or queue)
        self._push(queue, [raw])

    def publish_many(self, items: Sequence[tuple[Message, str]]) -> None:
        """One script per queue (one slot each), in order within each queue."""
        by_queue: dict[str, list[str]] = {}
        for message, queue in items:
            by_queue.setdefault(queue, []).append(item(message, queue))
        for queue, raws in by_queue.items():
            for start in range(0, len(raws), _CHUNK):
                self._push(queue, raws[start : start + _CHUNK])

    def _push(self, queue: str, raws: list[str]) -> None:
        keys = self.keys(queue)
        # retried as Celery's producer retries (task_publish_retry_policy): a push whose
        # reply was lost in a failover may have landed, so a retry may deliver it twice
        self._run_script("publish", "PUBLISH", [keys.ready, keys.wake], raws)

    def publish_parked(self, message: Message, *, queue: str, eta: float) -> None:
        raw = item(message, queue)
        tag, body = raw[:TAG_LENGTH], raw[TAG_LENGTH:]
        keys = self.keys(queue)
        if eta <= time.time():
            self._push(queue, [raw])
            return
        args = [tag, body, eta]
        self._run(
            "publish_parked",
            lambda: self._script("PUBLISH_PARKED", [keys.parked, keys.parkedmsg, keys.wake], args),
        )

    # -- claiming -------------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], *, limit: int, timeout: float, owner: str
    ) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        deliveries = self._claim_all(queues, limit, owner)
        if deliveries or timeout <= 0:
            return deliveries
        deadline = time.monotonic() + timeout
        self._subscribe(queues)
        while True:
            self._drain_wakes()
            deliveries = self._claim_all(queues, limit, owner)
            left = deadline - time.monotonic()
            if deliveries or left <= 0:
                return deliveries
            due = self._next_due(queues)
            if due is not None:
                left = min(left, max(due - time.time(), 0.0) + 0.002)
            self._wait_wake(left)

    def _claim_all(self, queues: Sequence[str], limit: int, owner: str) -> list[Delivery]:
        """Claim from each queue in turn (starting one further each call) until ``limit``."""
        found: list[Delivery] = []
        start = self._next_queue % len(queues)
        self._next_queue += 1
        for queue in [*queues[start:], *queues[:start]]:
            if len(found) >= limit:
                break
            found += self._claim(queue, limit - len(found), owner)
        return found

    def _claim(self, queue: str, limit: int, owner: str) -> list[Delivery]:
        self._register(owner, queue)
        keys = self.keys(queue)
        now = time.time()
        args = [now, now + self.visibility_timeout, owner, limit]
        names = [keys.ready, keys.held, keys.lease, keys.owner, keys.count, keys.parked,
                 keys.parkedmsg]  # fmt: skip
        # retried: a claim whose reply was lost leaves messages held, which the lease frees
        flat = self._run("claim", lambda: self._script("CLAIM", names, args))
        return [
            self._delivery(queue, text(flat[i]), int(flat[i + 1]), flat[i + 2], owner)
            for i in range(0, len(flat), 3)
        ]

    def _register(self, owner: str, queue: str) -> None:
        if (owner, queue) in self._registered:
            return
        key = owner_key(self.prefix, owner)

        def register() -> None:
            self.client.sadd(key, queue)
            self.client.expire(key, _OWNER_TTL)

        self._run("claim", register)
        self._registered.add((owner, queue))

    def _delivery(self, queue: str, tag: str, count: int, raw: Any, owner: str) -> Delivery:
        unpacked = envelope.unpack(raw)
        return Delivery(
            message=unpacked.message,
            queue=queue,
            tag=tag,
            transport=self,
            redelivered=count > 1,
            delivery_count=count,
            state=owner,
            exchange=unpacked.exchange,
            routing_key=unpacked.routing_key,
        )

    def _next_due(self, queues: Sequence[str]) -> float | None:
        times: list[float] = []
        for queue in queues:
            keys = self.keys(queue)
            found = self._run_script("fetch", "NEXT_DUE", [keys.lease, keys.parked], [])
            if found:
                times.append(float(text(found)))
        return min(times) if times else None

    # -- waking ---------------------------------------------------------------------------

    def _subscribe(self, queues: Sequence[str]) -> None:
        wanted = tuple(self.keys(queue).wake for queue in queues)
        if self._pubsub is not None and self._subscribed == wanted:
            return
        self._close_pubsub()
        pubsub = self.client.pubsub()
        try:
            pubsub.ssubscribe(*wanted)
            # confirmed before the claim that may find nothing: a push after it wakes us
            confirmed = 0
            deadline = time.monotonic() + 5
            while confirmed < len(set(wanted)) and time.monotonic() < deadline:
                message = pubsub.get_sharded_message(timeout=0.1)
                if message is not None and message.get("type") == "ssubscribe":
                    confirmed += 1
        except redis.RedisError:
            with contextlib.suppress(Exception):
                pubsub.close()
            raise
        self._pubsub, self._subscribed = pubsub, wanted

    def _drain_wakes(self) -> None:
        pubsub = self._pubsub
        try:
            while pubsub is not None and pubsub.get_sharded_message(timeout=0.0) is not None:
                pass
        except redis.RedisError:
            self._close_pubsub()

    def _wait_wake(self, timeout: float) -> None:
        """Until a queue is announced, ``timeout`` passes, or the subscription broke."""
        pubsub = self._pubsub
        if pubsub is None:
            time.sleep(min(timeout, 0.05))
            return
        nodes = len(getattr(pubsub, "node_pubsub_mapping", {}) or {1: None})
        # one node's socket is read per call (round robin): short reads when there are several
        step = timeout if nodes <= 1 else min(timeout, 0.02)
        deadline = time.monotonic() + timeout
        try:
            while True:
                message = pubsub.get_sharded_message(timeout=step)
                if message is not None and message.get("type") == "smessage":
                    return
                if time.monotonic() >= deadline:
                    return
        except redis.RedisError as exc:
            # a failover moved a slot or dropped a node: subscribe again on the next wait
            logger.debug("sharded subscription lost: %s", exc)
            self._close_pubsub()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub, self._subscribed = self._pubsub, None, ()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    # -- settling -------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        self.ack_many([delivery])

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).append(delivery.tag)
        for queue, tags in by_queue.items():
            keys = self.keys(queue)
            names = [keys.held, keys.lease, keys.owner, keys.count]
            for start in range(0, len(tags), _CHUNK):
                chunk = tags[start : start + _CHUNK]
                self._run_script("ack", "ACK", names, chunk)

    def requeue(self, delivery: Delivery) -> None:
        keys = self.keys(delivery.queue)
        names = [keys.ready, keys.held, keys.lease, keys.owner, keys.wake]
        args = [delivery.tag, delivery.state]
        self._run("requeue", lambda: self._script("REQUEUE", names, args))

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Each one parked as due now, which PARK turns into a push to the head of its
        queue with the claim's count taken back and the waiting consumers woken; last
        first, so the first given is consumed first. One script each (queues live on
        different slots): an error part-way leaves some given back, and a retry of the whole
        list gives back the rest (PARK does nothing to a claim its owner no longer holds)."""
        for delivery in reversed(deliveries):
            self.park(delivery, 0.0)

    def park(self, delivery: Delivery, eta: float) -> None:
        keys = self.keys(delivery.queue)
        names = [keys.ready, keys.held, keys.lease, keys.owner, keys.count, keys.parked,
                 keys.parkedmsg, keys.wake]  # fmt: skip
        args = [delivery.tag, delivery.state, eta, time.time()]
        self._run("park", lambda: self._script("PARK", names, args))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Record the dead letter, then ack (two slots: a crash between the two leaves the
        message to be dead-lettered again once its lease ends, never lost)."""
        record_dead_letter(self.client, self.prefix, delivery, reason, where=self._where)
        self.ack(delivery)

    def renew(self, owner: str) -> None:
        lease_end = time.time() + self.visibility_timeout
        for queue in self._owned(owner):
            keys = self.keys(queue)
            self._run_script("renew", "RENEW", [keys.lease, keys.owner], [owner, lease_end])
        key = owner_key(self.prefix, owner)
        self._run("renew", lambda: self.client.expire(key, _OWNER_TTL))

    def recover(self, owner: str) -> int:
        total = 0
        for queue in self._owned(owner):
            keys = self.keys(queue)
            names = [keys.ready, keys.held, keys.lease, keys.owner, keys.wake]
            total += int(self._run_script("recover", "RECOVER", names, [owner]))
        return total

    def _owned(self, owner: str) -> list[str]:
        key = owner_key(self.prefix, owner)
        return sorted(
            text(queue) for queue in self._run("renew", lambda: self.client.smembers(key))
        )

    def close(self) -> None:
        self._close_pubsub()
        with contextlib.suppress(Exception):
            self.client.close()
