"""Fixtures that open every transport, queue admin and backend the contract suite holds to
one standard.

Each param yields a factory, so a test can open several handles on the same broker or store
(two consumers, a producer beside a consumer). Redis is included when its plug-in imports;
locally a missing plug-in skips, with CI set it fails.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from caraway.brokers.contracts import (
    Backend,
    ChordStore,
    GroupStore,
    QueueAdmin,
    Revocations,
    Routing,
    Scheduling,
    Transport,
)
from caraway.brokers.memory import backend as memory_backend
from caraway.brokers.memory import transport as memory_transport
from caraway.brokers.registry import (
    ADMIN_ALIASES,
    BACKEND_ALIASES,
    TRANSPORT_ALIASES,
    open_admin,
    open_backend,
    open_transport,
    resolve,
)
from caraway.brokers.sqlite import transport as sqlite_transport
from caraway.protocol.message import Message

TransportFactory = Callable[..., Transport]
AdminFactory = Callable[..., QueueAdmin]
BackendFactory = Callable[..., Backend]
H = TypeVar("H", Transport, QueueAdmin, Backend)

#: a Redis db of its own, so other suites running at the same time never see our keys
REDIS_URL = "redis://127.0.0.1:6379/13"
#: RabbitMQ's default vhost is shared: tests use queues of their own and delete them
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: what each broker's handles are opened with unless a test says otherwise
_DEFAULTS: dict[str, dict[str, Any]] = {
    # priorities need a queue declared with x-max-priority, as Celery's option does; the
    # consumer prefetch (RabbitMQ's window of unacked deliveries) is set wide, as a worker
    # sets it to what it may hold, rather than from the first fetch's limit
    "amqp": {"max_priority": 10, "max_retries": 1, "prefetch_count": 100},
}


def wait_until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.01)


def make_message(index: int = 0, *, priority: int | None = None) -> Message:
    """A small task-shaped message; ``headers['id']`` identifies it in assertions."""
    task_id = f"{index}-{uuid.uuid4()}"
    properties: dict[str, Any] = {"correlation_id": task_id, "delivery_mode": 2}
    if priority is not None:
        properties["priority"] = priority
    return Message(
        body=f'[[{index}], {{}}, {{"callbacks": null}}]'.encode(),
        headers={"lang": "py", "task": "tests.contract.noop", "id": task_id, "retries": 0},
        properties=properties,
    )


def _plugin_or_skip(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} must import in CI: {exc}")
        pytest.skip(f"{module} is not importable here: {exc}")


def _url(kind: str, path: Path, plugin: str) -> str:
    """Where a ``kind`` broker or store private to this test lives; ``path`` is its SQLite file."""
    if kind == "memory":
        return f"memory://{uuid.uuid4()}"
    if kind.startswith("sqlite"):
        return f"sqlite:///{path}"
    _plugin_or_skip(plugin)
    if kind == "amqp":
        _rabbit_or_skip()
        return AMQP_URL
    return REDIS_URL


def _rabbit_or_skip() -> None:
    import amqp

    try:
        conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
        conn.connect()
        conn.close()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ must answer in CI: {exc!r}")
        pytest.skip(f"no RabbitMQ at 127.0.0.1:5672: {exc!r}")


def delete_amqp_queues(names: list[str]) -> None:
    """Delete queues (and the exchanges Celery declares beside them) a test made."""
    import amqp

    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    conn.connect()
    try:
        for name in names:
            channel = conn.channel()
            try:
                channel.queue_delete(name)
                channel.exchange_delete(name)
                channel.close()
            except amqp.exceptions.AMQPError:
                pass  # never declared: the error closed that channel, the next one is new
    finally:
        conn.close()


def _handles(
    opener: Callable[..., H],
    url: str,
    reset: Callable[[str], None],
    defaults: dict[str, Any] | None = None,
) -> Iterator[Callable[..., H]]:
    """Yield a factory of handles on ``url``; close them all and reset ``url`` afterwards."""
    opened: list[H] = []

    def factory(options: dict[str, Any] | None = None) -> H:
        handle = opener(url, options={**(defaults or {}), **(options or {})})
        opened.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in opened:
            handle.close()
        reset(url)


@pytest.fixture(params=["memory", "sqlite", "sqlite-select-then-update", "redis", "amqp"])
def broker_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A broker private to this test: its transports and admins share it."""
    kind: str = request.param
    if kind == "sqlite-select-then-update":
        # the claim path for SQLite libraries older than 3.35 (no RETURNING)
        monkeypatch.setattr(sqlite_transport, "HAS_RETURNING", False)
    plugin = f"caraway.brokers.{'amqp' if kind == 'amqp' else 'redis'}.transport"
    url = _url(kind, tmp_path / "broker.sqlite3", plugin)
    if kind != "amqp":
        yield url
        return
    # RabbitMQ's dead letters are one queue per vhost: a private one keeps others' apart
    from caraway.brokers.amqp import admin as amqp_admin
    from caraway.brokers.amqp import transport as amqp_transport

    dead = f"caraway.dead.contract-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(amqp_transport, "DEAD_QUEUE", dead)
    monkeypatch.setattr(amqp_admin, "DEAD_QUEUE", dead)
    try:
        yield url
    finally:
        delete_amqp_queues([dead])


