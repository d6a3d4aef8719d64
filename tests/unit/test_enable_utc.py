"""``enable_utc`` and ``timezone`` as Celery 5.7 takes them: the app's zone (UTC, the named
zone, or with enable_utc=False and no timezone the machine's), and the dates a countdown or
an expiry become in a message, written with that zone's offset as Celery writes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caraway import Caraway
from caraway.config import Settings
from caraway.lifecycle import Outcome, build_policy, on_outcome
from caraway.protocol.message import TaskMessage, encode
from caraway.publish import build


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process in a zone that is not UTC (+05:30, no daylight saving)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def _eta_header(conf: Settings, **options: Any) -> str:
    outgoing = build("proj.add", (1, 2), {}, {"countdown": 30, **options}, conf=conf)
    return str(encode(outgoing.message).headers["eta"])


def _celery_eta_header(**settings: Any) -> str:
    from celery import Celery

    app = Celery("proj", broker="memory://", set_as_current=False)
    app.conf.update(settings)
    try:
        message = app.amqp.as_task_v2("id", "proj.add", (1, 2), {}, countdown=30)
        return str(message.headers["eta"])
    finally:
        app.close()


def test_enable_utc_false_is_accepted_and_makes_the_local_zone_the_apps(kolkata: None) -> None:
    app = Caraway("proj", broker="memory://", enable_utc=False)
    assert app.conf.enable_utc is False
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert app.timezone.utcoffset(now) == timedelta(hours=5, minutes=30)
    assert Caraway("proj", broker="memory://").timezone.utcoffset(now) == timedelta(0)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"enable_utc": False},
        {"timezone": "America/New_York"},
        {"timezone": "Europe/Paris", "enable_utc": False},
    ],
)
def test_a_countdown_eta_carries_the_offset_celery_writes(
    kolkata: None, settings: dict[str, Any]
) -> None:
    ours, celerys = _eta_header(Settings(settings)), _celery_eta_header(**settings)
    assert ours[-6:] == celerys[-6:], (ours, celerys)
    # the same instant, whatever the offset
    gap = datetime.fromisoformat(ours) - datetime.fromisoformat(celerys)
    assert abs(gap.total_seconds()) < 5


def test_expires_in_seconds_is_written_in_the_apps_zone(kolkata: None) -> None:
    outgoing = build("proj.add", (), {}, {"expires": 60}, conf=Settings(enable_utc=False))
    header = str(encode(outgoing.message).headers["expires"])
    assert header.endswith("+05:30")
    left = datetime.fromisoformat(header) - datetime.now(timezone.utc)
    assert 50 < left.total_seconds() <= 60


def test_a_naive_eta_is_still_read_as_utc(kolkata: None) -> None:
    naive = datetime(2030, 1, 1, 12, 0)
    outgoing = build("proj.add", (), {}, {"eta": naive}, conf=Settings(enable_utc=False))
    assert outgoing.message.eta == naive.replace(tzinfo=timezone.utc)


def _celery_date_done(**settings: Any) -> str:
    from celery import Celery, states

    app = Celery("proj", backend="cache+memory://", set_as_current=False)
    app.conf.update(settings)
    try:
        meta = app.backend._get_result_meta(1, states.SUCCESS, None, None)
        return str(meta["date_done"])
    finally:
        app.close()


def _date_done(settings: dict[str, Any], kind: str) -> str:
    conf = Settings(settings)
    message = TaskMessage(id="t1", task="proj.add")
    policy = build_policy(conf, None)
    if kind == "success":
        outcome = Outcome("success", value=1)
    else:
        outcome = Outcome("failure", exc=ValueError("x"), traceback="")
    effects = on_outcome(message, outcome, policy=policy, conf=conf, hostname="w@h", queue="q")
    return str(effects.results[0][2]["date_done"])


@pytest.mark.parametrize("kind", ["success", "failure"])
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"enable_utc": False},
        {"timezone": "America/New_York"},
        {"timezone": "Europe/Paris", "enable_utc": False},
    ],
)
def test_date_done_is_written_in_the_apps_zone_as_celery_writes_it(
    kolkata: None, settings: dict[str, Any], kind: str
) -> None:
    ours, celerys = _date_done(settings, kind), _celery_date_done(**settings)
    assert ours[-6:] == celerys[-6:], (ours, celerys)
    gap = datetime.fromisoformat(ours) - datetime.fromisoformat(celerys)
    assert abs(gap.total_seconds()) < 5
