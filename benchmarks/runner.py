"""The measurement loop: per broker, per workload, N repetitions alternating the systems.

A unit runs one workload once for one system inside a fresh ``Session`` and returns its
figures by workload (the drain unit serves both W2 and W5). Each repetition swaps which
system goes first, so slow drift on the machine does not always fall on the same side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks import procs
from benchmarks.catalog import Options
from benchmarks.systems import BrokerOps, Session, System, Unsupported

Figures = dict[str, dict[str, float]]


@dataclass
class Outcome:
    """One (broker, workload, system) cell: samples per figure key, or why there are none."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    status: str | None = None  # "n/a (...)" or "error: ..."
    detail: str | None = None  # the full reason behind ``status``

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.samples.setdefault(key, []).append(float(value))


#: results[broker][workload][system]
Results = dict[str, dict[str, dict[str, Outcome]]]


def _enqueue(session: Session, options: Options) -> Figures:
    result = session.script("enqueue", options.n, timeout=120 + options.n * 0.05)
    return {"W1": {"rate": result["rate"]}}


def _enqueue_confirmed(session: Session, options: Options) -> Figures:
    result = session.script("enqueue", options.n, "confirm", timeout=120 + options.n * 0.05)
    return {"W1c": {"rate": result["rate"]}}


def _group_send(session: Session, options: Options) -> Figures:
    result = session.script("group_send", options.n, timeout=120 + options.n * 0.05)
    return {"W1b": {"rate": result["rate"]}}


def _drain(session: Session, options: Options) -> Figures:
    rate, worker = _drain_rate(session, options, events=False)
    memory = procs.tree_memory(worker.pid)
    return {
        "W2": {"rate": rate},
        "W5": {
            "pss_mib": memory.pss_mib,
            "pss_anon_mib": memory.pss_anon_mib,
            "rss_mib": memory.rss_mib,
        },
    }


def _drain_with_events(session: Session, options: Options) -> Figures:
    rate, _ = _drain_rate(session, options, events=True)
    return {"W2E": {"rate": rate}}


def _drain_queues(session: Session, options: Options) -> Figures:
    names = tuple(f"{session.tag}.{i}" for i in range(MANY_QUEUES))
    rate, _ = _drain_rate(session, options, fill=("queues", MANY_QUEUES), queues=names)
    return {"W7": {"rate": rate}}


def _drain_payload(session: Session, options: Options) -> Figures:
    n = payload_tasks(options)
    rate, _ = _drain_rate(session, options, n=n, fill=("payload", PAYLOAD_KIB))
    return {"W10": {"mib_s": rate * PAYLOAD_KIB / 1024}}


#: W7: queues one worker consumes, the tasks spread evenly over them
MANY_QUEUES = 50
#: W10: KiB of arguments per task
PAYLOAD_KIB = 100


