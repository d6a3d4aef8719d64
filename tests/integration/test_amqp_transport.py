"""The AMQP transport against the machine's RabbitMQ (127.0.0.1:5672, guest/guest).

Each test uses queues named ``t-<uuid>`` and deletes them (and their exchanges) afterwards.
A missing RabbitMQ skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest

from caraway.brokers.amqp import delay as ladder
from caraway.brokers.amqp.admin import AMQPAdmin
from caraway.brokers.amqp.transport import AMQPTransport
from caraway.brokers.contracts import Delivery
from caraway.clients.amqp import parse_amqp_url
from caraway.exceptions import BrokerError
from caraway.protocol.message import Message
from tests.helpers import wait_until

pytestmark = pytest.mark.amqp

URL = "amqp://guest:guest@127.0.0.1:5672//"


def _raw_channel() -> tuple[Any, Any]:
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    conn.connect()
    channel = conn.channel()
    channel.auto_decode = False
    return conn, channel


@pytest.fixture(scope="module")
def rabbit() -> str:
    try:
        conn, _ = _raw_channel()
        conn.close()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no RabbitMQ at 127.0.0.1:5672: {exc!r}")
    return URL


@pytest.fixture
def queue_name(rabbit: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(f"t-{uuid.uuid4().hex[:12]}")
        return made[-1]

    try:
        yield make
    finally:
        conn, channel = _raw_channel()
        try:
            for name in made:
                channel.queue_delete(name)
                channel.exchange_delete(name)
        finally:
            conn.close()


@pytest.fixture
def make_transport(rabbit: str) -> Iterator[Callable[..., AMQPTransport]]:
    opened: list[AMQPTransport] = []

    def factory(**options: Any) -> AMQPTransport:
        opened.append(AMQPTransport(rabbit, options=options))
        return opened[-1]

    try:
        yield factory
    finally:
        for transport in opened:
            transport.close()


@pytest.fixture
def admin(rabbit: str) -> Iterator[AMQPAdmin]:
    opened = AMQPAdmin(rabbit)
    try:
        yield opened
    finally:
        opened.close()


def message(**headers: Any) -> Message:
    task_id = str(uuid.uuid4())
    return Message(
        body=b'[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
        headers={"lang": "py", "task": "tests.add", "id": task_id, "retries": 0, **headers},
        properties={"correlation_id": task_id, "reply_to": "oid-1", "delivery_mode": 2},
    )


def fetch_all(
    transport: AMQPTransport, queue: str, count: int, timeout: float = 10
) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += transport.fetch([queue], limit=count - len(got), timeout=0.5, owner="t/1")
    return got


def test_url_defaults_match_celery() -> None:
    params = parse_amqp_url("pyamqp://guest@localhost//", {})
    assert (params.userid, params.password, params.virtual_host) == ("guest", "guest", "/")
    assert (params.host, params.port, params.heartbeat) == ("localhost", 5672, 120.0)
    other = parse_amqp_url("amqps://u:p%40ss@h:1234/vh?heartbeat=10", {"connect_timeout": 2})
    assert (other.userid, other.password, other.virtual_host) == ("u", "p@ss", "vh")
    assert (other.port, other.ssl, other.heartbeat, other.connect_timeout) == (1234, True, 10, 2)
    assert parse_amqp_url("amqp://localhost", {}).virtual_host == "/"
    assert parse_amqp_url("amqps://h//", {}).port == 5671


def test_published_message_round_trips_headers_and_properties(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    transport, queue = make_transport(), queue_name()
    sent = message(
        expires=1795755998.877173,  # a float, like the pidbox `expires` header
        eta=None,
        timelimit=[None, 20.5],
        stamps={"nested": {"k": [1, "two", True]}},
        big=2**40,
    )
    sent.properties["priority"] = 3
    transport.publish(sent, queue=queue)
    (delivery,) = fetch_all(transport, queue, 1)
    assert delivery.message.headers == sent.headers
    assert isinstance(delivery.message.headers["expires"], float)
    assert delivery.message.body == sent.body
    assert delivery.message.properties == sent.properties
    assert (delivery.queue, delivery.routing_key, delivery.exchange) == (queue, queue, "")
    assert not delivery.redelivered
    delivery.ack()
    assert admin.size(queue) == 0


def test_a_published_batch_round_trips_bodies_larger_than_a_frame_in_order(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    transport, queue = make_transport(), queue_name()
    sent = [
        message(timelimit=[None, 20.5], stamps={"k": [1, "two", True]}, big=2**40),
        message(),
        message(),
    ]
    sent[1] = Message(b"x" * 300_000, sent[1].headers, properties=sent[1].properties)
    sent[2] = Message(b"", sent[2].headers, properties={"priority": 3, "delivery_mode": 2})
    transport.publish_many([(m, queue) for m in sent])
    got = fetch_all(transport, queue, 3)
    assert [d.message.headers for d in got] == [m.headers for m in sent]
    assert [d.message.body for d in got] == [m.body for m in sent]
    assert [d.message.properties for d in got] == [m.properties for m in sent]
    transport.ack_many(got)
    assert admin.size(queue) == 0


def test_queue_is_declared_as_celery_declares_it(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    queue = queue_name()
    make_transport().publish(message(), queue=queue)
    conn, channel = _raw_channel()
    try:
        # Re-declaring with Celery's exact flags succeeds; any other flag would fail.
        _, count, _ = channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.exchange_declare(queue, "direct", durable=True, auto_delete=False)
        assert count == 1
    finally:
        conn.close()


def test_max_priority_option_declares_x_max_priority_and_serves_high_first(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    transport, queue = make_transport(max_priority=10), queue_name()
    low, high = message(), message()
    low.properties["priority"] = 1
    high.properties["priority"] = 9
    transport.publish_many([(low, queue), (high, queue)])
    conn, channel = _raw_channel()
    try:
        channel.queue_declare(
            queue, durable=True, auto_delete=False, arguments={"x-max-priority": 10}
        )
    finally:
        conn.close()
    first = fetch_all(transport, queue, 2)
    assert [d.message.headers["id"] for d in first] == [high.headers["id"], low.headers["id"]]


def test_publish_many_confirms_a_batch_and_size_counts_it(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    transport, queue = make_transport(), queue_name()
    transport.publish_many([(message(), queue) for _ in range(200)])
    assert admin.size(queue) == 200  # confirmed means on the queue, no waiting needed
    assert admin.purge(queue) == 200
    assert admin.size(queue) == 0
    assert admin.size(f"missing-{uuid.uuid4().hex}") == 0


def test_unroutable_publish_is_a_broker_error(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    transport, queue = make_transport(), queue_name()
    transport.declare(queue)
    with pytest.raises(BrokerError, match="unroutable"):
        transport.publish(message(), queue=queue, exchange=queue, routing_key="nobody-bound")
    transport.publish(message(), queue=queue)  # the transport is still usable
    assert admin.size(queue) == 1


def test_prefetch_is_set_once_to_the_first_fetch_limit(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    producer, consumer, queue = make_transport(), make_transport(), queue_name()
    producer.publish_many([(message(), queue) for _ in range(10)])
    held = fetch_all(consumer, queue, 3)
    assert len(held) == 3
    # the broker holds back the rest while three are unacked
    assert consumer.fetch([queue], limit=3, timeout=0.5, owner="t/1") == []
    assert admin.size(queue) == 7
    for delivery in held:
        delivery.ack()
        delivery.ack()  # idempotent: a second ack must not close the channel
    assert len(fetch_all(consumer, queue, 3)) == 3


def test_ack_many_leaves_out_of_its_multiple_ack_a_delivery_it_was_not_given(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    producer, consumer, queue = make_transport(), make_transport(), queue_name()
    producer.publish_many([(message(), queue) for _ in range(6)])
    held = fetch_all(consumer, queue, 6)
    assert len(held) == 6
    consumer.ack_many([held[0], held[1]])  # one multiple ack
    consumer.ack_many([held[3], held[2], held[5]])  # held[4] is still running
    consumer.ack_many([held[5]])  # already acked: must not close the channel
    consumer.close()
    (back,) = fetch_all(make_transport(), queue, 1)
    assert back.redelivered
    assert back.message.headers["id"] == held[4].message.headers["id"]
    assert admin.size(queue) == 0


def test_requeued_delivery_comes_back_redelivered(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    transport, queue = make_transport(), queue_name()
    sent = message()
    transport.publish(sent, queue=queue)
    fetch_all(transport, queue, 1)[0].requeue()
    (again,) = fetch_all(transport, queue, 1)
    assert again.redelivered and again.message.headers["id"] == sent.headers["id"]
    again.ack()


def test_unacked_deliveries_return_when_the_consumer_closes(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    first, queue = make_transport(), queue_name()
    first.publish_many([(message(), queue) for _ in range(2)])
    assert len(fetch_all(first, queue, 2)) == 2
    assert first.recover("t/1") == 0  # nothing to do: the broker owns the claims
    first.close()
    second = make_transport()
    back = fetch_all(second, queue, 2)
    assert len(back) == 2 and all(d.redelivered for d in back)


def test_dead_letter_keeps_message_with_reason_and_can_requeue_it(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    transport, queue = make_transport(), queue_name()
    admin.purge_dead_letters()
    sent = message()
    transport.publish(sent, queue=queue)
    fetch_all(transport, queue, 1)[0].dead_letter("ContentDisallowed: nope")
    letters = wait_until(admin.dead_letters, message="a dead letter")
    assert [(d.queue, d.reason) for d in letters] == [(queue, "ContentDisallowed: nope")]
    assert letters[0].message.headers == sent.headers
    assert admin.size(queue) == 0
    assert admin.requeue_dead_letters([letters[0].id]) == 1
    (back,) = fetch_all(transport, queue, 1)
    assert back.message.headers == sent.headers
    back.ack()
    assert admin.dead_letters() == []


def test_parked_message_returns_to_its_queue_at_its_eta_intact(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    transport, queue = make_transport(), queue_name()
    sent = message(eta="2030-01-01T00:00:00+00:00")
    sent.properties["expiration"] = "600000"
    transport.publish(sent, queue=queue)
    parked_at = time.time()
    fetch_all(transport, queue, 1)[0].park(parked_at + 2.0)
    assert transport.fetch([queue], limit=1, timeout=1.0, owner="t/1") == []
    (back,) = fetch_all(transport, queue, 1, timeout=10)
    assert time.time() - parked_at >= 2.0
    assert back.message.headers == sent.headers  # ladder bits and x-death stripped
    assert back.message.body == sent.body
    assert "expiration" not in back.message.properties
    back.ack()


def test_ladder_bits_sum_to_the_delay() -> None:
    for seconds in (1, 2, 3, 61, 3600, 86400 * 30):
        bits = ladder.bit_headers(seconds)
        assert sum(2**n for n in range(ladder.LEVELS) if bits[f"caraway-delay-b{n}"] == "1") == (
            seconds
        )
    assert ladder.delay_seconds(time.time() + 10**12, time.time()) == 2**ladder.LEVELS - 1
    assert ladder.delay_seconds(0.0, 5.0) == 1


def test_fetch_reconnects_after_the_connection_is_killed(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str]
) -> None:
    transport, queue = make_transport(), queue_name()
    transport.publish(message(), queue=queue)
    (held,) = fetch_all(transport, queue, 1)
    link = transport._link
    assert link is not None
    link.conn.transport.sock.close()  # the socket dies under the I/O thread
    wait_until(lambda: link.broken is not None, message="the link to notice")
    held.ack()  # stale: logged and skipped, the broker requeued it
    (again,) = fetch_all(transport, queue, 1)
    assert again.redelivered
    again.ack()
    sent = message()
    transport.publish(sent, queue=queue)  # publishing works on the new connection too
    (fresh,) = fetch_all(transport, queue, 1)
    assert fresh.message.headers["id"] == sent.headers["id"] and not fresh.redelivered
    fresh.ack()


def test_a_consumer_that_stops_fetching_keeps_its_connection_through_heartbeats(
    make_transport: Callable[..., AMQPTransport], queue_name: Callable[[], str], admin: AMQPAdmin
) -> None:
    # The consumer reads its own deliveries when it fetches; while it runs a long task
    # and fetches nothing, the I/O thread must still read (heartbeats, deliveries).
    producer, consumer, queue = make_transport(), make_transport(heartbeat=1), queue_name()
    producer.publish(message(), queue=queue)
    # a window of two (the first fetch's limit): the second message is pushed while held
    (held,) = consumer.fetch([queue], limit=2, timeout=5, owner="t/1")
    link = consumer._link
    assert link is not None
    producer.publish(message(), queue=queue)
    wait_until(lambda: len(consumer._inbox) == 1, message="the I/O thread to read it")
    time.sleep(3.5)  # a "long task": over three heartbeat intervals without a fetch
    assert link.broken is None and consumer._link is link
    held.ack()
    (second,) = fetch_all(consumer, queue, 1)
    assert not second.redelivered
    second.ack()
    assert admin.size(queue) == 0
