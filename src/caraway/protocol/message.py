"""Celery task message protocol v2 <-> :class:`TaskMessage`.

This module and its siblings are the only code that knows Celery's envelope: everything
else handles :class:`Message` (bytes plus headers, what a broker carries) or
:class:`TaskMessage` (what a task call means). Facts: docs/design/protocol.md, section 1, and
the golden vectors in tests/vectors. Naive eta/expires datetimes are taken as UTC.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from caraway.exceptions import ProtocolError
from caraway.protocol.serializers import (
    JSON,
    MSGPACK,
    PICKLE,
    decompress,
    dumps,
    loads,
    nesting_exceeds,
)


@dataclass(slots=True)
class Message:
    """A message as any broker carries it: body bytes, headers and properties.

    ``properties`` holds the AMQP basic properties Celery sets (``correlation_id``,
    ``reply_to``, ``delivery_mode``, ``priority``, ``expiration``), whatever the broker.
    """

    body: bytes
    headers: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskMessage:
    """One task call, decoded: what to run, with what, and how it relates to others."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    group: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    shadow: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool | None = None
    reply_to: str | None = None
    priority: int | None = None
    #: 0 unless the task replaced itself (``self.replace()``) this many times
    replaced_task_nesting: int = 0
    #: canvas stamping: names of the stamp headers, and their values
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    #: headers this module does not interpret (custom ``headers=``, stamps, ...), kept
    #: so that a re-published message (retry, chain step) carries them on.
    extra_headers: dict[str, Any] = field(default_factory=dict)


#: Celery truncates argsrepr/kwargsrepr (display-only copies of the arguments) here.
REPR_MAX = 1024

#: Header names :func:`decode` interprets; every other header lands in ``extra_headers``.
KNOWN_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
        "compression",
    }
)

_origin = ""


def _forget_origin() -> None:
    global _origin  # noqa: PLW0603 - per-process cache, emptied in a fork's child
    _origin = ""


# a forked child has another pid: it builds its own origin (no getpid call per message)
os.register_at_fork(after_in_child=_forget_origin)


def default_origin() -> str:
    """``gen<pid>@<host>``: what Celery puts in ``origin`` for any publishing process."""
    global _origin  # noqa: PLW0603 - per-process cache, see _forget_origin
    if not _origin:
        _origin = f"gen{os.getpid()}@{platform.node()}"
    return _origin


def safe_repr(value: Any, limit: int = REPR_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters plus ``...``; never raises."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not stop a publish; this is display only
        return f"<unrepresentable {type(value).__qualname__}>"
    if len(text) > limit:
        return text[:limit] + "..."
    return text


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    # Always with an offset: Celery reads a naive value in the worker's local zone.
    return None if value is None else _aware(value).isoformat()


def _expiration(expires: datetime, now: datetime | None) -> str:
    # kombu sends the TTL as whole milliseconds in a string; a past expiry becomes 0.
    now = datetime.now(timezone.utc) if now is None else _aware(now)
    seconds = max((_aware(expires) - now).total_seconds(), 0.0)
    return str(int(seconds * 1000))


def encode(task: TaskMessage, *, serializer: str = "json", now: datetime | None = None) -> Message:
    """Build the protocol v2 message Celery 5.7 would send for ``task``.

    ``now`` is the reference for the ``expiration`` property (defaults to the clock);
    pass the instant ``expires`` was computed from to get an exact TTL. Raises
    SerializationError when the arguments cannot be serialized.
    """
    embed = {
        "callbacks": task.callbacks,
        "errbacks": task.errbacks,
        "chain": task.chain,
        "chord": task.chord,
    }
    body, content_type, content_encoding = dumps([task.args, task.kwargs, embed], serializer)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task.task,
        "id": task.id,
        "shadow": task.shadow,
        "eta": None if task.eta is None else _iso(task.eta),
        "expires": None if task.expires is None else _iso(task.expires),
        "group": task.group,
        "group_index": task.group_index,
        "retries": task.retries,
        "timelimit": [task.time_limit, task.soft_time_limit],
        "root_id": task.root_id or task.id,
        "parent_id": task.parent_id,
        "argsrepr": safe_repr(tuple(task.args)) if task.argsrepr is None else task.argsrepr,
        "kwargsrepr": safe_repr(task.kwargs) if task.kwargsrepr is None else task.kwargsrepr,
        "origin": task.origin or default_origin(),
        "ignore_result": task.ignore_result,
        "replaced_task_nesting": task.replaced_task_nesting,
        "stamped_headers": task.stamped_headers,
        "stamps": task.stamps,
    }
    if task.extra_headers:
        # Custom headers sit at the top level, next to Celery's (redis-send-task-extras).
        headers.update(task.extra_headers)
    properties: dict[str, Any] = {"correlation_id": task.id}
    if task.reply_to is not None:
        properties["reply_to"] = task.reply_to
    properties["delivery_mode"] = 2
    if task.expires is not None:
        properties["expiration"] = _expiration(task.expires, now)
    if task.priority is not None:
        properties["priority"] = task.priority
    return Message(body, headers, content_type, content_encoding, properties)


