"""Body serializers: json (with kombu's type tags), msgpack and yaml if installed, pickle;
and body compression as kombu does it (the ``compression`` header).

JSON is the hot path: orjson encodes, and values JSON cannot hold become kombu's
``{"__type__", "__value__"}`` tags (protocol.md §1.5); inf/nan become null (kombu: NaN).
Decoding checks the content type against ``accept`` first: nothing outside it is parsed.
A compressed body names its method's content type in the ``compression`` header. The
``auth`` serializer (signed bodies) is whatever :func:`use_signing` registered
(``caraway.protocol.auth``, set up by ``app.setup_security()``).
"""

from __future__ import annotations

import base64
import enum
import importlib
import json
import pickle
import re
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from types import ModuleType
from typing import Any, Protocol

import orjson

from caraway.exceptions import (
    ContentDisallowed,
    ImproperlyConfigured,
    ProtocolError,
    SecurityError,
    SerializationError,
)

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"
YAML = "application/x-yaml"
AUTH = "application/data"

#: short name -> (content type, content encoding), as kombu registers them
SERIALIZERS: dict[str, tuple[str, str]] = {
    "json": (JSON, "utf-8"),
    "msgpack": (MSGPACK, "binary"),
    "pickle": (PICKLE, "binary"),
    "yaml": (YAML, "utf-8"),
    "auth": (AUTH, "utf-8"),
}
_NAME_BY_TYPE = {content_type: name for name, (content_type, _) in SERIALIZERS.items()}
_DEFAULT_ACCEPT = frozenset({JSON})

_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson writes uuid.UUID natively as a plain string and has no passthrough for it, so
# after the fast encode we look for UUID-shaped strings; only then is the value walked.
_UUID_TEXT = re.compile(rb'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"')
# orjson reads integers beyond 64 bits as floats; the stdlib keeps them exact, so a run
# of 19+ digits (2**63 has 19) sends the text to the stdlib (see _has_long_number).
_HINT = "pass plain data or add 'pickle' to accept_content and use serializer='pickle'"


def _tag(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _encode_bytes(value: bytes) -> dict[str, Any]:
    try:
        return _tag("bytes", value.decode("utf-8"))
    except UnicodeDecodeError:
        return _tag("base64", base64.b64encode(value).decode("ascii"))


def _default(value: Any) -> Any:
    """Turn a non-JSON value into kombu's tag; called by both JSON encoders."""
    # datetime before date: a datetime is a date too.
    if isinstance(value, datetime):
        return _tag("datetime", value.isoformat())
    if isinstance(value, date):
        return _tag("date", value.isoformat())
    if isinstance(value, time):
        return _tag("time", value.isoformat())
    if isinstance(value, Decimal):
        return _tag("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _tag("uuid", {"hex": value.hex})
    if isinstance(value, (bytes, bytearray)):
        return _encode_bytes(bytes(value))
    reducer = getattr(value, "__json__", None)
    if callable(reducer):
        return reducer()
    if isinstance(value, enum.Enum):
        # orjson's fast path writes enums by value; keep the slow path consistent.
        return value.value
    raise SerializationError(
        f"object of type {type(value).__qualname__!r} is not JSON serializable; {_HINT}"
    )


_SLOW_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"))


def _has_uuid(value: Any) -> bool:
    # Iterative and type-exact for plain leaves: this runs on every message that carries
    # a UUID-shaped string (task ids in canvas options), so it must stay cheap.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)  # exact types first: no isinstance() call for the usual shapes
        if kind is dict:
            children: Iterable[Any] = item.values()
        elif kind is list or kind is tuple:
            children = item
        elif isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        elif isinstance(item, uuid.UUID):
            return True
        else:
            continue
        for child in children:  # a loop, not a list comprehension: no call per container
            if type(child) not in _LEAVES:
                stack.append(child)
    return False


#: types that are never a UUID and hold nothing (checked by exact type: a subclass of str
#: could still be anything)
_LEAVES = frozenset({str, int, bool, float, type(None)})


def _slow_dumps(value: Any) -> bytes:
    """Encode with the stdlib: big integers, non-string keys and UUIDs get here."""
    try:
        return _SLOW_ENCODER.encode(value).encode("utf-8")
    except SerializationError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value is not JSON serializable ({exc}); {_HINT}") from exc


def dumps_json(value: Any, *, uuids_only_in: tuple[Any, ...] | None = None) -> bytes:
    """Encode ``value`` as JSON bytes with kombu's type tags (the default body format).

    ``uuids_only_in``: the parts of ``value`` that may hold ``uuid.UUID`` objects, when the
    caller knows the rest holds none (an envelope around task headers: its own ids are
    strings, which the text search would find in every message and walk it for nothing).
    """
    try:
        data = orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, SerializationError):
            raise exc.__cause__ from None
        return _slow_dumps(value)
    if uuids_only_in is not None:
        return _slow_dumps(value) if _has_uuid(uuids_only_in) else data
    if _UUID_TEXT.search(data) is not None and _has_uuid(value):
        return _slow_dumps(value)
    return data


def _decode_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, dict):
        return uuid.UUID(hex=value["hex"])
    return uuid.UUID(value)


