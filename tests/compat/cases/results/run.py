"""Results, from the user guide's "Calling tasks" and "Canvas" chapters."""

from celery import group, uuid
from celery.result import AsyncResult, GroupResult, ResultSet, allow_join_result
from proj import add, fail, spawn

result = add.delay(2, 3)
print("get", result.get(timeout=10))
print("state", result.state, result.successful(), result.failed(), result.ready())
again = AsyncResult(result.id)
print("by id", again.get(timeout=10), again.name, again.args, again.kwargs)
print("date_done set", again.date_done is not None)

failed = fail.delay("boom")
try:
    failed.get(timeout=10)
except ValueError as exc:
    print("raised", type(exc).__name__, exc)
print("propagate=False", repr(failed.get(propagate=False)), failed.state)
try:
    failed.maybe_throw()
except ValueError as exc:
    print("maybe_throw", exc)
print("traceback has the error", "ValueError: boom" in failed.traceback)

results = ResultSet([add.delay(1, 1), add.delay(2, 2)])
print("resultset", results.join(timeout=10), results.completed_count(), len(results))
print("join_native", results.join_native(timeout=10))
seen = []
results.join(timeout=10, callback=lambda task_id, value: seen.append(value))
print("callback", sorted(seen))

members = group(add.s(i, i) for i in range(3)).delay()
print("group", members.get(timeout=10), members.ready(), members.successful())
members.save()
restored = GroupResult.restore(members.id)
print("restored", [r.id for r in restored] == [r.id for r in members], restored.get(timeout=10))
restored.delete()
print("deleted", GroupResult.restore(members.id))

parent = spawn.delay(2)
ids = parent.get(timeout=10)
print("spawned", len(ids), [AsyncResult(i).get(timeout=10) for i in ids])

with allow_join_result():
    print("allowed", add.delay(5, 5).get(timeout=10))

print("uuid", len(uuid()), uuid() != uuid())
forgotten = add.delay(1, 2)
forgotten.get(timeout=10)
forgotten.forget()
print("forgotten", AsyncResult(forgotten.id).state)
