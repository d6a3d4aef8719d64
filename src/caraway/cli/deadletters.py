"""``caraway dead-letters list|requeue|purge``: messages the workers set aside."""

from __future__ import annotations

from datetime import datetime

import click

from caraway.cli.loader import app_of
from caraway.protocol.message import peek_id


@click.group("dead-letters")
def dead_letters() -> None:
    """Messages set aside: undecodable, unaccepted content, or over the delivery cap."""


@dead_letters.command("list")
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def list_dead(ctx: click.Context, limit: int) -> None:
    """Show dead letters with their reason."""
    admin = app_of(ctx).admin()
    try:
        letters = admin.dead_letters(limit=limit)
    finally:
        admin.close()
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        when = datetime.fromtimestamp(letter.failed_at).isoformat(timespec="seconds")
        task = letter.message.headers.get("task", "?")
        click.echo(
            f"{letter.id}\t{when}\t{letter.queue}\t{task}[{peek_id(letter.message)}]\t"
            f"{letter.reason}"
        )


@dead_letters.command("requeue")
@click.argument("ids", nargs=-1)
@click.pass_context
def requeue_dead(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Put dead letters back on their queues (all of them when no ID is given)."""
    admin = app_of(ctx).admin()
    try:
        count = admin.requeue_dead_letters(list(ids) or None)
    finally:
        admin.close()
    click.echo(f"requeued {count} message(s)")


@dead_letters.command("purge")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge_dead(ctx: click.Context, force: bool) -> None:
    """Delete every dead letter."""
    if not force:
        click.confirm("Delete every dead letter for good?", abort=True)
    admin = app_of(ctx).admin()
    try:
        count = admin.purge_dead_letters()
    finally:
        admin.close()
    click.echo(f"deleted {count} dead letter(s)")
