"""Real Celery 5.7 beside caraway: the Celery app module interop tests write, and its worker.

Every test that runs Celery itself goes through here, so the app, the worker's command line
and how it is stopped are written once. The app reads its broker, results, queue and key
prefix from ``TEST_*`` variables, as `proj` does (tests/integration/redisproj.py), so a
worker process and a client in the test agree. A missing Celery (or the 'packaging' kombu's
Redis transport imports) or Redis skips locally and fails in CI.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from tests.helpers import wait_until
from tests.integration.redisproj import redis_problem, require

APP = """
import os
from celery import Celery

app = Celery('{main}', broker=os.environ['TEST_BROKER'], backend={backend})
app.conf.update(result_expires=3600, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)
if os.environ.get('TEST_QUEUE'):
    app.conf.task_default_queue = os.environ['TEST_QUEUE']
if os.environ.get('TEST_PREFIX'):
    app.conf.broker_transport_options = {{'global_keyprefix': os.environ['TEST_PREFIX']}}
"""

#: TEST_CELERY_BACKEND lets a Celery worker keep results elsewhere than caraway (rpc://)
RESULTS = "os.environ.get('TEST_CELERY_BACKEND') or os.environ['TEST_BACKEND']"

#: the tasks an app can declare, named ``<names>.<task>`` as `proj` names its own
TASKS = {
    "add": """
@app.task(name='{names}.add')
def add(x, y):
    return x + y
""",
    "mul": """
@app.task(name='{names}.mul')
def mul(x, y):
    return x * y
""",
    "xsum": """
@app.task(name='{names}.xsum')
def xsum(numbers):
    return sum(numbers)
""",
    "boom": """
@app.task(name='{names}.boom')
def boom(message='kaboom'):
    raise ValueError(message)
""",
    # leaves evidence in the broker's Redis db, and which side ran it (as proj's mark does)
    "mark": """
import redis

_client = redis.Redis.from_url(os.environ['TEST_BROKER'])


@app.task(name='{names}.mark')
def mark(key, value):
    _client.sadd(key, value)
    _client.rpush(key + ':runs', value)
    _client.rpush(key + ':celery', value)
    return value
""",
}


def require_celery() -> ModuleType:
    """Celery itself, with kombu's Redis transport importable."""
    try:
        celery = importlib.import_module("celery")
        importlib.import_module("kombu.transport.redis")  # fails without 'packaging'
    except ImportError as exc:
        require(False, f"celery 5.7 with packaging is not installed: {exc}")
    return celery


def write_celery_app(
    base: Path,
    module: str = "celeryproj",
    *,
    tasks: Sequence[str] = ("add",),
    main: str = "proj",
    names: str = "proj.tasks",
    results: bool = True,
) -> Path:
    """Write ``<base>/<module>.py``, a Celery app declaring ``tasks``; returns ``base``.

    Without ``results`` the app has no result backend (a monitor or a pinger needs none).
    """
    require_celery()
    source = APP.format(main=main, backend=RESULTS if results else "None")
    source += "".join("\n" + TASKS[task].replace("{names}", names) for task in tasks)
    (base / f"{module}.py").write_text(source)
    sys.modules.pop(module, None)
    return base


@contextlib.contextmanager
def celery_module(module: str = "celeryproj") -> Iterator[Any]:
    """Import the written app module as a client in this process; close what it opened."""
    loaded = importlib.import_module(module)
    try:
        yield loaded
    finally:
        if hasattr(loaded, "_client"):
            loaded._client.close()
        close_celery_app(loaded.app)
        sys.modules.pop(module, None)


def close_celery_app(app: Any) -> None:
    """Close a Celery client app and its result backend's connections, so none outlives the
    test (Celery's own ``close()`` leaves the backend's open)."""
    if "backend" in app.__dict__:  # only if it was ever opened
        app.backend.result_consumer.stop()
        app.backend.client.close()
    app.close()


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL to the whole session: nothing it started outlives the test."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


class CeleryWorker:
    """``celery -A <module> worker -P solo`` in its own session; ``stop()`` always ends it.

    Mingle and gossip are off (they only slow the start); so is the heartbeat unless
    ``events``, because monitors learn that a node lives from its worker-heartbeat events.
    """

    def __init__(
        self,
        cwd: Path,
        module: str = "celeryproj",
        *,
        hostname: str = "celery1@%h",
        queues: Sequence[str] = (),
        events: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.logfile = cwd / "celery-worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", module, "worker", "-P", "solo", "-l", "info",
            "-n", hostname, "--without-mingle", "--without-gossip",
            *(["-E"] if events else ["--without-heartbeat"]),
            *(["-Q", ",".join(queues)] if queues else []),
        ]  # fmt: skip
        self._log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self) -> CeleryWorker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"celery worker exited early:\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, timeout=30, interval=0.1, message="celery worker to be ready")
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


def redis_prefix(url: str, tag: str) -> Iterator[str]:
    """A key prefix private to one test on ``url`` (kombu prefixes pub/sub channels too);
    every key under it is deleted afterwards."""
    problem = redis_problem(url)
    require(problem is None, f"no Redis at {url}: {problem}")
    value = f"{tag}{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{value}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
