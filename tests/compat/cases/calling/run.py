from datetime import datetime, timedelta, timezone

from common import wait_for_worker
from proj import add, app, boom, mul, whoami

wait_for_worker(app)
print("delay", add.delay(2, 2).get(timeout=20))
print("apply_async", add.apply_async((2, 3)).get(timeout=20))
print("kwargs", add.apply_async(kwargs={"x": 1, "y": 9}).get(timeout=20))
print("countdown", add.apply_async((1, 1), countdown=1).get(timeout=20))
eta = datetime.now(timezone.utc) + timedelta(seconds=1)
print("eta", mul.apply_async((3, 3), eta=eta).get(timeout=20))
late = add.apply_async((1, 2), countdown=2, expires=0.5)
try:
    late.get(timeout=20)
except Exception as exc:
    print("expired before its countdown", type(exc).__name__, late.state)
print("compression", add.apply_async((4, 4), compression="zlib").get(timeout=20))
print("bzip2", add.apply_async((5, 5), compression="bzip2").get(timeout=20))
print("serializer", whoami.apply_async((1, "a"), {"k": [1, 2]}, serializer="json").get(timeout=20))
print("send_task", app.send_task("proj.add", args=(7, 8)).get(timeout=20))
failing = boom.delay("kaboom")
try:
    failing.get(timeout=20)
except ValueError as exc:
    print("failure", type(exc).__name__, exc, failing.state)
print("propagate=False", repr(failing.get(propagate=False)))
linked = add.apply_async((2, 2), link=mul.s(10))
print("link", linked.get(timeout=20))
print("signature", add.s(1, 2).delay().get(timeout=20))
print("chain", (add.s(1, 1) | mul.s(5)).delay().get(timeout=20))
