"""Crontab next-run times against brute force: every minute enumerated, each one judged by
the documented rules, compared with what ``crontab.next_after`` computes.

The oracle shares nothing with the schedule's search but the expanded field sets: it walks
UTC minutes, reads each on the zone's clock, and fires on a matching wall time (both passes
of a repeated hour only for an hour field of ``*``/``*/n``), or at the first minute after a
skipped stretch that held a matching wall time (only for other hour fields).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caraway.schedules import crontab

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
#: zones with one-hour shifts both ways, a half-hour shift (Lord Howe), southern-hemisphere
#: rules (Auckland, Santiago, whose clocks change at midnight) and a day-long-gap-free zone
ZONES = (
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "America/Santiago",
    "Europe/Berlin",
)


def _app(zone: str) -> SimpleNamespace:
    return SimpleNamespace(conf=SimpleNamespace(timezone=zone, enable_utc=True))


def _matches(cron: crontab, wall: datetime) -> bool:
    return wall.minute in cron.minute and wall.hour in cron.hour and cron.day_matches(wall.date())


def brute_force(cron: crontab, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every instant in ``[start, end)`` (minute-aligned) at which ``cron`` fires."""
    fires = []
    moment = start
    previous_wall = (moment - MINUTE).astimezone(zone).replace(tzinfo=None)
    while moment < end:
        local = moment.astimezone(zone)
        wall = local.replace(tzinfo=None)
        fire = _matches(cron, wall) and (local.fold == 0 or cron.follows_clock)
        if wall - previous_wall > MINUTE and not cron.follows_clock:
            skipped = previous_wall + MINUTE
            while skipped < wall and not fire:
                fire = _matches(cron, skipped)
                skipped += MINUTE
        if fire:
            fires.append(moment)
        previous_wall = wall
        moment += MINUTE
    return fires


def computed(cron: crontab, start: datetime, end: datetime) -> list[datetime]:
    fires = []
    moment = cron.next_after(start - timedelta(microseconds=1))
    while moment is not None and moment < end:
        fires.append(moment)
        moment = cron.next_after(moment)
    return fires


def transitions(zone: ZoneInfo, first_year: int, last_year: int) -> list[datetime]:
    """The UTC hours at which ``zone``'s offset changes, found by an hourly scan."""
    found = []
    moment = datetime(first_year, 1, 1, tzinfo=UTC)
    end = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment < end:
        moment += timedelta(hours=1)
        current = moment.astimezone(zone).utcoffset()
        if current != offset:
            found.append(moment)
            offset = current
    return found


CRONTABS = (
    ("30", "2"),  # a fixed time inside most spring gaps
    ("30", "1"),  # a fixed time inside most autumn repeats
    ("*/15", "*"),  # follows the clock
    ("0,20,40", "0-3"),  # fixed hours spanning every transition's hour, and midnight
    ("*/10", "*/2"),  # '*/n' hours follow the clock
)


@pytest.mark.parametrize("zone_name", ZONES)
def test_next_runs_match_brute_force_around_every_transition_of_four_years(
    zone_name: str,
) -> None:
    zone = ZoneInfo(zone_name)
    changes = transitions(zone, 2022, 2025)
    assert len(changes) >= 8, changes  # each zone here changes its clocks twice a year
    for minute, hour in CRONTABS:
        cron = crontab(minute=minute, hour=hour, app=_app(zone_name))
        for change in changes:
            start = (change - timedelta(days=1)).replace(minute=0)
            end = change + timedelta(days=1)
            assert computed(cron, start, end) == brute_force(cron, zone, start, end), (
                zone_name,
                minute,
                hour,
                change,
            )


_fields = st.sampled_from(
    [
        ("*", "*", "*", "*", "*"),
        ("*/5", "*", "*", "*", "*"),
        ("0", "*/3", "*", "*", "*"),
        ("15,45", "1-3", "*", "*", "*"),
        ("30", "2", "*", "*", "*"),
        ("0", "0", "*", "*", "*"),
        ("*/20", "0-2,22-23", "mon-fri", "*", "*"),
        ("5", "1,2,3", "sun", "*", "*"),
        ("59", "23", "*", "1-7", "*"),
        ("0", "2", "*", "*", "3,4,9,10,11"),
    ]
)


@settings(max_examples=120, deadline=None)
@given(
    fields=_fields,
    zone_name=st.sampled_from(ZONES),
    day=st.integers(min_value=0, max_value=365 * 8),
    hours=st.integers(min_value=0, max_value=23),
)
def test_next_runs_match_brute_force_for_random_schedules_and_starts(
    fields: tuple[str, str, str, str, str], zone_name: str, day: int, hours: int
) -> None:
    minute, hour, day_of_week, day_of_month, month = fields
    cron = crontab(minute, hour, day_of_week, day_of_month, month, app=_app(zone_name))
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=day, hours=hours)
    end = start + timedelta(days=3)
    assert computed(cron, start, end) == brute_force(cron, ZoneInfo(zone_name), start, end)


@pytest.mark.slow
@pytest.mark.parametrize("zone_name", ["America/New_York", "Australia/Lord_Howe"])
def test_a_whole_year_of_minutes_matches_brute_force(zone_name: str) -> None:
    cron = crontab(minute="*/7", hour="0-3", app=_app(zone_name))
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    assert computed(cron, start, end) == brute_force(cron, ZoneInfo(zone_name), start, end)


# -- the documented table (docs/periodic-tasks.md) -----------------------------------------


def _runs_on(cron: crontab, zone: str, day: datetime) -> list[str]:
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=ZoneInfo(zone))
    runs = computed(cron, start, end.astimezone(UTC))
    return [run.astimezone(ZoneInfo(zone)).strftime("%H:%M%z") for run in runs]


def test_a_daily_run_in_the_spring_gap_runs_once_at_the_end_of_the_gap() -> None:
    cron = crontab(minute=30, hour=2, app=_app("America/New_York"))
    assert _runs_on(cron, "America/New_York", datetime(2024, 3, 10)) == ["03:00-0400"]
    assert _runs_on(cron, "America/New_York", datetime(2024, 3, 11)) == ["02:30-0400"]


def test_a_daily_run_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    cron = crontab(minute=30, hour=1, app=_app("America/New_York"))
    assert _runs_on(cron, "America/New_York", datetime(2024, 11, 3)) == ["01:30-0400"]


def test_an_hourly_wildcard_skips_the_gap_and_repeats_in_the_repeated_hour() -> None:
    cron = crontab(minute=30, app=_app("America/New_York"))
    spring = _runs_on(cron, "America/New_York", datetime(2024, 3, 10))
    autumn = _runs_on(cron, "America/New_York", datetime(2024, 11, 3))
    assert len(spring) == 23 and "02:30-0500" not in spring and "03:30-0400" in spring
    assert len(autumn) == 25 and {"01:30-0400", "01:30-0500"} <= set(autumn)


def test_several_times_in_one_gap_run_once_together() -> None:
    cron = crontab(minute="0,15,30,45", hour="2,3", app=_app("America/New_York"))
    assert _runs_on(cron, "America/New_York", datetime(2024, 3, 10)) == [
        "03:00-0400",
        "03:15-0400",
        "03:30-0400",
        "03:45-0400",
    ]


def test_a_half_hour_shift_is_handled_like_any_other() -> None:
    # Lord Howe moves its clocks by 30 minutes: 02:00 -> 02:30 in October
    cron = crontab(minute=15, hour=2, app=_app("Australia/Lord_Howe"))
    assert _runs_on(cron, "Australia/Lord_Howe", datetime(2024, 10, 6)) == ["02:30+1100"]
