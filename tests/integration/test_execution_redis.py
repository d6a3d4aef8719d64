"""Issue #8 acceptance on real workers with Redis as broker and backend (db 7, ours alone).

The scenarios are the SQLite ones in tests/e2e/test_execution_more.py, collected here
again so they run against this module's ``project`` (Redis) fixture; autoscale is left
to SQLite, as growing children does not touch the broker. Redis-only facts follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from caraway import states
from caraway.protocol.results import decode_document
from tests.e2e import test_execution_more as scenarios
from tests.e2e.test_execution_more import EXEC_TASKS, evidence
from tests.helpers import Worker, wait_until, write_project
from tests.integration.redisproj import REDIS_APP, REDIS_TASKS, clean_db, redis_project

pytestmark = [pytest.mark.redis, pytest.mark.slow]

URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    yield from clean_db(URL)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: redis.Redis) -> Iterator[Path]:
    try:
        for base in redis_project(tmp_path, monkeypatch, URL):
            # redis_project wrote the plain Redis tasks; add this tasks to them
            write_project(base, REDIS_APP, REDIS_TASKS + EXEC_TASKS)
            yield base
    finally:
        scenarios.forget_receivers()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


test_revoked_countdown_task_is_not_run_and_is_stored_revoked = (
    scenarios.test_revoked_countdown_task_is_not_run_and_is_stored_revoked
)
test_revoked_ids_survive_a_worker_restart_with_statedb = (
    scenarios.test_revoked_ids_survive_a_worker_restart_with_statedb
)
test_reject_with_requeue_runs_the_task_again = (
    scenarios.test_reject_with_requeue_runs_the_task_again
)
test_reject_without_requeue_dead_letters_the_message_and_runs_it_once = (
    scenarios.test_reject_without_requeue_dead_letters_the_message_and_runs_it_once
)
test_ignore_acks_without_storing_a_result_or_running_again = (
    scenarios.test_ignore_acks_without_storing_a_result_or_running_again
)
test_update_state_progress_is_visible_while_the_task_runs = (
    scenarios.test_update_state_progress_is_visible_while_the_task_runs
)
test_request_context_inside_a_bound_task_has_every_field = (
    scenarios.test_request_context_inside_a_bound_task_has_every_field
)
test_retry_state_sequence_of_the_seed_is_observed = (
    scenarios.test_retry_state_sequence_of_the_seed_is_observed
)
test_autoretry_backoff_grows_exponentially_up_to_its_cap_then_fails_with_the_original = (
    scenarios.test_autoretry_backoff_grows_exponentially_up_to_its_cap_then_fails_with_the_original
)
test_max_retries_exceeded_raises_the_original_exception_when_one_was_given = (
    scenarios.test_max_retries_exceeded_raises_the_original_exception_when_one_was_given
)
test_max_memory_per_child_recycles_the_child_without_losing_tasks = (
    scenarios.test_max_memory_per_child_recycles_the_child_without_losing_tasks
)
test_task_and_worker_signal_receivers_fire = scenarios.test_task_and_worker_signal_receivers_fire
test_unserialisable_return_value_fails_the_task_and_the_worker_carries_on = (
    scenarios.test_unserialisable_return_value_fails_the_task_and_the_worker_carries_on
)
test_a_task_whose_retry_call_raises_fails_with_an_error_naming_the_value = (
    scenarios.test_a_task_whose_retry_call_raises_fails_with_an_error_naming_the_value
)


def test_terminated_task_is_stored_revoked_in_celerys_result_key_and_nothing_stays_unacked(
    project: Path, workers: list[Worker], db: redis.Redis
) -> None:
    worker = scenarios.start_worker(project, workers, "-c", "1")
    result = scenarios.project_tasks().sleeper.delay(8)
    wait_until(lambda: result.state == states.STARTED, timeout=10, message="STARTED")
    result.revoke(terminate=True, signal="SIGKILL")
    wait_until(lambda: result.state == states.REVOKED, timeout=5, message="REVOKED")
    document = decode_document(db.get(f"celery-task-meta-{result.id}") or b"{}")
    assert document["status"] == states.REVOKED
    assert document["result"]["exc_type"] == "TaskRevokedError"
    assert scenarios.project_tasks().add.delay(1, 1).get(timeout=10) == 2
    wait_until(lambda: db.hlen("unacked") == 0, timeout=5, message="unacked to drain")
    assert f"finished {result.id}" not in evidence(project)
    assert "killed by SIGKILL" in worker.log()
