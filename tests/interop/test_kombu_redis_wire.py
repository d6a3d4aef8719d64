"""caraway's Redis transport and backend against the real kombu 5.7 / Celery 5.7 on one Redis.

Needs ``celery==5.7.0`` and ``packaging`` (kombu's Redis transport imports it). Locally a
missing Redis or Celery skips; with ``CI`` set it fails. Redis db 12, one key prefix per test.
"""

from __future__ import annotations

import base64
import importlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from caraway.brokers.redis.admin import RedisAdmin
from caraway.brokers.redis.backend import RedisBackend
from caraway.brokers.redis.transport import RedisTransport
from caraway.protocol.message import Message
from tests.interop.celeryproc import close_celery_app, redis_prefix, require_celery

pytestmark = [
    pytest.mark.redis,
    # Celery 5.7's backend calls redis-py methods that redis-py 8 marks deprecated (setex)
    pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning"),
]

REDIS_URL = "redis://127.0.0.1:6379/12"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.fixture(scope="module")
def celery_mod() -> Any:
    return require_celery()


@pytest.fixture
def prefix(celery_mod: Any) -> Iterator[str]:
    yield from redis_prefix(REDIS_URL, "i")


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def transport(prefix: str) -> Iterator[RedisTransport]:
    ours = RedisTransport(REDIS_URL, options={"global_keyprefix": prefix})
    try:
        yield ours
    finally:
        ours.close()


@pytest.fixture
def backend(prefix: str) -> Iterator[RedisBackend]:
    ours = RedisBackend(REDIS_URL, options={"global_keyprefix": prefix})
    try:
        yield ours
    finally:
        ours.close()


@pytest.fixture
def kombu_conn(celery_mod: Any, prefix: str) -> Iterator[Any]:
    conn = importlib.import_module("kombu").Connection(
        REDIS_URL, transport_options={"global_keyprefix": prefix}
    )
    try:
        yield conn
    finally:
        conn.release()


@pytest.fixture
def celery_app(celery_mod: Any, prefix: str) -> Iterator[Any]:
    app = celery_mod.Celery(
        "interop",
        broker=REDIS_URL,
        backend=REDIS_URL,
        set_as_current=False,
    )
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=False,
    )
    try:
        yield app
    finally:
        close_celery_app(app)


def _captured_message() -> Message:
    """add.delay(2, 2) exactly as Celery 5.7 published it (vectors/redis-delay.json)."""
    envelope = json.loads((VECTORS / "redis-delay.json").read_text())["messages"][0]["envelope"]
    props = envelope["properties"]
    return Message(
        body=base64.b64decode(envelope["body"]),
        headers=envelope["headers"],
        properties={k: props[k] for k in ("correlation_id", "reply_to", "delivery_mode")},
    )


def _document(task_id: str, status: str, result: object) -> bytes:
    return json.dumps(
        {
            "status": status,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": "2026-11-27T01:01:46.663819+00:00",
            "task_id": task_id,
        }
    ).encode()


def test_kombu_consumes_what_caraway_publishes(
    transport: RedisTransport, kombu_conn: Any, prefix: str
) -> None:
    message = _captured_message()
    transport.publish(message, queue="wire")

    queue = kombu_conn.SimpleQueue("wire")
    try:
        received = queue.get(timeout=5)
        assert received.headers == message.headers
        assert received.body == message.body
        assert received.content_type == "application/json"
        assert received.properties["correlation_id"] == message.headers["id"]
        assert received.delivery_info["routing_key"] == "wire"
        received.ack()
    finally:
        queue.close()
    admin = RedisAdmin(REDIS_URL, options={"global_keyprefix": prefix})
    try:
        assert admin.size("wire") == 0
    finally:
        admin.close()


def test_caraway_fetches_what_celery_sends(transport: RedisTransport, celery_app: Any) -> None:
    sent = celery_app.send_task("wtasks.add", args=(2, 2), queue="from-celery")
    (delivery,) = transport.fetch(["from-celery"], limit=1, timeout=2, owner="n/1")
    assert delivery.message.headers["id"] == sent.id
    assert delivery.message.headers["task"] == "wtasks.add"
    assert json.loads(delivery.message.body)[:2] == [[2, 2], {}]
    assert (delivery.exchange, delivery.routing_key) == ("", "from-celery")
    delivery.ack()


def test_kombu_sweep_restores_a_caraway_claim(
    transport: RedisTransport, kombu_conn: Any, raw: redis.Redis, prefix: str
) -> None:
    transport.publish(_captured_message(), queue="celery")
    (claim,) = transport.fetch(["celery"], limit=1, timeout=1, owner="gone/1")
    raw.zadd(f"{prefix}unacked_index", {claim.tag: time.time() - 7200})

    kombu_conn.default_channel.qos.restore_visible(num=100)

    (back,) = transport.fetch(["celery"], limit=1, timeout=1, owner="n/2")
    assert back.tag == claim.tag and back.redelivered


def test_caraway_sweep_restores_a_message_a_kombu_consumer_held(
    transport: RedisTransport, kombu_conn: Any, raw: redis.Redis, prefix: str
) -> None:
    transport.publish(_captured_message(), queue="held")
    queue = kombu_conn.SimpleQueue("held")
    try:
        taken = queue.get(timeout=5)  # never acked: its worker "died"
        tag = taken.delivery_tag
        assert raw.hexists(f"{prefix}unacked", tag)
        raw.zadd(f"{prefix}unacked_index", {tag: time.time() - 7200})
        assert transport.restore_visible() == 1
        (back,) = transport.fetch(["held"], limit=1, timeout=1, owner="n/1")
        assert back.tag == tag and back.redelivered
        back.ack()
    finally:
        queue.close()


def test_celery_async_result_reads_a_caraway_result(backend: RedisBackend, celery_app: Any) -> None:
    task_id = str(uuid.uuid4())
    result = celery_app.AsyncResult(task_id)
    # stored while Celery already waits: it must arrive through our PUBLISH
    timer = threading.Timer(
        0.2,
        lambda: backend.store(
            task_id, _document(task_id, "SUCCESS", 4), state="SUCCESS", expires=60
        ),
    )
    timer.start()
    try:
        assert result.get(timeout=5) == 4
    finally:
        timer.join()
    assert result.state == "SUCCESS"


def test_caraway_reads_a_result_celery_stored(backend: RedisBackend, celery_app: Any) -> None:
    task_id = str(uuid.uuid4())
    celery_app.backend.store_result(task_id, {"total": 4}, "SUCCESS")
    stored = backend.wait(task_id, until=lambda d: True, timeout=2)
    assert stored is not None
    document = json.loads(stored)
    assert (document["status"], document["result"], document["task_id"]) == (
        "SUCCESS",
        {"total": 4},
        task_id,
    )
    # and the final-state guard holds against Celery's document too
    assert not backend.store(
        task_id, _document(task_id, "STARTED", None), state="STARTED", expires=60
    )
