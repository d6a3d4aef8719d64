"""Periodic-task state on a Redis Cluster, under ``<prefix>caraway-beat:{<namespace>}:``: every
key of one schedule shares the namespace's hash tag, so each script runs on one master.

Keys: ``lease`` (the leader as JSON, with a PX expiry the leader renews), ``last`` (hash:
entry -> last scheduled instant, ms), ``count`` (hash: entry -> runs sent), ``recent``
(hash: entry -> its last run as JSON), ``runtime`` (hash: entry -> JSON spec), and per
entry ``runs:<entry>`` (sorted set of the scheduled instants claimed in the last hour: the
per-run keys). The one thing to know:
taking, renewing and every claim are Lua scripts that check the lease holder first, so a
leader whose lease ran out can never claim a run a new leader may claim.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from caraway.brokers.contracts import (
    BeatAdvance,
    BeatEntryState,
    BeatLeader,
    BeatRun,
    BeatState,
    BeatStore,
)
from caraway.clients.redis import text
from caraway.clients.rediscluster import (
    connect_cluster,
    hash_tag,
    key_prefix,
    parse_cluster_url,
    retrying,
)

T = TypeVar("T")

#: run keys live this long: past it, an entry's ``last`` alone fences the run
RUN_KEY_SECONDS = 3_600

# KEYS[1] lease; ARGV: holder, the new lease's JSON, ttl ms, now -> 0 held by another, 1 ours
_LEAD = """
local current = redis.call('GET', KEYS[1])
if current then
  local lease = cjson.decode(current)
  if lease['holder'] ~= ARGV[1] then return 0 end
  lease['renewed'] = tonumber(ARGV[4])
  redis.call('SET', KEYS[1], cjson.encode(lease), 'PX', ARGV[3])
  return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1] lease; ARGV[1] holder
_RESIGN = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['holder'] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, last, count, recent, runs (the entry's claimed instants).
# ARGV: holder, entry, expected ms ('' = never seen), new ms, recent JSON ('' = keep),
#       keep runs since (ms), run key ttl seconds, then the runs' scheduled ms.
# -> 1 applied, 0 refused
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['holder'] ~= ARGV[1] then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if (last or '') ~= ARGV[3] then return 0 end
for i = 8, #ARGV do
  if redis.call('ZSCORE', KEYS[5], ARGV[i]) then return 0 end
end
if #ARGV >= 8 then
  for i = 8, #ARGV do redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[7])
  redis.call('HINCRBY', KEYS[3], ARGV[2], #ARGV - 7)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], ARGV[2], ARGV[5]) end
return 1
"""

# KEYS: lease, last, count, recent; ARGV[1] holder, then the entries to drop
_FORGET = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['holder'] ~= ARGV[1] then return 0 end
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
return 1
"""


def _run_json(run: BeatRun) -> str:
    return json.dumps([run.scheduled_ms, run.task_id, run.holder, run.sent_at])


def _run_of(raw: Any) -> BeatRun | None:
    if not raw:
        return None
    scheduled_ms, task_id, holder, sent_at = json.loads(raw)
    return BeatRun(int(scheduled_ms), str(task_id), str(holder), float(sent_at))


class RedisClusterBeatStore(BeatStore):
    """The beat store of ``redis+cluster://`` brokers; ``options`` as the transport's
    (``global_keyprefix``, connection options, ``max_retries``)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        prefix = f"{key_prefix(url, self.options)}caraway-beat:{{{hash_tag(self.namespace)}}}:"
        self.prefix = prefix
        self.lease_key, self.last_key = prefix + "lease", prefix + "last"
        self.count_key, self.recent_key = prefix + "count", prefix + "recent"
        self.runtime_key = prefix + "runtime"
        self.max_retries = int(self.options.get("max_retries", 3))
        self._where = parse_cluster_url(url).redacted()
        self.client: Any = connect_cluster(url, self.options)
        self._lead = self.client.register_script(_LEAD)
        self._resign = self.client.register_script(_RESIGN)
        self._advance = self.client.register_script(_ADVANCE)
        self._forget = self.client.register_script(_FORGET)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        # every script is safe to repeat: a retried lead renews, a retried claim is refused
        return retrying(f"beat {what}", fn, where=self._where, retries=self.max_retries)

    def runs_key(self, name: str) -> str:
        return f"{self.prefix}runs:{name}"

    def lead(self) -> bool:
        now = time.time()
        lease = {"holder": self.holder, "node": self.node, "since": now, "renewed": now}
        ttl = max(1, int(self.lease_seconds * 1000))
        args: list[Any] = [self.holder, json.dumps(lease), ttl, repr(now)]
        return bool(self._call("lead", lambda: self._lead(keys=[self.lease_key], args=args)))

    def resign(self) -> None:
        self._call("resign", lambda: self._resign(keys=[self.lease_key], args=[self.holder]))

    def state(self) -> BeatState:
        def read() -> list[Any]:
            # one slot, but a cluster pipeline is no transaction: read the lease first
            found = [self.client.get(self.lease_key)]
            for key in (self.last_key, self.count_key, self.recent_key, self.runtime_key):
                found.append(self.client.hgetall(key))
            return found

        lease, last, counts, recent, runtime = self._call("state", read)
        leader = None
        if lease:
            found = json.loads(lease)
            leader = BeatLeader(
                str(found["holder"]),
                str(found["node"]),
                float(found["since"]),
                float(found["renewed"]),
            )
        counts = {text(name): int(value) for name, value in counts.items()}
        recent = {text(name): value for name, value in recent.items()}
        entries = {
            text(name): BeatEntryState(
                int(value), counts.get(text(name), 0), _run_of(recent.get(text(name)))
            )
            for name, value in last.items()
        }
        return BeatState(
            leader, entries, {text(name): bytes(spec) for name, spec in runtime.items()}
        )

    def advance(self, changes: Sequence[BeatAdvance]) -> list[bool]:
        def run() -> list[Any]:
            results: list[Any] = []
            keep_since = int(time.time() * 1000) - RUN_KEY_SECONDS * 1000
            for change in changes:
                keys = [self.lease_key, self.last_key, self.count_key, self.recent_key]
                args: list[Any] = [
                    self.holder,
                    change.name,
                    "" if change.expected_ms is None else str(change.expected_ms),
                    str(change.to_ms),
                    _run_json(change.runs[-1]) if change.runs else "",
                    keep_since,
                    RUN_KEY_SECONDS,
                    *(run.scheduled_ms for run in change.runs),
                ]
                results.append(self._advance(keys=[*keys, self.runs_key(change.name)], args=args))
            return results

        if not changes:
            return []
        return [bool(result) for result in self._call("advance", run)]

    def forget(self, names: Sequence[str]) -> None:
        if not names:
            return
        keys = [self.lease_key, self.last_key, self.count_key, self.recent_key]
        self._call("forget", lambda: self._forget(keys=keys, args=[self.holder, *names]))

    def put_entry(self, name: str, spec: bytes) -> None:
        self._call("put entry", lambda: self.client.hset(self.runtime_key, name, spec))

    def remove_entry(self, name: str) -> bool:
        return bool(self._call("remove entry", lambda: self.client.hdel(self.runtime_key, name)))

    def close(self) -> None:
        self.client.close()
