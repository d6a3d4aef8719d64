"""Celery task message protocol v2 <-> :class:`TaskMessage`.

This module and its siblings are the only code that knows Celery's envelope: everything
else handles :class:`Message` (bytes plus headers, what a broker carries) or
:class:`TaskMessage` (what a task call means). Facts: docs/protocol.md, section 1, and
the golden vectors in tests/vectors. Naive eta/expires datetimes are taken as UTC.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from caraway.exceptions import ProtocolError
from caraway.protocol.serializers import decompress, dumps, loads


@dataclass(slots=True)
class Message:
    """A message as any broker carries it: body bytes, headers and properties.

    ``properties`` holds the AMQP basic properties Celery sets (``correlation_id``,
    ``reply_to``, ``delivery_mode``, ``priority``, ``expiration``), whatever the broker.
    """

    body: bytes
    headers: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskMessage:
    """One task call, decoded: what to run, with what, and how it relates to others."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    group: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    shadow: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool | None = None
    reply_to: str | None = None
    priority: int | None = None
    #: 0 unless the task replaced itself (``self.replace()``) this many times
    replaced_task_nesting: int = 0
    #: canvas stamping: names of the stamp headers, and their values
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    #: headers this module does not interpret (custom ``headers=``, stamps, ...), kept
    #: so that a re-published message (retry, chain step) carries them on.
    extra_headers: dict[str, Any] = field(default_factory=dict)


#: Celery truncates argsrepr/kwargsrepr (display-only copies of the arguments) here.
REPR_MAX = 1024

#: Header names :func:`decode` interprets; every other header lands in ``extra_headers``.
KNOWN_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
        "compression",
    }
)

_origin = ""


def _forget_origin() -> None:
    global _origin  # noqa: PLW0603 - per-process cache, emptied in a fork's child
    _origin = ""


# a forked child has another pid: it builds its own origin (no getpid call per message)
os.register_at_fork(after_in_child=_forget_origin)


def default_origin() -> str:
    """``gen<pid>@<host>``: what Celery puts in ``origin`` for any publishing process."""
    global _origin  # noqa: PLW0603 - per-process cache, see _forget_origin
    if not _origin:
        _origin = f"gen{os.getpid()}@{platform.node()}"
    return _origin


def safe_repr(value: Any, limit: int = REPR_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters plus ``...``; never raises."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not stop a publish; this is display only
        return f"<unrepresentable {type(value).__qualname__}>"
    if len(text) > limit:
        return text[:limit] + "..."
    return text


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    # Always with an offset: Celery reads a naive value in the worker's local zone.
    return None if value is None else _aware(value).isoformat()


def _expiration(expires: datetime, now: datetime | None) -> str:
    # kombu sends the TTL as whole milliseconds in a string; a past expiry becomes 0.
    now = datetime.now(timezone.utc) if now is None else _aware(now)
    seconds = max((_aware(expires) - now).total_seconds(), 0.0)
    return str(int(seconds * 1000))


def encode(task: TaskMessage, *, serializer: str = "json", now: datetime | None = None) -> Message:
    """Build the protocol v2 message Celery 5.7 would send for ``task``.

    ``now`` is the reference for the ``expiration`` property (defaults to the clock);
    pass the instant ``expires`` was computed from to get an exact TTL. Raises
    SerializationError when the arguments cannot be serialized.
    """
    embed = {
        "callbacks": task.callbacks,
        "errbacks": task.errbacks,
        "chain": task.chain,
        "chord": task.chord,
    }
    body, content_type, content_encoding = dumps([task.args, task.kwargs, embed], serializer)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task.task,
        "id": task.id,
        "shadow": task.shadow,
        "eta": _iso(task.eta),
        "expires": _iso(task.expires),
        "group": task.group,
        "group_index": task.group_index,
        "retries": task.retries,
        "timelimit": [task.time_limit, task.soft_time_limit],
        "root_id": task.root_id or task.id,
        "parent_id": task.parent_id,
        "argsrepr": safe_repr(tuple(task.args)) if task.argsrepr is None else task.argsrepr,
        "kwargsrepr": safe_repr(task.kwargs) if task.kwargsrepr is None else task.kwargsrepr,
        "origin": task.origin or default_origin(),
        "ignore_result": task.ignore_result,
        "replaced_task_nesting": task.replaced_task_nesting,
        "stamped_headers": task.stamped_headers,
        "stamps": task.stamps,
    }
    if task.extra_headers:
        # Custom headers sit at the top level, next to Celery's (redis-send-task-extras).
        headers.update(task.extra_headers)
    properties: dict[str, Any] = {"correlation_id": task.id}
    if task.reply_to is not None:
        properties["reply_to"] = task.reply_to
    properties["delivery_mode"] = 2
    if task.expires is not None:
        properties["expiration"] = _expiration(task.expires, now)
    if task.priority is not None:
        properties["priority"] = task.priority
    return Message(body, headers, content_type, content_encoding, properties)


def parse_datetime(value: Any, what: str) -> datetime | None:
    """Read an ISO 8601 ``eta``/``expires`` value; naive means UTC. ProtocolError if bad."""
    if value is None:
        return None
    if isinstance(value, datetime):  # AMQP field tables can carry real timestamps
        return _aware(value)
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be an ISO 8601 string, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ProtocolError(f"{what} {value!r} is not an ISO 8601 datetime") from exc


