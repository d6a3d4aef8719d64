"""The decode boundary: whatever a broker hands a worker, decoding it raises ProtocolError
and nothing else, and the consumer sets it aside and goes on (issue 15, findings 1, 2, 9).

Each case below is a message that crashed a consumer before the boundary existed: the
exception escaped ``protocol.decode``/``envelope.unpack`` and ended the consumer's loop
(under prefork the child, under threads/solo the whole worker).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from caraway import Caraway
from caraway.brokers.contracts import Delivery
from caraway.exceptions import ProtocolError
from caraway.protocol import envelope, serializers
from caraway.protocol.message import Message, TaskMessage, decode, encode
from caraway.protocol.serializers import JSON
from caraway.worker import consumer as consumer_module
from caraway.worker import ipc
from caraway.worker.consumer import Consumer
from tests.helpers import wait_until

ACCEPT = frozenset({JSON})


def _good(task_id: str = "t-1", **headers: Any) -> Message:
    message = encode(TaskMessage(id=task_id, task="boundary.add", args=[1, 2]))
    message.headers.update(headers)
    return message


def _with_body(body: bytes, **headers: Any) -> Message:
    message = _good(**headers)
    message.body = body
    return message


#: a string long enough to make a body take the large-body way
PAD = b"x" * 20_000


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_chord(depth: int) -> Message:
    chord: dict[str, Any] = {"task": "boundary.add", "args": [], "kwargs": {}, "options": {}}
    for _ in range(depth):
        chord = {"task": "celery.chord", "kwargs": {"header": [], "body": chord}}
    return encode(TaskMessage(id="deep-chord", task="boundary.add", chord=chord))


#: (name, message) pairs that are not well-formed task messages
MALFORMED: list[tuple[str, Callable[[], Message]]] = [
    ("list as __type__ tag", lambda: _with_body(b'[[{"__type__": [1], "__value__": 1}], {}, {}]')),
    (
        "bytes tag holding a number",
        lambda: _with_body(b'[[{"__type__": "bytes", "__value__": 5}], {}, {}]'),
    ),
    (
        "decimal tag holding a list",
        lambda: _with_body(b'[[{"__type__": "decimal", "__value__": [1]}], {}, {}]'),
    ),
    ("JSON nested 5000 deep", lambda: _with_body(b"[" + _nested(5000) + b", {}, {}]")),
    ("JSON nested 300 deep", lambda: _with_body(b"[" + _nested(300) + b", {}, {}]")),
    ("a 200-deep chord", lambda: _deep_chord(200)),
    # bodies of 16 KiB and more are parsed first and surveyed (serializers.loads_json_bounded)
    ("large, 300 deep", lambda: _with_body(b'[["' + PAD + b'", ' + _nested(300) + b"], {}, {}]")),
    ("large, 5000 deep", lambda: _with_body(b'[["' + PAD + b'", ' + _nested(5000) + b"], {}, {}]")),
    (
        "large, bad tag",
        lambda: _with_body(b'[["' + PAD + b'", {"__type__": "date", "__value__": 1}], {}, {}]'),
    ),
    ("large, not JSON", lambda: _with_body(b'[["' + PAD + b'"], {}, {}')),
    (
        "large v1, 300 deep",
        lambda: Message(
            b'{"task": "a", "id": "v1", "args": ["' + PAD + b'", ' + _nested(300) + b"]}", {}
        ),
    ),
    ("string timelimit", lambda: _good(timelimit=["10", None])),
    ("NaN-free bool timelimit", lambda: _good(timelimit=[True, None])),
    ("negative timelimit", lambda: _good(timelimit=[None, -1])),
    ("100 KB task id", lambda: _good(task_id="x" * 100_000)),
    ("list retries", lambda: _good(retries=[1])),
    ("string retries", lambda: _good(retries="3")),
    ("object parent_id", lambda: _good(parent_id={"a": 1})),
    ("number group_index", lambda: _good(group_index="1")),
    ("string ignore_result", lambda: _good(ignore_result="yes")),
    ("stamped_headers of numbers", lambda: _good(stamped_headers=[1, 2])),
    ("argsrepr object", lambda: _good(argsrepr={"a": 1})),
    ("headers that are a list", lambda: Message(body=b"[[], {}, {}]", headers=[1])),  # type: ignore[arg-type]
    ("content type that is a list", lambda: Message(b"[[], {}, {}]", _good().headers, [JSON])),  # type: ignore[arg-type]
    (
        "content encoding that is a number",
        lambda: Message(b"[[], {}, {}]", _good().headers, JSON, 7),
    ),  # type: ignore[arg-type]
    (
        "text priority",
        lambda: Message(b"[[], {}, {}]", _good().headers, properties={"priority": "high"}),
    ),
    (
        "object reply_to",
        lambda: Message(b"[[], {}, {}]", _good().headers, properties={"reply_to": {}}),
    ),
    (
        "v1 body with list retries",
        lambda: Message(b'{"task": "boundary.add", "id": "v1", "retries": []}', {}),
    ),
]


@pytest.mark.parametrize(("case", "make"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_a_malformed_task_message_raises_protocol_error_and_nothing_else(
    case: str, make: Callable[[], Message]
) -> None:
    with pytest.raises(ProtocolError):
        decode(make(), accept=ACCEPT)


LARGE_BODIES = {
    "one long string": [["x" * 100_000], {}, {}],
    "long ints and floats": [["x" * 20_000, 2**70, -(2**70), 1.5, 2**63], {}, {}],
    "tags": [["x" * 20_000, {"__type__": "date", "__value__": "2030-01-02"}], {}, {}],
    "unknown tag kept": [["x" * 20_000, {"__type__": "thing", "__value__": 1}], {}, {}],
    "many small values": [list(range(20_000)), {"k": [1.5] * 3000}, {}],
    "just deep enough": [["x" * 20_000, json.loads("[" * 250 + "]" * 250)], {}, {}],
}


@pytest.mark.parametrize("body", list(LARGE_BODIES.values()), ids=list(LARGE_BODIES))
def test_a_large_body_reads_as_the_byte_checks_would_read_it(body: list[Any]) -> None:
    raw = json.dumps(body).encode()
    assert len(raw) >= 16 * 1024
    got = decode(_with_body(raw), accept=ACCEPT)
    expected = serializers.loads_json(raw)
    assert [got.args, got.kwargs] == expected[:2]
    assert [type(v) for v in got.args] == [type(v) for v in expected[0]]


def test_a_body_larger_than_the_limit_is_refused_unread() -> None:
    message = _good()
    message.body = b"[[" + b"1," * 1000 + b"1], {}, {}]"
    assert decode(message, accept=ACCEPT, max_size=len(message.body)).args[:2] == [1, 1]
    with pytest.raises(ProtocolError, match="worker_max_message_size"):
        decode(message, accept=ACCEPT, max_size=len(message.body) - 1)


def test_a_canvas_nested_as_deep_as_the_checker_allows_still_decodes() -> None:
    """The nesting bound leaves room for the deepest canvas protocol.signatures accepts."""
    chord: dict[str, Any] = {"task": "boundary.add", "args": [], "kwargs": {}, "options": {}}
    for _ in range(60):
        chord = {
            "task": "celery.chord",
            "args": [],
            "kwargs": {"header": [], "body": chord},
            "options": {},
            "subtask_type": "chord",
        }
    message = encode(TaskMessage(id="deep", task="boundary.add", chord=chord))
    assert decode(message, accept=ACCEPT).chord is not None


def _envelope(**changes: Any) -> bytes:
    raw = envelope.pack(_good(), exchange="", routing_key="celery", delivery_tag="tag-1")
    document = orjson.loads(raw)
    for path, value in changes.items():
        where = document
        *parents, last = path.split("__")
        for parent in parents:
            where = where[parent]
        where[last.replace("_", "-") if not parents else last] = value
    return json.dumps(document).encode()  # orjson refuses to write past 255 levels


ENVELOPES: list[tuple[str, Callable[[], bytes]]] = [
    ("content-type list", lambda: _envelope(content_type=["application/json"])),
    ("content-encoding number", lambda: _envelope(content_encoding=8)),
    ("delivery_info a list", lambda: _envelope(properties__delivery_info=[1, 2])),
    ("delivery_info a string", lambda: _envelope(properties__delivery_info="x")),
    ("headers nested 5000 deep", lambda: _envelope(headers={"x": orjson.loads(_nested(500))})),
    ("bad tag in headers", lambda: _envelope(headers={"x": {"__type__": {}, "__value__": 1}})),
    (
        "bytes tag in headers",
        lambda: _envelope(headers={"x": {"__type__": "bytes", "__value__": 1}}),
    ),
    ("100 KB delivery tag", lambda: _envelope(properties__delivery_tag="t" * 100_000)),
    ("body not base64", lambda: _envelope(body="%%%")),
    ("not an object", lambda: b"[1, 2, 3]"),
    ("not JSON", lambda: b"\xff\xfe"),
    ("deep garbage", lambda: b"[" * 100_000),
]


@pytest.mark.parametrize(("case", "make"), ENVELOPES, ids=[case for case, _ in ENVELOPES])
def test_a_malformed_redis_envelope_raises_protocol_error_and_nothing_else(
    case: str, make: Callable[[], bytes]
) -> None:
    with pytest.raises(ProtocolError):
        envelope.unpack(make())


def test_a_well_formed_envelope_still_unpacks() -> None:
    unpacked = envelope.unpack(_envelope())
    assert unpacked.delivery_tag == "tag-1"
    assert base64.b64encode(unpacked.message.body)


# -- the consumer goes on ----------------------------------------------------------------


_brokers = itertools.count()


@pytest.fixture
def boundary_app() -> Iterator[Caraway]:
    name = f"memory://decode-boundary-{next(_brokers)}"  # memory brokers live per process
    app = Caraway("boundary", broker=name, backend=name, set_as_current=False)

    @app.task(name="boundary.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app


def _dead_letters(app: Caraway) -> list[str]:
    admin = app.admin()
    try:
        return [letter.reason for letter in admin.dead_letters(limit=1000)]
    finally:
        admin.close()


@pytest.mark.parametrize("slots", [1, 2])
def test_a_consumer_sets_every_malformed_message_aside_and_runs_the_good_ones(
    boundary_app: Caraway, slots: int
) -> None:
    """Under threads/solo the consumer is the worker: one bad message ended it (status 0)."""
    transport = boundary_app.connection()
    add = boundary_app.tasks["boundary.add"]
    results = []
    # the memory broker copies headers and properties as dicts and reads the priority: it
    # cannot carry every malformed message (the brokers' fuzz suite sends the rest)
    carried = []
    for _, make in MALFORMED:
        try:
            transport.publish(make(), queue="celery")
        except (TypeError, ValueError):
            continue
        results.append(add.delay(len(carried), 1))
        carried.append(make)
    transport.close()
    stop = threading.Event()
    reports: list[Any] = []
    consumer = Consumer(
        boundary_app,
        queues=["celery"],
        slots=slots,
        hostname="b@h",
        stop=stop,
        report=reports.append,
    )
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        assert [result.get(timeout=10) for result in results] == [
            index + 1 for index in range(len(carried))
        ]
        reasons = wait_until(
            lambda: (found := _dead_letters(boundary_app)) and len(found) >= len(carried) and found,
            timeout=10,
            message="every malformed message in the dead-letter store",
        )
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert len(reasons) == len(carried)
    assert all(reason.startswith(("ProtocolError", "ContentDisallowed")) for reason in reasons)
    assert consumer.rejected == len(carried)
    # each one counted for the supervisor (``inspect stats``' "rejected")
    assert len([r for r in reports if isinstance(r, ipc.Rejected)]) == len(carried)


class _Recorder:
    def __init__(self) -> None:
        self.dead: list[str] = []


def _delivery(message: Message, count: int, recorder: _Recorder) -> Delivery:
    class _Transport:
        def dead_letter(self, delivery: Delivery, reason: str) -> None:
            recorder.dead.append(reason)

    return Delivery(
        message=message,
        queue="celery",
        tag="tag-9",
        transport=_Transport(),  # type: ignore[arg-type]
        delivery_count=count,
    )


def test_the_delivery_cap_holds_for_a_message_whose_decoding_kills_the_process(
    boundary_app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that kills its process while it is decoded comes back again and again; past
    the cap (and the one capped decode) it is set aside without being decoded again."""
    consumer = Consumer(boundary_app, queues=["celery"], slots=1, hostname="b@h")
    cap = consumer.delivery_cap
    recorder = _Recorder()

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded a message past its delivery cap")

    monkeypatch.setattr(consumer_module.protocol, "decode", dies)
    consumer._receive(_delivery(_good(), cap + 2, recorder))
    assert len(recorder.dead) == 1
    assert f"worker_delivery_cap={cap}" in recorder.dead[0]
    assert "not decoded again" in recorder.dead[0]


