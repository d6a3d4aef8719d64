"""A real Django project (tests/integrations/djangoproj, Celery's layout with caraway's
names) on SQLite and on the machine's PostgreSQL, with real worker processes: settings
from Django's, tasks found in every installed app, sends held for the commit, and
database connections never shared across a fork nor handed stale to a task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Worker

PROJECT = Path(__file__).parent / "djangoproj"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The project copied to a new directory, its own database created and migrated."""
    engine = str(request.param)
    base = tmp_path_factory.mktemp(f"django-{engine}")
    shutil.copytree(PROJECT, base, dirs_exist_ok=True)
    name = f"caraway_django_{uuid.uuid4().hex[:10]}"
    env = {
        "TEST_DB_ENGINE": engine,
        "TEST_DB_NAME": name if engine == "postgresql" else str(base / "db.sqlite3"),
        "TEST_BROKER": f"sqlite:///{base}/broker.sqlite3",
        "DJANGO_SETTINGS_MODULE": "proj.settings",
    }
    if engine == "postgresql":
        _admin(f'CREATE DATABASE "{name}"')
    try:
        _run(base, env, "-m", "django", "migrate", "--noinput", "-v", "0")
        yield base, env
    finally:
        if engine == "postgresql":
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def worker(project: tuple[Path, dict[str, str]]) -> Iterator[Worker]:
    """``caraway -A proj worker`` with two prefork children and persistent connections."""
    base, env = project
    node = Worker(base, "-c", "2", env=env, name="django1")
    try:
        yield node.wait_ready()
    finally:
        node.stop()


def _admin(statement: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _run(base: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=base,
        env={**os.environ, "PYTHONPATH": str(base), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def drive(project: tuple[Path, dict[str, str]], scenario: str, *args: str, **env: str) -> Any:
    """Run a scenario of the project's web side (drive.py) and return what it printed."""
    base, base_env = project
    out = _run(base, {**base_env, **env}, "drive.py", scenario, *args)
    return json.loads(out.strip().splitlines()[-1])


def test_autodiscover_finds_every_installed_apps_tasks_when_the_app_is_first_used(
    project: tuple[Path, dict[str, str]], worker: Worker
) -> None:
    found = drive(project, "registered")
    assert found["lazy"] is True  # creating the app imported no tasks module
    assert {"orders.tasks.mark_paid", "orders.tasks.whoami", "billing.tasks.invoice_total"} <= set(
        found["names"]
    )
    assert found["base"] is True  # DjangoTask, for delay_on_commit
    assert "billing.tasks.invoice_total" in worker.log()  # the worker found them too


def test_settings_come_from_django_under_either_namespace(
    project: tuple[Path, dict[str, str]],
) -> None:
    assert drive(project, "settings")["queue"] == "django"
    celery_names = drive(project, "settings", PROJ_NAMESPACE="CELERY")
    assert celery_names["queue"] == "celery-named"
    assert celery_names["broker"] == project[1]["TEST_BROKER"]


def test_a_shared_task_in_an_app_reads_and_writes_the_database(
    project: tuple[Path, dict[str, str]], worker: Worker
) -> None:
    assert drive(project, "pay") == {"returned": "paid", "stored": "paid"}


def test_on_commit_sends_only_once_the_transaction_commits_and_never_on_rollback(
    project: tuple[Path, dict[str, str]], worker: Worker
) -> None:
    seen = drive(project, "on_commit")
    assert seen["held_inside"] == 0  # inside atomic(): not sent yet
    assert seen["held_after"] == 1  # sent by the commit
    assert seen["held_after_rollback"] == 1  # the rolled-back one never was
    assert seen["status"] == "paid"  # delay_on_commit's task found the committed row


def test_no_connection_is_shared_across_a_fork(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    base, env = project
    parent_file = tmp_path / "parent.txt"
    node_env = {**env, "TEST_PARENT_FILE": str(parent_file), "TEST_CONN_MAX_AGE": "0"}
    node = Worker(base, "-c", "2", "-Q", "forks", env=node_env, name="django-fork")
    try:
        node.wait_ready()
        runs = drive(project, "whoami_many", "6", "forks")
    finally:
        node.stop()
    parent_pid, parent_db, parent_db_at_exit, _count = (
        int(part) for part in parent_file.read_text().split()
    )
    assert all(pid != parent_pid for pid, _, _ in runs)  # tasks ran in children
    assert all(db != parent_db for _, db, _ in runs)  # none on the parent's connection
    assert parent_db_at_exit == parent_db  # which the parent still uses, unharmed
    if env["TEST_DB_ENGINE"] == "postgresql":
        # CONN_MAX_AGE=0: each task's connection was closed after it, so every run had
        # its own server session, in whichever child
        assert len({db for _, db, _ in runs}) == len(runs)


@pytest.mark.parametrize("project", ["postgresql"], indirect=True)  # a server to drop it
def test_a_connection_the_server_dropped_is_replaced_before_the_next_task(
    project: tuple[Path, dict[str, str]], worker: Worker
) -> None:
    [(child, session, _)] = drive(project, "whoami_many", "1", "django")
    _admin(f"SELECT pg_terminate_backend({int(session)})")
    for _ in range(10):  # until the child whose session died has run another task
        runs = drive(project, "whoami_many", "2", "django")
        if any(pid == child for pid, _, _ in runs):
            break
    else:
        raise AssertionError(f"child {child} ran no task in 20 tries")
    assert all(db != session for pid, db, _ in runs if pid == child)


@pytest.mark.parametrize("project", ["postgresql"], indirect=True)  # sessions have ids
def test_a_connection_past_conn_max_age_is_closed_before_the_next_task(
    project: tuple[Path, dict[str, str]],
) -> None:
    """CONN_MAX_AGE=1: a connection still young when a task ended has aged by the time the
    next one starts; it is closed then, not handed to the task (Django's rule per request)."""
    base, env = project
    node = Worker(base, "-c", "1", "-Q", "aged", env={**env, "TEST_CONN_MAX_AGE": "1"})
    try:
        node.wait_ready()
        [(child, first, _)] = drive(project, "whoami_many", "1", "aged")
        time.sleep(1.2)  # the condition is time itself: the connection's age passes 1 s
        [(same_child, second, _)] = drive(project, "whoami_many", "1", "aged")
    finally:
        node.stop()
    assert same_child == child
    assert second != first
