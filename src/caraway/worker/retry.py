"""``Task.retry()``: re-send the running task's message and stop this run.

The re-sent message keeps the task id (so the caller's AsyncResult follows it), adds one
to ``retries``, sets ``eta`` and carries the canvas parts on, as Celery does
(docs/protocol.md §1.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from caraway import exceptions
from caraway.protocol import message as protocol
from caraway.routing import route

if TYPE_CHECKING:
    from caraway.task import Task


def retry_task(
    task: Task,
    *,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    exc: BaseException | None,
    throw: bool,
    eta: datetime | None,
    countdown: float | None,
    max_retries: int | None,
    options: Mapping[str, Any],
) -> exceptions.Retry:
    request = task.request
    limit = task.max_retries if max_retries is None else max_retries
    if limit is not None and not isinstance(limit, int):
        raise TypeError(f"max_retries must be an int or None, not {limit!r}")
    if limit is not None and request.retries >= limit:
        if exc is not None:
            raise exc
        raise exceptions.MaxRetriesExceededError(
            f"Can't retry {task.name}[{request.id}] args:{tuple(request.args)} "
            f"kwargs:{request.kwargs}: max_retries={limit} reached"
        )
    if countdown is None and eta is None:
        countdown = task.default_retry_delay
    if countdown is not None and (isinstance(countdown, bool) or countdown < 0):
        raise ValueError(f"retry countdown must be a non-negative number, not {countdown!r}")
    now = datetime.now(timezone.utc)
    when = eta if eta is not None else now + timedelta(seconds=float(countdown or 0))
    delay = max(0.0, (when - now).total_seconds())
    signal = exceptions.Retry(exc=exc, when=delay)
    if request.is_eager:
        if throw:
            raise signal
        return signal
    original = request.message
    if original is None:
        raise RuntimeError(f"{task.name}.retry() called outside of a running task")
    message = replace(
        original,
        args=list(args) if args is not None else list(request.args),
        kwargs=dict(kwargs) if kwargs is not None else dict(request.kwargs),
        retries=request.retries + 1,
        eta=when,
        parent_id=request.id,
        extra_headers=dict(original.extra_headers),
    )
    queue = options.get("queue") or request.delivery_info.get("routing_key")
    target = route(task.name, {"queue": queue} if queue else {}, task.app.conf)
    wire = protocol.encode(message, serializer=task.serializer or task.app.conf.task_serializer)
    task.app.producer.publish(
        wire, queue=target.queue, exchange=target.exchange, routing_key=target.routing_key
    )
    if throw:
        raise signal
    return signal
