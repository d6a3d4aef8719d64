import os

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])
app.conf.result_extended = True


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task(bind=True)
def spawn(self, n):
    return [add.delay(i, i).id for i in range(n)]
