"""No output of caraway shows the broker or result store password (issue 15, findings 3, 5).

A private Redis on a free port requires a sentinel password; a worker (debug log, task
events on), the CLI and the dashboard use it. Then every output path is searched for the
sentinel: the worker's log and banner, ``caraway report``, every inspect reply, the event
stream, the dashboard's JSON API and banner, and the error a wrong password produces.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest
import redis

from tests.helpers import Worker, wait_until, write_project

SENTINEL = f"Sentinel-{uuid.uuid4().hex[:12]}"

APP = """
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BROKER'],
              include=['proj.tasks'])
app.conf.update(
    broker_connection_max_retries=2,
    # a secret under a secret's name, nested, as transport options hold them
    broker_transport_options={'visibility_timeout': 3600,
                              'extra': {'api_key': os.environ['TEST_SECRET']}},
    result_backend_transport_options={'password_hint': os.environ['TEST_SECRET']},
)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis() -> Iterator[int]:
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--requirepass", SENTINEL, "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password=SENTINEL)
        wait_until(lambda: _pings(client), timeout=10, message="the private Redis")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def secret_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_redis: int
) -> Iterator[Path]:
    write_project(tmp_path, app_source=APP)
    monkeypatch.setenv("TEST_BROKER", f"redis://:{SENTINEL}@127.0.0.1:{private_redis}/0")
    monkeypatch.setenv("TEST_SECRET", SENTINEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    yield tmp_path
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def _cli(project: Path, *args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "caraway", "-A", "proj", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout + done.stderr


def _events(project: Path) -> str:
    """``caraway events --dump --json`` (every field) until it has shown a task's events."""
    path = project / "events.txt"
    with open(path, "w") as out:
        dump = subprocess.Popen(
            [sys.executable, "-m", "caraway", "-A", "proj", "events", "--dump", "--json"],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(project)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            from proj.tasks import add

            def seen() -> bool:
                # it subscribes after it starts: keep sending until one shows
                add.delay(1, 1).get(timeout=10)
                return "task-succeeded" in path.read_text()

            wait_until(seen, timeout=20, message="events in the dump")
        finally:
            dump.terminate()
            dump.wait(timeout=10)
    return path.read_text()


def _dashboard(project: Path, hostname: str) -> str:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "caraway", "-A", "proj", "dashboard", "--port", str(port)],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pages: list[str] = []
    try:

        def get(path: str) -> str:
            request = Request(f"http://127.0.0.1:{port}{path}", headers={"Host": "127.0.0.1"})
            with urlopen(request, timeout=10) as response:
                return str(response.read().decode())

        def up() -> bool:
            try:
                return bool(get("/api/status"))
            except OSError:
                return False

        wait_until(up, timeout=20, message="the dashboard")
        wait_until(lambda: hostname in get("/api/workers"), timeout=20, message="a worker row")
        for path in (
            "/api/workers",
            f"/api/workers/{hostname}",
            "/api/status",
            "/api/tasks",
            "/api/queues",
            "/api/session",
            "/api/dead-letters",
        ):
            pages.append(get(path))
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert any("127.0.0.1" in page or hostname in page for page in pages)
    return output + "\n".join(pages)


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_no_output_shows_the_broker_password(secret_project: Path) -> None:
    worker = Worker(secret_project, "-c", "1", "-E", "-l", "debug")
    try:
        worker.wait_ready()
        from proj.caraway import app
        from proj.tasks import add

        assert add.delay(2, 3).get(timeout=15) == 5
        hostname = f"w1@{socket.gethostname()}"
        inspect = app.control.inspect(destination=[hostname], timeout=5)
        replies: dict[str, Any] = {
            name: getattr(inspect, name)()
            for name in ("stats", "conf", "active_queues", "registered", "active")
        }
        replies["report"] = app.control.broadcast(
            "report", destination=[hostname], reply=True, timeout=5
        )
        assert replies["stats"] and "127.0.0.1" in json.dumps(replies["stats"])
        outputs = {
            "inspect replies": json.dumps(replies, default=str),
            "caraway report": _cli(secret_project, "report"),
            "caraway inspect stats": _cli(secret_project, "inspect", "stats"),
            "caraway inspect conf": _cli(secret_project, "inspect", "conf"),
            "events": _events(secret_project),
            "dashboard": _dashboard(secret_project, hostname),
            "humanize": app.conf.humanize(with_defaults=True),
        }
    finally:
        worker.stop()
    outputs["worker log (debug)"] = worker.log()
    assert "transport:" in outputs["worker log (debug)"]  # the banner is in it
    leaked = [where for where, text in outputs.items() if SENTINEL in text]
    assert leaked == [], f"the password shows in: {leaked}"


@pytest.mark.redis
def test_the_error_for_a_wrong_password_does_not_show_it(
    secret_project: Path, private_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = f"Wrong-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TEST_BROKER", f"redis://:{wrong}@127.0.0.1:{private_redis}/0")
    output = _cli(secret_project, "inspect", "ping", "--timeout", "1")
    assert "127.0.0.1" in output  # it did say where it failed
    assert wrong not in output