# -- the supervisor treats what a child reports as untrusted -------------------------------


def _started(**changes: Any) -> bytes:
    record = ipc.TaskStarted(
        task_id="t-1",
        name="boundary.add",
        delivery_tag="tag-1",
        acks_late=False,
        reject_on_worker_lost=True,
        time_limit=10.0,
        soft_time_limit=None,
    )
    values = list(orjson.loads(ipc.encode(record)))
    names = ["kind", *(field.name for field in dataclasses.fields(record))]
    for name, value in changes.items():
        values[names.index(name)] = value
    return orjson.dumps(values)


@pytest.mark.parametrize(
    "changes",
    [
        {"time_limit": "10"},
        {"soft_time_limit": [1]},
        {"started": "now"},
        {"acks_late": 1},
        {"task_id": 7},
        {"queue": {"a": 1}},
    ],
    ids=repr,
)
def test_a_child_report_with_fields_of_the_wrong_type_is_refused(changes: dict[str, Any]) -> None:
    """A string time limit in a child's report reached the supervisor's time-limit check
    and raised TypeError in its loop: the supervisor died and orphaned its children."""
    assert isinstance(ipc.decode(_started()), ipc.TaskStarted)
    with pytest.raises(ValueError, match="bad"):
        ipc.decode(_started(**changes))


