"""The queue-admin contract: sizes, purges, declarations, the schedule listing and the
revocation record, on every broker, beside that broker's own transport.

Dead letters are held to the contract in ``test_transports.py``, where they are made.
"""

from __future__ import annotations

import time
import uuid

import pytest

from caraway.brokers.contracts import QueueAdmin, Revocations, Scheduling, Transport
from tests.contract.conftest import AdminFactory, TransportFactory, make_message, wait_until
from tests.contract.test_transports import drain, ids, ids_of


def revocations(admin: QueueAdmin) -> Revocations:
    assert isinstance(admin, Revocations), "deselected where it does not hold"
    return admin


def scheduling(transport: Transport) -> Scheduling:
    assert isinstance(transport, Scheduling), "deselected where it does not hold"
    return transport


def test_a_queue_nobody_wrote_to_has_size_zero_and_purges_nothing(
    admin: QueueAdmin, queue: str
) -> None:
    assert admin.size(queue) == 0
    assert admin.purge(queue) == 0


def test_size_and_purge_count_messages_of_every_priority(
    transport: Transport, admin: QueueAdmin, queue: str
) -> None:
    priorities = [None, 0, 3, 5, 9]
    transport.publish_many([(make_message(i, priority=p), queue) for i, p in enumerate(priorities)])

    assert admin.size(queue) == len(priorities)
    assert admin.purge(queue) == len(priorities)
    assert admin.size(queue) == 0


def test_declare_is_idempotent_and_keeps_what_the_queue_holds(
    transport: Transport, admin: QueueAdmin, queue: str
) -> None:
    admin.declare(queue)
    admin.declare(queue)
    message = make_message()
    transport.publish(message, queue=queue)

    admin.declare(queue)

    assert admin.size(queue) == 1
    assert ids(drain(transport, [queue], 1)) == ids_of([message])


@pytest.mark.needs("scheduling")
def test_purge_leaves_parked_messages_alone(
    transport: Transport, admin: QueueAdmin, queue: str
) -> None:
    parked = make_message(1)
    scheduling(transport).publish_parked(parked, queue=queue, eta=time.time() + 60)
    transport.publish(make_message(2), queue=queue)

    assert admin.size(queue) == 1  # the parked one is not ready
    assert admin.purge(queue) == 1
    if admin.lists_schedule:
        listed = [m for _, q, m in admin.scheduled(limit=1000) if q == queue]
        assert ids_of(listed) == ids_of([parked])


@pytest.mark.needs("scheduling")
def test_scheduled_lists_parked_messages_soonest_first(
    transport: Transport, admin: QueueAdmin, queue: str
) -> None:
    schedule = scheduling(transport)
    now = time.time()
    later, soonest = make_message(1), make_message(2)
    schedule.publish_parked(later, queue=queue, eta=now + 60)
    schedule.publish_parked(soonest, queue=queue, eta=now + 30)
    transport.publish(make_message(3), queue=queue)
    (delivery,) = drain(transport, [queue], 1)
    schedule.park(delivery, now + 45)

    listed = [(eta, m) for eta, q, m in admin.scheduled(limit=1000) if q == queue]

    if not admin.lists_schedule:
        assert listed == []
        return
    assert ids_of([m for _, m in listed]) == ids_of([soonest, delivery.message, later])
    assert [eta for eta, _ in listed] == pytest.approx([now + 30, now + 45, now + 60], abs=1)
    assert len(admin.scheduled(limit=1)) == 1


def test_requeueing_dead_letters_that_do_not_exist_requeues_nothing(
    admin: QueueAdmin, queue: str
) -> None:
    assert admin.requeue_dead_letters([987654321]) == 0
    assert admin.size(queue) == 0


@pytest.mark.needs("revocations")
def test_revoked_ids_are_kept_until_they_expire(admin: QueueAdmin) -> None:
    record = revocations(admin)
    short, long = f"short-{uuid.uuid4()}", f"long-{uuid.uuid4()}"

    record.record_revoked([short], expires=0.5)
    record.record_revoked([long], expires=60)

    assert {short, long} <= set(record.revoked_ids())
    wait_until(lambda: short not in record.revoked_ids(), timeout=5)
    assert long in record.revoked_ids()


@pytest.mark.needs("revocations")
def test_recording_a_revoked_id_again_moves_its_expiry(admin: QueueAdmin) -> None:
    record = revocations(admin)
    kept, gone = f"kept-{uuid.uuid4()}", f"gone-{uuid.uuid4()}"
    record.record_revoked([kept, gone], expires=0.5)

    record.record_revoked([kept], expires=60)
    record.record_revoked([], expires=60)  # nothing to add is fine

    wait_until(lambda: gone not in record.revoked_ids(), timeout=5)
    assert kept in record.revoked_ids()


@pytest.mark.needs("revocations")
def test_every_admin_of_a_broker_sees_the_same_revocations(admin_factory: AdminFactory) -> None:
    writer, reader = revocations(admin_factory()), revocations(admin_factory())
    task_id = str(uuid.uuid4())

    writer.record_revoked([task_id], expires=60)

    assert task_id in reader.revoked_ids()


def test_an_admin_sees_what_any_transport_of_its_broker_published(
    transport_factory: TransportFactory, admin_factory: AdminFactory, queue: str
) -> None:
    transport_factory().publish_many([(make_message(index), queue) for index in range(3)])

    assert admin_factory().size(queue) == 3
