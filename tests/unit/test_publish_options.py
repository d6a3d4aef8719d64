"""apply_async's connection and AMQP-flag options (``producer``, ``connection``,
``publisher``, ``declare``, ``mandatory``, ``immediate``) do what Celery's do or are refused
with the reason: none is accepted and ignored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway, Exchange, Queue, group
from caraway.exceptions import ImproperlyConfigured


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Caraway]:
    app = Caraway(
        "opts",
        broker=f"memory://opts-{request.node.name}",
        backend="memory://",
        set_as_current=False,
    )

    @app.task(name="opts.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def _size(app: Caraway, queue: str) -> int:
    admin = app.admin()
    try:
        return admin.size(queue)
    finally:
        admin.close()


@pytest.mark.parametrize("name", ["producer", "connection", "publisher"])
def test_a_given_connection_sends_the_message_and_the_apps_own_is_never_opened(
    app: Caraway, name: str
) -> None:
    connection = app.connection()
    sent: list[str] = []
    publish = connection.publish

    def spy(message: Any, **kwargs: Any) -> None:
        sent.append(message.headers["id"])
        publish(message, **kwargs)

    connection.publish = spy  # type: ignore[method-assign]
    try:
        result = app.send_task("opts.add", (1, 2), **{name: connection})
    finally:
        connection.close()
    assert sent == [result.id]
    assert app._local.transport is None  # the thread's producer was not used
    assert _size(app, "celery") == 1


def test_a_group_sent_with_a_producer_goes_out_on_it_in_one_batch(app: Caraway) -> None:
    connection = app.connection()
    batches: list[int] = []
    publish_many = connection.publish_many

    def spy(items: Any) -> None:
        batches.append(len(items))
        publish_many(items)

    connection.publish_many = spy  # type: ignore[method-assign]
    try:
        group(app.signature("opts.add", (i, i)) for i in range(3)).apply_async(producer=connection)
    finally:
        connection.close()
    assert batches == [3]
    assert app._local.transport is None


def test_a_connection_that_is_not_caravays_is_refused_with_what_to_pass(app: Caraway) -> None:
    with pytest.raises(TypeError, match=r"app\.connection\(\)"):
        app.send_task("opts.add", (1, 2), producer=object())


def test_two_different_connections_are_refused(app: Caraway) -> None:
    first, second = app.connection(), app.connection()
    try:
        with pytest.raises(ValueError, match="pass one"):
            app.send_task("opts.add", (1, 2), producer=first, connection=second)
    finally:
        first.close()
        second.close()


def test_a_batch_sent_on_two_connections_is_refused(app: Caraway) -> None:
    first, second = app.connection(), app.connection()
    try:
        with pytest.raises(ValueError, match="one connection"), app.publishing_batch():
            app.send_task("opts.add", (1, 2), producer=first)
            app.send_task("opts.add", (1, 2), producer=second)
    finally:
        first.close()
        second.close()


def test_an_async_send_refuses_a_connection(app: Caraway) -> None:
    connection = app.connection()
    try:
        with pytest.raises(ImproperlyConfigured, match="sender thread"):
            asyncio.run(app.asend_task("opts.add", (1, 2), producer=connection))
    finally:
        connection.close()


def test_declare_binds_the_queue_so_a_topic_message_reaches_it(app: Caraway) -> None:
    exchange = Exchange("opts.topic", type="topic")
    # no queue is bound yet: the message matches nothing and is dropped, as AMQP drops it
    app.send_task("opts.add", (1, 2), exchange=exchange, routing_key="a.b")
    assert _size(app, "opts.bound") == 0
    bound = Queue("opts.bound", exchange, routing_key="a.*")
    app.send_task("opts.add", (1, 2), exchange=exchange, routing_key="a.b", declare=[bound])
    assert _size(app, "opts.bound") == 1


def test_declare_refuses_what_is_not_a_queue(app: Caraway) -> None:
    with pytest.raises(TypeError, match=r"caraway\.Queue"):
        app.send_task("opts.add", (1, 2), declare=[Exchange("opts.x")])


def test_immediate_is_refused_with_the_reason(app: Caraway) -> None:
    with pytest.raises(ValueError, match=r"RabbitMQ removed the immediate flag"):
        app.send_task("opts.add", (1, 2), immediate=True)
    assert _size(app, "celery") == 0


def test_mandatory_to_a_queue_is_what_caraway_always_does(app: Caraway) -> None:
    app.send_task("opts.add", (1, 2), mandatory=True)
    assert _size(app, "celery") == 1


def test_mandatory_through_an_unbound_exchange_is_refused(app: Caraway) -> None:
    with pytest.raises(ValueError, match="mandatory=True"):
        app.send_task("opts.add", (1, 2), exchange="opts.topic", routing_key="a.b", mandatory=True)
