"""The fast ways through the decode boundary answer exactly as the long ways do (issue 23).

``message._decode_common``, ``envelope._unpack_usual`` and ``serializers.loads_json_usual``
read the usual shape in fewer calls and hand anything else to the long way. Each case here
decodes a message both ways, the fast way switched off for the second, and wants the same
TaskMessage or the same error, for every header, property and body given a hostile value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caraway.exceptions import ProtocolError
from caraway.protocol import envelope, message, serializers
from caraway.protocol.message import KNOWN_HEADERS, Message, TaskMessage, decode, encode
from caraway.protocol.serializers import JSON, MSGPACK

ACCEPT = frozenset({JSON})


class Text(str):
    """A str subclass: isinstance says str, the fast way's exact type test does not."""


class Whole(int):
    """An int subclass, likewise."""


HOSTILE: list[Any] = [
    None,
    "",
    "x",
    "x" * 1024,
    "x" * 1025,
    Text("t"),
    0,
    -1,
    7,
    2**70,
    Whole(3),
    True,
    False,
    1.5,
    math.nan,
    -0.5,
    [],
    [None, None],
    [1, 2.5],
    [None, -1],
    [True, None],
    (3, 4),
    [1, 2, 3],
    ["a", "b"],
    ["a", 1],
    {},
    {"a": 1},
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00",
    "not a date",
    b"bytes",
]


def _base() -> Message:
    task = TaskMessage(
        id="5096fdf6-c5c6-46fb-81c6-46d1b52ebdb8",
        task="usual.add",
        args=[1, 2],
        kwargs={"k": "v"},
        root_id="5096fdf6-c5c6-46fb-81c6-46d1b52ebdb8",
        argsrepr="(1, 2)",
        kwargsrepr="{}",
        reply_to="4826c767-a3c6-48f1-bc64-f0913eac6224",
        priority=0,
    )
    built = encode(task)
    built.headers["custom"] = {"x": 1}
    return built


def _outcome(decoding: Callable[[], Any]) -> Any:
    try:
        result = decoding()
    except ProtocolError as exc:
        return type(exc), str(exc)
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result


def _both(monkeypatch: pytest.MonkeyPatch, decoding: Callable[[], Any]) -> tuple[Any, Any]:
    fast = _outcome(decoding)
    with monkeypatch.context() as patched:
        patched.setattr(message, "_decode_common", lambda *_: None)
        patched.setattr(envelope, "_unpack_usual", lambda *_: None)
        patched.setattr(serializers, "loads_json_usual", lambda *_: serializers.UNUSUAL)
        patched.setattr(envelope, "loads_json_usual", lambda *_: serializers.UNUSUAL)
        slow = _outcome(decoding)
    return fast, slow


def _same(monkeypatch: pytest.MonkeyPatch, built: Message) -> None:
    fast, slow = _both(monkeypatch, lambda: decode(built, accept=ACCEPT, max_size=10_000))
    assert repr(fast) == repr(slow)  # repr: NaN is not equal to itself


def test_the_usual_message_takes_the_fast_way() -> None:
    built = _base()
    fast = message._decode_common(built, ACCEPT, None)
    assert fast is not None
    assert fast == decode(built, accept=ACCEPT)
    assert fast.extra_headers == {"custom": {"x": 1}}


