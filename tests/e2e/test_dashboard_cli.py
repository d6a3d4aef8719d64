"""``caraway dashboard`` as a process: binds 127.0.0.1, demands its token, sees a -E worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Worker, wait_until

pytest.importorskip("uvicorn")

# the lead registers the command in cli/main.py; until then add it to the group here
LAUNCH = (
    "from caraway.cli.main import cli, main\n"
    "from caraway.cli.dashboard import dashboard\n"
    "cli.add_command(dashboard)\n"
    "main()\n"
)
TOKEN = "t0ken-for-the-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def dashboard_process(project: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = project / "dashboard.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "-A",
                "proj",
                "dashboard",
                "--port",
                str(port),
                "--auth-token",
                TOKEN,
            ],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(project)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"dashboard exited:\n{log.read_text()}")
                try:
                    return fetch(url + "/api/status")[0] == 401
                except OSError:
                    return False

            wait_until(up, timeout=20, message="the dashboard to listen")
            yield url, log
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_dashboard_command_requires_its_token_and_sees_an_events_worker(
    project: Path, workers: list[Worker], dashboard_process: tuple[str, Path]
) -> None:
    url, log = dashboard_process
    assert "http://127.0.0.1:" in log.read_text()
    status, body = fetch(url + "/api/workers")
    assert (status, body) == (401, {"error": "authentication required"})
    assert fetch(url + "/api/workers", token="wrong")[0] == 401

    workers.append(Worker(project, "-E", "-c", "1").wait_ready())

    def online() -> list[Any]:
        status, listed = fetch(url + "/api/workers", token=TOKEN)
        assert status == 200
        return [w for w in listed if w["status"] == "online" and w["pool"] == "prefork"]

    [worker] = wait_until(online, timeout=20, message="the worker online with its pool")
    assert worker["hostname"].startswith("w1@")
    assert worker["queues"] == ["celery"]
    status, doc = fetch(url + "/openapi.json", token=TOKEN)
    assert status == 200 and "/api/tasks/{task_id}" in doc["paths"]


def run_dashboard(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``caraway -A proj dashboard ARGS`` that is expected to refuse and exit."""
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, "-A", "proj", "dashboard", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_dashboard_command_rejects_two_kinds_of_auth(project: Path) -> None:
    result = run_dashboard(project, "--basic-auth", "a:b", "--auth-token", "t")
    assert result.returncode != 0
    assert "not both" in result.stderr


def test_dashboard_command_refuses_to_serve_beyond_loopback_without_credentials(
    project: Path,
) -> None:
    result = run_dashboard(project, "--address", "0.0.0.0")
    assert result.returncode != 0
    assert "refusing to serve 0.0.0.0 without credentials" in result.stderr
    assert "--insecure" in result.stderr