def parse_datetime(value: Any, what: str) -> datetime | None:
    """Read an ISO 8601 ``eta``/``expires`` value; naive means UTC. ProtocolError if bad."""
    if value is None:
        return None
    if isinstance(value, datetime):  # AMQP field tables can carry real timestamps
        return _aware(value)
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be an ISO 8601 string, got {value!r:.100}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ProtocolError(f"{what} {value!r:.100} is not an ISO 8601 datetime") from exc


def peek_eta(message: Message) -> float | None:
    """Unix time of the message's ``eta`` header, or None; the body is not decoded.

    Protocol v1 messages keep their eta in the body, so this returns None for them.
    """
    value = message.headers.get("eta")
    if value is None:
        return None
    eta = parse_datetime(value, "eta header")
    return None if eta is None else eta.timestamp()


def peek_id(message: Message) -> str | None:
    """The task id from the headers (or the AMQP correlation id), without the body."""
    task_id = message.headers.get("id")
    if isinstance(task_id, str):
        return task_id
    correlation_id = message.properties.get("correlation_id")
    return correlation_id if isinstance(correlation_id, str) else None


def decode(message: Message, *, accept: frozenset[str], max_size: int | None = None) -> TaskMessage:
    """Read a task message; protocol v2, or v1 when there is no ``task`` header.

    Missing optional headers get Celery's defaults; unknown headers go to
    ``extra_headers``. The message is untrusted: every header the worker acts on is
    checked for its type and range, the body for its size (``max_size`` bytes, when
    given) and nesting. Raises ContentDisallowed for a content type outside ``accept``
    and ProtocolError for anything else that is not a well-formed task message, never
    another exception.
    """
    try:
        common = _decode_common(message, accept, max_size)
        if common is not None:
            return common
        _check_message(message, max_size)
        body = _body(message, max_size)
        if "task" not in message.headers:
            return _decode_v1(message, body, accept)
        return _decode_v2(message, body, accept)
    except ProtocolError:
        raise
    except RecursionError as exc:
        raise ProtocolError("task message nested too deeply to read") from exc
    except Exception as exc:  # a shape no check foresaw: still the message's fault
        raise ProtocolError(f"malformed task message ({type(exc).__name__}: {exc})") from exc


#: every header :func:`decode` knows, absent: what a message's headers are laid over
_NO_HEADERS: dict[str, Any] = dict.fromkeys(KNOWN_HEADERS)
_NO_EMBED: dict[str, Any] = dict.fromkeys(("callbacks", "errbacks", "chain", "chord"))
_FLAG_TYPES = frozenset({bool, type(None)})


