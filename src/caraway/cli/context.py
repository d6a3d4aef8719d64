"""What the global options said, shared by every subcommand (kept apart from main.py so
subcommand modules can import it without a cycle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from caraway.app import Caraway
from caraway.cli.loader import load_app


@dataclass
class CliState:
    """What the global options said; subcommands ask it for the app."""

    app_spec: str | None = None
    broker: str | None = None
    result_backend: str | None = None
    workdir: str | None = None
    preset: Caraway | None = None
    _app: Caraway | None = None

    def app(self) -> Caraway:
        if self._app is None:
            if self.preset is not None:
                app = self.preset
            elif self.app_spec:
                app = load_app(self.app_spec, workdir=self.workdir)
            else:
                app = Caraway("default")
            if self.broker:
                app.conf.broker_url = self.broker
            if self.result_backend:
                app.conf.result_backend = self.result_backend
            self._app = app
        return self._app


def state_of(ctx: click.Context) -> CliState:
    state: Any = ctx.find_object(CliState)
    assert isinstance(state, CliState)
    return state
