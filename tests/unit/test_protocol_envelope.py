"""Edge cases of kombu's Redis envelope: pack/unpack, odd envelopes, redelivery."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from caraway.exceptions import ProtocolError
from caraway.protocol.envelope import mark_redelivered, pack, unpack
from caraway.protocol.message import Message


def _message() -> Message:
    return Message(
        body=b"[[1], {}, {}]",
        headers={"task": "t", "id": "i", "eta": None},
        properties={"correlation_id": "i", "reply_to": "r", "delivery_mode": 2, "priority": 9},
    )


def test_pack_then_unpack_returns_the_message_and_delivery() -> None:
    raw = pack(_message(), exchange="", routing_key="q", delivery_tag="tag-1", priority=3)
    unpacked = unpack(raw)
    assert (unpacked.exchange, unpacked.routing_key, unpacked.delivery_tag) == ("", "q", "tag-1")
    assert unpacked.redelivered is False
    assert unpacked.message.body == b"[[1], {}, {}]"
    assert unpacked.message.headers == {"task": "t", "id": "i", "eta": None}
    # The envelope's priority is the one the transport chose.
    assert unpacked.message.properties == {
        "correlation_id": "i",
        "reply_to": "r",
        "delivery_mode": 2,
        "priority": 3,
    }


def test_packed_envelope_has_kombus_required_fields() -> None:
    envelope = json.loads(pack(_message(), exchange="ex", routing_key="q", delivery_tag="t"))
    assert base64.b64decode(envelope["body"]) == b"[[1], {}, {}]"
    assert envelope["content-type"] == "application/json"
    assert envelope["content-encoding"] == "utf-8"
    properties = envelope["properties"]
    assert properties["body_encoding"] == "base64"
    assert properties["delivery_tag"] == "t"
    assert properties["delivery_info"] == {"exchange": "ex", "routing_key": "q"}
    assert properties["priority"] == 0


def test_envelope_without_body_encoding_uses_the_body_string_as_is() -> None:
    raw = json.dumps(
        {
            "body": "[[2], {}, {}]",
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {"task": "t", "id": "i"},
            "properties": {
                "delivery_tag": "x",
                "delivery_info": {"exchange": "", "routing_key": "q"},
            },
        }
    )
    assert unpack(raw).message.body == b"[[2], {}, {}]"


def test_envelope_without_delivery_tag_is_refused() -> None:
    raw = json.dumps({"body": "", "headers": {}, "properties": {}})
    with pytest.raises(ProtocolError, match="delivery_tag"):
        unpack(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"body": "!!", "properties": {"delivery_tag": "t", "body_encoding": "base64"}}),
        json.dumps({"body": "x", "properties": {"delivery_tag": "t", "body_encoding": "rot13"}}),
        json.dumps({"body": 5, "properties": {"delivery_tag": "t"}}),
        json.dumps({"body": "", "headers": [], "properties": {"delivery_tag": "t"}}),
    ],
    ids=[
        "not-json",
        "not-object",
        "bad-base64",
        "unknown-encoding",
        "body-not-string",
        "headers-list",
    ],
)
def test_malformed_envelope_is_a_protocol_error(raw: bytes | str) -> None:
    with pytest.raises(ProtocolError):
        unpack(raw)


def test_tagged_header_values_are_decoded_on_unpack() -> None:
    raw = json.dumps(
        {
            "body": "",
            "headers": {"when": {"__type__": "date", "__value__": "2030-01-02"}},
            "properties": {"delivery_tag": "t"},
        }
    )
    assert str(unpack(raw).message.headers["when"]) == "2030-01-02"


def test_mark_redelivered_flags_headers_and_delivery_info() -> None:
    raw = mark_redelivered(pack(_message(), exchange="", routing_key="q", delivery_tag="t"))
    envelope = json.loads(raw)
    assert envelope["headers"]["redelivered"] is True
    assert envelope["properties"]["delivery_info"]["redelivered"] is True
    unpacked = unpack(raw)
    assert unpacked.redelivered is True
    assert unpacked.delivery_tag == "t"
    assert "redelivered" not in unpacked.message.headers


def test_a_uuid_object_in_a_header_is_packed_with_kombus_tag() -> None:
    # pack walks only headers and properties for UUID objects: one there must still be
    # tagged as kombu tags it, however many UUID-shaped strings the envelope holds
    message = _message()
    message.headers["trace"] = {"span": [uuid.UUID("00000000-0000-0000-0000-000000000001")]}
    raw = pack(message, exchange="", routing_key="q", delivery_tag=str(uuid.uuid4()))
    envelope = json.loads(raw)
    assert envelope["headers"]["trace"]["span"] == [
        {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000001"}}
    ]
    assert unpack(json.dumps(envelope)).message.headers["trace"]["span"] == [
        uuid.UUID("00000000-0000-0000-0000-000000000001")
    ]
