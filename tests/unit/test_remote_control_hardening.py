"""Remote control takes requests from anyone who can reach the broker (issue 15, finding 6
and 9): a request is checked before it is acted on, and what it can ask for is bounded."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from caraway.brokers.registry import open_mailbox
from caraway.exceptions import ProtocolError
from caraway.protocol.message import Message
from caraway.protocol.pidbox import Request, check_pattern, decode_request, encode_request
from caraway.protocol.serializers import dumps_json
from caraway.worker.control import COMMANDS
from caraway.worker.supervisor import Supervisor


def _broadcast(**body: Any) -> Message:
    return Message(body=dumps_json({"method": "ping", **body}), headers={"clock": 1})


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a|aa)*b", "(x*)*y", r"(a)\1", "a?a?a?a?a?aaaaa", "a.*b.*c.*d.*e", "x" * 200],
)
def test_a_destination_pattern_that_could_backtrack_for_ever_is_refused(pattern: str) -> None:
    """Celery compiles the pattern as sent: ``(a+)+$`` against a 40-character node name
    keeps every node's control loop in ``re`` for hours."""
    with pytest.raises(ProtocolError):
        decode_request(_broadcast(pattern=pattern, matcher="pcre"))


@pytest.mark.parametrize("pattern", ["celery@.*", r"w\d+@host", "^(?:a|b)@h$", "w[12]@.+"])
def test_ordinary_destination_patterns_still_match(pattern: str) -> None:
    check_pattern(pattern, "pcre")
    request = decode_request(_broadcast(pattern=pattern, matcher="pcre"))
    assert isinstance(request, Request)


def test_a_refused_pattern_is_refused_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ProtocolError):
        check_pattern("(" * 50 + "a+" + ")+" * 50, "pcre")
    assert time.monotonic() - started < 0.1


@pytest.mark.parametrize(
    "body",
    [
        {"arguments": [1, 2]},
        {"arguments": "x"},
        {"destination": 5},
        {"destination": [1, 2]},
        {"pattern": ["a"]},
        {"reply_to": "queue"},
        {"ticket": {"a": 1}},
    ],
    ids=repr,
)
def test_a_malformed_broadcast_raises_protocol_error_and_nothing_else(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_request(_broadcast(**body))


def test_malformed_clock_or_expiry_headers_raise_protocol_error() -> None:
    message = _broadcast()
    message.headers = {"clock": "many", "expires": "soon"}
    with pytest.raises(ProtocolError):
        decode_request(message)


class _Node:
    def __init__(self) -> None:
        self.grown: list[int] = []

    def pool_grow(self, n: int) -> int:
        self.grown.append(n)
        return n


@pytest.mark.parametrize("n", [-5, "lots", 2.5, True, [1]], ids=repr)
def test_pool_grow_with_a_count_that_is_not_a_whole_positive_number_is_refused(n: Any) -> None:
    node = _Node()
    with pytest.raises(ValueError, match="whole number"):
        COMMANDS["pool_grow"][1](node, {"n": n})  # type: ignore[arg-type]
    assert node.grown == []


def test_pool_grow_stops_at_the_nodes_bound() -> None:
    """One ``pool_grow n=100000`` forked until the machine ran out of memory."""
    spawned: list[int] = []
    supervisor: Any = SimpleNamespace(
        pool="prefork", children={}, concurrency=2, max_concurrency=8, _spawn=spawned.append
    )
    assert Supervisor.grow(supervisor, 100_000) == 8
    assert len(spawned) == 6
    assert Supervisor.grow(supervisor, 1) == 8
    assert len(spawned) == 6


def test_one_unreadable_envelope_costs_only_itself_in_a_mailbox_batch(tmp_path: Path) -> None:
    """The SQLite mailbox read its pending requests in one list comprehension: one bad row
    raised, and every request read with it was dropped."""
    url = f"sqlite:///{tmp_path / 'control.db'}"
    node, client = open_mailbox(url), open_mailbox(url)
    try:
        node.listen("w1@h")
        client.publish(encode_request(Request(method="ping", arguments={})))
        with sqlite3.connect(tmp_path / "control.db") as conn:
            conn.execute(
                "INSERT INTO caraway_pidbox (created, envelope) VALUES (?, ?)",
                (time.time(), b"\xffnot an envelope"),
            )
        client.publish(encode_request(Request(method="stats", arguments={})))
        received = node.receive()
    finally:
        node.close()
        client.close()
    assert [decode_request(message).method for message in received] == ["ping", "stats"]
