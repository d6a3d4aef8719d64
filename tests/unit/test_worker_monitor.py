"""The worker's task events in Celery's form: what Flower reads for retries, kills, revokes."""

from __future__ import annotations

from typing import Any

import pytest

from caraway import Caraway, exceptions
from caraway.lifecycle import Outcome
from caraway.protocol.message import TaskMessage
from caraway.worker.monitor import TaskEvents


class Recorder(TaskEvents):
    """TaskEvents that keeps what it would send."""

    def __init__(self) -> None:
        super().__init__(Caraway("mon", broker="memory://mon", set_as_current=False),
                         "w@h", enabled=True)  # fmt: skip
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def _send(self, kind: str, **fields: Any) -> None:
        self.sent.append((kind, fields))


@pytest.fixture
def events() -> Recorder:
    return Recorder()


def test_task_retried_names_the_wrapped_error_as_celery(events: Recorder) -> None:
    retry = exceptions.Retry(exc=KeyError("k"), when=1.0)
    events.finished(TaskMessage(id="t1", task="x"), Outcome("retry", exc=retry))
    assert events.sent == [("task-retried", {"uuid": "t1", "exception": "KeyError('k')",
                                             "traceback": ""})]  # fmt: skip


def test_a_terminated_task_is_revoked_and_a_killed_one_failed(events: Recorder) -> None:
    events.lost("t2", error=exceptions.TaskRevokedError("terminated"), signum=9)
    events.lost("t3", error=exceptions.TimeLimitExceeded("limit"))
    assert events.sent == [
        ("task-revoked", {"uuid": "t2", "terminated": True, "signum": 9, "expired": False}),
        ("task-failed", {"uuid": "t3", "exception": "TimeLimitExceeded('limit')",
                         "traceback": ""}),
    ]  # fmt: skip
    events.enabled = False
    events.lost("t4", error=exceptions.TaskRevokedError("terminated"), signum=15)
    assert len(events.sent) == 2
