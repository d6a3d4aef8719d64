"""caraway: a distributed task queue for Python, wire-compatible with Celery 5."""

__version__ = "0.1.0"
