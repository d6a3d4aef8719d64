"""Issue #8 acceptance on real workers (embedded SQLite): revoke, statedb, Reject/Ignore,
update_state, request context, retries and backoff, autoscale, memory recycling, signals
and bad input. ``EXEC_TASKS`` is appended to the test project's tasks and shared with
the Redis twin; its tasks leave evidence in the file named by CARAWAY_TEST_EVIDENCE.
"""

from __future__ import annotations

import itertools
import sys
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import signals, states
from caraway.exceptions import MaxRetriesExceededError, SerializationError
from tests.helpers import (
    PROJ_APP,
    PROJ_TASKS,
    Worker,
    queue_size,
    wait_until,
    write_project,
)

pytestmark = pytest.mark.slow

EXEC_TASKS = """

from caraway import signals as _signals
from caraway.exceptions import Ignore


def _evidence(line):
    path = os.environ.get('CARAWAY_TEST_EVIDENCE')
    if path:
        with open(path, 'a') as handle:
            handle.write(f'{line}\\n')


def _bump(marker):
    count = int(open(marker).read()) + 1 if os.path.exists(marker) else 1
    with open(marker, 'w') as handle:
        handle.write(str(count))
    return count


def _receiver(name):
    def receive(sender=None, **named):
        _evidence(f'signal {name} {os.getpid()}')
    return receive


for _name in ('task_prerun', 'task_postrun', 'task_success', 'task_failure', 'task_retry',
              'worker_process_init', 'worker_ready', 'worker_shutdown'):
    getattr(_signals, _name).connect(_receiver(_name), weak=False)


@app.task(bind=True, track_started=True)
def sleeper(self, seconds):
    _evidence(f'ran {self.request.id}')
    time.sleep(seconds)
    _evidence(f'finished {self.request.id}')
    return seconds


@app.task
def rejecting(marker, requeue):
    runs = _bump(marker)
    if runs == 1:
        raise Reject('not now', requeue=requeue)
    return runs


@app.task
def ignoring(marker):
    _bump(marker)
    raise Ignore()


@app.task(bind=True)
def progress(self, gate):
    for step in (1, 2):
        self.update_state(state='PROGRESS', meta={'step': step})
        deadline = time.monotonic() + 20
        while not os.path.exists(f'{gate}{step}') and time.monotonic() < deadline:
            time.sleep(0.02)
    return 'done'


@app.task(bind=True)
def context(self, *args, **kwargs):
    request = self.request
    return {
        'id': request.id, 'args': list(request.args), 'kwargs': request.kwargs,
        'retries': request.retries, 'hostname': request.hostname,
        'routing_key': request.delivery_info.get('routing_key'),
        'parent_id': request.parent_id, 'root_id': request.root_id, 'group': request.group,
        'eta': request.eta.isoformat() if request.eta else None,
        'expires': request.expires.isoformat() if request.expires else None,
        'is_eager': request.is_eager,
    }


@app.task(bind=True)
def spawn_context(self):
    return context.apply_async((1,), {'k': 2}, countdown=0.2, expires=600).id


@app.task(bind=True, autoretry_for=(KeyError,), retry_backoff=0.2, retry_backoff_max=0.5,
          retry_jitter=False, max_retries=4)
def backing_off(self, path):
    with open(path, 'a') as handle:
        handle.write(f'{time.time()}\\n')
    raise KeyError('always')


@app.task(bind=True, max_retries=1)
def exhausts(self, with_exc):
    if with_exc:
        raise self.retry(exc=LookupError('the original'), countdown=0.1)
    raise self.retry(countdown=0.1)


@app.task(bind=True, max_retries=3, track_started=True)
def flaky_slow(self, marker, failures):
    time.sleep(0.3)
    count = _bump(marker) - 1
    if count < failures:
        raise self.retry(exc=KeyError('again'), countdown=0.4)
    return count


@app.task(bind=True)
def bad_retry(self):
    raise self.retry(countdown='soon')


@app.task(autoretry_for=(KeyError,), retry_kwargs={'countdown': -1})
def bad_autoretry():
    raise KeyError('retry me')


@app.task
def unserialisable():
    return object()


_HOARD = []


@app.task
def hoard(megabytes):
    _HOARD.append(b'x' * (megabytes * 1024 * 1024))
    return os.getpid()


@app.task
def whoami():
    return os.getpid()
"""


