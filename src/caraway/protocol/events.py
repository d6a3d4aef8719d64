"""Celery event documents (docs/design/protocol.md §5): build, batch and parse them; no I/O.

An event is a flat JSON object with ``hostname``, ``utcoffset``, ``pid``, ``clock``,
``timestamp`` and ``type`` plus per-type fields (vectors/event-*.json). The one thing to
know: a body is either one event or a JSON array of them (``task.multi``), and the
routing key is the type with ``-`` replaced by ``.``. ``args``/``kwargs``/``result`` are
display strings (reprs), never data.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from caraway.exceptions import ProtocolError
from caraway.protocol import serializers
from caraway.protocol.message import Message, TaskMessage, safe_repr

#: the exchange (AMQP topic; Redis fanout = pub/sub channel prefix) Celery sends events on
EXCHANGE = "celeryev"
#: routing key of a batch of task events: one message whose body is a JSON array
TASK_MULTI = "task.multi"

TASK_EVENTS = frozenset(
    {
        "task-sent",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-revoked",
        "task-rejected",
    }
)
WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})

#: what Celery's content type and delivery mode for events are (§5.1): transient JSON
CONTENT_TYPE = "application/json"
DELIVERY_MODE = 1


class LamportClock:
    """A Lamport clock: ``forward()`` on each send, ``adjust(other)`` on each receive.

    Thread-safe; Celery's tools order events of one task by this value.
    """

    def __init__(self, initial: int = 0) -> None:
        self.value = initial
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        with self._lock:
            self.value = max(self.value, other) + 1
            return self.value


def utcoffset() -> float:
    """Hours west of UTC as Celery reports them (``time.timezone / 3600``, DST-aware)."""
    seconds = time.altzone if time.daylight and time.localtime().tm_isdst > 0 else time.timezone
    return seconds / 3600.0


def group_of(event_type: str) -> str:
    """``"task"`` for ``task-succeeded``: the part before the first dash."""
    return event_type.partition("-")[0]


def routing_key(event_type: str) -> str:
    """The routing key an event is published with: ``worker-heartbeat`` -> ``worker.heartbeat``."""
    return event_type.replace("-", ".")


#: fields Celery sends as ISO 8601 strings
_DATETIME_FIELDS = ("eta", "expires")


def _plain(value: Any) -> Any:
    # eta/expires travel as ISO 8601 strings, as Celery's request keeps them
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def build_event(
    event_type: str,
    *,
    hostname: str,
    pid: int,
    clock: int,
    timestamp: float | None = None,
    offset: float | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One event document, keys in Celery's order (hostname, utcoffset, pid, clock, ...,
    timestamp, type). ``fields`` cannot override the common keys."""
    offset = utcoffset() if offset is None else offset
    event: dict[str, Any] = {"hostname": hostname, "utcoffset": offset, "pid": pid, "clock": clock}
    if fields:
        # update() then restore the common keys: cheaper than a per-key loop on a hot path
        event.update(fields)
        event.update(hostname=hostname, utcoffset=offset, pid=pid, clock=clock)
        for key in _DATETIME_FIELDS:
            if isinstance(event.get(key), datetime):
                event[key] = _plain(event[key])
    event["timestamp"] = time.time() if timestamp is None else timestamp
    event["type"] = event_type
    return event


#: what json.dumps would hand to ``default`` goes to it here too (datetimes, dataclasses)
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _dumps(value: Any) -> bytes:
    # Unknown objects become reprs: event fields are for display and a bad value must not
    # stop the send. orjson first (a worker with -E encodes three events per task); what
    # it refuses (ints over 64 bits) goes through json. NaN comes out as null, valid JSON.
    try:
        return orjson.dumps(value, default=safe_repr, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=safe_repr).encode("utf-8")


def encode(
    events: dict[str, Any] | list[dict[str, Any]], *, hostname: str, serializer: str = "json"
) -> Message:
    """The message carrying one event (an object) or a batch (an array).

    ``serializer='auth'`` signs the JSON of the events with the process's ``auth``
    serializer (``event_serializer='auth'``, as Celery signs events); anything else is JSON.
    """
    body, content_type = _dumps(events), CONTENT_TYPE
    if serializer == "auth":
        # reprs first (json's own rules), then the signed body carries plain JSON values
        body, content_type, _ = serializers.dumps(orjson.loads(body), "auth")
    return Message(
        body=body,
        headers={"hostname": hostname},
        content_type=content_type,
        content_encoding="utf-8",
        properties={"delivery_mode": DELIVERY_MODE},
    )


#: what a receiver accepts unless told otherwise: JSON only (Celery's default receiver)
JSON_ONLY = frozenset({CONTENT_TYPE})


def decode(
    body: bytes | str, *, content_type: str = CONTENT_TYPE, accept: frozenset[str] = JSON_ONLY
) -> list[dict[str, Any]]:
    """The events in a message body: one object or a ``task.multi`` array.

    A signed body (``application/data``) is verified when ``accept`` holds its content
    type (a receiver with ``event_serializer='auth'``). Raises ContentDisallowed for a
    signed body not accepted, SecurityError for one that does not verify, ProtocolError
    for anything else (not JSON, not objects, no ``type``).
    """
    if content_type == serializers.AUTH:
        raw = body.encode("utf-8") if isinstance(body, str) else body
        parsed = serializers.loads(raw, content_type, "utf-8", accept=accept)
    else:
        parsed = _loads(body)
    items = parsed if isinstance(parsed, list) else [parsed]
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ProtocolError(f"not an event document: {safe_repr(item, 200)}")
    return items


def _loads(body: bytes | str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # NaN and Infinity, which Python's json writes and orjson refuses
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"event body is not JSON: {exc}") from exc


def adjust_timestamp(event: dict[str, Any], *, here: float | None = None) -> float:
    """The event's timestamp moved into this host's zone, as Celery's receiver does."""
    stamp = float(event.get("timestamp") or 0.0)
    offset = event.get("utcoffset")
    if not isinstance(offset, (int, float)):
        return stamp
    local = utcoffset() if here is None else here
    return stamp - (float(offset) - local) * 3600.0


def task_sent_fields(
    task: TaskMessage, *, queue: str, exchange: str, routing_key: str
) -> dict[str, Any]:
    """The fields of a ``task-sent`` event for ``task`` (vectors/event-task-sent.json)."""
    return {
        "uuid": task.id,
        "root_id": task.root_id,
        "parent_id": task.parent_id,
        "name": task.task,
        "args": task.argsrepr if task.argsrepr is not None else safe_repr(tuple(task.args)),
        "kwargs": task.kwargsrepr if task.kwargsrepr is not None else safe_repr(task.kwargs),
        "retries": task.retries,
        "eta": _plain(task.eta),
        "expires": _plain(task.expires),
        "queue": queue,
        "exchange": exchange,
        "routing_key": routing_key,
    }


def batches(events: Iterable[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Split ``events`` into lists of at most ``size``, order kept."""
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for event in events:
        current.append(event)
        if len(current) >= size:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out
