"""The envelope's one-pass body: Celery's bytes read the same whichever way they are read.

``unpack`` of envelope bytes that open with the body (kombu's layout and ours) cuts the
base64 body out, parses and checks the rest, and decodes the body from its slice; text
(``str``) envelopes and any other shape go the long way (parse everything, then base64).
Both ways must give the same message for every captured Celery envelope, and the same
answer (message or ProtocolError) for the hostile variants below; ``pack`` must write the
bytes the whole-envelope encoder wrote.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from caraway.exceptions import ProtocolError
from caraway.protocol import Message, pack, unpack
from caraway.protocol.envelope import Unpacked, _parse_around_body
from caraway.protocol.serializers import dumps_json
from tests.wire._vectors import VECTORS, captured, load

#: every captured Redis task message (tests/vectors/redis-*.json)
_NAMES = [path.name for path in sorted(VECTORS.glob("redis-*.json"))]
REDIS = [c for name in _NAMES if "messages" in load(name) for c in captured(name) if c.raw]
CASES = [pytest.param(c.raw, id=f"{c.vector}[{c.index}]") for c in REDIS]


def _both_ways(raw: bytes) -> tuple[Unpacked | str, Unpacked | str]:
    """(bytes read, text read): the long way is what a str envelope takes."""
    results: list[Unpacked | str] = []
    for given in (raw, raw.decode("utf-8", "surrogateescape")):
        try:
            results.append(unpack(given))
        except ProtocolError as exc:
            results.append(f"ProtocolError: {type(exc).__name__}")
    return results[0], results[1]


@pytest.mark.parametrize("raw", CASES)
def test_celerys_envelope_bytes_take_the_one_pass_way_to_the_same_message(raw: str) -> None:
    data = raw.encode("utf-8")
    assert _parse_around_body(data) is not None  # the fast way is the one taken
    fast, slow = _both_ways(data)
    assert fast == slow
    assert isinstance(fast, Unpacked)
    assert fast.message.body == base64.b64decode(json.loads(raw)["body"])


@pytest.mark.parametrize("raw", CASES)
def test_our_envelope_of_celerys_message_round_trips_and_matches_the_old_encoder(
    raw: str,
) -> None:
    read = unpack(raw.encode("utf-8"))
    ours = pack(
        read.message,
        exchange=read.exchange,
        routing_key=read.routing_key,
        delivery_tag=read.delivery_tag,
        priority=read.message.properties.get("priority", 0),
    )
    properties = {k: v for k, v in read.message.properties.items() if k != "priority"}
    properties.update(
        delivery_info={"exchange": read.exchange, "routing_key": read.routing_key},
        priority=read.message.properties.get("priority", 0),
        body_encoding="base64",
        delivery_tag=read.delivery_tag,
    )
    whole = {
        "body": base64.b64encode(read.message.body).decode("ascii"),
        "content-encoding": read.message.content_encoding,
        "content-type": read.message.content_type,
        "headers": read.message.headers,
        "properties": properties,
    }
    assert ours == dumps_json(whole)  # byte for byte what one encode of it all wrote
    assert unpack(ours) == read


def test_pack_splices_any_body_bytes_and_keeps_tagged_headers() -> None:
    message = Message(
        body=bytes(range(256)) * 3,
        headers={"id": "i", "task": "t", "note": 'é"\\', "ref": uuid.UUID(int=7)},
        content_type="application/x-python-serialize",
        content_encoding="binary",
        properties={"correlation_id": "i", "priority": 3},
    )
    raw = pack(message, exchange="ex", routing_key="rk", delivery_tag="tag", priority=3)
    assert json.loads(raw)["headers"]["ref"] == {
        "__type__": "uuid",
        "__value__": {"hex": "0" * 31 + "7"},
    }
    got = unpack(raw)
    assert got.message.body == message.body
    assert got.message.headers == message.headers
    assert (got.exchange, got.routing_key, got.delivery_tag) == ("ex", "rk", "tag")


def _envelope(**changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "body": base64.b64encode(b"[[1, 2], {}, {}]").decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": "i", "task": "t"},
        "properties": {"delivery_tag": "tag", "body_encoding": "base64"},
    }
    envelope.update(changes)
    return envelope


HOSTILE = {
    "escaped base64": json.dumps(_envelope()).replace("W1", "\\u0057\\u0031", 1),
    "body not base64": json.dumps(_envelope(body="not base64!")),
    "leading padding": json.dumps(_envelope(body="=")),
    "short padding": json.dumps(_envelope(body="QQ=")),
    "excess after padding": json.dumps(_envelope(body="QQ==QQ==")),
    "empty body": json.dumps(_envelope(body="")),
    "text body": json.dumps(_envelope(body="[[], {}, {}]", properties={"delivery_tag": "tag"})),
    "text body with quotes": json.dumps(
        _envelope(body='[["a"], {"b": "c"}, {}]', properties={"delivery_tag": "tag"})
    ),
    "other encoding": json.dumps(
        _envelope(properties={"delivery_tag": "tag", "body_encoding": "hex"})
    ),
    "body twice": json.dumps(_envelope())[:-1] + ', "body": "QQ=="}',
    "body twice, bad second": json.dumps(_envelope())[:-1] + ', "body": 5}',
    "no properties": json.dumps(_envelope(properties=None)),
    "properties a list": json.dumps(_envelope(properties=[1])),
    "no tag": json.dumps(_envelope(properties={"body_encoding": "base64"})),
    "tagged header": json.dumps(
        _envelope(
            headers={"id": "i", "task": "t", "d": {"__type__": "date", "__value__": "2030-01-02"}}
        )
    ),
    "bad tag value": json.dumps(
        _envelope(headers={"id": "i", "task": "t", "d": {"__type__": "date", "__value__": "x"}})
    ),
    "deep headers": json.dumps(_envelope(headers={"id": "i", "x": []})).replace(
        '"x": []', '"x": ' + "[" * 300 + "]" * 300
    ),
    "long number": json.dumps(_envelope(headers={"id": "i", "n": 2**70})),
    "truncated": json.dumps(_envelope())[:40],
    "unterminated body": '{"body": "QUJD',
    "body then garbage": json.dumps(_envelope())[:-1] + "} trailing",
    "compact": json.dumps(_envelope(), separators=(",", ":")),
}


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
def test_unusual_or_hostile_envelopes_get_the_long_ways_answer(raw: str) -> None:
    fast, slow = _both_ways(raw.encode("utf-8"))
    assert fast == slow