def payload_tasks(options: Options) -> int:
    """W10's count: N/10 (1,000 tasks of 100 KiB hold 100 MiB in the broker at once)."""
    return max(2, options.n // 10)


def _drain_rate(
    session: Session,
    options: Options,
    *,
    events: bool = False,
    n: int | None = None,
    fill: tuple[str, int] | None = None,
    queues: tuple[str, ...] = (),
) -> tuple[float, subprocess.Popen[bytes]]:
    n = options.n if n is None else n
    ids = session.workdir / "ids.json"
    session.script("fill", n, ids, *(fill or ()), timeout=120 + n * 0.05)
    worker = session.start_worker(events=events, queues=queues)
    result = session.script("drain_wait", ids, 60 + n * 0.1, timeout=120 + n * 0.1)
    if result["wrong"]:
        raise RuntimeError(f"{result['wrong']} drained tasks returned a wrong value")
    return float(result["rate"]), worker


def round_trips_for(broker: str, options: Options) -> int:
    """W3's count: on SQLite and PostgreSQL at most 50, because Celery's SQLAlchemy transport
    polls once a second and 500 of its round trips take a quarter of an hour per repetition."""
    if broker in ("sqlite", "postgres"):
        return min(options.round_trips, SQLITE_ROUND_TRIPS)
    return options.round_trips


SQLITE_ROUND_TRIPS = 50


def _round_trip(session: Session, options: Options) -> Figures:
    session.start_worker()
    count = round_trips_for(session.broker, options)
    result = session.script("roundtrip", count, timeout=180 + count * 3)
    return {"W3": {key: result[key] for key in ("p50", "p90", "p99")}}


def _chord(session: Session, options: Options) -> Figures:
    session.start_worker()
    result = session.script("chord", options.chord_size, timeout=720)
    return {"W4": {"seconds": result["seconds"]}}


def _backlog(session: Session, options: Options) -> Figures:
    """W6: the drain rate of the first K tasks of a full backlog against that of a backlog
    of K alone (same session, same fill), Redis's bytes per queued task, and the worker's
    RSS while it drains the full backlog."""
    first = min(options.n, options.backlog)
    ids = session.workdir / "ids.json"
    session.script("fill_raw", first, ids, first, timeout=120 + first * 0.01)
    worker = session.start_worker()
    # sampled like the full drain below (and the samples dropped), so that the sampler's
    # own CPU weighs on both rates alike
    with _sampling_rss(worker.pid):
        small = session.script("drain_wait", ids, 60 + first * 0.1, timeout=120 + first * 0.1)
    session.stop_worker(worker)
    session.ops.call("clean")
    before = session.ops.call("info")["used_memory"]
    fill = session.script(
        "fill_raw", options.backlog, ids, first, timeout=300 + options.backlog * 0.001
    )
    after = session.ops.call("info")["used_memory"]
    worker = session.start_worker()
    with _sampling_rss(worker.pid) as samples:
        started = time.monotonic()
        full = session.script("drain_wait", ids, 60 + first * 0.1, timeout=120 + first * 0.1)
        # at least RSS_WINDOW s of draining, however fast the first K went
        time.sleep(max(0.0, RSS_WINDOW - (time.monotonic() - started)))
    left = session.ops.call("info", session.tag)["lengths"][session.tag]
    if full["wrong"] or small["wrong"]:
        raise RuntimeError("drained tasks returned a wrong value")
    rss = [value for at, value in samples if at >= RSS_BOOT]
    if not rss:
        raise RuntimeError("no RSS sample of the draining worker")
    return {
        "W6": {
            "rate_full": full["rate"],
            "rate_small": small["rate"],
            "full_vs_small": full["rate"] / small["rate"] if small["rate"] else 0.0,
            "bytes_per_task": (after - before) / options.backlog,
            "fill_s": fill["seconds"],
            "rss_start": rss[0],
            "rss_max": max(rss),
            "rss_end": rss[-1],
            "drained": options.backlog - int(left),
        }
    }


#: W6: seconds of RSS samples at least; samples before RSS_BOOT s (start-up) are left out
RSS_WINDOW = 20.0
RSS_BOOT = 2.0


@contextlib.contextmanager
def _sampling_rss(pid: int, every: float = 0.5) -> Iterator[list[tuple[float, float]]]:
    """(seconds since start, RSS MiB of ``pid``'s tree) every ``every`` s, in a thread."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - started, procs.tree_memory(pid).rss_mib))
            done.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def _settled_rss(pid: int, *, queue: str, ops: BrokerOps, timeout: float) -> float:
    """The RSS of ``pid``'s tree once ``queue`` is empty and two readings a second apart
    differ by less than 0.5 MiB (a worker taking in 100,000 ETA tasks grows for a while)."""
    deadline = time.monotonic() + timeout
    last = procs.tree_memory(pid).rss_mib
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = procs.tree_memory(pid).rss_mib
        if abs(now - last) < 0.5 and ops.call("info", queue)["lengths"][queue] == 0:
            return now
        last = now
    raise RuntimeError(f"worker RSS or queue {queue} did not settle in {timeout:.0f}s")


def _countdowns(session: Session, options: Options) -> Figures:
    """W8: park far-future countdowns against a running worker; its RSS before and after,
    Redis's bytes per parked task, then the lag of a batch with a short countdown."""
    worker = session.start_worker()
    session.script("roundtrip", 1, timeout=180)
    rss_before = _settled_rss(worker.pid, queue=session.tag, ops=session.ops, timeout=60)
    before = session.ops.call("info")["used_memory"]
    count = options.countdowns
    park = session.script("countdowns", "park", count, timeout=300 + count * 0.01)
    rss_after = _settled_rss(
        worker.pid, queue=session.tag, ops=session.ops, timeout=300 + count * 0.005
    )
    after = session.ops.call("info")["used_memory"]
    lag = session.script("countdowns", "lag", LAG_TASKS, LAG_COUNTDOWN, timeout=300 + LAG_COUNTDOWN)
    return {
        "W8": {
            "rss_growth": rss_after - rss_before,
            "rss_before": rss_before,
            "bytes_per_task": (after - before) / count,
            "park_rate": count / park["seconds"],
            "lag_p50": lag["lag_p50"],
            "lag_p99": lag["lag_p99"],
            "lag_max": lag["lag_max"],
        }
    }


#: W8: the batch that comes due, and its countdown (time compressed from an hour)
LAG_TASKS = 200
LAG_COUNTDOWN = 5.0


def _fleet(session: Session, options: Options) -> Figures:
    """W9: F idle nodes of one child; Redis commands/s and CPU per node at rest over
    FLEET_WINDOW s, then the time for a ping broadcast to hear all F."""
    nodes = options.fleet
    started = [session.spawn_worker(concurrency=1, node=f"{session.tag}-{i}") for i in range(nodes)]
    for worker, pidfile, log in started:
        session.wait_started(worker, pidfile, log, timeout=300)
    up = session.script("fleet_ping", nodes, 300, 0, timeout=360)
    if up["heard"] < nodes:
        raise RuntimeError(f"only {up['heard']} of {nodes} nodes answered a ping")
    time.sleep(FLEET_SETTLE)
    pids = [worker.pid for worker, _, _ in started]
    first, cpu_first, at_first = (
        session.ops.call("info"),
        procs.tree_cpu_seconds(pids),
        time.monotonic(),
    )
    time.sleep(FLEET_WINDOW)
    last, cpu_last, at_last = (
        session.ops.call("info"),
        procs.tree_cpu_seconds(pids),
        time.monotonic(),
    )
    window = at_last - at_first
    ping = session.script("fleet_ping", nodes, 30, PINGS, timeout=300)
    return {
        "W9": {
            "commands_s": _command_delta(first, last) / window,
            "reads_s": (last["total_reads_processed"] - first["total_reads_processed"]) / window,
            "cpu_ms_s": (cpu_last - cpu_first) * 1000 / nodes / window,
            "ping_ms": ping["seconds"] * 1000,
            "heard": ping["heard"],
        }
    }


#: W9: seconds between the fleet answering and the rest window, the window, timed pings
FLEET_SETTLE = 5.0
FLEET_WINDOW = 20.0
PINGS = 3
#: the commands ``broker_ops info`` itself sends, left out of W9's count
_OWN_COMMANDS = ("info", "llen", "client|setinfo", "hello")


def _command_delta(first: dict[str, Any], last: dict[str, Any]) -> int:
    before, after = first["commands"], last["commands"]
    return sum(
        int(calls) - int(before.get(name, 0))
        for name, calls in after.items()
        if name not in _OWN_COMMANDS
    )


def _mixed(session: Session, options: Options) -> Figures:
    """W11: long and short tasks on two queues, one -c 2 worker; the short ones' latency."""
    queues = (f"{session.tag}.long", f"{session.tag}.short")
    session.start_worker(queues=queues)
    duration = options.mixed_longs * MIXED_LONG_SECONDS
    result = session.script(
        "mixed",
        options.mixed_longs,
        options.mixed_shorts,
        MIXED_LONG_SECONDS,
        timeout=300 + duration * 2,
    )
    return {"W11": {key: result[key] for key in ("p50", "p99", "max", "over_1s")}}


#: W11: seconds of each long task (one is sent every MIXED_LONG_SECONDS s)
MIXED_LONG_SECONDS = 2.0


Unit = Callable[[Session, Options], Figures]

#: (broker, system) -> status, once a system said it has no transport for that broker
_NO_TRANSPORT: dict[tuple[str, str], str] = {}

#: unit name -> (function, the workloads it reports)
UNITS: dict[str, tuple[Unit, tuple[str, ...]]] = {
    "enqueue": (_enqueue, ("W1",)),
    "enqueue_confirmed": (_enqueue_confirmed, ("W1c",)),
    "group_send": (_group_send, ("W1b",)),
    "drain": (_drain, ("W2", "W5")),
    "drain_events": (_drain_with_events, ("W2E",)),
    "drain_queues": (_drain_queues, ("W7",)),
    "drain_payload": (_drain_payload, ("W10",)),
    "round_trip": (_round_trip, ("W3",)),
    "chord": (_chord, ("W4",)),
    "backlog": (_backlog, ("W6",)),
    "countdowns": (_countdowns, ("W8",)),
    "fleet": (_fleet, ("W9",)),
    "mixed": (_mixed, ("W11",)),
}

#: units that run against a redis-server of their own (a million messages, or every
#: command counted, do not belong on the machine's shared server)
PRIVATE_REDIS = ("backlog", "countdowns", "fleet")


#: units that mean something on some brokers only (publisher confirms are RabbitMQ's)
ONLY_ON: dict[str, tuple[str, ...]] = {
    "enqueue_confirmed": ("amqp",),
    # 50 queues to clean up after each measurement: the Redis db flush does it
    "drain_queues": ("redis",),
    # Redis's INFO is the measuring instrument (memory per task, commands per second)
    "backlog": ("redis",),
    "countdowns": ("redis",),
    "fleet": ("redis",),
}


def units_for(workloads: tuple[str, ...], broker: str | None = None) -> list[str]:
    """The units measuring ``workloads`` (on ``broker``, when given)."""
    wanted = set(workloads)
    return [
        name
        for name, (_, covers) in UNITS.items()
        if set(covers) & wanted and (broker is None or broker in ONLY_ON.get(name, (broker,)))
    ]


def run_all(systems: list[System], options: Options, ops: BrokerOps, results: Results) -> Results:
    """Measure everything ``options`` asks for into ``results`` (filled as it goes, so what
    was measured before a Ctrl-C is still there for the report)."""
    for broker in options.brokers:
        by_workload = results.setdefault(broker, {})
        for unit in units_for(options.workloads, broker):
            _, covers = UNITS[unit]
            cells = {w: by_workload.setdefault(w, {}) for w in covers if w in options.workloads}
            for rep in range(options.repeat):
                order = systems if rep % 2 == 0 else systems[::-1]
                for system in order:
                    _measure(system, broker, unit, options, ops, cells, rep)
    return results


def _measure(
    system: System,
    broker: str,
    unit: str,
    options: Options,
    ops: BrokerOps,
    cells: dict[str, dict[str, Outcome]],
    rep: int,
) -> None:
    outcomes = {w: cell.setdefault(system.name, Outcome()) for w, cell in cells.items()}
    if any(o.status for o in outcomes.values()):
        return  # n/a or broken once: the other repetitions would say the same
    missing = _NO_TRANSPORT.get((broker, system.name))
    if missing:
        _set_status(outcomes, missing, None)
        return
    label = f"[{broker} {'/'.join(cells)} {system.name} #{rep + 1}]"
    started = time.monotonic()
    function, _ = UNITS[unit]
    try:
        with (
            _broker_for(unit, options, ops) as (used, used_ops),
            Session(system, broker, used, used_ops) as session,
        ):
            figures = function(session, used)
    except Unsupported as exc:
        short = f"n/a (no {broker} transport yet)" if exc.transport else "n/a (not supported yet)"
        _set_status(outcomes, short, str(exc))
        if exc.transport:
            _NO_TRANSPORT[(broker, system.name)] = short
        print(f"{label} n/a: {exc}", file=sys.stderr)
        return
    except (RuntimeError, OSError) as exc:
        _set_status(outcomes, f"error: {str(exc)[:200]}", str(exc))
        print(f"{label} error: {exc}", file=sys.stderr)
        return
    for workload, outcome in outcomes.items():
        outcome.add(figures.get(workload, {}))
    shown = ", ".join(
        f"{key}={value:.4g}" for values in figures.values() for key, value in values.items()
    )
    print(f"{label} {shown} ({time.monotonic() - started:.1f}s)", file=sys.stderr)


@contextlib.contextmanager
def _broker_for(unit: str, options: Options, ops: BrokerOps) -> Iterator[tuple[Options, BrokerOps]]:
    """The run's broker, or for PRIVATE_REDIS units a private redis-server (db 0, claimed
    like the shared one) that lives for one measurement and is stopped by pid."""
    if unit not in PRIVATE_REDIS:
        yield options, ops
        return
    with procs.private_redis() as port:
        private = dataclasses.replace(options, redis_port=port, redis_db=0)
        private_ops = BrokerOps(ops.python, private)
        private_ops.call("claim")
        yield private, private_ops


def _set_status(outcomes: dict[str, Outcome], status: str, detail: str | None) -> None:
    for outcome in outcomes.values():
        outcome.status = status
        outcome.detail = detail
