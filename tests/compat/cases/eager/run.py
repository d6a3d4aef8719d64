"""Eager mode, from the user guide's "Testing" chapter: everything runs in this process."""

from celery import chain, chord, group
from proj import add, flaky, replaced, tsum

result = add.delay(2, 2)
print("eager", result.get(), result.state, type(result).__name__)
print("chain", chain(add.s(1, 1), add.s(10)).delay().get())
print("group", group(add.s(i, i) for i in range(3)).delay().get())
print("chord without a backend", chord([add.s(1, 1), add.s(2, 2)], tsum.s()).delay().get())
attempts = []
print("retries in place", flaky.apply((attempts,)).get(), attempts)
print("replace", replaced.apply((1,)).get())
print("apply", add.apply((3, 4)).get(), add.apply((3, 4)).successful())
try:
    flaky([])
except RuntimeError as exc:
    print("direct call retry raises", exc)
