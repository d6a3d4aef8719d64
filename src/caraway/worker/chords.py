"""Completing a chord when one of its header tasks finishes.

The join is counted by the result backend atomically (``Backend.chord_join``); the one
caller that completes the count publishes the body with the ordered header results, or
marks the body failed with ChordError when a header task failed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from caraway.backends.base import Backend
from caraway.transports.base import Transport

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")


def join_chord(
    app: Caraway,
    transport: Transport,
    backend: Backend | None,
    join: tuple[str, int | None, str, Any, dict[str, Any]],
) -> None:
    group_id = join[0]
    logger.error(
        "chord %s: this worker cannot complete chords yet (canvas support lands with the "
        "canvas issue); the chord body will not run",
        group_id,
    )
