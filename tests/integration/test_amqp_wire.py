"""caraway's AMQP property encoder against py-amqp's: the same bytes for the same values.

No broker needed; it lives beside the AMQP transport tests because it guards their wire.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any

import amqp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caraway.clients.amqp import ack_frame, publish_frames
from caraway.clients.amqp_codec import (
    DeliveredMessage,
    FrameError,
    encode_properties,
    frame_handler,
    split_frames,
)


class _Level(IntEnum):
    HIGH = 9


def _celery_headers() -> dict[str, Any]:
    return {
        "lang": "py",
        "task": "proj.tasks.add",
        "id": "0b8a9c1e-6f0e-4f4c-9d5e-2f3c1a7b8e90",
        "shadow": None,
        "eta": None,
        "expires": 1795755998.877173,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, 20.5],
        "root_id": "0b8a9c1e-6f0e-4f4c-9d5e-2f3c1a7b8e90",
        "parent_id": None,
        "argsrepr": "(2, 2)",
        "kwargsrepr": "{}",
        "origin": "gen1234@host",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


ODD_VALUES: list[Any] = [
    2**31 - 1,
    -(2**31 - 1),
    -(2**31),
    2**40,
    -(2**62),
    True,
    0.1,
    "unicode é ✓ \udcff",
    b"raw bytes",
    ("a", 1),
    {"nested": {"deeper": [1, "two", None, False, {"x": 1.5}]}},
    Decimal("12.345"),
    Decimal("-7"),
    datetime(2026, 11, 27, 7, 50, tzinfo=timezone.utc),
    _Level.HIGH,
    [],
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_a_header_value_is_encoded_byte_for_byte_as_py_amqp_does(value: Any) -> None:
    properties = {"content_type": "application/json", "application_headers": {"v": value}}
    expected = amqp.Message(b"", **properties)._serialize_properties()
    assert encode_properties(properties) == expected


def test_celery_task_properties_are_encoded_byte_for_byte_as_py_amqp_does() -> None:
    properties = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "application_headers": _celery_headers(),
        "delivery_mode": 2,
        "priority": 0,
        "correlation_id": "0b8a9c1e-6f0e-4f4c-9d5e-2f3c1a7b8e90",
        "reply_to": "5e1f2a9c-1111-2222-3333-444455556666",
        "expiration": "60000",
        "message_id": "m-1",
        "timestamp": 1795755998,
        "type": "t",
        "user_id": "guest",
        "app_id": "caraway",
        "cluster_id": "",
    }
    expected = amqp.Message(b"", **properties)._serialize_properties()
    assert encode_properties(properties) == expected


def test_a_value_py_amqp_cannot_send_still_fails_as_py_amqp_fails() -> None:
    message = amqp.Message(b"{}", application_headers={"v": object()})
    with pytest.raises(ValueError):
        encode_properties(message.properties)
    with pytest.raises(amqp.exceptions.FrameSyntaxError):
        publish_frames(1, message, exchange="", routing_key="q", mandatory=True, frame_max=131072)


def _frames(body: bytes, **properties: Any) -> bytes:
    message = amqp.Message(body, **properties)
    return publish_frames(
        1, message, exchange="", routing_key="celery", mandatory=False, frame_max=131072
    )


def test_split_frames_keeps_an_incomplete_frame_for_the_next_read() -> None:
    frames = _frames(b"body-one", content_type="a") + _frames(b"x" * 300)
    whole, rest = split_frames(frames)
    assert rest == b""
    assert [frame_type for frame_type, _, _ in whole] == [1, 2, 3, 1, 2, 3]
    assert whole[2][2] == b"body-one" and whole[5][2] == b"x" * 300
    for cut in range(len(frames)):  # a recv may end anywhere
        first, kept = split_frames(frames[:cut])
        second, left = split_frames(kept + frames[cut:])
        assert first + second == whole and left == b""


def test_split_frames_refuses_a_stream_out_of_step() -> None:
    with pytest.raises(FrameError, match="0xCE"):
        split_frames(_frames(b"b")[:-1] + b"\x00")


def _decoded_both_ways(properties: dict[str, Any]) -> tuple[Any, Any]:
    """(py-amqp's reading, ours) of a content header carrying ``properties``."""
    header = struct.pack(">HHQ", 60, 0, 2) + encode_properties(properties)
    theirs = amqp.Message(frame_method=(60, 60), frame_args=b"")
    theirs.inbound_header(header)
    ours = DeliveredMessage(frame_method=(60, 60), frame_args=b"")
    ours.inbound_header(header)
    return theirs.properties, ours.properties


def test_delivered_celery_properties_decode_as_py_amqp_decodes_them() -> None:
    properties = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "application_headers": _celery_headers(),
        "delivery_mode": 2,
        "priority": 3,
        "correlation_id": "0b8a9c1e",
        "reply_to": "r",
        "timestamp": 1795755998,
        "cluster_id": "",
    }
    theirs, ours = _decoded_both_ways(properties)
    assert ours == theirs
    assert ours["application_headers"]["timelimit"] == [None, 20.5]


