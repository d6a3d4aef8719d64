"""The Redis key layout's priority buckets: kombu's rule, worked out once per Keys."""

from __future__ import annotations

import pytest

from caraway.brokers.redis.keys import Keys


@pytest.mark.parametrize(
    "steps", [[0, 3, 6, 9], [0, 5], [2, 4], [9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
)
def test_each_priority_lands_in_the_highest_step_not_above_it(steps: list[int]) -> None:
    keys = Keys.from_options({"priority_steps": steps})
    for priority in range(-3, 14):
        clamped = max(0, min(9, priority))
        # kombu's rule: the largest step <= the priority, else 0
        expected = max((s for s in steps if s <= clamped), default=0)
        assert keys.bucket(priority) == expected
        suffix = f"{keys.sep}{expected}" if expected else ""
        assert keys.queue_key("q", priority) == f"q{suffix}"
