"""``python -m benchmarks``: parse the options, prepare both systems, run, report.

Celery's virtualenv is created on first use; the Redis db is claimed (it must be empty or
the benchmark's own) before anything is flushed. Ctrl-C or SIGTERM stops every process the
run started and still prints the table of what was measured so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import procs, report
from benchmarks.catalog import BROKERS, DEFAULT_WORKLOADS, WORKLOADS, Options
from benchmarks.celery_env import caraway_python, celery_python
from benchmarks.runner import Results, run_all
from benchmarks.systems import REPO, BrokerOps, System, parse_result

QUICK = {
    "n": 1000,
    "round_trips": 100,
    "chord_size": 100,
    "repeat": 1,
    "backlog": 100_000,
    "countdowns": 10_000,
    "fleet": 5,
    "mixed_longs": 4,
    "mixed_shorts": 400,
}
FULL = {
    "n": 10000,
    "round_trips": 500,
    "chord_size": 1000,
    "repeat": 3,
    "backlog": 1_000_000,
    "countdowns": 100_000,
    "fleet": 20,
    "mixed_longs": 20,
    "mixed_shorts": 2000,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare caraway and Celery 5.7.0 on the same broker in one run.",
    )
    parser.add_argument("--broker", default="redis", choices=(*BROKERS, "all"))
    parser.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated, from {','.join(WORKLOADS)} (default all but W6, W8 and W9, "
        "which take minutes each: name them to run them)",
    )
    parser.add_argument("--backlog", type=int, help="W6: tasks in the backlog (default 1000000)")
    parser.add_argument(
        "--countdowns", type=int, help="W8: tasks parked with a countdown of an hour (100000)"
    )
    parser.add_argument("--fleet", type=int, help="W9: idle worker nodes of one child (20)")
    parser.add_argument("--n", type=int, help="tasks for W1, W1b, W2 (default 10000)")
    parser.add_argument("--repeat", type=int, help="repetitions per system (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="small counts and one repetition: a smoke run"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="doc whose results section to rewrite (default docs/benchmarks.md; "
        "a --quick run writes it only when --out is given)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=4,
        help="private Redis db, flushed around each measurement (default 4)",
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="Redis port on 127.0.0.1 (default 6379; another for a redis-server of your own)",
    )
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for --broker postgres; each measurement creates a database "
        "caraway_ha_bench_* there and drops it (default postgresql://postgres@127.0.0.1:5432)",
    )
    return parser


def options_from(args: argparse.Namespace, argv: list[str]) -> Options:
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; choose from {WORKLOADS}")
    counts = dict(QUICK if args.quick else FULL)
    if args.n is not None:
        counts["n"] = args.n
    for name in ("repeat", "backlog", "countdowns", "fleet"):
        if getattr(args, name) is not None:
            counts[name] = getattr(args, name)
    if counts["n"] < 2 or counts["repeat"] < 1:
        raise SystemExit("--n must be at least 2 and --repeat at least 1")
    if counts["backlog"] < 2 or counts["countdowns"] < 1 or counts["fleet"] < 1:
        raise SystemExit("--backlog must be at least 2, --countdowns and --fleet at least 1")
    return Options(
        brokers=BROKERS if args.broker == "all" else (args.broker,),
        workloads=tuple(w for w in WORKLOADS if w in workloads),
        quick=args.quick,
        redis_db=args.redis_db,
        redis_port=args.redis_port,
        pg_url=args.pg_url,
        command=shlex.join(["python", "-m", "benchmarks", *argv]),
        n=counts["n"],
        round_trips=counts["round_trips"],
        chord_size=counts["chord_size"],
        repeat=counts["repeat"],
        backlog=counts["backlog"],
        countdowns=counts["countdowns"],
        fleet=counts["fleet"],
        mixed_longs=counts["mixed_longs"],
        mixed_shorts=counts["mixed_shorts"],
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def _describe(system: System) -> dict[str, Any]:
    argv = [str(system.python), "-m", "benchmarks.scripts.describe", system.name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        info = parse_result(procs.run(argv, env=env, cwd=REPO, timeout=60))
    except (procs.ScriptFailed, RuntimeError) as exc:
        return {"error": str(exc)}
    if system.name == "caraway":
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        # other work may sit uncommitted in src/: the commit alone would not name what ran
        suffix = "+uncommitted" if dirty.stdout.strip() else ""
        info["commit"] = (git.stdout.strip() + suffix) or None
    return info


def _header(options: Options, systems: list[System], ops: BrokerOps) -> report.Header:
    versions = ops.call("probe")
    return report.Header(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=options.command,
        cpus=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        redis=versions.get("redis"),
        rabbitmq=versions.get("rabbitmq"),
        caraway=_describe(systems[0]),
        celery=_describe(systems[1]),
        options=options,
        load_start=load_average(),
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally, like Ctrl-C


def _finish(header: report.Header, results: Results, out: Path | None) -> None:
    header = dataclasses.replace(header, load_end=load_average())
    text = report.render(header, results)
    print()
    print(text)
    saved = report.write_json(REPO / "benchmarks" / "results", header, results)
    print(f"results: {saved.relative_to(REPO)}")
    if out is not None:
        report.write_section(out, text)
        print(f"table written to {out}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    options = options_from(args, argv)
    out = args.out if args.out is not None or options.quick else REPO / "docs" / "benchmarks.md"
    signal.signal(signal.SIGTERM, _on_sigterm)
    # a shell starts background jobs with SIGINT ignored; Ctrl-C must still stop the run
    signal.signal(signal.SIGINT, signal.default_int_handler)
    systems = [System("caraway", caraway_python()), System("celery", celery_python())]
    ops = BrokerOps(systems[1].python, options)
    try:
        ops.call("claim")
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    results: Results = {}
    code = 0
    try:
        header = _header(options, systems, ops)
        try:
            run_all(systems, options, ops, results)
        except KeyboardInterrupt:
            print("\ninterrupted: stopped everything; reporting what was measured", file=sys.stderr)
            code = 130
    finally:
        procs.stop_all()
        ops.call("release")
    _finish(header, results, out if code == 0 else None)
    return code


if __name__ == "__main__":
    sys.exit(main())
