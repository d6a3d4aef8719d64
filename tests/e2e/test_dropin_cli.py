"""Celery's command line, renamed: worker flags and the helper commands, as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import Worker


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
    assert stats["prefetch_count"] == 1  # -O fair: one task held per process
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
