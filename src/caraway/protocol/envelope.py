"""kombu's JSON envelope: how one message sits in a Redis list (docs/design/protocol.md §2.1).

The envelope is one JSON object: base64 body, hyphenated ``content-type``/
``content-encoding``, task headers, and properties that also carry ``delivery_info``,
``body_encoding`` and the publisher-chosen ``delivery_tag`` that kombu uses as the key in
its ``unacked`` hash, so the tag must be unique per message (a UUID4).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from caraway.exceptions import ProtocolError
from caraway.protocol.message import MAX_IDENT, MAX_NESTING, Message, check_nesting
from caraway.protocol.serializers import (
    dumps_json,
    loads_json_plain,
    loads_json_usual,
    untag,
)

#: properties that belong to the envelope, not to the message (AMQP basic properties)
_ENVELOPE_PROPERTIES = frozenset({"delivery_info", "body_encoding", "delivery_tag", "priority"})


@dataclass(slots=True)
class Unpacked:
    """A message read from an envelope, with where it was published and its tag."""

    message: Message
    exchange: str
    routing_key: str
    delivery_tag: str
    redelivered: bool = False


def pack(
    message: Message, *, exchange: str, routing_key: str, delivery_tag: str, priority: int = 0
) -> bytes:
    """Wrap ``message`` in the envelope kombu 5.7 publishes and consumes.

    ``priority`` is what the envelope records (the transport picks the list by it); a
    ``priority`` in ``message.properties`` is replaced by it.
    """
    tail = _tail(message, exchange, routing_key, delivery_tag, priority)
    # The body goes first, as kombu writes it, spliced in as bytes: base64 needs no JSON
    # escaping, so the encoder never scans (or copies into a str) the largest field.
    body = binascii.b2a_base64(message.body, newline=False)
    return b"".join((b'{"body":"', body, b'",', memoryview(tail)[1:]))


def _tail(
    message: Message, exchange: str, routing_key: str, delivery_tag: str, priority: int
) -> bytes:
    """The envelope without its body: a JSON object of everything else, as pack() writes it."""
    properties: dict[str, Any] = {
        key: value for key, value in message.properties.items() if key not in _ENVELOPE_PROPERTIES
    }
    # Key order as kombu writes it (vectors/redis-*.json); consumers do not care.
    properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    properties["priority"] = priority
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = delivery_tag
    rest = {
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": properties,
    }
    # only the message's headers and properties can hold uuid.UUID objects (to be tagged)
    return dumps_json(rest, uuids_only_in=(message.headers, properties))


class Template:
    """:func:`pack`'s bytes for messages that differ only in their body and a few strings.

    Made once from a message whose varying strings (ids, reprs...) are unique markers,
    packed as :func:`pack` packs it; :meth:`fill` puts each call's values where the
    markers were. So a publisher sending many such messages (every plain ``delay()`` of
    one task) encodes only what changes, and its bytes are pack()'s by construction.
    """

    __slots__ = ("_parts", "_slots")

    def __init__(
        self,
        message: Message,
        *,
        exchange: str,
        routing_key: str,
        priority: int,
        delivery_tag: str,
        holes: dict[str, str],
    ) -> None:
        """``holes`` maps each hole's name to its marker: a string JSON writes as it is
        (letters, digits, dashes, colons) found nowhere else, placed in ``message`` (or
        passed as ``delivery_tag``). ValueError when a marker is not in the packed bytes."""
        tail = _tail(message, exchange, routing_key, delivery_tag, priority)
        parts: list[bytes] = [b'{"body":"', b"", b'",']
        slots: list[tuple[int, str]] = []
        rest = tail[1:]
        while True:
            found = [(rest.find(mark.encode()), name, mark) for name, mark in holes.items()]
            found = [item for item in found if item[0] >= 0]
            if not found:
                break
            start, name, mark = min(found)
            parts[-1] += rest[:start]
            slots.append((len(parts), name))
            parts += [b"", b""]
            rest = rest[start + len(mark) :]
        parts[-1] += rest
        if {name for _, name in slots} != set(holes):
            raise ValueError(f"markers not found in the envelope: {holes}")
        self._parts = parts
        self._slots = tuple(slots)

    def fill(self, body: bytes, values: dict[str, bytes]) -> bytes:
        """The envelope of ``body`` with ``values`` in the holes: each a JSON string's
        content, escaped (:func:`json_text`)."""
        parts = self._parts.copy()
        parts[1] = binascii.b2a_base64(body, newline=False)
        for index, name in self._slots:
            parts[index] = values[name]
        return b"".join(parts)


def json_text(value: str) -> bytes:
    """``value`` as it sits between the quotes of a JSON string in an envelope.

    ValueError for a string with lone surrogates: :func:`pack` then writes the whole
    envelope in ASCII escapes, which no template's fixed bytes are."""
    try:
        return orjson.dumps(value)[1:-1]
    except orjson.JSONEncodeError:
        raise ValueError(f"{value!r:.100} cannot be written as UTF-8 JSON") from None


