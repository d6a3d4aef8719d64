"""The AMQP 0-9-1 content codec, py-amqp-compatible and faster: basic properties and field
tables both ways, and frames split out of received bytes.

Publishing spends most of its CPU encoding each task's ~20 headers, a RabbitMQ drain a
quarter of a child's CPU decoding them. Both directions give exactly what py-amqp gives
(the same field types, so a Celery peer reads the same values) and hand anything rarer
back to py-amqp: the encoder raises ValueError, the decoder defers to py-amqp's own.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
from amqp.basic_message import Message

_long = struct.Struct(">I").pack
_int = struct.Struct(">i").pack
_longlong = struct.Struct(">q").pack
_ulonglong = struct.Struct(">Q").pack
_double = struct.Struct(">d").pack
_INT_MAX = 2147483647

#: basic properties in flag order (AMQP 0-9-1 s1.8.2), with how each is encoded
SHORTSTR, TABLE, OCTET, TIMESTAMP = range(4)
PROPERTY_NAMES = (
    ("content_type", SHORTSTR),
    ("content_encoding", SHORTSTR),
    ("application_headers", TABLE),
    ("delivery_mode", OCTET),
    ("priority", OCTET),
    ("correlation_id", SHORTSTR),
    ("reply_to", SHORTSTR),
    ("expiration", SHORTSTR),
    ("message_id", SHORTSTR),
    ("timestamp", TIMESTAMP),
    ("type", SHORTSTR),
    ("user_id", SHORTSTR),
    ("app_id", SHORTSTR),
    ("cluster_id", SHORTSTR),
)


# -- encoding (publishing) ----------------------------------------------------------------
#
# Field types as py-amqp picks them: str/bytes ``S``, bool ``t``, float ``d``, int ``I`` or
# ``L`` beyond +-2**31-1, Decimal ``D``, datetime ``T``, dict ``F``, list/tuple ``A``, None
# ``V``. A value of another type raises ValueError; the caller then lets py-amqp encode the
# message (and raise its own error).


def encode_properties(properties: Mapping[str, Any]) -> bytes:
    """Property flags and list of a content header; None values are absent."""
    flags = 0
    parts: list[bytes] = []
    bit = 1 << 15
    for name, kind in PROPERTY_NAMES:
        value = properties.get(name)
        if value is not None:
            flags |= bit
            if kind == SHORTSTR:
                parts.append(_shortstr(value))
            elif kind == TABLE:
                parts.append(table(value))
            elif kind == OCTET:
                parts.append(bytes((value,)))
            else:
                parts.append(_ulonglong(value))
        bit >>= 1
    return struct.pack(">H", flags) + b"".join(parts)


def _shortstr(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {raw[:40]!r}...")
    return bytes((len(raw),)) + raw


def table(values: Mapping[str, Any]) -> bytes:
    """A field table: long size, then name (short string), type tag and value per field."""
    parts: list[bytes] = []
    for key, value in values.items():
        name = _KEYS.get(key)
        if name is None:
            name = _shortstr(key)
            if len(_KEYS) < 1024 and type(key) is str:  # header names repeat: keep them
                _KEYS[key] = name
        parts.append(name)
        parts.append(_item(value))
    data = b"".join(parts)
    return _long(len(data)) + data


#: encoded field names seen so far (a task message's ~25 header names, over and over)
_KEYS: dict[str, bytes] = {}


def _array(values: Sequence[Any]) -> bytes:
    data = b"".join([_item(value) for value in values])
    return _long(len(data)) + data


def _item(value: Any) -> bytes:
    # exact types first (what task headers hold), then py-amqp's checks in its order
    kind = type(value)
    if kind is str:
        raw: bytes = value.encode("utf-8", "surrogatepass")
        return b"S" + _long(len(raw)) + raw
    if value is None:
        return b"V"
    if kind is int:
        if -_INT_MAX <= value <= _INT_MAX:
            return b"I" + _int(value)
        return b"L" + _longlong(value)
    encode = _EXACT.get(kind)
    if encode is not None:
        return encode(value)
    return _item_by_isinstance(value)


def _item_by_isinstance(value: Any) -> bytes:
    if isinstance(value, str | bytes):
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        return b"S" + _long(len(raw)) + raw
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, float):
        return b"d" + _double(value)
    if isinstance(value, int):
        value = int(value)
        return _item(value)
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            raise ValueError(f"cannot send {value!r} in an AMQP header")
        number = 0
        for digit in digits:
            number = number * 10 + digit
        return b"D" + struct.pack(">Bi", -exponent, -number if sign else number)
    if isinstance(value, datetime):
        return b"T" + _ulonglong(int(calendar.timegm(value.utctimetuple())))
    if isinstance(value, dict):
        return b"F" + table(value)
    if isinstance(value, list | tuple):
        return b"A" + _array(value)
    raise ValueError(f"cannot send a {type(value).__name__} in an AMQP header")


_EXACT: dict[type, Callable[[Any], bytes]] = {
    bool: lambda value: b"t\x01" if value else b"t\x00",
    float: lambda value: b"d" + _double(value),
    dict: lambda value: b"F" + table(value),
    list: lambda value: b"A" + _array(value),
    tuple: lambda value: b"A" + _array(value),
    bytes: lambda value: b"S" + _long(len(value)) + value,
}


# -- decoding (deliveries) -----------------------------------------------------------------
#
# A Celery task message carries ~25 headers in its content header's field table; py-amqp
# decodes each value with a function call and an ``isinstance``. :func:`frame_handler` is
# py-amqp's ``frame_handler`` hook: it assembles method, content header and body frames into
# messages (AMQP 0-9-1 s4.2.6) whose properties :func:`decode_properties` decodes, returning
# exactly what py-amqp would (str for long strings, bool, None, nested dicts and lists, ints)
# and leaving decimals, timestamps, bytes, invalid UTF-8... to py-amqp's own decoder.

_read_ushort = struct.Struct(">H").unpack_from
_read_ulong = struct.Struct(">I").unpack_from
_read_long = struct.Struct(">i").unpack_from
_read_longlong = struct.Struct(">q").unpack_from
_read_ulonglong = struct.Struct(">Q").unpack_from
_read_double = struct.Struct(">d").unpack_from
_read_method = struct.Struct(">HH").unpack_from

#: basic.return, basic.deliver, basic.get-ok: a content header and body frames follow
_CONTENT_METHODS = frozenset({(60, 50), (60, 60), (60, 71)})
_HEARTBEAT = 8


class _Rare(Exception):
    """A value this decoder leaves to py-amqp."""


def decode_properties(buf: bytes, offset: int) -> dict[str, Any]:
    """The basic class's property list at ``offset`` (after class id, weight, body size)."""
    (flags,) = _read_ushort(buf, offset)
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
                (size,) = _read_ulong(buf, offset)
                properties[name] = _decode_table(buf, offset + 4, offset + 4 + size)
                offset += 4 + size
            elif kind == TIMESTAMP:
                (properties[name],) = _read_ulonglong(buf, offset)
                offset += 8
            else:  # an octet
                properties[name] = buf[offset]
                offset += 1
        bit >>= 1
    return properties


