"""Real worker processes on a private Redis Cluster (3 masters, 3 replicas), broker and
results on the cluster: the embedded default's scenarios that hold for any broker, imported
from the SQLite modules so both stay one text, run here under a ``project`` on
``redis+cluster://`` with a key prefix private to each test.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.redis_ha import Cluster
from tests.e2e.test_revocation_and_parking_sqlite import (  # noqa: F401 - collected here
    test_a_node_started_after_a_revoke_still_honours_it,
    test_inspect_scheduled_lists_countdowns_parked_on_the_broker,
    test_producer_parked_countdown_runs_once_when_due,
)
from tests.e2e.test_worker_sqlite import (  # noqa: F401
    test_countdown_task_waits_for_its_eta_and_runs_on_its_queue,
    test_killed_child_task_is_redelivered_with_acks_late,
    test_message_that_keeps_killing_its_child_is_dead_lettered,
    test_retried_task_goes_through_retry_states_then_succeeds,
    test_seed_calling_examples_on_a_real_worker,
    test_started_state_is_visible_during_a_slow_task_with_track_started,
)
from tests.helpers import write_project

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start().url()
    finally:
        cluster.stop()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster_url: str) -> Iterator[Path]:
    """`proj` with broker and results on the cluster, under a key prefix of its own."""
    url = f"{cluster_url}/?global_keyprefix=e{uuid.uuid4().hex[:10]}:"
    monkeypatch.setenv("TEST_BROKER", url)
    monkeypatch.setenv("TEST_BACKEND", url)
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