def _parse(raw: bytes | str) -> dict[str, Any]:
    check_nesting(raw.encode("utf-8") if isinstance(raw, str) else raw)
    envelope = loads_json_plain(raw)
    if not isinstance(envelope, dict):
        raise ProtocolError(f"envelope must be a JSON object, got {type(envelope).__name__}")
    return envelope


def _body(envelope: dict[str, Any], properties: dict[str, Any]) -> bytes:
    body = envelope.get("body")
    if not isinstance(body, str):
        raise ProtocolError(f"envelope body must be a string, got {type(body).__name__}")
    encoding = properties.get("body_encoding")
    if encoding is None:
        # kombu uses the string as it is when no body_encoding is given.
        return body.encode("utf-8")
    if encoding != "base64":
        raise ProtocolError(f"unsupported envelope body_encoding {encoding!r}")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"envelope body is not valid base64: {exc}") from exc


def _has_tags(raw: bytes | str) -> bool:
    return b"__type__" in raw if isinstance(raw, bytes) else "__type__" in raw


def unpack(raw: bytes | str) -> Unpacked:
    """Read an envelope written by kombu or :func:`pack`. ProtocolError if malformed.

    kombu's ``redelivered`` flag (set when it restores an unacked message) is reported
    on :class:`Unpacked` and removed from the headers, so it does not travel on with a
    retried or forwarded task. The bytes are untrusted: whatever is wrong with them
    (types, tags, nesting) raises ProtocolError and nothing else.
    """
    try:
        return _unpack(raw)
    except ProtocolError:
        raise
    except RecursionError as exc:
        raise ProtocolError("envelope nested too deeply to read") from exc
    except Exception as exc:  # a shape no check above foresaw: still the message's fault
        raise ProtocolError(f"malformed envelope ({type(exc).__name__}: {exc})") from exc


def _text(envelope: dict[str, Any], key: str, default: str) -> str:
    value = envelope.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ProtocolError(f"envelope {key!r} must be a string, got {value!r:.100}")
    return value


if sys.version_info >= (3, 11):

    def _strict_base64(data: memoryview) -> bytes:
        """The alphabet and final padding only, checked while decoding: one pass."""
        return binascii.a2b_base64(data, strict_mode=True)

else:  # 3.10 has no strict mode: what base64.b64decode(validate=True) does
    _BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")

    def _strict_base64(data: memoryview) -> bytes:
        if _BASE64.fullmatch(data) is None:
            raise binascii.Error("not base64")
        return binascii.a2b_base64(data)


#: how an envelope starts when its body is its first field, and where the body starts:
#: :func:`pack` writes the first, kombu (``json.dumps``) the second
_BODY_FIRST = ((b'{"body":"', 9), (b'{"body": "', 10))


def _parse_around_body(raw: bytes) -> tuple[dict[str, Any], bytes, bytes] | None:
    """Parse an envelope without passing over its base64 body more than once.

    The body is most of the bytes of a large task; every check (nesting, long numbers,
    tags) and the JSON parse run on the rest of the envelope with the body cut out, and
    the body is decoded from its slice of ``raw``. Returns ``(envelope, rest, body)``, or
    None when the envelope is not of the usual shape (body first, base64, no escapes,
    one body): :func:`_unpack` then reads it the long way, which decides what it means.
    """
    for prefix, body_start in _BODY_FIRST:
        if raw.startswith(prefix):
            start = body_start
            break
    else:
        return None
    end = raw.find(b'"', start)
    if end < 0 or raw[end - 1] == 0x5C:  # an escaped quote: not base64, not this way
        return None
    rest = raw[:start] + raw[end:]  # the body replaced by ""
    # what _parse accepts, in one pass over the bytes; anything it would look at more
    # closely (deep, long numbers, not orjson's JSON) goes the long way
    envelope = loads_json_usual(rest, MAX_NESTING)
    if type(envelope) is not dict:
        return None
    properties = envelope.get("properties")
    if envelope.get("body") != "" or not isinstance(properties, dict):
        return None  # another "body" key later, or no properties: the long way decides
    if properties.get("body_encoding") != "base64":
        return None
    try:
        # strict: only the alphabet and final padding, which needs no JSON unescaping and
        # decodes as base64.b64decode(validate=True) would; anything else goes the long way
        body = _strict_base64(memoryview(raw)[start:end])
    except binascii.Error:
        return None
    return envelope, rest, body


