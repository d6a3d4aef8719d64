"""Operator commands: inspect, control, status, purge, call, result and report.

Thin over ``app.control`` and the app; output follows Celery's (``-> node: OK`` blocks,
``-j`` for JSON). Bad input (an unknown command, bad JSON, a destination that does not
answer) is one ``Error:`` line and a non-zero exit, before or instead of any broadcast.
"""

from __future__ import annotations

import difflib
import json
import pprint
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from caraway.cli.beat import inspect_beat
from caraway.cli.context import state_of
from caraway.cli.loader import app_of
from caraway.cli.worker import purged_text
from caraway.control import Control
from caraway.worker.control import COMMANDS

#: Celery's exit code when no node replied (EX_UNAVAILABLE)
EX_UNAVAILABLE = 69

#: what each command takes on the command line, in order ("*name" takes the rest)
_INSPECT_ARGS: dict[str, tuple[str, ...]] = {
    "ping": (),
    "active": (),
    "reserved": (),
    "scheduled": (),
    "registered": ("*taskinfoitems",),
    "stats": (),
    "active_queues": (),
    "revoked": (),
    "query_task": ("*ids",),
    "conf": ("with_defaults",),
    "report": (),
    "clock": (),
    "memsample": (),
    "memdump": ("samples",),
    "objgraph": ("type", "num", "max_depth"),
}
_CONTROL_ARGS: dict[str, tuple[str, ...]] = {
    "revoke": ("*task_id",),
    "revoke_by_stamped_headers": ("*headers",),
    "terminate": ("signal", "*task_id"),
    "rate_limit": ("task_name", "rate_limit"),
    "time_limit": ("task_name", "soft", "hard"),
    "add_consumer": ("queue", "exchange", "exchange_type", "routing_key"),
    "cancel_consumer": ("queue",),
    "pool_grow": ("n",),
    "pool_shrink": ("n",),
    "pool_restart": ("*modules",),
    "autoscale": ("max", "min"),
    "heartbeat": (),
    "election": ("id", "topic", "action"),
    "shutdown": (),
    "enable_events": (),
    "disable_events": (),
}
_REQUIRED = {"terminate": 2, "rate_limit": 2, "time_limit": 2, "add_consumer": 1}
_REQUIRED.update(cancel_consumer=1, revoke=1, query_task=1, election=2)
_REQUIRED.update(revoke_by_stamped_headers=1)
_NUMBERS = {"soft", "hard", "n", "max", "min", "samples", "num", "max_depth"}
_INTEGERS = {"n", "max", "min", "samples", "num", "max_depth"}

assert set(_INSPECT_ARGS) | set(_CONTROL_ARGS) <= set(COMMANDS)


class CommandError(click.ClickException):
    """A one-line error; exit status 1."""


class BadUsage(CommandError):
    """Bad input on the command line; exit status 2."""

    exit_code = 2


class NoReply(CommandError):
    """Nodes that should have answered did not (Celery's EX_UNAVAILABLE)."""

    exit_code = EX_UNAVAILABLE


def _arguments(command: str, spec: tuple[str, ...], values: Sequence[str]) -> dict[str, Any]:
    """Map positional CLI values onto the command's argument names."""
    needed = _REQUIRED.get(command, 0)
    if len(values) < needed:
        names = " ".join(name.lstrip("*").upper() for name in spec)
        raise BadUsage(f"{command} needs {names}")
    result: dict[str, Any] = {}
    rest = list(values)
    for name in spec:
        if name.startswith("*"):
            result[name[1:]], rest = rest, []
            break
        if rest:
            result[name] = _number(name, rest.pop(0))
    if rest:
        raise BadUsage(f"{command} takes at most {len(spec)} arguments")
    if command == "conf":
        result["with_defaults"] = str(result.get("with_defaults", "")).lower() in ("1", "true")
    return result


def _usage(spec: tuple[str, ...]) -> str:
    return " ".join(f"[{name[1:]}...]" if name.startswith("*") else f"<{name}>" for name in spec)


def _number(name: str, text: str) -> Any:
    if name not in _NUMBERS:
        return text
    try:
        return int(text) if name in _INTEGERS else float(text)
    except ValueError:
        raise BadUsage(f"{name} must be a number, not {text!r}") from None


