"""Solar schedules (Celery's ``solar``): sunrise, sunset, dawns, dusks and solar noon at a
place on Earth.

Computed with the standard sunrise equation (the NOAA/Meeus approximation), accurate to a
minute or two at ordinary latitudes, so no ephemeris library is needed (Celery needs
``ephem``). The one thing to know: an event that does not happen on a day (no sunrise in
the polar night) is skipped, and the next day that has it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from caraway.schedules.base import UTC, BaseSchedule, InvalidSchedule, aware

#: event -> (altitude of the sun's centre in degrees, which crossing); sunrise and sunset
#: put the upper limb on the horizon (-50 arcminutes for the centre), as Celery does
EVENTS: dict[str, tuple[float, str]] = {
    "dawn_astronomical": (-18.0, "rise"),
    "dawn_nautical": (-12.0, "rise"),
    "dawn_civil": (-6.0, "rise"),
    "sunrise": (-50.0 / 60.0, "rise"),
    "solar_noon": (0.0, "noon"),
    "sunset": (-50.0 / 60.0, "set"),
    "dusk_civil": (-6.0, "set"),
    "dusk_nautical": (-12.0, "set"),
    "dusk_astronomical": (-18.0, "set"),
}
_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5
_OBLIQUITY = math.radians(23.4397)
#: how many days ahead an event that skips days (polar night) is looked for
_SEARCH_DAYS = 370


def _event_jd(
    day: int, latitude: float, longitude: float, altitude: float, kind: str
) -> float | None:
    """The Julian date of the event on ``day`` (days since J2000), or None if it does not
    happen that day."""
    mean_noon = day - longitude / 360.0
    anomaly = math.radians((357.5291 + 0.98560028 * mean_noon) % 360.0)
    centre = (
        1.9148 * math.sin(anomaly) + 0.0200 * math.sin(2 * anomaly) + 0.0003 * math.sin(3 * anomaly)
    )
    ecliptic = math.radians((math.degrees(anomaly) + centre + 180.0 + 102.9372) % 360.0)
    transit = _J2000 + mean_noon + 0.0053 * math.sin(anomaly) - 0.0069 * math.sin(2 * ecliptic)
    if kind == "noon":
        return transit
    declination = math.asin(math.sin(ecliptic) * math.sin(_OBLIQUITY))
    phi = math.radians(latitude)
    denominator = math.cos(phi) * math.cos(declination)
    if abs(denominator) < 1e-12:
        return None  # at a pole the sun circles the horizon: no rise or set to speak of
    cos_hour = (math.sin(math.radians(altitude)) - math.sin(phi) * math.sin(declination)) / (
        denominator
    )
    if not -1.0 <= cos_hour <= 1.0:
        return None  # always above or always below that altitude today
    half_day = math.degrees(math.acos(cos_hour)) / 360.0
    return transit - half_day if kind == "rise" else transit + half_day


class solar(BaseSchedule):
    """Fires at a solar ``event`` at latitude ``lat``, longitude ``lon`` (degrees, east and
    north positive). Events: dawn_astronomical, dawn_nautical, dawn_civil, sunrise,
    solar_noon, sunset, dusk_civil, dusk_nautical, dusk_astronomical.

    Raises InvalidSchedule (a ValueError) for an unknown event or a coordinate out of range.
    """

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        if event not in EVENTS:
            raise InvalidSchedule(
                f"solar event={event!r} is not an event; choose one of {', '.join(EVENTS)}"
            )
        for name, value, bound in (("lat", lat, 90), ("lon", lon, 180)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidSchedule(f"solar {name}={value!r}: must be a number of degrees")
            if not -bound <= value <= bound:
                raise InvalidSchedule(
                    f"solar {name}={value!r}: must be between -{bound} and {bound}"
                )
        self.event = event
        self.lat = lat
        self.lon = lon
        super().__init__(nowfun=nowfun, app=app)

    def next_after(self, moment: datetime) -> datetime | None:
        moment = aware(moment).astimezone(UTC)
        altitude, kind = EVENTS[self.event]
        julian = moment.timestamp() / 86400.0 + _UNIX_EPOCH_JD
        first_day = math.floor(julian - _J2000 + self.lon / 360.0) - 1
        for day in range(first_day, first_day + _SEARCH_DAYS):
            jd = _event_jd(day, float(self.lat), float(self.lon), altitude, kind)
            if jd is None:
                continue
            instant = datetime.fromtimestamp(round((jd - _UNIX_EPOCH_JD) * 86400.0), UTC)
            if instant > moment:
                return instant
        return None

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (other.event, other.lat, other.lon) == (self.event, self.lat, self.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.event, self.lat, self.lon, self.nowfun)