def test_holding_reports_still_round_trip() -> None:
    holding = ipc.Holding(reserved=(("a", "b", "()", "{}", "q"),), scheduled=((1.5, ("a",)),))
    assert ipc.decode(ipc.encode(holding)) == holding


def test_an_unregistered_task_is_stored_as_failure_and_kept_in_the_dead_letter_store() -> None:
    """It was acked and dropped: a worker that knows the task could never run it."""
    from caraway import lifecycle
    from caraway.config import Settings

    receipt = lifecycle.on_receipt(
        TaskMessage(id="u-1", task="nobody.knows"),
        now=0.0,
        park_horizon=60.0,
        can_park=True,
        delivery_count=1,
        delivery_cap=5,
        stored_state=None,
        registered=False,
        revoked=False,
        policy=lifecycle.build_policy(Settings(), None),
    )
    assert receipt.effects is not None
    assert receipt.effects.results[0][1] == "FAILURE"
    assert receipt.effects.settle == "dead_letter"
    assert "nobody.knows" in (receipt.effects.reason or "")


def test_a_compressed_body_is_held_to_the_size_limit_once_decompressed() -> None:
    """A 10 KB zlib body that inflates to 10 MB is a memory bomb, not a task."""
    bomb = b"[[" + b"0," * 5_000_000 + b"0], {}, {}]"
    message = _good()
    message.body = zlib.compress(bomb, 9)
    message.headers["compression"] = "application/x-gzip"
    assert len(message.body) < 100_000
    with pytest.raises(ProtocolError, match="decompresses to"):
        decode(message, accept=ACCEPT, max_size=1_000_000)


