"""Golden tests for what a Celery worker publishes and restores on Redis.

Chain continuations, retries and chord callbacks (docs/design/protocol.md §1.4) must decode to
the follow-up the worker meant and re-encode to the same headers; kombu's restore of an
unacked message (§2.5) must read as redelivered and be reproducible by mark_redelivered.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from caraway.protocol import (
    TaskMessage,
    decode,
    encode,
    mark_redelivered,
    normalize_accept,
    pack,
    unpack,
)
from tests.wire._vectors import Captured, captured, load

ACCEPT = normalize_accept(["json"])


def _follow_up(c: Captured, task: str, args: list[Any], **fields: Any) -> TaskMessage:
    values: dict[str, Any] = {
        "id": c.id,
        "task": task,
        "args": args,
        "kwargs": {},
        "root_id": c.headers["root_id"],
        "parent_id": c.headers["parent_id"],
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": "{}",
        "origin": c.headers["origin"],
        "ignore_result": False,
        "reply_to": c.properties["reply_to"],
        "priority": 0,
    }
    values.update(fields)
    return TaskMessage(**values)


def _assert_reencodes(c: Captured, message: TaskMessage) -> None:
    wire = encode(_copy(message))
    assert list(wire.headers.items()) == list(c.headers.items())
    assert json.loads(wire.body) == c.body


def _copy(message: TaskMessage) -> TaskMessage:
    # argsrepr recomputed by encode must equal what Celery wrote.
    fields = {name: getattr(message, name) for name in TaskMessage.__dataclass_fields__}
    fields["argsrepr"] = None
    fields["kwargsrepr"] = None
    return TaskMessage(**fields)


def test_chain_continuation_carries_parent_root_and_an_empty_chain() -> None:
    first, step = captured("result-chain.json")
    decoded = decode(unpack(step.raw or "").message, accept=ACCEPT)
    expected = _follow_up(step, "wtasks.mul", [8, 8], chain=[])
    assert decoded == expected
    assert decoded.parent_id == decoded.root_id == first.id
    _assert_reencodes(step, expected)


def test_retry_republish_keeps_the_id_and_counts_the_retry() -> None:
    original, retry = captured("result-retry.json", "messages_for_task_id")
    decoded = decode(unpack(retry.raw or "").message, accept=ACCEPT)
    expected = _follow_up(
        retry, "wtasks.flaky", [], retries=1, eta=datetime.fromisoformat(retry.headers["eta"])
    )
    assert decoded == expected
    assert decoded.id == decoded.parent_id == original.id
    _assert_reencodes(retry, expected)


def test_retry_republish_properties_carry_origin_which_decode_tolerates() -> None:
    _, retry = captured("result-retry.json", "messages_for_task_id")
    assert retry.envelope is not None
    assert retry.envelope["properties"]["origin"] == retry.headers["origin"]
    assert unpack(retry.raw or "").message.properties["origin"] == retry.headers["origin"]


def test_chord_callback_gets_the_header_group_and_ordered_results() -> None:
    (callback,) = captured("result-chord-redis.json", "callback_messages")
    vector = load("result-chord-redis.json")
    decoded = decode(unpack(callback.raw or "").message, accept=ACCEPT)
    expected = _follow_up(callback, "wtasks.xsum", [[0, 2, 4]], group=vector["group_id"])
    assert decoded == expected
    assert decoded.id == vector["callback_id"]
    _assert_reencodes(callback, expected)


def test_restored_unacked_message_unpacks_as_redelivered_without_the_header() -> None:
    (raw,) = load("redis-unacked.json")["after_shutdown_queue"]["value"]
    unpacked = unpack(raw)
    assert unpacked.redelivered is True
    assert "redelivered" not in unpacked.message.headers
    assert unpacked.routing_key == "celery"
    assert decode(unpacked.message, accept=ACCEPT).id == "503350c2-52c7-45e0-a509-2d571423f35a"


def test_mark_redelivered_reproduces_kombus_restore() -> None:
    (raw,) = load("redis-unacked.json")["after_shutdown_queue"]["value"]
    restored = json.loads(raw)
    before = json.loads(raw)
    del before["headers"]["redelivered"]
    del before["properties"]["delivery_info"]["redelivered"]
    assert json.loads(mark_redelivered(json.dumps(before))) == restored


def test_unacked_hash_entries_hold_envelopes_that_unpack_with_their_tag() -> None:
    vector = load("redis-unacked.json")
    for state in ("during_execution", "eta_held"):
        for tag, entry in vector[state]["unacked"]["value"].items():
            envelope, exchange, routing_key = json.loads(entry)
            unpacked = unpack(json.dumps(envelope))
            assert unpacked.delivery_tag == tag
            assert (unpacked.exchange, unpacked.routing_key) == (exchange, routing_key)


def test_pack_round_trips_a_worker_published_message() -> None:
    (callback,) = captured("result-chord-redis.json", "callback_messages")
    raw = pack(callback.message, exchange="", routing_key="celery", delivery_tag="t-1")
    unpacked = unpack(raw)
    assert unpacked.message == callback.message
    assert (unpacked.delivery_tag, unpacked.redelivered) == ("t-1", False)
