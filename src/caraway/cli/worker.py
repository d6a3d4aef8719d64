"""``caraway worker``: start a node (banner, logging, pidfile, detaching), then supervise."""

from __future__ import annotations

import grp
import importlib
import logging
import multiprocessing
import os
import pwd
import socket
import sys
import time
from typing import Any

import click

from caraway import exceptions
from caraway.app import Caraway
from caraway.cli.control import purged_text
from caraway.cli.loader import app_of
from caraway.cli.pidfile import Pidfile
from caraway.request import current_request
from caraway.routing import queue_names
from caraway.utils.log import TASK_LOGGER, TaskFormatter
from caraway.worker.banner import banner
from caraway.worker.pools import GREEN_POOLS, patch_concurrency
from caraway.worker.supervisor import Supervisor

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def expand_hostname(template: str) -> str:
    """``name@%h`` -> ``name@host.example``: %h host, %n short name, %d domain, as Celery;
    %i and %I (a pool process's index in file names) are 0 and empty for the node."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    if "@" not in template and "%" not in template:
        template = f"{template}@%h"
    return (
        template.replace("%h", host)
        .replace("%n", short)
        .replace("%d", domain)
        .replace("%i", "0")
        .replace("%I", "")
    )


def expand_path(template: str, hostname: str, index: int | None = None) -> str:
    """Expand %n %h %d %i %I %p in a pidfile/logfile path (%I: child index, '' for the parent)."""
    name, _, host = hostname.partition("@")
    return (
        template.replace("%n", name)
        .replace("%h", hostname)
        .replace("%d", host.partition(".")[2])
        .replace("%i", str(index or 0))
        .replace("%I", f"-{index}" if index else "")
        .replace("%p", hostname)
    )


@click.command(context_settings={"show_default": True})
@click.option(
    "-c", "--concurrency", type=int, default=None, help="Child processes/threads (default: CPUs)."
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo", *GREEN_POOLS]),
    default="prefork",
    help="prefork, threads, solo, or gevent/eventlet (greenlets; needs the library).",
)
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", default="caraway@%h", help="Node name.")
@click.option("-E", "--task-events", is_flag=True, help="Send task events for monitors.")
@click.option(
    "-l", "--loglevel", default="WARNING", type=click.Choice(LEVELS, case_sensitive=False)
)
@click.option("-f", "--logfile", default=None, help="Log file (%n, %h, %I expand).")
@click.option("--pidfile", default=None, help="Write the pid here once ready (%n expands).")
@click.option("-D", "--detach", is_flag=True, help="Run in the background (daemonise).")
@click.option(
    "--max-tasks-per-child", type=int, default=None, help="Replace a child after N tasks."
)
@click.option(
    "--max-memory-per-child", type=int, default=None, help="Replace a child above N KiB resident."
)
@click.option("--autoscale", default=None, help="MAX,MIN children, grown and shrunk with load.")
@click.option("--time-limit", type=float, default=None, help="Hard time limit (s) for every task.")
@click.option("--soft-time-limit", type=float, default=None, help="Soft time limit (s).")
@click.option("--prefetch-multiplier", type=int, default=None, help="worker_prefetch_multiplier.")
@click.option("-S", "--statedb", default=None, help="Keep revoked task ids in this file.")
@click.option(
    "-O",
    "--optimization",
    "optimization",
    type=click.Choice(["default", "fair"]),
    default="default",
    help="fair: a process holds only the task it runs (prefetch 1), as Celery's -O fair.",
)
@click.option(
    "--purge", "--discard", "purge", is_flag=True, help="Delete waiting messages, then start."
)
@click.option("--disable-prefetch", is_flag=True, help="Fetch a task only for a free slot.")
@click.option("-I", "--include", default=None, help="Comma-separated modules to import.")
@click.option("--uid", default=None, help="Run as this user (name or id) once started.")
@click.option("--gid", default=None, help="Run as this group (name or id) once started.")
@click.option("--umask", default=None, help="Octal umask for files the worker creates.")
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.option("--without-heartbeat", is_flag=True, help="Send no worker heartbeat events.")
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int | None,
    pool: str,
    queues: str | None,
    hostname: str,
    task_events: bool,
    loglevel: str,
    logfile: str | None,
    pidfile: str | None,
    detach: bool,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    autoscale: str | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    prefetch_multiplier: int | None,
    statedb: str | None,
    optimization: str,
    purge: bool,
    disable_prefetch: bool,
    include: str | None,
    uid: str | None,
    gid: str | None,
    umask: str | None,
    without_gossip: bool,
    without_mingle: bool,
    without_heartbeat: bool,
) -> None:
    """Start a worker node that runs the app's tasks."""
    if pool in GREEN_POOLS:
        patch_concurrency(pool)  # a no-op when the command line already patched
    app = app_of(ctx)
    node = expand_hostname(hostname)
    pid_path = expand_path(pidfile, node) if pidfile else None
    guard = Pidfile(pid_path) if pid_path else None
    if guard is not None:
        guard.check()
    if detach:
        _detach(expand_path(logfile, node) if logfile else None)
    formats = (str(app.conf.worker_log_format), str(app.conf.worker_task_log_format))
    _setup_logging(loglevel, logfile, node, formats)
    heartbeats = not without_heartbeat
    fair = optimization == "fair" or disable_prefetch
    _drop_privileges(uid, gid, umask)
    overrides = {
        "task_time_limit": time_limit,
        "task_soft_time_limit": soft_time_limit,
        # -O fair: each process holds only the task it runs
        "worker_prefetch_multiplier": prefetch_multiplier or (1 if fair else None),
        "worker_state_db": statedb,
        "worker_send_task_events": True if task_events else None,
    }
    app.conf.update({key: value for key, value in overrides.items() if value is not None})
    scale = _parse_autoscale(autoscale)
    _import_tasks(app, include)
    names = queue_names(queues) if queues else [str(app.conf.task_default_queue)]
    size = concurrency or app.conf.worker_concurrency or os.cpu_count() or 1
    size = 1 if pool == "solo" else size
    if scale is not None:
        size = scale[1] or 1
    wait_for_broker(app)
    if purge:
        _purge(app, names)
    click.echo(
        banner(
            app,
            hostname=node,
            concurrency=size,
            pool=pool,
            events=bool(app.conf.worker_send_task_events),
            queues=names,
        )
    )
    sys.stdout.flush()

    def ready() -> None:
        if guard is not None:
            guard.write()

    def child_init(index: int) -> None:
        _child_logging(loglevel, logfile, node, index + 1, formats)

    supervisor = Supervisor(
        app,
        hostname=node,
        queues=names,
        concurrency=size,
        pool=pool,
        on_ready=ready,
        child_init=child_init,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        autoscale=scale,
        heartbeats=heartbeats,
    )
    try:
        code = supervisor.run()
    finally:
        if guard is not None:
            guard.remove()
    sys.exit(code)


