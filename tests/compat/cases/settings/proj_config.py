"""A configuration module as the configuration guide writes one (new and old names)."""

import os

broker_url = os.environ["TEST_BROKER"]
result_backend = os.environ["TEST_BROKER"]
task_default_queue = os.environ["COMPAT_QUEUE"]
task_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
task_annotations = {"proj.add": {"rate_limit": "100/s"}, "*": {"acks_late": True}}
CELERY_TASK_TRACK_STARTED = False
