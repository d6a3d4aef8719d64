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
