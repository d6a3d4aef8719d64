"""The measurement loop: per broker, per workload, N repetitions alternating the systems.

A unit runs one workload once for one system inside a fresh ``Session`` and returns its
figures by workload (the drain unit serves both W2 and W5). Each repetition swaps which
system goes first, so slow drift on the machine does not always fall on the same side.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
}


#: units that mean something on some brokers only (publisher confirms are RabbitMQ's)
ONLY_ON: dict[str, tuple[str, ...]] = {
    "enqueue_confirmed": ("amqp",),
    # 50 queues to clean up after each measurement: the Redis db flush does it
    "drain_queues": ("redis",),
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
        with Session(system, broker, options, ops) as session:
            figures = function(session, options)
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


def _set_status(outcomes: dict[str, Outcome], status: str, detail: str | None) -> None:
    for outcome in outcomes.values():
        outcome.status = status
        outcome.detail = detail
