"""protocol/events against Celery's captured event vectors (tests/vectors/event-*.json)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from caraway.exceptions import ProtocolError
from caraway.protocol import envelope
from caraway.protocol import events as proto
from caraway.protocol.message import TaskMessage

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
COMMON = ("hostname", "utcoffset", "pid", "clock", "timestamp", "type")


def _vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"event-{name}.json").read_text())
    return data


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    return type(value).__name__


@pytest.mark.parametrize("name", ["worker-online", "worker-heartbeat", "worker-offline"])
def test_worker_event_has_celerys_fields_types_and_key_order(name: str) -> None:
    captured = _vector(name)["redis"]["body_decoded"]
    fields = {k: v for k, v in captured.items() if k not in COMMON}
    ours = proto.build_event(
        captured["type"], hostname="w@h", pid=1, clock=3, offset=0.0, fields=fields
    )
    assert list(ours) == list(captured)
    assert _types(ours) == _types(captured)


def test_task_sent_fields_match_the_captured_client_event() -> None:
    captured = _vector("task-sent")["redis"]["body_decoded"]
    task = TaskMessage(
        id=captured["uuid"], task="wtasks.add", args=[2, 2], root_id=captured["uuid"]
    )
    fields = proto.task_sent_fields(task, queue="celery", exchange="", routing_key="celery")
    ours = proto.build_event("task-sent", hostname="gen1@h", pid=1, clock=1, fields=fields)
    assert list(ours) == list(captured)
    assert {k: ours[k] for k in fields} == {k: captured[k] for k in fields}


@pytest.mark.parametrize("name", ["task-succeeded", "task-failed", "task-retried"])
def test_task_multi_batch_has_the_captured_shape(name: str) -> None:
    captured = _vector(name)["redis"]
    batch = [
        proto.build_event(
            e["type"],
            hostname=e["hostname"],
            pid=e["pid"],
            clock=e["clock"],
            timestamp=e["timestamp"],
            offset=e["utcoffset"],
            fields={k: v for k, v in e.items() if k not in COMMON},
        )
        for e in captured["body_decoded"]
    ]
    message = proto.encode(batch, hostname="wcap@vm")
    assert message.headers == captured["envelope"]["headers"]
    assert message.properties == {"delivery_mode": 1}
    assert proto.decode(message.body) == captured["body_decoded"]
    raw = envelope.pack(
        message, exchange="celeryev", routing_key=proto.TASK_MULTI, delivery_tag="t"
    )
    ours = json.loads(raw)
    theirs = captured["envelope"]
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert list(ours["properties"]) == list(theirs["properties"])
    assert [list(e) for e in json.loads(base64.b64decode(ours["body"]))] == [
        list(e) for e in captured["body_decoded"]
    ]


def test_decode_reads_celerys_redis_and_amqp_bodies() -> None:
    vector = _vector("task-failed")
    redis_body = base64.b64decode(vector["redis"]["envelope"]["body"])
    assert [e["type"] for e in proto.decode(redis_body)] == [
        "task-received",
        "task-started",
        "task-failed",
    ]
    single = _vector("worker-heartbeat")["amqp"]["body_raw"]
    assert proto.decode(single)[0]["processed"] == 2


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"no": "type"}', b'"text"'])
def test_decode_refuses_what_is_not_an_event(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        proto.decode(body)


def test_routing_key_and_group_follow_the_event_type() -> None:
    assert proto.routing_key("worker-heartbeat") == "worker.heartbeat"
    assert proto.routing_key("task-succeeded") == "task.succeeded"
    assert proto.group_of("task-sent") == "task"


def test_datetimes_in_fields_travel_as_iso_strings() -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    event = proto.build_event("task-received", hostname="h", pid=1, clock=1, fields={"eta": eta})
    assert event["eta"] == "2030-01-02T03:04:05+00:00"
    assert json.loads(proto.encode(event, hostname="h").body)["eta"] == event["eta"]


def test_common_fields_cannot_be_overridden_by_event_fields() -> None:
    event = proto.build_event("task-started", hostname="h", pid=7, clock=2, fields={"pid": 99})
    assert event["pid"] == 7


def test_lamport_clock_moves_past_what_it_receives() -> None:
    clock = proto.LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12


def test_adjust_timestamp_moves_a_remote_zone_into_ours() -> None:
    event = {"timestamp": 1000.0, "utcoffset": 2.0}
    assert proto.adjust_timestamp(event, here=0.0) == 1000.0 - 7200.0
    assert proto.adjust_timestamp({"timestamp": 5.0}, here=3.0) == 5.0


def test_batches_keep_order_and_size() -> None:
    items = [{"type": "task-started", "n": n} for n in range(5)]
    assert [[e["n"] for e in b] for b in proto.batches(items, 2)] == [[0, 1], [2, 3], [4]]
