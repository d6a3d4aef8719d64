"""The rpc:// backend on the machine's RabbitMQ: what a worker sends, what the caller reads.

Each test uses a reply queue named like a fresh client oid and deletes it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from caraway.brokers.amqp.backend import RPCBackend
from caraway.brokers.contracts import ChordStore, GroupStore
from caraway.exceptions import BackendError, ImproperlyConfigured
from caraway.protocol.results import decode_document, encode_document, result_document

pytestmark = pytest.mark.amqp

BROKER = "pyamqp://guest@localhost//"


@pytest.fixture
def oid() -> Iterator[str]:
    name = str(uuid.uuid4())
    yield name
    conn = amqp.Connection("127.0.0.1:5672", connect_timeout=2)
    try:
        conn.connect()
        conn.channel().queue_delete(name)
        conn.close()
    except Exception as exc:  # no broker: the tests skipped or failed already
        conn.collect()
        pytest.skip(f"no RabbitMQ: {exc!r}")


@pytest.fixture
def pair(oid: str) -> Iterator[tuple[RPCBackend, RPCBackend]]:
    caller = RPCBackend("rpc://", options={"broker_url": BROKER, "reply_to": oid})
    worker = RPCBackend("rpc://", options={"broker_url": BROKER})
    try:
        caller.on_task_call("first")
        yield caller, worker
    finally:
        caller.close()
        worker.close()


def doc(task_id: str, state: str, value: object = None) -> bytes:
    return encode_document(result_document(task_id, state, value))


def test_worker_result_reaches_the_caller_by_its_reply_queue(
    pair: tuple[RPCBackend, RPCBackend], oid: str
) -> None:
    caller, worker = pair
    task_id = str(uuid.uuid4())
    assert worker.store(
        task_id, doc(task_id, "SUCCESS", 4), state="SUCCESS", expires=None, reply_to=oid
    )
    got = caller.wait(task_id, until=lambda d: b"SUCCESS" in d, timeout=10)
    assert got is not None and decode_document(got)["result"] == 4
    assert caller.load(task_id) == got
    caller.forget(task_id)
    assert caller.load(task_id) is None


def test_late_started_message_does_not_hide_the_outcome(
    pair: tuple[RPCBackend, RPCBackend], oid: str
) -> None:
    caller, worker = pair
    task_id = str(uuid.uuid4())
    worker.store(task_id, doc(task_id, "SUCCESS", 1), state="SUCCESS", expires=None, reply_to=oid)
    worker.store(task_id, doc(task_id, "STARTED"), state="STARTED", expires=None, reply_to=oid)
    other = str(uuid.uuid4())
    worker.store(other, doc(other, "FAILURE"), state="FAILURE", expires=None, reply_to=oid)
    assert caller.wait(other, until=lambda d: True, timeout=10) is not None
    loaded = caller.load(task_id)
    assert loaded is not None and decode_document(loaded)["status"] == "SUCCESS"


def test_result_without_reply_to_is_not_sent_and_a_reader_needs_its_queue(
    pair: tuple[RPCBackend, RPCBackend],
) -> None:
    _, worker = pair
    assert worker.store("x", doc("x", "SUCCESS"), state="SUCCESS", expires=None) is False
    with pytest.raises(BackendError, match="reply queue"):
        worker.load("x")
    assert not issubclass(RPCBackend, ChordStore) and RPCBackend.shared is False
    assert not issubclass(RPCBackend, GroupStore)


def test_rpc_backend_refuses_a_non_amqp_broker() -> None:
    with pytest.raises(ImproperlyConfigured, match="AMQP broker"):
        RPCBackend("rpc://", options={"broker_url": "redis://localhost"})


def test_app_gives_the_rpc_backend_its_thread_oid_as_reply_queue(tmp_path: Path) -> None:
    from caraway import Caraway

    app = Caraway("rpcproj", broker=BROKER, backend="rpc://")
    backend = app.backend
    assert isinstance(backend, RPCBackend)
    try:
        assert backend.reply_to == app.thread_oid
    finally:
        backend.close()


def test_caraway_worker_sends_rpc_results_back_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import uuid

    from tests.helpers import Worker, write_project

    write_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TEST_BROKER", BROKER)
    monkeypatch.setenv("TEST_BACKEND", "rpc://")
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    queue = f"rpc-e2e-{uuid.uuid4().hex[:8]}"
    worker = Worker(tmp_path, "-c", "1", "-Q", queue).wait_ready()
    try:
        from proj.tasks import add, boom

        assert add.apply_async((2, 2), queue=queue).get(timeout=20) == 4
        with pytest.raises(ValueError, match="kaboom"):
            boom.apply_async(queue=queue).get(timeout=20)
    finally:
        worker.stop()
        for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
            del sys.modules[name]
        import amqp

        connection = amqp.Connection("localhost:5672", userid="guest", password="guest")
        connection.connect()
        try:
            connection.channel().queue_delete(queue)
        finally:
            connection.close()
