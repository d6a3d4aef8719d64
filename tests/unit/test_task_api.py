"""Celery's task API without a broker: options as attributes, pydantic=True, request helpers."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import caraway
from caraway import Caraway, Task, current_task


@pytest.fixture
def app() -> Caraway:
    url = f"memory://task-api-{caraway.uuid()}"
    app = Caraway("taskapi", broker=url, backend=url, set_as_current=False)
    app.conf.task_always_eager = True
    return app


def test_unknown_options_become_attributes_and_near_misses_warn(app: Caraway) -> None:
    @app.task(queue_hint="fast")
    def plain() -> str:
        return "ok"

    assert plain.queue_hint == "fast"
    with pytest.warns(UserWarning, match="did you mean 'max_retries'"):

        @app.task(max_retrie=3)
        def typo() -> None:
            """Never run."""


class Point(BaseModel):
    x: int
    y: int


def test_pydantic_validates_arguments_and_dumps_the_result(app: Caraway) -> None:
    @app.task(pydantic=True)
    def move(point: Point, by: int) -> Point:
        return Point(x=point.x + by, y=point.y + by)

    assert move.delay({"x": 1, "y": 2}, 3).get() == {"x": 4, "y": 5}
    failed = move.apply(({"x": "not a number", "y": 2}, 1))
    assert failed.failed() and "validation error" in str(failed.result)


def test_signature_from_request_and_current_task_inside_a_task(app: Caraway) -> None:
    @app.task(bind=True)
    def again(self: Task, x: int) -> list[object]:
        sig = self.signature_from_request()
        return [sig.name, list(sig.args), sig.options["task_id"] == self.request.id,
                current_task.name]  # fmt: skip

    assert again.delay(7).get() == [again.name, [7], True, again.name]


def test_stamping_visits_every_part_of_a_canvas_with_celerys_hooks(app: Caraway) -> None:
    from caraway import chain, chord, group
    from caraway.canvas import Signature, StampingVisitor

    @app.task
    def step(x: int) -> int:
        return x

    calls: list[str] = []

    class Visitor(StampingVisitor):
        def on_signature(self, sig: Signature, **headers: object) -> dict[str, object]:
            calls.append(f"sig:{sig.args[0]}")
            return {"seen": True}

        def on_chain_start(self, chain: Signature, **headers: object) -> dict[str, object]:
            calls.append("chain")
            return {"in_chain": 1}

        def on_group_start(self, group: Signature, **headers: object) -> dict[str, object]:
            calls.append("group")
            return {}

        def on_chord_body(self, chord: Signature, **header: object) -> dict[str, object]:
            calls.append("body")
            return {"body": True}

    flow = chain(step.s(1), chord(group(step.s(2), step.s(3)), step.s(4)))
    flow.stamp(visitor=Visitor(), run="r1")
    assert calls == ["chain", "sig:1", "group", "sig:2", "sig:3", "body", "sig:4"]
    first, joined = flow.tasks
    assert sorted(first.options["stamped_headers"]) == ["in_chain", "run", "seen"]
    assert joined.body.options["body"] is True and joined.body.options["run"] == "r1"
    again = step.s(5).stamp(tag="a").stamp(append_stamps=True, tag="b")
    assert again.options["tag"] == ["a", "b"]


def test_send_event_publishes_a_custom_event_with_the_task_id() -> None:
    from caraway.brokers.registry import open_bus
    from caraway.protocol import events as proto
    from tests.helpers import wait_until

    url = f"memory://task-events-{caraway.uuid()}"
    app = Caraway("taskevents", broker=url, backend=url, set_as_current=False)
    app.conf.task_always_eager = True
    bus = open_bus(url)
    bus.subscribe("#")

    @app.task(bind=True)
    def progress(self: Task) -> str:
        self.send_event("task-progress", current=3, total=10)
        return str(self.request.id)

    task_id = progress.delay().get()
    seen: list[dict[str, object]] = []

    def arrived() -> bool:
        for message in bus.receive(0.05):
            decoded = proto.decode(message.body)
            seen.extend(decoded if isinstance(decoded, list) else [decoded])
        return any(event.get("type") == "task-progress" for event in seen)

    try:
        wait_until(arrived, timeout=5, message="the custom event")
    finally:
        bus.close()
        app.close()
    (event,) = [event for event in seen if event["type"] == "task-progress"]
    assert event["uuid"] == task_id and event["current"] == 3 and event["total"] == 10