_TAG_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": _decode_uuid,
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value, validate=True),
}


def _decode_tag(tagged: dict[str, Any]) -> Any:
    kind = tagged["__type__"]
    if not isinstance(kind, str):  # kombu fails to look such a tag up too
        raise ProtocolError(f"JSON tag {kind!r:.100} does not name a type")
    decoder = _TAG_DECODERS.get(kind)
    if decoder is None:
        # An unknown tag is left as data: a newer peer may know types we do not.
        return tagged
    try:
        return decoder(tagged["__value__"])
    except Exception as exc:  # each decoder fails its own way on a hostile value
        raise ProtocolError(
            f"bad {kind!r} value in JSON tag ({type(exc).__name__}: {exc})"
        ) from exc


def untag(value: Any) -> Any:
    """Replace kombu type tags in freshly parsed JSON by their values (in place)."""
    kind = type(value)
    if kind is dict:
        if len(value) == 2 and "__type__" in value and "__value__" in value:
            return _decode_tag(value)
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                value[key] = untag(item)
    elif kind is list:
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                value[index] = untag(item)
    return value


# Every digit becomes "0", so a run of 19 digits is a run of 19 zeros: translate and a
# substring test run in C, about ten times faster than the regex on a 1 KB envelope.
_DIGITS_AS_ZERO = bytes(b"0"[0] if 48 <= i <= 57 else i for i in range(256))
_DIGITS_AS_ZERO_TEXT = str.maketrans(dict.fromkeys("0123456789", "0"))
_NINETEEN_ZEROS = "0" * 19
_NINETEEN_ZERO_BYTES = b"0" * 19
#: and with "{" as "[" too, so that one count says how many brackets open
_DIGITS_AS_ZERO_OPENS_AS_BRACKET = _DIGITS_AS_ZERO.replace(b"{", b"[")


def _has_long_number(data: bytes | str) -> bool:
    if isinstance(data, bytes):
        return _NINETEEN_ZERO_BYTES in data.translate(_DIGITS_AS_ZERO)
    return _NINETEEN_ZEROS in data.translate(_DIGITS_AS_ZERO_TEXT)


