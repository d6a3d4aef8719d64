"""Remote control on real brokers: a ControlServer polled in a thread with a FakeNode.

Redis uses db 14 with a key prefix private to each test; RabbitMQ uses unique node names
(the pidbox exchanges are shared by design); SQLite uses a file in tmp_path. A broker that
does not answer skips its tests locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import select
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from caraway.app import Caraway
from caraway.brokers.registry import open_mailbox
from caraway.control import Control
from caraway.protocol.message import Message
from caraway.worker.control import ControlServer
from tests.unit.test_control_fakes import FakeNode, served

REDIS_URL = "redis://127.0.0.1:6379/14"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
SEP = "\x06\x16"


def _require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"{what} must answer at {host}:{port} in CI: {exc}") from exc
        pytest.skip(f"no {what} at {host}:{port}: {exc}")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    _require("127.0.0.1", 6379, "Redis")
    prefix = f"ctl{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "redis", "amqp", "postgresql", "redis+cluster"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Caraway:
    if request.param == "redis+cluster":
        url = request.getfixturevalue("cluster_broker_url")
        return Caraway("proj", broker=url, backend="memory://")
    if request.param == "sqlite":
        return Caraway("proj", broker=f"sqlite:///{tmp_path / 'broker.db'}", backend="memory://")
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_broker_url")
        return Caraway("proj", broker=url, backend="memory://")
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        app = Caraway("proj", broker=REDIS_URL, backend="memory://")
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        return app
    _require("127.0.0.1", 5672, "RabbitMQ")
    return Caraway("proj", broker=AMQP_URL, backend="memory://")


@pytest.fixture
def control(app: Caraway) -> Iterator[Control]:
    client = Control(app)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def node() -> FakeNode:
    return FakeNode(f"n{uuid.uuid4().hex[:8]}@itest")


@pytest.fixture
def server(app: Caraway, node: FakeNode) -> Iterator[ControlServer]:
    with served(ControlServer(app, node)) as running:
        yield running


def test_ping_is_answered(server: ControlServer, control: Control, node: FakeNode) -> None:
    assert control.ping(destination=[node.hostname], timeout=5) == [{node.hostname: {"ok": "pong"}}]


def test_stats_and_active_queues_are_answered(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    inspect = control.inspect(destination=[node.hostname], timeout=5)
    stats = inspect.stats()
    assert stats is not None and stats[node.hostname]["pid"] == 4242
    queues = inspect.active_queues()
    assert queues is not None and [q["name"] for q in queues[node.hostname]] == ["celery"]


def test_rate_limit_and_add_consumer_reach_the_node(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    where = [node.hostname]
    assert control.rate_limit("tasks.add", "5/s", destination=where, reply=True, timeout=5) == [
        {node.hostname: {"ok": "new rate limit set successfully"}}
    ]
    assert node.rate_limits == {"tasks.add": "5/s"}
    control.add_consumer("images", destination=where, reply=True, timeout=5)
    queues = control.inspect(destination=where, timeout=5).active_queues()
    assert queues is not None
    assert [q["name"] for q in queues[node.hostname]] == ["celery", "images"]


def test_shutdown_stops_the_node(server: ControlServer, control: Control, node: FakeNode) -> None:
    control.shutdown(destination=[node.hostname])
    assert node.stopped.wait(5)


def test_node_that_is_not_addressed_stays_silent(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    assert control.ping(destination=["nobody@nowhere"], timeout=0.5) == []


def test_redis_node_records_its_mailbox_binding_and_removes_it_on_close(
    redis_prefix: str,
) -> None:
    mailbox = open_mailbox(REDIS_URL, {"global_keyprefix": redis_prefix})
    raw = redis.Redis.from_url(REDIS_URL)
    binding = f"{redis_prefix}_kombu.binding.celery.pidbox"
    try:
        mailbox.listen("w9@box")
        assert raw.smembers(binding) == {f"{SEP}{SEP}w9@box.celery.pidbox".encode()}
        assert raw.zscore(f"{redis_prefix}_kombu.binding_deadlines", "celery.pidbox")
        channels = raw.pubsub_numpat()
        assert channels >= 1
    finally:
        mailbox.close()
    try:
        assert raw.smembers(binding) == set()
    finally:
        raw.close()


def test_redis_reply_goes_to_the_queue_bound_for_the_routing_key(redis_prefix: str) -> None:
    client_box = open_mailbox(REDIS_URL, {"global_keyprefix": redis_prefix})
    node_box = open_mailbox(REDIS_URL, {"global_keyprefix": redis_prefix})
    raw = redis.Redis.from_url(REDIS_URL)
    oid = str(uuid.uuid4())
    try:
        client_box.open_replies(oid)
        member = f"{oid}{SEP}{SEP}{oid}.reply.celery.pidbox".encode()
        assert member in raw.smembers(f"{redis_prefix}_kombu.binding.reply.celery.pidbox")
        node_box.reply(
            Message(body=b'{"w@h": {"ok": "pong"}}', headers={"ticket": "t"}),
            exchange="reply.celery.pidbox",
            routing_key=oid,
        )
        assert raw.llen(f"{redis_prefix}{oid}.reply.celery.pidbox") == 1
        reply = client_box.next_reply(oid, 2)
        assert reply is not None and reply.headers == {"ticket": "t"}
        client_box.close_replies(oid)
        # a late reply after the client left is dropped, not left in a stray list
        node_box.reply(
            Message(body=b"{}", headers={"ticket": "t"}),
            exchange="reply.celery.pidbox",
            routing_key=oid,
        )
        assert raw.exists(f"{redis_prefix}{oid}.reply.celery.pidbox") == 0
    finally:
        client_box.close()
        node_box.close()
        raw.close()


def test_the_redis_mailbox_descriptor_turns_readable_when_a_request_arrives(
    redis_prefix: str,
) -> None:
    app = Caraway("proj", broker=REDIS_URL, backend="memory://")
    app.conf.broker_transport_options = {"global_keyprefix": redis_prefix}
    node = FakeNode(f"n{uuid.uuid4().hex[:8]}@itest")
    server = ControlServer(app, node)
    client = Control(app)
    try:
        fd = server.fileno()
        assert fd is not None  # the worker's loop waits on it instead of polling
        assert select.select([fd], [], [], 0)[0] == []
        client.broadcast("ping", destination=[node.hostname], reply=False)
        assert select.select([fd], [], [], 5)[0] == [fd]
        assert server.poll() == 1
        assert select.select([fd], [], [], 0)[0] == []  # receive() took all it had
    finally:
        client.close()
        server.close()
