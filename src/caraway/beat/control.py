"""Beat's remote-control node (``beat_enable_remote_control``, ``--enable-remote-control``):
answers ``inspect ping`` as ``celerybeat@<host>``, as Celery 5.7's beat does, so a health
check can tell a live beat from a wedged one.

Only ``ping`` is answered, and only while the beat is ticking: a beat that has not ticked
for ``beat_remote_control_max_tick_age`` seconds (default: twice the max interval, at
least a minute) stays silent, which is what a probe can act on. Runs on its own thread
with its own mailbox; other commands are ignored, so worker-only commands stay clean.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from caraway.brokers.contracts import REPLY_EXCHANGE, Mailbox
from caraway.brokers.registry import open_mailbox
from caraway.exceptions import CarawayError, ProtocolError
from caraway.protocol.events import LamportClock
from caraway.protocol.message import Message
from caraway.protocol.pidbox import decode_request, encode_reply


class Ticking(Protocol):
    """What the control node reads of the beat it answers for."""

    app: Any
    node: str
    max_interval: float
    last_tick: float | None


logger = logging.getLogger("caraway.beat")

#: seconds between reads of the mailbox
POLL = 0.1
#: a beat with a short loop interval still gets this long before it counts as stalled
MIN_TICK_AGE = 60.0


class BeatControl:
    """Answers pings for one beat on a thread of its own."""

    def __init__(self, beat: Ticking) -> None:
        self.beat = beat
        self.hostname = beat.node
        self.clock = LamportClock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mailbox: Mailbox | None = None

    @property
    def max_tick_age(self) -> float:
        configured = self.beat.app.conf.beat_remote_control_max_tick_age
        if configured is not None:
            return float(configured)
        return max(self.beat.max_interval * 2, MIN_TICK_AGE)

    def stalled(self) -> bool:
        limit = self.max_tick_age
        last = self.beat.last_tick
        return bool(limit) and last is not None and time.monotonic() - last > limit

    def start(self) -> None:
        app = self.beat.app
        self.mailbox = open_mailbox(app.broker_url, dict(app.conf.broker_transport_options))
        self.mailbox.listen(self.hostname)
        self._thread = threading.Thread(target=self._run, name="caraway-beat-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            assert self.mailbox is not None
            try:
                for message in self.mailbox.receive():
                    self.handle(message)
            except CarawayError as exc:
                logger.warning("beat: cannot read remote-control requests: %s", exc)
                self._stop.wait(1.0)

    def handle(self, message: Message) -> bool:
        """Answer one request if it is a ping for this beat; whether it answered."""
        try:
            request = decode_request(message)
        except (ProtocolError, ValueError, TypeError):
            return False
        self.clock.adjust(request.clock)
        expired = request.expires is not None and request.expires < time.time()
        if request.method != "ping" or expired or not request.is_for(self.hostname):
            return False
        if self.stalled():
            logger.warning("beat: not answering ping: the scheduler has not ticked lately")
            return False
        if not (request.ticket and request.reply_to) or self.mailbox is None:
            return False
        reply = encode_reply(
            self.hostname, {"ok": "pong"}, ticket=request.ticket, clock=self.clock.forward()
        )
        self.mailbox.reply(
            reply,
            exchange=str(request.reply_to.get("exchange") or REPLY_EXCHANGE),
            routing_key=str(request.reply_to.get("routing_key") or ""),
        )
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        if self.mailbox is not None:
            self.mailbox.close()