def loads_json_plain(data: bytes | str) -> Any:
    """Parse JSON text without touching tags; ProtocolError when it is not JSON."""
    if not _has_long_number(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    # The stdlib accepts what Python peers may send and orjson refuses (NaN, Infinity,
    # lone surrogates), so it gets a second look before we give up.
    try:
        return json.loads(data)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nested deeper than the interpreter's stack
        raise ProtocolError("JSON nested too deeply to read") from exc


def loads_json(data: bytes | str) -> Any:
    """Parse JSON text and decode kombu's type tags."""
    value = loads_json_plain(data)
    # Tags are rare; a substring test in C spares the walk for almost every message.
    tagged = b"__type__" in data if isinstance(data, bytes) else "__type__" in data
    return _untagged(value) if tagged else value


def _untagged(value: Any) -> Any:
    """:func:`untag`, with a value too deep for it refused as the decoder refuses one."""
    try:
        return untag(value)
    except RecursionError as exc:
        raise ProtocolError("JSON nested too deeply to read") from exc


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """True when the JSON (or YAML) text ``data`` nests brackets deeper than ``limit``."""
    # Counting brackets runs in C and clears nearly every message; only a text with more
    # brackets than the limit is walked.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


#: JSON texts from this size on are parsed before they are checked (see loads_json_bounded)
_SURVEY_FROM = 16 * 1024
#: ...and their parsed value is surveyed while it has at most one value per this many bytes
_BYTES_PER_VALUE = 64


def _survey(value: Any, limit: int, budget: int) -> tuple[bool, bool] | None:
    """(holds a float, holds a dict with a ``__type__`` key) of parsed JSON; ProtocolError
    when it nests deeper than ``limit``; None once more than ``budget`` values are seen."""
    floats = tagged = False
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ProtocolError(f"message body nested deeper than {limit} levels")
        seen += len(item)
        if seen > budget:
            return None
        if type(item) is dict:
            tagged = tagged or "__type__" in item
            item = item.values()
        for child in item:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is float:
                floats = True
    return floats, tagged


#: what :func:`loads_json_usual` returns for a text it leaves to the careful readers
UNUSUAL: Any = object()


def loads_json_usual(data: bytes, limit: int) -> Any:
    """Plain JSON ``data`` (tags untouched) read in one pass and orjson, or :data:`UNUSUAL`.

    Usual means: at most ``limit`` brackets open in all (so never nested deeper), no run
    of 19 digits (an integer orjson could not hold exactly) and valid to orjson. One
    translate marks both the brackets and the digit runs, where :func:`nesting_exceeds`
    and :func:`loads_json_plain` pass over the bytes four times. For anything else
    (deep, long numbers, NaN, lone surrogates, not JSON) the caller takes its careful
    way, which decides what the text means.
    """
    marked = data.translate(_DIGITS_AS_ZERO_OPENS_AS_BRACKET)
    if marked.count(b"[") > limit or _NINETEEN_ZERO_BYTES in marked:
        return UNUSUAL
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return UNUSUAL


def loads_json_bounded(data: bytes, limit: int) -> Any:
    """:func:`loads_json` for untrusted text: ProtocolError past ``limit`` levels of nesting.

    A large text that is mostly strings (a task given a long string or many of them) is
    parsed first and its parsed value surveyed for depth, floats and tags: a walk over a
    few values instead of four passes over every byte (two bracket counts, the digit-run
    search, the tag search). A text of many small values, where the walk would cost more,
    and anything orjson refuses, take the passes over the bytes.
    """
    if len(data) >= _SURVEY_FROM:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            # a bare scalar (not a task body) goes the byte way: a long number stays exact
            scalar = type(value) is not dict and type(value) is not list
            found = None if scalar else _survey(value, limit, len(data) // _BYTES_PER_VALUE)
            if found is not None:
                floats, tagged = found
                # orjson reads integers past 64 bits as floats: only then can it be wrong
                if floats and _has_long_number(data):
                    value = loads_json_plain(data)  # the stdlib keeps them exact
                return _untagged(value) if tagged else value
    else:
        value = loads_json_usual(data, limit)
        if value is not UNUSUAL:
            return _untagged(value) if b"__type__" in data else value
    if nesting_exceeds(data, limit):
        raise ProtocolError(f"message body nested deeper than {limit} levels")
    return loads_json(data)


def _optional_module(name: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"the {purpose} serializer needs the {name!r} package; pip install {name}"
        ) from exc


class Signing(Protocol):
    """The ``auth`` serializer: signs what it dumps, verifies what it loads."""

    def dumps(self, value: Any) -> tuple[bytes, str, str]: ...

    def loads(self, body: bytes) -> Any: ...


#: this process's auth serializer (Celery registers it process-wide in kombu's registry too)
_signing: Signing | None = None


def use_signing(codec: Signing | None) -> None:
    """Register (or with None, drop) the codec of the ``auth`` serializer."""
    global _signing  # noqa: PLW0603 - one registry per process, as kombu's
    _signing = codec


def signing_ready() -> bool:
    """True once this process has an ``auth`` serializer (app.setup_security() ran)."""
    return _signing is not None


def _signed() -> Signing:
    if _signing is None:
        raise ImproperlyConfigured(
            "the 'auth' serializer signs messages once app.setup_security() has loaded the "
            "key and certificates; call it where the app is created"
        )
    return _signing


def dumps(value: Any, serializer: str = "json") -> tuple[bytes, str, str]:
    """Serialize ``value``; returns ``(body, content_type, content_encoding)``.

    Raises SerializationError for values the serializer cannot encode and
    ImproperlyConfigured for an unknown serializer or one whose package is missing.
    """
    if serializer == "json":
        return dumps_json(value), JSON, "utf-8"
    if serializer == "msgpack":
        msgpack = _optional_module("msgpack", "msgpack")
        try:
            body = msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"value is not msgpack serializable: {exc}") from exc
        return bytes(body), MSGPACK, "binary"
    if serializer == "pickle":
        try:
            return pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL), PICKLE, "binary"
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"value cannot be pickled: {exc}") from exc
    if serializer == "yaml":
        yaml = _optional_module("yaml", "yaml")
        try:
            text = yaml.safe_dump(value)
        except Exception as exc:  # PyYAML raises its own RepresenterError
            raise SerializationError(f"value is not YAML serializable: {exc}") from exc
        return str(text).encode("utf-8"), YAML, "utf-8"
    if serializer == "auth":
        return _signed().dumps(value)
    raise ImproperlyConfigured(
        f"unknown serializer {serializer!r}; use one of {', '.join(SERIALIZERS)}"
    )