def test_a_sqlite_row_another_writer_garbled_reaches_the_decode_boundary(tmp_path: Any) -> None:
    """Text in the priority column made the claim's sort raise, and headers that are not
    JSON made building the delivery raise: the same row crashed every claim, for ever."""
    import sqlite3
    import time

    url = f"sqlite:///{tmp_path / 'broker.db'}"
    app = Caraway("garbled", broker=url, backend=url, set_as_current=False)
    transport = app.connection()
    try:
        transport.publish(_good("ok-1"), queue="celery")  # creates the tables
        with sqlite3.connect(tmp_path / "broker.db") as conn:
            conn.execute(
                "INSERT INTO caraway_messages (queue, priority, enqueued_at, headers, "
                "properties, body, content_type, content_encoding) VALUES (?,?,?,?,?,?,?,?)",
                ("celery", "high", time.time(), "{not json", "[1]", b"x", 5, "utf-8"),
            )
        deliveries = transport.fetch(["celery"], limit=10, timeout=0, owner="t")
        assert len(deliveries) == 2
        garbled = next(d for d in deliveries if d.message.headers == "{not json")
        with pytest.raises(ProtocolError):
            decode(garbled.message, accept=ACCEPT)
        garbled.dead_letter("ProtocolError: garbled")  # the store takes it as it is
        admin = app.admin()
        try:
            assert [letter.reason for letter in admin.dead_letters()] == ["ProtocolError: garbled"]
        finally:
            admin.close()
    finally:
        transport.close()


def test_a_large_text_of_one_long_number_keeps_it_exact() -> None:
    text = b" " * 20_000 + str(2**70 + 1).encode()
    assert serializers.loads_json_bounded(text, 256) == 2**70 + 1
