"""Remote control across Celery 5.7 and caraway: each side's client sees the other's nodes.

``celery inspect ping`` (the real CLI) must see a caraway ControlServer on Redis and on
RabbitMQ; caraway's ``Control.ping()`` and ``caraway inspect ping`` must see a real
``celery worker`` on Redis. Redis runs on db 14 under a key prefix private to each test
(kombu's ``global_keyprefix``, which also prefixes the pub/sub channel); on RabbitMQ the
pidbox exchanges are shared, so nodes get unique names and requests name them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from caraway.app import Caraway
from caraway.control import Control
from caraway.worker.control import ControlServer
from tests.integration.redisproj import require
from tests.interop.celeryproc import CeleryWorker, redis_prefix, write_celery_app
from tests.unit.test_control_fakes import FakeNode, served

pytestmark = [pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/14"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

CARAWAY_APP = """
import os
from caraway import Caraway

app = Caraway('cproj', broker=os.environ['TEST_BROKER'], backend='memory://')
if os.environ.get('TEST_PREFIX'):
    app.conf.broker_transport_options = {'global_keyprefix': os.environ['TEST_PREFIX']}
"""

# Runs the caraway CLI with the control commands registered even before cli/main.py
# registers them itself.
CARAWAY_CLI = (
    "import sys\n"
    "from caraway.cli.main import cli, main\n"
    "from caraway.cli.control import commands\n"
    "for c in commands:\n"
    "    cli.commands.setdefault(c.name, c)\n"
    "main(sys.argv[1:])\n"
)


def _require(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        require(False, f"no {what} on port {port}: {exc}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_celery_app(tmp_path, "capp", main="capp", names="tasks", results=False)
    (tmp_path / "cproj.py").write_text(textwrap.dedent(CARAWAY_APP))
    return tmp_path


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix(REDIS_URL, "ictl")


def _env(project: Path, broker: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(project),
        "TEST_BROKER": broker,
        "TEST_PREFIX": prefix,
    }


def _celery_ping(project: Path, broker: str, prefix: str, node: str) -> dict[str, object]:
    command = [
        sys.executable, "-m", "celery", "-A", "capp", "inspect", "ping",
        "-t", "5", "-j", "-d", node,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=project, env=_env(project, broker, prefix), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    parsed: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def _caraway_app(broker: str, prefix: str) -> Caraway:
    app = Caraway("cproj", broker=broker, backend="memory://")
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return app


def test_celery_inspect_ping_sees_a_caraway_node_on_redis(project: Path, prefix: str) -> None:
    node = FakeNode(f"cw{uuid.uuid4().hex[:6]}@box")
    with served(ControlServer(_caraway_app(REDIS_URL, prefix), node)):
        assert _celery_ping(project, REDIS_URL, prefix, node.hostname) == {
            node.hostname: {"ok": "pong"}
        }


def test_celery_inspect_ping_sees_a_caraway_node_on_rabbitmq(project: Path) -> None:
    _require(5672, "RabbitMQ")
    node = FakeNode(f"cw{uuid.uuid4().hex[:6]}@box")
    with served(ControlServer(_caraway_app(AMQP_URL, ""), node)):
        assert _celery_ping(project, AMQP_URL, "", node.hostname) == {node.hostname: {"ok": "pong"}}


@pytest.fixture
def celery_node(project: Path, prefix: str) -> Iterator[str]:
    hostname = f"cel{uuid.uuid4().hex[:6]}@box"
    env = {"TEST_BROKER": REDIS_URL, "TEST_PREFIX": prefix}
    worker = CeleryWorker(project, "capp", hostname=hostname, env=env)
    try:
        worker.wait_ready()
        yield hostname
    finally:
        worker.stop()


def test_caraway_control_ping_sees_a_celery_worker_on_redis(celery_node: str, prefix: str) -> None:
    control = Control(_caraway_app(REDIS_URL, prefix))
    try:
        assert control.ping(destination=[celery_node], timeout=5) == [{celery_node: {"ok": "pong"}}]
        stats = control.inspect(destination=[celery_node], timeout=5).stats()
        assert stats is not None and stats[celery_node]["pool"]["max-concurrency"] == 1
        queues = control.inspect(destination=[celery_node], timeout=5).active_queues()
        assert queues is not None and queues[celery_node][0]["name"] == "celery"
    finally:
        control.close()


def test_caraway_inspect_ping_command_sees_a_celery_worker_on_redis(
    celery_node: str, project: Path, prefix: str
) -> None:
    command = [
        sys.executable, "-c", CARAWAY_CLI, "-A", "cproj", "inspect", "ping",
        "-d", celery_node, "-t", "5",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=project, env=_env(project, REDIS_URL, prefix), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"->  {celery_node}: OK\n        pong\n\n1 node online.\n"