def _decode_other(body: bytes, content_type: str) -> Any:
    name = _NAME_BY_TYPE.get(content_type)
    if name == "pickle":
        return pickle.loads(body)
    if name == "msgpack":
        msgpack = _optional_module("msgpack", "msgpack")
        return msgpack.unpackb(body, raw=False)
    if name == "yaml":
        yaml = _optional_module("yaml", "yaml")
        return yaml.safe_load(body)
    if name == "auth":
        if _signing is None:
            raise SecurityError(
                "signed (auth) message, and this process has no key store to verify it: "
                "call app.setup_security() where the app is created"
            )
        return _signing.loads(body)
    raise ProtocolError(f"no decoder for content type {content_type!r}")


def loads(
    body: bytes,
    content_type: str,
    content_encoding: str,
    *,
    accept: frozenset[str],
    max_depth: int | None = None,
) -> Any:
    """Deserialize a message body, refusing content types outside ``accept``.

    ``accept`` holds content types (see :func:`normalize_accept`). ``max_depth``: refuse
    JSON nested deeper (the caller checks other text formats before). Raises
    ContentDisallowed for a content type not accepted, ProtocolError for bytes that do
    not decode.
    """
    if content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content of type {content_type!r}; accepted: {sorted(accept)}"
        )
    if content_type == JSON:
        if content_encoding not in ("utf-8", "utf8", "binary"):
            body = _recode(body, content_encoding)
        return loads_json(body) if max_depth is None else loads_json_bounded(body, max_depth)
    try:
        return _decode_other(body, content_type)
    except ProtocolError:
        raise
    except ImproperlyConfigured as exc:
        # A message we cannot read is the message's problem, handled per message.
        raise ProtocolError(str(exc)) from exc
    except Exception as exc:  # each codec has its own error types; report them alike
        raise ProtocolError(f"cannot decode {content_type!r} body: {exc}") from exc