def peek_eta(message: Message) -> float | None:
    """Unix time of the message's ``eta`` header, or None; the body is not decoded.

    Protocol v1 messages keep their eta in the body, so this returns None for them.
    """
    value = message.headers.get("eta")
    if value is None:
        return None
    eta = parse_datetime(value, "eta header")
    return None if eta is None else eta.timestamp()


def peek_id(message: Message) -> str | None:
    """The task id from the headers (or the AMQP correlation id), without the body."""
    task_id = message.headers.get("id")
    if isinstance(task_id, str):
        return task_id
    correlation_id = message.properties.get("correlation_id")
    return correlation_id if isinstance(correlation_id, str) else None


def decode(message: Message, *, accept: frozenset[str]) -> TaskMessage:
    """Read a task message; protocol v2, or v1 when there is no ``task`` header.

    Missing optional headers get Celery's defaults; unknown headers go to
    ``extra_headers``. Raises ContentDisallowed for a content type outside ``accept``
    and ProtocolError for anything that is not a task message.
    """
    headers = message.headers
    if "task" not in headers:
        return _decode_v1(message, accept)
    name = headers["task"]
    task_id = headers.get("id")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"task message has a bad 'task' header: {name!r}")
    if not isinstance(task_id, str) or not task_id:
        raise ProtocolError(f"task message for {name!r} has no usable 'id' header: {task_id!r}")
    body = loads(_body(message), message.content_type, message.content_encoding, accept=accept)
    args, kwargs, embed = _split_body(body, task_id)
    hard, soft = _timelimit(headers.get("timelimit"), task_id)
    get = headers.get
    return TaskMessage(
        id=task_id,
        task=name,
        args=args,
        kwargs=kwargs,
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        eta=parse_datetime(get("eta"), "eta header"),
        expires=parse_datetime(get("expires"), "expires header"),
        retries=get("retries") or 0,
        group=get("group"),
        group_index=get("group_index"),
        root_id=get("root_id"),
        parent_id=get("parent_id"),
        shadow=get("shadow"),
        time_limit=hard,
        soft_time_limit=soft,
        argsrepr=get("argsrepr"),
        kwargsrepr=get("kwargsrepr"),
        origin=get("origin"),
        ignore_result=get("ignore_result"),
        reply_to=message.properties.get("reply_to"),
        priority=message.properties.get("priority"),
        replaced_task_nesting=get("replaced_task_nesting") or 0,
        stamped_headers=get("stamped_headers"),
        stamps=get("stamps") or {},
        extra_headers={k: v for k, v in headers.items() if k not in KNOWN_HEADERS},
    )


def _body(message: Message) -> bytes:
    """The serialized body, decompressed when the ``compression`` header says so (kombu)."""
    compression = message.headers.get("compression")
    if not compression:
        return message.body
    if not isinstance(compression, str):
        raise ProtocolError(f"compression header must be a string, got {compression!r}")
    return decompress(message.body, compression)


def _split_body(body: Any, task_id: str) -> tuple[list[Any], dict[str, Any], Mapping[str, Any]]:
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise ProtocolError(
            f"task {task_id}: body must be [args, kwargs, embed], got {type(body).__name__}"
        )
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ProtocolError(f"task {task_id}: args must be an array and kwargs an object")
    if embed is None:
        embed = {}
    elif not isinstance(embed, dict):
        raise ProtocolError(f"task {task_id}: embed must be an object or null")
    return list(args), kwargs, embed


def _timelimit(value: Any, task_id: str) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    raise ProtocolError(f"task {task_id}: timelimit must be [hard, soft], got {value!r}")


def _decode_v1(message: Message, accept: frozenset[str]) -> TaskMessage:
    """Protocol v1: everything lives in a dict body (Celery 3 and ``task_protocol=1``)."""
    body = loads(_body(message), message.content_type, message.content_encoding, accept=accept)
    if not isinstance(body, dict) or "task" not in body:
        raise ProtocolError("message has no 'task' header and its body is not a v1 task")
    name, task_id = body.get("task"), body.get("id")
    if not isinstance(name, str) or not isinstance(task_id, str):
        raise ProtocolError(f"protocol v1 message needs string 'task' and 'id', got {body!r:.200}")
    args, kwargs = body.get("args") or [], body.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ProtocolError(f"task {task_id}: args must be an array and kwargs an object")
    hard, soft = _timelimit(body.get("timelimit"), task_id)
    return TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=kwargs,
        callbacks=body.get("callbacks"),
        errbacks=body.get("errbacks"),
        chord=body.get("chord"),
        eta=parse_datetime(body.get("eta"), "eta"),
        expires=parse_datetime(body.get("expires"), "expires"),
        retries=body.get("retries") or 0,
        group=body.get("taskset"),
        root_id=task_id,
        time_limit=hard,
        soft_time_limit=soft,
        reply_to=message.properties.get("reply_to"),
        priority=message.properties.get("priority"),
        extra_headers={k: v for k, v in message.headers.items() if k != "compression"},
    )
