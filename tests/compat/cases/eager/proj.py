from celery import Celery

app = Celery("proj", broker="redis://127.0.0.1:6379/8")  # no result backend
app.conf.task_always_eager = True
app.conf.task_eager_propagates = False


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, attempts):
    attempts.append(self.request.retries)
    if len(attempts) < 3:
        raise self.retry(exc=RuntimeError("again"))
    return len(attempts)


@app.task(bind=True)
def replaced(self, n):
    return self.replace(add.s(n, 100))
