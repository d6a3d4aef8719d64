import os
import threading
import time

from celery import Celery

app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])


@app.task
def nap(seconds):
    time.sleep(seconds)
    return threading.get_native_id()
