"""Decode delivered AMQP 0-9-1 messages faster than py-amqp, with the same results.

A Celery task message carries ~25 headers in its content header's field table; py-amqp
decodes them with a function call and an ``isinstance`` per value, a quarter of a worker
child's CPU in a RabbitMQ drain. :func:`frame_handler` is py-amqp's ``frame_handler``
hook: it assembles method, content header and body frames into messages (AMQP 0-9-1
s4.2.6) whose properties :func:`basic_properties` decodes. It returns exactly what py-amqp
would (str for long strings, bool, None, nested dicts and lists, ints), and hands anything
rarer (decimals, timestamps, bytes, invalid UTF-8...) back to py-amqp's own decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import amqp
from amqp.basic_message import Message

from caraway.transports._amqp_wire import PROPERTY_NAMES, SHORTSTR, TABLE, TIMESTAMP

_ushort = struct.Struct(">H").unpack_from
_ulong = struct.Struct(">I").unpack_from
_long = struct.Struct(">i").unpack_from
_longlong = struct.Struct(">q").unpack_from
_ulonglong = struct.Struct(">Q").unpack_from
_double = struct.Struct(">d").unpack_from
_method = struct.Struct(">HH").unpack_from

#: basic.return, basic.deliver, basic.get-ok: a content header and body frames follow
_CONTENT_METHODS = frozenset({(60, 50), (60, 60), (60, 71)})
_HEARTBEAT = 8


class _Rare(Exception):
    """A value this decoder leaves to py-amqp."""


def basic_properties(buf: bytes, offset: int) -> dict[str, Any]:
    """The basic class's property list at ``offset`` (after class id, weight, body size)."""
    (flags,) = _ushort(buf, offset)
    offset += 2
    properties: dict[str, Any] = {}
    bit = 1 << 15
    for name, kind in PROPERTY_NAMES:
        if flags & bit:
            if kind == SHORTSTR:
                size = buf[offset]
                properties[name] = buf[offset + 1 : offset + 1 + size].decode(
                    "utf-8", "surrogatepass"
                )
                offset += 1 + size
            elif kind == TABLE:
                (size,) = _ulong(buf, offset)
                properties[name] = _table(buf, offset + 4, offset + 4 + size)
                offset += 4 + size
            elif kind == TIMESTAMP:
                (properties[name],) = _ulonglong(buf, offset)
                offset += 8
            else:  # an octet
                properties[name] = buf[offset]
                offset += 1
        bit >>= 1
    return properties


def _table(buf: bytes, offset: int, end: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    while offset < end:
        size = buf[offset]
        key = buf[offset + 1 : offset + 1 + size].decode("utf-8", "surrogatepass")
        values[key], offset = _value(buf, offset + 1 + size)
    return values


def _value(buf: bytes, offset: int) -> tuple[Any, int]:
    kind = buf[offset]
    offset += 1
    if kind == 83:  # 'S' long string
        (size,) = _ulong(buf, offset)
        start = offset + 4
        try:
            return buf[start : start + size].decode("utf-8", "surrogatepass"), start + size
        except UnicodeDecodeError:
            raise _Rare from None  # py-amqp keeps such a value as bytes
    if kind == 86:  # 'V' void
        return None, offset
    if kind == 73:  # 'I' signed 32-bit
        return _long(buf, offset)[0], offset + 4
    if kind == 116:  # 't' boolean
        return buf[offset] != 0, offset + 1
    if kind == 65:  # 'A' array
        (size,) = _ulong(buf, offset)
        offset += 4
        end = offset + size
        items = []
        while offset < end:
            item, offset = _value(buf, offset)
            items.append(item)
        return items, offset
    if kind == 70:  # 'F' table
        (size,) = _ulong(buf, offset)
        return _table(buf, offset + 4, offset + 4 + size), offset + 4 + size
    if kind in {76, 108}:  # 'L', 'l': signed 64-bit, as py-amqp reads both
        return _longlong(buf, offset)[0], offset + 8
    if kind == 100:  # 'd' double
        return _double(buf, offset)[0], offset + 8
    raise _Rare


class DeliveredMessage(Message):  # type: ignore[misc]  # py-amqp is untyped
    """py-amqp's message, with the basic properties decoded by :func:`basic_properties`."""

    def _load_properties(self, class_id: int, buf: bytes, offset: int) -> int:
        if class_id == 60:
            try:
                self.properties = basic_properties(buf, offset)
                return offset  # py-amqp's callers do not use what this returns
            except (_Rare, IndexError, struct.error, UnicodeDecodeError):
                pass  # py-amqp decodes it, or raises its own error for a malformed one
        result: int = super()._load_properties(class_id, buf, offset)
        return result


OnFrame = Callable[[tuple[int, int, bytes]], bool]


def frame_handler(connection: Any, callback: Callable[..., Any]) -> OnFrame:
    """py-amqp's ``frame_handler`` hook: frames in, methods (with their message) out."""
    expected: dict[int, int] = {}
    partial: dict[int, DeliveredMessage] = {}

    def on_frame(frame: tuple[int, int, bytes]) -> bool:
        frame_type, channel, buf = frame
        connection.bytes_recv += 1  # what py-amqp's heartbeat check counts
        if frame_type == _HEARTBEAT:
            return False
        want = expected.get(channel, 1)
        if frame_type != want:
            raise amqp.exceptions.UnexpectedFrame(
                f"Received frame {frame_type} while expecting type: {want}"
            )
        if frame_type == 1:
            method = _method(buf, 0)
            if method in _CONTENT_METHODS:
                partial[channel] = DeliveredMessage(frame_method=method, frame_args=buf)
                expected[channel] = 2
                return False
            callback(channel, method, buf, None)
            return True
        message = partial[channel]
        if frame_type == 2:
            message.inbound_header(buf)
        else:
            message.inbound_body(buf)
        if not message.ready:
            expected[channel] = 3
            return False
        expected[channel] = 1
        del partial[channel]
        callback(channel, message.frame_method, message.frame_args, message)
        return True

    return on_frame