def _destination(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _show(
    replies: list[dict[str, Any]], as_json: bool, *, footer: bool = True, quiet: bool = False
) -> bool:
    """Print replies as Celery's command line does; returns whether a node replied an error.

    ``->  node: OK`` then the reply indented: a list as ``* item`` lines, a dict as JSON,
    an ``ok``/``error`` text indented once more; ``inspect`` ends with the count of nodes.
    ``-q`` (Celery's too): `` node: OK`` without the arrow, and no count.
    """
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    failed = any(isinstance(answer, Mapping) and "error" in answer for answer in merged.values())
    if as_json:
        click.echo(json.dumps(merged, default=str))
        return failed
    for node, answer in merged.items():
        status, body = _pretty(answer)
        click.echo(f"{_arrow(quiet)} {node}: {status}")
        if body:
            click.echo(_indent(body))
    if footer and not quiet:
        count = len(merged)
        click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")
    return failed


def _arrow(quiet: bool) -> str:
    return "" if quiet else "-> "


def _pretty(value: Any) -> tuple[str, str]:
    """(OK or ERROR, the text) for one node's reply, as Celery's ``pretty``."""
    if isinstance(value, list):
        return "OK", "\n".join(f"* {item}" for item in value) if value else "- empty -"
    if isinstance(value, Mapping):
        if "ok" in value:
            return "OK", _indent(_pretty(value["ok"])[1])
        if "error" in value:
            return "ERROR", _indent(_pretty(value["error"])[1])
        return "OK", json.dumps(value, sort_keys=True, indent=4, default=str) + "\n"
    if isinstance(value, str):
        return "OK", value
    return "OK", pprint.pformat(value)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.split("\n"))


def _run(
    ctx: click.Context,
    kind: str,
    command: str,
    arguments: dict[str, Any],
    destination: list[str] | None,
    timeout: float,
    as_json: bool,
) -> None:
    app = app_of(ctx)
    control: Control = app.control
    try:
        replies = (
            control.broadcast(command, arguments, destination, reply=True, timeout=timeout) or []
        )
    finally:
        control.close()
    if not replies:
        raise NoReply("No nodes replied within time constraint.")
    failed = _show(replies, as_json, footer=kind == "inspect", quiet=state_of(ctx).quiet)
    answered = {node for reply in replies for node in reply}
    missing = [node for node in destination or () if node not in answered]
    if missing:
        raise NoReply(f"no reply from {', '.join(missing)}")
    if failed:
        ctx.exit(1)


def _broadcast_command(kind: str, table: dict[str, tuple[str, ...]]) -> click.Command:
    extra = ", beat (the periodic-task schedule)" if kind == "inspect" else ""

    @click.command(kind, help=f"{kind.capitalize()} worker nodes: {', '.join(table)}{extra}.")
    @click.argument("action", metavar="COMMAND", required=False)
    @click.argument("values", nargs=-1)
    @click.option("--list", "listing", is_flag=True, help=f"List the {kind} commands and exit.")
    @click.option("-d", "--destination", help="Comma-separated node names (default: all).")
    @click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
    @click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")
    @click.pass_context
    def command(
        ctx: click.Context,
        action: str,
        values: tuple[str, ...],
        destination: str | None,
        timeout: float,
        as_json: bool,
        listing: bool,
    ) -> None:
        if listing or action is None:
            if action is None and not listing:
                raise BadUsage(f"{kind} needs a COMMAND; one of: {', '.join(table)}")
            names = [*table, "beat"] if kind == "inspect" else list(table)
            click.echo("\n".join(f"  {name} {_usage(table.get(name, ()))}" for name in names))
            return
        if kind == "inspect" and action == "beat":  # read from the broker, not broadcast
            inspect_beat(ctx, as_json)
            return
        if action not in table:
            raise BadUsage(f"unknown {kind} command {action!r}; choose from: {', '.join(table)}")
        arguments = _arguments(action, table[action], values)
        _run(ctx, kind, action, arguments, _destination(destination), timeout, as_json)

    return command


inspect = _broadcast_command("inspect", _INSPECT_ARGS)
control = _broadcast_command("control", _CONTROL_ARGS)


