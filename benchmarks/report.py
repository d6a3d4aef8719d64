"""Turn the runner's samples into the header, the medians table, the JSON file and the doc.

The table shows each figure's median with its min-max over the repetitions and the
caraway/Celery ratio of the medians; the target column says whether the issue's bound
holds. ``write_section`` replaces only the text between the two markers in the doc.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.catalog import EVENTS_COST_TARGET, FIGURES, WORKLOAD_TITLES, Figure, Options
from benchmarks.runner import SQLITE_ROUND_TRIPS, Outcome, Results

START = "<!-- benchmarks:results:start -->"
END = "<!-- benchmarks:results:end -->"
BROKER_TITLES = {
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "amqp": "RabbitMQ (results in Redis)",
    "sqlite": "SQLite",
}


@dataclass(frozen=True)
class Header:
    """Who ran what, where: printed above the table and stored in the JSON file."""

    date: str
    command: str
    cpus: int
    cpu_model: str
    redis: str | None
    rabbitmq: str | None
    caraway: dict[str, Any]
    celery: dict[str, Any]
    options: Options
    #: /proc/loadavg's three averages when the run started and when it ended: the machine
    #: is shared, and a figure means little without what else was running
    load_start: str = ""
    load_end: str = ""

    def lines(self) -> list[str]:
        o = self.options
        mode = " (--quick: smoke-run counts, not for comparison)" if o.quick else ""
        return [
            f"Run {self.date}: `{self.command}`{mode}",
            "",
            f"- Machine: {self.cpus} CPUs (nproc), {self.cpu_model}; "
            f"Redis {self.redis or 'unreachable'}; RabbitMQ {self.rabbitmq or 'unreachable'}",
            f"- caraway {_config(self.caraway)}",
            f"- Celery {_config(self.celery)} (its defaults)",
            f"- Counts: N={o.n} (W1, W1b, W2), {o.round_trips} round trips (W3; "
            f"{min(o.round_trips, SQLITE_ROUND_TRIPS)} on SQLite and PostgreSQL), chord of "
            f"{o.chord_size} (W4), {o.n // 10} tasks of 100 KiB (W10), backlog of "
            f"{o.backlog} (W6), {o.countdowns} countdowns (W8), {o.fleet} idle nodes (W9), "
            f"{o.mixed_longs} long and {o.mixed_shorts} short tasks (W11); median of "
            f"{o.repeat} run(s), min-max in brackets; W6, W8, W9 on a private redis-server",
            f"- Load average (1, 5, 15 min): {self.load_start or '?'} at the start, "
            f"{self.load_end or '?'} at the end",
        ]


def _config(info: dict[str, Any]) -> str:
    if "error" in info:
        return f"(unknown: {info['error']})"
    acks = "late acks" if info.get("acks_late") else "early acks"
    commit = f", git {info['commit']}" if info.get("commit") else ""
    return (
        f"{info.get('version')} (Python {info.get('python')}{commit}): worker prefork -c 2, "
        f"prefetch multiplier {info.get('prefetch_multiplier')}, {acks}, "
        f"{str(info.get('serializer', '')).upper()}"
    )


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _cell(outcome: Outcome | None, key: str) -> tuple[str, float | None]:
    if outcome is None:
        return "not run", None
    if outcome.status:
        return outcome.status, None
    values = outcome.samples.get(key)
    if not values:
        return "no data", None
    median = statistics.median(values)
    if len(values) == 1:
        return _number(median), median
    return f"{_number(median)} ({_number(min(values))}-{_number(max(values))})", median


def _row(broker: str, figure: Figure, cells: dict[str, Outcome]) -> str:
    caraway_text, caraway = _cell(cells.get("caraway"), figure.key)
    celery_text, celery = _cell(cells.get("celery"), figure.key)
    ratio_text, target_text = "", ""
    target = figure.targets.get(broker)
    if caraway is not None and celery:
        ratio = caraway / celery
        ratio_text = f"{ratio:.3g}x"
        if target is not None:
            target_text = f"{target.text()}: {'met' if target.met(ratio, caraway) else 'missed'}"
    elif target is not None:
        target_text = target.text()
    title = f"{figure.workload} {WORKLOAD_TITLES[figure.workload]}"
    better = "higher" if figure.higher_is_better else "lower"
    label = f"{figure.label} ({figure.unit}, {better} is better)"
    return (
        f"| {BROKER_TITLES[broker]} | {title} | {label} | {caraway_text} | {celery_text} "
        f"| {ratio_text} | {target_text} |"
    )


def table(results: Results, options: Options) -> list[str]:
    lines = [
        "| Broker | Workload | Figure | caraway | Celery 5.7.0 | caraway/Celery | Target |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for broker in options.brokers:
        by_workload = results.get(broker, {})
        for figure in FIGURES:
            # a workload not measured on this broker at all (W1c off RabbitMQ) has no row
            if figure.workload in options.workloads and figure.workload in by_workload:
                lines.append(_row(broker, figure, by_workload[figure.workload]))
    return lines


def per_repetition(results: Results, options: Options) -> list[str]:
    """W2's ratio in each repetition (the systems measured back to back), since its target
    holds for every repetition, not only for the medians."""
    if "W2" not in options.workloads or options.repeat < 2:
        return []
    lines = ["", "W2 drain, caraway/Celery in each repetition (measured back to back):", ""]
    for broker in options.brokers:
        cells = results.get(broker, {}).get("W2", {})
        ours, theirs = (cells.get(name) for name in ("caraway", "celery"))
        if ours is None or theirs is None or ours.status or theirs.status:
            continue
        pairs = zip(ours.samples.get("rate", []), theirs.samples.get("rate", []), strict=False)
        ratios = [f"{a / b:.3g}x" for a, b in pairs if b]
        lines.append(f"- {BROKER_TITLES[broker]}: {', '.join(ratios) or 'n/a'}")
    return lines if len(lines) > 3 else []


def events_cost(results: Results, options: Options) -> list[str]:
    """W2 with -E over W2 without, per system: the price of task events, same run."""
    title = (
        f"Events cost (W2 with -E / W2 without, same run; target for caraway >= "
        f"{EVENTS_COST_TARGET:g}):"
    )
    return _against_w2(results, options, "W2E", title, EVENTS_COST_TARGET)


def queues_cost(results: Results, options: Options) -> list[str]:
    """W7 over W2, per system: what consuming 50 queues costs against one, same run."""
    title = (
        f"Many queues cost (W7 from 50 queues / W2 from one, same run; target for caraway "
        f">= {MANY_QUEUES_TARGET:g}):"
    )
    return _against_w2(results, options, "W7", title, MANY_QUEUES_TARGET)


#: W7 against W2: the issue's "within 20% of the single-queue rate"
MANY_QUEUES_TARGET = 0.8
#: W6: the drain rate with the full backlog against a backlog of N alone ("within 10%")
BACKLOG_TARGET = 0.9


def backlog_cost(results: Results, options: Options) -> list[str]:
    """W6's full/alone drain rate per system (measured in one session each)."""
    if "W6" not in options.workloads or "W6" not in results.get("redis", {}):
        return []
    cells = results["redis"]["W6"]
    shown = []
    for system in ("caraway", "celery"):
        _, value = _cell(cells.get(system), "full_vs_small")
        text = f"{value:.3g}x" if value is not None else "n/a"
        if system == "caraway" and value is not None:
            text += f" ({'met' if value >= BACKLOG_TARGET else 'missed'})"
        shown.append(text)
    return [
        "",
        f"Backlog cost (W6: drain rate of the first N of the full backlog / of N alone, same "
        f"session; target for caraway >= {BACKLOG_TARGET:g}): caraway {shown[0]}, "
        f"Celery 5.7.0 {shown[1]}",
    ]


