"""The tasks guide on retries: self.retry with countdown and max_retries, autoretry_for."""

import os

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])
app.conf.task_default_queue = os.environ["COMPAT_QUEUE"]


@app.task(bind=True, max_retries=3)
def flaky(self, succeed_at):
    if self.request.retries < succeed_at:
        raise self.retry(countdown=0.2, exc=OSError("not yet"))
    return f"ran {self.request.retries + 1} times"


@app.task(bind=True, max_retries=1)
def hopeless(self):
    raise self.retry(countdown=0.2, exc=ValueError("never"))


@app.task(bind=True, autoretry_for=(KeyError,), retry_kwargs={"max_retries": 2, "countdown": 0.2})
def auto(self):
    raise KeyError(f"attempt {self.request.retries}")
