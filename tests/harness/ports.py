"""Free loopback ports for private servers and proxies.

A port is free when this process can bind it now; the server that takes it a moment later
may lose a race with another test, so servers that fail to start are retried by callers.
"""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(offset: int = 10000) -> int:
    """A free port below 55536 whose ``port + offset`` is free too (a Redis Cluster bus)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if is_free(port) and is_free(port + offset):
            return port
    raise AssertionError(f"no free port pair {offset} apart")
