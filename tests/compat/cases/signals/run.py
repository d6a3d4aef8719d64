from common import wait_for_worker
from proj import add, app, boom, report, seen

wait_for_worker(app)
print("add", add.delay(2, 2).get(timeout=20))
try:
    boom.delay().get(timeout=20)
except KeyError as exc:
    print("boom", type(exc).__name__)
for line in seen:
    print("caller:", line)
for line in report.delay().get(timeout=20):
    if "proj.report" not in line:
        print("worker:", line)