def project_tasks() -> Any:
    import proj.tasks  # type: ignore[import-not-found]  # written by the fixture

    return proj.tasks


def forget_receivers() -> None:
    """The test process imported proj.tasks too: drop its receivers from the registries."""
    for name in signals.__all__:
        registry = getattr(signals, name)
        if isinstance(registry, signals.Signal):
            for _, stored in list(registry.receivers):
                receiver = stored() if isinstance(stored, weakref.ref) else stored
                if getattr(receiver, "__module__", "") == "proj.tasks":
                    registry.disconnect(receiver)


def _forget_proj() -> None:
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_project(tmp_path, PROJ_APP, PROJ_TASKS + EXEC_TASKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget_proj()
    try:
        yield tmp_path
    finally:
        forget_receivers()
        _forget_proj()


def start_worker(project: Path, workers: list[Worker], *args: str, name: str = "w1") -> Worker:
    env = {"CARAWAY_TEST_EVIDENCE": str(project / "evidence")}
    worker = Worker(project, *args, env=env, name=name)
    workers.append(worker)
    return worker.wait_ready()


def wait_for_state(result: Any, state: str, workers: list[Worker], timeout: float) -> None:
    """Wait for ``result`` to reach ``state``; on timeout, show what the workers logged."""
    try:
        wait_until(lambda: result.state == state, timeout=timeout, message=state)
    except AssertionError as exc:
        logs = "\n".join(f"--- {worker.name}\n{worker.log()[-3000:]}" for worker in workers)
        raise AssertionError(f"{exc}; still {result.state}\n{logs}") from None


def evidence(project: Path) -> list[str]:
    path = project / "evidence"
    return path.read_text().splitlines() if path.exists() else []


def states_seen(result: Any, until: str, timeout: float = 20.0) -> list[str]:
    """Poll ``result.state`` quickly until ``until``; the distinct states in order."""
    seen: list[str] = []

    def done() -> bool:
        state = str(result.state)
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == until

    wait_until(done, timeout=timeout, interval=0.005, message=f"{until}; saw {seen}")
    return seen


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(state in remaining for state in wanted)


# -- revocation ------------------------------------------------------------------------------
def test_revoked_countdown_task_is_not_run_and_is_stored_revoked(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    result = project_tasks().sleeper.apply_async((0,), countdown=1.5)
    result.revoke()
    wait_for_state(result, states.REVOKED, workers, timeout=15)
    assert f"ran {result.id}" not in evidence(project)
    assert project_tasks().add.delay(1, 2).get(timeout=10) == 3


@pytest.mark.parametrize(
    "signal_name",
    [
        None,
        "SIGKILL",
    ],
)
def test_terminate_stops_the_running_task_and_the_worker_keeps_serving(
    project: Path, workers: list[Worker], signal_name: str | None
) -> None:
    start_worker(project, workers, "-c", "1")
    result = project_tasks().sleeper.delay(8)
    wait_until(lambda: result.state == states.STARTED, timeout=10, message="STARTED")
    result.revoke(terminate=True, signal=signal_name)
    wait_for_state(result, states.REVOKED, workers, timeout=5)
    assert project_tasks().add.delay(2, 2).get(timeout=15) == 4
    assert f"finished {result.id}" not in evidence(project)


def test_revoked_ids_survive_a_worker_restart_with_statedb(
    project: Path, workers: list[Worker]
) -> None:
    statedb = str(project / "worker.state")
    first = start_worker(project, workers, "-c", "1", f"--statedb={statedb}")
    result = project_tasks().sleeper.apply_async((0,), countdown=4)
    result.revoke()
    inspect = project_tasks().app.control.inspect(timeout=1.0)
    wait_until(
        lambda: any(result.id in ids for ids in (inspect.revoked() or {}).values()),
        timeout=10,
        message="the node to record the revoke",
    )
    first.stop()
    assert result.id in (project / "worker.state").read_text()
    start_worker(project, workers, "-c", "1", f"--statedb={statedb}", name="w2")
    wait_for_state(result, states.REVOKED, workers, timeout=15)
    assert f"ran {result.id}" not in evidence(project)


# -- Reject, Ignore, update_state, request context -------------------------------------------
def test_reject_with_requeue_runs_the_task_again(project: Path, workers: list[Worker]) -> None:
    start_worker(project, workers, "-c", "1")
    assert project_tasks().rejecting.delay(str(project / "requeued"), True).get(timeout=15) == 2


def test_reject_without_requeue_dead_letters_the_message_and_runs_it_once(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    marker = project / "dropped"
    result = project_tasks().rejecting.delay(str(marker), False)

    def dead_letters() -> list[str]:
        admin = project_tasks().app.admin()
        try:
            return [letter.reason for letter in admin.dead_letters()]
        finally:
            admin.close()

    reasons = wait_until(dead_letters, timeout=10, message="a dead letter")
    assert "not now" in reasons[0]
    assert project_tasks().add.delay(1, 1).get(timeout=10) == 2
    assert marker.read_text() == "1"
    assert result.state == states.PENDING


def test_ignore_acks_without_storing_a_result_or_running_again(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    marker = project / "ignored"
    result = project_tasks().ignoring.delay(str(marker))
    wait_until(marker.exists, timeout=10, message="the task to run")
    assert project_tasks().add.delay(1, 1).get(timeout=10) == 2
    assert result.state == states.PENDING
    assert queue_size(project_tasks().app, "celery") == 0
    assert marker.read_text() == "1"


def test_update_state_progress_is_visible_while_the_task_runs(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    gate = project / "gate"
    result = project_tasks().progress.delay(str(gate))
    wait_until(lambda: result.state == "PROGRESS", timeout=10, message="PROGRESS")
    assert result.info == {"step": 1}
    (project / "gate1").touch()
    wait_until(lambda: result.info == {"step": 2}, timeout=10, message="step 2")
    assert result.state == "PROGRESS"
    (project / "gate2").touch()
    assert result.get(timeout=10) == "done"


def test_request_context_inside_a_bound_task_has_every_field(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "2")
    app = project_tasks().app
    outer = project_tasks().spawn_context.delay()
    inner = app.AsyncResult(outer.get(timeout=10))
    seen = inner.get(timeout=10)
    assert seen["id"] == inner.id
    assert (seen["args"], seen["kwargs"], seen["retries"]) == ([1], {"k": 2}, 0)
    assert seen["hostname"].startswith("w1@")
    assert seen["routing_key"] == "celery"
    assert seen["parent_id"] == outer.id and seen["root_id"] == outer.id
    assert seen["eta"] is not None and seen["expires"] is not None
    assert seen["is_eager"] is False
    from caraway import group

    grouped = group(project_tasks().context.s(index) for index in range(2))()
    members = grouped.get(timeout=10)
    assert {member["group"] for member in members} == {grouped.id}


# -- retries ---------------------------------------------------------------------------------
def test_retry_state_sequence_of_the_seed_is_observed(project: Path, workers: list[Worker]) -> None:
    start_worker(project, workers, "-c", "1")
    task = project_tasks().flaky_slow
    task_id = str(uuid.uuid4())
    before = str(task.AsyncResult(task_id).state)  # a fast worker may start it before a poll
    result = task.apply_async((str(project / "flaky"), 2), task_id=task_id)
    seen = [before, *states_seen(result, states.SUCCESS)]
    wanted = ["PENDING", "STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    assert is_subsequence(wanted, seen), seen
    assert result.get(timeout=1) == 2


def test_autoretry_backoff_grows_exponentially_up_to_its_cap_then_fails_with_the_original(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    stamps = project / "stamps"
    result = project_tasks().backing_off.delay(str(stamps))
    with pytest.raises(KeyError, match="always"):
        result.get(timeout=20)
    times = [float(line) for line in stamps.read_text().split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 5  # the first run and max_retries=4 retries
    for gap, delay in zip(gaps, [0.2, 0.4, 0.5, 0.5], strict=True):
        assert gap >= delay - 0.05, gaps
    # uncapped, the last delay would be 0.2 * 2**3 = 1.6 s
    assert gaps[-1] < 1.3, gaps


def test_max_retries_exceeded_raises_the_original_exception_when_one_was_given(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    with pytest.raises(LookupError, match="the original"):
        project_tasks().exhausts.delay(True).get(timeout=15)
    failed = project_tasks().exhausts.delay(False)
    with pytest.raises(MaxRetriesExceededError, match="max_retries=1"):
        failed.get(timeout=15)
    assert failed.state == states.FAILURE


# -- pools -----------------------------------------------------------------------------------
def test_autoscale_grows_under_load_and_shrinks_when_idle(
    project: Path, workers: list[Worker]
) -> None:
    worker = start_worker(project, workers, "--autoscale=3,1", "--prefetch-multiplier=1")
    assert len(worker.children()) == 1
    results = [project_tasks().sleeper.delay(1.5) for _ in range(6)]
    wait_until(lambda: len(worker.children()) == 3, timeout=15, message="3 children")
    assert [result.get(timeout=30) for result in results] == [1.5] * 6
    wait_until(lambda: len(worker.children()) == 1, timeout=30, message="back to 1 child")


def test_max_memory_per_child_recycles_the_child_without_losing_tasks(
    project: Path, workers: list[Worker]
) -> None:
    worker = start_worker(project, workers, "-c", "1", "--max-memory-per-child=150000")
    first = project_tasks().hoard.delay(200)
    after = [project_tasks().whoami.delay() for _ in range(5)]
    hoarder = first.get(timeout=20)
    pids = [result.get(timeout=20) for result in after]
    assert hoarder not in pids
    assert "KiB per child; replacing it" in worker.log()


# -- signals ---------------------------------------------------------------------------------
def test_task_and_worker_signal_receivers_fire(project: Path, workers: list[Worker]) -> None:
    worker = start_worker(project, workers, "-c", "1")
    assert project_tasks().add.delay(1, 1).get(timeout=10) == 2
    with pytest.raises(ValueError):
        project_tasks().boom.delay().get(timeout=10)
    assert project_tasks().flaky.delay(str(project / "flaky"), 1).get(timeout=10) == 1
    worker.stop()
    fired = {line.split()[1] for line in evidence(project) if line.startswith("signal ")}
    assert fired == {
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_retry",
        "worker_process_init",
        "worker_ready",
        "worker_shutdown",
    }
    child_pids = {
        line.split()[2] for line in evidence(project) if line.startswith("signal task_prerun")
    }
    assert str(worker.process.pid) not in child_pids  # tasks ran in a forked child


# -- bad input on a real worker --------------------------------------------------------------
def test_unserialisable_return_value_fails_the_task_and_the_worker_carries_on(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    result = project_tasks().unserialisable.delay()
    with pytest.raises(SerializationError, match="cannot be stored as its result"):
        result.get(timeout=10)
    assert result.state == states.FAILURE
    assert project_tasks().add.delay(2, 3).get(timeout=10) == 5


def test_a_task_whose_retry_call_raises_fails_with_an_error_naming_the_value(
    project: Path, workers: list[Worker]
) -> None:
    start_worker(project, workers, "-c", "1")
    with pytest.raises(TypeError, match="'soon'"):
        project_tasks().bad_retry.delay().get(timeout=10)
    with pytest.raises(ValueError, match="-1"):
        project_tasks().bad_autoretry.delay().get(timeout=10)
    assert project_tasks().add.delay(2, 3).get(timeout=10) == 5
