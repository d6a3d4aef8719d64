"""Edge cases of protocol v2 encode/decode and the cheap header peeks."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

from caraway.exceptions import ContentDisallowed, ProtocolError, SerializationError
from caraway.protocol.message import (
    REPR_MAX,
    Message,
    TaskMessage,
    decode,
    default_origin,
    encode,
    peek_eta,
    peek_id,
)
from caraway.protocol.serializers import normalize_accept

ACCEPT = normalize_accept(["json"])
UTC = timezone.utc


def _message(headers: dict[str, object], body: object = None) -> Message:
    payload = [[], {}, {}] if body is None else body
    return Message(json.dumps(payload).encode(), headers)


def test_minimal_message_decodes_with_celerys_defaults() -> None:
    task = decode(_message({"task": "t.add", "id": "abc"}, [[1], {"k": 2}, None]), accept=ACCEPT)
    assert (task.task, task.id, task.args, task.kwargs) == ("t.add", "abc", [1], {"k": 2})
    assert (task.retries, task.eta, task.time_limit, task.soft_time_limit) == (0, None, None, None)
    assert (task.callbacks, task.chain, task.stamps, task.extra_headers) == (None, None, {}, {})


def test_message_without_task_header_or_v1_body_names_what_is_missing() -> None:
    with pytest.raises(ProtocolError, match="no 'task' header"):
        decode(_message({"id": "abc"}), accept=ACCEPT)


def test_message_without_id_header_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"'t\.add' has no usable 'id' header"):
        decode(_message({"task": "t.add"}), accept=ACCEPT)


def test_body_that_is_not_args_kwargs_embed_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"body must be \[args, kwargs, embed\]"):
        decode(_message({"task": "t", "id": "i"}, {"args": []}), accept=ACCEPT)
    with pytest.raises(ProtocolError, match="kwargs an object"):
        decode(_message({"task": "t", "id": "i"}, [[], [], {}]), accept=ACCEPT)


def test_unaccepted_content_type_is_refused_by_decode() -> None:
    message = Message(b"\x80\x04K\x01.", {"task": "t", "id": "i"}, "application/x-python-serialize")
    with pytest.raises(ContentDisallowed):
        decode(message, accept=ACCEPT)


def test_bad_json_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode(Message(b"[[], {}", {"task": "t", "id": "i"}), accept=ACCEPT)


def test_protocol_v1_dict_body_is_accepted() -> None:
    body = {
        "task": "t.add",
        "id": "v1-id",
        "args": [1, 2],
        "kwargs": {},
        "retries": 2,
        "eta": "2030-01-02T03:04:05+00:00",
        "taskset": "g1",
        "timelimit": [10, 5],
    }
    task = decode(_message({}, body), accept=ACCEPT)
    assert (task.id, task.task, task.args, task.retries, task.group) == (
        "v1-id",
        "t.add",
        [1, 2],
        2,
        "g1",
    )
    assert task.eta == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert (task.time_limit, task.soft_time_limit) == (10, 5)


def test_unknown_headers_land_in_extra_headers_and_travel_on() -> None:
    task = decode(_message({"task": "t", "id": "i", "x-trace": "abc", "lang": "py"}), accept=ACCEPT)
    assert task.extra_headers == {"x-trace": "abc"}
    assert encode(task).headers["x-trace"] == "abc"


def test_long_arguments_are_truncated_in_argsrepr_and_kwargsrepr() -> None:
    task = TaskMessage(id="i", task="t", args=["x" * 5000], kwargs={"k": "y" * 5000})
    headers = encode(task).headers
    assert len(headers["argsrepr"]) == REPR_MAX + 3
    assert headers["argsrepr"].startswith("('xxx") and headers["argsrepr"].endswith("...")
    assert len(headers["kwargsrepr"]) == REPR_MAX + 3


def test_argument_with_a_broken_repr_still_publishes() -> None:
    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no")

        def __json__(self) -> int:
            return 1

    assert encode(TaskMessage(id="i", task="t", args=[Odd()])).headers["argsrepr"] == (
        "<unrepresentable tuple>"
    )


def test_unencodable_argument_raises_serialization_error_on_encode() -> None:
    with pytest.raises(SerializationError, match="'set'"):
        encode(TaskMessage(id="i", task="t", args=[{1}]))


def test_naive_eta_is_sent_with_a_utc_offset() -> None:
    task = TaskMessage(id="i", task="t", eta=datetime(2030, 1, 2, 3, 4, 5))
    assert encode(task).headers["eta"] == "2030-01-02T03:04:05+00:00"


def test_naive_eta_header_is_read_as_utc() -> None:
    message = _message({"task": "t", "id": "i", "eta": "2030-01-02T03:04:05"})
    expected = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert decode(message, accept=ACCEPT).eta == expected
    assert peek_eta(message) == expected.timestamp()


def test_eta_with_z_suffix_and_other_offsets_is_read() -> None:
    message = _message({"task": "t", "id": "i", "eta": "2030-01-02T05:04:05+02:00"})
    assert peek_eta(message) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    zulu = _message({"task": "t", "id": "i", "eta": "2030-01-02T03:04:05Z"})
    assert peek_eta(zulu) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_garbage_eta_is_a_protocol_error() -> None:
    message = _message({"task": "t", "id": "i", "eta": "tomorrow"})
    with pytest.raises(ProtocolError, match="'tomorrow'"):
        peek_eta(message)
    with pytest.raises(ProtocolError):
        decode(message, accept=ACCEPT)


def test_peeks_without_eta_or_id_return_none() -> None:
    message = Message(b"not json at all", {})
    assert peek_eta(message) is None
    assert peek_id(message) is None
    message.properties["correlation_id"] = "from-props"
    assert peek_id(message) == "from-props"


def test_default_origin_is_gen_pid_at_host() -> None:
    assert re.fullmatch(rf"gen{os.getpid()}@.+", default_origin())
    assert encode(TaskMessage(id="i", task="t")).headers["origin"] == default_origin()


def test_expiration_is_the_ttl_in_milliseconds_and_never_negative() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    later = TaskMessage(id="i", task="t", expires=now + timedelta(seconds=1.5))
    assert encode(later, now=now).properties["expiration"] == "1500"
    past = TaskMessage(id="i", task="t", expires=now - timedelta(seconds=5))
    assert encode(past, now=now).properties["expiration"] == "0"


def test_properties_omit_reply_to_and_priority_when_unset() -> None:
    properties = encode(TaskMessage(id="i", task="t")).properties
    assert properties == {"correlation_id": "i", "delivery_mode": 2}


def test_pickle_serializer_round_trips_through_encode_and_decode() -> None:
    task = TaskMessage(id="i", task="t", args=[{1, 2}], kwargs={"when": datetime(2030, 1, 1)})
    message = encode(task, serializer="pickle")
    assert message.content_type == "application/x-python-serialize"
    decoded = decode(message, accept=normalize_accept(["pickle"]))
    assert decoded.args == [{1, 2}] and decoded.kwargs == {"when": datetime(2030, 1, 1)}


def test_decode_then_encode_round_trips_every_field() -> None:
    task = TaskMessage(
        id="i",
        task="t",
        args=[1],
        kwargs={"a": 2},
        callbacks=[{"task": "c"}],
        errbacks=[{"task": "e"}],
        chain=[],
        chord={"task": "b"},
        eta=datetime(2030, 1, 1, tzinfo=UTC),
        expires=datetime(2030, 1, 2, tzinfo=UTC),
        retries=3,
        group="g",
        group_index=1,
        root_id="r",
        parent_id="p",
        shadow="s",
        time_limit=10,
        soft_time_limit=5,
        argsrepr="(1,)",
        kwargsrepr="{'a': 2}",
        origin="o",
        ignore_result=True,
        reply_to="rt",
        priority=7,
        replaced_task_nesting=1,
        stamped_headers=["x"],
        stamps={"x": 1},
        extra_headers={"custom": [1, 2]},
    )
    assert decode(encode(task), accept=ACCEPT) == task
