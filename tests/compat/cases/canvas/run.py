"""Canvas, from the user guide's "Canvas" chapter: chains, groups, chords, stamping."""

import time

from celery import chain, chord, group, signature
from celery.canvas import StampingVisitor
from proj import add, app, fail, note, stamps, tsum

print("chain", chain(add.s(2, 2), add.s(4), add.s(8)).delay().get(timeout=10))
print("pipe", (add.s(2, 2) | add.s(16)).delay().get(timeout=10))
print("group", group(add.s(i, i) for i in range(5)).delay().get(timeout=10))
print("chord", chord((add.s(i, i) for i in range(5)), tsum.s()).delay().get(timeout=10))
print("invert", ~add.s(3, 3))
print("by name", signature("proj.add", args=(1, 1)).delay().get(timeout=10))
print("immutable", (add.s(1, 1) | add.si(5, 5)).delay().get(timeout=10))
print("map", add.chunks([(i, i) for i in range(6)], 3).delay().get(timeout=10))

spread = group(add.s(i, i) for i in range(3)).skew(start=1, stop=2)
print("skew", [task.options["countdown"] for task in spread.tasks])


class Tenant(StampingVisitor):
    def on_signature(self, sig, **headers):
        return {"tenant": "acme"}


stamped = stamps.s()
stamped.stamp(visitor=Tenant(), batch="b1")
print("stamps", stamped.delay().get(timeout=10))

guarded = chord([fail.s(), add.s(1, 1)], tsum.s())
print("on_error returns the chord", guarded.on_error(note.si("chord-errback")) is guarded)
try:
    guarded.delay().get(timeout=10)
except Exception as exc:
    print("chord failed", type(exc).__name__)
deadline = time.monotonic() + 10
while not app.backend.client.get("chord-errback") and time.monotonic() < deadline:
    time.sleep(0.05)
print("errback", app.backend.client.get("chord-errback").decode())
