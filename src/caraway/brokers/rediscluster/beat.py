"""Periodic-task state on a Redis Cluster, under ``<prefix>caraway-beat:{<namespace>}:``: every
key of one schedule shares the namespace's hash tag, so each script runs on one master (the
keys and scripts are ``caraway.brokers.redisbeat``'s). A cluster pipeline is no transaction,
so the lease is read first and each claim is its own call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from caraway.brokers.redisbeat import RedisBeatCore
from caraway.clients.rediscluster import (
    connect_cluster,
    hash_tag,
    key_prefix,
    parse_cluster_url,
    retrying,
)

T = TypeVar("T")


class RedisClusterBeatStore(RedisBeatCore):
    """The beat store of ``redis+cluster://`` brokers; ``options`` as the transport's
    (``global_keyprefix``, connection options, ``max_retries``)."""

    def key_prefix(self, url: str) -> str:
        return f"{key_prefix(url, self.options)}caraway-beat:{{{hash_tag(self.namespace)}}}:"

    def connect(self, url: str) -> Any:
        self._where = parse_cluster_url(url).redacted()
        return connect_cluster(url, self.options)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(f"beat {what}", fn, where=self._where, retries=self.max_retries)

    def _read(self) -> list[Any]:
        found = [self.client.get(self.lease_key)]
        for key in (self.last_key, self.count_key, self.recent_key, self.runtime_key):
            found.append(self.client.hgetall(key))
        return found

    def _advance_each(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        return [self._advance(keys=keys, args=args) for keys, args in calls]
