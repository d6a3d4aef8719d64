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
from collections.abc import Sequence
from typing import Any

import click

from caraway import exceptions, signals
from caraway.app import Caraway
from caraway.beat import EmbeddedBeat
from caraway.cli.loader import app_of
from caraway.cli.pidfile import Pidfile
from caraway.entities import Queue, declare_on
from caraway.request import current_request
from caraway.routing import queue_names, select_queues
from caraway.utils.files import SafeFileHandler, SymlinkRefused, open_nofollow
from caraway.utils.log import TASK_LOGGER, TaskFormatter
from caraway.worker.banner import banner
from caraway.worker.monitor import HEARTBEAT_FREQ
from caraway.worker.pools import GREEN_POOLS, patch_concurrency
from caraway.worker.supervisor import Supervisor

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)
POOLS = ("prefork", "threads", "solo", *GREEN_POOLS)
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
    type=click.Choice([*POOLS, "processes", "custom"]),
    default=None,
    help="Default: worker_pool (prefork; 'processes' is prefork); gevent/eventlet need "
    "their library.",
)
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", default=None, help="Comma-separated queues not to consume.")
@click.option("-n", "--hostname", default="caraway@%h", help="Node name.")
@click.option(
    "-E", "--task-events", "--events", is_flag=True, help="Send task events for monitors."
)
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
    help="Accepted for Celery: both profiles are caraway's fair dispatch (a busy process "
    "gives back what it prefetched), as both are Celery's since 4.0.",
)
@click.option(
    "--purge", "--discard", "purge", is_flag=True, help="Delete waiting messages, then start."
)
@click.option("--disable-prefetch", is_flag=True, help="Fetch a task only for a free slot.")
@click.option("-I", "--include", default=None, help="Comma-separated modules to import.")
@click.option("--uid", default=None, help="Run as this user (name or id) once started.")
@click.option("--gid", default=None, help="Run as this group (name or id) once started.")
@click.option("--umask", default=None, help="Octal umask for files the worker creates.")
@click.option(
    "--without-gossip", is_flag=True, help="caraway nodes never gossip: always so (no-op)."
)
@click.option(
    "--without-mingle", is_flag=True, help="caraway nodes never mingle at start: always so (no-op)."
)
@click.option("--without-heartbeat", is_flag=True, help="Send no worker heartbeat events.")
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between worker heartbeat events (2).",
)
@click.option(
    "--pool-start-method",
    type=click.Choice(["fork", "spawn"]),
    default=None,
    help="fork only: caraway's prefork pool forks its children.",
)
@click.option("--executable", default=None, help="Refused: children are forked, not started.")
@click.option(
    "-B", "--beat", "embed_beat", is_flag=True, help="Also run beat (safe on every node)."
)
@click.option(
    "-s", "--schedule-filename", "--schedule", default=None, help="Beat's schedule name (-B)."
)
@click.option("--scheduler", default=None, help="Only Celery's default is accepted (-B).")
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    exclude_queues: str | None,
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
    heartbeat_interval: float | None,
    pool_start_method: str | None,
    executable: str | None,
    embed_beat: bool,
    schedule_filename: str | None,
    scheduler: str | None,
) -> None:
    """Start a worker node that runs the app's tasks."""
    _refuse_unsupported(pool_start_method, executable)
    if pool in GREEN_POOLS:
        patch_concurrency(pool)  # a no-op when the command line already patched
    app = app_of(ctx)
    pool = _pool_name(pool) if pool else _pool_setting(app)
    node = expand_hostname(hostname)
    pid_path = expand_path(pidfile, node) if pidfile else None
    guard = Pidfile(pid_path) if pid_path else None
    if guard is not None:
        guard.check()
    if detach:
        _detach(expand_path(logfile, node) if logfile else None)
    signals.celeryd_init.send(sender=node, instance=None, conf=app.conf, options=ctx.params)
    _configure_logging(app, loglevel, logfile, node)
    heartbeats = not without_heartbeat
    # -O fair and -O default are one profile, as in Celery 5 (both its fair strategy): a
    # busy process gives back what it fetched (worker/handoff.py), so neither lowers the
    # prefetch; --disable-prefetch does (Celery's: fetch only for a free process)
    one_at_a_time = disable_prefetch
    _drop_privileges(uid, gid, umask)
    overrides = {
        "task_time_limit": time_limit,
        "task_soft_time_limit": soft_time_limit,
        # --disable-prefetch: each process holds only the task it runs
        "worker_prefetch_multiplier": prefetch_multiplier or (1 if one_at_a_time else None),
        "worker_state_db": statedb,
        "worker_send_task_events": True if task_events else None,
    }
    app.conf.update({key: value for key, value in overrides.items() if value is not None})
    scale = _parse_autoscale(autoscale)
    _import_tasks(app, include)
    chosen = select_queues(app.conf, queue_names(queues or ()), queue_names(exclude_queues or ()))
    names = [queue.for_node(node).name for queue in chosen]
    size = concurrency or app.conf.worker_concurrency or os.cpu_count() or 1
    size = 1 if pool == "solo" else size
    if scale is not None:
        size = scale[1] or 1
    embedded = None
    if embed_beat:  # checked now: a bad schedule stops the node before it starts
        embedded = EmbeddedBeat(
            app, node=node, schedule_filename=schedule_filename, scheduler=scheduler
        )
    wait_for_broker(app)
    declared = _declare_queues(app, chosen, node)
    if purge:
        click.echo(purged_text(app.control.purge(names), len(names)))
    click.echo(
        banner(
            app,
            hostname=node,
            concurrency=size,
            pool=pool,
            events=bool(app.conf.worker_send_task_events),
            queues=chosen,
        )
    )
    sys.stdout.flush()
    _warn_if_no_tasks(app)

    def ready() -> None:
        if guard is not None:
            guard.write()

    def child_init(index: int) -> None:
        _child_logging(loglevel, logfile, node, index + 1)

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
        heartbeat_interval=heartbeat_interval or HEARTBEAT_FREQ,
        beat=embedded,
    )
    signals.celeryd_after_setup.send(sender=node, instance=supervisor, conf=app.conf)
    try:
        code = supervisor.run()
    finally:
        _unbind_broadcasts(app, declared)
        if guard is not None:
            guard.remove()
    sys.exit(code)


