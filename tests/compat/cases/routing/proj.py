"""The routing guide: task_queues with exchanges and routing keys, task_routes with glob and
regex patterns and a router function."""

import os
import re

from celery import Celery
from kombu import Exchange, Queue

prefix = os.environ["COMPAT_QUEUE"]
app = Celery("proj", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BROKER"])

media = Exchange(prefix + "-media", type="topic")
app.conf.task_default_queue = prefix + "-default"
app.conf.task_queues = (
    Queue(prefix + "-default", Exchange(prefix + "-default"), routing_key=prefix + "-default"),
    Queue(prefix + "-images", media, routing_key="image.#"),
    Queue(prefix + "-video", media, routing_key="video.#"),
    Queue(prefix + "-feeds", routing_key=prefix + "-feeds"),
)


def route_feeds(name, args, kwargs, options, task=None, **kw):
    if name == "proj.fetch_feed":
        return {"queue": prefix + "-feeds"}
    return None


app.conf.task_routes = [
    route_feeds,
    {
        "proj.image.*": {"queue": prefix + "-images", "routing_key": "image.compress"},
        re.compile(r"proj\.video\.(encode|cut)"): {
            "queue": prefix + "-video",
            "routing_key": "video.encode",
        },
    },
]


def where(request):
    return request.delivery_info.get("routing_key")


@app.task(name="proj.image.resize", bind=True)
def resize(self):
    return where(self.request)


@app.task(name="proj.video.encode", bind=True)
def encode(self):
    return where(self.request)


@app.task(name="proj.fetch_feed", bind=True)
def fetch_feed(self):
    return where(self.request)


@app.task(name="proj.plain", bind=True)
def plain(self):
    return where(self.request)


@app.task(name="proj.image.retouch", bind=True, default_retry_delay=0.2)
def retouch(self):
    # a retry is sent back through the exchange and routing key the task came by
    if self.request.retries < 1:
        raise self.retry()
    return f"{where(self.request)} after {self.request.retries} retry"
