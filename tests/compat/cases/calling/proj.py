"""The calling guide: delay, apply_async with countdown, expires, compression, links."""

import os

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])
app.conf.task_default_queue = os.environ["COMPAT_QUEUE"]


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def boom(message):
    raise ValueError(message)


@app.task(bind=True)
def whoami(self, *args, **kwargs):
    return {"args": list(args), "kwargs": kwargs, "retries": self.request.retries}
