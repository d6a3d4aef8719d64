"""Benchmarks comparing caraway and Celery 5.7.0 on the same broker in one run.

``python -m benchmarks`` runs each workload in fresh subprocesses for both systems (Celery
from its own virtualenv, ``benchmarks/.venv-celery``) and prints a table of medians.
Nothing here is imported by caraway or run in CI; see docs/benchmarks.md.
"""
