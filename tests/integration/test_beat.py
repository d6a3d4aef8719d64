"""The beat service in this process, on the in-memory and SQLite brokers: election, the
claim-then-send fence under interleaved ticks, what a sent run looks like, runtime
entries, and Celery's configuration-time API (add_periodic_task, on_after_configure)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, signals
from caraway.beat import Beat, BeatLazyFunc, EmbeddedBeat, PeriodicTasks, beat_status
from caraway.brokers.memory import beat as memory_beat
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol.message import TaskMessage, decode
from caraway.schedules import InvalidSchedule, crontab, schedule
from tests.helpers import wait_until

UTC = timezone.utc
JSON = frozenset({"application/json"})


@pytest.fixture
def app() -> Iterator[Caraway]:
    url = f"memory://beat-{uuid.uuid4().hex[:8]}"
    app = Caraway("beatproj", broker=url, set_as_current=False)

    @app.task(name="beatproj.tick")
    def tick(*args: Any, **kwargs: Any) -> None:
        return None

    yield app
    memory_beat.reset(url)


def sent(app: Caraway, queue: str = "celery") -> list[TaskMessage]:
    transport = app.connection()
    try:
        batch = transport.fetch([queue], limit=1000, timeout=0.05, owner="test/1")
        transport.ack_many(batch)
        return [decode(delivery.message, accept=JSON) for delivery in batch]
    finally:
        transport.close()


def beat_for(app: Caraway, node: str, **options: Any) -> Beat:
    beat = Beat(app, node=node, lease_seconds=options.pop("lease_seconds", 5), **options)
    beat.open()
    return beat


T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_only_the_leader_sends_and_each_scheduled_second_once(app: Caraway) -> None:
    app.conf.beat_schedule = {"tick": {"task": "beatproj.tick", "schedule": 1.0}}
    beats = [beat_for(app, f"b{i}@h") for i in range(3)]
    try:
        for second in range(6):
            for beat in beats:
                beat.tick(T0 + timedelta(seconds=second, milliseconds=10))
        assert [beat.leading for beat in beats] == [True, False, False]
        messages = sent(app)
        scheduled = [message.extra_headers["periodic_task_scheduled"] for message in messages]
        assert scheduled == [
            (T0 + timedelta(seconds=second, milliseconds=10)).isoformat() for second in range(1, 6)
        ]
    finally:
        for beat in beats:
            beat.close()


def test_a_stale_leader_cannot_send_what_the_new_leader_sent(app: Caraway) -> None:
    app.conf.beat_schedule = {"tick": {"task": "beatproj.tick", "schedule": 1.0}}
    old, new = beat_for(app, "old@h", lease_seconds=0.2), beat_for(app, "new@h", lease_seconds=5)
    try:
        old.tick(T0)
        assert old.leading
        wait_until(lambda: new.tick(T0) is not None and new.leading, timeout=3)
        new.tick(T0 + timedelta(seconds=1))  # the new leader sends the run at T0 + 1 s
        old.tick(T0 + timedelta(seconds=1))  # the old one wakes up late and tries too
        messages = sent(app)
        assert len(messages) == 1
        assert messages[0].extra_headers["periodic_task_scheduled"] == (
            (T0 + timedelta(seconds=1)).isoformat()
        )
        assert not old.leading
    finally:
        old.close()
        new.close()


def test_a_sent_run_is_an_ordinary_call_with_celerys_beat_header(app: Caraway) -> None:
    app.conf.task_routes = {"beatproj.tick": {"queue": "routed"}}
    app.conf.beat_schedule = {
        "routed": {"task": "beatproj.tick", "schedule": 1.0, "args": (1,), "kwargs": {"k": 2}},
        "unknown": {
            "task": "other.app.task",
            "schedule": 1.0,
            "options": {"queue": "elsewhere", "priority": 3, "headers": {"mine": "x"}},
        },
        "lazy": {
            "task": "beatproj.tick",
            "schedule": 1.0,
            "options": {"queue": "lazy"},
            "kwargs": {"n": BeatLazyFunc(lambda: 42)},
        },
    }
    beat = beat_for(app, "b@h")
    try:
        beat.tick(T0)
        beat.tick(T0 + timedelta(seconds=1))
    finally:
        beat.close()
    [routed] = sent(app, "routed")
    assert (routed.task, routed.args, routed.kwargs) == ("beatproj.tick", [1], {"k": 2})
    assert routed.extra_headers["celery_beat_task"] is True
    assert routed.extra_headers["periodic_task_name"] == "routed"
    [other] = sent(app, "elsewhere")
    assert other.task == "other.app.task" and other.priority == 3
    assert other.extra_headers["mine"] == "x"
    [lazy] = sent(app, "lazy")
    assert lazy.kwargs == {"n": 42}


def test_runs_missed_while_no_beat_ran_follow_the_entry_policy(app: Caraway) -> None:
    app.conf.beat_schedule = {
        "one": {"task": "beatproj.tick", "schedule": 10, "options": {"queue": "one"}},
        "none": {
            "task": "beatproj.tick",
            "schedule": 10,
            "missed": "none",
            "options": {"queue": "none"},
        },
        "all": {
            "task": "beatproj.tick",
            "schedule": 10,
            "missed": "all",
            "options": {"queue": "all"},
        },
    }
    first = beat_for(app, "b1@h")
    first.tick(T0)  # the entries' clocks start
    first.close()
    later = beat_for(app, "b2@h")  # an hour later, after an outage
    try:
        later.tick(T0 + timedelta(minutes=1, seconds=7))
    finally:
        later.close()
    assert len(sent(app, "one")) == 1
    assert len(sent(app, "none")) == 0
    assert len(sent(app, "all")) == 6


def test_beat_sent_events_name_the_entry_and_the_run(app: Caraway) -> None:
    app.conf.beat_schedule = {"tick": {"task": "beatproj.tick", "schedule": 1.0}}
    events: list[tuple[str, dict[str, Any]]] = []
    beat = beat_for(app, "b@h")

    class Recorder:
        def send(self, kind: str, **fields: Any) -> None:
            events.append((kind, fields))

        def close(self) -> None:
            pass

    beat._events = Recorder()  # type: ignore[assignment]
    try:
        beat.tick(T0)
        beat.tick(T0 + timedelta(seconds=1))
    finally:
        beat.close()
    [(kind, fields)] = events
    [message] = sent(app)
    assert kind == "beat-sent"
    assert fields["entry"] == "tick" and fields["uuid"] == message.id
    assert fields["scheduled"] == (T0 + timedelta(seconds=1)).timestamp()
    assert fields["leader"] == "b@h"


def test_runtime_entries_run_and_code_keeps_its_names(app: Caraway) -> None:
    app.conf.beat_schedule = {"coded": {"task": "beatproj.tick", "schedule": 60.0}}
    with PeriodicTasks(app) as tasks:
        tasks.add("nightly", "beatproj.tick", crontab(minute=0, hour=3), args=(7,))
        with pytest.raises(InvalidSchedule, match="'coded' is defined in the code"):
            tasks.add("coded", "beatproj.tick", 5)
        with pytest.raises(InvalidSchedule, match="crontab hour=24"):
            tasks.add("bad", "beatproj.tick", crontab(hour=24))
        with pytest.raises(InvalidSchedule, match="unknown option"):
            tasks.add("bad", "beatproj.tick", 5, options={"queueu": "x"})
    beat = beat_for(app, "b@h")
    try:
        beat.tick(T0)
        beat.tick(T0 + timedelta(hours=15, seconds=1))
        status = beat_status(app)
        by_name = {entry.name: entry for entry in status.entries}
        assert by_name["nightly"].source == "runtime" and by_name["nightly"].total_run_count == 1
        assert by_name["nightly"].next_run == T0 + timedelta(days=1, hours=15)
        assert by_name["coded"].source == "code" and status.leader is not None
        with PeriodicTasks(app) as tasks:
            assert tasks.remove("nightly") is True
            assert tasks.remove("nightly") is False
        beat.tick(T0 + timedelta(days=2))
        assert [entry.name for entry in beat_status(app).entries] == ["coded"]
    finally:
        beat.close()
    assert [message.args for message in sent(app)] == [[7], [], []]  # nightly once, coded twice


def test_beat_signals_are_sent_as_celerys(app: Caraway) -> None:
    seen: list[str] = []

    def on_init(sender: Any, **kwargs: Any) -> None:
        seen.append("init" if not sender.embedded else "init-embedded")

    def on_embedded(sender: Any, **kwargs: Any) -> None:
        seen.append("embedded")

    signals.beat_init.connect(on_init)
    signals.beat_embedded_init.connect(on_embedded)
    try:
        embedded = EmbeddedBeat(app, node="w@h")
        embedded.start()
        wait_until(lambda: "embedded" in seen, timeout=5)
        embedded.stop()
        assert seen == ["init-embedded", "embedded"]
    finally:
        signals.beat_init.disconnect(on_init)
        signals.beat_embedded_init.disconnect(on_embedded)


# -- configuration time --------------------------------------------------------------------


def test_add_periodic_task_from_on_after_configure_joins_beat_schedule() -> None:
    app = Caraway("periodic", broker="memory://periodic-conf", set_as_current=False)

    @app.task(name="periodic.add")
    def add(x: int, y: int) -> int:
        return x + y

    calls: list[str] = []

    @app.on_after_configure.connect
    def setup(sender: Caraway, **kwargs: Any) -> None:
        calls.append("configure")
        sender.add_periodic_task(10.0, add.s(2, 2), name="add every 10")
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), add.s(5, 5))

    @app.on_after_finalize.connect
    def finalized(sender: Caraway, **kwargs: Any) -> None:
        calls.append("finalize")

    early = app.add_periodic_task(schedule(30), "periodic.add", args=(1, 1), name="early")
    app.config_from_object({"beat_schedule": {"kept": {"task": "periodic.add", "schedule": 5}}})
    assert early not in app.conf.beat_schedule  # pending until the app is configured
    assert app.tasks["periodic.add"] is add
    assert calls == ["configure", "finalize"]
    names = set(app.conf.beat_schedule)
    assert names == {"kept", "early", "add every 10", "periodic.add(5, 5)"}
    assert app.conf.beat_schedule["add every 10"]["args"] == (2, 2)
    app.finalize()
    assert calls == ["configure", "finalize"]  # once


def test_a_bad_entry_fails_when_it_is_configured_naming_entry_field_and_value() -> None:
    app = Caraway("badconf", broker="memory://badconf", set_as_current=False)
    with pytest.raises(ValueError, match="crontab minute=60: 60 is out of range 0-59"):
        crontab(minute=60)
    with pytest.raises(ImproperlyConfigured, match="'beat_schedule': beat_schedule entry 'x': sch"):
        app.conf.beat_schedule = {"x": {"task": "t", "schedule": "10"}}
    with pytest.raises(InvalidSchedule, match="crontab hour='25'"):
        app.add_periodic_task(crontab(hour="25"), "t")

    @app.on_after_configure.connect
    def setup(sender: Caraway, **kwargs: Any) -> None:
        sender.add_periodic_task(-1, "t", name="negative")

    with pytest.raises(ImproperlyConfigured, match="run_every=-1"):
        app.finalize()


def test_beat_refuses_a_custom_scheduler_and_bad_options_before_it_starts(app: Caraway) -> None:
    app.conf.beat_scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    with pytest.raises(ImproperlyConfigured, match="does not load scheduler classes"):
        Beat(app).check()
    app.conf.beat_scheduler = "celery.beat:PersistentScheduler"
    app.conf.beat_schedule = {"x": {"task": "t", "schedule": 5, "options": {"countdown": "soon"}}}
    with pytest.raises(InvalidSchedule, match="entry 'x': 'options'"):
        Beat(app).check()
    app.conf.beat_schedule = {}
    app.conf.timezone = "Nowhere/Special"
    with pytest.raises(InvalidSchedule, match="'Nowhere/Special' is not a known time zone"):
        Beat(app).check()


def test_the_app_clock_reads_the_configured_zone() -> None:
    app = Caraway("clock", broker="memory://clock", set_as_current=False, timezone="Asia/Tokyo")
    assert str(app.timezone) == "Asia/Tokyo"
    assert app.now().utcoffset() == timedelta(hours=9)


def test_sqlite_beats_in_threads_share_one_leader(tmp_path: Path) -> None:
    app = Caraway("sq", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    app.conf.beat_schedule = {"tick": {"task": "sq.tick", "schedule": 0.2}}
    beats = [Beat(app, node=f"b{i}@h", lease_seconds=1) for i in range(3)]
    threads = []
    for beat in beats:
        beat.open()
        threads.append(threading.Thread(target=beat.run, daemon=True))
        threads[-1].start()
    try:
        wait_until(lambda: sum(beat.leading for beat in beats) == 1, timeout=5)
        wait_until(lambda: len(beat_status(app).entries[0].last_task_id or "") > 0, timeout=5)
    finally:
        for beat in beats:
            beat.stop()
        for thread in threads:
            thread.join(10)
    messages = sent(app)
    scheduled = [message.extra_headers["periodic_task_scheduled"] for message in messages]
    assert len(scheduled) == len(set(scheduled)) >= 1


def test_a_run_that_cannot_be_encoded_costs_only_its_own_entry(
    app: Caraway, caplog: pytest.LogCaptureFixture
) -> None:
    app.conf.beat_schedule = {
        "good": {"task": "beatproj.tick", "schedule": 1.0, "args": (1,)},
        "bad": {"task": "beatproj.tick", "schedule": 1.0, "args": (BeatLazyFunc(object),)},
    }
    beat = beat_for(app, "b@h")
    try:
        beat.tick(T0)
        beat.tick(T0 + timedelta(seconds=1))
    finally:
        beat.close()
    assert [message.args for message in sent(app)] == [[1]]
    assert "bad: the run scheduled at" in caplog.text and "it is lost" in caplog.text


def test_app_signals_come_in_celerys_order_and_on_after_fork_in_a_child() -> None:
    app = Caraway("forks", broker="memory://forks", set_as_current=False)
    order: list[str] = []

    def record(signal: Any, **kwargs: Any) -> None:  # signals hold receivers weakly, as Celery
        order.append(signal.name.partition(".on_")[2])

    for signal in (app.on_configure, app.on_after_configure, app.on_after_finalize):
        signal.connect(record)
    app.finalize()
    assert order == ["configure", "after_configure", "after_finalize"]
    read, write = os.pipe()

    def forked(sender: Caraway, **kwargs: Any) -> None:
        os.write(write, b"forked" if sender is app else b"other")

    app.on_after_fork.connect(forked)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(child, 0)
    os.close(write)
    assert os.read(read, 16) == b"forked"
    os.close(read)
