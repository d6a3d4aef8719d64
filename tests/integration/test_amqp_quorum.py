"""Quorum queues on the machine's RabbitMQ: declared as Celery 5.5+ declares them, counted
deliveries, per-consumer QoS, poison messages bounded by x-delivery-limit, and Celery's
native delayed delivery in both directions (a Celery 5.7 producer's countdown reaches a
caraway consumer through the ``celery_delayed_*`` tree, and caraway's goes the same way).

Queues are ``caraway-ha-<uuid>`` (deleted afterwards); the dead-letter queue is private to
each test. The native delay tree (``celery_delayed_*``) is shared by design, as Celery's.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caraway.brokers.amqp import admin as amqp_admin
from caraway.brokers.amqp import native_delay
from caraway.brokers.amqp import transport as amqp_transport
from caraway.brokers.amqp.admin import AMQPAdmin
from caraway.brokers.amqp.transport import AMQPTransport
from caraway.protocol.message import Message
from tests.contract.conftest import AMQP_URL, _rabbit_or_skip, delete_amqp_queues
from tests.helpers import wait_until

pytestmark = pytest.mark.amqp

QUORUM = {"queue_type": "quorum", "max_retries": 1, "prefetch_count": 10}


@pytest.fixture
def queue() -> Iterator[str]:
    _rabbit_or_skip()
    name = f"caraway-ha-{uuid.uuid4().hex[:12]}"
    yield name
    delete_amqp_queues([name])


@pytest.fixture
def dead(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"caraway-ha-dead-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(amqp_transport, "DEAD_QUEUE", name)
    monkeypatch.setattr(amqp_admin, "DEAD_QUEUE", name)
    yield name
    delete_amqp_queues([name])


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    handles: list[Any] = []
    yield handles
    for handle in handles:
        handle.close()


def transport(opened: list[Any], **options: Any) -> AMQPTransport:
    handle = AMQPTransport(AMQP_URL, options={**QUORUM, **options})
    opened.append(handle)
    return handle


def message(eta: datetime | None = None) -> Message:
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {"lang": "py", "task": "proj.add", "id": task_id, "retries": 0}
    if eta is not None:
        headers["eta"] = eta.isoformat()
    return Message(
        body=b"[[1, 1], {}, {}]",
        headers=headers,
        properties={"correlation_id": task_id, "delivery_mode": 2},
    )


def rabbitmqctl(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--formatter", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return list(json.loads(out or "[]"))


def test_the_queue_is_declared_quorum_and_each_consumer_has_its_own_prefetch(
    queue: str, opened: list[Any]
) -> None:
    consumer = transport(opened)
    consumer.publish(message(), queue=queue)
    assert len(consumer.fetch([queue], limit=1, timeout=5, owner="o")) == 1

    (found,) = [q for q in rabbitmqctl("list_queues", "name", "type") if q["name"] == queue]
    assert found["type"] == "quorum"
    consumers = [c for c in rabbitmqctl("list_consumers", "queue_name", "prefetch_count")
                 if c["queue_name"] == queue]  # fmt: skip
    assert [c["prefetch_count"] for c in consumers] == [10]
    assert consumer.capabilities.delivery_count and not consumer.capabilities.priorities


def test_a_returned_message_comes_back_counted(queue: str, opened: list[Any]) -> None:
    consumer = transport(opened)
    consumer.publish(message(), queue=queue)
    (first,) = consumer.fetch([queue], limit=1, timeout=5, owner="o")
    assert first.delivery_count == 1 and not first.redelivered
    first.requeue()

    (again,) = consumer.fetch([queue], limit=1, timeout=5, owner="o")
    assert again.delivery_count == 2 and again.redelivered
    assert "x-delivery-count" not in again.message.headers
    again.ack()


def test_a_message_over_the_delivery_limit_is_dead_lettered_by_rabbitmq(
    queue: str, dead: str, opened: list[Any]
) -> None:
    consumer = transport(opened, delivery_limit=2)
    sent = message()
    consumer.publish(sent, queue=queue)
    for _ in range(3):  # delivered, returned, ... the third return crosses the limit
        (delivery,) = consumer.fetch([queue], limit=1, timeout=5, owner="o")
        delivery.requeue()
    admin = AMQPAdmin(AMQP_URL, options=QUORUM)
    opened.append(admin)

    letters = wait_until(admin.dead_letters, timeout=10, message="the dead letter")
    assert [letter.message.headers["id"] for letter in letters] == [sent.headers["id"]]
    assert "delivery_limit" in letters[0].reason and letters[0].queue == queue
    assert consumer.fetch([queue], limit=1, timeout=0.3, owner="o") == []


def test_caraways_countdown_waits_in_celerys_delay_tree(queue: str, opened: list[Any]) -> None:
    producer, consumer = transport(opened), transport(opened)
    assert consumer.fetch([queue], limit=1, timeout=0.1, owner="o") == []  # binds the queue
    sent = message(eta=datetime.now(timezone.utc) + timedelta(seconds=2))
    started = time.monotonic()

    producer.publish(sent, queue=queue)

    assert consumer.fetch([queue], limit=1, timeout=1.0, owner="o") == []
    (arrived,) = consumer.fetch([queue], limit=1, timeout=10, owner="o")
    assert time.monotonic() - started >= 1.5
    assert arrived.message.headers["id"] == sent.headers["id"]
    assert arrived.routing_key == queue  # the delay digits are gone
    arrived.ack()


def test_a_parked_delivery_comes_back_through_the_tree(queue: str, opened: list[Any]) -> None:
    consumer = transport(opened)
    consumer.publish(message(), queue=queue)
    (delivery,) = consumer.fetch([queue], limit=1, timeout=5, owner="o")

    delivery.park(time.time() + 1.5)

    assert consumer.fetch([queue], limit=1, timeout=0.8, owner="o") == []
    (back,) = consumer.fetch([queue], limit=1, timeout=10, owner="o")
    assert back.message.headers["id"] == delivery.message.headers["id"]
    back.ack()


def test_a_celery_producers_countdown_reaches_a_caraway_consumer(
    queue: str, opened: list[Any]
) -> None:
    celery = pytest.importorskip("celery")
    consumer = transport(opened, exchange_type="topic")
    assert consumer.fetch([queue], limit=1, timeout=0.1, owner="o") == []  # declares, binds
    app = celery.Celery("producer", broker=AMQP_URL)
    app.conf.update(
        task_default_queue=queue,
        task_default_queue_type="quorum",
        task_default_exchange_type="topic",
        broker_connection_retry_on_startup=True,
    )
    try:
        started = time.monotonic()
        sent = app.send_task("proj.add", (2, 2), countdown=2)
        # Celery sent it into its tree, not to the queue: nothing before the countdown
        assert consumer.fetch([queue], limit=1, timeout=1.0, owner="o") == []
        (arrived,) = consumer.fetch([queue], limit=1, timeout=10, owner="o")
    finally:
        app.close()
    assert time.monotonic() - started >= 1.5
    assert arrived.message.headers["id"] == sent.id
    assert arrived.routing_key == queue
    arrived.ack()


def test_the_tree_is_declared_with_celerys_own_arguments(opened: list[Any]) -> None:
    """Celery's worker declares the same entities: a mismatch would close its channel."""
    kombu = pytest.importorskip("kombu")
    from kombu.transport.native_delayed_delivery import (
        declare_native_delayed_delivery_exchanges_and_queues,
    )

    _rabbit_or_skip()
    consumer = transport(opened)
    name = f"caraway-ha-{uuid.uuid4().hex[:12]}"
    try:
        consumer.fetch([name], limit=1, timeout=0.1, owner="o")  # caraway declares the tree
        with kombu.Connection(AMQP_URL) as conn:
            declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")  # no error
    finally:
        delete_amqp_queues([name])
    levels = {q["name"] for q in rabbitmqctl("list_queues", "name")}
    assert {native_delay.level_name(n) for n in range(native_delay.BITS)} <= levels
