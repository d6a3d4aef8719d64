"""``caraway beat`` and its subcommands as a user runs them, on the embedded SQLite broker:
add, list and remove runtime entries, ``inspect beat``, remote control, and a bad schedule
stopping ``beat`` and ``worker -B`` before they start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PROJ_TASKS, Worker, wait_until, write_project

APP = """
import os
from caraway import Caraway

app = Caraway('proj', include=['proj.tasks'])
app.conf.update(
    beat_lease_seconds=1.0,
    beat_schedule={'tick': {'task': 'proj.tasks.add', 'schedule': 3600, 'args': (1, 2)}},
)
if os.environ.get('BAD_SCHEDULE'):
    app.conf.beat_schedule['bad'] = {'task': 'proj.tasks.add', 'schedule': 1, 'missed': 'twice'}
"""


def caraway(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caraway", "-A", "proj", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path, APP, PROJ_TASKS)


@pytest.fixture
def beat_process(project: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(project / "beat.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "caraway", "-A", "proj", "beat", "-l", "info",
         "--enable-remote-control", "--pidfile", str(project / "beat.pid")],
        cwd=project, env={**os.environ, "PYTHONPATH": str(project)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until((project / "beat.pid").exists, timeout=20, message="beat to start")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        log.close()


def test_runtime_entries_are_added_listed_and_removed(project: Path) -> None:
    added = caraway(
        project, "beat", "add", "nightly", "proj.tasks.add",
        "--crontab", "30 2 * * mon-fri", "--args", "[2, 3]", "--missed", "none",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "added nightly: proj.tasks.add <crontab: 30 2 * * mon-fri" in added.stdout
    listed = caraway(project, "beat", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {entry["name"]: entry for entry in json.loads(listed.stdout)["entries"]}
    assert entries["nightly"]["source"] == "runtime" and entries["nightly"]["args"] == [2, 3]
    assert entries["nightly"]["missed"] == "none"
    assert entries["tick"]["source"] == "code"
    table = caraway(project, "beat", "list")
    assert "leader: none" in table.stdout and "nightly" in table.stdout
    refused = caraway(project, "beat", "remove", "tick")
    assert refused.returncode != 0 and "'tick' is defined in the code" in refused.stderr
    assert caraway(project, "beat", "remove", "nightly").returncode == 0
    again = caraway(project, "beat", "remove", "nightly")
    assert again.returncode == 1 and "no runtime entry named 'nightly'" in again.stderr


def test_bad_input_to_beat_add_is_refused_with_the_field_named(project: Path) -> None:
    bad_field = caraway(project, "beat", "add", "x", "proj.tasks.add", "--crontab", "* 25 * * *")
    assert bad_field.returncode == 2 and "crontab hour='25': 25 is out of range 0-23" in (
        bad_field.stderr
    )
    both = caraway(project, "beat", "add", "x", "proj.tasks.add", "--every", "5", "--crontab", "*")
    assert both.returncode == 2 and "exactly one of" in both.stderr
    bad_json = caraway(project, "beat", "add", "x", "proj.tasks.add", "--every", "5", "--args", "[")
    assert bad_json.returncode == 2 and "is not JSON" in bad_json.stderr


def test_inspect_beat_shows_the_leader_and_pings_reach_beat(
    project: Path, beat_process: subprocess.Popen[bytes]
) -> None:
    def leader() -> bool:
        result = caraway(project, "inspect", "beat", "--json")
        return result.returncode == 0 and json.loads(result.stdout)["leader"] is not None

    wait_until(leader, timeout=20, message="beat to lead")
    shown = caraway(project, "inspect", "beat")
    assert shown.stdout.startswith("->  celerybeat@") and ": OK" in shown.stdout
    assert "tick" in shown.stdout
    pinged = caraway(project, "inspect", "ping", "--json")
    assert pinged.returncode == 0, pinged.stderr
    assert any(node.startswith("celerybeat@") for node in json.loads(pinged.stdout))


def test_inspect_beat_exits_69_when_no_beat_leads(project: Path) -> None:
    result = caraway(project, "inspect", "beat")
    assert result.returncode == 69 and "NO LEADER" in result.stdout


@pytest.mark.parametrize("command", [["beat"], ["worker", "-B", "-P", "solo"]])
def test_a_bad_schedule_stops_beat_and_worker_b_before_they_start(
    project: Path, command: list[str]
) -> None:
    result = caraway(project, *command, env={"BAD_SCHEDULE": "1"})
    assert result.returncode == 2
    assert "beat_schedule entry 'bad': 'missed' must be one of one, none, all" in result.stderr
    assert "'twice'" in result.stderr


def test_worker_b_leads_and_gives_the_lead_up_when_it_stops(project: Path) -> None:
    worker = Worker(project, "-B", "-c", "1", name="wb")
    try:
        worker.wait_ready()

        def led_by_worker() -> bool:
            result = caraway(project, "inspect", "beat", "--json")
            found = json.loads(result.stdout)["leader"] if result.returncode == 0 else None
            return bool(found and found["node"].startswith("wb@"))

        wait_until(led_by_worker, timeout=20, message="the worker's beat to lead")
    finally:
        worker.stop()
    assert "gave up the lead" in worker.log()
    assert caraway(project, "inspect", "beat").returncode == 69