@click.command()
@click.option("-d", "--destination", help="Comma-separated node names (default: all).")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
@click.option("-j", "--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """One line per node that answers a ping."""
    app = app_of(ctx)
    try:
        replies = app.control.ping(destination=_destination(destination), timeout=timeout)
    finally:
        app.control.close()
    if not replies:
        raise NoReply("No nodes replied within time constraint.")
    if as_json:
        click.echo(json.dumps(replies))  # Celery's: the ping replies as they came
        return
    nodes = sorted(node for reply in replies for node in reply)
    for node in nodes:
        click.echo(f"{_arrow(state_of(ctx).quiet)} {node}: OK")
    click.echo(f"\n{len(nodes)} node{'s' if len(nodes) != 1 else ''} online.")


def _known_queues(app: Any) -> list[str]:
    configured = app.conf.task_queues
    if not configured:
        return [app.conf.task_default_queue]
    if isinstance(configured, Mapping):
        return list(configured)
    names = []
    for queue in configured:
        name = queue if isinstance(queue, str) else getattr(queue, "name", None)
        if isinstance(queue, Mapping):
            name = queue.get("name")
        if name:
            names.append(str(name))
    return names


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues to purge (default: all known).")
@click.option("-X", "--exclude-queues", help="Comma-separated queues to leave alone.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queues: str | None, exclude_queues: str | None, force: bool) -> None:
    """Delete every waiting task message from the queues."""
    app = app_of(ctx)
    names = _destination(queues) or _known_queues(app)
    excluded = set(_destination(exclude_queues) or ())
    names = [name for name in names if name not in excluded]
    if not names:
        raise CommandError("no queues left to purge")
    plural = "s" if len(names) != 1 else ""
    if not force:
        click.echo(
            f"WARNING: This will remove all tasks from queue{plural}: {', '.join(names)}.\n"
            "         There is no undo for this operation!\n"
        )
        if not click.confirm("Are you sure you want to delete all tasks?", default=False):
            raise CommandError("Aborted: nothing was purged.")
    count = app.control.purge(names)
    click.echo(purged_text(count, len(names)))


def _json_arg(name: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadUsage(f"--{name} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise BadUsage(f"--{name} must be a JSON {kind.__name__}, got {text!r}")
    return value


@click.command()
@click.argument("name")
@click.option("-a", "--args", "args_json", default="[]", help="Positional arguments as JSON.")
@click.option("-k", "--kwargs", "kwargs_json", default="{}", help="Keyword arguments as JSON.")
@click.option("--eta", help="ISO-8601 time to run at.")
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--expires", type=float, help="Seconds after which the task is discarded.")
@click.option("--serializer", default=None)
@click.option("--queue", default=None)
@click.option("--exchange", default=None)
@click.option("--routing-key", default=None)
@click.option(
    "--force",
    is_flag=True,
    help="Send NAME even if the app does not register it (a task only the workers import).",
)
@click.pass_context
def call(
    ctx: click.Context,
    /,
    name: str,
    args_json: str,
    kwargs_json: str,
    force: bool,
    **options: Any,
) -> None:
    """Send task NAME by name and print its id."""
    args = _json_arg("args", args_json, list)
    kwargs = _json_arg("kwargs", kwargs_json, dict)
    if options.get("eta"):
        try:
            options["eta"] = datetime.fromisoformat(options["eta"])
        except ValueError as exc:
            raise BadUsage(f"--eta: {exc}") from None
    options = {key: value for key, value in options.items() if value is not None}
    app = app_of(ctx)
    if not force:
        _check_registered(app.tasks, name, app.main)
    result = app.send_task(name, args, kwargs, **options)
    click.echo(result.id)


def _check_registered(tasks: Mapping[str, object], name: str, main: str | None) -> None:
    """Refuse a name the app does not know, when it knows some: a typo would otherwise
    print an id and leave a result that fails in the worker (or stays PENDING)."""
    known = sorted(task for task in tasks if not task.startswith("celery."))
    if not known or name in tasks:
        return
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the app has: {', '.join(known)}."
    raise BadUsage(
        f"task {name!r} is not registered in app {main or '__main__'!r}; {hint} "
        "Pass --force to send it anyway (a task only the workers import)."
    )


@click.command()
@click.argument("task_id")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the traceback instead.")
@click.option(
    "-t", "--timeout", type=float, default=None, help="Seconds to wait (default: forever)."
)
@click.pass_context
def result(ctx: click.Context, task_id: str, show_traceback: bool, timeout: float | None) -> None:
    """Print the result of task TASK_ID (waiting for it, as Celery does)."""
    app = app_of(ctx)
    found = app.AsyncResult(task_id)
    if show_traceback:
        click.echo(found.traceback or "")
        return
    click.echo(_result_text(found.get(timeout=timeout, propagate=False)))


def _result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        return repr(value)
    return json.dumps(value, default=str)


@click.command()
@click.pass_context
def report(ctx: click.Context) -> None:
    """Print versions, platform and settings for bug reports (passwords masked)."""
    click.echo(app_of(ctx).bugreport())
    sys.stdout.flush()


commands: list[click.Command] = [inspect, control, status, purge, call, result, report]
