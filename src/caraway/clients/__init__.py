"""Connections to each broker's server, one module per client library: URLs, connecting,
and the raw I/O of the hot paths.

Shared by every plug-in of one broker (transport, admin, backend, mailbox, bus); knows
nothing of queues' meaning, results or tasks. Imports only the exceptions, the protocol
and third-party client libraries, so any plug-in may use it.
"""
