"""before_task_publish / after_task_publish, as Celery sends them: the task name as
sender, the headers that travel (a receiver's additions reach the worker)."""

from __future__ import annotations

from typing import Any

from caraway import Caraway, signals
from caraway.testing import TestWorker


def test_a_header_added_before_publish_reaches_the_running_task(
    caraway_app: Caraway, caraway_worker: TestWorker
) -> None:
    seen: list[tuple[str, Any]] = []

    def before(sender: str, headers: dict[str, Any], **_: Any) -> None:
        headers["x-stamp"] = f"stamped {headers['id']}"

    def after(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append((sender, routing_key))

    @caraway_app.task(bind=True, name="signals.show")
    def show(self: Any) -> Any:
        return self.request.headers.get("x-stamp")

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        result = show.delay()
        assert result.get(timeout=10) == f"stamped {result.id}"
        assert ("signals.show", "celery") in seen
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
