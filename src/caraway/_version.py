"""The version, as a string and as Celery's ``version_info`` tuple."""

from __future__ import annotations

from typing import NamedTuple

__version__ = "0.1.0"


class version_info_t(NamedTuple):  # Celery's name for it
    major: int
    minor: int
    micro: int
    releaselevel: str
    serial: str


#: ``caraway.VERSION`` / ``caraway.version_info``, as Celery's (5, 7, 0, '', '')
_major, _minor, _micro = (int(part) for part in __version__.split("."))
VERSION = version_info = version_info_t(_major, _minor, _micro, "", "")
