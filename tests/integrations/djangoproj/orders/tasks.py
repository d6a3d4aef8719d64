import os
import time

from django.db import connection

from caraway import shared_task, signals

from .models import Order


def db_identity():
    """Which database session this process's connection is: the server's backend pid on
    PostgreSQL, the connection object on SQLite."""
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    return id(connection.connection)


@shared_task
def mark_paid(order_id):
    order = Order.objects.get(pk=order_id)  # DoesNotExist if sent before the commit
    order.status = "paid"
    order.save()
    return order.status


@shared_task
def whoami(pause=0.0):
    time.sleep(pause)  # lets a second child take the next message
    return [os.getpid(), db_identity(), Order.objects.count()]


# The fork test: the worker's parent opens a connection before it forks its children
# (a query at import, as some projects make), and uses it again when it shuts down.
if os.environ.get("TEST_PARENT_FILE"):
    PARENT = [os.getpid(), db_identity()]

    @signals.worker_shutdown.connect
    def _report_parent(**_):
        with open(os.environ["TEST_PARENT_FILE"], "w") as handle:
            handle.write(f"{PARENT[0]} {PARENT[1]} {db_identity()} {Order.objects.count()}")