def _import_tasks(app: Caraway, include: str | None) -> None:
    app.loader_import_modules()
    for module in queue_names(include) if include else ():
        importlib.import_module(module)


def _drop_privileges(uid: str | None, gid: str | None, umask: str | None) -> None:
    """``--uid``/``--gid``/``--umask``, as Celery applies them before it starts."""
    if umask is not None:
        try:
            os.umask(int(umask, 8))
        except ValueError:
            message = f"{umask!r} is not an octal umask"
            raise click.BadParameter(message, param_hint="--umask") from None
    if gid is not None:
        os.setgid(_id_of(gid, grp.getgrnam, "group"))
    if uid is not None:
        os.setuid(_id_of(uid, pwd.getpwnam, "user"))


def _id_of(value: str, lookup: Any, kind: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(lookup(value)[2])
    except KeyError:
        raise click.BadParameter(f"no {kind} named {value!r}") from None


def _purge(app: Caraway, names: list[str]) -> None:
    click.echo(purged_text(app.control.purge(names), len(names)))


def _parse_autoscale(value: str | None) -> tuple[int, int] | None:
    """``--autoscale=10,3`` -> (10, 3); a single number means (n, 0) as in Celery."""
    if not value:
        return None
    high, _, low = value.partition(",")
    try:
        bounds = int(high), int(low or 0)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not MAX,MIN (e.g. 10,3)", param_hint="--autoscale"
        ) from None
    if bounds[1] > bounds[0] or bounds[0] < 1:
        raise click.BadParameter(
            f"{value!r}: need MAX >= MIN and MAX >= 1", param_hint="--autoscale"
        )
    return bounds


def wait_for_broker(app: Caraway) -> None:
    """Check the broker answers; retry with backoff, then give up with a clear message."""
    conf = app.conf
    on_startup = conf.broker_connection_retry_on_startup
    retry = bool(conf.broker_connection_retry if on_startup is None else on_startup)
    attempts = int(conf.broker_connection_max_retries or 0) if retry else 0
    delay = 0.5
    for attempt in range(attempts + 1):
        try:
            admin = app.admin()
            try:
                admin.size(str(conf.task_default_queue))
            finally:
                admin.close()
            return
        except exceptions.ImproperlyConfigured:
            raise  # a wrong URL or a missing client library will not fix itself
        except Exception as exc:
            if attempt >= attempts:
                raise exceptions.BrokerConnectionError(
                    f"cannot reach the broker at {app.broker_url} after {attempt + 1} "
                    f"attempt(s): {exc}. Check that it is running and that broker_url is right "
                    "(broker_connection_max_retries sets how often to try)."
                ) from exc
            logging.getLogger("caraway.worker").error(
                "cannot reach the broker at %s: %s; trying again in %.1fs (attempt %d of %d)",
                app.broker_url,
                exc,
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _setup_logging(
    level: str, logfile: str | None, node: str, formats: tuple[str, str] | None = None
) -> None:
    """The root logger, and the task logger with Celery's ``task_name[task_id]:`` prefix."""
    plain, tasks = formats or (LOG_FORMAT, TASK_LOG_FORMAT)
    root = logging.getLogger()
    task_logger = logging.getLogger(TASK_LOGGER)
    for logger in (root, task_logger):
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
    handler, task_handler = _log_handler(logfile, node), _log_handler(logfile, node)
    handler.setFormatter(logging.Formatter(plain))
    task_handler.setFormatter(TaskFormatter(tasks, _running_task))
    root.addHandler(handler)
    task_logger.addHandler(task_handler)
    task_logger.propagate = False  # one line per record, in the task format (as Celery)
    root.setLevel(level.upper().replace("FATAL", "CRITICAL"))


def _log_handler(logfile: str | None, node: str) -> logging.Handler:
    if not logfile:
        return logging.StreamHandler(sys.stderr)
    path = expand_path(logfile, node)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return logging.FileHandler(path)


def _running_task() -> tuple[str, str] | None:
    request = current_request()
    if request is None or request.id is None:
        return None
    return str(request.task), request.id


def _child_logging(
    level: str, logfile: str | None, node: str, index: int, formats: tuple[str, str]
) -> None:
    multiprocessing.current_process().name = f"ForkPoolWorker-{index}"
    if logfile and "%I" in logfile:
        _setup_logging(level, expand_path(logfile, node, index), node, formats)


def _detach(logfile: str | None) -> None:
    """Daemonise: two forks and a new session; output goes to the log file."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    target = logfile or os.devnull
    if logfile:
        os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
