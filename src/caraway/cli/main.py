"""The ``caraway`` command: global options, then one subcommand (worker, multi, ...).

Thin by design: parse, load the app, call into the core. Errors a user can fix are
printed as one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from caraway._version import __version__
from caraway.app import Caraway
from caraway.cli.context import CliState
from caraway.exceptions import CarawayError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="APP", help="proj, proj.module or proj.module:app")
@click.option("-b", "--broker", help="Broker URL (overrides the app's broker_url).")
@click.option("--result-backend", help="Result backend URL (overrides the app's setting).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Directory to import APP from.")
@click.version_option(__version__, prog_name="caraway")
@click.pass_context
def cli(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    result_backend: str | None,
    workdir: str | None,
) -> None:
    """caraway: a distributed task queue, wire-compatible with Celery 5."""
    state = ctx.find_object(CliState)
    if state is None:
        state = CliState()
        ctx.obj = state
    if app_spec:
        state.app_spec = app_spec
    state.broker = broker or state.broker
    state.result_backend = result_backend or state.result_backend
    state.workdir = workdir


def _register() -> None:
    from caraway.cli.control import commands
    from caraway.cli.dashboard import dashboard
    from caraway.cli.deadletters import dead_letters
    from caraway.cli.events import events
    from caraway.cli.worker import worker

    cli.add_command(worker)
    cli.add_command(dead_letters)
    cli.add_command(events)
    cli.add_command(dashboard)
    for command in commands:
        cli.add_command(command)
    try:
        from caraway.cli.multi import multi
    except ImportError:  # pragma: no cover - multi lands in its own change
        return
    cli.add_command(multi)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    run(CliState(), list(argv) if argv is not None else None)


def run_for_app(app: Caraway, argv: list[str] | None) -> None:
    """``app.start()``: the command line with ``app`` already chosen."""
    run(CliState(preset=app), argv)


def run(state: CliState, argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, obj=state, standalone_mode=False, prog_name="caraway")
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CarawayError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