def _against_w2(
    results: Results, options: Options, workload: str, title: str, target: float
) -> list[str]:
    if not {"W2", workload} <= set(options.workloads):
        return []
    lines = ["", title, "", "| Broker | caraway | Celery 5.7.0 |", "|---|---:|---:|"]
    for broker in options.brokers:
        cells = results.get(broker, {})
        if workload not in cells:
            continue
        shown = []
        for system in ("caraway", "celery"):
            _, plain = _cell(cells.get("W2", {}).get(system), "rate")
            _, other = _cell(cells.get(workload, {}).get(system), "rate")
            text = f"{other / plain:.3g}x" if plain and other is not None else "n/a"
            if system == "caraway" and plain and other is not None:
                text += f" ({'met' if other / plain >= target else 'missed'})"
            shown.append(text)
        lines.append(f"| {BROKER_TITLES[broker]} | {shown[0]} | {shown[1]} |")
    return lines


def render(header: Header, results: Results) -> str:
    options = header.options
    body = [
        *header.lines(),
        "",
        *table(results, options),
        *per_repetition(results, options),
        *events_cost(results, options),
        *queues_cost(results, options),
        *backlog_cost(results, options),
    ]
    return "\n".join(body) + "\n"


def write_json(directory: Path, header: Header, results: Results) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    # "2026-11-27 05:09:10 UTC" -> "20261127T050910Z"
    day, clock, _ = header.date.split(" ")
    stamp = f"{day.replace('-', '')}T{clock.replace(':', '')}Z"
    path = directory / f"{stamp}.json"
    document = {
        "date": header.date,
        "command": header.command,
        "machine": {
            "cpus": header.cpus,
            "cpu_model": header.cpu_model,
            "redis": header.redis,
            "rabbitmq": header.rabbitmq,
            "load_start": header.load_start,
            "load_end": header.load_end,
        },
        "systems": {"caraway": header.caraway, "celery": header.celery},
        "options": {k: v for k, v in vars(header.options).items() if k != "command"},
        "results": {
            broker: {
                workload: {
                    system: {
                        "status": outcome.status,
                        "detail": outcome.detail,
                        "samples": outcome.samples,
                    }
                    for system, outcome in cells.items()
                }
                for workload, cells in by_workload.items()
            }
            for broker, by_workload in results.items()
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def write_section(doc: Path, text: str) -> None:
    """Replace the marked results section of ``doc`` (appending one if it has none)."""
    current = doc.read_text() if doc.exists() else ""
    block = f"{START}\n{text.rstrip()}\n{END}"
    if START in current and END in current:
        before, _, rest = current.partition(START)
        _, _, after = rest.partition(END)
        updated = before + block + after
    else:
        updated = current.rstrip() + ("\n\n" if current else "") + block + "\n"
    doc.write_text(updated)
