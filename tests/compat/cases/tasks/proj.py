import os

from celery import Celery, Task, shared_task

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])


class Audited(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        app.backend.client.set(
            f"einfo:{task_id}",
            f"{einfo.type.__name__}|{'Traceback' in einfo.traceback}|{self.audit_level}",
        )


@app.task(base=Audited, audit_level="high")
def audited(x):
    raise KeyError(x)


@app.task(bind=True)
def context(self):
    return {
        "tenant": self.request.tenant,
        "called_directly": self.request.called_directly,
        "retries": self.request.retries,
        "root_is_self": self.request.root_id == self.request.id,
        "hostname": self.request.hostname,
    }


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, key):
    tries = app.backend.client.incr(key)
    if tries < 3:
        raise self.retry(exc=RuntimeError(f"try {tries}"))
    return tries


@app.task(autoretry_for=(ZeroDivisionError,), retry_kwargs={"max_retries": 1, "countdown": 0})
def divide(x, y):
    return x / y


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def replaced(self, n):
    return self.replace(add.s(n, 100))


@shared_task
def shared_double(x):
    return x * 2
