"""Custom exchanges on RabbitMQ: the producer declares the exchange and its route's queue as
Celery's does (so no worker need have started), once per connection, not per message.
Names start with ``compat2-`` and are deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway, Exchange, Queue
from caraway.brokers.amqp import transport as amqp_transport
from tests.contract.conftest import delete_amqp_queues
from tests.helpers import wait_until
from tests.integration.test_amqp_transport import _raw_channel, rabbit  # noqa: F401 - fixture

pytestmark = [pytest.mark.amqp, pytest.mark.usefixtures("rabbit")]

URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def app() -> Iterator[tuple[Caraway, list[str]]]:
    base = f"compat2-{uuid.uuid4().hex[:10]}"
    sport, everything, exchange = f"{base}-sport", f"{base}-all", f"{base}-feeds"
    app = Caraway("compat2", broker=URL)
    app.conf.task_queues = [
        Queue(sport, Exchange(exchange, "topic"), routing_key="sport.*"),
        Queue(everything, Exchange(exchange, "topic"), routing_key="#"),
    ]
    try:
        yield app, [sport, everything, exchange]
    finally:
        app.close()
        conn, channel = _raw_channel()
        try:
            channel.exchange_delete(exchange)
        finally:
            conn.close()
        delete_amqp_queues([sport, everything])


def test_a_topic_route_is_declared_on_publish_once_per_connection(
    app: tuple[Caraway, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    caraway_app, (sport, everything, _) = app
    binds: list[tuple[Any, ...]] = []
    real = amqp_transport.bind_queue

    def counting(*args: Any, **kwargs: Any) -> None:
        binds.append((args[1], kwargs["exchange"], kwargs["routing_key"]))
        real(*args, **kwargs)

    monkeypatch.setattr(amqp_transport, "bind_queue", counting)

    @caraway_app.task(name="compat2.feed", ignore_result=True)
    def feed(item: str) -> str:
        return item

    for item in ("golf", "tennis", "chess"):
        feed.apply_async((item,), queue=sport, routing_key=f"sport.{item}")
    admin = caraway_app.admin()
    try:
        # no worker ever ran: the messages wait on the queue the producer declared
        wait_until(lambda: admin.size(sport) == 3, timeout=10, message="three on the queue")
    finally:
        admin.close()
    assert binds == [(sport, app[1][2], "sport.*")]  # one declaration for three messages
    conn, channel = _raw_channel()
    try:
        with pytest.raises(Exception, match="NOT_FOUND"):
            channel.queue_declare(everything, passive=True)  # only the route's queue, as Celery
    finally:
        conn.close()
