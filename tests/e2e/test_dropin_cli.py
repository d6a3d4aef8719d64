"""Celery's command line, renamed: worker flags and the helper commands, as subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import Worker, wait_until


def _caraway(proj: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caraway", "-A", "proj", *args],
        check=False,
        cwd=proj,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_purge_fair_and_node_name_templates(project: Path, workers: list[Worker]) -> None:
    import proj.tasks as tasks

    stale = [tasks.add.delay(i, i) for i in range(3)]
    extra = "from proj.caraway import app\n\n@app.task\ndef shout(text):\n    return text.upper()\n"
    (project / "proj" / "extra.py").write_text(extra)
    worker = Worker(
        project, "--purge", "-O", "fair", "-n", "node%i%I@%h", "-P", "solo", "-I", "proj.extra"
    )
    workers.append(worker.wait_ready())
    log = worker.log()
    assert "Purged 3 messages from 1 known task queue." in log
    assert " -------------- node0@" in log
    assert tasks.add.delay(1, 2).get(timeout=10) == 3
    assert all(result.state == "PENDING" for result in stale)
    from proj.caraway import app

    assert app.send_task("proj.extra.shout", ("hi",)).get(timeout=10) == "HI"  # -I imported it

    replies = json.loads(_caraway(project, "inspect", "stats", "-j").stdout)
    (stats,) = replies.values()
    # -O fair keeps the prefetch, as Celery's: a busy process gives back what it holds
    assert stats["prefetch_count"] == 4
    clock = _caraway(project, "inspect", "clock", "-j")
    assert clock.returncode == 0 and "clock" in next(iter(json.loads(clock.stdout).values()))
    report = _caraway(project, "inspect", "report")
    assert report.returncode == 0 and "software -> caraway:" in report.stdout
    refused = _caraway(project, "control", "autoscale", "4", "2")
    assert refused.returncode == 1 and "Autoscale not enabled" in refused.stdout


def test_shell_list_bindings_and_upgrade_settings(project: Path) -> None:
    shell = _caraway(project, "shell", "--python", stdin="print(add.delay, app.main, chord)\n")
    assert shell.returncode == 0, shell.stderr
    assert "proj" in shell.stdout and "chord" in shell.stdout

    listed = _caraway(project, "list", "bindings")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["Queue", "Exchange", "Routing", "Key"]
    assert listed.stdout.splitlines()[2].split() == ["celery", "celery", "celery"]

    config = project / "celeryconfig.py"
    config.write_text("BROKER_URL = 'redis://'\nCELERYD_CONCURRENCY = 4\nunrelated = 1\n")
    upgraded = _caraway(project, "upgrade", "settings", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert config.read_text() == "broker_url = 'redis://'\nworker_concurrency = 4\nunrelated = 1\n"
    assert (project / "celeryconfig.py.orig").exists()
    config.write_text("CELERY_ALWAYS_EAGER = True\n")
    _caraway(project, "upgrade", "settings", str(config), "--django", "--no-backup")
    assert config.read_text() == "CELERY_TASK_ALWAYS_EAGER = True\n"


def test_result_and_call_print_what_celery_prints(project: Path, workers: list[Worker]) -> None:
    workers.append(Worker(project, "-P", "solo").wait_ready())
    called = _caraway(project, "call", "proj.tasks.add", "-a", "[2, 3]")
    task_id = called.stdout.strip()
    assert called.returncode == 0 and len(task_id) == 36
    shown = _caraway(project, "result", task_id, "-t", "10")  # waits, as Celery's does
    assert shown.stdout.strip() == "5"


def test_every_celery_worker_flag_is_known(project: Path) -> None:
    """Each flag of ``celery worker --help`` (Celery 5.7) is one of caraway's: taken, or
    refused with a reason; none is an unknown option."""
    celery = subprocess.run(
        [sys.executable, "-m", "celery", "worker", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    ours = _caraway(project, "worker", "--help").stdout
    options = [
        line.strip().split("  ")[0] for line in celery.splitlines() if line.startswith("  -")
    ]
    flags = {flag for line in options for flag in re.findall(r"--[a-z][a-z-]*", line)}
    flags.discard("--help")
    assert flags and sorted(flag for flag in flags if flag not in ours) == []


def test_heartbeat_interval_sets_how_often_heartbeats_go(
    project: Path, workers: list[Worker]
) -> None:
    from proj.caraway import app

    from caraway.events.receiver import EventReceiver

    beats: list[dict[str, object]] = []
    receiver = EventReceiver(app, handlers={"worker-heartbeat": beats.append})
    try:
        receiver.capture(limit=0, timeout=0.01, wakeup=False)  # subscribed first
        workers.append(Worker(project, "-P", "solo", "--heartbeat-interval", "1").wait_ready())

        def two_beats() -> bool:
            receiver.capture(limit=1, timeout=1, wakeup=False)
            return len(beats) >= 2

        wait_until(two_beats, timeout=15, message="two heartbeats")
    finally:
        receiver.stop()
    assert [beat["freq"] for beat in beats[:2]] == [1.0, 1.0]
    gap = float(str(beats[1]["timestamp"])) - float(str(beats[0]["timestamp"]))
    assert 0.5 < gap < 1.8


def test_every_celery_global_option_and_command_is_known(project: Path) -> None:
    """``celery --help``'s options and commands (Celery 5.7, with flower installed) are
    caraway's: taken, or refused saying why and what to use; never "no such command"."""
    celery = subprocess.run(
        [sys.executable, "-m", "celery", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    ours = _caraway(project, "--help").stdout
    options = [
        line.strip().split("  ")[0] for line in celery.splitlines() if line.startswith("  -")
    ]
    flags = {flag for line in options for flag in re.findall(r"--[a-z][a-z-]*", line)} - {"--help"}
    assert sorted(flag for flag in flags if flag not in ours) == []
    listed_commands = ours.partition("Commands:")[2].split()
    commands = celery.partition("Commands:")[2].split("\n")
    names = [line.split()[0] for line in commands if line.startswith("  ")]
    assert "worker" in names
    assert sorted(name for name in names if name not in listed_commands) == []
    listed = _caraway(project, "control", "--list")
    assert listed.returncode == 0 and "revoke_by_stamped_headers [headers...]" in listed.stdout


USER_OPTIONS = """
import json
from click import Option
from caraway import signals

app.user_options['preload'].add(Option(['-Z', '--template'], default='plain'))
app.user_options['worker'].add(Option(['--enable-audit'], is_flag=True))


@signals.user_preload_options.connect
def on_preload(options, **kwargs):
    with open('preload.json', 'w') as out:
        json.dump(options, out)


@signals.celeryd_init.connect
def on_init(options, **kwargs):
    with open('worker-options.json', 'w') as out:
        json.dump({'enable_audit': options.get('enable_audit')}, out)
"""


def test_user_options_and_quiet_as_celery_has_them(project: Path, workers: list[Worker]) -> None:
    module = project / "proj" / "caraway.py"
    module.write_text(module.read_text() + USER_OPTIONS)
    report = _caraway(project, "report", "--template", "fancy")
    assert report.returncode == 0, report.stderr
    assert json.loads((project / "preload.json").read_text()) == {"template": "fancy"}
    worker = Worker(project, "--enable-audit", "-P", "processes", "-c", "1", name="quiet")
    workers.append(worker.wait_ready())
    assert json.loads((project / "worker-options.json").read_text()) == {"enable_audit": True}
    assert "concurrency: 1 (prefork)" in worker.log()  # -P processes: Celery's prefork alias

    # -q, as Celery's: no arrow, no node count
    loud = _caraway(project, "inspect", "ping")
    quiet = _caraway(project, "-q", "--no-color", "inspect", "ping")
    assert loud.stdout.startswith("->  quiet@") and "1 node online." in loud.stdout
    assert quiet.returncode == 0 and quiet.stdout.startswith(" quiet@")
    assert "online" not in quiet.stdout
