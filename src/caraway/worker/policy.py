"""What a consumer derives from settings and says about its work, apart from its loop.

A task's :class:`~caraway.lifecycle.Policy` from its options and the app's settings,
the accepted content types, the log line of a finished task, this process's resident memory
and the ``(id, name)`` a held delivery is reported as.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from caraway.brokers.contracts import Delivery
from caraway.lifecycle import Outcome
from caraway.protocol.message import REPR_MAX, TaskMessage, safe_repr
from caraway.protocol.serializers import normalize_accept

logger = logging.getLogger("caraway.worker")


def _rss_kib() -> int:
    """Resident memory of this process now, in KiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _info(delivery: Delivery) -> tuple[str, str, str, str, str]:
    # read before the message is decoded, so from headers that may be anything at all
    headers = delivery.message.headers
    if not isinstance(headers, dict):
        headers = {}
    return (
        _shown(headers.get("id"), ""),
        _shown(headers.get("task"), ""),
        _shown(headers.get("argsrepr"), "()"),
        _shown(headers.get("kwargsrepr"), "{}"),
        delivery.queue,
    )


def _shown(value: Any, default: str) -> str:
    if not value:
        return default
    if isinstance(value, str):
        return value if len(value) <= REPR_MAX else value[:REPR_MAX] + "..."
    return safe_repr(value)


def protocol_accept(accept: Any) -> frozenset[str]:
    return normalize_accept(accept or ["json"])


def _log_outcome(message: TaskMessage, outcome: Outcome) -> None:
    name = message.shadow or message.task  # Celery logs the name a task was sent under
    if outcome.kind == "success":
        logger.info(
            "Task %s[%s] succeeded in %.6fs: %.200r",
            name,
            message.id,
            outcome.runtime,
            outcome.value,
        )
    elif outcome.kind == "failure":
        logger.error(
            "Task %s[%s] raised unexpected: %r\n%s",
            name,
            message.id,
            outcome.exc,
            outcome.traceback or "",
        )
    elif outcome.kind == "retry":
        logger.info("Task %s[%s] retry: %s", name, message.id, outcome.exc)
    else:
        logger.info("Task %s[%s] %s", name, message.id, outcome.kind)
