"""Where ``self.retry()`` sends the task again: as Celery 5.7's ``signature_from_request``
does, the ``queue=`` given to retry, else a delivery through the default exchange goes back
to the queue named by its routing key, and any other delivery is re-sent to the exchange
and routing key it came through (so a topic route reaches the queues its key matches)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from caraway import Caraway, Exchange, Queue
from caraway.execution import build_request
from caraway.protocol.message import TaskMessage
from caraway.publish import Outgoing, retry

WHEN = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _app() -> Caraway:
    tasks = Exchange("tasks", type="topic")
    return Caraway(
        "proj",
        broker="memory://",
        task_queues=[Queue("feeds", tasks, routing_key="feed.#"), Queue("celery")],
    )


def _retry(app: Caraway, delivery_info: dict[str, Any], queue: str | None = None) -> Outgoing:
    @app.task(name="proj.fetch")
    def fetch() -> None: ...

    message = TaskMessage(id="t1", task="proj.fetch")
    request = build_request(message, hostname="w@h", delivery_info=delivery_info)
    request.message = message
    return retry(fetch, request, args=None, kwargs=None, when=WHEN, queue=queue)


def test_retry_of_a_topic_delivery_goes_back_through_its_exchange_and_routing_key() -> None:
    sent = _retry(_app(), {"exchange": "tasks", "routing_key": "feed.rss", "priority": None})
    assert (sent.route.exchange, sent.route.routing_key) == ("tasks", "feed.rss")
    assert sent.route.exchange_type == "topic"


def test_retry_of_a_default_exchange_delivery_goes_to_the_queue_its_key_names() -> None:
    sent = _retry(_app(), {"exchange": "", "routing_key": "celery", "priority": None})
    assert (sent.route.queue, sent.route.exchange, sent.route.routing_key) == (
        "celery",
        "",
        "celery",
    )


def test_retry_queue_argument_wins_over_the_delivery() -> None:
    sent = _retry(_app(), {"exchange": "tasks", "routing_key": "feed.rss"}, queue="celery")
    assert (sent.route.queue, sent.route.exchange) == ("celery", "")


def test_retry_keeps_the_delivery_priority() -> None:
    sent = _retry(_app(), {"exchange": "", "routing_key": "celery", "priority": 7})
    assert sent.route.priority == 7
