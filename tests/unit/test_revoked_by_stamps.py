"""Celery's rule for a message revoked by stamped headers (``Request.revoked``): a stamped
header whose value, or one of whose values for a list, is among those revoked for it."""

from __future__ import annotations

from typing import Any

import pytest

from caraway.lifecycle import revoked_by_stamps
from caraway.protocol.message import TaskMessage


def _message(**stamps: Any) -> TaskMessage:
    return TaskMessage(id="t", task="x", stamped_headers=list(stamps), stamps=stamps)


@pytest.mark.parametrize(
    ("stamps", "revoked", "match"),
    [
        ({"batch": "b1"}, {"batch": ["b1", "b2"]}, {"batch": "b1"}),
        ({"batch": ["b0", "b2"]}, {"batch": ["b2"]}, {"batch": "b2"}),
        ({"batch": "b3"}, {"batch": ["b1"]}, None),
        ({"tenant": "b1"}, {"batch": ["b1"]}, None),
        ({}, {"batch": ["b1"]}, None),
    ],
)
def test_a_message_is_revoked_by_a_matching_stamp(
    stamps: dict[str, Any], revoked: dict[str, list[Any]], match: dict[str, Any] | None
) -> None:
    assert revoked_by_stamps(_message(**stamps), revoked) == match


def test_stamp_records_cross_the_pipe_and_bad_shapes_are_refused() -> None:
    from caraway.worker.ipc import RevokeStamps, TaskStarted, decode, encode

    command = RevokeStamps({"batch": ["b1", 2, None]})
    assert decode(encode(command)) == command
    started = TaskStarted("t", "x", "1", False, True, None, None, stamps={"batch": ["b1"]})
    assert decode(encode(started)).stamps == {"batch": ["b1"]}
    with pytest.raises(ValueError, match="headers"):
        decode(b'["revoke_stamps", {"batch": "not a list"}]\n')
