"""pytest fixtures over the harness. A test module or conftest takes what it needs with
``from tests.harness.fixtures import processes, redis_server, ...`` (pytest finds fixtures
by name in the module's namespace). Each fixture stops what it started, even on failure.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.brokers import KINDS, Broker, open_broker
from tests.harness.processes import Processes
from tests.harness.proxy import TcpProxy
from tests.harness.rabbit import Node, private_node
from tests.harness.redis import Server


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start workers and other commands through this; all are stopped at teardown, and
    their log tails printed (shown by pytest when the test failed)."""
    registry = Processes(tmp_path)
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    """A private ``redis-server`` (appendonly, fsync always) on a free port, started."""
    server = Server(tmp_path, "redis", appendonly=True)
    try:
        yield server.start()
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def rabbit_node(tmp_path: Path) -> Iterator[Node]:
    """A private RabbitMQ node (``caraway-node-<port>@localhost``), started and ready."""
    node = private_node(tmp_path / "rabbit")
    try:
        node.start()
        yield node.wait_ready()
    finally:
        node.stop()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[int], TcpProxy]]:
    """``tcp_proxy(port)`` starts a proxy to 127.0.0.1:port; all are closed at teardown."""
    proxies: list[TcpProxy] = []

    def make(port: int) -> TcpProxy:
        proxy = TcpProxy(port).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """Each broker kind in turn (SQLite, Redis, RabbitMQ, PostgreSQL), private to the test."""
    with open_broker(str(request.param), tmp_path / "broker") as opened:
        yield opened
