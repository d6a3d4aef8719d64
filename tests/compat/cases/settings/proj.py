"""The configuration guide: config_from_object, task_annotations, conf reads."""

from celery import Celery

app = Celery("proj")
app.config_from_object("proj_config")


@app.task(bind=True)
def add(self, x, y):
    return [x + y, self.rate_limit, self.acks_late]


@app.task(bind=True)
def other(self):
    return [self.rate_limit, self.acks_late]
