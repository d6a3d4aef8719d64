"""Celery command-line options and commands caraway cannot honour stop with the reason and
what to use (exit 2), never "no such option" and never a silent no-op (in process: click's
runner, no worker needed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from caraway.cli.context import CliState
from caraway.cli.main import cli


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["amqp"], "rabbitmqadmin"),
        (["graph"], "caraway graph"),
        (["logtool"], "caraway logtool"),
        (["flower"], "caraway dashboard"),
        (["--loader", "x.Loader", "status"], "caraway has no loaders"),
        (["--config", "celeryconfig", "status"], "config_from_object"),
        (["migrate", "amqp://a//", "redis://b"], "not supported"),
        (["worker", "--pool-start-method", "spawn"], "forks its children"),
        (["worker", "--executable", "/usr/bin/python3"], "--executable is not supported"),
        (["worker", "-P", "custom"], "custom pools"),
    ],
)
def test_what_caraway_lacks_is_refused_with_what_to_use(args: list[str], says: str) -> None:
    done = CliRunner().invoke(cli, args, obj=CliState())
    assert done.exit_code == 2, done.output
    assert says in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)  # no traceback
