"""Schedules as Celery code calls them (parser, is_due, remaining_estimate, equality),
beat entries checked at configuration time, and ``plan``: which runs an entry sends."""

from __future__ import annotations

import pickle
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from caraway.schedules import (
    InvalidSchedule,
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
    solar,
)
from caraway.schedules.entries import (
    CATCH_UP_BATCH,
    Entry,
    check_beat_schedule,
    entry_from_config,
    entry_from_spec,
    entry_spec,
    periodic_task_entry,
    plan,
)

UTC = timezone.utc


def _app(zone: str | None = None, enable_utc: bool = True) -> SimpleNamespace:
    return SimpleNamespace(conf=SimpleNamespace(timezone=zone, enable_utc=enable_utc))


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# -- crontab fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "max_", "min_", "expected"),
    [
        ("*/15", 60, 0, {0, 15, 30, 45}),
        ("1,13,30-45/5,50-52", 60, 0, {1, 13, 30, 35, 40, 45, 50, 51, 52}),
        ("*/4", 24, 0, {0, 4, 8, 12, 16, 20}),
        ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
        ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
        ("50-5", 60, 0, {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 0, 1, 2, 3, 4, 5}),
        ("5/20", 60, 0, {5, 25, 45}),
    ],
)
def test_crontab_parser_expands_fields_as_celery_does(
    spec: str, max_: int, min_: int, expected: set[int]
) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


def test_day_and_month_names_are_read_in_their_fields() -> None:
    assert crontab(day_of_week="mon-fri").day_of_week == {1, 2, 3, 4, 5}
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}
    assert crontab(day_of_week="sunday,saturday").day_of_week == {0, 6}
    assert crontab(month_of_year="jan,jun-aug").month_of_year == {1, 6, 7, 8}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hour": 25}, "crontab hour=25: 25 is out of range 0-23"),
        ({"minute": "61"}, "crontab minute='61': 61 is out of range 0-59"),
        ({"minute": "*/0"}, "crontab minute='*/0'"),
        ({"day_of_week": 7}, "crontab day_of_week=7: 7 is out of range 0-6"),
        ({"day_of_week": "funday"}, "crontab day_of_week='funday': 'funday' is not a number"),
        ({"day_of_month": 0}, "crontab day_of_month=0: 0 is out of range 1-31"),
        ({"month_of_year": "13"}, "crontab month_of_year='13'"),
        ({"minute": "1,,2"}, "empty part"),
        ({"hour": [1, 99]}, "crontab hour=[1, 99]: 99 is out of range 0-23"),
        ({"day_of_month": 30, "month_of_year": 2}, "day_of_month=30 never occurs"),
    ],
)
def test_a_bad_crontab_field_names_the_field_and_the_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("[", r"\[")):
        crontab(**kwargs)  # type: ignore[arg-type]


def test_parse_errors_are_celerys_parse_exception_and_a_value_error() -> None:
    with pytest.raises(ParseException):
        crontab_parser(60).parse("1-")
    assert issubclass(ParseException, ValueError)


def test_from_string_reads_cron_order() -> None:
    cron = crontab.from_string("*/15 9-17 1 jan mon-fri")
    assert cron == crontab("*/15", "9-17", "mon-fri", "1", "jan")
    with pytest.raises(InvalidSchedule, match="expected 5 fields"):
        crontab.from_string("* * *")


def test_schedules_compare_pickle_and_show_as_celerys() -> None:
    cron = crontab(minute="*/5", hour=3)
    assert repr(cron) == "<crontab: */5 3 * * * (m/h/dM/MY/d)>"
    assert pickle.loads(pickle.dumps(cron)) == cron
    assert hash(cron) == hash(crontab(minute=list(range(0, 60, 5)), hour=[3]))
    every = schedule(timedelta(seconds=30))
    assert every == schedule(30) and every == timedelta(seconds=30)
    assert repr(every) == "<freq: 30.00 seconds>"
    assert pickle.loads(pickle.dumps(every)) == every
    sun = solar("sunrise", 48.85, 2.35)
    assert pickle.loads(pickle.dumps(sun)) == sun


