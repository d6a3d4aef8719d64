"""The Scheduling contract: a message published into the broker's schedule arrives once due,
intact, as a first delivery. Parking a held delivery is held to it in ``test_transports.py``.
"""

from __future__ import annotations

import time

import pytest

from caraway.brokers.contracts import Scheduling, Transport
from tests.contract.conftest import TransportFactory, make_message
from tests.contract.test_transports import OTHER, drain, expect_nothing, ids


def scheduling(transport: Transport) -> Scheduling:
    assert isinstance(transport, Scheduling), "deselected where it does not hold"
    return transport


@pytest.mark.needs("scheduling")
def test_a_message_published_parked_arrives_only_once_due(transport: Transport, queue: str) -> None:
    message = make_message()
    eta = time.time() + 0.6

    scheduling(transport).publish_parked(message, queue=queue, eta=eta)

    expect_nothing(transport, [queue], within=0.2)
    got = transport.fetch([queue], limit=1, timeout=5, owner=OTHER)
    assert ids(got) == [message.headers["id"]]
    assert time.time() >= eta - 0.05
    assert time.time() < eta + 1.5, "a due message must wake a waiting fetch promptly"
    assert not got[0].redelivered
    if transport.capabilities.delivery_count:
        assert got[0].delivery_count == 1


@pytest.mark.needs("scheduling")
def test_a_message_published_parked_with_a_past_eta_is_ready_at_once(
    transport: Transport, queue: str
) -> None:
    message = make_message()

    scheduling(transport).publish_parked(message, queue=queue, eta=time.time() - 1)

    assert ids(transport.fetch([queue], limit=1, timeout=1, owner=OTHER)) == [message.headers["id"]]


@pytest.mark.needs("scheduling")
def test_a_parked_message_arrives_intact(transport_factory: TransportFactory, queue: str) -> None:
    producer, consumer = transport_factory(), transport_factory()
    message = make_message(7, priority=3)
    message.body = b"\x00\xffbinary body\n"
    message.content_type = "application/x-msgpack"
    message.content_encoding = "binary"
    message.headers["eta"] = "2030-01-01T00:00:00+00:00"

    scheduling(producer).publish_parked(message, queue=queue, eta=time.time() + 0.3)
    (delivery,) = drain(consumer, [queue], 1, owner=OTHER)

    assert delivery.queue == queue
    assert delivery.message.body == message.body
    assert delivery.message.headers == message.headers
    assert delivery.message.content_type == "application/x-msgpack"
    assert delivery.message.content_encoding == "binary"
    assert delivery.message.properties["correlation_id"] == message.headers["id"]