def _unpack_usual(envelope: dict[str, Any], scanned: bytes, body: bytes) -> Unpacked | None:
    """What :func:`_unpack` makes of a split envelope of the usual shape, or None.

    Usual: every field there with its exact type (strings non-empty, the tag at most
    MAX_IDENT characters), no tags, not redelivered. Those read without a call each; for
    anything else :func:`_unpack` goes on its long way, which decides what it means.
    """
    properties = envelope["properties"]  # a dict: _parse_around_body checked
    if not (
        "headers" in envelope
        and "content-type" in envelope
        and "content-encoding" in envelope
        and "delivery_tag" in properties
        and "delivery_info" in properties
    ):
        return None
    headers, tag, info = (
        envelope["headers"],
        properties["delivery_tag"],
        properties["delivery_info"],
    )
    content_type, content_encoding = envelope["content-type"], envelope["content-encoding"]
    if (
        type(headers) is not dict
        or type(info) is not dict
        or type(tag) is not str
        or not tag
        or tag[MAX_IDENT:]  # longer than MAX_IDENT, without a call to len
        or type(content_type) is not str
        or not content_type
        or type(content_encoding) is not str
        or not content_encoding
        or "redelivered" in headers
        or "redelivered" in info
        or "exchange" not in info
        or "routing_key" not in info
        or b"__type__" in scanned
    ):
        return None
    exchange, routing_key = info["exchange"], info["routing_key"]
    if type(exchange) is not str or type(routing_key) is not str:
        return None
    message_properties: dict[str, Any] = {}
    for key, value in properties.items():
        if key not in _ENVELOPE_PROPERTIES:
            message_properties[key] = value
    if "priority" in properties:
        message_properties["priority"] = properties["priority"]
    message = Message(body, headers, content_type, content_encoding, message_properties)
    return Unpacked(message, exchange, routing_key, tag)


def _unpack(raw: bytes | str) -> Unpacked:
    split = _parse_around_body(raw) if isinstance(raw, bytes) else None
    if split is not None:
        usual = _unpack_usual(*split)
        if usual is not None:
            return usual
    scanned: bytes | str = raw
    body: bytes | None = None
    if split is None:
        envelope = _parse(raw)
    else:
        envelope, scanned, body = split
    properties = envelope.get("properties")
    properties = {} if properties is None else properties
    headers = envelope.get("headers")
    headers = {} if headers is None else headers
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise ProtocolError("envelope headers and properties must be JSON objects")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag or len(tag) > MAX_IDENT:
        raise ProtocolError(f"envelope has no usable delivery_tag: {tag!r:.100}")
    info = properties.get("delivery_info") or {}
    if not isinstance(info, dict):
        raise ProtocolError(f"envelope delivery_info must be a JSON object, got {info!r:.100}")
    redelivered = bool(headers.pop("redelivered", False) or info.get("redelivered", False))
    message = Message(
        body=_body(envelope, properties) if body is None else body,
        headers=untag(headers) if _has_tags(scanned) else headers,
        content_type=_text(envelope, "content-type", "application/json"),
        content_encoding=_text(envelope, "content-encoding", "utf-8"),
        properties={k: v for k, v in properties.items() if k not in _ENVELOPE_PROPERTIES},
    )
    if "priority" in properties:
        message.properties["priority"] = properties["priority"]
    return Unpacked(
        message=message,
        exchange=str(info.get("exchange") or ""),
        routing_key=str(info.get("routing_key") or ""),
        delivery_tag=tag,
        redelivered=redelivered,
    )


def unpack_all(raws: Iterable[bytes | str]) -> tuple[list[Message], list[str]]:
    """The messages of the envelopes ``raws`` that unpack, and why each other did not.

    For batch reads (a mailbox's pending requests): one bad envelope costs only itself.
    """
    messages: list[Message] = []
    errors: list[str] = []
    for raw in raws:
        try:
            messages.append(unpack(raw).message)
        except ProtocolError as exc:
            errors.append(str(exc))
    return messages, errors


def mark_redelivered(raw: bytes | str) -> bytes:
    """Return the envelope with ``redelivered: true`` in headers and delivery_info.

    That is what kombu writes when it restores an unacked message to its queue.
    """
    envelope = _parse(raw)
    headers = envelope.setdefault("headers", {})
    properties = envelope.setdefault("properties", {})
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise ProtocolError("envelope headers and properties must be JSON objects")
    headers["redelivered"] = True
    info = properties.setdefault("delivery_info", {})
    if not isinstance(info, dict):
        raise ProtocolError("envelope delivery_info must be a JSON object")
    info["redelivered"] = True
    return dumps_json(envelope)
