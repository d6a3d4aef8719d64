"""What can be measured: brokers, workloads, the figures each reports and the issue's targets.

Pure data plus the run options. A figure's ``better`` says which direction wins, so the
report can tell whether a caraway/Celery ratio meets its target without knowing the workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BROKERS = ("redis", "amqp", "sqlite", "postgres")
WORKLOADS = (
    "W1",
    "W1c",
    "W1b",
    "W2",
    "W2E",
    "W3",
    "W4",
    "W5",
    "W6",
    "W7",
    "W8",
    "W9",
    "W10",
    "W11",
)
#: what a run measures without --workloads: W6, W8 and W9 take minutes each (a million
#: messages, 100,000 parked tasks, 20+20 worker nodes), so they are asked for by name
DEFAULT_WORKLOADS = tuple(w for w in WORKLOADS if w not in ("W6", "W8", "W9"))
SYSTEMS = ("caraway", "celery")

WORKLOAD_TITLES = {
    "W1": "enqueue",
    "W1c": "enqueue, Celery with confirm_publish",
    "W1b": "group send",
    "W2": "drain",
    "W2E": "drain, worker with -E",
    "W3": "round trip",
    "W4": "chord",
    "W5": "worker memory after W2",
    "W6": "backlog",
    "W7": "drain from 50 queues",
    "W8": "far-future countdowns",
    "W9": "idle fleet",
    "W10": "drain, 100 KiB arguments",
    "W11": "mixed long and short tasks",
}


@dataclass(frozen=True)
class Target:
    """A bound on the caraway/Celery ratio (``ratio``) and optionally on caraway's own figure."""

    ratio: float
    at_least: bool
    absolute: float | None = None
    note: str = ""

    def text(self) -> str:
        sign = ">=" if self.at_least else "<="
        extra = f" and >= {self.absolute:g}" if self.absolute is not None else ""
        return f"{sign} {self.ratio:g}x{extra}{self.note}"

    def met(self, ratio: float, caraway_value: float) -> bool:
        ok = ratio >= self.ratio if self.at_least else ratio <= self.ratio
        if self.absolute is not None:
            ok = ok and caraway_value >= self.absolute
        return ok


@dataclass(frozen=True)
class Figure:
    """One number a workload reports: its key in the script's output, unit and direction."""

    workload: str
    key: str
    label: str
    unit: str
    higher_is_better: bool
    targets: dict[str, Target] = field(default_factory=dict)


_ANY = ("redis", "amqp", "sqlite")

FIGURES: tuple[Figure, ...] = (
    Figure(
        "W1",
        "rate",
        "enqueue",
        "tasks/s",
        True,
        {
            "redis": Target(4.5, True),
            "amqp": Target(1.0, True, note=" (caraway with confirms)"),
        },
    ),
    # caraway's delay() always waits for RabbitMQ's confirm; Celery's only with
    # confirm_publish: this row compares the same guarantee (AMQP only)
    Figure("W1c", "rate", "enqueue, both confirmed", "tasks/s", True, {"amqp": Target(1.5, True)}),
    Figure("W1b", "rate", "group send", "tasks/s", True, {b: Target(10.0, True) for b in _ANY}),
    Figure(
        "W2",
        "rate",
        "drain",
        "tasks/s",
        True,
        {
            "redis": Target(10.0, True),
            "amqp": Target(5.0, True),
            "sqlite": Target(10.0, True, absolute=3000.0),
            "postgres": Target(5.0, True),
        },
    ),
    Figure("W2E", "rate", "drain with task events", "tasks/s", True),
    Figure("W3", "p50", "round trip p50", "ms", False, {"redis": Target(0.4, False)}),
    Figure("W3", "p90", "round trip p90", "ms", False),
    Figure("W3", "p99", "round trip p99", "ms", False, {"redis": Target(0.5, False)}),
    Figure("W4", "seconds", "chord", "s", False, {b: Target(0.1, False) for b in _ANY}),
    Figure("W5", "pss_mib", "worker PSS", "MiB", False, {b: Target(0.5, False) for b in _ANY}),
    Figure("W5", "pss_anon_mib", "worker PSS, anonymous memory", "MiB", False),
    Figure("W5", "rss_mib", "worker RSS", "MiB", False),
    Figure("W7", "rate", "drain from 50 queues", "tasks/s", True, {"redis": Target(5.0, True)}),
    Figure(
        "W6",
        "rate_full",
        "drain, first N of the full backlog",
        "tasks/s",
        True,
        {"redis": Target(10.0, True)},
    ),
    Figure("W6", "rate_small", "drain, backlog of N alone", "tasks/s", True),
    # the "within 10%": the full backlog's rate over N alone's, per system
    Figure("W6", "full_vs_small", "full/alone drain rate", "x", True),
    Figure(
        "W6",
        "bytes_per_task",
        "Redis memory per queued task",
        "bytes",
        False,
        {"redis": Target(1.0, False)},
    ),
    Figure("W6", "rss_start", "worker RSS draining, start", "MiB", False),
    Figure("W6", "rss_max", "worker RSS draining, max", "MiB", False),
    Figure("W6", "rss_end", "worker RSS draining, end", "MiB", False),
    Figure(
        "W8",
        "rss_growth",
        "worker RSS growth, parked tasks",
        "MiB",
        False,
        {"redis": Target(0.1, False)},
    ),
    Figure("W8", "bytes_per_task", "Redis memory per parked task", "bytes", False),
    Figure("W8", "lag_p50", "promotion lag p50", "ms", False),
    Figure("W8", "lag_p99", "promotion lag p99", "ms", False),
    Figure(
        "W9",
        "commands_s",
        "Redis commands/s at rest",
        "1/s",
        False,
        {"redis": Target(0.5, False)},
    ),
    Figure("W9", "cpu_ms_s", "CPU per node at rest", "ms/s", False, {"redis": Target(0.5, False)}),
    Figure("W9", "ping_ms", "ping hears all nodes", "ms", False, {"redis": Target(0.5, False)}),
    Figure(
        "W10",
        "mib_s",
        "drain of 100 KiB tasks",
        "MiB/s",
        True,
        {b: Target(2.0, True) for b in _ANY},
    ),
    Figure("W11", "p50", "short tasks' latency p50", "ms", False),
    Figure(
        "W11",
        "p99",
        "short tasks' latency p99",
        "ms",
        False,
        {b: Target(1.0, False) for b in _ANY},
    ),
    Figure("W11", "over_1s", "short tasks waiting > 1 s", "tasks", False),
)


@dataclass(frozen=True)
class Options:
    """The run as the command line asked for it (counts already adjusted for ``--quick``)."""

    brokers: tuple[str, ...]
    workloads: tuple[str, ...]
    n: int
    round_trips: int
    chord_size: int
    repeat: int
    quick: bool
    #: W6: tasks in the backlog; W8: parked countdowns; W9: idle nodes
    backlog: int = 1_000_000
    countdowns: int = 100_000
    fleet: int = 20
    #: W11: long tasks (one every 2 s) and short ones sent among them
    mixed_longs: int = 20
    mixed_shorts: int = 2000
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 4
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    #: a PostgreSQL server (no database): each measurement creates one of its own and drops it
    pg_url: str = "postgresql://postgres@127.0.0.1:5432"
    command: str = "python -m benchmarks"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"


#: W2 with -E against W2 without, same system, same run: what sending task events costs
EVENTS_COST_TARGET = 0.85


def figures_for(workload: str) -> tuple[Figure, ...]:
    return tuple(figure for figure in FIGURES if figure.workload == workload)
