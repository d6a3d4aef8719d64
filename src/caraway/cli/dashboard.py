"""``caraway dashboard``: serve the web monitor for the app's broker.

Thin: parse, build the dashboard (caraway.dashboard.server), serve. Binds 127.0.0.1
unless told otherwise, and refuses to bind beyond loopback without credentials unless
``--insecure`` says the user means it.
"""

from __future__ import annotations

import click

from caraway.cli.loader import app_of
from caraway.clients.urls import mask_url
from caraway.dashboard.auth import Auth
from caraway.dashboard.guard import HostAllowlist, is_loopback
from caraway.dashboard.server import DEFAULT_ADDRESS, DEFAULT_PORT, create_dashboard, serve


@click.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to serve.")
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, help="Address to bind.")
@click.option("--basic-auth", metavar="USER:PASS", help="Require HTTP basic auth.")
@click.option("--auth-token", metavar="TOKEN", help="Require this bearer token.")
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Tasks kept in memory.",
)
@click.option(
    "-Q", "--queues", default="", help="Extra queues to show lengths for (comma-separated)."
)
@click.option(
    "--allowed-hosts",
    default="",
    metavar="NAMES",
    help="Host header names served besides loopback and the bound address "
    "(comma-separated; '*' for any, behind a proxy that checks it).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve beyond loopback without --auth-token or --basic-auth.",
)
@click.pass_context
def dashboard(
    ctx: click.Context,
    port: int,
    address: str,
    basic_auth: str | None,
    auth_token: str | None,
    max_tasks: int,
    queues: str,
    allowed_hosts: str,
    insecure: bool,
) -> None:
    """Serve the web monitor: workers, live tasks, queues, JSON API, /metrics."""
    try:
        auth = Auth.parse(basic_auth, auth_token)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not is_loopback(address) and not auth.enabled:
        if not insecure:
            raise click.UsageError(
                f"refusing to serve {address} without credentials: anyone who reaches it "
                "could revoke tasks and shut workers down. Pass --auth-token (or "
                "--basic-auth), or --insecure if a proxy in front authenticates."
            )
        click.echo(f"warning: serving {address} without --basic-auth or --auth-token", err=True)
    hosts = HostAllowlist.build(address, allowed_hosts.split(","))
    app = app_of(ctx)
    extra = [name.strip() for name in queues.split(",") if name.strip()]
    web = create_dashboard(app, auth=auth, max_tasks=max_tasks, queues=extra, hosts=hosts)
    if web.monitor is not None and web.monitor.source is None:
        click.echo(
            "warning: caraway.events has no receiver yet; showing remote control only", err=True
        )
    click.echo(f"caraway dashboard on http://{address}:{port} (broker {mask_url(app.broker_url)})")
    serve(web, address=address, port=port)
