"""The transport contract: every broker plug-in passes these, whatever it is built on.

What a transport declares it cannot do (``Capabilities``, or an optional interface it does
not implement) is skipped, never faked. Sizes, purges and dead letters are read through the
broker's queue admin.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import cast

import pytest

from caraway.brokers.contracts import Delivery, QueueAdmin, Transport
from caraway.protocol.message import Message
from tests.contract.conftest import TransportFactory, make_message

# Replaced per test by ``_private_owners``: a shared broker must not mix tests' claims.
OWNER = "node@contract/1"
OTHER = "node@contract/2"


@pytest.fixture(autouse=True)
def _private_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    token = uuid.uuid4().hex[:8]
    monkeypatch.setattr(sys.modules[__name__], "OWNER", f"node-{token}@contract/1")
    monkeypatch.setattr(sys.modules[__name__], "OTHER", f"node-{token}@contract/2")


def ids(deliveries: list[Delivery]) -> list[str]:
    return [delivery.message.headers["id"] for delivery in deliveries]


def drain(
    transport: Transport, queues: list[str], count: int, *, owner: str | None = None
) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (a fetch may hand out fewer than its limit)."""
    owner = OWNER if owner is None else owner
    got: list[Delivery] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        got += transport.fetch(queues, limit=count - len(got), timeout=0.5, owner=owner)
    assert len(got) == count, f"expected {count} deliveries, got {len(got)}"
    return got


def ids_of(messages: list[Message]) -> list[str]:
    return [message.headers["id"] for message in messages]


def expect_nothing(transport: Transport, queues: list[str], *, within: float = 0.2) -> None:
    assert transport.fetch(queues, limit=10, timeout=within, owner=OTHER) == []


def test_messages_come_out_in_the_order_they_were_published(
    transport: Transport, queue: str
) -> None:
    messages = [make_message(index) for index in range(5)]
    for message in messages:
        transport.publish(message, queue=queue)

    got = drain(transport, [queue], 5)

    assert ids(got) == [message.headers["id"] for message in messages]
    assert all(delivery.queue == queue for delivery in got)


def test_publish_many_publishes_every_message_in_order(transport: Transport, queue: str) -> None:
    messages = [make_message(index) for index in range(20)]

    transport.publish_many([(message, queue) for message in messages])

    assert ids(drain(transport, [queue], 20)) == [message.headers["id"] for message in messages]


def test_a_message_arrives_with_body_headers_and_content_type_unchanged(
    transport: Transport, queue: str
) -> None:
    message = make_message(7)
    message.body = b"\x00\xffbinary body\n"
    message.content_type = "application/x-msgpack"
    message.content_encoding = "binary"

    transport.publish(message, queue=queue)
    (delivery,) = drain(transport, [queue], 1)

    assert delivery.message.body == message.body
    assert delivery.message.headers == message.headers
    assert delivery.message.content_type == "application/x-msgpack"
    assert delivery.message.content_encoding == "binary"
    assert delivery.message.properties["correlation_id"] == message.headers["id"]
    assert not delivery.redelivered
    if transport.capabilities.delivery_count:
        assert delivery.delivery_count == 1


@pytest.mark.needs("priorities")
def test_higher_priority_messages_are_served_first(transport: Transport, queue: str) -> None:
    low = [make_message(index, priority=0) for index in range(2)]
    high = [make_message(index, priority=9) for index in range(2)]
    for message in (low[0], high[0], low[1], high[1]):
        transport.publish(message, queue=queue)

    got = ids(drain(transport, [queue], 4))

    first, second = (low, high) if transport.capabilities.priority_low_first else (high, low)
    assert got == [message.headers["id"] for message in first + second]


def test_fetch_on_an_empty_queue_returns_nothing_when_its_timeout_runs_out(
    transport: Transport, queue: str
) -> None:
    started = time.monotonic()
    assert transport.fetch([queue], limit=5, timeout=0.3, owner=OWNER) == []
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5

    started = time.monotonic()
    assert transport.fetch([queue], limit=5, timeout=0, owner=OWNER) == []
    assert time.monotonic() - started < 0.5


def test_fetch_wakes_promptly_for_a_message_published_while_it_waits(
    transport_factory: TransportFactory, queue: str
) -> None:
    consumer, producer = transport_factory(), transport_factory()
    message = make_message()
    timer = threading.Timer(0.2, lambda: producer.publish(message, queue=queue))
    timer.start()
    try:
        started = time.monotonic()
        got = consumer.fetch([queue], limit=1, timeout=5, owner=OWNER)
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        timer.join()

    assert ids(got) == [message.headers["id"]]
    assert elapsed < 1.5


