"""The embedded default broker (``sqlite://``): transport, admin, result backend, mailbox and
event bus, all tables in one SQLite file opened through ``caraway.clients.sqlite``."""
