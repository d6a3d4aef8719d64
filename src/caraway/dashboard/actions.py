"""What the dashboard's POSTs do, and the reads that need the broker: remote control calls,
the dead-letter store (through the broker's QueueAdmin) and periodic tasks.

Each function checks its body and returns a callable the web layer runs in a thread (the
calls block on the broker). Bodies come from the network: every field is checked, and
a bad one is an ActionError (400) naming it. No HTTP here.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from caraway.brokers.contracts import DeadLetter

#: the raw body shown for a dead letter is cut here (the page is for reading, not export)
BODY_SHOWN = 64 * 1024
#: dead letters one request may replay or discard
MAX_IDS = 1000


class ActionError(ValueError):
    """A request body the action cannot use; the message says which field and why."""


def required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"{key!r} is required (a non-empty string)")
    return value.strip()


def positive(value: Any, key: str = "n") -> int:
    try:
        n = int(value)
    except (TypeError, ValueError) as exc:
        raise ActionError(f"{key} must be a positive integer, got {value!r}") from exc
    if n < 1:
        raise ActionError(f"{key} must be a positive integer, got {n}")
    return n


def _seconds(value: Any, key: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise ActionError(f"{key} must be a number of seconds, got {value!r}") from exc
    if not seconds > 0 or seconds == float("inf"):
        raise ActionError(f"{key} must be a positive number of seconds, got {value!r}")
    return seconds


def worker_action(
    control: Any, hostname: str, verb: str, body: dict[str, Any]
) -> Callable[[], Any]:
    """The remote-control call behind ``POST /api/workers/{hostname}/{verb}``."""
    where = {"destination": [hostname], "reply": True, "timeout": 1.0}
    if verb == "shutdown":
        # a node going down may not answer: do not wait for it
        return lambda: control.shutdown(destination=where["destination"])
    if verb in ("pool/grow", "pool/shrink"):
        n = positive(body.get("n", 1))
        method = control.pool_grow if verb == "pool/grow" else control.pool_shrink
        return lambda: method(n, **where)
    if verb == "pool/autoscale":
        high, low = positive(body.get("max"), "max"), int(body.get("min") or 0)
        if not 0 <= low <= high:
            raise ActionError(f"min must be between 0 and max ({high}), got {low}")
        arguments = {"max": high, "min": low}
        return lambda: control.broadcast("autoscale", arguments=arguments, **where)
    if verb == "rate-limit":
        task_name = required(body, "task_name")
        rate = body.get("rate_limit") or None
        return lambda: control.rate_limit(task_name, rate, **where)
    if verb == "time-limit":
        task_name = required(body, "task_name")
        soft, hard = _seconds(body.get("soft"), "soft"), _seconds(body.get("hard"), "hard")
        return lambda: control.time_limit(task_name, soft=soft, hard=hard, **where)
    queue = required(body, "queue")
    if verb == "queues/add":
        return lambda: control.add_consumer(queue, **where)
    return lambda: control.cancel_consumer(queue, **where)


def dead_letter_ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise ActionError(f"'ids' must be a list of 1 to {MAX_IDS} dead-letter ids")
    if not all(isinstance(i, (str, int)) and str(i).strip() for i in ids):
        raise ActionError("every id in 'ids' must be a non-empty string or an integer")
    return [str(i) for i in ids]


def dead_letter_action(app: Any, verb: str, body: dict[str, Any]) -> Callable[[], int]:
    """Replay (publish back to its queue) or discard the chosen dead letters."""
    ids = dead_letter_ids(body)

    def run() -> int:
        admin = app.admin()
        try:
            if verb == "replay":
                return int(admin.requeue_dead_letters(ids))
            return int(admin.purge_dead_letters(ids))
        finally:
            admin.close()

    return run


def dead_letters(app: Any, limit: int) -> list[dict[str, Any]]:
    """The oldest ``limit`` dead letters, each with its reason and raw message."""
    admin = app.admin()
    try:
        return [_letter(letter) for letter in admin.dead_letters(limit=limit)]
    finally:
        admin.close()


def _letter(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    headers = message.headers if isinstance(message.headers, dict) else {}
    body = message.body if isinstance(message.body, bytes) else b""
    return {
        "id": str(letter.id),
        "queue": letter.queue,
        "reason": letter.reason,
        "failed_at": letter.failed_at,
        "task": headers.get("task"),
        "task_id": headers.get("id"),
        "headers": headers,
        "properties": message.properties,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "size": len(body),
        "body": body[:BODY_SHOWN].decode("utf-8", "replace"),
        "truncated": len(body) > BODY_SHOWN,
    }


#: where beat's own status lives (``beat_status(app).as_dict()``), imported when asked so a
#: caraway without beat (or a broken beat store) still serves every other page
BEAT_STATUS_MODULE = "caraway.beat.status"


def beat_status(app: Any) -> dict[str, Any]:
    """Periodic tasks: entries with their next and last run, and the leading node.

    Read from beat's own status (the broker's schedule state and the app's entries);
    when no beat leads, or caraway has no beat, ``reason`` says so rather than invent.
    """
    try:
        module = importlib.import_module(BEAT_STATUS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and BEAT_STATUS_MODULE.startswith(exc.name):
            return _no_beat("beat is not enabled: this caraway has no caraway.beat service yet")
        raise
    try:
        status = module.beat_status(app).as_dict()
    except Exception as exc:
        return _no_beat(f"beat's status could not be read: {exc}")
    leader = status.get("leader")
    entries = list(status.get("entries") or [])
    reason = "" if leader else "no beat leads the schedule: start one (caraway beat or worker -B)"
    if isinstance(leader, dict) and isinstance(leader.get("renewed"), (int, float)):
        leader = {**leader, "age": max(0.0, time.time() - float(leader["renewed"]))}
    return {
        "enabled": bool(leader),
        "reason": reason,
        "entries": entries,
        "leader": leader,
        "timezone": status.get("timezone"),
    }


def _no_beat(reason: str) -> dict[str, Any]:
    return {"enabled": False, "reason": reason, "entries": [], "leader": None}
