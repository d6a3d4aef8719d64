"""A `proj` package for real workers on Redis, and a private `redis-server` for chaos tests.

Shared by tests/integration, tests/interop and tests/chaos. The app reads its broker,
backend and transport options from the environment, so the test process and the workers it
starts agree. A missing service skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import PROJ_TASKS, wait_until, write_project

REDIS_APP = """
import json
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], backend=os.environ['TEST_BACKEND'],
              include=['proj.tasks'])
app.conf.update(
    result_expires=3600,
    broker_transport_options=json.loads(os.environ.get('TEST_TRANSPORT_OPTIONS') or '{}'),
    broker_park_horizon=float(os.environ.get('TEST_PARK_HORIZON') or 60),
    worker_prefetch_multiplier=int(os.environ.get('TEST_PREFETCH') or 4),
)
"""

# Tasks that leave evidence in Redis itself (db of TEST_BROKER): which ids ran, how often.
REDIS_TASKS = (
    PROJ_TASKS
    + """

import redis as _redis
from redis.backoff import ExponentialBackoff as _Backoff
from redis.retry import Retry as _Retry

_client = None


def _redis_client():
    global _client
    if _client is None:
        _client = _redis.Redis.from_url(os.environ['TEST_BROKER'])
    return _client


@app.task(bind=True)
def mark(self, key, value):
    client = _redis_client()
    client.sadd(key, value)
    client.rpush(key + ':runs', value)
    return value


@app.task(acks_late=True)
def mark_late(key, value):
    # rides out a broker restart: the evidence must not be what fails
    client = _redis.Redis.from_url(os.environ['TEST_BROKER'], retry=_Retry(_Backoff(cap=1), 30),
                                   retry_on_error=[_redis.ConnectionError])
    try:
        client.sadd(key, value)
        client.rpush(key + ':runs', value)
    finally:
        client.close()
    return value


@app.task(bind=True)
def nap(self, key, seconds):
    # hold's early-ack twin
    time.sleep(seconds)
    _redis_client().rpush(key, self.request.id)
    return 'napped'


@app.task(bind=True, acks_late=True)
def hold(self, key, seconds):
    client = _redis_client()
    client.rpush(key + ':started', self.request.id)
    time.sleep(seconds)
    client.sadd(key, self.request.id)
    return 'held'
"""
)


def require(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a test that needs a service never silently passes."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (required in CI)")
    pytest.skip(why)


def redis_problem(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()


def clean_db(url: str) -> Iterator[redis.Redis]:
    """Yield a client on ``url``'s db, flushed before and after (the db is ours alone)."""
    require(redis_problem(url) is None, f"no Redis at {url}: {redis_problem(url)}")
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def redis_project(
    base: Path, monkeypatch: pytest.MonkeyPatch, url: str, **env: str
) -> Iterator[Path]:
    """Write `proj` on Redis into ``base``; this process and its workers import the same."""
    write_project(base, app_source=REDIS_APP, tasks_source=REDIS_TASKS)
    monkeypatch.setenv("TEST_BROKER", url)
    monkeypatch.setenv("TEST_BACKEND", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(base)
    monkeypatch.syspath_prepend(str(base))
    forget_proj()
    try:
        yield base
    finally:
        forget_proj()


def forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def tasks() -> Any:
    import proj.tasks  # type: ignore[import-not-found]  # written by redis_project

    return proj.tasks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port; ``stop()`` kills it by pid."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server is not installed")
        assert binary is not None
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
        ]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(
            lambda: redis_problem(self.url) is None,
            timeout=10,
            message=f"redis-server on port {self.port}",
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.process = None
