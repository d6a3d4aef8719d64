"""Results on a Redis Cluster: Celery's ``celery-task-meta-<id>`` documents (one key each, so
any slot), announced by sharded pub/sub on a channel named like the key; chords counted by a
script on keys that share the group's hash tag.

A store is one script: it refuses to overwrite a final state (SUCCESS, FAILURE, REVOKED), sets
the document with its expiry and SPUBLISHes it. Waiters SSUBSCRIBE to the key's channel
before reading, so a store in between is never missed. The one thing to know: Celery has no
Redis Cluster backend; the documents are Celery's, the chord keys are caraway's.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from caraway.brokers.contracts import Backend, ChordPart, ChordStore, GroupStore
from caraway.clients.rediscluster import (
    connect_cluster,
    hash_tag,
    key_prefix,
    parse_cluster_url,
    retrying,
)
from caraway.exceptions import BackendError, BrokerError
from caraway.protocol.results import chord_member

T = TypeVar("T")

#: KEYS: the document's key. ARGV: document, expiry in ms (0 = none).
_STORE = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, doc = pcall(cjson.decode, old)
  if ok and type(doc) == 'table' then
    local s = doc['status']
    if s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' then return 0 end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('SPUBLISH', KEYS[1], ARGV[1])
return 1
"""
#: KEYS: chord (hash: size, extra, state, claimed_at), parts (zset marker -> index),
#: members (hash marker -> member). ARGV: marker, score, member, now, expiry ms.
_JOIN = """
if redis.call('HGET', KEYS[1], 'state') == 'done' then return false end
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local extra = tonumber(redis.call('HGET', KEYS[1], 'extra') or '0')
if not size or redis.call('ZCARD', KEYS[2]) < size + extra then return false end
local state = redis.call('HGET', KEYS[1], 'state') or 'open'
local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0')
if state == 'claimed' and claimed >= tonumber(ARGV[4]) - 21 then return false end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'claimed_at', ARGV[4])
local markers = redis.call('ZRANGE', KEYS[2], 0, -1)
return redis.call('HMGET', KEYS[3], unpack(markers))
"""
#: KEYS: chord, parts, members. True only for the caller that completed the chord.
_DONE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'claimed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done')
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""
#: a header task without an index sorts last, as Celery's "+inf" score does
_LAST = "+inf"


class RedisClusterBackend(Backend, GroupStore, ChordStore):
    """Results of ``redis+cluster://`` (options: ``global_keyprefix``, ``max_retries``...)."""

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = key_prefix(url, self.options)
        self._where = parse_cluster_url(url).redacted()
        self.client: Any = connect_cluster(url, self.options)
        self._store = self.client.register_script(_STORE)
        self._join = self.client.register_script(_JOIN)
        self._done = self.client.register_script(_DONE)

    def task_key(self, task_id: str) -> str:
        return f"{self.prefix}celery-task-meta-{task_id}"

    def group_key(self, group_id: str) -> str:
        return f"{self.prefix}celery-taskset-meta-{group_id}"

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return retrying(
                what, fn, where=self._where, retries=int(self.options.get("max_retries", 3))
            )
        except BrokerError as exc:
            raise BackendError(str(exc)) from exc

    # -- results -------------------------------------------------------------------------

    def store(
        self,
        task_id: str,
        document: bytes,
        *,
        state: str,
        expires: float | None,
        reply_to: str | None = None,
    ) -> bool:
        key, ttl = self.task_key(task_id), _ttl_ms(expires)
        return bool(self._run("store", lambda: self._store(keys=[key], args=[document, ttl])))

    def load(self, task_id: str) -> bytes | None:
        return _opt_bytes(self._run("load", lambda: self.client.get(self.task_key(task_id))))

    def load_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        def load() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.get(self.task_key(task_id))
            return list(pipe.execute())

        return [_opt_bytes(value) for value in self._run("load_many", load)] if task_ids else []

    def wait(
        self,
        task_id: str,
        *,
        until: Callable[[bytes], bool],
        timeout: float | None,
    ) -> bytes | None:
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        key = self.task_key(task_id)
        pubsub = self._run("wait", lambda: _subscribed(self.client, key))
        try:
            while True:
                document = self.load(task_id)
                if document is not None and until(document):
                    return document
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(redis.RedisError):  # a failover: read again
                    pubsub.get_sharded_message(timeout=min(left, 1.0))
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()

    def forget(self, task_id: str) -> None:
        self._run("forget", lambda: self.client.delete(self.task_key(task_id)))

    # -- groups --------------------------------------------------------------------------

    def save_group(self, group_id: str, document: bytes, *, expires: float | None) -> None:
        key, ttl = self.group_key(group_id), _ttl_ms(expires)
        self._run("save_group", lambda: self.client.set(key, document, px=ttl or None))

    def load_group(self, group_id: str) -> bytes | None:
        return _opt_bytes(
            self._run("load_group", lambda: self.client.get(self.group_key(group_id)))
        )

    def forget_group(self, group_id: str) -> None:
        self._run("forget_group", lambda: self.client.delete(self.group_key(group_id)))

    # -- chords: one script per join, on keys that share the group's slot ----------------

    def _chord_keys(self, group_id: str) -> list[str]:
        base = f"{self.prefix}caraway-chord:{{{hash_tag(group_id)}}}"
        return [base, f"{base}:parts", f"{base}:members"]

    def chord_set_size(self, group_id: str, size: int, *, expires: float) -> None:
        key = self._chord_keys(group_id)[0]

        def set_size() -> None:
            self.client.hset(key, "size", int(size))
            self.client.pexpire(key, int(expires * 1000))

        self._run("chord_set_size", set_size)

    def chord_extend(self, group_id: str, count: int) -> None:
        key = self._chord_keys(group_id)[0]
        self._run("chord_extend", lambda: self.client.hincrby(key, "extra", int(count)))

    def chord_join_many(
        self, parts: Sequence[ChordPart], *, expires: float
    ) -> list[list[Any] | None]:
        return [self._join_one(part, expires) for part in parts]

    def _join_one(self, part: ChordPart, expires: float) -> list[Any] | None:
        keys = self._chord_keys(part.group_id)
        args = [
            f"{part.task_id}:{part.index}",
            _LAST if part.index is None else part.index,
            chord_member(part.task_id, part.state, part.result_json),
            time.time(),
            int(expires * 1000),
        ]
        found = self._run("chord_join", lambda: self._join(keys=keys, args=args))
        if not found:
            return None
        return [json.loads(member) for member in found]

    def chord_done(self, group_id: str) -> bool:
        keys = self._chord_keys(group_id)
        return bool(self._run("chord_done", lambda: self._done(keys=keys, args=[])))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _subscribed(client: Any, channel: str) -> Any:
    """A sharded subscription to ``channel``, confirmed by the server."""
    pubsub = client.pubsub()
    pubsub.ssubscribe(channel)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = pubsub.get_sharded_message(timeout=0.1)
        if message is not None and message.get("type") == "ssubscribe":
            break
    return pubsub


def _ttl_ms(expires: float | None) -> int:
    return 0 if expires is None else max(1, int(expires * 1000))


def _opt_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()