def purged_text(count: int, queues: int) -> str:
    """Celery's line after a purge."""
    plural = "s" if queues != 1 else ""
    if not count:
        return f"No messages purged from {queues} queue{plural}."
    messages = f"{count} message{'s' if count != 1 else ''}"
    return f"Purged {messages} from {queues} known task queue{plural}."


def _import_tasks(app: Caraway, include: str | None) -> None:
    app.loader_import_modules()
    for module in queue_names(include) if include else ():
        importlib.import_module(module)


def _refuse_unsupported(pool_start_method: str | None, executable: str | None) -> None:
    """Celery's flags caraway cannot honour stop the worker, with the reason."""
    if pool_start_method == "spawn":
        raise click.UsageError(
            "--pool-start-method spawn is not supported: caraway's prefork pool forks its "
            "children (each then opens its own broker connection); drop the flag"
        )
    if executable is not None:
        raise click.UsageError(
            "--executable is not supported: caraway's prefork pool forks its children and "
            "never starts a Python executable; drop the flag (run the worker with the "
            "interpreter you want)"
        )


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


def _declare_queues(app: Caraway, chosen: Sequence[Queue], node: str) -> list[Queue]:
    """Declare each consumed queue with its exchange and binding (a Broadcast queue as the
    node's own queue on the fanout exchange); returns the node queues of broadcasts."""
    broadcasts = []
    admin = app.admin()
    try:
        for declared in chosen:
            queue = declared.for_node(node)
            declare_on(admin, queue)
            if queue.is_broadcast:
                broadcasts.append(queue)
    finally:
        admin.close()
    return broadcasts


def _unbind_broadcasts(app: Caraway, queues: Sequence[Queue]) -> None:
    """At shutdown: this node stops taking copies of broadcasts it will not read."""
    if not queues:
        return
    admin = app.admin()
    try:
        for queue in queues:
            exchange = queue.exchange_entity
            assert exchange is not None
            admin.unbind(queue.name, exchange=exchange.name, routing_key=queue.routing_key)
    except Exception as exc:
        logging.getLogger("caraway.worker").warning("could not unbind broadcast queues: %s", exc)
    finally:
        admin.close()


