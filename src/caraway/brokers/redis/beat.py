"""Periodic-task state on the Redis broker, under ``<global_keyprefix><namespace>:`` (the
keys and scripts are ``caraway.brokers.redisbeat``'s): reads in one transaction, claims in one
pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from caraway.brokers.redisbeat import RedisBeatCore
from caraway.clients.redis import connect, parse_redis_url, retrying

T = TypeVar("T")


class RedisBeatStore(RedisBeatCore):
    """The beat store of ``redis://`` brokers; ``options`` as the transport's
    (``global_keyprefix``, connection options, ``max_retries``)."""

    def key_prefix(self, url: str) -> str:
        return f"{self.options.get('global_keyprefix') or ''}{self.namespace}:"

    def connect(self, url: str) -> Any:
        self._where = parse_redis_url(url).redacted()
        return connect(url, self.options)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(f"beat {what}", fn, where=self._where, retries=self.max_retries)

    def _read(self) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=True)
        pipe.get(self.lease_key)
        for key in (self.last_key, self.count_key, self.recent_key, self.runtime_key):
            pipe.hgetall(key)
        return list(pipe.execute())

    def _advance_each(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)
        for keys, args in calls:
            self._advance(keys=keys, args=args, client=pipe)
        return list(pipe.execute())
