"""The seed's first example on a real caraway worker over RabbitMQ, plus the AMQP-only knobs.

The app module is the seed's ``proj/celery.py`` as written (broker
``pyamqp://guest@localhost//``, results in Redis, here on db 6, ours alone) with test
knobs read from the environment: a queue private to the test (deleted afterwards), the park
horizon, priorities, the queue type and the prefetch multiplier. A RabbitMQ that is briefly
down (another test restarts it) is waited for; one that never answers skips, or fails in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from caraway import states
from tests.helpers import Worker, wait_until

pytestmark = [pytest.mark.amqp, pytest.mark.redis, pytest.mark.slow]

BACKEND = "redis://localhost/6"
SEED_BROKER = "pyamqp://guest@localhost//"

# The seed's proj/celery.py with caraway for celery; the second update holds test knobs only.
SEED_APP = """
from __future__ import absolute_import, unicode_literals
import os
from caraway import Caraway

app = Caraway('proj',
             broker='{broker}',
             backend='{backend}',
             include=['proj.tasks'])

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)

app.conf.update(
    task_default_queue=os.environ['TEST_QUEUE'],
    broker_park_horizon=float(os.environ.get('TEST_PARK_HORIZON') or 60),
    task_queue_max_priority=int(os.environ.get('TEST_MAX_PRIORITY') or 0) or None,
    task_default_queue_type=os.environ.get('TEST_QUEUE_TYPE') or 'classic',
    worker_prefetch_multiplier=int(os.environ.get('TEST_PREFETCH') or 4),
    # ride out another test's RabbitMQ restart (backoff capped at 2 s per try)
    task_publish_retry_policy={'max_retries': 30},
)

if __name__ == '__main__':
    app.start()
"""

# The seed's proj/tasks.py, then tasks that leave evidence in a file (one line per run).
SEED_TASKS = """
from __future__ import absolute_import, unicode_literals
import time
from .caraway import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def record(path, value):
    with open(path, 'a') as handle:
        handle.write(f'{value} {time.time()}\\n')
    return value


@app.task
def snooze(seconds):
    time.sleep(seconds)
    return seconds
