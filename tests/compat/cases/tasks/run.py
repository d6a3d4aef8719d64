"""Tasks, from the user guide's "Tasks" chapter: request, base classes, retries, replace."""

import time

from celery.exceptions import MaxRetriesExceededError  # noqa: F401 - the name exists
from proj import add, app, audited, context, divide, flaky, replaced, shared_double

print("context", sorted(context.apply_async(headers={"tenant": "acme"}).get(timeout=10).items()))
print("custom attribute", audited.audit_level)
failed = audited.delay("k")
try:
    failed.get(timeout=10)
except KeyError as exc:
    print("raised", repr(exc))
deadline = time.monotonic() + 10  # Celery calls on_failure after it stores the result
while not app.backend.client.get(f"einfo:{failed.id}") and time.monotonic() < deadline:
    time.sleep(0.05)
print("einfo", app.backend.client.get(f"einfo:{failed.id}").decode())
print("retried until it worked", flaky.delay("flaky-key").get(timeout=20))
try:
    divide.delay(1, 0).get(timeout=20)
except ZeroDivisionError as exc:
    print("autoretry gave up", type(exc).__name__)
print("replaced", replaced.delay(1).get(timeout=10))
print("called directly", add(2, 2), context.request.called_directly)
print("name", add.name, repr(add.s(1, 2)))
print("shared task", shared_double.delay(21).get(timeout=10), shared_double.name)
