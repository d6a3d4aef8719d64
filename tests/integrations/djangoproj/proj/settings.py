"""A Django project for caraway's integration tests; the test sets the database and broker."""

import os

SECRET_KEY = "caraway-integration-tests-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "orders.apps.OrdersConfig",
    "billing",
]


def _database():
    name = os.environ["TEST_DB_NAME"]
    max_age = os.environ.get("TEST_CONN_MAX_AGE", "none")
    common = {
        "CONN_MAX_AGE": None if max_age == "none" else int(max_age),
        "CONN_HEALTH_CHECKS": True,
    }
    if os.environ["TEST_DB_ENGINE"] == "postgresql":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            **common,
        }
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, **common}


DATABASES = {"default": _database()}

CARAWAY_BROKER_URL = os.environ["TEST_BROKER"]
CARAWAY_RESULT_BACKEND = os.environ["TEST_BROKER"]
CARAWAY_TASK_DEFAULT_QUEUE = "django"
CARAWAY_WORKER_PREFETCH_MULTIPLIER = 1

# the names an existing Celery project has (read with namespace="CELERY")
CELERY_BROKER_URL = os.environ["TEST_BROKER"]
CELERY_RESULT_BACKEND = os.environ["TEST_BROKER"]
CELERY_TASK_DEFAULT_QUEUE = "celery-named"