@pytest.mark.parametrize("value", [*ODD_VALUES, b"\xff\xfe not utf-8"], ids=repr)
def test_a_delivered_header_value_decodes_as_py_amqp_decodes_it(value: Any) -> None:
    """Decimals, timestamps, bytes and invalid UTF-8 go to py-amqp's decoder: same result."""
    theirs, ours = _decoded_both_ways({"application_headers": {"v": value, "w": [value]}})
    assert ours == theirs
    assert type(ours["application_headers"]["v"]) is type(theirs["application_headers"]["v"])


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False)
        | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_like_header_decodes_as_py_amqp_decodes_it(value: Any) -> None:
    theirs, ours = _decoded_both_ways({"application_headers": {"v": value}})
    assert ours == theirs


def test_frames_become_the_message_py_amqp_would_deliver() -> None:
    """Method, header and two body frames in; one basic.deliver with its message out."""
    delivered: list[tuple[Any, ...]] = []

    class _Conn:
        bytes_recv = 0
        channels = None  # no channel to deliver to directly: the callback gets it

    on_frame = frame_handler(_Conn(), lambda *args: delivered.append(args))
    method = struct.pack(">HH", 60, 60) + b"\x03tag"
    header = struct.pack(">HHQ", 60, 0, 6) + encode_properties({"content_type": "a/b"})
    assert on_frame((1, 1, method)) is False
    assert on_frame((8, 0, b"")) is False  # a heartbeat between frames is fine
    assert on_frame((2, 1, header)) is False
    assert on_frame((3, 1, b"abc")) is False
    assert on_frame((3, 1, b"def")) is True
    [(channel, sig, args, message)] = delivered
    assert (channel, sig, args) == (1, (60, 60), method)
    assert message.body == b"abcdef" and message.properties == {"content_type": "a/b"}
    assert on_frame((1, 1, struct.pack(">HH", 60, 11))) is True  # basic.qos-ok: no content
    with pytest.raises(amqp.exceptions.UnexpectedFrame):
        on_frame((3, 1, b"stray body"))


@pytest.mark.parametrize(("tag", "multiple"), [(1, False), (2**40 + 7, True)])
def test_ack_frame_is_the_basic_ack_py_amqp_writes(tag: int, multiple: bool) -> None:
    args = amqp.serialization.dumps("Lb", (tag, multiple))
    payload = struct.pack(">HH", 60, 80) + args
    expected = struct.pack(">BHI", 1, 3, len(payload)) + payload + b"\xce"
    assert ack_frame(3, tag, multiple=multiple) == expected


