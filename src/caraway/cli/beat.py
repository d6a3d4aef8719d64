"""``caraway beat``: run the periodic-task scheduler (Celery's flags), and ``caraway beat
add|remove|list`` to change and read the schedule at runtime; ``caraway inspect beat``.

Thin over :mod:`caraway.beat`. Any number of beats may run, on any host: they elect one
leader on the broker, so starting a second one is safe.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime
from typing import Any

import click

from caraway._version import __version__
from caraway.beat import Beat, BeatStatus, PeriodicTasks, beat_status, namespace_of
from caraway.beat.status import leader_age
from caraway.cli.loader import app_of
from caraway.cli.pidfile import Pidfile
from caraway.cli.worker import LEVELS, _detach, _setup_logging, expand_hostname, wait_for_broker
from caraway.clients.urls import mask_url
from caraway.schedules import crontab, schedule, solar
from caraway.schedules.base import BaseSchedule

#: Celery's exit code when nothing answered (EX_UNAVAILABLE): no beat leads the schedule
EX_UNAVAILABLE = 69


class NoLeader(click.ClickException):
    """No beat leads the schedule (``inspect beat``, as ``inspect`` when no node answers)."""

    exit_code = EX_UNAVAILABLE


@click.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("--detach", is_flag=True, help="Run in the background (daemonise).")
@click.option(
    "-s",
    "--schedule",
    "schedule_filename",
    default=None,
    help="Schedule name (beat_schedule_filename): its base name names the schedule's state "
    "on the broker; no file is written.",
)
@click.option("-S", "--scheduler", default=None, help="Only Celery's default is accepted.")
@click.option("--max-interval", type=float, default=None, help="Max seconds between ticks.")
@click.option(
    "--enable-remote-control/--no-enable-remote-control",
    "remote_control",
    default=None,
    help="Answer 'inspect ping' (beat_enable_remote_control).",
)
@click.option("-n", "--hostname", default="celerybeat@%h", help="Node name shown as leader.")
@click.option(
    "-l", "--loglevel", default="WARNING", type=click.Choice(LEVELS, case_sensitive=False)
)
@click.option("-f", "--logfile", default=None, help="Log file.")
@click.option("--pidfile", default=None, help="Write the pid here once running.")
@click.pass_context
def beat(
    ctx: click.Context,
    detach: bool,
    schedule_filename: str | None,
    scheduler: str | None,
    max_interval: float | None,
    remote_control: bool | None,
    hostname: str,
    loglevel: str,
    logfile: str | None,
    pidfile: str | None,
) -> None:
    """Start the periodic-task scheduler (or: beat add|remove|list)."""
    if ctx.invoked_subcommand is not None:
        return
    app = app_of(ctx)
    node = expand_hostname(hostname)
    runner = Beat(
        app,
        node=node,
        max_interval=max_interval,
        schedule_filename=schedule_filename,
        scheduler=scheduler,
        remote_control=remote_control,
    )
    runner.check()  # a bad schedule stops here, before anything starts
    guard = Pidfile(pidfile) if pidfile else None
    if guard is not None:
        guard.check()
    if detach:
        _detach(logfile)
    _setup_logging(loglevel, logfile, node)
    wait_for_broker(app)
    click.echo(_banner(runner))
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    if guard is not None:
        guard.write()
    try:
        runner.run()
    finally:
        if guard is not None:
            guard.remove()


def _banner(runner: Beat) -> str:
    app = runner.app
    lines = [
        f"caraway beat v{__version__} is starting.",
        "__    -    ... __   -        _",
        "LocalTime -> " + f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        "Configuration ->",
        f"    . broker -> {mask_url(app.broker_url)}",
        f"    . node -> {runner.node}",
        f"    . schedule -> {namespace_of(app, runner.schedule_filename)} (state on the broker)",
        f"    . entries -> {len(runner.entries)} in the code",
        f"    . lease -> {runner.lease_seconds:g}s",
        f"    . maxinterval -> {runner.max_interval:g}s",
    ]
    return "\n".join(lines)


# -- the schedule at runtime ---------------------------------------------------------------


def _schedule_option(fn: Any) -> Any:
    return click.option(
        "-s", "--schedule", "schedule_filename", default=None, help="Schedule name."
    )(fn)


def _json(text: str | None, what: str, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not JSON: {exc}", param_hint=what) from None


def _when(
    every: float | None, cron: str | None, sun: tuple[str, float, float] | None, relative: bool
) -> BaseSchedule:
    given = [value for value in (every, cron, sun) if value is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --every SECONDS, --crontab, --solar")
    if every is not None:
        return schedule(every, relative=relative)
    if cron is not None:
        return crontab.from_string(cron)
    assert sun is not None
    return solar(*sun)


@beat.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--every", type=float, default=None, help="Run every SECONDS.")
@click.option(
    "--crontab", "cron", default=None, help="'minute hour day-of-month month day-of-week'."
)
@click.option("--solar", "sun", type=(str, float, float), default=None, help="EVENT LAT LON.")
@click.option("--relative", is_flag=True, help="Round --every runs to the interval's unit.")
@click.option("--args", "args_json", default=None, help="Positional arguments, a JSON list.")
@click.option("--kwargs", "kwargs_json", default=None, help="Keyword arguments, a JSON object.")
@click.option("--options", "options_json", default=None, help="apply_async options, JSON.")
@click.option("--missed", type=click.Choice(["one", "none", "all"]), default="one")
@_schedule_option
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    task: str,
    every: float | None,
    cron: str | None,
    sun: tuple[str, float, float] | None,
    relative: bool,
    args_json: str | None,
    kwargs_json: str | None,
    options_json: str | None,
    missed: str,
    schedule_filename: str | None,
) -> None:
    """Add (or replace) a runtime entry NAME that sends TASK; no redeploy needed."""
    app = app_of(ctx)
    when = _when(every, cron, sun, relative)
    args = _json(args_json, "--args", [])
    kwargs = _json(kwargs_json, "--kwargs", {})
    options = _json(options_json, "--options", {})
    with PeriodicTasks(app, schedule_filename=schedule_filename) as tasks:
        entry = tasks.add(name, task, when, args, kwargs, options, missed=missed)
    click.echo(f"added {entry.name}: {entry.task} {entry.schedule!r} (missed={entry.missed})")


@beat.command("remove")
@click.argument("name")
@_schedule_option
@click.pass_context
def remove(ctx: click.Context, name: str, schedule_filename: str | None) -> None:
    """Remove the runtime entry NAME."""
    with PeriodicTasks(app_of(ctx), schedule_filename=schedule_filename) as tasks:
        known = tasks.remove(name)
    if not known:
        raise click.ClickException(f"no runtime entry named {name!r}")
    click.echo(f"removed {name}")


@beat.command("list")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@_schedule_option
@click.pass_context
def list_entries(ctx: click.Context, as_json: bool, schedule_filename: str | None) -> None:
    """List every entry (code and runtime) with its last and next run, and the leader."""
    status = beat_status(app_of(ctx), schedule_filename=schedule_filename)
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
        return
    click.echo(describe(status))


def _leader_line(status: BeatStatus) -> str:
    age = leader_age(status)
    if status.leader is None or age is None:
        return "leader: none (no beat is running for this schedule)"
    return f"leader: {status.leader.node} (renewed {age:.0f}s ago)"


def describe(status: BeatStatus) -> str:
    """The schedule as a table, for people."""
    lines = [f"schedule {status.namespace} ({status.timezone}), {_leader_line(status)}"]
    rows = [("NAME", "TASK", "SCHEDULE", "SOURCE", "RUNS", "LAST RUN", "NEXT RUN")]
    for entry in status.entries:
        rows.append(
            (
                entry.name,
                entry.task,
                entry.schedule,
                entry.source,
                str(entry.total_run_count),
                _short(entry.last_run),
                _short(entry.next_run),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    if not status.entries:
        lines.append("(no entries)")
    return "\n".join(lines)


def _short(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S%z")


def inspect_beat(ctx: click.Context, as_json: bool) -> None:
    """``caraway inspect beat``: the schedule's leader and entries, read from the broker;
    exits 69 (as for nodes that do not answer) when no beat leads it."""
    status = beat_status(app_of(ctx))
    document = status.as_dict()
    if as_json:
        click.echo(json.dumps(document, default=str))
    else:
        name = status.leader.node if status.leader else "beat"
        click.echo(f"->  {name}: {'OK' if status.leader else 'NO LEADER'}")
        for line in describe(status).splitlines():
            click.echo(f"        {line}")
    if status.leader is None:
        raise NoLeader(f"no beat leads the schedule {status.namespace}")
