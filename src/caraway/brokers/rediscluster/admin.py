"""Administration of the Redis Cluster broker: queue sizes and purges (one slot each), the
schedule (parked keys found by SCAN on every master), the dead-letter store and revoked
ids (each in a slot of its own)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from caraway.brokers.contracts import DeadLetter, QueueAdmin, Revocations
from caraway.brokers.rediscluster import scripts
from caraway.brokers.rediscluster.deadletters import (
    forget_letters,
    purge_letters,
    read_letters,
)
from caraway.brokers.rediscluster.keys import queue_keys, queue_of_parked, revoked_key
from caraway.brokers.rediscluster.transport import RedisClusterTransport
from caraway.clients.redis import text
from caraway.clients.rediscluster import connect_cluster, key_prefix, parse_cluster_url, retrying
from caraway.protocol import envelope
from caraway.protocol.message import Message

T = TypeVar("T")


class RedisClusterAdmin(QueueAdmin, Revocations):
    """The admin of ``redis+cluster://`` brokers (options as the transport's)."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = key_prefix(url, self.options)
        self._where = parse_cluster_url(url).redacted()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect_cluster(self.url, self.options)
        return self._client

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(
            what, fn, where=self._where, retries=int(self.options.get("max_retries", 3))
        )

    # -- queues ---------------------------------------------------------------------------

    def size(self, queue: str) -> int:
        keys = queue_keys(self.prefix, queue)
        script = self.client.register_script(scripts.SIZE)
        names = [keys.ready, keys.parked, keys.lease]
        return int(self._run("size", lambda: script(keys=names, args=[time.time()])))

    def purge(self, queue: str) -> int:
        keys = queue_keys(self.prefix, queue)
        script = self.client.register_script(scripts.PURGE)
        return int(self._run("purge", lambda: script(keys=[keys.ready], args=[])))

    def scheduled(self, *, limit: int = 100) -> list[tuple[float, str, Message]]:
        found: list[tuple[float, str, Message]] = []
        for key in self._run("scheduled", self._parked_keys):
            queue = queue_of_parked(self.prefix, key)
            if queue is None:
                continue
            keys = queue_keys(self.prefix, queue)
            entries = self.client.zrange(keys.parked, 0, limit - 1, withscores=True)
            tags = [text(tag) for tag, _ in entries]
            bodies = self.client.hmget(keys.parkedmsg, tags) if tags else []
            for (_, eta), raw in zip(entries, bodies, strict=True):
                if raw:
                    found.append((float(eta), queue, envelope.unpack(raw).message))
        return sorted(found, key=lambda entry: entry[0])[:limit]

    def _parked_keys(self) -> list[str]:
        # braces are glob characters: escaped, they match themselves
        pattern = f"{_escape(self.prefix)}caraway:\\{{*\\}}:parked"
        return sorted({text(key) for key in self.client.scan_iter(match=pattern, count=500)})

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        return self._run("dead_letters", lambda: read_letters(self.client, self.prefix, limit))

    def requeue_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        """Each letter goes back to its queue, then leaves the store (two slots: a crash
        between the two leaves it in both, never in neither)."""
        letters = self._run(
            "requeue_dead_letters", lambda: read_letters(self.client, self.prefix, None)
        )
        wanted = None if ids is None else {str(value) for value in ids}
        chosen = [letter for letter in letters if wanted is None or str(letter.id) in wanted]
        if not chosen:
            return 0
        transport = RedisClusterTransport(self.url, options=self.options)
        try:
            for letter in chosen:
                transport.publish(letter.message, queue=letter.queue)
        finally:
            transport.close()
        return forget_letters(self.client, self.prefix, [str(letter.id) for letter in chosen])

    def purge_dead_letters(self, ids: Sequence[int | str] | None = None) -> int:
        if ids is None:
            return self._run("purge_dead_letters", lambda: purge_letters(self.client, self.prefix))
        wanted = [str(value) for value in ids]
        return self._run(
            "purge_dead_letters", lambda: forget_letters(self.client, self.prefix, wanted)
        )

    # -- revocations ----------------------------------------------------------------------

    def record_revoked(self, task_ids: Sequence[str], *, expires: float) -> None:
        key = revoked_key(self.prefix)
        now = time.time()

        def record() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", now)
            if task_ids:
                pipe.zadd(key, {task_id: now + expires for task_id in task_ids})
            pipe.execute()

        self._run("record_revoked", record)

    def revoked_ids(self) -> list[str]:
        key = revoked_key(self.prefix)
        found = self._run(
            "revoked_ids", lambda: self.client.zrangebyscore(key, time.time(), "+inf")
        )
        return [text(task_id) for task_id in found]

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _escape(text_: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]{}\\" else char for char in text_)
