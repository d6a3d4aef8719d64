import os

from common import wait_for_worker
from proj import app, encode, fetch_feed, plain, resize, retouch

prefix = os.environ["COMPAT_QUEUE"]
wait_for_worker(app)


def show(label, result):
    print(label, result.get(timeout=20).replace(prefix, "P"))


show("glob route", resize.delay())
show("regex route", encode.delay())
show("router function", fetch_feed.delay())
show("default queue", plain.delay())
show("explicit queue", plain.apply_async(queue=prefix + "-feeds"))
show("explicit routing key", plain.apply_async(exchange=prefix + "-media", routing_key="image.x"))
show("retry of a topic route", retouch.delay())
