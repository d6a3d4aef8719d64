"""What the global options said, shared by every subcommand.

It holds the app only as the options name it (or as ``app.start()`` hands it over), typed
as the core sees apps: this module sits below the app, which imports the command line for
``app.start()``. Subcommands get the app itself from :func:`caraway.cli.loader.app_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from caraway.taskbase import AppLike


@dataclass
class CliState:
    """What the global options said; :func:`caraway.cli.loader.app_of` loads the app once."""

    app_spec: str | None = None
    broker: str | None = None
    result_backend: str | None = None
    workdir: str | None = None
    #: ``-q``: replies printed without Celery's ``->`` and node count
    quiet: bool = False
    #: the app chosen before the options were read (``app.start()``, tests)
    preset: AppLike | None = None
    #: the app once loaded, with the options' broker and backend applied
    loaded: AppLike | None = None


def state_of(ctx: click.Context) -> CliState:
    state: Any = ctx.find_object(CliState)
    assert isinstance(state, CliState)
    return state
