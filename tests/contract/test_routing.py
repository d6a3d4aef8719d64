"""The routing contract: direct and topic exchanges deliver a copy to every queue whose
binding matches, on every broker (RabbitMQ routes itself; Redis, SQLite and memory through
their binding tables). Names start with ``compat2-`` and are deleted on RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

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


def _bind(admin: QueueAdmin, exchange: str, kind: str, *pairs: tuple[str, str]) -> None:
    for queue, key in pairs:
        admin.bind(queue, exchange=exchange, exchange_type=kind, routing_key=key)


def _send(transport: Transport, exchange: str, key: str, kind: str = "topic", **more: Any) -> str:
    """Publish one message through ``exchange`` with ``key``; returns its id."""
    message = make_message()
    routing(transport).publish_routed(
        message, exchange=exchange, exchange_type=kind, routing_key=key, **more
    )
    return str(message.headers["id"])


def _sizes(admin: QueueAdmin, queues: list[str], expected: list[int]) -> None:
    wait_until(lambda: [admin.size(queue) for queue in queues] == expected)


def test_a_topic_message_reaches_every_matching_queue_once(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, c) = names
    pairs = ((a, "sport.*"), (a, "sport.tennis"), (b, "*.tennis"), (c, "news.*"))
    _bind(admin, exchange, "topic", *pairs)
    _send(transport, exchange, "sport.tennis")
    _sizes(admin, [a, b, c], [1, 1, 0])
    _send(transport, exchange, "news.world")
    _sizes(admin, [a, b, c], [1, 1, 1])


def test_a_direct_exchange_delivers_to_every_queue_bound_with_the_key(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, c) = names
    _bind(admin, exchange, "direct", (a, "images"), (b, "images"), (c, "video"))
    _send(transport, exchange, "images", "direct")
    _sizes(admin, [a, b, c], [1, 1, 0])


def test_the_routed_queue_is_bound_before_the_message_is_published(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    for key in ("feed.x", "feed.y"):
        _send(transport, exchange, key, declare=[Binding(a, "feed.#")])
    _sizes(admin, [a, b], [2, 0])


def test_a_key_no_binding_matches_reaches_no_queue(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    _bind(admin, exchange, "topic", (a, "sport.*"))
    _send(transport, exchange, "weather.today")
    _send(transport, exchange, "sport.golf")
    _sizes(admin, [a, b], [1, 0])


def test_unbind_stops_a_binding(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    _bind(admin, exchange, "topic", (a, "sport.*"), (b, "sport.*"))
    admin.unbind(a, exchange=exchange, routing_key="sport.*")
    _send(transport, exchange, "sport.golf")
    _sizes(admin, [a, b], [0, 1])


def test_a_routed_copy_given_back_returns_to_its_own_queue(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    _bind(admin, exchange, "topic", (a, "sport.*"), (b, "#"))
    sent = _send(transport, exchange, "sport.golf")
    _sizes(admin, [a, b], [1, 1])
    taken = transport.fetch([a], limit=1, timeout=5, owner="compat2/1")
    assert len(taken) == 1 and taken[0].routing_key == "sport.golf"
    taken[0].requeue()
    again = transport.fetch([a], limit=1, timeout=5, owner="compat2/1")
    assert [d.message.headers["id"] for d in again] == [sent]
    assert again[0].queue == a
    again[0].ack()
    _sizes(admin, [a, b], [0, 1])


@pytest.mark.needs("leases")
def test_a_routed_copy_of_a_dead_owner_comes_back_to_its_own_queue_only(
    transport: Transport, admin: QueueAdmin, names: tuple[str, list[str]]
) -> None:
    exchange, (a, b, _) = names
    _bind(admin, exchange, "topic", (a, "sport.*"), (b, "#"))
    _send(transport, exchange, "sport.golf")
    _sizes(admin, [a, b], [1, 1])
    assert len(transport.fetch([a], limit=1, timeout=5, owner="compat2/dead")) == 1
    assert transport.recover("compat2/dead") == 1
    # back on its own queue: not copied to every matching one (kombu's restore), nor lost
    # to a queue named like its routing key
    _sizes(admin, [a, b, "sport.golf"], [1, 1, 0])