def _pool_name(pool: str) -> str:
    """Celery's pool names: 'processes' is prefork; 'custom' (a class named by
    CELERY_CUSTOM_WORKER_POOL) is refused, caraway's pools are not pluggable."""
    if pool == "processes":
        return "prefork"
    if pool == "custom":
        raise click.BadParameter(
            f"custom pools (CELERY_CUSTOM_WORKER_POOL) are not supported: caraway's pools are "
            f"{', '.join(POOLS)}",
            param_hint="-P/--pool",
        )
    return pool


def _pool_setting(app: Caraway) -> str:
    pool = _pool_name(str(app.conf.worker_pool))
    if pool not in POOLS:
        raise click.BadParameter(
            f"worker_pool = {pool!r}: caraway's pools are {', '.join(POOLS)}",
            param_hint="worker_pool",
        )
    if pool in GREEN_POOLS:
        patch_concurrency(pool)  # late (the app is loaded), but before any connection
    return pool


def _warn_if_no_tasks(app: Caraway) -> None:
    """Say so when the node has no task of the user's: most often ``-A`` was forgotten or
    names a module that does not import the tasks, and every message would fail."""
    if any(not name.startswith("celery.") for name in app.tasks):
        return
    logging.getLogger("caraway.worker").warning(
        "no tasks are registered in app %r: every task sent to this worker will fail with "
        "NotRegistered; name the module that creates your app with -A (caraway -A proj "
        "worker) and list the task modules in include=[...] or import them there",
        app.main or "__main__",
    )


def _configure_logging(app: Caraway, level: str, logfile: str | None, node: str) -> None:
    """Celery's order: setup_logging receivers replace the worker's own set-up; then
    after_setup_logger and after_setup_task_logger are sent either way."""
    conf = app.conf
    arguments = {"loglevel": level, "logfile": logfile, "format": conf.worker_log_format}
    if not signals.setup_logging.send(sender=None, colorize=False, **arguments):
        _setup_logging(
            level,
            logfile,
            node,
            fmt=conf.worker_log_format,
            datefmt=conf.worker_log_datefmt,
            hijack=conf.worker_hijack_root_logger,
            task_fmt=conf.worker_task_log_format,
            task_datefmt=conf.worker_task_log_datefmt,
        )
    signals.after_setup_logger.send(
        sender=None, logger=logging.getLogger(), colorize=False, **arguments
    )
    signals.after_setup_task_logger.send(
        sender=None,
        logger=logging.getLogger(TASK_LOGGER),
        colorize=False,
        **{**arguments, "format": conf.worker_task_log_format},
    )


def _setup_logging(
    level: str,
    logfile: str | None,
    node: str,
    *,
    fmt: str = LOG_FORMAT,
    datefmt: str | None = None,
    hijack: bool = True,
    task_fmt: str = TASK_LOG_FORMAT,
    task_datefmt: str | None = None,
) -> None:
    """The root logger, and the task logger with Celery's ``task_name[task_id]:`` prefix."""
    root = logging.getLogger()
    if not hijack and root.handlers:
        return  # worker_hijack_root_logger=False: the user's logging stays as it is
    task_logger = logging.getLogger(TASK_LOGGER)
    for logger in (root, task_logger):
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
    handler, task_handler = _log_handler(logfile, node), _log_handler(logfile, node)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    task_handler.setFormatter(TaskFormatter(task_fmt, _running_task, task_datefmt or datefmt))
    root.addHandler(handler)
    task_logger.addHandler(task_handler)
    task_logger.propagate = False  # one line per record, in the task format (as Celery)
    root.setLevel(level.upper().replace("FATAL", "CRITICAL"))


def _log_handler(logfile: str | None, node: str) -> logging.Handler:
    if not logfile:
        return logging.StreamHandler(sys.stderr)
    path = expand_path(logfile, node)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        return SafeFileHandler(path)
    except SymlinkRefused as exc:
        raise click.UsageError(f"--logfile: {exc.strerror}") from exc


def _running_task() -> tuple[str, str] | None:
    request = current_request()
    if request is None or request.id is None:
        return None
    return str(request.task), request.id


def _child_logging(level: str, logfile: str | None, node: str, index: int) -> None:
    multiprocessing.current_process().name = f"ForkPoolWorker-{index}"
    if logfile and "%I" in logfile:
        _setup_logging(level, expand_path(logfile, node, index), node)


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
    out = open_nofollow(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
