import os

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)


@app.task
def fail(*args):
    raise ValueError("header failed")


@app.task(bind=True)
def stamps(self, *args):
    return sorted((self.request.stamps or {}).items())


@app.task
def note(key, *args):
    app.backend.client.set(key, "errback ran")
