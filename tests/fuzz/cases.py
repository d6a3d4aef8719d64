"""Malformed messages, as hypothesis strategies: what a buggy producer, another language's
client or someone with broker access could put on a queue.

Every case names a task no worker registers (or names none at all), so whatever a case
turns out to be, the one right outcome is the dead-letter store: refused at the decode
boundary, or decoded and kept there as NotRegistered. That is what makes one oracle
(count the dead letters) hold for random input.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from caraway.protocol.message import KNOWN_HEADERS, TaskMessage, encode

#: a task name nobody registers: a case that decodes cleanly is still dead-lettered
UNKNOWN_TASK = "fuzz.nobody_runs_this"

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
#: any JSON value, a few levels deep
json_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
#: JSON values that are kombu type tags, well or badly formed
tags = st.fixed_dictionaries(
    {
        "__type__": st.one_of(
            st.sampled_from(["bytes", "base64", "datetime", "date", "time", "decimal", "uuid"]),
            json_values,
        ),
        "__value__": json_values,
    }
)


@dataclass
class Case:
    """One malformed message, in the parts every broker carries."""

    headers: Any
    body: bytes
    content_type: Any = "application/json"
    content_encoding: Any = "utf-8"
    properties: Any = field(default_factory=dict)
    #: for Redis only: the whole envelope replaced by these bytes
    raw_envelope: bytes | None = None
    #: what was done to it, for a failing example's report
    mutations: list[str] = field(default_factory=list)


def _base() -> Case:
    message = encode(TaskMessage(id=str(uuid.uuid4()), task=UNKNOWN_TASK, args=[1, 2]))
    return Case(
        headers=message.headers,
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        properties=dict(message.properties),
    )


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.lists(st.one_of(json_values, tags), max_size=3).map(
        lambda args: json.dumps([args, {}, {}]).encode()
    ),
    st.integers(min_value=100, max_value=3000).map(lambda depth: b"[" + _nested(depth) + b"]"),
    st.sampled_from(
        [
            b'[[], {}, {"chain": {"task": "x"}}]',
            b'[[], {}, {"chord": []}]',
            b'[[], {}, {"callbacks": [1, 2]}]',
            b'[[], {}, {"errbacks": [{"task": 5}]}]',
            b"[[], [], []]",
            b"{}",
        ]
    ),
)


@st.composite
def malformed(draw: st.DrawFn, *, structural: bool = True) -> Case:
    """A valid message of an unknown task with one to four random mutations.

    ``structural`` allows the mutations only some brokers can carry (headers that are not
    an object, content types that are not strings): SQLite rows and Redis envelopes can,
    AMQP's typed properties cannot.
    """
    case = _base()
    kinds = [
        "header",
        "header",
        "drop_header",
        "body",
        "content_type",
        "content_encoding",
        "priority",
        "reply_to",
    ]
    if structural:
        kinds += ["headers_not_object", "properties_not_object", "typed_content_type"]
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4)):
        case.mutations.append(kind)
        if kind in ("header", "drop_header", "body", "content_type", "content_encoding"):
            _mutate_content(draw, case, kind)
        else:
            _mutate_shape(draw, case, kind)
    return case


@st.composite
def redis_envelopes(draw: st.DrawFn) -> Case:
    """A whole kombu envelope gone wrong: not JSON, wrong types, missing parts."""
    case = _base()
    envelope: Any = {
        "body": base64.b64encode(case.body).decode(),
        "content-encoding": case.content_encoding,
        "content-type": case.content_type,
        "headers": case.headers,
        "properties": {
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "not_object",
                "delivery_info",
                "body_encoding",
                "body",
                "tag",
                "content_type",
                "deep_headers",
            ]
        )
    )
    case.mutations.append(f"envelope:{kind}")
    if kind == "garbage":
        case.raw_envelope = draw(st.binary(min_size=1, max_size=64))
        return case
    if kind == "not_object":
        envelope = draw(st.lists(_leaf, max_size=3))
    elif kind == "delivery_info":
        envelope["properties"]["delivery_info"] = draw(st.one_of(_leaf, st.lists(_leaf)))
    elif kind == "body_encoding":
        envelope["properties"]["body_encoding"] = draw(st.one_of(_leaf, st.just("rot13")))
    elif kind == "body":
        envelope["body"] = draw(st.one_of(_leaf, st.just("%%%not base64")))
    elif kind == "tag":
        envelope["properties"]["delivery_tag"] = draw(st.one_of(st.integers(), st.just("")))
    elif kind == "content_type":
        envelope["content-type"] = draw(st.one_of(st.integers(), st.lists(_leaf, max_size=2)))
    elif kind == "deep_headers":
        envelope["headers"] = {"id": "x", "task": UNKNOWN_TASK, "deep": json.loads(_nested(600))}
    case.raw_envelope = json.dumps(envelope).encode()
    return case


def _mutate_content(draw: st.DrawFn, case: Case, kind: str) -> None:
    if kind == "header" and isinstance(case.headers, dict):
        name = draw(st.sampled_from(sorted(KNOWN_HEADERS - {"task"})))
        case.headers[name] = draw(st.one_of(json_values, tags))
    elif kind == "drop_header" and isinstance(case.headers, dict):
        case.headers.pop(draw(st.sampled_from(["id", "task"])), None)
    elif kind == "body":
        case.body = draw(_bodies)
    elif kind == "content_type":
        case.content_type = draw(
            st.sampled_from(
                ["application/x-python-serialize", "application/x-yaml", "text/plain", ""]
            )
        )
    elif kind == "content_encoding":
        case.content_encoding = draw(st.sampled_from(["binary", "latin-1", "rot13", ""]))


def _mutate_shape(draw: st.DrawFn, case: Case, kind: str) -> None:
    if kind == "priority" and isinstance(case.properties, dict):
        case.properties["priority"] = draw(st.one_of(st.text(max_size=5), st.integers()))
    elif kind == "reply_to" and isinstance(case.properties, dict):
        case.properties["reply_to"] = draw(json_values)
    elif kind == "headers_not_object":
        case.headers = draw(st.one_of(st.lists(_leaf, max_size=3), _leaf))
    elif kind == "properties_not_object":
        case.properties = draw(st.lists(_leaf, max_size=3))
    elif kind == "typed_content_type":
        case.content_type = draw(st.one_of(st.integers(), st.lists(_leaf, max_size=2)))
