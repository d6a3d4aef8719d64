"""Task states and their precedence, as Celery names and orders them.

A state is a plain string so that result documents written by Celery and caraway compare
equal. ``precedence`` decides which of two states wins when both are reported for one
task (a late STARTED must never replace a SUCCESS).
"""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

#: Highest precedence first; a custom state ranks where ``None`` stands (Celery's rule).
PRECEDENCE: tuple[str | None, ...] = (
    SUCCESS,
    FAILURE,
    None,
    REVOKED,
    STARTED,
    RECEIVED,
    REJECTED,
    RETRY,
    PENDING,
)
_RANK = {state: index for index, state in enumerate(PRECEDENCE)}

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})


def precedence(state: str) -> int:
    """Return the rank of ``state``: lower wins."""
    return _RANK.get(state, _RANK[None])


def outranks(state: str, other: str) -> bool:
    """True when ``state`` should replace ``other`` as a task's reported state."""
    return precedence(state) < precedence(other)
