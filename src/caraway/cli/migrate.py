"""``caraway migrate``: create or upgrade the tables of the app's broker and result store.

Only stores with a schema take part (the PostgreSQL broker, the SQL result store); the
others are named as having nothing to migrate. ``--sql`` prints the statements of a fresh
schema instead, for a DBA to review or run by hand.
"""

from __future__ import annotations

from typing import Any

import click

from caraway.brokers.contracts import Migrations
from caraway.cli.loader import app_of
from caraway.clients.urls import mask_url


@click.command("migrate")
@click.option("--sql", "print_sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--broker/--no-broker", default=True, help="The broker's tables (default: yes).")
@click.option("--results/--no-results", default=True, help="The result store's (default: yes).")
@click.argument("celery_brokers", nargs=-1, metavar="")
@click.pass_context
def migrate(
    ctx: click.Context,
    print_sql: bool,
    broker: bool,
    results: bool,
    celery_brokers: tuple[str, ...],
) -> None:
    """Create or upgrade the SQL tables of the broker and the result store.

    (Celery's ``migrate SOURCE DEST``, moving tasks between brokers, is not supported.)
    """
    if celery_brokers:
        raise click.UsageError(
            "caraway migrate manages SQL tables; Celery's 'migrate SOURCE DEST' (moving "
            "waiting tasks from one broker to another) is not supported: drain the old "
            "broker with a worker pointed at it, or re-send the tasks"
        )
    app = app_of(ctx)
    stores: list[tuple[str, str, Any]] = []
    if broker:
        stores.append(("broker", app.broker_url, app.admin()))
    backend_url = app.result_backend_url
    if results and backend_url:
        # opened without migrating, so what this command does is what it reports
        app.conf.database_create_tables_at_setup = False
        stores.append(("results", backend_url, app.new_backend()))
    for role, url, store in stores:
        try:
            _one(role, mask_url(url), store, print_sql=print_sql)
        finally:
            store.close()


def _one(role: str, url: str, store: Any, *, print_sql: bool) -> None:
    if not isinstance(store, Migrations):
        click.echo(f"-- {role}: {url} keeps no tables; nothing to migrate")
        return
    if print_sql:
        click.echo(f"-- {role}: {url}")
        for statement in store.migration_sql():
            click.echo(f"{statement};\n")
        return
    done = store.migrate()
    click.echo(f"{role}: {url}: " + ("; ".join(done) if done else "up to date"))
