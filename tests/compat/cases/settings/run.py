from common import wait_for_worker
from proj import add, app, other

wait_for_worker(app)
print("serializer", app.conf.task_serializer, app.conf.accept_content)
print("timezone", app.conf.timezone)
print("track started", app.conf.task_track_started)
print("annotated add", add.delay(1, 2).get(timeout=20))
print("annotated other", other.delay().get(timeout=20))
