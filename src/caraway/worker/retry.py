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
    now = datetime.now(timezone.utc)
    when = _when(eta, countdown, task.default_retry_delay, now)
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


def _when(eta: Any, countdown: Any, default: float, now: datetime) -> datetime:
    """When the retry is due; TypeError/ValueError naming a bad ``eta`` or ``countdown``."""
    if eta is not None:
        if not isinstance(eta, datetime):
            raise TypeError(
                f"retry eta must be a datetime, not {eta!r}; use countdown= for seconds"
            )
        # a naive eta is UTC, as apply_async reads it
        return eta if eta.tzinfo is not None else eta.replace(tzinfo=timezone.utc)
    if countdown is None:
        countdown = default
    if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
        raise TypeError(f"retry countdown must be a number of seconds, not {countdown!r}")
    if countdown < 0:
        raise ValueError(f"retry countdown must be a non-negative number, not {countdown!r}")
    return now + timedelta(seconds=float(countdown))
