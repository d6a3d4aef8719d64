"""caraway: a distributed task queue for Python, wire-compatible with Celery 5."""
