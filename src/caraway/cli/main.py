"""The ``caraway`` command: global options, then one subcommand (worker, multi, ...).

Thin by design: parse, load the app, call into the core. Errors a user can fix are
printed as one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from caraway import signals
from caraway._version import __version__
from caraway.cli.context import CliState
from caraway.exceptions import CarawayError
from caraway.taskbase import AppLike
from caraway.worker.pools import maybe_patch_concurrency

#: subcommand -> "module:attribute" of its click command. A subcommand's module (and what it
#: imports: the dashboard's server, the events monitor, ``multi``...) is imported only when
#: that subcommand runs or help lists it, so a worker process does not hold them all.
_COMMANDS: dict[str, str] = {
    "worker": "caraway.cli.worker:worker",
    "beat": "caraway.cli.beat:beat",
    "dead-letters": "caraway.cli.deadletters:dead_letters",
    "events": "caraway.cli.events:events",
    "dashboard": "caraway.cli.dashboard:dashboard",
    "inspect": "caraway.cli.control:inspect",
    "control": "caraway.cli.control:control",
    "status": "caraway.cli.control:status",
    "purge": "caraway.cli.control:purge",
    "call": "caraway.cli.control:call",
    "result": "caraway.cli.control:result",
    "report": "caraway.cli.control:report",
    "multi": "caraway.cli.multi:multi",
    "migrate": "caraway.cli.migrate:migrate",
    "shell": "caraway.cli.tools:shell",
    "list": "caraway.cli.tools:list_",
    "upgrade": "caraway.cli.tools:upgrade",
}
#: lists of commands registered whole, for a name not in ``_COMMANDS`` and for help
_COMMAND_LISTS = ("caraway.cli.control:commands", "caraway.cli.refused:commands")


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (see ``_COMMANDS``)."""

    def _register_lists(self) -> None:
        for target in _COMMAND_LISTS:
            for command in _load(target):
                if command.name:
                    self.commands.setdefault(command.name, command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register_lists()
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in _COMMANDS:
            loaded = _load(_COMMANDS[cmd_name])
            if not isinstance(loaded, click.Command):  # pragma: no cover - a wrong table entry
                raise TypeError(f"{_COMMANDS[cmd_name]} is not a click command")
            command = self.commands.setdefault(cmd_name, loaded)
        elif command is None:
            self._register_lists()
            command = self.commands.get(cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="APP", help="proj, proj.module or proj.module:app")
@click.option("-b", "--broker", help="Broker URL (overrides the app's broker_url).")
@click.option("--result-backend", help="Result backend URL (overrides the app's setting).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Directory to import APP from.")
@click.option("--loader", help="Refused: caraway has no loaders (Celery's default only).")
@click.option("--config", help="Refused: call app.config_from_object(MODULE) in the app.")
@click.option("-C", "--no-color", is_flag=True, help="caraway's output is never coloured.")
@click.option("-q", "--quiet", is_flag=True, help="Replies without arrows or node counts.")
@click.option("--skip-checks", is_flag=True, help="caraway never runs Django's checks.")
@click.version_option(__version__, prog_name="caraway")
@click.pass_context
def cli(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    result_backend: str | None,
    workdir: str | None,
    loader: str | None,
    config: str | None,
    no_color: bool,
    quiet: bool,
    skip_checks: bool,
) -> None:
    """caraway: a distributed task queue, wire-compatible with Celery 5."""
    _refuse_loader_and_config(loader, config)
    state = ctx.find_object(CliState)
    if state is None:
        state = CliState()
        ctx.obj = state
    if app_spec:
        state.app_spec = app_spec
    state.broker = broker or state.broker
    state.result_backend = result_backend or state.result_backend
    state.workdir = workdir
    state.quiet = quiet or state.quiet
    _add_user_options(ctx, state)


#: the commands Celery gives the app's own ``user_options[name]`` (besides 'preload')
_USER_OPTION_COMMANDS = ("worker", "beat", "events")


def _add_user_options(ctx: click.Context, state: CliState) -> None:
    """Celery's ``app.user_options``: the app's extra click options join the command about
    to run (``preload`` ones every command, sent to ``user_preload_options``). The app is
    loaded here for that, as Celery loads it; if it cannot be, the command says why."""
    name = ctx.invoked_subcommand
    if name is None or not (state.app_spec or state.preset):
        return
    try:
        app = _app_of(ctx)
    except Exception:
        return
    options = getattr(app, "user_options", None) or {}
    preload = list(options.get("preload", ()))
    extra = [*options.get(name, ()), *preload] if name in _USER_OPTION_COMMANDS else preload
    command = cli.get_command(ctx, name)
    if command is None or not extra:
        return
    for option in extra:
        if option not in command.params:
            command.params.append(option)
    if command.callback is not None and not hasattr(command.callback, "_user_options"):
        command.callback = _taking_user_options(command.callback)


def _app_of(ctx: click.Context) -> Any:
    # by name, as the commands are: the loader imports the app, whose start() imports this
    return _load("caraway.cli.loader:app_of")(ctx)


def _taking_user_options(callback: Any) -> Any:
    """The command's callback, called without the user options' values (they stay in
    ``ctx.params``, where ``celeryd_init`` receivers read them); the preload ones are sent
    to ``user_preload_options`` first, as Celery does."""

    @functools.wraps(callback)
    def call(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        app = _app_of(ctx)
        options = getattr(app, "user_options", None) or {}
        names = {option.name for group in options.values() for option in group}
        preload = {option.name for option in options.get("preload", ())}
        taken = {key: kwargs.pop(key) for key in list(kwargs) if key in names}
        given = {key: value for key, value in taken.items() if key in preload}
        if given:
            signals.user_preload_options.send(sender=callback, app=app, options=given)
        return callback(*args, **kwargs)

    call._user_options = True  # type: ignore[attr-defined]
    return call


def _refuse_loader_and_config(loader: str | None, config: str | None) -> None:
    """Celery's ``--loader`` and ``--config`` pick a loader class and the module its
    default loader reads; caraway has neither, so they stop the command with the way."""
    if loader:
        raise click.UsageError(
            f"--loader {loader} is not supported: caraway has no loaders (it behaves as "
            "Celery's default one); configure the app in code instead"
        )
    if config:
        raise click.UsageError(
            f"--config {config} is not supported: call app.config_from_object({config!r}) "
            "where the app is created (or app.config_from_envvar)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        # -P gevent/eventlet: patch before the app is loaded or any connection opened
        maybe_patch_concurrency(sys.argv[1:] if argv is None else argv)
    except CarawayError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    run(CliState(), list(argv) if argv is not None else None)


def run_for_app(app: AppLike, argv: list[str] | None) -> None:
    """``app.start()``: the command line with ``app`` already chosen."""
    run(CliState(preset=app), argv)


def run(state: CliState, argv: list[str] | None) -> None:
    try:
        # without standalone mode, click returns ctx.exit(code)'s code instead of exiting
        code = cli.main(args=argv, obj=state, standalone_mode=False, prog_name="caraway")
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CarawayError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)
