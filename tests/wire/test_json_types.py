"""Golden test: kombu's JSON type tags (vectors/kombu-json-extended-types.json, §1.5)."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

from caraway.protocol import dumps, loads, normalize_accept
from tests.wire._vectors import load

VECTOR = load("kombu-json-extended-types.json")

# The vector's input_python_repr, written out as values.
VALUE: dict[str, Any] = {
    "dt": datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    "date": date(2030, 1, 2),
    "time": time(3, 4, 5),
    "dec": Decimal("1.5"),
    "uuid": uuid.UUID("00000000-0000-0000-0000-000000000001"),
    "bytes_utf8": b"hi",
    "bytes_binary": b"\xff\x00",
    "tuple": (1, 2),
}


def test_our_json_uses_kombus_tags_for_every_extended_type() -> None:
    body, content_type, content_encoding = dumps(VALUE)
    assert json.loads(body) == VECTOR["output_parsed"]
    assert list(json.loads(body)) == list(VECTOR["output_parsed"])
    assert (content_type, content_encoding) == ("application/json", "utf-8")


def test_kombus_tagged_json_decodes_to_the_python_values() -> None:
    decoded = loads(
        VECTOR["output"].encode(),
        "application/json",
        "utf-8",
        accept=normalize_accept(["json"]),
    )
    assert decoded == {**VALUE, "tuple": [1, 2]}
    assert type(decoded["uuid"]) is uuid.UUID
    assert type(decoded["dt"]) is datetime
    assert type(decoded["date"]) is date
    assert decoded["dt"].tzinfo is not None
