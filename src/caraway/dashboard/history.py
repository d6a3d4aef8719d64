"""The dashboard's time series: what the charts show, bounded, and how it is saved.

Per bucket of ``step`` seconds: per task name (and ``ALL`` for every task), tasks
succeeded and failed and their runtime and queue wait percentiles; failures by exception
type; queue depth per queue. The open (newest) bucket keeps at most ``SAMPLES`` samples per
task name; a bucket that closes keeps only its percentiles. ``window`` buckets are kept,
the oldest dropped, so memory and the saved document are bounded whatever the load.
Pure: the caller stamps times and does the I/O.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

#: runtime and wait samples kept per task name and bucket (a uniform reservoir)
SAMPLES = 64
PERCENTILES = (50, 90, 99)
FORMAT = 2
#: the entry that counts every task, whatever its name
ALL = "*"


@dataclass
class _TaskBucket:
    succeeded: int = 0
    failed: int = 0
    seen: int = 0
    runtime: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    #: True once the bucket closed: runtime and wait then hold the PERCENTILES only
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.runtime = _summary(self.runtime)
            self.wait = _summary(self.wait)
            self.closed = True

    def percentiles(self, samples: list[float]) -> dict[str, float | None]:
        values = list(samples) if self.closed else _summary(samples)
        if not values:
            return {f"p{p}": None for p in PERCENTILES}
        return {f"p{p}": v for p, v in zip(PERCENTILES, values, strict=True)}


def _summary(samples: list[float]) -> list[float]:
    values = [percentile(samples, p) for p in PERCENTILES]
    return [v for v in values if v is not None]


@dataclass
class _Bucket:
    tasks: dict[str, _TaskBucket] = field(default_factory=dict)
    #: task name -> exception type -> count
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)


def exception_type(exception: str | None) -> str:
    """``ValueError('x')`` -> ``ValueError``: the type name of an event's exception repr."""
    text = (exception or "").strip()
    name = text.split("(", 1)[0].strip()
    return name if name.replace(".", "").replace("_", "").isalnum() else "unknown"


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class History:
    """Buckets of ``step`` seconds, ``window`` of them kept."""

    def __init__(self, *, step: int = 30, window: int = 2880, seed: int | None = None) -> None:
        self.step = step
        self.window = window
        self.buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._random = random.Random(seed)

    def _bucket(self, when: float) -> _Bucket | None:
        key = int(when // self.step) * self.step
        bucket = self.buckets.get(key)
        if bucket is not None:
            return bucket
        newest = next(reversed(self.buckets), None)
        if newest is not None and key <= newest - self.window * self.step:
            return None  # older than what we keep
        bucket = self.buckets[key] = _Bucket()
        if newest is not None and key < newest:
            self.buckets = OrderedDict(sorted(self.buckets.items()))
        elif newest is not None:
            for entry in self.buckets[newest].tasks.values():
                entry.close()  # a bucket that is no longer the newest keeps percentiles only
        while len(self.buckets) > self.window:
            self.buckets.popitem(last=False)
        return bucket

    def task_finished(
        self,
        when: float,
        name: str,
        *,
        ok: bool,
        runtime: float | None,
        wait: float | None,
        exception: str | None = None,
    ) -> None:
        """Count one task that succeeded (``ok``) or failed at ``when``."""
        bucket = self._bucket(when)
        if bucket is None:
            return
        if not ok:
            kinds = bucket.failures.setdefault(name, {})
            kind = exception_type(exception)
            kinds[kind] = kinds.get(kind, 0) + 1
        for key in (name, ALL):
            entry = bucket.tasks.setdefault(key, _TaskBucket())
            if ok:
                entry.succeeded += 1
            else:
                entry.failed += 1
            entry.seen += 1
            self._sample(entry, entry.runtime, runtime)
            self._sample(entry, entry.wait, wait)

    def _sample(self, entry: _TaskBucket, samples: list[float], value: float | None) -> None:
        seen = entry.seen
        if entry.closed or value is None or not math.isfinite(value) or value < 0:
            return
        if len(samples) < SAMPLES:
            samples.append(value)
        else:
            slot = self._random.randrange(seen)
            if slot < SAMPLES:
                samples[slot] = value

    def queue_depth(self, when: float, depths: dict[str, int]) -> None:
        """The latest depth of each queue at ``when`` (a later reading replaces it)."""
        bucket = self._bucket(when)
        if bucket is not None:
            bucket.queues.update(depths)

    # -- reading ---------------------------------------------------------------

    def series(self, *, since: float = 0.0, task: str | None = None) -> dict[str, Any]:
        """The charts' data from ``since`` on: one point per bucket, for one task name or all.

        Rates are tasks per second over the bucket; percentiles in seconds; gaps are
        buckets with no data (absent, so a chart does not draw a false zero latency).
        """
        points: list[dict[str, Any]] = []
        failures: dict[str, int] = {}
        queues: dict[str, list[list[float]]] = {}
        names: set[str] = set()
        for start, bucket in self.buckets.items():
            names.update(name for name in bucket.tasks if name != ALL)
            if start + self.step <= since:
                continue
            points.append(self._point(start, bucket, task))
            for name, kinds in bucket.failures.items():
                if task is None or name == task:
                    for kind, count in kinds.items():
                        failures[kind] = failures.get(kind, 0) + count
            for queue, depth in bucket.queues.items():
                queues.setdefault(queue, []).append([start, depth])
        return {
            "step": self.step,
            "task": task,
            "tasks": sorted(names),
            "points": points,
            "failures": dict(sorted(failures.items(), key=lambda item: -item[1])),
            "queues": queues,
        }

    def _point(self, start: int, bucket: _Bucket, task: str | None) -> dict[str, Any]:
        entry = bucket.tasks.get(ALL if task is None else task) or _TaskBucket()
        return {
            "t": start,
            "succeeded": entry.succeeded / self.step,
            "failed": entry.failed / self.step,
            "count": entry.succeeded + entry.failed,
            "runtime": entry.percentiles(entry.runtime),
            "wait": entry.percentiles(entry.wait),
        }

    # -- saving ----------------------------------------------------------------

    def dump(self, *, buckets: int | None = None) -> dict[str, Any]:
        """The newest ``buckets`` (all by default) as plain data for :meth:`load`."""
        kept = list(self.buckets.items())
        kept = kept[-buckets:] if buckets is not None and buckets > 0 else kept
        return {
            "step": self.step,
            "buckets": [
                [
                    start,
                    {
                        name: [e.succeeded, e.failed, e.seen, e.runtime, e.wait, e.closed]
                        for name, e in bucket.tasks.items()
                    },
                    bucket.failures,
                    bucket.queues,
                ]
                for start, bucket in (kept if buckets != 0 else [])
            ],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take saved buckets (a different ``step`` is dropped: its buckets do not fit)."""
        if data.get("step") != self.step:
            return
        for start, tasks, failures, queues in data.get("buckets", [])[-self.window :]:
            bucket = _Bucket(
                tasks={
                    str(name): _TaskBucket(
                        int(s), int(f), int(seen), list(rt), list(wt), bool(closed)
                    )
                    for name, (s, f, seen, rt, wt, closed) in tasks.items()
                },
                failures={
                    str(name): {str(k): int(v) for k, v in kinds.items()}
                    for name, kinds in failures.items()
                },
                queues={str(k): int(v) for k, v in queues.items()},
            )
            self.buckets[int(start)] = bucket
        self.buckets = OrderedDict(sorted(self.buckets.items())[-self.window :])


def pack(document: dict[str, Any], *, cap: int) -> bytes:
    """``document`` as compressed JSON, or raise ValueError when it exceeds ``cap`` bytes."""
    data = zlib.compress(orjson.dumps({"format": FORMAT, **document}), 6)
    if len(data) > cap:
        raise ValueError(f"history is {len(data)} bytes, over the cap of {cap}")
    return data


def unpack(data: bytes) -> dict[str, Any] | None:
    """What :func:`pack` made; None for anything else (another format, corrupt bytes)."""
    try:
        document = orjson.loads(zlib.decompress(data))
    except (zlib.error, orjson.JSONDecodeError):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return None
    return document
