"""Revoke by stamped headers; a task so revoked ends REVOKED without running."""

import time

from common import wait_for_worker
from proj import add, app


def settle(result, timeout=20):
    deadline = time.monotonic() + timeout
    while result.state not in ("SUCCESS", "FAILURE", "REVOKED") and time.monotonic() < deadline:
        time.sleep(0.05)
    return result.state


wait_for_worker(app)
for reply in app.control.revoke_by_stamped_headers({"batch": ["b1", "b2"]}, reply=True):
    print("reply", reply)
doomed = add.s(1, 1).stamp(batch="b2").delay()
print("stamped b2", settle(doomed))
print("stamped b3", add.s(2, 2).stamp(batch="b3").delay().get(timeout=20))
steps = add.s(1, 2) | add.s(3)
steps.stamp(batch="b1")  # a chain's stamp() returns None in Celery: stamp, then send
first = steps.delay().parent
print("chain step stamped b1", settle(first))
print("after", add.delay(4, 4).get(timeout=20))
