"""Integrations with the frameworks caraway's users work in (Django, OpenTelemetry), and
Celery's contrib helpers (``abortable``).

Each lives in its own package and imports its framework only where it is used, so
``pip install caraway`` needs none of them; each has its own extra
(``caraway[django]``, ``caraway[opentelemetry]``).
"""
