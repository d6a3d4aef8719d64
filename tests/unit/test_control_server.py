"""ControlServer and Control over the in-memory mailbox, with a FakeNode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caraway.app import Caraway
from caraway.brokers.memory.mailbox import MemoryMailbox
from caraway.control import Control
from caraway.protocol.message import Message
from caraway.protocol.pidbox import Request, decode_request, encode_request
from caraway.protocol.serializers import dumps_json
from caraway.worker.control import ControlServer
from tests.unit.test_control_fakes import FakeNode, served


@pytest.fixture
def url() -> str:
    return f"memory://control-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app(url: str) -> Caraway:
    return Caraway("proj", broker=url, backend="memory://")


@pytest.fixture
def control(app: Caraway) -> Iterator[Control]:
    client = Control(app)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def node() -> FakeNode:
    return FakeNode("w1@test")


@pytest.fixture
def server(app: Caraway, node: FakeNode) -> Iterator[ControlServer]:
    with served(ControlServer(app, node)) as running:
        yield running


def test_ping_is_answered_with_pong_by_hostname(server: ControlServer, control: Control) -> None:
    assert control.ping(timeout=2) == [{"w1@test": {"ok": "pong"}}]


def test_two_nodes_both_answer_a_broadcast(app: Caraway, control: Control) -> None:
    with served(ControlServer(app, FakeNode("a@h"))), served(ControlServer(app, FakeNode("b@h"))):
        replies = control.inspect(timeout=0.5).ping()
    assert replies == {"a@h": {"ok": "pong"}, "b@h": {"ok": "pong"}}


def test_destination_selects_one_node_and_returns_early(app: Caraway, control: Control) -> None:
    with served(ControlServer(app, FakeNode("a@h"))), served(ControlServer(app, FakeNode("b@h"))):
        started = time.monotonic()
        replies = control.ping(destination=["b@h"], timeout=5)
        assert time.monotonic() - started < 4
    assert replies == [{"b@h": {"ok": "pong"}}]


def test_glob_pattern_selects_matching_nodes(app: Caraway, control: Control) -> None:
    with served(ControlServer(app, FakeNode("a@h"))), served(ControlServer(app, FakeNode("b@x"))):
        replies = control.inspect(timeout=0.5, pattern="*@x", matcher="glob").ping()
    assert replies == {"b@x": {"ok": "pong"}}


def test_inspect_returns_none_when_nobody_answers(control: Control) -> None:
    assert control.inspect(timeout=0.2).ping() is None


def test_inspect_commands_return_node_data(server: ControlServer, control: Control) -> None:
    inspect = control.inspect(destination=["w1@test"], timeout=2)
    assert inspect.active() == {
        "w1@test": [{"id": "t-active", "name": "tasks.add", "hostname": "w1@test"}]
    }
    assert inspect.reserved() == {"w1@test": [{"id": "t-reserved", "name": "tasks.mul"}]}
    assert inspect.registered() == {"w1@test": ["tasks.add", "tasks.mul"]}
    assert inspect.revoked() == {"w1@test": ["t-revoked"]}
    assert inspect.query_task("x1", ["x2"]) == {
        "w1@test": {"x1": ["active", {"id": "x1"}], "x2": ["active", {"id": "x2"}]}
    }
    assert inspect.conf() == {"w1@test": {"broker_url": "memory://"}}
    scheduled = inspect.scheduled()
    assert scheduled is not None and scheduled["w1@test"][0]["request"] == {"id": "t-eta"}


def test_stats_carry_the_node_clock_as_celery_does(server: ControlServer, control: Control) -> None:
    stats = control.inspect(timeout=2, destination=["w1@test"]).stats()
    assert stats is not None
    assert stats["w1@test"]["total"] == {"tasks.add": 3}
    assert int(stats["w1@test"]["clock"]) > 0


def test_active_queues_are_described_in_celery_shape(
    server: ControlServer, control: Control
) -> None:
    queues = control.inspect(timeout=2, destination=["w1@test"]).active_queues()
    assert queues is not None
    (described,) = queues["w1@test"]
    assert described["name"] == "celery"
    assert described["exchange"] == {
        "name": "celery",
        "type": "direct",
        "arguments": None,
        "durable": True,
        "passive": False,
        "auto_delete": False,
        "delivery_mode": None,
        "no_declare": False,
    }
    assert described["routing_key"] == "celery"


def test_rate_limit_reaches_the_node(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    replies = control.rate_limit(
        "tasks.add", "10/m", reply=True, timeout=2, destination=["w1@test"]
    )
    assert replies == [{"w1@test": {"ok": "new rate limit set successfully"}}]
    assert node.rate_limits == {"tasks.add": "10/m"}


def test_rate_limit_for_unknown_task_replies_an_error(
    server: ControlServer, control: Control
) -> None:
    replies = control.rate_limit("nope", "1/s", reply=True, timeout=2, destination=["w1@test"])
    assert replies == [{"w1@test": {"error": "unknown task 'nope'"}}]


def test_add_and_cancel_consumer_change_the_nodes_queues(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    added = control.add_consumer("images", reply=True, timeout=2, destination=["w1@test"])
    assert added == [{"w1@test": {"ok": "add consumer images"}}]
    assert node.queues == ["celery", "images"]
    again = control.add_consumer("images", reply=True, timeout=2, destination=["w1@test"])
    assert again == [{"w1@test": {"ok": "already consuming from 'images'"}}]
    control.cancel_consumer("images", reply=True, timeout=2, destination=["w1@test"])
    assert node.queues == ["celery"]


def test_revoke_without_reply_still_reaches_the_node(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    assert control.revoke("t1") is None
    deadline = time.monotonic() + 5
    while not node.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.calls == [("revoke", ["t1"], False, "SIGTERM")]


def test_terminate_revokes_with_terminate_and_signal(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    control.terminate(
        ["t1", "t2"], signal="SIGKILL", reply=True, timeout=2, destination=["w1@test"]
    )
    assert node.calls == [("revoke", ["t1", "t2"], True, "SIGKILL")]


def test_pool_grow_and_time_limit_and_events(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    grown = control.pool_grow(2, reply=True, timeout=2, destination=["w1@test"])
    assert grown == [{"w1@test": {"ok": "pool will grow to 3"}}]
    control.time_limit("tasks.add", soft=1, hard=2, reply=True, timeout=2, destination=["w1@test"])
    control.enable_events(reply=True, timeout=2, destination=["w1@test"])
    assert node.calls == [("time_limit", "tasks.add", 1.0, 2.0), ("events", True)]


def test_shutdown_replies_then_stops_the_node(
    server: ControlServer, control: Control, node: FakeNode
) -> None:
    replies = control.shutdown(reply=True, timeout=2, destination=["w1@test"])
    assert replies == [{"w1@test": {"ok": "shutting down"}}]
    assert node.stopped.wait(2)


def test_unknown_command_is_answered_with_an_error(server: ControlServer, control: Control) -> None:
    replies = control.broadcast("frobnicate", reply=True, timeout=2, destination=["w1@test"])
    assert replies == [{"w1@test": {"error": "unknown command 'frobnicate'"}}]


def _raw_request(body: dict[str, Any], expires: float) -> Message:
    return Message(body=dumps_json(body), headers={"clock": 1, "expires": expires})


def test_expired_request_is_dropped(app: Caraway, node: FakeNode) -> None:
    server = ControlServer(app, node, mailbox=MemoryMailbox(app.broker_url))
    body: dict[str, Any] = {"method": "shutdown", "arguments": {}, "destination": None}
    try:
        assert server.handle(_raw_request(body, expires=time.time() - 1)) == 0
        assert not node.stopped.is_set()
        assert server.handle(_raw_request(body, expires=time.time() + 10)) == 1
        assert node.stopped.is_set()
    finally:
        server.close()


def test_unreadable_request_is_dropped_without_raising(app: Caraway, node: FakeNode) -> None:
    server = ControlServer(app, node)
    try:
        assert server.handle(Message(body=b"not json", headers={})) == 0
        assert server.handle(Message(body=b"[1, 2]", headers={})) == 0
    finally:
        server.close()


def test_request_round_trips_in_celery_body_shape() -> None:
    request = Request(
        method="ping",
        arguments={},
        ticket="tk",
        reply_to={"exchange": "reply.celery.pidbox", "routing_key": "oid"},
        expires=123.5,
        clock=7,
    )
    message = encode_request(request)
    assert message.headers == {"clock": 7, "expires": 123.5}
    assert message.properties == {"delivery_mode": 2}
    assert decode_request(message) == request


def test_request_without_reply_has_no_ticket_like_celery_revoke() -> None:
    message = encode_request(Request(method="revoke", arguments={"task_id": "x"}))
    assert message.body == (
        b'{"method":"revoke","arguments":{"task_id":"x"},"destination":null,'
        b'"pattern":null,"matcher":null}'
    )


def test_app_control_is_a_control(app: Caraway) -> None:
    assert isinstance(app.control, Control)
