"""``Task.apply()`` and ``task_always_eager``: run a task here, as a worker would.

Nothing touches the broker or the result store; the outcome comes back as an
:class:`~caraway.result.EagerResult`. Retries re-run the task in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.protocol.message import TaskMessage
from caraway.result import EagerResult
from caraway.worker.execute import build_request, run_task

if TYPE_CHECKING:
    from caraway.task import Task


def run_eagerly(
    task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], options: Mapping[str, Any]
) -> EagerResult:
    """Run ``task`` in this process and wrap the outcome; raises with ``task_eager_propagates``."""
    task_id = options.get("task_id") or str(uuid.uuid4())
    retries = int(options.get("retries") or 0)
    while True:
        message = TaskMessage(
            id=task_id,
            task=task.name,
            args=list(args),
            kwargs=dict(kwargs),
            retries=retries,
            root_id=task_id,
        )
        request = build_request(task, message, hostname="eager", delivery_info={}, eager=True)
        outcome = run_task(task, request)
        if outcome.kind != "retry":
            break
        retries += 1
    app = task.app
    if outcome.kind == "success":
        return EagerResult(task_id, outcome.value, states.SUCCESS, app=app, task_name=task.name)
    exc = outcome.exc
    if app.conf.task_eager_propagates and exc is not None and outcome.kind == "failure":
        raise exc
    state = states.FAILURE if outcome.kind == "failure" else outcome.state
    return EagerResult(
        task_id, exc, state, app=app, traceback=outcome.traceback, task_name=task.name
    )