def _recode(body: bytes, encoding: str) -> bytes:
    try:
        return body.decode(encoding).encode("utf-8")
    except (LookupError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"cannot decode body as {encoding!r}: {exc}") from exc


def normalize_accept(names: Iterable[str] | None) -> frozenset[str]:
    """Map ``accept_content`` entries (short names or content types) to content types.

    ``None`` means Celery's default, JSON only. Raises ImproperlyConfigured for a name
    that is neither a known serializer nor a content type.
    """
    if names is None:
        return _DEFAULT_ACCEPT
    if isinstance(names, str):
        names = [names]
    accepted: set[str] = set()
    for name in names:
        entry = SERIALIZERS.get(name)
        if entry is not None:
            accepted.add(entry[0])
        elif "/" in name:
            accepted.add(name)
        else:
            raise ImproperlyConfigured(
                f"unknown serializer {name!r} in accept_content; "
                f"use one of {', '.join(SERIALIZERS)} or a content type"
            )
    return frozenset(accepted)


# -- compression -----------------------------------------------------------------------------
#: method name (and kombu's aliases) -> the content type the ``compression`` header carries
COMPRESSIONS: dict[str, str] = {
    "gzip": "application/x-gzip",  # kombu's 'gzip' is zlib's format under gzip's name
    "zlib": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
    "brotli": "application/x-brotli",
    "zstd": "application/zstd",
    "zstandard": "application/zstd",
}
#: content type -> (modules that provide it, first found wins; the package to install)
_CODECS: dict[str, tuple[tuple[str, ...], str]] = {
    "application/x-gzip": (("zlib",), ""),
    "application/x-bz2": (("bz2",), ""),
    "application/x-lzma": (("lzma",), ""),
    "application/x-brotli": (("brotli", "brotlicffi"), "brotli"),
    "application/zstd": (("compression.zstd", "backports.zstd", "zstandard"), "zstandard"),
}


def _codec(content_type: str) -> ModuleType:
    """The module with ``compress``/``decompress`` for ``content_type``.

    Raises ImproperlyConfigured for an unknown method or a missing optional package.
    """
    found = _CODECS.get(content_type)
    if found is None:
        raise ImproperlyConfigured(
            f"unknown compression {content_type!r}; use one of {', '.join(sorted(COMPRESSIONS))}"
        )
    modules, package = found
    for name in modules:
        if name == "zlib":
            return zlib  # the default method needs no lookup
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImproperlyConfigured(
        f"compression {content_type!r} needs the {package!r} package; pip install {package}"
    )


def compression_type(method: str) -> str:
    """The header value for ``method`` ('gzip', 'bzip2', ... or a content type).

    Raises ImproperlyConfigured for an unknown method or one whose package is missing.
    """
    content_type = COMPRESSIONS.get(method.lower(), method)
    _codec(content_type)
    return content_type


def compress(body: bytes, method: str) -> tuple[bytes, str]:
    """Compress a serialized body; returns ``(bytes, header value)`` as kombu does."""
    content_type = compression_type(method)
    compressor: Callable[[bytes], bytes] = _codec(content_type).compress
    return bytes(compressor(body)), content_type


def decompress(body: bytes, content_type: str) -> bytes:
    """Undo :func:`compress` (or kombu's); ProtocolError when it cannot be done."""
    try:
        codec = _codec(COMPRESSIONS.get(content_type, content_type))
    except ImproperlyConfigured as exc:
        raise ProtocolError(f"cannot decompress the body: {exc}") from exc
    try:
        return bytes(codec.decompress(body))
    except Exception as exc:  # each codec raises its own error type
        raise ProtocolError(f"body is not valid {content_type!r} data: {exc}") from exc