def test_fetch_hands_out_no_more_than_its_limit(transport: Transport, queue: str) -> None:
    transport.publish_many([(make_message(index), queue) for index in range(5)])

    first = transport.fetch([queue], limit=2, timeout=1, owner=OWNER)

    assert 1 <= len(first) <= 2
    rest = drain(transport, [queue], 5 - len(first))
    assert len(set(ids(first + rest))) == 5


def test_acked_message_is_gone_for_good(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    transport.publish(make_message(), queue=queue)
    (delivery,) = drain(transport, [queue], 1)

    delivery.ack()
    delivery.ack()  # idempotent

    assert transport.recover(OWNER) == 0
    assert admin.size(queue) == 0
    expect_nothing(transport, [queue])


def test_ack_many_acks_every_delivery(transport: Transport, queue: str) -> None:
    transport.publish_many([(make_message(index), queue) for index in range(4)])

    transport.ack_many(drain(transport, [queue], 4))

    assert transport.recover(OWNER) == 0
    expect_nothing(transport, [queue])


def test_ack_then_fetch_settles_the_last_batch_and_claims_the_next(
    transport_factory: TransportFactory, transport: Transport, queue: str
) -> None:
    transport.publish_many([(make_message(index), queue) for index in range(4)])
    first = drain(transport, [queue], 2)

    second = transport.ack_then_fetch(first, [queue], limit=2, timeout=0.5, owner=OWNER)
    second += drain(transport, [queue], 2 - len(second))  # a fetch may hand out fewer

    assert len(second) == 2
    assert {d.tag for d in second}.isdisjoint(d.tag for d in first)
    if transport.capabilities.leases:
        assert transport.recover(OWNER) == 2  # only the second batch was still held
        assert len(drain(transport, [queue], 2, owner=OTHER)) == 2
    else:  # the broker hands back what a closed connection held: the second batch only
        transport.close()
        heir = transport_factory()
        assert len(drain(heir, [queue], 2, owner=OTHER)) == 2
        expect_nothing(heir, [queue])


def test_a_claimed_message_is_not_handed_to_anyone_else(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    transport.publish(make_message(), queue=queue)
    drain(transport, [queue], 1)

    assert admin.size(queue) == 0
    expect_nothing(transport, [queue])


def test_requeued_message_is_delivered_again_as_a_redelivery(
    transport: Transport, queue: str
) -> None:
    message = make_message()
    transport.publish(message, queue=queue)
    (first,) = drain(transport, [queue], 1)

    first.requeue()
    (again,) = drain(transport, [queue], 1, owner=OTHER)

    assert ids([again]) == [message.headers["id"]]
    assert again.redelivered
    if transport.capabilities.delivery_count:
        assert again.delivery_count == 2


def test_given_back_messages_come_again_first_in_order_and_uncounted(
    transport: Transport, queue: str
) -> None:
    """A busy worker gives back what it fetched and never started (fair dispatch): the next
    consumer gets it ahead of what was queued behind it, in the order it was claimed, and
    not as a failed delivery (the delivery cap must not grow by it)."""
    messages = [make_message(index) for index in range(5)]
    for message in messages:
        transport.publish(message, queue=queue)
    first = drain(transport, [queue], 3)

    transport.give_back(first[1:])

    again = drain(transport, [queue], 4, owner=OTHER)
    assert ids(again) == ids_of(messages[1:])
    if transport.capabilities.delivery_count:
        assert [delivery.delivery_count for delivery in again] == [1, 1, 1, 1]
    if transport.capabilities.leases:
        # only the started one is still held by the first owner
        assert transport.recover(OWNER) == 1


def test_a_consumer_that_gave_back_holds_nothing_until_it_fetches_again(
    transport_factory: TransportFactory, queue: str
) -> None:
    """RabbitMQ pushes up to the prefetch to a consumer whether it asked or not: a consumer
    busy with a long task must not keep what arrived meanwhile, nor be sent more."""
    busy, idle = transport_factory({}), transport_factory({})
    transport_factory({}).publish(make_message(0), queue=queue)
    assert len(busy.fetch([queue], limit=4, timeout=5, owner=OWNER)) == 1
    later = [make_message(index) for index in range(1, 4)]
    for message in later:
        busy.publish(message, queue=queue)
    time.sleep(0.3)  # what a pushing broker sends the busy consumer is in its socket by now

    busy.give_back([])
    after = make_message(4)
    busy.publish(after, queue=queue)

    taken = drain(idle, [queue], 4, owner=OTHER)
    assert ids(taken) == ids_of([*later, after])
    idle.ack_many(taken)
    idle.close()  # the only consumer left is the one that gave back
    final = make_message(5)
    busy.publish(final, queue=queue)
    assert ids(drain(busy, [queue], 1)) == ids_of([final]), "a fetch consumes again"


def test_a_consumer_waiting_on_another_queue_gets_a_give_back_at_once(
    transport_factory: TransportFactory, queue: str
) -> None:
    """A prefork child that starts a task while a sibling waits on an empty broker gives
    that sibling what it holds (worker/handoff.py): the sibling, told of the wait through
    ``on_wait`` and waiting here on the other queue first, must get it now, not at its
    next poll (Redis: the give-back unblocks its wait; RabbitMQ pushes to it)."""
    waiter = transport_factory({"polling_interval": 3})  # under the 5 s socket timeout
    busy = transport_factory({})
    other = f"{queue}-other"
    message = make_message(0)
    busy.publish(message, queue=queue)
    held = drain(busy, [queue], 1)
    said: list[bool] = []
    wake: list[int] = []
    waiting = threading.Event()

    def on_wait(flag: bool) -> None:
        said.append(flag)
        if flag:
            wake[:] = [] if (token := waiter.wake_id()) is None else [token]
            waiting.set()

    waiter.on_wait = on_wait
    got: list[Delivery] = []
    thread = threading.Thread(
        target=lambda: got.extend(waiter.fetch([other, queue], limit=1, timeout=3, owner=OTHER))
    )
    thread.start()
    told = waiting.wait(1.0)  # a transport that never says: it has had the time to wait
    time.sleep(0.05)  # past the hook, into the wait itself
    began = time.monotonic()
    busy.give_back_waking(held, wake)
    thread.join(5)
    took = time.monotonic() - began
    assert ids(got) == ids_of([message])
    if told:
        assert said[0] is True and said[-1] is False, said
        assert took < 1.0, f"the waiting consumer got it after {took:.2f}s"


def test_a_give_back_stands_when_waking_the_sibling_is_refused(
    transport_factory: TransportFactory, queue: str
) -> None:
    """The wake-up rides with the give-back (Redis: CLIENT UNBLOCK, which an ACL may deny):
    its failure must not raise, or the worker would keep messages it had given back. A
    transport with nothing to wake gives back all the same, whatever it is asked to wake."""
    transport = transport_factory({})
    transport.publish(make_message(0), queue=queue)
    held = drain(transport, [queue], 1)
    transport.give_back_waking(held, [cast(int, "not-an-id")])  # an error reply
    assert ids(drain(transport, [queue], 1, owner=OTHER)) == ids(held)


def test_a_consumer_of_a_busy_and_a_quiet_queue_waits_where_messages_come(
    transport_factory: TransportFactory, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of a busy queue and a quiet one (W11: short tasks and long ones) that took a
    message from the quiet one must not then wait there while the busy one fills: on Redis,
    which blocks on one list, the wait is on the list most messages came from lately (its
    20 ms poll of every list while active, which would hide it here, is left out)."""
    redis_transport = pytest.importorskip("caraway.brokers.redis.transport")
    monkeypatch.setattr(redis_transport, "ACTIVE_WINDOW", 0.0)
    consumer = transport_factory({"polling_interval": 3})  # under the 5 s socket timeout
    producer = transport_factory({})
    quiet = f"{queue}-other"
    for index in range(8):
        producer.publish(make_message(index), queue=queue)
    assert len(drain(consumer, [quiet, queue], 8)) == 8
    producer.publish(make_message(8), queue=quiet)
    assert len(drain(consumer, [quiet, queue], 1)) == 1
    late = make_message(9)
    timer = threading.Timer(0.3, lambda: producer.publish(late, queue=queue))
    timer.start()
    began = time.monotonic()
    got = consumer.fetch([quiet, queue], limit=1, timeout=3, owner=OWNER)
    took = time.monotonic() - began
    timer.join()
    assert ids(got) == ids_of([late])
    assert took < 1.5, f"waited {took:.2f}s on the quiet queue"


@pytest.mark.needs("leases")
def test_a_stale_owner_gives_back_nothing_someone_else_now_holds(
    transport_factory: TransportFactory, queue: str
) -> None:
    transport = transport_factory({"visibility_timeout": 1})
    transport.publish(make_message(), queue=queue)
    (stale,) = drain(transport, [queue], 1)
    (current,) = drain(transport, [queue], 1, owner=OTHER)

    transport.give_back([stale])

    assert transport.fetch([queue], limit=1, timeout=0.2, owner=OWNER) == []
    assert transport.recover(OTHER) == 1, "the current owner still holds it"
    assert current.message.headers["id"] == stale.message.headers["id"]


@pytest.mark.needs("scheduling")
def test_parked_message_is_delivered_only_once_it_falls_due(
    transport: Transport, queue: str
) -> None:
    message = make_message()
    transport.publish(message, queue=queue)
    (delivery,) = drain(transport, [queue], 1)
    eta = time.time() + 0.6

    delivery.park(eta)

    assert transport.recover(OWNER) == 0, "a parked message is no longer held by its owner"
    expect_nothing(transport, [queue], within=0.2)
    got = transport.fetch([queue], limit=1, timeout=5, owner=OTHER)
    assert ids(got) == [message.headers["id"]]
    assert time.time() >= eta - 0.05
    assert time.time() < eta + 1.5, "a due parked message must wake a waiting fetch promptly"
    if transport.capabilities.delivery_count:
        assert got[0].delivery_count == 1, "parking is not a delivery attempt"


@pytest.mark.needs("scheduling")
def test_message_parked_with_a_past_eta_is_ready_at_once(transport: Transport, queue: str) -> None:
    transport.publish(make_message(), queue=queue)
    (delivery,) = drain(transport, [queue], 1)

    delivery.park(time.time() - 1)

    assert len(transport.fetch([queue], limit=1, timeout=1, owner=OTHER)) == 1


@pytest.mark.needs("leases")
def test_claim_whose_lease_expires_is_redelivered_with_count_two(
    transport_factory: TransportFactory, queue: str
) -> None:
    transport = transport_factory({"visibility_timeout": 1})
    message = make_message()
    transport.publish(message, queue=queue)
    drain(transport, [queue], 1)

    # polled: a transport may notice expired claims on a sweep between fetches
    got = drain(transport, [queue], 1, owner=OTHER)

    assert ids(got) == [message.headers["id"]]
    assert got[0].redelivered
    if transport.capabilities.delivery_count:
        assert got[0].delivery_count == 2


@pytest.mark.needs("leases")
def test_renewed_claim_is_not_redelivered(transport_factory: TransportFactory, queue: str) -> None:
    transport = transport_factory({"visibility_timeout": 1})
    transport.publish(make_message(), queue=queue)
    drain(transport, [queue], 1)

    # renew three times per lease for two leases' worth of time
    for _ in range(6):
        transport.renew(OWNER)
        expect_nothing(transport, [queue], within=0.33)

    assert transport.recover(OWNER) == 1


@pytest.mark.needs("leases")
def test_a_stale_owner_cannot_requeue_a_message_someone_else_now_holds(
    transport_factory: TransportFactory, queue: str
) -> None:
    transport = transport_factory({"visibility_timeout": 1})
    transport.publish(make_message(), queue=queue)
    (stale,) = drain(transport, [queue], 1)
    (current,) = drain(transport, [queue], 1, owner=OTHER)

    stale.requeue()

    assert transport.fetch([queue], limit=1, timeout=0.2, owner=OWNER) == []
    assert current.message.headers["id"] == stale.message.headers["id"]


@pytest.mark.needs("leases")
def test_recover_hands_back_only_the_dead_owners_claims_at_once(
    transport: Transport, queue: str
) -> None:
    transport.publish_many([(make_message(index), queue) for index in range(3)])
    dead = drain(transport, [queue], 2, owner=OWNER)
    alive = drain(transport, [queue], 1, owner=OTHER)

    assert transport.recover(OWNER) == 2

    back = drain(transport, [queue], 2, owner=OTHER)
    assert sorted(ids(back)) == sorted(ids(dead))
    assert all(delivery.redelivered for delivery in back)
    assert transport.recover(OWNER) == 0
    assert transport.recover(OTHER) == 3
    assert sorted(ids(drain(transport, [queue], 3))) == sorted(ids(back + alive))


def test_dead_letters_are_listed_requeued_and_purged(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    messages = [make_message(index) for index in range(3)]
    transport.publish_many([(message, queue) for message in messages])
    for delivery in drain(transport, [queue], 3):
        delivery.dead_letter(f"poison {delivery.message.headers['id']}")

    assert transport.recover(OWNER) == 0, "a dead-lettered delivery is acked"
    expect_nothing(transport, [queue])
    letters = [letter for letter in admin.dead_letters(limit=1000) if letter.queue == queue]
    assert [letter.message.headers["id"] for letter in letters] == ids_of(messages)
    assert letters[0].reason == f"poison {messages[0].headers['id']}"
    assert letters[0].message.body == messages[0].body
    assert letters[0].failed_at == pytest.approx(time.time(), abs=30)

    assert admin.requeue_dead_letters([letters[0].id]) == 1
    assert ids(drain(transport, [queue], 1)) == ids_of(messages[:1])
    remaining = [letter.id for letter in admin.dead_letters(limit=1000) if letter.queue == queue]
    assert remaining == [letter.id for letter in letters[1:]]

    assert admin.purge_dead_letters() >= 2
    assert [letter for letter in admin.dead_letters() if letter.queue == queue] == []


def test_chosen_dead_letters_are_discarded_and_the_rest_kept(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    messages = [make_message(index) for index in range(3)]
    transport.publish_many([(message, queue) for message in messages])
    for delivery in drain(transport, [queue], 3):
        delivery.dead_letter("poison")
    letters = [letter for letter in admin.dead_letters(limit=1000) if letter.queue == queue]
    assert len(letters) == 3

    assert admin.purge_dead_letters([letters[0].id, letters[2].id]) == 2
    assert admin.purge_dead_letters([letters[0].id]) == 0, "already gone"
    left = [letter for letter in admin.dead_letters(limit=1000) if letter.queue == queue]
    assert [letter.id for letter in left] == [letters[1].id]
    assert admin.purge_dead_letters([]) == 0
    assert admin.purge_dead_letters([letters[1].id]) == 1
    expect_nothing(transport, [queue])


def test_requeue_all_dead_letters_puts_every_one_back(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    transport.publish_many([(make_message(index), queue) for index in range(2)])
    for delivery in drain(transport, [queue], 2):
        delivery.dead_letter("boom")

    assert admin.requeue_dead_letters() >= 2

    assert len(drain(transport, [queue], 2)) == 2


def test_unacked_counts_what_consumers_hold_per_queue(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    other = queue + "-other"
    transport.publish_many([(make_message(index), queue) for index in range(3)])
    transport.publish_many([(make_message(9), other)])
    held = drain(transport, [queue], 2)
    counts = admin.unacked([queue, other])
    if counts is None:  # the broker cannot count them (RabbitMQ without its management API)
        assert type(admin).unacked is QueueAdmin.unacked, "None only from the contract default"
        transport.ack_many(held)
        return
    assert counts == {queue: 2, other: 0}
    assert admin.size(queue) == 1
    held[0].ack()
    assert admin.unacked([queue]) == {queue: 1}
    held[1].ack()
    assert admin.unacked([queue]) == {queue: 0}


def test_purge_empties_one_queue_and_size_counts_ready_messages(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    other = f"{queue}-other"
    transport.publish_many([(make_message(index), queue) for index in range(3)])
    transport.publish(make_message(), queue=other)

    assert admin.size(queue) == 3
    assert admin.purge(queue) == 3
    assert admin.size(queue) == 0
    assert admin.size(other) == 1
    expect_nothing(transport, [queue])
    assert admin.purge(other) == 1


def test_fetch_over_several_queues_serves_each_and_only_those(
    transport: Transport, queue: str, admin: QueueAdmin
) -> None:
    first, second, ignored = f"{queue}-a", f"{queue}-b", f"{queue}-c"
    transport.publish(make_message(1), queue=first)
    transport.publish(make_message(2), queue=second)
    transport.publish(make_message(3), queue=ignored)

    got = drain(transport, [first, second], 2)

    assert sorted(delivery.queue for delivery in got) == sorted([first, second])
    expect_nothing(transport, [first, second])
    assert admin.size(ignored) == 1
    admin.purge(ignored)


def test_two_handles_on_one_url_share_their_queues(
    transport_factory: TransportFactory, queue: str
) -> None:
    producer, consumer = transport_factory(), transport_factory()
    message = make_message()

    producer.publish(message, queue=queue)

    assert ids(drain(consumer, [queue], 1)) == [message.headers["id"]]


def test_each_message_goes_to_exactly_one_of_two_competing_consumers(
    transport_factory: TransportFactory, queue: str
) -> None:
    producer = transport_factory()
    producer.publish_many([(make_message(index), queue) for index in range(40)])
    seen: list[list[str]] = [[], []]

    def consume(slot: int) -> None:
        consumer = transport_factory()
        while True:
            got = consumer.fetch([queue], limit=3, timeout=0.3, owner=f"node/{slot}")
            if not got:
                return
            seen[slot] += ids(got)
            consumer.ack_many(got)

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(seen[0]) + len(seen[1]) == 40
    assert len(set(seen[0]) | set(seen[1])) == 40