@pytest.mark.parametrize("header", sorted(KNOWN_HEADERS | {"custom"}))
def test_every_header_given_anything_answers_as_the_long_way(
    monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    for value in HOSTILE:
        built = _base()
        built.headers[header] = value
        _same(monkeypatch, built)
        del built.headers[header]
        _same(monkeypatch, built)


def _bodies() -> Iterator[bytes]:
    for body in (
        [[1], {}, None],
        [[1], {}, {}],
        [[1], {}, {"callbacks": [{"task": "x"}], "chord": {"task": "y"}, "other": 1}],
        [[1], {}, []],
        [[1], [], None],
        [{}, {}, None],
        [[1], {}],
        [[1], {}, None, 4],
        {"args": [1]},
        "text",
        7,
        None,
        [[{"__type__": "uuid", "__value__": {"hex": "0" * 32}}], {}, None],
        [[2**70], {}, None],
    ):
        yield json.dumps(body).encode()
    yield b"[[1], {}, NaN]"
    yield b"[[1], {}, null"
    yield b"[" * 300 + b"]" * 300
    yield b"[[" + b"[" * 250 + b"]" * 250 + b"], {}, {}]"
    yield b"x" * 20_000


def test_every_body_answers_as_the_long_way(monkeypatch: pytest.MonkeyPatch) -> None:
    for body in _bodies():
        built = _base()
        built.body = body
        _same(monkeypatch, built)


def test_the_message_parts_answer_as_the_long_way(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("reply_to", "priority", "correlation_id"):
        for value in HOSTILE:
            built = _base()
            built.properties[name] = value
            _same(monkeypatch, built)
    for part, values in (
        ("body", [bytearray(b"[[], {}, null]"), memoryview(b"[[], {}, null]"), "text", None]),
        ("headers", [[], None, Text("x")]),
        ("properties", [[], None]),
        ("content_type", [Text(JSON), MSGPACK, "text/plain", None, 3]),
        ("content_encoding", ["latin-1", "binary", "nope", Text("utf-8"), None]),
    ):
        for value in values:
            built = _base()
            setattr(built, part, value)
            _same(monkeypatch, built)
    built = _base()
    built.body = b"[[1], {}, null]" + b" " * 20_000
    _same(monkeypatch, built)  # larger than max_size


def _envelopes() -> Iterator[bytes]:
    packed = envelope.pack(_base(), exchange="", routing_key="q", delivery_tag="tag-1")
    yield packed
    parsed = json.loads(packed)
    yield json.dumps(parsed).encode()  # kombu's spacing
    changes: list[tuple[str, str | None, Any]] = [
        (field, None, value)
        for field in ("headers", "content-type", "content-encoding", "properties")
        for value in [*HOSTILE[:12], {}, {"redelivered": True}]
    ]
    for field in ("delivery_tag", "delivery_info", "priority", "body_encoding", "reply_to"):
        changes += [("properties", field, value) for value in HOSTILE[:12]]
    info = parsed["properties"]["delivery_info"]
    changes += [("properties", "delivery_info", {**info, "exchange": v}) for v in HOSTILE[:12]]
    changes += [("properties", "delivery_info", {**info, "routing_key": v}) for v in HOSTILE[:12]]
    changes += [("properties", "delivery_info", {**info, "redelivered": v}) for v in (True, 0)]
    changes += [("headers", "redelivered", v) for v in (True, False, None, 1)]
    changes += [("headers", "x", {"__type__": "uuid", "__value__": {"hex": "0" * 32}})]
    changes += [("headers", "big", 2**70), ("headers", "deep", json.loads("[" * 300 + "]" * 300))]
    for field, key, value in changes:
        changed = json.loads(packed)
        if key is None:
            changed[field] = value
        elif isinstance(changed.get(field), dict):
            changed[field][key] = value
        yield json.dumps(changed, default=repr).encode()
        yield json.dumps(changed, default=repr, separators=(",", ":")).encode()
    without = json.loads(packed)
    for field in list(without):
        yield json.dumps({k: v for k, v in without.items() if k != field}).encode()
    for field in list(without["properties"]):
        changed = json.loads(packed)
        del changed["properties"][field]
        yield json.dumps(changed).encode()


def test_every_envelope_answers_as_the_long_way(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = 0
    for raw in _envelopes():
        fast, slow = _both(monkeypatch, lambda raw=raw: envelope.unpack(raw))
        assert repr(fast) == repr(slow), raw
        seen += 1
    assert seen > 200


def test_json_bodies_answer_as_the_long_way(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [*_bodies(), b"1" * 30, b'"\\ud800"', b"Infinity", b"{}", b"[]", b"null", b"3"]
    for text in texts:
        for limit in (2, 256):
            fast, slow = _both(
                monkeypatch,
                lambda t=text, n=limit: serializers.loads(
                    t, JSON, "utf-8", accept=ACCEPT, max_depth=n
                ),
            )
            assert repr(fast) == repr(slow), text
