"""Reading the captured Celery vectors (tests/vectors) into comparable pieces."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from caraway.protocol import Message

VECTORS = Path(__file__).resolve().parents[1] / "vectors"

#: the AMQP basic properties Celery sets on a task message (docs/design/protocol.md §1.2)
BASIC_PROPERTIES = ("correlation_id", "reply_to", "delivery_mode", "priority", "expiration")


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


@dataclass
class Captured:
    """One task message as Celery put it on the broker."""

    vector: str
    index: int
    headers: dict[str, Any]
    #: basic properties only (no envelope bookkeeping, no nulls)
    properties: dict[str, Any]
    body: list[Any]
    message: Message
    #: Redis only: the raw envelope string, its parsed form and the list key
    raw: str | None = None
    envelope: dict[str, Any] | None = None
    key: str | None = None

    @property
    def id(self) -> str:
        return str(self.headers["id"])


def _basic(properties: dict[str, Any]) -> dict[str, Any]:
    return {key: properties[key] for key in BASIC_PROPERTIES if properties.get(key) is not None}


def from_envelope(vector: str, index: int, entry: dict[str, Any]) -> Captured:
    envelope = entry["envelope"]
    properties = envelope["properties"]
    message = Message(
        body=base64.b64decode(envelope["body"]),
        headers=dict(envelope["headers"]),
        content_type=envelope["content-type"],
        content_encoding=envelope["content-encoding"],
        properties=_basic(properties),
    )
    return Captured(
        vector=vector,
        index=index,
        headers=envelope["headers"],
        properties=_basic(properties),
        body=entry["body_decoded"],
        message=message,
        raw=entry["raw"],
        envelope=envelope,
        key=entry.get("key"),
    )


def from_amqp(vector: str, index: int, entry: dict[str, Any]) -> Captured:
    properties = entry["properties"]
    message = Message(
        body=entry["body_raw"].encode("utf-8"),
        headers=dict(properties["headers"]),
        content_type=properties["content_type"],
        content_encoding=properties["content_encoding"],
        properties=_basic(properties),
    )
    return Captured(
        vector=vector,
        index=index,
        headers=properties["headers"],
        properties=_basic(properties),
        body=entry["body_decoded"],
        message=message,
    )


def captured(vector: str, field: str = "messages") -> list[Captured]:
    data = load(vector)
    reader = from_amqp if vector.startswith("amqp-") else from_envelope
    return [reader(vector, index, entry) for index, entry in enumerate(data[field])]
