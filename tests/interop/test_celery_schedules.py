"""caraway's schedules against Celery 5.7's own, called the way Celery code calls them:
``remaining_estimate`` and ``is_due`` for crontabs and intervals, away from daylight-saving
transitions (where caraway documents its own rules). No broker needed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caraway.schedules import crontab, schedule

celery_schedules = pytest.importorskip("celery.schedules")
UTC = timezone.utc


@pytest.fixture(scope="module")
def celery_app() -> Iterator[Any]:
    from celery import Celery

    app = Celery("schedules", set_as_current=False)
    app.conf.update(timezone="UTC", enable_utc=True)
    yield app
    app.close()


CARAWAY_APP = SimpleNamespace(conf=SimpleNamespace(timezone="UTC", enable_utc=True))

_minute = st.sampled_from(["*", "*/5", "0", "15,45", "7-9", "59"])
_hour = st.sampled_from(["*", "*/3", "0", "9-17", "23", "4,16"])
_dow = st.sampled_from(["*", "mon-fri", "0", "sat,sun", "3"])
_dom = st.sampled_from(["*", "1", "15", "1-7", "28-31"])
_month = st.sampled_from(["*", "1", "2", "*/3", "6-8", "12"])


@settings(max_examples=300, deadline=None)
@given(
    fields=st.tuples(_minute, _hour, _dow, _dom, _month),
    last_minutes=st.integers(min_value=0, max_value=60 * 24 * 365 * 3),
    gap_minutes=st.integers(min_value=0, max_value=60 * 24 * 40),
)
def test_crontab_remaining_estimate_matches_celerys(
    celery_app: Any, fields: tuple[str, ...], last_minutes: int, gap_minutes: int
) -> None:
    last = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(minutes=last_minutes, seconds=17)
    now = last + timedelta(minutes=gap_minutes, seconds=5)
    ours = crontab(*fields, nowfun=lambda: now, app=CARAWAY_APP)
    theirs = celery_schedules.crontab(*fields, nowfun=lambda: now, app=celery_app)
    assert ours.remaining_estimate(last) == theirs.remaining_estimate(last)
    assert ours.is_due(last) == tuple(theirs.is_due(last))


@settings(max_examples=100, deadline=None)
@given(
    seconds=st.floats(min_value=0.5, max_value=86400 * 3),
    elapsed=st.floats(min_value=0, max_value=86400 * 6),
)
def test_interval_is_due_matches_celerys(celery_app: Any, seconds: float, elapsed: float) -> None:
    last = datetime(2024, 5, 1, 12, tzinfo=UTC)
    now = last + timedelta(seconds=elapsed)
    ours = schedule(timedelta(seconds=seconds), nowfun=lambda: now, app=CARAWAY_APP)
    theirs = celery_schedules.schedule(
        timedelta(seconds=seconds), nowfun=lambda: now, app=celery_app
    )
    assert ours.remaining_estimate(last) == theirs.remaining_estimate(last)
    due, following = ours.is_due(last)
    celery_due, celery_following = theirs.is_due(last)
    assert due == celery_due
    assert following == pytest.approx(celery_following)


def test_a_celery_schedule_object_in_an_entry_says_where_to_import_from() -> None:
    from caraway.schedules import InvalidSchedule
    from caraway.schedules.entries import entry_from_config

    with pytest.raises(InvalidSchedule, match=r"import crontab from caraway\.schedules"):
        entry_from_config("e", {"task": "t", "schedule": celery_schedules.crontab(minute=0)})


def test_reprs_match_celerys(celery_app: Any) -> None:
    assert repr(crontab("*/15", "9-17", "mon-fri", "1", "jan")) == repr(
        celery_schedules.crontab("*/15", "9-17", "mon-fri", "1", "jan")
    )
    assert repr(schedule(90)) == repr(celery_schedules.schedule(90))
