"""Fixtures for the tests that need the real Redis at 127.0.0.1:6379 (db 12, ours alone).

Each test gets its own ``global_keyprefix`` and deletes its keys afterwards, so runs in
parallel never see each other. A missing Redis skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from caraway.brokers.redis.admin import RedisAdmin
from caraway.brokers.redis.backend import RedisBackend
from caraway.brokers.redis.transport import RedisTransport
from caraway.protocol.message import Message

REDIS_URL = "redis://127.0.0.1:6379/12"

TransportFactory = Callable[..., RedisTransport]


def _redis_answers() -> str | None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = _redis_answers()
    if problem is not None:
        if os.environ.get("CI"):
            raise RuntimeError(f"Redis must answer at {REDIS_URL} in CI: {problem}")
        pytest.skip(f"no Redis at {REDIS_URL}: {problem}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix private to this test; every key under it is deleted afterwards."""
    value = f"t{uuid.uuid4().hex[:12]}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{value}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test db, for looking at keys the way Celery would."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_transport(redis_url: str, prefix: str) -> Iterator[TransportFactory]:
    """Opens transports sharing this test's prefix; closes them all afterwards."""
    opened: list[RedisTransport] = []

    def factory(**options: Any) -> RedisTransport:
        transport = RedisTransport(redis_url, options={"global_keyprefix": prefix, **options})
        opened.append(transport)
        return transport

    try:
        yield factory
    finally:
        for transport in opened:
            transport.close()


@pytest.fixture
def transport(make_transport: TransportFactory) -> RedisTransport:
    return make_transport()


@pytest.fixture
def make_admin(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisAdmin]]:
    """Opens queue admins sharing this test's prefix; closes them all afterwards."""
    opened: list[RedisAdmin] = []

    def factory(**options: Any) -> RedisAdmin:
        admin = RedisAdmin(redis_url, options={"global_keyprefix": prefix, **options})
        opened.append(admin)
        return admin

    try:
        yield factory
    finally:
        for admin in opened:
            admin.close()


@pytest.fixture
def admin(make_admin: Callable[..., RedisAdmin]) -> RedisAdmin:
    return make_admin()


@pytest.fixture
def backend(redis_url: str, prefix: str) -> Iterator[RedisBackend]:
    store = RedisBackend(redis_url, options={"global_keyprefix": prefix})
    try:
        yield store
    finally:
        store.close()


def task_message(
    name: str = "tests.add", *, priority: int | None = None, **headers: Any
) -> Message:
    """A Celery-shaped task message whose ``id`` header identifies it in assertions."""
    task_id = str(uuid.uuid4())
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": "a5c561d4-43ce-3f48-9b31-3b93d3d7f160",
        "delivery_mode": 2,
    }
    if priority is not None:
        properties["priority"] = priority
    return Message(
        body=b'[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
        headers={"lang": "py", "task": name, "id": task_id, "retries": 0, **headers},
        properties=properties,
    )


@pytest.fixture
def make_message() -> Callable[..., Message]:
    return task_message


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this run (``caraway_ha_*``); tests take schemas in it."""
    from tests import pg

    with pg.database("caraway_ha_integration") as name:
        yield name


@pytest.fixture
def pg_broker_url(pg_database: str) -> Iterator[str]:
    """A ``postgresql://`` broker private to this test: a schema of its own."""
    from tests import pg

    with pg.schema(pg_database) as schema:
        yield pg.url(pg_database, schema=schema)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis Cluster (3 masters, 3 replicas) for this run; its URL."""
    from tests.chaos.redis_ha import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start().url()
    finally:
        cluster.stop()


@pytest.fixture
def cluster_broker_url(redis_cluster: str) -> str:
    """The run's cluster under a key prefix of this test's own."""
    return f"{redis_cluster}/?global_keyprefix=t{uuid.uuid4().hex[:10]}:"
