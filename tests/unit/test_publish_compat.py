"""The one publish path sends before/after_task_publish as Celery does (receivers can inject
headers), compresses bodies as kombu does, and marks transient messages; the worker's
decoder reads kombu-compressed bodies."""

from __future__ import annotations

from typing import Any

import kombu.compression
import pytest

from caraway import Caraway, signals
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import message as protocol
from caraway.protocol.message import Message
from caraway.protocol.serializers import compress, decompress
from tests.helpers import wait_until


@pytest.fixture
def app() -> Any:
    app = Caraway(
        "pub", broker="memory://publish-compat", backend="memory://", set_as_current=False
    )
    yield app
    app.close()


def _fetch_one(app: Any, queue: str = "celery") -> Message:
    transport = app.connection()
    try:
        [delivery] = wait_until(
            lambda: transport.fetch([queue], limit=1, timeout=0.1, owner="t"), timeout=5
        )
        delivery.ack()
        return delivery.message
    finally:
        transport.close()


def test_before_publish_receivers_inject_headers_and_see_celerys_arguments(app: Any) -> None:
    seen: dict[str, Any] = {}

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    def inject(sender: Any, headers: dict[str, Any], body: Any, **kwargs: Any) -> None:
        headers["traceparent"] = "00-abc-def-01"
        body[1]["injected"] = True  # a body change made in place travels too
        seen.update(kwargs, sender=sender)

    def after(sender: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        seen["after"] = headers["id"]

    signals.before_task_publish.connect(inject)
    signals.after_task_publish.connect(after)
    try:
        result = add.delay(2, 2)
    finally:
        signals.before_task_publish.disconnect(inject)
        signals.after_task_publish.disconnect(after)
    message = _fetch_one(app)
    assert message.headers["traceparent"] == "00-abc-def-01"
    assert protocol.decode(message, accept=frozenset({"application/json"})).kwargs == {
        "injected": True
    }
    assert seen["sender"] == "proj.add" and seen["routing_key"] == "celery"
    assert seen["exchange"] == "" and seen["retry_policy"]["max_retries"] == 3
    assert [queue.name for queue in seen["declare"]] == ["celery"]
    assert seen["after"] == result.id


@pytest.mark.parametrize("method", ["gzip", "zlib", "bzip2", "lzma", "zstd", "brotli"])
def test_compressed_bodies_are_kombus_both_ways(app: Any, method: str) -> None:
    pytest.importorskip({"zstd": "zstandard", "brotli": "brotli"}.get(method, "zlib"))
    app.send_task("proj.add", (2, 2), compression=method)
    message = _fetch_one(app)
    header = message.headers["compression"]
    kombu_knows = header in kombu.compression.encoders()  # kombu's zstd needs backports.zstd
    reader = kombu.compression.decompress if kombu_knows else decompress
    assert reader(message.body, header).startswith(b"[[2,2]")
    decoded = protocol.decode(message, accept=frozenset({"application/json"}))
    assert decoded.args == [2, 2] and "compression" not in decoded.extra_headers
    if kombu_knows:
        body, content_type = kombu.compression.compress(b"[[1], {}, {}]", method)
        assert decompress(body, content_type) == b"[[1], {}, {}]"


def test_task_compression_and_an_unknown_method(app: Any) -> None:
    app.conf.task_compression = "gzip"
    app.send_task("proj.add", (1, 1))
    assert _fetch_one(app).headers["compression"] == "application/x-gzip"
    with pytest.raises(ImproperlyConfigured, match="unknown compression 'snappy'"):
        app.send_task("proj.add", (1, 1), compression="snappy")
    with pytest.raises(ImproperlyConfigured, match="unknown compression"):
        compress(b"x", "snappy")


def test_transient_delivery_mode_is_sent(app: Any) -> None:
    app.conf.task_default_delivery_mode = "transient"
    app.send_task("proj.add", (1, 1))
    assert _fetch_one(app).properties["delivery_mode"] == 1


def test_app_events_and_connection_as_celery_monitors_use_them(app: Any) -> None:
    state = app.events.State()
    with app.connection() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": state.event})
        assert receiver.handlers == {"*": state.event}
    state.event({"type": "worker-online", "hostname": "w1@h", "timestamp": 1.0})
    assert "w1@h" in state.workers


def test_get_on_message_sees_each_state_document(app: Any) -> None:
    import threading

    from caraway.protocol import results as docs

    def store(state: str, meta: Any) -> None:
        document = docs.encode_document(docs.result_document("progress-task", state, meta))
        app.new_backend().store("progress-task", document, state=state, expires=None)

    seen: list[Any] = []
    got: list[Any] = []
    store("PROGRESS", {"done": 1})
    waiter = threading.Thread(
        target=lambda: got.append(
            app.AsyncResult("progress-task").get(timeout=10, on_message=seen.append)
        )
    )
    waiter.start()
    try:
        wait_until(lambda: seen, timeout=5, message="the PROGRESS document")
        store("SUCCESS", 7)
    finally:
        waiter.join(timeout=10)
    assert got == [7]
    assert [meta["status"] for meta in seen] == ["PROGRESS", "SUCCESS"]
    assert seen[0]["result"] == {"done": 1}
