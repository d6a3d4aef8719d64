"""Celery's subcommands caraway does not have: each one is known, and refuses with the
reason and what to use instead (never "no such command", never a silent no-op)."""

from __future__ import annotations

import click

#: Celery's command -> why caraway has none, and what to use
_REASONS = {
    "amqp": (
        "Celery's AMQP administration shell is not part of caraway: use the broker's own "
        "tools (rabbitmqadmin, rabbitmqctl, redis-cli), 'caraway purge' and "
        "'caraway dead-letters'"
    ),
    "graph": (
        "'caraway graph' (Celery's bootsteps and worker graphs in dot format) is not "
        "supported: caraway has no bootsteps; 'caraway inspect stats' and the dashboard "
        "show the nodes"
    ),
    "logtool": (
        "'caraway logtool' is not supported: caraway's worker log lines are Celery's "
        "format (task_name[task_id]:), so grep them, or use 'caraway events' and the "
        "dashboard's task history"
    ),
    "flower": (
        "Flower runs as its own command against caraway workers ('celery -A proj flower' "
        "with Celery installed); caraway's own monitor is 'caraway dashboard'"
    ),
}


def _refusing(name: str, reason: str) -> click.Command:
    def refuse() -> None:
        raise click.UsageError(reason)

    return click.Command(
        name,
        callback=refuse,
        help=f"Not supported: {reason}.",
        short_help="Not supported (Celery's); says what to use.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


commands = [_refusing(name, reason) for name, reason in _REASONS.items()]
