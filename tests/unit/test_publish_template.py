"""An envelope template (``protocol.envelope.Template``), made the way ``publish.plain`` makes
a task's, then filled with a call's ids, reprs and body, gives ``pack()``'s bytes for that
call, whatever options built the message: the holes are only ever what varies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from caraway import Caraway, publish
from caraway.brokers.redis.transport import RedisTransport
from caraway.protocol import message as protocol
from caraway.protocol.envelope import Template, json_text, pack

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
TASK_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
TAG = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
REPLY_TO = "d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a"

OPTIONS: list[dict[str, Any]] = [
    {},
    {"countdown": 10},
    {"eta": datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc)},
    {"expires": 60},
    {"priority": 5},
    {"queue": "other"},
    {"queue": "other", "routing_key": "key"},
    {"headers": {"traceparent": "00-\u2603", "n": 1}},
    {"link": {"task": "proj.cb", "args": [], "kwargs": {}, "options": {}}},
    {"ignore_result": True},
    {"time_limit": 10, "soft_time_limit": 5.5},
    {"shadow": 'shown "name"'},
    {"serializer": "pickle"},
    {"serializer": "msgpack"},
    {"compression": "gzip"},
    {"group_id": "g1", "group_index": 2, "retries": 3},
    {"parent_id": "p1", "root_id": "r1", "reply_to": "elsewhere"},
]


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("tpl", broker="memory://tpl", backend="memory://", set_as_current=False)
    app.conf.task_create_missing_queues = True
    yield app
    app.close()


def _wire(
    app: Caraway, options: dict[str, Any], args: tuple[Any, ...], marks: dict[str, str] | None
) -> tuple[Any, tuple[str, str, int]]:
    """The general path's message for the call (its varying strings ``marks``, if given),
    and the exchange, routing key and priority the Redis transport packs it with."""
    ids = marks or {"id": TASK_ID, "reply_to": REPLY_TO}
    item = publish.build(
        "tpl.add",
        args,
        KWARGS,
        {**options, "task_id": ids["id"]},
        conf=app.conf,
        task=app.tasks["tpl.add"],
        now=NOW,
        reply_to=ids["reply_to"],
    )
    message = item.message
    if marks:
        message.origin = marks["origin"]
        message.argsrepr, message.kwargsrepr = marks["argsrepr"], marks["kwargsrepr"]
    wire = publish._finish(item, protocol.encode(message, serializer=item.serializer, now=NOW))
    target = item.route
    return wire, RedisTransport.envelope_route(
        wire, queue=target.queue, exchange=target.exchange, routing_key=target.routing_key
    )


KWARGS = {"k": "\u00e9", "n": [1, {"x": None}]}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: ",".join(options) or "none")
def test_a_filled_template_is_packs_bytes(app: Caraway, options: dict[str, Any]) -> None:
    @app.task(name="tpl.add")
    def add(*args: Any, **kwargs: Any) -> Any:
        return args

    args = ('caf\u00e9 "q" \\ \n\x01', TASK_ID, [1.5, None, 2**40])
    wire, (exchange, routing_key, priority) = _wire(app, options, args, None)
    expected = pack(
        wire, exchange=exchange, routing_key=routing_key, delivery_tag=TAG, priority=priority
    )
    marked, route = _wire(app, options, args, publish._MARKS)
    assert route == (exchange, routing_key, priority)
    # a reply_to option is the message's own, not the thread's: no hole for it then
    holes = {key: mark for key, mark in publish._MARKS.items() if key not in options}
    template = Template(
        marked,
        exchange=exchange,
        routing_key=routing_key,
        priority=priority,
        delivery_tag=publish._MARKS["tag"],
        holes=holes,
    )
    values = {
        "id": TASK_ID.encode(),
        "argsrepr": json_text(protocol.safe_repr(args)),
        "kwargsrepr": json_text(protocol.safe_repr(KWARGS)),
        "reply_to": json_text(REPLY_TO),
        "origin": json_text(protocol.default_origin()),
        "tag": TAG.encode(),
    }
    assert template.fill(wire.body, {key: values[key] for key in holes}) == expected


def test_a_marker_missing_from_the_envelope_is_refused(app: Caraway) -> None:
    wire = protocol.encode(protocol.TaskMessage(id=TASK_ID, task="tpl.add"))
    with pytest.raises(ValueError, match="markers"):
        Template(
            wire,
            exchange="",
            routing_key="celery",
            priority=0,
            delivery_tag=TAG,
            holes={"id": "not-there:"},
        )
