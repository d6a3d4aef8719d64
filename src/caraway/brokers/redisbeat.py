"""Periodic-task state in Redis, shared by the ``redis://`` and ``redis+cluster://`` plug-ins.

Keys, under the plug-in's prefix: ``lease`` (the leader as JSON, with a PX expiry the leader
renews), ``last`` (hash: entry -> last scheduled instant, ms), ``count`` (hash: entry -> runs
sent), ``recent`` (hash: entry -> its last run as JSON), ``runtime`` (hash: entry -> JSON
spec), and per entry ``runs:<entry>`` (sorted set of the scheduled instants claimed in the
last hour: the per-run keys). The one thing to know: taking, renewing and every claim are Lua
scripts that check the lease holder first, so a leader whose lease ran out can never claim a
run a new leader may claim. A plug-in says where the keys live, how it connects and retries,
and how it batches reads and claims (a pipeline on one server; one call each on a cluster,
whose pipelines are no transaction).
"""

from __future__ import annotations

import abc
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
from caraway.clients.redis import text, to_int

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


class RedisBeatCore(BeatStore):
    """The beat store over one Redis keyspace; subclasses connect and batch."""

    client: Any

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        prefix = self.key_prefix(url)
        self.prefix = prefix
        self.lease_key, self.last_key = prefix + "lease", prefix + "last"
        self.count_key, self.recent_key = prefix + "count", prefix + "recent"
        self.runtime_key = prefix + "runtime"
        self.max_retries = int(self.options.get("max_retries", 3))
        self.client = self.connect(url)
        self._lead = self.client.register_script(_LEAD)
        self._resign = self.client.register_script(_RESIGN)
        self._advance = self.client.register_script(_ADVANCE)
        self._forget = self.client.register_script(_FORGET)

    # -- what a plug-in says -----------------------------------------------------------------
    @abc.abstractmethod
    def key_prefix(self, url: str) -> str:
        """Where this schedule's keys live (ends with ':')."""

    @abc.abstractmethod
    def connect(self, url: str) -> Any:
        """The client the scripts are registered on."""

    @abc.abstractmethod
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` under the plug-in's retry rule (every script is safe to repeat: a
        retried lead renews, a retried claim is refused)."""

    @abc.abstractmethod
    def _read(self) -> list[Any]:
        """The lease, then HGETALL of last, count, recent and runtime."""

    @abc.abstractmethod
    def _advance_each(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the claim script once per (keys, args), in order; its replies."""

    # -- the store ---------------------------------------------------------------------------
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
        lease, last, counts, recent, runtime = self._call("state", self._read)
        leader = None
        if lease:
            found = json.loads(lease)
            leader = BeatLeader(
                str(found["holder"]),
                str(found["node"]),
                float(found["since"]),
                float(found["renewed"]),
            )
        counts = {text(name): to_int(value) for name, value in counts.items()}
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
        if not changes:
            return []
        keep_since = int(time.time() * 1000) - RUN_KEY_SECONDS * 1000
        keys = [self.lease_key, self.last_key, self.count_key, self.recent_key]
        calls = [
            (
                [*keys, self.runs_key(change.name)],
                [
                    self.holder,
                    change.name,
                    "" if change.expected_ms is None else str(change.expected_ms),
                    str(change.to_ms),
                    _run_json(change.runs[-1]) if change.runs else "",
                    keep_since,
                    RUN_KEY_SECONDS,
                    *(run.scheduled_ms for run in change.runs),
                ],
            )
            for change in changes
        ]
        return [bool(result) for result in self._call("advance", lambda: self._advance_each(calls))]

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
