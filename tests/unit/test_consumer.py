"""The consumer loop, on the in-process memory broker."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from caraway import Caraway
from caraway.worker.consumer import Consumer


def test_consumer_never_blocks_on_fetch_while_decoded_tasks_wait_for_a_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Caraway(
        "consumer",
        broker="memory://consumer-test",
        backend="memory://consumer-test",
        set_as_current=False,
    )

    @app.task(name="consumer.add")
    def add(x: int, y: int) -> int:
        return x + y

    results = [add.delay(i, i) for i in range(3)]
    stop = threading.Event()
    consumer = Consumer(app, queues=["celery"], slots=1, hostname="t@h", stop=stop)
    blocked_while_waiting: list[int] = []
    transport_class = type(app.connection())
    original_fetch = transport_class.fetch

    def watch_fetch(self: Any, queues: Any, *, limit: int, timeout: float, owner: str) -> Any:
        waiting = len(consumer._ready) + len(consumer._buffer)
        if timeout > 0 and waiting:
            blocked_while_waiting.append(waiting)
        return original_fetch(self, queues, limit=limit, timeout=timeout, owner=owner)

    monkeypatch.setattr(transport_class, "fetch", watch_fetch)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        assert [result.get(timeout=5) for result in results] == [0, 2, 4]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert blocked_while_waiting == []


def test_a_rate_held_message_does_not_stop_the_threads_pool_fetching() -> None:
    """Only messages ready to run make a consumer wait with its refill: a task held for its
    rate limit (up to an hour at 1/h) must not leave the other slots idle meanwhile."""
    app = Caraway("consumer", broker="memory://consumer-rate", set_as_current=False)
    consumer = Consumer(app, queues=["celery"], slots=4, hostname="t@h")
    consumer._inflight = 1  # one long task running
    consumer._rate_waiting.add(1)  # one message waiting for its token
    assert consumer._fetch_room() == consumer.prefetch - 2
    consumer._buffer.append(object())  # type: ignore[arg-type]  # a message in hand
    assert consumer._fetch_room() == 0