# -- is_due / remaining_estimate, as Celery code calls them ----------------------------------


def test_interval_is_due_returns_celerys_schedstate() -> None:
    now = at(2024, 5, 1, 12, 0, 0)
    every = schedule(timedelta(seconds=10), nowfun=lambda: now, app=_app())
    assert every.is_due(now - timedelta(seconds=3)) == schedstate(False, 7.0)
    assert every.is_due(now - timedelta(seconds=10)) == (True, 10.0)
    assert every.remaining_estimate(now - timedelta(seconds=25)) == timedelta(seconds=-15)


def test_crontab_is_due_and_remaining_estimate_follow_the_next_run() -> None:
    now = at(2024, 5, 1, 12, 7, 30)
    cron = crontab(minute="*/5", nowfun=lambda: now, app=_app())
    assert cron.remaining_estimate(at(2024, 5, 1, 12, 5)) == timedelta(seconds=150)
    assert cron.is_due(at(2024, 5, 1, 12, 5)) == (False, 150.0)
    due, following = cron.is_due(at(2024, 5, 1, 11, 59))
    assert due and following == 150.0


def test_naive_datetimes_are_utc_and_the_app_zone_reads_the_fields() -> None:
    now = datetime(2024, 7, 1, 8, 0)  # naive: UTC, 10:00 in Paris
    cron = crontab(minute=0, hour=11, nowfun=lambda: now, app=_app("Europe/Paris"))
    assert cron.remaining_estimate(now) == timedelta(hours=1)
    assert cron.next_after(now) == at(2024, 7, 1, 9, 0)


def test_an_unknown_time_zone_is_named_in_the_error() -> None:
    cron = crontab(app=_app("Mars/Olympus_Mons"))
    with pytest.raises(InvalidSchedule, match="'Mars/Olympus_Mons' is not a known time zone"):
        cron.next_after(at(2024, 1, 1))


def test_relative_interval_rounds_down_to_its_resolution() -> None:
    hourly = schedule(timedelta(hours=1), relative=True, app=_app())
    assert hourly.next_after(at(2024, 1, 1, 10, 17, 42)) == at(2024, 1, 1, 11, 0)
    assert hourly.next_after(at(2024, 1, 1, 11, 0)) == at(2024, 1, 1, 12, 0)
    daily = schedule(timedelta(days=1), relative=True, app=_app("America/New_York"))
    # the day before spring forward: the next local midnight, 23 hours of elapsed time away
    assert daily.next_after(at(2024, 3, 10, 5, 0)) == at(2024, 3, 11, 4, 0)


def test_intervals_count_elapsed_time_across_daylight_saving() -> None:
    every = schedule(timedelta(hours=1), app=_app("America/New_York"))
    assert every.next_after(at(2024, 3, 10, 6, 30)) == at(2024, 3, 10, 7, 30)


@pytest.mark.parametrize("value", [0, -5, timedelta(0), "10", None, True])
def test_an_interval_must_be_a_positive_number_or_timedelta(value: object) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(f"run_every={value!r}")):
        schedule(value)  # type: ignore[arg-type]


# -- solar --------------------------------------------------------------------------------


def test_solar_events_come_in_order_through_a_day() -> None:
    start = at(2024, 6, 21, 0, 0)
    names = ["dawn_astronomical", "dawn_nautical", "dawn_civil", "sunrise", "solar_noon"]
    names += ["sunset", "dusk_civil", "dusk_nautical"]
    times = [solar(name, 45.0, 7.0, app=_app()).next_after(start) for name in names]
    assert times == sorted(times)  # type: ignore[type-var]
    sunrise = solar("sunrise", 45.0, 7.0, app=_app()).next_after(start)
    assert sunrise is not None and at(2024, 6, 21, 3, 30) < sunrise < at(2024, 6, 21, 4, 0)


