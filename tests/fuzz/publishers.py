"""Put a malformed :class:`~tests.fuzz.cases.Case` straight on a broker's queue, past every
check a caraway producer makes: rows for SQLite, kombu envelopes for Redis, basic.publish
for RabbitMQ."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from typing import Any

import amqp
import redis

from tests.fuzz.cases import Case


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _column_priority(value: Any) -> Any:
    """What SQLite can store in the priority column: text and 64-bit integers."""
    if (isinstance(value, int) and -(2**63) <= value < 2**63) or isinstance(value, str):
        return value
    return str(value)


class SQLitePublisher:
    """Inserts rows into ``caraway_messages`` as another program sharing the file could."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)

    def publish(self, cases: list[Case], queue: str) -> None:
        rows = []
        for case in cases:
            priority = (
                case.properties.get("priority", 0) if isinstance(case.properties, dict) else 0
            )
            rows.append(
                (
                    queue,
                    _column_priority(priority),
                    time.time(),
                    _json_text(case.headers),
                    _json_text(case.properties),
                    case.body,
                    _json_text(case.content_type) if case.content_type is not None else "",
                    _json_text(case.content_encoding) if case.content_encoding is not None else "",
                    "",
                    queue,
                )
            )
        self.conn.executemany(
            "INSERT INTO caraway_messages (queue, priority, enqueued_at, headers, properties, "
            "body, content_type, content_encoding, exchange, routing_key) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )

    def close(self) -> None:
        self.conn.close()


class RedisPublisher:
    """LPUSHes kombu envelopes (or whatever bytes a case holds) onto the queue's list."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def publish(self, cases: list[Case], queue: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for case in cases:
            pipe.lpush(queue, case.raw_envelope or _envelope(case, queue))
        pipe.execute()

    def close(self) -> None:
        self.client.close()


def _envelope(case: Case, queue: str) -> bytes:
    properties: Any = case.properties
    if isinstance(properties, dict):
        properties = {
            **properties,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "body_encoding": "base64",
            "delivery_tag": f"fuzz-{id(case)}-{time.monotonic_ns()}",
        }
    document = {
        "body": base64.b64encode(case.body).decode(),
        "content-encoding": case.content_encoding,
        "content-type": case.content_type,
        "headers": case.headers,
        "properties": properties,
    }
    return json.dumps(document).encode()


class AMQPPublisher:
    """basic.publish to the default exchange with the case's headers and properties."""

    def __init__(self, host: str = "127.0.0.1:5672") -> None:
        self.connection = amqp.Connection(host=host, userid="guest", password="guest")
        self.connection.connect()
        self.channel = self.connection.channel()

    def publish(self, cases: list[Case], queue: str) -> None:
        for case in cases:
            properties: dict[str, Any] = {}
            priority = (
                case.properties.get("priority") if isinstance(case.properties, dict) else None
            )
            if isinstance(priority, int) and 0 <= priority <= 255:
                properties["priority"] = priority
            reply_to = (
                case.properties.get("reply_to") if isinstance(case.properties, dict) else None
            )
            if isinstance(reply_to, str):
                properties["reply_to"] = reply_to
            message = amqp.Message(
                body=case.body,
                content_type=str(case.content_type),
                content_encoding=str(case.content_encoding),
                application_headers=field_table(case.headers),
                delivery_mode=2,
                **properties,
            )
            self.channel.basic_publish(message, exchange="", routing_key=queue)

    def close(self) -> None:
        self.connection.close()


def field_table(value: Any) -> Any:
    """What an AMQP field table can carry: integers beyond 64 bits travel as text."""
    if isinstance(value, dict):
        return {str(key): field_table(item) for key, item in value.items()}
    if isinstance(value, list):
        return [field_table(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)
    return value
