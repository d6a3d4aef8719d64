"""Turn a call (name, args, kwargs, options) into a :class:`TaskMessage` and a route.

Pure apart from reading the clock and the calling task's context: this is where
``countdown`` becomes ``eta``, ``expires`` becomes a datetime, and a call made inside a
running task inherits its ``root_id`` and gets it as ``parent_id``, as Celery does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from caraway.protocol.message import TaskMessage
from caraway.routing import Route, route

if TYPE_CHECKING:
    from caraway.config import Settings
    from caraway.task import Request, Task

#: options apply_async understands; anything else is a caller's mistake
KNOWN_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "exchange",
        "routing_key",
        "priority",
        "task_id",
        "headers",
        "serializer",
        "ignore_result",
        "time_limit",
        "soft_time_limit",
        "link",
        "link_error",
        "shadow",
        "parent_id",
        "root_id",
        "group_id",
        "group_index",
        "chord",
        "chain",
        "retries",
        "reply_to",
        "compression",
        "retry",
        "retry_policy",
        "delivery_mode",
        "mandatory",
        "immediate",
        "declare",
        "add_to_parent",
        "producer",
        "connection",
        "publisher",
        "stamped_headers",
        "stamps",
        "subtask_type",
        "immutable",
        "chord_size",
    }
)


#: the task running in this thread or asyncio task; calls made now become its children
_CURRENT: ContextVar[tuple[Request, ...]] = ContextVar("caraway_current", default=())


def push_current(request: Request) -> None:
    """Mark ``request`` as the running task (calls made now are its children)."""
    _CURRENT.set((*_CURRENT.get(), request))


def pop_current() -> None:
    _CURRENT.set(_CURRENT.get()[:-1])


def current_request() -> Request | None:
    stack = _CURRENT.get()
    return stack[-1] if stack else None


def build_message(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    *,
    conf: Settings,
    task: Task | None = None,
    reply_to: str | None = None,
    now: datetime | None = None,
) -> tuple[TaskMessage, Route]:
    """Build the message for one call; raises ValueError/TypeError for bad options."""
    if not KNOWN_OPTIONS.issuperset(options):
        unknown = set(options) - KNOWN_OPTIONS
        raise TypeError(
            f"apply_async() got unknown option(s) {sorted(unknown)}; "
            "see the calling guide for the supported ones"
        )
    now = now or datetime.now(timezone.utc)
    task_id = options.get("task_id") or str(uuid.uuid4())
    eta = _eta(options, now)
    expires = _expires(options.get("expires", _task_attr(task, "expires")), now)
    parent = current_request()
    parent_id = options.get("parent_id") or (parent.id if parent else None)
    root_id = options.get("root_id") or (parent.root_id or parent.id if parent else None)
    hard = options.get("time_limit", _task_attr(task, "time_limit"))
    soft = options.get("soft_time_limit", _task_attr(task, "soft_time_limit"))
    check_limits(name, hard, soft)
    ignore = options.get("ignore_result")
    if ignore is None and task is not None:
        ignore = bool(_task_attr(task, "ignore_result") or conf.task_ignore_result)
    message = TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=dict(kwargs),
        callbacks=_signature_list(options.get("link")),
        errbacks=_signature_list(options.get("link_error")),
        chain=options.get("chain"),
        chord=options.get("chord"),
        eta=eta,
        expires=expires,
        retries=int(options.get("retries") or 0),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        root_id=root_id or task_id,
        parent_id=parent_id,
        shadow=options.get("shadow"),
        time_limit=hard,
        soft_time_limit=soft,
        ignore_result=ignore,
        reply_to=options.get("reply_to") or reply_to,
        priority=options.get("priority"),
        extra_headers=dict(options.get("headers") or {}),
    )
    task_options = _task_route_options(task)
    return message, route(name, {**task_options, **options}, conf)


def _task_attr(task: Task | None, name: str) -> Any:
    return getattr(task, name, None) if task is not None else None


def _task_route_options(task: Task | None) -> dict[str, Any]:
    if task is None:
        return {}
    keys = ("queue", "exchange", "routing_key", "priority")
    found = {key: getattr(task, key, None) for key in keys}
    return {f"task_{key}": value for key, value in found.items() if value is not None}


def _eta(options: Mapping[str, Any], now: datetime) -> datetime | None:
    countdown = options.get("countdown")
    eta = options.get("eta")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
            raise TypeError(f"countdown must be a number of seconds, not {countdown!r}")
        if countdown < 0:
            raise ValueError(f"countdown must not be negative, got {countdown!r}")
        return now + timedelta(seconds=countdown)
    if eta is None:
        return None
    if not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, not {eta!r}; use countdown= for seconds")
    return eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)


def _expires(value: Any, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return now + value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expires must be seconds or a datetime, not {value!r}")
    return now + timedelta(seconds=value)


def check_limits(name: str, hard: Any, soft: Any) -> None:
    """ValueError naming the value unless both limits are positive seconds, soft <= hard."""
    for label, value in (("time_limit", hard), ("soft_time_limit", soft)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise ValueError(f"{name}: {label} must be a positive number of seconds, not {value!r}")
    if hard is not None and soft is not None and soft > hard:
        raise ValueError(f"{name}: soft_time_limit ({soft}) is above time_limit ({hard})")


def _signature_list(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) for item in items]
