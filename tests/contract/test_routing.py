"""The routing contract: direct and topic exchanges deliver a copy to every queue whose
binding matches, on every broker (RabbitMQ routes itself; Redis, SQLite and memory through
their binding tables). Names start with ``compat2-`` and are deleted on RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from caraway.brokers.contracts import Binding, QueueAdmin, Routing, Transport
from tests.contract.conftest import delete_amqp_queues, make_message, wait_until

pytestmark = pytest.mark.needs("routing")


@pytest.fixture
def names(broker_url: str) -> Iterator[tuple[str, list[str]]]:
    """An exchange and three queues of this test's own."""
    base = f"compat2-{uuid.uuid4().hex[:10]}"
    queues = [f"{base}-{suffix}" for suffix in "abc"]
    yield base, queues
    if broker_url.startswith("amqp"):
        delete_amqp_queues([base, *queues])


def routing(transport: Transport) -> Routing:
    assert isinstance(transport, Routing), "deselected where it does not hold"
    return transport


def _sizes(admin: QueueAdmin, queues: list[str], expected: list[int]) -> None:
    wait_until(lambda: [admin.size(queue) for queue in queues] == expected)


def test_a_topic_message_reaches_every_matching_queue_once(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, c) = names
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.tennis")
    admin.bind(b, exchange=exchange, exchange_type="topic", routing_key="*.tennis")
    admin.bind(c, exchange=exchange, exchange_type="topic", routing_key="news.*")
    message = make_message(1)
    routing(transport).publish_routed(
        message, exchange=exchange, exchange_type="topic", routing_key="sport.tennis"
    )
    _sizes(admin, [a, b, c], [1, 1, 0])
    routing(transport).publish_routed(
        make_message(2), exchange=exchange, exchange_type="topic", routing_key="news.world"
    )
    _sizes(admin, [a, b, c], [1, 1, 1])


def test_a_direct_exchange_delivers_to_every_queue_bound_with_the_key(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, c) = names
    for queue, key in ((a, "images"), (b, "images"), (c, "video")):
        admin.bind(queue, exchange=exchange, exchange_type="direct", routing_key=key)
    routing(transport).publish_routed(
        make_message(), exchange=exchange, exchange_type="direct", routing_key="images"
    )
    _sizes(admin, [a, b, c], [1, 1, 0])


def test_the_routed_queue_is_bound_before_the_message_is_published(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    send = routing(transport).publish_routed
    declare = [Binding(a, "feed.#")]
    send(
        make_message(1),
        exchange=exchange,
        exchange_type="topic",
        routing_key="feed.x",
        declare=declare,
    )
    send(
        make_message(2),
        exchange=exchange,
        exchange_type="topic",
        routing_key="feed.y",
        declare=declare,
    )
    _sizes(admin, [a, b], [2, 0])


def test_a_key_no_binding_matches_reaches_no_queue(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    routing(transport).publish_routed(
        make_message(1), exchange=exchange, exchange_type="topic", routing_key="weather.today"
    )
    routing(transport).publish_routed(
        make_message(2), exchange=exchange, exchange_type="topic", routing_key="sport.golf"
    )
    _sizes(admin, [a, b], [1, 0])


def test_unbind_stops_a_binding(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    admin.bind(b, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    admin.unbind(a, exchange=exchange, routing_key="sport.*")
    routing(transport).publish_routed(
        make_message(), exchange=exchange, exchange_type="topic", routing_key="sport.golf"
    )
    _sizes(admin, [a, b], [0, 1])


def test_a_routed_copy_given_back_returns_to_its_own_queue(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    admin.bind(b, exchange=exchange, exchange_type="topic", routing_key="#")
    message = make_message()
    routing(transport).publish_routed(
        message, exchange=exchange, exchange_type="topic", routing_key="sport.golf"
    )
    _sizes(admin, [a, b], [1, 1])
    taken = transport.fetch([a], limit=1, timeout=5, owner="compat2/1")
    assert len(taken) == 1 and taken[0].routing_key == "sport.golf"
    taken[0].requeue()
    again = transport.fetch([a], limit=1, timeout=5, owner="compat2/1")
    assert [d.message.headers["id"] for d in again] == [message.headers["id"]]
    assert again[0].queue == a
    again[0].ack()
    _sizes(admin, [a, b], [0, 1])


@pytest.mark.needs("leases")
def test_a_routed_copy_of_a_dead_owner_comes_back_to_its_own_queue_only(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    admin.bind(a, exchange=exchange, exchange_type="topic", routing_key="sport.*")
    admin.bind(b, exchange=exchange, exchange_type="topic", routing_key="#")
    routing(transport).publish_routed(
        make_message(), exchange=exchange, exchange_type="topic", routing_key="sport.golf"
    )
    _sizes(admin, [a, b], [1, 1])
    assert len(transport.fetch([a], limit=1, timeout=5, owner="compat2/dead")) == 1
    assert transport.recover("compat2/dead") == 1
    # back on its own queue: not copied to every matching one (kombu's restore), nor lost
    # to a queue named like its routing key
    _sizes(admin, [a, b, "sport.golf"], [1, 1, 0])
