"""``self.request`` fields a worker fills as Celery 5.7's does: ``properties`` (the message's
properties: correlation_id, reply_to, delivery_mode, priority), and ``logfile``, ``loglevel``
and ``utc``, which Celery's pool path leaves None (they exist: reading them must not fail)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import PROJ_APP, Worker, write_project

TASKS = """
from .caraway import app


@app.task(bind=True)
def fields(self):
    properties = self.request.properties
    return {
        'correlation_id': properties.get('correlation_id') == self.request.id,
        'reply_to': properties.get('reply_to'),
        'delivery_mode': properties.get('delivery_mode'),
        'priority': properties.get('priority'),
        'logs': [self.request.logfile, self.request.loglevel, self.request.utc],
    }
"""


def test_request_properties_and_log_fields(project: Path, workers: list[Worker]) -> None:
    write_project(project, PROJ_APP, TASKS)
    workers.append(Worker(project, "-P", "solo").wait_ready())
    import proj.tasks as tasks

    result = tasks.fields.apply_async(priority=3)
    got = result.get(timeout=20)
    assert got["correlation_id"] is True
    assert got["reply_to"] and got["delivery_mode"] == 2 and got["priority"] == 3
    assert got["logs"] == [None, None, None]
