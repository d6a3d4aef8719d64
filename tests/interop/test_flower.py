"""Flower 2.2 (a test-only dependency) against a caraway worker on Redis db 8.

Flower runs as its own process, a Celery app pointed at the same Redis; it learns the
cluster from caraway's events and remote-control replies. Its worker page, task list, task
detail and control endpoints must work, with countdown tasks held (``inspect scheduled``
in Celery's shape), a task killed by ``revoke --terminate`` (task-revoked) and one killed by
its hard time limit (task-failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import Worker, wait_until
from tests.integration.redisproj import clean_db, free_port, redis_project, tasks

pytestmark = [pytest.mark.slow, pytest.mark.redis]

pytest.importorskip("flower")

URL = "redis://127.0.0.1:6379/8"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db: Iterator[redis.Redis] = clean_db(URL)
    next(db)
    try:
        yield from redis_project(tmp_path, monkeypatch, URL)
    finally:
        next(db, None)


@pytest.fixture
def flower(project: Path) -> Iterator[str]:
    port = free_port()
    log = open(project / "flower.log", "wb")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "celery", f"--broker={URL}", "flower"]
    command += ["--address=127.0.0.1", f"--port={port}", "--inspect_timeout=3000"]
    process = subprocess.Popen(
        command,
        cwd=project,
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=30, message="flower to answer")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _up(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/healthcheck", timeout=2).read()
    except OSError:
        return False
    return True


def _get(url: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _api(url: str, path: str) -> Any:
    status, body = _get(url, path)
    assert status == 200, f"{path}: HTTP {status}: {body[:500]}"
    return json.loads(body)


def _post(url: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None


def _state(url: str, task_id: str) -> str | None:
    status, body = _get(url, f"/api/task/info/{task_id}")
    return json.loads(body).get("state") if status == 200 else None


def test_flower_pages_and_controls_work_against_a_caraway_worker(
    project: Path, flower: str
) -> None:
    proj = tasks()
    # sent before the worker starts, so its first fetch takes all three: one runs in the one
    # slot, one waits for its countdown (scheduled), one waits behind the first (reserved)
    later = proj.add.apply_async((1, 1), countdown=30)
    held = proj.slow.delay(60)  # until revoke --terminate kills it
    queued = proj.add.delay(3, 3)
    # the queued one stays reserved behind the running task: no fair-dispatch hand-off (a
    # long threshold would not do: the autoscaler's second child waits idle and gets it)
    keep = {"CARAWAY_WORKER_HAND_OFF_AFTER": "none"}
    worker = Worker(project, "-E", "-c", "1", "--autoscale=2,1", name="fl", env=keep)
    try:
        worker.wait_ready()
        node = wait_until(
            lambda: next(iter(_api(flower, "/api/workers?refresh=1")), None),
            timeout=30,
            message="flower to see the caraway worker",
        )
        one = f"/api/workers?refresh=1&workername={node}"  # task lists come per worker
        scheduled = _api(flower, one)[node]["scheduled"]
        assert [item["request"]["id"] for item in scheduled] == [later.id]
        assert isinstance(scheduled[0]["eta"], str)
        assert scheduled[0]["request"]["args"] == "(1, 1)"
        assert scheduled[0]["request"]["delivery_info"]["routing_key"] == "celery"
        reserved = _api(flower, one)[node]["reserved"]
        assert [item["id"] for item in reserved] == [queued.id]
        assert [item["id"] for item in _api(flower, one)[node]["active"]] == [held.id]
        status, page = _get(flower, f"/worker/{node}")
        assert status == 200 and node in page

        done = proj.add.delay(2, 2)
        _post(flower, f"/api/task/revoke/{held.id}?terminate=true")
        wait_until(lambda: _state(flower, held.id) == "REVOKED", timeout=15, message="revoked")
        assert done.get(timeout=15) == 4
        wait_until(lambda: _state(flower, done.id) == "SUCCESS", timeout=15, message="success")
        tasks_listed = _api(flower, "/api/tasks")
        assert tasks_listed[done.id]["state"] == "SUCCESS"
        detail = _api(flower, f"/api/task/info/{done.id}")
        assert detail["result"] == "4" and detail["name"] == "proj.tasks.add"
        assert _get(flower, f"/task/{done.id}")[0] == 200

        killed = proj.hard_limited.delay(5)
        wait_until(lambda: _state(flower, killed.id) == "FAILURE", timeout=20, message="failed")
        assert "TimeLimitExceeded" in _api(flower, f"/api/task/info/{killed.id}")["exception"]

        # Flower answers 403 with the node's error when a command fails, 200 when it worked
        answer = _post(flower, f"/api/worker/pool/autoscale/{node}?min=1&max=3")
        assert answer["message"].startswith("Autoscaling"), answer
        answer = _post(flower, f"/api/worker/pool/grow/{node}?n=1")
        assert "grow" in answer["message"].lower(), answer
        answer = _post(flower, f"/api/worker/queue/add-consumer/{node}?queue=dropin-extra")
        assert "dropin-extra" in answer["message"], answer
        queues = _api(flower, f"/api/workers?refresh=1&workername={node}")[node]["active_queues"]
        assert "dropin-extra" in [queue["name"] for queue in queues]
    finally:
        worker.stop()