def _usual_headers(headers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(every known header, None where absent; the others) if all are of the usual shape.

    Usual: the ids and names strings (non-empty, at most MAX_IDENT characters), the reprs
    and origin strings, the counts ints >= 0, ignore_result a bool, each of exactly that
    type or None; no compression. The headers checked later (dates, time limits, stamps)
    may hold anything. Read by subscript and exact type, without a call per header: a
    worker reads the headers of every message it runs.
    """
    got = {**_NO_HEADERS, **headers}
    if "compression" in headers:
        return None
    for ident in (got["task"], got["id"], got["shadow"], got["group"]):
        # (not ident[MAX_IDENT:]: at most MAX_IDENT characters, without a call to len)
        if ident is not None and (type(ident) is not str or not ident or ident[MAX_IDENT:]):
            return None
    for ident in (got["root_id"], got["parent_id"]):
        if ident is not None and (type(ident) is not str or not ident or ident[MAX_IDENT:]):
            return None
    for text in (got["argsrepr"], got["kwargsrepr"], got["origin"]):
        if text is not None and type(text) is not str:
            return None
    for count in (got["retries"], got["group_index"], got["replaced_task_nesting"]):
        if count is not None and (type(count) is not int or count < 0):
            return None
    if type(got["ignore_result"]) not in _FLAG_TYPES:
        return None
    if len(got) == len(_NO_HEADERS):
        return got, {}
    return got, {key: value for key, value in headers.items() if key not in KNOWN_HEADERS}


def _decode_common(
    message: Message, accept: frozenset[str], max_size: int | None
) -> TaskMessage | None:
    """:func:`_decode_v2` for the usual shape, with a few calls in all; None otherwise.

    Each header's value is judged by its exact type (:func:`_usual_headers`); the fields
    whose check is more than a type (dates, time limits, stamps, properties, the body) go
    to the very functions the long way uses, in its order, so a bad one fails with the
    same error. Whatever else is not plainly right (a compressed or non-JSON body, a str
    subclass, a negative count, an empty id) returns None: :func:`decode` then takes the
    long way, which decides what it means.
    """
    raw, headers, properties = message.body, message.headers, message.properties
    if (
        type(raw) is not bytes
        or type(headers) is not dict
        or type(properties) is not dict
        or type(message.content_type) is not str
        or message.content_type != JSON
        or type(message.content_encoding) is not str
        or (max_size is not None and len(raw) > max_size)
    ):
        return None
    usual = _usual_headers(headers)
    if usual is None:
        return None
    got, extra = usual
    name, task_id = got["task"], got["id"]
    if name is None or task_id is None:
        return None  # protocol v1, or a v2 message without an id: the long way says which
    body = loads(raw, JSON, message.content_encoding, accept=accept, max_depth=MAX_NESTING)
    if (
        type(body) is list
        and len(body) == 3
        and type(body[0]) is list
        and type(body[1]) is dict
        and (body[2] is None or type(body[2]) is dict)
    ):
        args, kwargs, embed = body
    else:
        args, kwargs, embed = _split_body(body, task_id)
    embed = {**_NO_EMBED, **embed} if embed else _NO_EMBED
    timelimit = got["timelimit"]
    if timelimit is None or (type(timelimit) is list and timelimit == [None, None]):
        hard = soft = None
    else:
        hard, soft = _timelimit(timelimit, task_id)
    eta, expires = got["eta"], got["expires"]
    if eta is not None:
        eta = parse_datetime(eta, "eta header")
    if expires is not None:
        expires = parse_datetime(expires, "expires header")
    reply_to = properties.get("reply_to")
    if reply_to is not None and (type(reply_to) is not str or not reply_to or reply_to[MAX_IDENT:]):
        reply_to = _ident(reply_to, "'reply_to' property")
    priority = properties.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 255):
        priority = _priority(priority, task_id)
    stamped = got["stamped_headers"]
    if stamped is not None:
        stamped = _names(stamped, task_id)
    stamps = got["stamps"]
    if type(stamps) is not dict:
        stamps = _mapping(stamps, "stamps", task_id)
    return TaskMessage(
        id=task_id,
        task=name,
        args=args,
        kwargs=kwargs,
        callbacks=embed["callbacks"],
        errbacks=embed["errbacks"],
        chain=embed["chain"],
        chord=embed["chord"],
        eta=eta,
        expires=expires,
        retries=got["retries"] or 0,
        group=got["group"],
        group_index=got["group_index"],
        root_id=got["root_id"],
        parent_id=got["parent_id"],
        shadow=got["shadow"],
        time_limit=hard,
        soft_time_limit=soft,
        argsrepr=got["argsrepr"],
        kwargsrepr=got["kwargsrepr"],
        origin=got["origin"],
        ignore_result=got["ignore_result"],
        reply_to=reply_to,
        priority=priority,
        replaced_task_nesting=got["replaced_task_nesting"] or 0,
        stamped_headers=stamped,
        stamps=stamps,
        extra_headers=extra,
    )


def _decode_v2(message: Message, raw: bytes, accept: frozenset[str]) -> TaskMessage:
    headers = message.headers
    name = _ident(headers.get("task"), "task message's 'task' header")
    if name is None:
        raise ProtocolError("task message has a bad 'task' header: None")
    task_id = _ident(headers.get("id"), f"task message for {name!r}: 'id' header")
    if task_id is None:
        raise ProtocolError(f"task message for {name!r} has no usable 'id' header: None")
    body = loads(
        raw,
        message.content_type,
        message.content_encoding,
        accept=accept,
        max_depth=MAX_NESTING,
    )
    args, kwargs, embed = _split_body(body, task_id)
    hard, soft = _timelimit(headers.get("timelimit"), task_id)
    get = headers.get
    return TaskMessage(
        id=task_id,
        task=name,
        args=args,
        kwargs=kwargs,
        # a malformed embed fails the task with a result naming it (lifecycle, on receipt)
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        eta=parse_datetime(get("eta"), "eta header"),
        expires=parse_datetime(get("expires"), "expires header"),
        retries=_count(get("retries"), "retries", task_id),
        group=_ident(get("group"), "'group' header"),
        group_index=_optional_count(get("group_index"), "group_index", task_id),
        root_id=_ident(get("root_id"), "'root_id' header"),
        parent_id=_ident(get("parent_id"), "'parent_id' header"),
        shadow=_ident(get("shadow"), "'shadow' header"),
        time_limit=hard,
        soft_time_limit=soft,
        argsrepr=_text(get("argsrepr"), "argsrepr", task_id),
        kwargsrepr=_text(get("kwargsrepr"), "kwargsrepr", task_id),
        origin=_text(get("origin"), "origin", task_id),
        ignore_result=_flag(get("ignore_result"), "ignore_result", task_id),
        reply_to=_ident(message.properties.get("reply_to"), "'reply_to' property"),
        priority=_priority(message.properties.get("priority"), task_id),
        replaced_task_nesting=_count(
            get("replaced_task_nesting"), "replaced_task_nesting", task_id
        ),
        stamped_headers=_names(get("stamped_headers"), task_id),
        stamps=_mapping(get("stamps"), "stamps", task_id),
        extra_headers={k: v for k, v in headers.items() if k not in KNOWN_HEADERS},
    )


# -- checking untrusted input ------------------------------------------------------------
#: ids, task names, queue names: a UUID is 36 characters. The bound keeps a hostile id from
#: outgrowing what a child announces to its supervisor (and every log line it appears in).
MAX_IDENT = 1024
#: JSON nesting refused in a body: a real canvas nests a few levels per signature and
#: protocol.signatures refuses canvases past 64; deeper data runs code out of stack.
MAX_NESTING = 256


#: bodies whose bytes are not text: brackets in them mean nothing (msgpack bounds its own
#: depth; pickle is only read when the user accepts it)
_BINARY_TYPES = frozenset({MSGPACK, PICKLE})


def _check_message(message: Message, max_size: int | None) -> None:
    """The parts a transport hands over have the types :class:`Message` promises."""
    if not isinstance(message.body, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"message body must be bytes, got {type(message.body).__name__}")
    for what, value, kind in (
        ("headers", message.headers, dict),
        ("properties", message.properties, dict),
        ("content type", message.content_type, str),
        ("content encoding", message.content_encoding, str),
    ):
        if not isinstance(value, kind):
            raise ProtocolError(
                f"message {what} must be a {kind.__name__}, got {type(value).__name__}"
            )
    if max_size is not None and len(message.body) > max_size:
        raise ProtocolError(
            f"message body of {len(message.body)} bytes is larger than the "
            f"{max_size} bytes allowed (worker_max_message_size)"
        )


def check_nesting(body: bytes) -> None:
    """ProtocolError when the JSON (or YAML) text ``body`` nests deeper than MAX_NESTING."""
    # (binary formats are walked after decoding by whatever reads them, and msgpack bounds
    # its own depth)
    if nesting_exceeds(body, MAX_NESTING):
        raise ProtocolError(f"message body nested deeper than {MAX_NESTING} levels")


def _ident(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what} must be a non-empty string, got {value!r:.100}")
    if len(value) > MAX_IDENT:
        raise ProtocolError(f"{what} is {len(value)} characters long; at most {MAX_IDENT}")
    return value


def _text(value: Any, what: str, task_id: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"task {task_id}: {what} must be a string, got {value!r:.100}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any, what: str, task_id: str) -> int:
    if value is None:
        return 0
    if not _is_int(value) or value < 0:
        raise ProtocolError(f"task {task_id}: {what} must be a whole number >= 0, got {value!r}")
    return int(value)


def _optional_count(value: Any, what: str, task_id: str) -> int | None:
    return None if value is None else _count(value, what, task_id)


def _flag(value: Any, what: str, task_id: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ProtocolError(f"task {task_id}: {what} must be true, false or null, got {value!r:.100}")


def _priority(value: Any, task_id: str) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= 255:
        raise ProtocolError(f"task {task_id}: priority must be 0 to 255, got {value!r:.100}")
    return int(value)


def _names(value: Any, task_id: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"task {task_id}: stamped_headers must be a list of names")
    return value


def _mapping(value: Any, what: str, task_id: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"task {task_id}: {what} must be an object, got {value!r:.100}")
    return value


def _body(message: Message, max_size: int | None) -> bytes:
    """The serialized body, decompressed when the ``compression`` header says so (kombu),
    checked for its size and (text formats) its nesting before anything parses it."""
    body = bytes(message.body)
    compression = message.headers.get("compression")
    if compression:
        if not isinstance(compression, str):
            raise ProtocolError(f"compression header must be a string, got {compression!r:.100}")
        body = decompress(body, compression)
        if max_size is not None and len(body) > max_size:
            raise ProtocolError(
                f"message body decompresses to {len(body)} bytes, more than the "
                f"{max_size} bytes allowed (worker_max_message_size)"
            )
    if message.content_type not in _BINARY_TYPES and message.content_type != JSON:
        check_nesting(body)  # JSON's is checked as it is read (loads' max_depth)
    return body


def _split_body(body: Any, task_id: str) -> tuple[list[Any], dict[str, Any], Mapping[str, Any]]:
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise ProtocolError(
            f"task {task_id}: body must be [args, kwargs, embed], got {type(body).__name__}"
        )
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ProtocolError(f"task {task_id}: args must be an array and kwargs an object")
    if embed is None:
        embed = {}
    elif not isinstance(embed, dict):
        raise ProtocolError(f"task {task_id}: embed must be an object or null")
    return list(args), kwargs, embed


def _timelimit(value: Any, task_id: str) -> tuple[float | None, float | None]:
    """``[hard, soft]`` seconds, each a number >= 0 or null (the supervisor compares them)."""
    if value is None:
        return None, None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _seconds(value[0], task_id), _seconds(value[1], task_id)
    raise ProtocolError(f"task {task_id}: timelimit must be [hard, soft], got {value!r:.100}")


def _seconds(value: Any, task_id: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9:
        return value  # NaN fails the range test
    raise ProtocolError(
        f"task {task_id}: a timelimit must be a number of seconds or null, got {value!r:.100}"
    )


def _decode_v1(message: Message, raw: bytes, accept: frozenset[str]) -> TaskMessage:
    """Protocol v1: everything lives in a dict body (Celery 3 and ``task_protocol=1``)."""
    body = loads(
        raw,
        message.content_type,
        message.content_encoding,
        accept=accept,
        max_depth=MAX_NESTING,
    )
    if not isinstance(body, dict) or "task" not in body:
        raise ProtocolError("message has no 'task' header and its body is not a v1 task")
    name, task_id = _ident(body.get("task"), "v1 'task'"), _ident(body.get("id"), "v1 'id'")
    if name is None or task_id is None:
        raise ProtocolError(f"protocol v1 message needs string 'task' and 'id', got {body!r:.200}")
    args, kwargs = body.get("args") or [], body.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ProtocolError(f"task {task_id}: args must be an array and kwargs an object")
    hard, soft = _timelimit(body.get("timelimit"), task_id)
    return TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=kwargs,
        callbacks=body.get("callbacks"),
        errbacks=body.get("errbacks"),
        chord=body.get("chord"),
        eta=parse_datetime(body.get("eta"), "eta"),
        expires=parse_datetime(body.get("expires"), "expires"),
        retries=_count(body.get("retries"), "retries", task_id),
        group=_ident(body.get("taskset"), "v1 'taskset'"),
        root_id=task_id,
        time_limit=hard,
        soft_time_limit=soft,
        reply_to=_ident(message.properties.get("reply_to"), "'reply_to' property"),
        priority=_priority(message.properties.get("priority"), task_id),
        extra_headers={k: v for k, v in message.headers.items() if k != "compression"},
    )
