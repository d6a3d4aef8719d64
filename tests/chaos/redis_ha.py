"""Moved to tests/harness/redis.py; this name stays for the suites that import it."""

from tests.harness.redis import MASTER_NAME, Cluster, SentinelGroup, Server, wait

__all__ = ["MASTER_NAME", "Cluster", "SentinelGroup", "Server", "wait"]
