from common import wait_for_worker
from proj import app, auto, flaky, hopeless

wait_for_worker(app)
print("flaky", flaky.delay(2).get(timeout=30))
for task in (hopeless, auto):
    result = task.delay()
    try:
        result.get(timeout=30)
    except Exception as exc:
        print(task.name, type(exc).__name__, exc, result.state)
