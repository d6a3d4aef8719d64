"""Real worker processes on the PostgreSQL broker, with results in the same database.

The scenarios of the embedded default that hold for any broker run here again (imported
from the SQLite modules, so both stay one text) under a ``project`` whose broker is
``postgresql://`` and whose results are ``db+postgresql://``, in a schema private to the
test (database ``caraway_ha_e2e_*``, dropped afterwards). Plus what only a PostgreSQL run
shows: a parked countdown comes due and wakes a consumer with no polling.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caraway import states
from tests import pg
from tests.e2e.test_execution_sqlite import (  # noqa: F401 - collected here, on PostgreSQL
    test_expired_message_is_revoked_not_run,
    test_hard_time_limit_kills_the_child_and_the_worker_keeps_serving,
)
from tests.e2e.test_revocation_and_parking_sqlite import (  # noqa: F401
    test_a_node_started_after_a_revoke_still_honours_it,
    test_inspect_scheduled_lists_countdowns_parked_on_the_broker,
    test_producer_parked_countdown_runs_once_when_due,
)
from tests.e2e.test_worker_sqlite import (  # noqa: F401
    test_countdown_task_waits_for_its_eta_and_runs_on_its_queue,
    test_killed_child_task_is_redelivered_with_acks_late,
    test_killed_child_without_reject_on_worker_lost_fails_with_worker_lost,
    test_message_that_keeps_killing_its_child_is_dead_lettered,
    test_retried_task_goes_through_retry_states_then_succeeds,
    test_seed_calling_examples_on_a_real_worker,
    test_started_state_is_visible_during_a_slow_task_with_track_started,
    test_warm_shutdown_lets_the_running_task_finish,
)
from tests.helpers import Worker, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    with pg.database("caraway_ha_e2e") as name:
        yield name


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_db: str) -> Iterator[Path]:
    """`proj` on ``postgresql://`` with ``db+postgresql://`` results, in a private schema."""
    with pg.schema(pg_db) as schema:
        monkeypatch.setenv("TEST_BROKER", pg.url(pg_db, schema=schema))
        monkeypatch.setenv("TEST_BACKEND", pg.url(pg_db, scheme="db+postgresql", schema=schema))
        write_project(tmp_path)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        _forget_proj()
        try:
            yield tmp_path
        finally:
            _forget_proj()


def _forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def test_a_countdown_past_the_park_horizon_is_parked_in_the_table_and_runs_when_due(
    project: Path, workers: list[Worker]
) -> None:
    from proj.caraway import app
    from proj.tasks import add

    worker = Worker(project, "-c", "1", env={"CARAWAY_BROKER_PARK_HORIZON": "0.5"})
    workers.append(worker.wait_ready())
    sent = time.monotonic()
    result = add.apply_async((20, 22), countdown=2.5)
    admin = app.admin()
    try:
        # the worker parks it on the broker rather than holding it in memory
        deadline = time.monotonic() + 2
        while not admin.scheduled() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.headers["id"] for _, _, m in admin.scheduled()] == [result.id]
    finally:
        admin.close()
    assert result.get(timeout=15) == 42
    assert time.monotonic() - sent >= 2.4
    assert result.state == states.SUCCESS
