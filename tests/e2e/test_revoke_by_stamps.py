"""Revoking by stamped headers (``app.control.revoke_by_stamped_headers``, Celery 5.3+): a
worker discards a task whose stamps match a revoked header, as REVOKED without running it,
runs the others, and with ``terminate=True`` also kills a matching task that is running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from caraway import states
from tests.helpers import Worker, wait_until

CARAWAY = (sys.executable, "-m", "caraway", "-A", "proj")


def test_a_task_stamped_with_a_revoked_header_is_not_run(
    project: Path, workers: list[Worker]
) -> None:
    from proj.caraway import app
    from proj.tasks import add

    workers.append(Worker(project, "-c", "1").wait_ready())
    replies = app.control.revoke_by_stamped_headers({"batch": ["b1", "b2"]}, reply=True)
    assert [next(iter(reply.values()))["ok"] for reply in replies] == [
        "headers {'batch': ['b1', 'b2']} flagged as revoked, but not terminated"
    ]
    doomed = add.s(1, 1).stamp(batch="b2").delay()
    kept = add.s(2, 2).stamp(batch="b3").delay()
    assert kept.get(timeout=20) == 4
    wait_until(lambda: doomed.state == states.REVOKED, timeout=20, message="REVOKED")
    assert add.delay(3, 3).get(timeout=20) == 6  # unstamped tasks run

    # the command line's form: Celery's key=value words
    done = subprocess.run(
        [*CARAWAY, "control", "revoke_by_stamped_headers", "batch=b9"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "headers {'batch': 'b9'} flagged as revoked, but not terminated" in done.stdout
    by_cli = add.s(5, 5).stamp(batch="b9").delay()
    wait_until(lambda: by_cli.state == states.REVOKED, timeout=20, message="REVOKED")


def test_terminate_kills_a_running_task_whose_stamp_matches(
    project: Path, workers: list[Worker]
) -> None:
    from proj.tasks import add, slow

    workers.append(Worker(project, "-c", "2").wait_ready())
    running = slow.s(60).stamp(tenant="acme").delay()
    wait_until(lambda: running.state == states.STARTED, timeout=20, message="STARTED")
    running.revoke_by_stamped_headers({"tenant": "acme"}, terminate=True, signal="SIGKILL")
    wait_until(lambda: running.state == states.REVOKED, timeout=20, message="REVOKED")
    assert add.s(4, 4).stamp(tenant="other").delay().get(timeout=20) == 8
