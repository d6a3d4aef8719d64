"""``caraway shell``, ``caraway list bindings`` and ``caraway upgrade settings``.

Celery's helper commands: a Python shell with the app and its tasks at hand, the bindings
the app's queues declare, and a rewrite of pre-4.0 uppercase setting names to Celery 5's.
"""

from __future__ import annotations

import code
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from caraway._config_table import ALIASES, OPTIONS
from caraway.cli.loader import app_of


# -- shell ---------------------------------------------------------------------------------
@click.command()
@click.option("--ipython", "flavour", flag_value="ipython", help="Use IPython.")
@click.option("--bpython", "flavour", flag_value="bpython", help="Use bpython.")
@click.option("--python", "flavour", flag_value="python", help="Use the plain Python shell.")
@click.option("--without-tasks", "-T", is_flag=True, help="Do not put the tasks in the shell.")
@click.option("--eventlet", is_flag=True, help="Monkey-patch for eventlet first.")
@click.option("--gevent", is_flag=True, help="Monkey-patch for gevent first.")
@click.pass_context
def shell(
    ctx: click.Context,
    flavour: str | None,
    without_tasks: bool,
    eventlet: bool,
    gevent: bool,
) -> None:
    """A Python shell with the app, the canvas and the app's tasks by name."""
    from caraway.worker.pools import patch_concurrency  # noqa: PLC0415 - patches the process

    if gevent or eventlet:
        patch_concurrency("gevent" if gevent else "eventlet")
    namespace = shell_namespace(app_of(ctx), with_tasks=not without_tasks)
    if flavour in (None, "ipython") and _run_ipython(namespace, required=flavour == "ipython"):
        return
    if flavour == "bpython" and _run_bpython(namespace):
        return
    code.interact(banner=f"caraway shell: {', '.join(sorted(namespace))}", local=namespace)


def shell_namespace(app: Any, *, with_tasks: bool) -> dict[str, Any]:
    """What the shell starts with: the app (as ``app`` and ``celery``), canvas, the tasks."""
    import caraway  # noqa: PLC0415 - the package's public names, for the shell only

    namespace: dict[str, Any] = {"app": app, "celery": app, "caraway": caraway}
    for name in ("Task", "chain", "chord", "group", "signature", "chunks", "xmap", "xstarmap"):
        namespace[name] = getattr(caraway, name)
    namespace["subtask"] = caraway.signature
    if with_tasks:
        for name, task in app.tasks.items():
            if not name.startswith("celery."):
                namespace[name.rpartition(".")[2]] = task
    return namespace


def _run_ipython(namespace: dict[str, Any], *, required: bool) -> bool:
    try:
        from IPython import start_ipython  # noqa: PLC0415 - optional shell
    except ImportError:
        if required:
            raise click.ClickException("--ipython needs IPython: pip install ipython") from None
        return False
    start_ipython(argv=[], user_ns=namespace)
    return True


def _run_bpython(namespace: dict[str, Any]) -> bool:
    try:
        import bpython  # noqa: PLC0415 - optional shell
    except ImportError:
        raise click.ClickException("--bpython needs bpython: pip install bpython") from None
    bpython.embed(namespace)
    return True


# -- list bindings ---------------------------------------------------------------------------
@click.group("list")
def list_() -> None:
    """List what the broker holds for the app: bindings."""


@list_.command()
@click.pass_context
def bindings(ctx: click.Context) -> None:
    """The bindings the app's queues declare: queue, exchange and routing key."""
    app = app_of(ctx)
    line = "{0:<28} {1:<28} {2}"
    click.echo(line.format("Queue", "Exchange", "Routing Key"))
    click.echo(line.format("-" * 16, "-" * 16, "-" * 16))
    for queue, exchange, key in declared_bindings(app.conf):
        click.echo(line.format(queue, exchange, key))


def declared_bindings(conf: Any) -> list[tuple[str, str, str]]:
    """(queue, exchange, routing key) of each queue in ``task_queues`` (or the default)."""
    configured = conf.task_queues
    if not configured:
        name = str(conf.task_default_queue)
        exchange = str(conf.task_default_exchange or name)
        return [(name, exchange, str(conf.task_default_routing_key or name))]
    if isinstance(configured, Mapping):
        items: Any = configured.items()
    else:
        items = ((None, queue) for queue in configured)
    found = []
    for key, queue in items:
        name = key or _field(queue, "name")
        exchange = _field(queue, "exchange") or name
        if not isinstance(exchange, str):
            exchange = _field(exchange, "name") or name
        found.append((str(name), str(exchange), str(_field(queue, "routing_key") or name)))
    return found


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, str):
        return value if name == "name" else None
    return getattr(value, name, None)


# -- upgrade settings --------------------------------------------------------------------------
@click.group()
def upgrade() -> None:
    """Rewrite old configuration to Celery 5's names: settings."""


@upgrade.command()
@click.argument("filename", type=click.Path(exists=True, dir_okay=False))
@click.option("--django", is_flag=True, help="Upper-case CELERY_ names (a Django settings.py).")
@click.option("--compat", is_flag=True, help="Keep the old names another project may read.")
@click.option("--no-backup", is_flag=True, help="Do not keep FILENAME.orig.")
def settings(filename: str, django: bool, compat: bool, no_backup: bool) -> None:
    """Rename pre-4.0 setting names in FILENAME (CELERYD_CONCURRENCY -> worker_concurrency)."""
    path = Path(filename)
    text = path.read_text()
    new, renamed = upgrade_text(text, django=django, compat=compat)
    if not renamed:
        click.echo(f"{filename}: no old setting names found")
        return
    if not no_backup:
        shutil.copyfile(path, f"{path}.orig")
    path.write_text(new)
    for old, name in renamed:
        click.echo(f"{old} -> {name}")
    click.echo(f"{filename}: {len(renamed)} setting(s) renamed")


_ASSIGNMENT = re.compile(r"^(\s*)([A-Z][A-Z0-9_]*)(\s*=)", re.MULTILINE)


def upgrade_text(text: str, *, django: bool, compat: bool) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with old names assigned at line starts renamed, and the renames made."""
    renamed: list[tuple[str, str]] = []

    def rename(match: re.Match[str]) -> str:
        old = match.group(2)
        name = ALIASES.get(old)
        if name is None or name not in OPTIONS:
            return match.group(0)
        new = f"CELERY_{name.upper()}" if django else name
        if new == old:
            return match.group(0)
        renamed.append((old, new))
        if compat:
            return f"{match.group(1)}{new}{match.group(3)} {old} ="
        return f"{match.group(1)}{new}{match.group(3)}"

    return _ASSIGNMENT.sub(rename, text), renamed
