"""Revoking by stamped header (Celery 5.3+), from the workers guide."""

import os

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])


@app.task
def add(x, y):
    return x + y