def test_header_names_seen_before_decode_from_the_cache_which_stops_growing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer sending ever new header names cannot grow the decoder's name cache."""
    from caraway.clients import amqp_codec

    monkeypatch.setattr(amqp_codec, "_NAMES", {})
    monkeypatch.setattr(amqp_codec, "_MAX_NAMES", 8)
    for round_ in range(3):  # the first round fills the cache, the later ones read it
        headers = {f"h{i}": f"v{i}-{round_}" for i in range(20)}
        theirs, ours = _decoded_both_ways({"application_headers": headers})
        assert ours == theirs
        assert ours["application_headers"] == headers
    assert len(amqp_codec._NAMES) == 8


class _Connection:
    """What a py-amqp channel and the frame handler need of a connection."""

    def __init__(self) -> None:
        self.channels: dict[int, Any] = {}
        self.bytes_recv = 0
        self.confirm_publish = False

    def _claim_channel_id(self, channel_id: int) -> None:
        pass

    def on_inbound_method(self, channel_id: int, sig: Any, payload: bytes, content: Any) -> Any:
        return self.channels[channel_id].dispatch_method(sig, payload, content)


def _deliver_frames(tag: str, delivery_tag: int, redelivered: bool, routing_key: str) -> list[Any]:
    args = amqp.serialization.dumps("sLbss", (tag, delivery_tag, redelivered, "ex", routing_key))
    header = struct.pack(">HHQ", 60, 0, 3) + encode_properties({"content_type": "a/b"})
    return [(1, 1, struct.pack(">HH", 60, 60) + args), (2, 1, header), (3, 1, b"abc")]


def _delivered(frames: list[Any], direct: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    from caraway.clients import amqp_codec

    if not direct:
        monkeypatch.setattr(amqp_codec, "_deliver", lambda *args: False)
    connection = _Connection()
    channel = amqp.Channel(connection, 1, auto_decode=False)
    got: list[Any] = []
    channel.callbacks["ctag"] = got.append
    on_frame = frame_handler(connection, connection.on_inbound_method)
    for frame in frames:
        on_frame(frame)
    monkeypatch.undo()
    [message] = got
    return message.delivery_info, message.channel is channel, message.body, message.properties


@settings(max_examples=60, deadline=None)
@given(
    delivery_tag=st.integers(min_value=0, max_value=2**64 - 1),
    redelivered=st.booleans(),
    routing_key=st.text(max_size=40),
)
def test_a_delivery_handed_over_directly_is_what_py_amqps_dispatch_hands_over(
    delivery_tag: int, redelivered: bool, routing_key: str
) -> None:
    frames = _deliver_frames("ctag", delivery_tag, redelivered, routing_key)
    with pytest.MonkeyPatch.context() as patch:
        theirs = _delivered(frames, False, patch)
    with pytest.MonkeyPatch.context() as patch:
        ours = _delivered(frames, True, patch)
    assert ours == theirs
    assert ours[0]["delivery_tag"] == delivery_tag and ours[0]["redelivered"] is redelivered


def test_a_delivery_goes_through_py_amqps_dispatch_when_the_channel_is_not_plain() -> None:
    """A closing channel, body decoding, a one-shot waiter or another listener: py-amqp
    decides, exactly as before."""
    from caraway.clients.amqp_codec import _deliver

    for change in ("closing", "decode", "waiter", "listener", "closed connection"):
        connection = _Connection()
        channel = amqp.Channel(connection, 1, auto_decode=False)
        message = DeliveredMessage(
            frame_method=(60, 60), frame_args=_deliver_frames("t", 1, False, "k")[0][2]
        )
        if change == "closing":
            channel.is_closing = True
        elif change == "decode":
            channel.auto_decode = True
        elif change == "waiter":
            channel._pending[(60, 60)] = lambda *args: None
        elif change == "listener":
            channel._callbacks[(60, 60)] = lambda *args: None
        else:
            connection.channels = None  # type: ignore[assignment]
        assert _deliver(connection, 1, message) is False, change
    connection = _Connection()
    amqp.Channel(connection, 1, auto_decode=False)
    message = DeliveredMessage(frame_method=(60, 60), frame_args=b"\x00\x3c\x00\x3c\x05ab")
    assert _deliver(connection, 1, message) is False  # cut short: py-amqp's decoder decides
