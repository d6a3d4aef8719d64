"""``caraway events``: a live terminal view of workers and recent tasks, or a raw dump.

The view redraws every ``--frequency`` seconds with ANSI clear (no curses, no extra
dependency) from a :class:`State` fed by a receiver thread (``q`` quits); ``--dump``
prints each event as one readable line, as Celery's does (``--dump --json``: one JSON
document a line); ``--camera module:callable`` is called with the State at each tick.
Works against caraway and Celery workers alike: the events are Celery's.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import click

from caraway.cli.loader import app_of
from caraway.clients.urls import mask_url
from caraway.events.receiver import EventReceiver
from caraway.events.state import State
from caraway.exceptions import ImproperlyConfigured

_CLEAR = "\x1b[H\x1b[2J"
_STATE_COLOURS = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "RETRY": "yellow",
    "REVOKED": "magenta",
    "STARTED": "cyan",
}


def load_camera(spec: str) -> Callable[[State], Any]:
    """``pkg.mod:func`` or ``pkg.mod.func`` -> the callable; ImproperlyConfigured if not."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"cannot load camera {spec!r}: {exc}") from exc
    if not callable(target):
        raise ImproperlyConfigured(f"camera {spec!r} is not callable")
    result: Callable[[State], Any] = target
    return result


def _clock(stamp: float | None) -> str:
    return "-" if stamp is None else datetime.fromtimestamp(stamp).strftime("%H:%M:%S")


def _cut(text: Any, width: int) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= width else value[: max(width - 1, 0)] + "…"


def render(state: State, *, broker: str, now: float | None = None, tasks: int = 20) -> str:
    """One frame of the live view, as plain text (colour is added by the caller)."""
    now = time.time() if now is None else now
    workers = state.workers_snapshot(now)
    online = sum(1 for w in workers if w["status"] == "online")
    counts = state.counts()
    lines = [
        f"caraway events  {mask_url(broker)}  {_clock(now)}",
        f"workers: {online} online / {len(workers)} known   events: {state.event_count}   "
        + "  ".join(f"{name}: {n}" for name, n in sorted(counts.items())),
        "",
        f"{'WORKER':<32} {'STATUS':<8} {'ACTIVE':>6} {'PROCESSED':>9} {'OK':>6} "
        f"{'FAILED':>6}  LOAD",
    ]
    for worker in workers:
        load = " ".join(f"{x:.2f}" for x in worker["loadavg"] or [])
        lines.append(
            f"{_cut(worker['hostname'], 32):<32} {worker['status']:<8} {worker['active']:>6} "
            f"{worker['processed']:>9} {worker['succeeded']:>6} {worker['failed']:>6}  {load}"
        )
    lines += ["", f"{'UUID':<36} {'NAME':<28} {'STATE':<9} {'WORKER':<20} {'SEEN':<8} RUNTIME"]
    for task in state.tasks_snapshot(limit=tasks):
        runtime = "" if task["runtime"] is None else f"{task['runtime']:.3f}s"
        lines.append(
            f"{task['uuid']:<36} {_cut(task['name'], 28):<28} {task['state']:<9} "
            f"{_cut(task['worker'], 20):<20} {_clock(task['first_seen']):<8} {runtime}"
        )
    return "\n".join(lines)


def _colour(frame: str) -> str:
    return "\n".join(_colour_line(line) for line in frame.splitlines())


def _colour_line(line: str) -> str:
    for state, colour in _STATE_COLOURS.items():
        if f" {state} " in line:
            return line.replace(f" {state} ", " " + click.style(state, fg=colour) + " ", 1)
    return line