#: header names decoded before: a worker sees the same few dozen in every message
_NAMES: dict[bytes, str] = {}
#: a peer sending ever new names fills the cache no further
_MAX_NAMES = 4096


def _decode_table(buf: bytes, offset: int, end: int) -> dict[str, Any]:
    # A Celery message's ~20 headers are mostly short strings, voids, small ints and
    # booleans: those are read here without a call per value (a third of the time);
    # anything else goes through _decode_value, which decides.
    values: dict[str, Any] = {}
    while offset < end:
        size = buf[offset]
        offset += 1 + size
        raw = buf[offset - size : offset]
        key = _NAMES.get(raw)
        if key is None:
            key = raw.decode("utf-8", "surrogatepass")
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[raw] = key
        kind = buf[offset]
        if kind == 83:  # 'S' long string
            (size,) = _read_ulong(buf, offset + 1)
            offset += 5 + size
            try:
                values[key] = buf[offset - size : offset].decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise _Rare from None  # py-amqp keeps such a value as bytes
        elif kind == 86:  # 'V' void
            values[key] = None
            offset += 1
        elif kind == 73:  # 'I' signed 32-bit
            (values[key],) = _read_long(buf, offset + 1)
            offset += 5
        elif kind == 116:  # 't' boolean
            values[key] = buf[offset + 1] != 0
            offset += 2
        else:
            values[key], offset = _decode_value(buf, offset)
    return values


