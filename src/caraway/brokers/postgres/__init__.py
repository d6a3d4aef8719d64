"""The PostgreSQL broker (``postgresql://``: SKIP LOCKED claims, LISTEN/NOTIFY wake-ups,
leases, a table of delayed messages) and the SQL result store it uses, which also serves
Celery's ``db+postgresql://``, ``db+sqlite://`` and ``db+mysql://`` result URLs."""
