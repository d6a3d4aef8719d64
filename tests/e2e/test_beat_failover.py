"""Three beat instances (two ``worker -B`` nodes and one ``caraway beat``) on each broker, an
entry every second, the leader SIGKILLed twice: every scheduled second is sent exactly
once; the only gaps are inside the takeover windows after the kills.

Sends are counted on the broker: the entry routes to a queue no worker consumes, and the
test reads every message there at the end by its ``periodic_task_scheduled`` header.
Redis db 9 and RabbitMQ names ``beat-*`` are this module's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from caraway.protocol.message import decode
from tests.contract.conftest import _rabbit_or_skip, delete_amqp_queues
from tests.helpers import Worker, wait_until, write_project

REDIS_URL = "redis://127.0.0.1:6379/9"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
LEASE = 1.5
#: after a kill, runs may be missing from this long before it until this long after it
BEFORE_KILL, AFTER_KILL = 1.5, LEASE + 3.0

APP = """
import os
from caraway import Caraway

app = Caraway('proj', broker=os.environ['TEST_BROKER'], include=['proj.tasks'])
app.conf.update(
    beat_schedule_filename=os.environ['TEST_BEAT_NAME'],
    beat_lease_seconds=float(os.environ['TEST_LEASE']),
    beat_schedule={
        'tick': {'task': 'proj.tasks.tick', 'schedule': 1.0,
                 'options': {'queue': os.environ['TEST_TICKS']}},
    },
    broker_connection_max_retries=2,
)
"""

TASKS = """
from .caraway import app


@app.task
def tick():
    return 'tick'
"""


@dataclass
class Names:
    beat: str
    ticks: str
    idle: str


class BeatProcess:
    """A real ``caraway -A proj beat`` process, stopped by ``stop()`` whatever happens."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.logfile = cwd / "beat.log"
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "caraway", "-A", "proj", "beat", "-l", "info"]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(cwd), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Names]]:
    kind: str = request.param
    token = uuid.uuid4().hex[:10]
    names = Names(beat=f"beat-{token}", ticks=f"beat-ticks-{token}", idle=f"beat-idle-{token}")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.sqlite3'}", names
        return
    if kind == "amqp":
        _rabbit_or_skip()
        try:
            yield AMQP_URL, names
        finally:
            namespace = f"{names.beat}.proj"
            delete_amqp_queues(
                [names.ticks, names.idle, f"{namespace}.beat", f"{namespace}.beat.status"]
            )
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis must answer in CI: {exc!r}")
        pytest.skip(f"no Redis: {exc!r}")
    client.flushdb()
    try:
        yield REDIS_URL, names
    finally:
        client.flushdb()
        client.close()


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    write_project(tmp_path, APP, TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    from proj.caraway import app

    return app


def _leader(app: Any) -> str | None:
    from caraway.beat import beat_status

    status = beat_status(app)
    return status.leader.node if status.leader else None


def _sent(app: Any, queue: str) -> list[int]:
    """The scheduled instant (ms) of every message on ``queue``, read off the broker."""
    transport = app.connection()
    found: list[int] = []
    try:
        while True:
            batch = transport.fetch([queue], limit=100, timeout=1.0, owner="beat-test/1")
            if not batch:
                return found
            for delivery in batch:
                message = decode(delivery.message, accept=frozenset({"application/json"}))
                assert message.task == "proj.tasks.tick"
                assert message.extra_headers["periodic_task_name"] == "tick"
                assert message.extra_headers["celery_beat_task"] is True
                scheduled = datetime.fromisoformat(message.extra_headers["periodic_task_scheduled"])
                found.append(round(scheduled.timestamp() * 1000))
            transport.ack_many(batch)
    finally:
        transport.close()


@pytest.mark.slow
def test_every_second_is_sent_exactly_once_across_two_leader_kills(
    broker: tuple[str, Names], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, names = broker
    env = {
        "TEST_BROKER": url,
        "TEST_BEAT_NAME": names.beat,
        "TEST_TICKS": names.ticks,
        "TEST_LEASE": str(LEASE),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = _project(tmp_path, monkeypatch)
    if url.startswith("amqp"):
        admin = app.admin()
        admin.declare(names.ticks)  # the runs wait there for the count
        admin.close()
    started: list[Worker | BeatProcess] = []
    try:
        nodes: dict[str, Worker | BeatProcess] = {}
        for name in ("w1", "w2"):
            worker = Worker(tmp_path, "-B", "-c", "1", "-Q", names.idle, env=env, name=name)
            started.append(worker)
            nodes[name] = worker
        standalone = BeatProcess(tmp_path, env)
        started.append(standalone)
        nodes["celerybeat"] = standalone
        for process in started:
            if isinstance(process, Worker):
                process.wait_ready()
        kills: list[float] = []
        wait_until(lambda: _leader(app), timeout=20, message="a beat leader")
        time.sleep(5)
        for _ in range(2):
            leader = _leader(app)
            assert leader is not None
            victim = nodes[leader.partition("@")[0]]
            kills.append(time.time())
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=10)
            wait_until(
                lambda victim=leader: _leader(app) not in (None, victim),
                timeout=LEASE + 10,
                message="a standby to take over",
            )
            time.sleep(5)
        ended = time.time()
    finally:
        for process in started:
            process.stop()
    sent = _sent(app, names.ticks)
    doubled = {ms: count for ms, count in Counter(sent).items() if count > 1}
    assert not doubled, f"runs sent more than once: {doubled}"
    first, last = min(sent), max(sent)
    assert first % 1000 == last % 1000, "runs are on one grid of seconds"
    missing = sorted(set(range(first, last + 1, 1000)) - set(sent))
    outside = [
        ms
        for ms in missing
        if not any(kill - BEFORE_KILL <= ms / 1000 <= kill + AFTER_KILL for kill in kills)
    ]
    assert not outside, f"runs missing outside the takeover windows: {outside} (kills {kills})"
    assert last / 1000 > ended - 3, "runs went on to the end"
    assert len(sent) >= (last - first) / 1000 + 1 - 2 * (BEFORE_KILL + AFTER_KILL)