def dump_line(event: dict[str, Any], names: dict[str, str]) -> str:
    """One event as Celery's ``events --dump`` prints it.

    ``host [utc time] task succeeded: proj.tasks.add(id) args=[2, 2] kwargs={} result=4,
    runtime=0.001``: a task is named by its received (or sent) event, remembered in
    ``names`` by id; the remaining fields follow in name order.
    """
    fields = {k: v for k, v in event.items() if k not in ("type", "hostname", "timestamp")}
    kind = str(event.get("type", "")).lower()
    stamp = event.get("timestamp")
    when = (
        datetime.fromtimestamp(float(stamp), timezone.utc).replace(tzinfo=None)
        if isinstance(stamp, (int, float))
        else stamp
    )
    head = f"{event.get('hostname')} [{when}] {kind.replace('-', ' ')}"
    subject = ""
    if kind.startswith("task-"):
        task_id = str(fields.pop("uuid", ""))
        if kind in ("task-received", "task-sent"):
            names[task_id] = (
                f"{fields.pop('name', None)}({task_id}) "
                f"args={fields.pop('args', None)} kwargs={fields.pop('kwargs', None)}"
            )
        subject = " " + names.get(task_id, "")
    rest = ", ".join(f"{key}={fields[key]}" for key in sorted(fields))
    return f"{head}{':' if rest else ''}{subject} {rest}".rstrip()


def _dump(receiver: EventReceiver, timeout: float | None, *, as_json: bool) -> None:
    names: dict[str, str] = {}
    for event in receiver.itercapture(timeout=timeout):
        click.echo(json.dumps(event, default=repr) if as_json else dump_line(event, names))
        sys.stdout.flush()


@contextmanager
def _quit_key(done: threading.Event) -> Iterator[None]:
    """On a terminal, ``q`` sets ``done`` (read key by key, without echo); else nothing."""
    if not sys.stdin.isatty():
        yield
        return
    import termios  # noqa: PLC0415 - POSIX only, and only for a terminal
    import tty  # noqa: PLC0415 - same

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def read() -> None:
        while not done.is_set():
            key = os.read(fd, 1)
            if key in (b"q", b"Q", b""):
                done.set()

    tty.setcbreak(fd)
    threading.Thread(target=read, name="caraway-events-keys", daemon=True).start()
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _watch(
    receiver: EventReceiver,
    state: State,
    *,
    broker: str,
    frequency: float,
    timeout: float | None,
    camera: Callable[[State], Any] | None,
) -> None:
    def feed() -> None:
        for event in receiver.itercapture(timeout=timeout):
            state.event(event)

    thread = threading.Thread(target=feed, name="caraway-events-receiver", daemon=True)
    thread.start()
    tty = sys.stdout.isatty()
    quit_pressed = threading.Event()
    try:
        with _quit_key(quit_pressed):
            while thread.is_alive() and not quit_pressed.is_set():
                thread.join(frequency)
                if quit_pressed.is_set():
                    break
                if camera is not None:
                    camera(state)
                    continue
                frame = render(state, broker=broker)
                click.echo((_CLEAR + _colour(frame)) if tty else frame + "\n")
    finally:
        receiver.stop()
        thread.join(5)


@click.command()
@click.option("-d", "--dump", is_flag=True, help="Print every event as one line.")
@click.option("--json", "as_json", is_flag=True, help="With --dump: one JSON document a line.")
@click.option(
    "-F",
    "--frequency",
    "--freq",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between redraws (or camera shots).",
)
@click.option("-c", "--camera", help="Call module:callable with the State at each tick.")
@click.option("--max-tasks", type=int, default=10_000, show_default=True)
@click.option("--timeout", type=float, help="Exit after this many seconds (default: never).")
@click.pass_context
def events(
    ctx: click.Context,
    dump: bool,
    as_json: bool,
    frequency: float,
    camera: str | None,
    max_tasks: int,
    timeout: float | None,
) -> None:
    """Watch the cluster's events: workers and recent tasks, live."""
    app = app_of(ctx)
    if frequency <= 0:
        raise click.BadParameter("must be above 0", param_hint="--frequency")
    shot = load_camera(camera) if camera else None
    receiver = EventReceiver(app)
    try:
        if dump:
            _dump(receiver, timeout, as_json=as_json)
        else:
            _watch(
                receiver,
                State(max_tasks=max_tasks),
                broker=app.broker_url,
                frequency=frequency,
                timeout=timeout,
                camera=shot,
            )
    except KeyboardInterrupt:
        receiver.stop()