def _decode_value(buf: bytes, offset: int) -> tuple[Any, int]:
    kind = buf[offset]
    offset += 1
    if kind == 83:  # 'S' long string
        (size,) = _read_ulong(buf, offset)
        start = offset + 4
        try:
            return buf[start : start + size].decode("utf-8", "surrogatepass"), start + size
        except UnicodeDecodeError:
            raise _Rare from None  # py-amqp keeps such a value as bytes
    if kind == 86:  # 'V' void
        return None, offset
    if kind == 73:  # 'I' signed 32-bit
        return _read_long(buf, offset)[0], offset + 4
    if kind == 116:  # 't' boolean
        return buf[offset] != 0, offset + 1
    if kind == 65:  # 'A' array
        (size,) = _read_ulong(buf, offset)
        offset += 4
        end = offset + size
        items = []
        while offset < end:
            item, offset = _decode_value(buf, offset)
            items.append(item)
        return items, offset
    if kind == 70:  # 'F' table
        (size,) = _read_ulong(buf, offset)
        return _decode_table(buf, offset + 4, offset + 4 + size), offset + 4 + size
    if kind in {76, 108}:  # 'L', 'l': signed 64-bit, as py-amqp reads both
        return _read_longlong(buf, offset)[0], offset + 8
    if kind == 100:  # 'd' double
        return _read_double(buf, offset)[0], offset + 8
    raise _Rare


class DeliveredMessage(Message):  # type: ignore[misc]  # py-amqp is untyped
    """py-amqp's message, with the basic properties decoded by :func:`decode_properties`."""

    def _load_properties(self, class_id: int, buf: bytes, offset: int) -> int:
        if class_id == 60:
            try:
                self.properties = decode_properties(buf, offset)
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
            method = _read_method(buf, 0)
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
        if message.frame_method != _DELIVER or not _deliver(connection, channel, message):
            callback(channel, message.frame_method, message.frame_args, message)
        return True

    return on_frame


_DELIVER = (60, 60)


def _deliver(connection: Any, channel_id: int, message: DeliveredMessage) -> bool:
    """Hand a ``basic.deliver`` to its channel's consumer as py-amqp's dispatch would,
    without it; False leaves the message to py-amqp's dispatch (which decides).

    py-amqp reads every method's arguments with its general decoder and looks its
    listeners up per message: a tenth of a child's CPU in a RabbitMQ drain went there.
    Taken only in the state py-amqp itself would call ``_on_basic_deliver`` at once: an
    open channel, the stock listener, no one-shot waiter, no body decoding.
    """
    channels = connection.channels
    channel = channels.get(channel_id) if channels is not None else None
    if (
        channel is None
        or channel.is_closing
        or channel.auto_decode
        or _DELIVER in channel._pending
        or channel._callbacks.get(_DELIVER) != channel._on_basic_deliver
    ):
        return False
    try:
        tag, delivery_tag, redelivered, exchange, routing_key = _deliver_arguments(
            message.frame_args
        )
    except (IndexError, struct.error, UnicodeDecodeError):
        return False  # py-amqp's decoder raises its own error for it
    channel._on_basic_deliver(tag, delivery_tag, redelivered, exchange, routing_key, message)
    return True


def _deliver_arguments(buf: bytes) -> tuple[str, int, bool, str, str]:
    """``basic.deliver``'s consumer tag, delivery tag, redelivered, exchange and routing
    key (AMQP 0-9-1 s1.8.3.9: shortstr, longlong, bit, shortstr, shortstr), after the
    method's class and method ids, decoded as py-amqp decodes them."""
    size = buf[4]
    offset = 5 + size
    tag = buf[5:offset].decode("utf-8", "surrogatepass")
    (delivery_tag,) = _read_ulonglong(buf, offset)
    redelivered = (buf[offset + 8] & 1) == 1
    offset += 9
    size = buf[offset]
    exchange = buf[offset + 1 : offset + 1 + size].decode("utf-8", "surrogatepass")
    offset += 1 + size
    size = buf[offset]
    if offset + 1 + size > len(buf):
        raise IndexError("basic.deliver arguments cut short")
    routing_key = buf[offset + 1 : offset + 1 + size].decode("utf-8", "surrogatepass")
    return tag, delivery_tag, redelivered, exchange, routing_key


# -- frames -------------------------------------------------------------------------------

_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = 0xCE

Frame = tuple[int, int, bytes]


class FrameError(ValueError):
    """A frame did not end with the frame-end octet: the stream is out of step."""


def split_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of ``data`` as (type, channel, payload), and the bytes
    of an incomplete last frame, to be completed by the next read (AMQP 0-9-1 s4.2.3)."""
    frames: list[Frame] = []
    offset, size_of_data = 0, len(data)
    while size_of_data - offset >= 8:
        frame_type, channel, size = _FRAME_HEADER.unpack_from(data, offset)
        end = offset + 7 + size
        if end >= size_of_data:
            break
        if data[end] != _FRAME_END:
            raise FrameError(f"frame of type {frame_type} does not end with 0xCE")
        frames.append((frame_type, channel, data[offset + 7 : end]))
        offset = end + 1
    return frames, data[offset:]
