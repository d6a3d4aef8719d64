"""Two workers and two producers on one SQLite file: every task runs exactly once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.helpers import Worker, wait_until

PRODUCER = """
import sys
from proj.tasks import record
path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for value in range(start, start + count):
    record.delay(path, value)
"""


def test_two_workers_and_two_producers_run_2000_tasks_exactly_once(
    project: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(project, "-c", "2", name="a").wait_ready())
    workers.append(Worker(project, "-P", "threads", "-c", "2", name="b").wait_ready())
    out = project / "ran.txt"
    (project / "producer.py").write_text(PRODUCER)
    producers = [
        subprocess.Popen([sys.executable, "producer.py", str(out), str(start), "1000"], cwd=project)
        for start in (0, 1000)
    ]
    try:
        for producer in producers:
            assert producer.wait(timeout=120) == 0
    finally:
        for producer in producers:
            producer.kill()

    def lines() -> list[str]:
        return out.read_text().split() if out.exists() else []

    wait_until(lambda: len(lines()) >= 2000, timeout=120, interval=0.2, message="2000 tasks to run")
    counts = Counter(int(value) for value in lines())
    assert sorted(counts) == list(range(2000))
    assert max(counts.values()) == 1
