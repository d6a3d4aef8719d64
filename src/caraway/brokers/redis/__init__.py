"""The Redis broker (``redis://``, ``rediss://``, ``redis+socket://``, ``sentinel://``):
transport, admin, result backend, mailbox and event bus in Celery 5.7/kombu 5.7's key
layout, through ``caraway.clients.redis``."""
