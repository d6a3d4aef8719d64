"""The web side of the tests: what a view or a shell does, run as ``python drive.py NAME``;
prints one JSON line."""

import json
import sys
import time

import django
import proj  # noqa: F401 - creates the app, as Django's settings import does

django.setup()

from django.db import transaction  # noqa: E402
from orders.models import Order  # noqa: E402
from orders.tasks import mark_paid, whoami  # noqa: E402
from proj.caraway import app  # noqa: E402

from caraway.contrib.django import DjangoTask  # noqa: E402


def registered():
    lazy = "billing.tasks" not in sys.modules  # nothing imported before the app is used
    names = sorted(n for n in app.tasks if not n.startswith("celery."))
    return {"lazy": lazy, "names": names, "base": issubclass(app.Task, DjangoTask)}


def settings():
    return {"queue": app.conf.task_default_queue, "broker": app.conf.broker_url}


def pay():
    order = Order.objects.create(item="book")
    status = mark_paid.delay(order.pk).get(timeout=20)
    order.refresh_from_db()
    return {"returned": status, "stored": order.status}


def on_commit():
    admin = app.admin()
    with transaction.atomic():
        order = Order.objects.create(item="lamp")
        mark_paid.delay_on_commit(order.pk)
        mark_paid.apply_async_on_commit((order.pk,), queue="held")
        held_inside = admin.size("held")
    held_after = admin.size("held")
    try:
        with transaction.atomic():
            doomed = Order.objects.create(item="ghost")
            mark_paid.apply_async_on_commit((doomed.pk,), queue="held")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    held_after_rollback = admin.size("held")
    admin.purge("held")
    deadline = time.monotonic() + 20  # the worker marks it paid once the message is out
    while Order.objects.get(pk=order.pk).status != "paid" and time.monotonic() < deadline:
        time.sleep(0.05)
    order.refresh_from_db()
    return {
        "held_inside": held_inside,
        "held_after": held_after,
        "held_after_rollback": held_after_rollback,
        "status": order.status,
    }


def whoami_many():
    count, queue = int(sys.argv[2]), sys.argv[3]
    results = [whoami.apply_async((0.3,), queue=queue) for _ in range(count)]
    return [r.get(timeout=20) for r in results]


print(json.dumps(globals()[sys.argv[1]]()))