def test_solar_skips_days_without_the_event() -> None:
    # Tromso, polar night: no sunrise from late November until mid-January
    sunrise = solar("sunrise", 69.65, 18.96, app=_app()).next_after(at(2024, 12, 1))
    assert sunrise is not None and sunrise > at(2025, 1, 10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("moonrise", 0, 0), "solar event='moonrise' is not an event"),
        (("sunrise", 91, 0), "solar lat=91: must be between -90 and 90"),
        (("sunrise", 0, -181), "solar lon=-181: must be between -180 and 180"),
    ],
)
def test_a_bad_solar_schedule_names_the_field(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solar(*args)  # type: ignore[arg-type]


# -- beat entries ----------------------------------------------------------------------------


def test_a_beat_schedule_entry_is_read_as_celery_writes_it() -> None:
    entry = entry_from_config(
        "add-every-30",
        {"task": "proj.tasks.add", "schedule": 30.0, "args": (16, 16), "options": {"queue": "q"}},
    )
    assert entry.task == "proj.tasks.add" and entry.args == (16, 16)
    assert entry.schedule == schedule(30) and entry.missed == "one"
    assert dict(entry.options) == {"queue": "q"} and entry.source == "code"
    relative = entry_from_config("r", {"task": "t", "schedule": 3600, "relative": True})
    assert isinstance(relative.schedule, schedule) and relative.schedule.relative


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"schedule": 10}, "entry 'e': 'task' must be a task name, got None"),
        ({"task": "t"}, "entry 'e': 'schedule' is missing"),
        ({"task": "t", "schedule": "10"}, "entry 'e': schedule='10': use a number of seconds"),
        ({"task": "t", "schedule": -1}, "entry 'e': run_every=-1: an interval must be longer"),
        ({"task": "t", "schedule": 1, "args": "ab"}, "entry 'e': 'args' must be a list"),
        ({"task": "t", "schedule": 1, "kwargs": [1]}, "entry 'e': 'kwargs' must be a dict"),
        ({"task": "t", "schedule": 1, "missed": "some"}, "'missed' must be one of one, none, all"),
        ({"task": "t", "schedule": 1, "every": 3}, r"entry 'e': unknown key\(s\) \['every'\]"),
    ],
)
def test_a_bad_entry_names_the_entry_the_field_and_the_value(
    item: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        entry_from_config("e", item)


def test_the_whole_beat_schedule_is_checked_entry_by_entry() -> None:
    good = {"a": {"task": "t", "schedule": crontab(minute=0)}}
    assert check_beat_schedule(good) == good
    with pytest.raises(InvalidSchedule, match="entry 'b'"):
        check_beat_schedule({**good, "b": {"task": "t", "schedule": None}})


def test_maybe_schedule_accepts_what_celery_accepts() -> None:
    assert maybe_schedule(10) == schedule(10)
    assert maybe_schedule(timedelta(minutes=1)) == schedule(60)
    cron = crontab()
    assert maybe_schedule(cron) is cron


def test_add_periodic_task_entries_take_signature_arguments_first() -> None:
    class FakeSignature(dict):  # the canvas Signature is a dict with clone()
        def clone(self, args: tuple[object, ...], kwargs: dict[str, object]) -> FakeSignature:
            return FakeSignature(
                task=self["task"],
                args=(*args, *self["args"]),
                kwargs={**self["kwargs"], **kwargs},
                options=dict(self["options"]),
            )

        def __repr__(self) -> str:
            return f"{self['task']}{tuple(self['args'])}"

    sig = FakeSignature(task="proj.add", args=(2,), kwargs={}, options={"queue": "q"})
    key, item = periodic_task_entry(10.0, sig, (1,), {"z": 3}, options={"priority": 5})
    assert key == "proj.add(1, 2)"
    assert item["args"] == (1, 2) and item["kwargs"] == {"z": 3}
    assert item["options"] == {"queue": "q", "priority": 5}
    named, _ = periodic_task_entry(crontab(), "proj.ping", name="ping")
    assert named == "ping"
    with pytest.raises(InvalidSchedule, match="crontab hour=24"):
        periodic_task_entry(crontab(hour=24), "proj.ping")


def test_runtime_entries_round_trip_through_their_json_spec() -> None:
    for when in (
        crontab("*/5", "9-17", "mon-fri"),
        crontab(minute=[0, 30], hour={1, 2}),
        schedule(45),
        schedule(3600, relative=True),
        solar("sunset", 52.5, 13.4),
    ):
        entry = Entry("e", "t", when, (1, "a"), {"k": [1]}, {"queue": "q"}, "all", "runtime")
        back = entry_from_spec("e", entry_spec(entry))
        assert back.same_call(entry) and back.source == "runtime"


def test_runtime_entries_refuse_what_json_cannot_hold() -> None:
    entry = Entry("e", "t", schedule(1), (object(),))
    with pytest.raises(InvalidSchedule, match="runtime entry 'e': args, kwargs and options"):
        entry_spec(entry)


# -- plan: which runs are due --------------------------------------------------------------


def test_a_new_entry_starts_its_clock_now_and_sends_nothing() -> None:
    now = at(2024, 1, 1, 12)
    assert plan(schedule(10), None, now) is not None
    first = plan(schedule(10), None, now)
    assert first is not None and first.runs == () and first.mark == now


def test_an_on_time_run_is_sent_at_its_scheduled_instant() -> None:
    last = at(2024, 1, 1, 12, 0, 0)
    assert plan(schedule(10), last, at(2024, 1, 1, 12, 0, 9)) is None
    due = plan(schedule(10), last, at(2024, 1, 1, 12, 0, 10, 5000))
    assert due is not None and due.runs == (at(2024, 1, 1, 12, 0, 10),) and due.skipped == 0


def test_missed_runs_follow_the_entry_policy() -> None:
    last, now = at(2024, 1, 1, 12), at(2024, 1, 1, 12, 1, 7)  # six 10 s runs missed
    one = plan(schedule(10), last, now)
    assert one is not None and one.runs == (at(2024, 1, 1, 12, 1),) and one.skipped == 5
    none = plan(schedule(10), last, now, missed="none")
    assert none is not None and none.runs == () and none.mark == at(2024, 1, 1, 12, 1)
    on_time = plan(schedule(10), last, at(2024, 1, 1, 12, 1, 2), missed="none")
    assert on_time is not None and on_time.runs == (at(2024, 1, 1, 12, 1),)
    every = plan(schedule(10), last, now, missed="all")
    assert every is not None and len(every.runs) == 6 and every.mark == at(2024, 1, 1, 12, 1)


def test_missed_all_catches_up_in_batches_in_order() -> None:
    last = at(2024, 1, 1)
    now = last + timedelta(seconds=CATCH_UP_BATCH * 2 + 30)
    first = plan(schedule(1), last, now, missed="all")
    assert first is not None and len(first.runs) == CATCH_UP_BATCH
    assert first.runs[0] == last + timedelta(seconds=1)
    second = plan(schedule(1), first.mark, now, missed="all")
    assert second is not None and second.runs[0] == first.mark + timedelta(seconds=1)


def test_a_starting_deadline_drops_a_stale_catch_up() -> None:
    cron = crontab(minute=0, hour=4, app=_app())
    late = plan(cron, at(2024, 1, 1, 4), at(2024, 1, 2, 9), deadline=3600)
    assert late is not None and late.runs == () and late.mark == at(2024, 1, 2, 4)
    fresh = plan(cron, at(2024, 1, 1, 4), at(2024, 1, 2, 4, 30), deadline=3600)
    assert fresh is not None and fresh.runs == (at(2024, 1, 2, 4),)


def test_a_long_outage_of_a_crontab_catches_up_once_without_walking_every_minute() -> None:
    cron = crontab(app=_app("Europe/Paris"))
    caught = plan(cron, at(2023, 1, 1), at(2024, 1, 1, 0, 0, 30))
    assert caught is not None and caught.runs == (at(2024, 1, 1),)