def _defaults(url: str) -> dict[str, Any]:
    return _DEFAULTS.get(url.partition("://")[0], {})


@pytest.fixture
def transport_factory(broker_url: str) -> Iterator[TransportFactory]:
    """Opens transports on the test's broker; closes them afterwards."""
    yield from _handles(open_transport, broker_url, memory_transport.reset, _defaults(broker_url))


@pytest.fixture
def transport(transport_factory: TransportFactory) -> Transport:
    return transport_factory({"visibility_timeout": 30})


@pytest.fixture
def admin_factory(broker_url: str) -> Iterator[AdminFactory]:
    """Opens queue admins on the test's broker; closes them afterwards."""
    yield from _handles(open_admin, broker_url, memory_transport.reset, _defaults(broker_url))


@pytest.fixture
def admin(admin_factory: AdminFactory) -> QueueAdmin:
    return admin_factory()


#: names tests derive from their ``queue`` (deleted with it on RabbitMQ)
_DERIVED = ("", "-other", "-a", "-b", "-c")


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue name no other test (or other suite on the same broker) uses."""
    name = f"contract-{uuid.uuid4().hex[:12]}"
    yield name
    if str(request.node.funcargs.get("broker_url", "")).startswith("amqp"):
        delete_amqp_queues([name + suffix for suffix in _DERIVED])


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens backends on one store, private to this test; closes them afterwards."""
    url = _url(request.param, tmp_path / "results.sqlite3", "caraway.brokers.redis.backend")
    yield from _handles(open_backend, url, memory_backend.reset)


@pytest.fixture
def backend(backend_factory: BackendFactory) -> Backend:
    return backend_factory()


# -- what a test needs of a broker ---------------------------------------------------------
# A test marked ``@pytest.mark.needs("leases")`` runs only on the brokers whose plug-in
# classes (named by the registry, not instantiated) have it; on the others it is deselected,
# not skipped: a broker that lacks an optional interface is not a test that could not run.
_CLASSES = {
    "transport": (TRANSPORT_ALIASES, "caraway.transports"),
    "admin": (ADMIN_ALIASES, "caraway.admins"),
    "backend": (BACKEND_ALIASES, "caraway.backends"),
}
_NEEDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "leases": ("transport", lambda cls: bool(cls.capabilities.leases)),
    "priorities": ("transport", lambda cls: bool(cls.capabilities.priorities)),
    "scheduling": ("transport", lambda cls: issubclass(cls, Scheduling)),
    "routing": ("transport", lambda cls: issubclass(cls, Routing)),
    "revocations": ("admin", lambda cls: issubclass(cls, Revocations)),
    "chords": ("backend", lambda cls: issubclass(cls, ChordStore)),
    "groups": ("backend", lambda cls: issubclass(cls, GroupStore)),
}


def _scheme(item: pytest.Item) -> str | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    kind = params.get("broker_url") or params.get("backend_factory")
    if kind is None:
        return None
    return "sqlite" if str(kind).startswith("sqlite") else str(kind)


def _has(scheme: str, need: str) -> bool:
    role, test = _NEEDS[need]
    aliases, group = _CLASSES[role]
    return test(resolve(f"{scheme}://", aliases, group=group, kind=role))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("needs")
        scheme = _scheme(item)
        if marker is None or scheme is None or all(_has(scheme, n) for n in marker.args):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
