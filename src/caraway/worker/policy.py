"""What a consumer derives from settings and says about its work, apart from its loop.

A task's :class:`~caraway.worker.lifecycle.Policy` from its options and the app's settings,
the accepted content types, the log line of a finished task, this process's resident memory
and the ``(id, name)`` a held delivery is reported as. ``child.py`` re-exports
``build_policy`` for those who import it from there.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from caraway.brokers.contracts import Delivery
from caraway.protocol.message import TaskMessage
from caraway.worker import lifecycle
from caraway.worker.execute import Outcome

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.task import Task

logger = logging.getLogger("caraway.worker")


def build_policy(app: Caraway, task: Task | None) -> lifecycle.Policy:
    conf = app.conf

    def pick(attribute: str, setting: str) -> Any:
        value = getattr(task, attribute, None) if task is not None else None
        return conf[setting] if value is None else value

    return lifecycle.Policy(
        acks_late=bool(pick("acks_late", "task_acks_late")),
        acks_on_failure_or_timeout=bool(
            pick("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout")
        ),
        reject_on_worker_lost=bool(pick("reject_on_worker_lost", "task_reject_on_worker_lost")),
        ignore_result=bool(pick("ignore_result", "task_ignore_result")),
        store_errors_even_if_ignored=bool(
            pick("store_errors_even_if_ignored", "task_store_errors_even_if_ignored")
        ),
        track_started=bool(pick("track_started", "task_track_started")),
        result_extended=bool(conf.result_extended),
        result_expires=app.result_expires_seconds(),
    )


def _rss_kib() -> int:
    """Resident memory of this process now, in KiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _info(delivery: Delivery) -> tuple[str, str]:
    headers = delivery.message.headers
    return str(headers.get("id", "")), str(headers.get("task", ""))


def protocol_accept(accept: Any) -> frozenset[str]:
    from caraway.protocol.serializers import normalize_accept

    return normalize_accept(accept or ["json"])


def _log_outcome(message: TaskMessage, outcome: Outcome) -> None:
    if outcome.kind == "success":
        logger.info(
            "Task %s[%s] succeeded in %.6fs: %.200r",
            message.task,
            message.id,
            outcome.runtime,
            outcome.value,
        )
    elif outcome.kind == "failure":
        logger.error(
            "Task %s[%s] raised unexpected: %r\n%s",
            message.task,
            message.id,
            outcome.exc,
            outcome.traceback or "",
        )
    elif outcome.kind == "retry":
        logger.info("Task %s[%s] retry: %s", message.task, message.id, outcome.exc)
    else:
        logger.info("Task %s[%s] %s", message.task, message.id, outcome.kind)
