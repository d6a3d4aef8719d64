"""Golden tests: Celery 5.7's task messages decode to the call, and our encode matches.

Each captured message is paired with the call that produced it (written out by hand
below). Ids, ETAs and the client's reply_to/origin come from the capture because they
are inputs, not something encode derives.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caraway.protocol import (
    TaskMessage,
    decode,
    encode,
    normalize_accept,
    pack,
    peek_eta,
    peek_id,
    unpack,
)
from tests.wire._vectors import Captured, captured, load

ACCEPT = normalize_accept(["json"])
UTC = timezone.utc


def _sig(task: str, args: list[Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "task": task,
        "args": args,
        "kwargs": {},
        "options": options or {},
        "subtask_type": None,
        "immutable": False,
    }


def _call(
    c: Captured, task: str, args: list[Any], kwargs: dict[str, Any] | None = None, **fields: Any
) -> TaskMessage:
    """The TaskMessage a caller builds for this call; ids and client identity from ``c``."""
    kwargs = kwargs or {}
    values: dict[str, Any] = {
        "id": c.id,
        "task": task,
        "args": args,
        "kwargs": kwargs,
        "root_id": c.id,
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": repr(kwargs),
        "origin": c.headers["origin"],
        "ignore_result": False,
        "reply_to": c.properties["reply_to"],
        "priority": 0,
    }
    values.update(fields)
    return TaskMessage(**values)


def _eta(c: Captured) -> datetime:
    return datetime.fromisoformat(c.headers["eta"])


def _expires(c: Captured) -> datetime:
    return datetime.fromisoformat(c.headers["expires"])


def _chain_ids(c: Captured) -> list[str]:
    return [step["options"]["task_id"] for step in c.body[2]["chain"]]


def _chain2(c: Captured) -> TaskMessage:
    # (add.s(4, 4) | mul.s(8)): the remaining step rides in embed.chain.
    (mul_id,) = _chain_ids(c)
    opts = {"task_id": mul_id, "reply_to": c.properties["reply_to"]}
    return _call(c, "wtasks.add", [4, 4], chain=[_sig("wtasks.mul", [8], opts)])


def _chain3(c: Captured) -> TaskMessage:
    # (add.s(4, 4) | mul.s(8) | add.s(1)): remaining steps in reverse, next step last.
    last_id, next_id = _chain_ids(c)
    reply = c.properties["reply_to"]
    chain = [
        _sig("wtasks.add", [1], {"task_id": last_id, "reply_to": reply}),
        _sig("wtasks.mul", [8], {"task_id": next_id, "reply_to": reply}),
    ]
    return _call(c, "wtasks.add", [4, 4], chain=chain)


def _group(c: Captured) -> TaskMessage:
    index = c.headers["group_index"]
    vector = load(c.vector)
    group_id = vector["result_ids"]["id"] if "result_ids" in vector else vector["result_id"]
    return _call(c, "wtasks.add", [index, index], group=group_id, group_index=index)


def _chord(c: Captured) -> TaskMessage:
    index = c.headers["group_index"]
    vector = load(c.vector)
    if "result_ids" in vector:
        callback_id, group_id = vector["result_ids"]["id"], vector["result_ids"]["parent"]["id"]
    else:
        callback_id, group_id = vector["result_id"], c.headers["group"]
    body = _sig(
        "wtasks.xsum",
        [],
        {"task_id": callback_id, "reply_to": c.properties["reply_to"], "group_id": group_id},
    )
    return _call(c, "wtasks.add", [index, index], group=group_id, group_index=index, chord=body)


def _link(c: Captured) -> TaskMessage:
    return _call(
        c,
        "wtasks.add",
        [2, 2],
        callbacks=[_sig("wtasks.mul", [10])],
        errbacks=[_sig("wtasks.on_error", [])],
    )


def _send_task_extras(c: Captured) -> TaskMessage:
    return _call(
        c,
        "wtasks.add",
        [1, 2],
        shadow="add-shadow",
        time_limit=30,
        soft_time_limit=20,
        extra_headers={"x-custom": "v"},
        eta=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        ignore_result=None,  # send_task leaves it to the worker
    )


def _add22(**fields: Any) -> Callable[[Captured], TaskMessage]:
    return lambda c: _call(c, "wtasks.add", [2, 2], **fields)


CALLS: dict[str, Callable[[Captured], TaskMessage]] = {
    "redis-delay.json": _add22(),
    "amqp-delay.json": _add22(),
    "redis-countdown.json": lambda c: _call(c, "wtasks.add", [2, 2], eta=_eta(c)),
    "amqp-countdown.json": lambda c: _call(c, "wtasks.add", [2, 2], eta=_eta(c)),
    "redis-expires.json": lambda c: _call(c, "wtasks.add", [2, 2], expires=_expires(c)),
    "amqp-expires.json": lambda c: _call(c, "wtasks.add", [2, 2], expires=_expires(c)),
    # The envelope on Redis always records a priority; AMQP had none for queue=.
    "redis-queue-lopri.json": _add22(),
    "amqp-queue-lopri.json": _add22(priority=None),
    "redis-priority.json": lambda c: _call(
        c, "wtasks.add", [2, 2], priority=c.properties["priority"]
    ),
    "amqp-priority.json": _add22(priority=5),
    "amqp-priority-maxpri.json": _add22(priority=5),
    "redis-kwargs.json": lambda c: _call(c, "wtasks.add", [], {"x": 1, "y": 2}),
    "amqp-kwargs.json": lambda c: _call(c, "wtasks.add", [], {"x": 1, "y": 2}),
    "redis-chain.json": _chain2,
    "amqp-chain.json": _chain3,
    "redis-group.json": _group,
    "amqp-group.json": _group,
    "redis-chord.json": _chord,
    "amqp-chord.json": _chord,
    "redis-link.json": _link,
    "amqp-link.json": _link,
    "redis-send-task-extras.json": _send_task_extras,
}

ALL = [c for name in CALLS for c in captured(name)]
CASES = [pytest.param(c, id=f"{c.vector}[{c.index}]") for c in ALL]
REDIS_CASES = [pytest.param(c, id=f"{c.vector}[{c.index}]") for c in ALL if c.raw is not None]


def _encode_input(expected: TaskMessage) -> TaskMessage:
    # Leave to encode what it must derive itself: root_id and the display reprs.
    return dataclasses.replace(
        expected,
        root_id=None if expected.root_id == expected.id else expected.root_id,
        argsrepr=None,
        kwargsrepr=None,
    )


def _now_for(expected: TaskMessage) -> datetime | None:
    # Celery computed expires as now + 60 s; the same instant makes the TTL exact.
    return None if expected.expires is None else expected.expires - timedelta(seconds=60)


@pytest.mark.parametrize("c", CASES)
def test_captured_message_decodes_to_the_call(c: Captured) -> None:
    assert decode(c.message, accept=ACCEPT) == CALLS[c.vector](c)


@pytest.mark.parametrize("c", CASES)
def test_encoded_call_has_celerys_headers_in_celerys_order(c: Captured) -> None:
    message = encode(_encode_input(CALLS[c.vector](c)), now=_now_for(CALLS[c.vector](c)))
    assert list(message.headers.items()) == list(c.headers.items())


@pytest.mark.parametrize("c", CASES)
def test_encoded_call_has_celerys_properties_and_body(c: Captured) -> None:
    expected = CALLS[c.vector](c)
    message = encode(_encode_input(expected), now=_now_for(expected))
    assert message.properties == c.properties
    assert json.loads(message.body) == c.body
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")


@pytest.mark.parametrize("c", CASES)
def test_peeks_read_id_and_eta_without_the_body(c: Captured) -> None:
    assert peek_id(c.message) == c.id
    eta = c.headers["eta"]
    expected = None if eta is None else datetime.fromisoformat(eta).timestamp()
    assert peek_eta(c.message) == expected


@pytest.mark.parametrize("c", REDIS_CASES)
def test_kombu_envelope_unpacks_to_the_captured_message(c: Captured) -> None:
    assert c.raw is not None and c.envelope is not None
    unpacked = unpack(c.raw)
    info = c.envelope["properties"]["delivery_info"]
    assert (unpacked.exchange, unpacked.routing_key) == (info["exchange"], info["routing_key"])
    assert unpacked.delivery_tag == c.envelope["properties"]["delivery_tag"]
    assert unpacked.redelivered is False
    assert unpacked.message == c.message


@pytest.mark.parametrize("c", REDIS_CASES)
def test_packed_encoded_call_equals_the_captured_envelope(c: Captured) -> None:
    assert c.envelope is not None
    expected = CALLS[c.vector](c)
    properties = c.envelope["properties"]
    raw = pack(
        encode(_encode_input(expected), now=_now_for(expected)),
        exchange=properties["delivery_info"]["exchange"],
        routing_key=properties["delivery_info"]["routing_key"],
        delivery_tag=properties["delivery_tag"],
        priority=properties["priority"],
    )
    ours = json.loads(raw)
    # The body is base64 of JSON whose spacing differs (orjson vs json.dumps): compare
    # the decoded JSON, then everything else as is.
    assert json.loads(base64.b64decode(ours["body"])) == c.body
    assert {**ours, "body": None} == {**c.envelope, "body": None}
    assert list(ours) == list(c.envelope)
    assert list(ours["properties"]) == list(properties)
