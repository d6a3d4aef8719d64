"""Celery's remote-control ("pidbox") documents (docs/protocol.md §6): requests and replies.

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
    """One decoded broadcast (docs/protocol.md §6.1)."""

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
        """Whether node ``hostname`` is addressed (no destination/pattern = everyone)."""
        if self.destination:
            return hostname in self.destination
        if self.pattern:
            if self.matcher == "pcre":
                return re.search(self.pattern, hostname) is not None
            return fnmatch.fnmatchcase(hostname, self.pattern)
        return True


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
    """Read a broadcast; ProtocolError if it is not a pidbox request."""
    if message.content_type != "application/json":
        raise ProtocolError(f"pidbox request in {message.content_type!r}; only JSON is accepted")
    body = loads_json(message.body)
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise ProtocolError(f"not a pidbox request: {body!r:.200}")
    destination = body.get("destination")
    expires = message.headers.get("expires")
    return Request(
        method=body["method"],
        arguments=dict(body.get("arguments") or {}),
        destination=list(destination) if destination else None,
        pattern=body.get("pattern"),
        matcher=body.get("matcher"),
        ticket=body.get("ticket"),
        reply_to=body.get("reply_to"),
        expires=float(expires) if expires is not None else None,
        clock=int(message.headers.get("clock") or 0),
    )


def encode_reply(hostname: str, reply: Any, *, ticket: str, clock: int) -> Message:
    """Node ``hostname``'s answer to the request with ``ticket`` (docs/protocol.md §6.2)."""
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


__all__ = ["Request", "decode_request", "encode_reply", "encode_request", "queue_info"]
