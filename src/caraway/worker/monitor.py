"""The worker's task and worker events (``-E``), in Celery's format, off the hot path.

A thin layer between the consumer/supervisor and ``caraway.events.EventDispatcher``:
it turns messages and outcomes into Celery's event fields, and costs one attribute
check per call while task events are off. As in Celery, ``enabled`` (``-E``,
``enable_events``/``disable_events``) switches task events only: worker events are always
sent, so a monitor sees every node online whatever its task events.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from caraway.events.dispatcher import EventDispatcher
from caraway.protocol.message import TaskMessage, safe_repr

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.lifecycle import Outcome

logger = logging.getLogger("caraway.worker")

HEARTBEAT_FREQ = 2.0


class TaskEvents:
    """Sends task-* events (when enabled) and worker-* events for one process of a node."""

    def __init__(self, app: Caraway, hostname: str, *, enabled: bool) -> None:
        self.app = app
        self.hostname = hostname
        self._enabled = enabled
        self._dispatcher: EventDispatcher | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        # task events only: the dispatcher stays on for the worker's heartbeats
        self._enabled = value

    def _send(self, kind: str, **fields: Any) -> None:
        if self._dispatcher is None:
            self._dispatcher = EventDispatcher(
                self.app, hostname=self.hostname, enabled=True, caller_flushes=True
            )
        self._dispatcher.send(kind, **fields)

    def received(self, message: TaskMessage) -> None:
        if not self._enabled:
            return
        self._send(
            "task-received",
            uuid=message.id,
            name=message.task,
            args=message.argsrepr or safe_repr(tuple(message.args)),
            kwargs=message.kwargsrepr or safe_repr(message.kwargs),
            root_id=message.root_id,
            parent_id=message.parent_id,
            retries=message.retries,
            eta=message.eta.isoformat() if message.eta else None,
            expires=message.expires.isoformat() if message.expires else None,
            # beyond Celery's fields (monitors ignore unknown ones): the group a task
            # belongs to, so a monitor can draw a group or chord whole, with its progress
            group=message.group,
            group_index=message.group_index,
        )

    def started(self, message: TaskMessage) -> None:
        if self._enabled:
            self._send("task-started", uuid=message.id)

    def finished(self, message: TaskMessage, outcome: Outcome) -> None:
        if not self._enabled:
            return
        if outcome.kind == "success":
            self._send(
                "task-succeeded",
                uuid=message.id,
                result=safe_repr(outcome.value),
                runtime=outcome.runtime,
            )
        elif outcome.kind == "failure":
            self._send(
                "task-failed",
                uuid=message.id,
                exception=safe_repr(outcome.exc),
                traceback=outcome.traceback or "",
            )
        elif outcome.kind == "retry":
            # Celery reports the error the task retried for, not the Retry around it
            self._send(
                "task-retried",
                uuid=message.id,
                exception=safe_repr(getattr(outcome.exc, "exc", None) or outcome.exc),
                traceback=outcome.traceback or "",
            )
        elif outcome.kind == "reject":
            self._send("task-rejected", uuid=message.id, requeue=outcome.requeue)

    def revoked(self, message: TaskMessage, *, expired: bool, terminated: bool = False) -> None:
        if self._enabled:
            self._send(
                "task-revoked", uuid=message.id, terminated=terminated, signum=None, expired=expired
            )

    def lost(self, task_id: str, *, error: BaseException, signum: int | None = None) -> None:
        """A task whose process the supervisor killed or lost (its child sent no outcome).

        As Celery does: task-revoked (terminated) for a terminate, task-failed otherwise
        (hard time limit, worker lost), so a monitor does not leave it STARTED.
        """
        if not self._enabled:
            return
        if signum is not None:
            self._send("task-revoked", uuid=task_id, terminated=True, signum=signum, expired=False)
        else:
            self._send("task-failed", uuid=task_id, exception=safe_repr(error), traceback="")

    def flush(self) -> None:
        if self._dispatcher is not None:
            try:
                self._dispatcher.flush()
            except Exception:
                logger.exception("could not send events")

    def worker(
        self, kind: str, *, active: int, processed: int, freq: float = HEARTBEAT_FREQ
    ) -> None:
        """worker-online / worker-heartbeat / worker-offline, whatever ``enabled`` says;
        ``freq`` is the heartbeat interval monitors judge the node alive by."""
        self._send(
            kind,
            freq=freq,
            active=active,
            processed=processed,
            loadavg=[round(value, 2) for value in os.getloadavg()],
        )

    def close(self) -> None:
        if self._dispatcher is not None:
            try:
                self._dispatcher.flush()
                self._dispatcher.close()
            except Exception:
                logger.exception("could not flush the last events")
