"""The signals guide: publish signals in the caller, task signals in the worker, sender=."""

import os

from celery import Celery
from celery.signals import (
    after_task_publish,
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_success,
)

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])
app.conf.task_default_queue = os.environ["COMPAT_QUEUE"]

seen = []


@app.task
def add(x, y):
    return x + y


@app.task
def boom():
    raise KeyError("missing")


@app.task
def report():
    return list(seen)


@before_task_publish.connect(sender="proj.add")
def stamp(sender=None, headers=None, body=None, routing_key=None, **kwargs):
    headers["x-stamp"] = "stamped"
    seen.append(f"before_task_publish {sender} {routing_key == app.conf.task_default_queue}")


@after_task_publish.connect
def published(sender=None, headers=None, **kwargs):
    seen.append(f"after_task_publish {sender} {headers['task']}")


@task_prerun.connect(sender=add)
def prerun(sender=None, task_id=None, task=None, args=None, **kwargs):
    seen.append(f"task_prerun {task.name} {args}")


@task_success.connect
def success(sender=None, result=None, **kwargs):
    seen.append(f"task_success {sender.name} {result}")


@task_failure.connect
def failure(sender=None, exception=None, **kwargs):
    seen.append(f"task_failure {sender.name} {type(exception).__name__}")


@task_postrun.connect(sender=add)
def postrun(sender=None, retval=None, **kwargs):
    seen.append(f"task_postrun {sender.name} {retval}")