"""


# -- RabbitMQ ---------------------------------------------------------------------------
def rabbit_channel_call(fn: Callable[[Any], Any], *, patience: float = 60.0) -> Any:
    """Run ``fn(channel)`` on a fresh connection, retrying while RabbitMQ is down."""
    deadline = time.monotonic() + patience
    while True:
        conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
        try:
            conn.connect()
            try:
                return fn(conn.channel())
            finally:
                conn.close()
        except (OSError, amqp.exceptions.ConnectionError) as exc:
            conn.collect()
            if time.monotonic() > deadline:
                raise AssertionError(f"RabbitMQ unreachable for {patience}s: {exc!r}") from exc
            time.sleep(0.5)


_SEEN = {"rabbit": False}


def rabbit_available() -> None:
    """Skip locally (fail in CI) when no RabbitMQ answers.

    Once one has answered in this session, a silence is a restart by another test: wait.
    """
    patient = _SEEN["rabbit"] or bool(os.environ.get("CI"))
    try:
        rabbit_channel_call(lambda channel: None, patience=60 if patient else 10)
    except AssertionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no RabbitMQ at 127.0.0.1:5672: {exc}")
    _SEEN["rabbit"] = True


def delete_queue(name: str) -> None:
    def run(channel: Any) -> None:
        channel.queue_delete(name)
        channel.exchange_delete(name)

    rabbit_channel_call(run)


def queue_depth(*names: str) -> int:
    """Ready messages in the queues ``names`` (one that does not exist counts 0)."""

    def run(channel: Any) -> int:
        total = 0
        for name in names:
            try:
                total += int(channel.queue_declare(name, passive=True)[1])
            except amqp.exceptions.NotFound:
                channel = channel.connection.channel()  # NOT_FOUND closed the channel
        return total

    return int(rabbit_channel_call(run))


def rabbitmqctl(*args: str) -> Any:
    """``rabbitmqctl -q <args> --formatter json`` parsed; retried while the app restarts."""
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args, "--formatter", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0:
            return json.loads(done.stdout or "[]")
        if time.monotonic() > deadline:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr}")
        time.sleep(1)


def queue_info(name: str) -> dict[str, Any] | None:
    rows = rabbitmqctl("list_queues", "name", "arguments", "type", "durable")
    return next((row for row in rows if row["name"] == name), None)


def arguments_of(info: dict[str, Any]) -> dict[str, Any]:
    # rabbitmqctl renders a field table as [name, type, value] triples
    raw = info["arguments"]
    if isinstance(raw, dict):
        return raw
    return {name: value for name, _type, value in raw}


# -- fixtures ---------------------------------------------------------------------------
def new_queue_name(kind: str) -> str:
    return f"h15-{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def queues() -> Iterator[Callable[[str], str]]:
    """Hands out queue names private to the test; every one is deleted afterwards."""
    rabbit_available()
    made: list[str] = []

    def make(kind: str = "q") -> str:
        made.append(new_queue_name(kind))
        return made[-1]

    try:
        yield make
    finally:
        for name in made:
            delete_queue(name)


def write_seed_project(base: Path, broker: str = SEED_BROKER, backend: str = BACKEND) -> Path:
    package = base / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    source = textwrap.dedent(SEED_APP).replace("{broker}", broker).replace("{backend}", backend)
    (package / "caraway.py").write_text(source)
    (package / "tasks.py").write_text(textwrap.dedent(SEED_TASKS))
    return base


def forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture
def results_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BACKEND)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis for results at {BACKEND}: {exc}")
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    queues: Callable[[str], str],
    results_db: redis.Redis,
) -> Iterator[Path]:
    """The seed's project in ``tmp_path``, its default queue private to this test."""
    write_seed_project(tmp_path)
    monkeypatch.setenv("TEST_QUEUE", queues("default"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_proj()
    try:
        yield tmp_path
    finally:
        forget_proj()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def seed() -> Any:
    import proj.tasks  # type: ignore[import-not-found]  # written by the project fixture

    return proj.tasks


def runs(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(value, float(at)) for value, at in rows]


# -- the seed's example -----------------------------------------------------------------
def test_seed_example_runs_as_written_on_rabbitmq_with_results_in_redis(
    project: Path, queues: Callable[[str], str], workers: list[Worker]
) -> None:
    default, lopri = os.environ["TEST_QUEUE"], queues("lopri")
    worker = Worker(project, "-c", "2", "-Q", f"{default},{lopri}").wait_ready()
    workers.append(worker)
    banner = worker.log()
    assert ".> transport:   pyamqp://guest@localhost//" in banner
    assert ".> results:     redis://localhost/6" in banner
    assert f".> {lopri}" in banner and "proj.tasks.add" in banner
    add = seed().add
    assert add.delay(2, 2).get(timeout=10) == 4
    assert add.apply_async((2, 2)).get(timeout=10) == 4
    assert add(2, 2) == 4
    sent = time.monotonic()
    later = add.apply_async((2, 2), queue=lopri, countdown=2)
    assert later.get(timeout=15) == 4
    assert time.monotonic() - sent >= 1.9
    assert seed().xsum.delay(list(range(10))).get(timeout=10) == 45


def test_seed_failure_raises_on_get_and_is_kept_with_propagate_false(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "1").wait_ready())
    from proj.caraway import app  # type: ignore[import-not-found]

    # as the tutorial saw: delay() checks the arguments against the signature first
    with pytest.raises(TypeError, match="argument"):
        seed().add.delay(2)
    # sent by name, the worker runs it and the TypeError comes back through the backend
    res = app.send_task("proj.tasks.add", (2,))
    with pytest.raises(TypeError, match="argument"):
        res.get(timeout=10)
    assert isinstance(res.get(propagate=False), TypeError)
    assert res.failed() and not res.successful()
    assert res.state == states.FAILURE
    assert app.AsyncResult("this-id-does-not-exist").state == states.PENDING


# -- delivery ---------------------------------------------------------------------------
def consumers_of(queue: str) -> list[int]:
    rows = rabbitmqctl("list_consumers", "queue_name", "prefetch_count")
    return sorted(int(row["prefetch_count"]) for row in rows if row["queue_name"] == queue)


@pytest.mark.parametrize(
    ("pool", "expected"),
    [("prefork", [3, 3]), ("threads", [6])],
)
def test_each_consumer_prefetches_multiplier_times_the_tasks_it_runs_at_once(
    pool: str,
    expected: list[int],
    tmp_path: Path,
    queues: Callable[[str], str],
    workers: list[Worker],
) -> None:
    # a password in the URL, to see the banner mask it
    write_seed_project(tmp_path, broker="pyamqp://guest:guest@localhost//")
    queue = queues("prefetch")
    env = {"TEST_QUEUE": queue, "TEST_PREFETCH": "3"}
    worker = Worker(tmp_path, "-P", pool, "-c", "2", env=env).wait_ready()
    workers.append(worker)
    assert ".> transport:   pyamqp://guest:**@localhost//" in worker.log()
    assert "guest:guest" not in worker.log()
    # prefork: one consumer per child, 1 slot each; threads: one consumer for 2 slots
    found = wait_until(
        lambda: consumers_of(queue) if len(consumers_of(queue)) >= len(expected) else None,
        timeout=20,
        interval=0.5,
        message=f"{len(expected)} consumer(s)",
    )
    assert found == expected


def test_far_countdown_parks_in_the_delay_ladder_and_runs_once_on_time(
    project: Path, monkeypatch: pytest.MonkeyPatch, workers: list[Worker]
) -> None:
    monkeypatch.setenv("TEST_PARK_HORIZON", "1")
    worker = Worker(project, "-c", "1").wait_ready()
    workers.append(worker)
    evidence = project / "parked.txt"
    sent = time.time()
    result = seed().record.apply_async((str(evidence), "parked"), countdown=4)
    # about 4 s: levels 0-2 of the ladder (1, 2, 4 s) hold it, not the worker
    levels = [f"caraway.delay.{n}" for n in range(3)]
    wait_until(lambda: queue_depth(*levels) >= 1, timeout=3, message="parked")
    assert queue_depth(os.environ["TEST_QUEUE"]) == 0
    assert not result.ready()
    assert result.get(timeout=15) == "parked"
    ((value, ran_at),) = runs(evidence)
    assert value == "parked"
    assert 3.9 <= ran_at - sent <= 8.0
    time.sleep(0.5)  # the one place a sleep is the point: a second run would show by now
    assert len(runs(evidence)) == 1


# -- queue arguments --------------------------------------------------------------------
def test_max_priority_queue_is_declared_and_serves_the_highest_priority_first(
    project: Path, monkeypatch: pytest.MonkeyPatch, workers: list[Worker]
) -> None:
    monkeypatch.setenv("TEST_MAX_PRIORITY", "10")
    monkeypatch.setenv("TEST_PREFETCH", "1")
    queue = os.environ["TEST_QUEUE"]
    evidence = project / "order.txt"
    record = seed().record
    # queued before any worker runs, so the broker alone decides the order
    pending = [record.apply_async((str(evidence), f"low{n}"), priority=1) for n in range(4)]
    pending.append(record.apply_async((str(evidence), "high"), priority=9))
    info = queue_info(queue)
    assert info is not None and arguments_of(info) == {"x-max-priority": 10}
    workers.append(Worker(project, "-c", "1").wait_ready())
    assert [r.get(timeout=15) for r in pending][-1] == "high"
    assert runs(evidence)[0][0] == "high"


def test_quorum_queue_option_declares_a_quorum_queue_that_serves_tasks(
    project: Path, monkeypatch: pytest.MonkeyPatch, workers: list[Worker]
) -> None:
    monkeypatch.setenv("TEST_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("TEST_PARK_HORIZON", "0.5")
    queue = os.environ["TEST_QUEUE"]
    workers.append(Worker(project, "-c", "1").wait_ready())
    proj = seed()
    assert proj.add.delay(20, 22).get(timeout=15) == 42
    # parked in the (classic) ladder, dead-lettered back into the quorum queue
    sent = time.monotonic()
    assert proj.mul.apply_async((6, 7), countdown=2).get(timeout=15) == 42
    assert time.monotonic() - sent >= 1.9
    info = queue_info(queue)
    assert info is not None
    assert info["type"] == "quorum" and info["durable"] is True
    assert arguments_of(info) == {"x-queue-type": "quorum"}
