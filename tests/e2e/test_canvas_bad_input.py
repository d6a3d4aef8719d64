"""Bad canvas input on a real worker (SQLite): unknown tasks, unsendable arguments, bad embeds.

The one thing to know: nothing here may kill the worker or leave a message unaccounted
for; each test ends by checking the worker still runs a plain task.
"""

from __future__ import annotations

from typing import Any

import pytest

from caraway import states
from caraway.exceptions import ChordError, NotRegistered, SerializationError
from caraway.protocol.message import TaskMessage, encode
from tests.e2e.test_canvas_random import proj_tasks
from tests.helpers import purge_queue, queue_size, wait_until

__all__ = ["proj_tasks"]  # the module-scoped worker fixture, shared with the random test

UNSERVED = "canvas-bad-input-unserved"


def _app(tasks: Any) -> Any:
    return tasks.add.app


def _worker_still_runs(tasks: Any) -> None:
    assert tasks.add.delay(20, 22).get(timeout=10) == 42


def _publish(tasks: Any, message: TaskMessage) -> None:
    transport = _app(tasks).connection()
    try:
        transport.publish(encode(message), queue="celery")
    finally:
        transport.close()


def _queue_size(tasks: Any, queue: str) -> int:
    return queue_size(_app(tasks), queue)


def test_a_chain_stops_at_a_task_no_worker_has_and_its_result_reports_not_registered(
    proj_tasks: Any,
) -> None:
    from caraway.canvas import signature

    nope = signature("proj.tasks.nope", app=_app(proj_tasks))
    result = (proj_tasks.add.s(1, 1) | nope | proj_tasks.mul.s(2))()
    failed = result.parent
    wait_until(lambda: failed.state == states.FAILURE, timeout=10, message="the unknown step")
    with pytest.raises(NotRegistered, match=r"proj\.tasks\.nope"):
        result.get(timeout=5)
    assert result.parent.parent.get(timeout=5) == 2, "the step before it ran"
    # the step after it never runs; as in Celery 5, it is marked failed with the same error
    assert result.state == states.FAILURE
    assert isinstance(result.result, NotRegistered)
    _worker_still_runs(proj_tasks)


def test_waiting_on_a_chain_raises_as_soon_as_an_earlier_step_fails(proj_tasks: Any) -> None:
    from caraway.canvas import signature

    nope = signature("proj.tasks.nope", app=_app(proj_tasks))
    # the first step is slow so get() starts waiting before anything has failed
    result = (proj_tasks.slow.s(0.5) | nope | proj_tasks.mul.s(2))()
    with pytest.raises(NotRegistered):
        result.get(timeout=3)


def test_a_chord_header_task_no_worker_has_fails_the_body_with_chord_error_naming_it(
    proj_tasks: Any,
) -> None:
    from caraway.canvas import chord, signature

    nope = signature("proj.tasks.nope", args=(1,), app=_app(proj_tasks))
    result = chord([proj_tasks.add.s(1, 1), nope], proj_tasks.xsum.s())()
    missing_id = result.header.results[1].id
    # get() raises the header task's own error, as Celery's parent walk does...
    with pytest.raises(NotRegistered, match=r"proj\.tasks\.nope"):
        result.get(timeout=10)
    # ...while the body's stored failure is the ChordError naming it
    stored = result.get(timeout=10, propagate=False)
    assert isinstance(stored, ChordError) and "proj.tasks.nope" in str(stored)
    assert missing_id in str(stored)
    assert "NotRegistered" in str(stored)
    assert result.state == states.FAILURE
    _worker_still_runs(proj_tasks)


def test_unserialisable_arguments_raise_when_the_canvas_is_applied_and_nothing_is_sent(
    proj_tasks: Any,
) -> None:
    from caraway.canvas import chain, chord, group

    add, mul, xsum = proj_tasks.add, proj_tasks.mul, proj_tasks.xsum
    # nobody consumes UNSERVED, so whatever was sent would still be there
    canvases = [
        chain(add.s(1, 1), mul.s(object())),
        group(add.s(1, 1), add.s(object(), 1)),
        chord([add.s(1, 1)], mul.s(object())),
        chord([add.s(1, 1), chain(add.s(2, 2), mul.s(object()))], xsum.s()),
    ]
    for canvas in canvases:
        with pytest.raises(SerializationError):
            canvas.apply_async(queue=UNSERVED)
    assert _queue_size(proj_tasks, UNSERVED) == 0
    chain(add.s(1, 1), mul.s(2)).apply_async(queue=UNSERVED)
    assert _queue_size(proj_tasks, UNSERVED) == 1, "the same canvas, sendable, is sent"
    purge_queue(_app(proj_tasks), UNSERVED)


BAD_EMBEDS: list[tuple[str, dict[str, Any]]] = [
    ("chain-not-a-list", {"chain": "garbage"}),
    ("chain-step-without-name", {"chain": [{"task": 5}]}),
    ("callback-without-task", {"callbacks": [{"args": [1]}]}),
    ("errback-not-a-dict", {"errbacks": ["zzz"]}),
    ("chord-not-a-dict", {"chord": "zzz", "group": "bad-embed-group", "group_index": 0}),
]


def _publish_bad_embeds(proj_tasks: Any, prefix: str) -> list[str]:
    ids = []
    for label, fields in BAD_EMBEDS:
        task_id = f"{prefix}-{label}"
        _publish(proj_tasks, TaskMessage(id=task_id, task="proj.tasks.add", args=[1, 2], **fields))
        ids.append(task_id)
    return ids


def test_malformed_embeds_from_the_wire_leave_the_worker_up_and_every_message_accounted_for(
    proj_tasks: Any,
) -> None:
    app = _app(proj_tasks)
    ids = _publish_bad_embeds(proj_tasks, "accounted")

    def settled() -> bool:
        return all(app.AsyncResult(task_id).state in states.READY_STATES for task_id in ids)

    wait_until(settled, timeout=15, message=f"{ids} to be settled")
    # follow-ups a bad embed caused (a nameless chain step) must drain too
    wait_until(lambda: _queue_size(proj_tasks, "celery") == 0, timeout=10, message="drained")
    _worker_still_runs(proj_tasks)


def test_malformed_embeds_from_the_wire_are_rejected_as_failures_naming_the_embed(
    proj_tasks: Any,
) -> None:
    app = _app(proj_tasks)
    for task_id in _publish_bad_embeds(proj_tasks, "rejected"):
        result = app.AsyncResult(task_id)
        with pytest.raises(ValueError, match="malformed embed"):
            result.get(timeout=10)
    _worker_still_runs(proj_tasks)
