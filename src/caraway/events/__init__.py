"""Celery-format events: the dispatcher workers send with, the receiver and the cluster state.

Documents are built and parsed in ``caraway.protocol.events``; each broker's event bus
(``caraway.brokers.<broker>.bus``) moves them exactly where Celery does (``celeryev``), so
Celery's tools see caraway's events and caraway's monitors see a Celery fleet.
"""

from caraway.brokers.contracts import BusSettings, EventBus
from caraway.brokers.registry import open_bus
from caraway.events.dispatcher import EventDispatcher, bus_for, send_task_sent
from caraway.events.receiver import EventReceiver
from caraway.events.state import State, Task, Worker

__all__ = [
    "BusSettings",
    "EventBus",
    "EventDispatcher",
    "EventReceiver",
    "State",
    "Task",
    "Worker",
    "bus_for",
    "open_bus",
    "send_task_sent",
]
