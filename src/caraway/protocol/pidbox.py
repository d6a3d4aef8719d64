"""Celery's remote-control ("pidbox") documents (docs/design/protocol.md §6): requests and replies.

Builds and reads the broadcast a client publishes and the ``{hostname: reply}`` a node sends
back; moving them is the mailbox's job and answering them the worker's. The one thing to
know: ``ticket`` and ``reply_to`` travel only when replies are wanted, and ``clock`` and
``expires`` are headers, not body fields.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from caraway.exceptions import ProtocolError
from caraway.protocol.message import Message
from caraway.protocol.serializers import dumps_json, loads_json


@dataclass(slots=True)
class Request:
    """One decoded broadcast (docs/design/protocol.md §6.1)."""

    method: str
    arguments: dict[str, Any]
    destination: list[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: dict[str, Any] | None = None
    expires: float | None = None
    clock: int = 0

    def is_for(self, hostname: str) -> bool:
        """Whether node ``hostname`` is addressed (no destination/pattern = everyone).

        A ``pcre`` pattern was checked by :func:`decode_request` (:func:`check_pattern`)."""
        if self.destination:
            return hostname in self.destination
        if self.pattern:
            if self.matcher == "pcre":
                return re.search(self.pattern, hostname[: MAX_PATTERN * 2]) is not None
            return fnmatch.fnmatchcase(hostname, self.pattern)
        return True


#: a longer destination pattern is refused (a node name is at most a few dozen characters)
MAX_PATTERN = 128
#: quantifiers a ``pcre`` pattern may hold: each one multiplies the backtracking a
#: hostile pattern makes ``re`` do, so a few keep every match short
MAX_QUANTIFIERS = 3
#: a quantified group (``(a+)+``, ``(a|a)*``) or a backreference backtracks exponentially
_CATASTROPHIC = re.compile(r"\)[*+?{]|\\[1-9]|\(\?P=")
_QUANTIFIER = re.compile(r"(?<!\\)(?:[*+{]|(?<!\()\?)")


def check_pattern(pattern: str, matcher: str | None) -> None:
    """ProtocolError unless ``pattern`` is safe to match node names with.

    Celery compiles a ``pcre`` destination pattern as given, so anyone who can broadcast
    can make every node spin in ``re`` (ReDoS). caraway bounds it instead: short, no
    quantified groups or backreferences, at most :data:`MAX_QUANTIFIERS` quantifiers.
    A glob (the default matcher) is translated to a regex without nested quantifiers.
    """
    if len(pattern) > MAX_PATTERN:
        raise ProtocolError(f"destination pattern longer than {MAX_PATTERN} characters")
    if matcher != "pcre":
        return
    if _CATASTROPHIC.search(pattern) or len(_QUANTIFIER.findall(pattern)) > MAX_QUANTIFIERS:
        raise ProtocolError(
            f"destination pattern {pattern!r} could make matching run for ever; use at most "
            f"{MAX_QUANTIFIERS} quantifiers, none on a group and no backreferences"
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ProtocolError(f"destination pattern {pattern!r} is not a regex: {exc}") from exc


def encode_request(request: Request) -> Message:
    """The broadcast message Celery's clients publish for ``request``."""
    body: dict[str, Any] = {
        "method": request.method,
        "arguments": request.arguments,
        "destination": request.destination,
        "pattern": request.pattern,
        "matcher": request.matcher,
    }
    if request.ticket is not None:
        body["ticket"] = request.ticket
        body["reply_to"] = request.reply_to
    headers: dict[str, Any] = {"clock": request.clock}
    if request.expires is not None:
        headers["expires"] = request.expires
    return Message(body=dumps_json(body), headers=headers, properties={"delivery_mode": 2})


def decode_request(message: Message) -> Request:
    """Read a broadcast; ProtocolError if it is not a pidbox request (and nothing else:
    anyone who can reach the broker can broadcast)."""
    if message.content_type != "application/json":
        raise ProtocolError(f"pidbox request in {message.content_type!r}; only JSON is accepted")
    body = loads_json(message.body)
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise ProtocolError(f"not a pidbox request: {body!r:.200}")
    try:
        request = _request(body, message.headers)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"malformed pidbox request ({exc}): {body!r:.200}") from exc
    if request.pattern is not None:
        check_pattern(request.pattern, request.matcher)
    return request


def _request(body: dict[str, Any], headers: dict[str, Any]) -> Request:
    arguments = body.get("arguments") or {}
    destination = body.get("destination") or None
    expires = headers.get("expires")
    for name, value, kind in (
        ("arguments", arguments, dict),
        ("destination", destination, list),
        ("pattern", body.get("pattern"), str),
        ("matcher", body.get("matcher"), str),
        ("ticket", body.get("ticket"), str),
        ("reply_to", body.get("reply_to"), dict),
    ):
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}")
    if destination is not None and not all(isinstance(name, str) for name in destination):
        raise TypeError("destination must list node names")
    return Request(
        method=body["method"],
        arguments=arguments,
        destination=destination,
        pattern=body.get("pattern"),
        matcher=body.get("matcher"),
        ticket=body.get("ticket"),
        reply_to=body.get("reply_to"),
        expires=float(expires) if expires is not None else None,
        clock=int(headers.get("clock") or 0),
    )


def encode_reply(hostname: str, reply: Any, *, ticket: str, clock: int) -> Message:
    """Node ``hostname``'s answer to the request with ``ticket`` (docs/design/protocol.md §6.2)."""
    return Message(
        body=dumps_json({hostname: reply}),
        headers={"ticket": ticket, "clock": clock},
        properties={"delivery_mode": 1},
    )


def queue_info(name: str) -> dict[str, Any]:
    """How Celery describes a consumed queue in ``active_queues``
    (vectors/pidbox-redis-active-queues.json)."""
    return {
        "name": name,
        "exchange": {
            "name": name,
            "type": "direct",
            "arguments": None,
            "durable": True,
            "passive": False,
            "auto_delete": False,
            "delivery_mode": None,
            "no_declare": False,
        },
        "routing_key": name,
        "queue_arguments": None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
    }


__all__ = [
    "Request",
    "check_pattern",
    "decode_request",
    "encode_reply",
    "encode_request",
    "queue_info",
]
