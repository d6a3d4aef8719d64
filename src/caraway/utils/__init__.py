"""Helpers Celery users import from ``celery.utils``."""
